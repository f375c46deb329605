"""Server-time bodies -> the exchange's clock (Unix seconds). Pure; the REST layer times the call.

Wire samples (the simulator answers the same shapes):

* Binance ``GET /fapi/v1/time``: ``{"serverTime": 1700000000123}``
* Bybit ``GET /v5/market/time``:
  ``{"retCode":0,"result":{"timeSecond":"1700000000","timeNano":"1700000000123456789"},"time":1700000000123}``
* OKX ``GET /api/v5/public/time``: ``{"code":"0","data":[{"ts":"1700000000123"}],"msg":""}``
* Deribit ``GET /api/v2/public/get_time``: ``{"jsonrpc":"2.0","result":1700000000123}``
"""

from __future__ import annotations

from typing import Any

import orjson

from exporter.model import Exchange, ParseError

SERVER_TIME_PATHS: dict[Exchange, str] = {
    Exchange.BINANCE: "/fapi/v1/time",
    Exchange.BYBIT: "/v5/market/time",
    Exchange.OKX: "/api/v5/public/time",
    Exchange.DERIBIT: "/api/v2/public/get_time",
}

# a server time outside these bounds is not a clock reading (years 2001 to 2286)
_MIN_S, _MAX_S = 1.0e9, 1.0e10


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ParseError("server time is not a number", "not_a_number")
    try:
        return float(v)
    except ValueError:
        raise ParseError("server time is not a number", "not_a_number") from None


def parse_server_time(exchange: Exchange, body: bytes) -> float:
    """The exchange's clock in Unix seconds from its server-time body (ParseError if it is none)."""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError("server time: invalid JSON", "invalid_json") from None
    try:
        if exchange is Exchange.BINANCE:
            t = _num(msg["serverTime"]) / 1e3
        elif exchange is Exchange.BYBIT:
            t = _num(msg["result"]["timeNano"]) / 1e9
        elif exchange is Exchange.OKX:
            t = _num(msg["data"][0]["ts"]) / 1e3
        else:
            t = _num(msg["result"]) / 1e3
    except (KeyError, IndexError, TypeError):
        raise ParseError(f"{exchange} server time: unexpected shape", "missing_field") from None
    if not _MIN_S <= t <= _MAX_S:  # NaN fails too
        raise ParseError(f"{exchange} server time out of range: {t!r}", "timestamp_out_of_range")
    return t
