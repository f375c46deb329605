"""Dated (delivery) futures: the instrument lists and the websocket plans of all four exchanges.

Pure protocol, like the feed modules: REST bodies in, :class:`~exporter.model.InstrumentInfo` with
``expiry`` set out; which connections to open for the futures followed. The stream frames of dated
futures have the perpetuals' shapes, so each exchange's own ``parse_ws`` parses them (Binance
``markPriceUpdate`` with ``r`` "" and ``T`` 0, Bybit ``tickers``, OKX ``mark-price``, Deribit
``ticker``). Sources and field meanings: ``docs/term-structure.md``.

- Binance USDⓈ-M ``GET /fapi/v1/exchangeInfo``: ``contractType`` CURRENT_QUARTER / NEXT_QUARTER
  (also CURRENT_MONTH / NEXT_MONTH where listed), ``deliveryDate`` ms, symbol ``BTCUSDT_260327``.
- Bybit ``GET /v5/market/instruments-info``: ``contractType`` LinearFutures / InverseFutures,
  ``deliveryTime`` ms (``"0"`` for perpetuals), ``status`` Trading.
- OKX ``GET /api/v5/public/instruments?instType=FUTURES``: ``expTime`` ms, ``ctType``
  linear/inverse, ``ctVal``, ``instFamily`` BTC-USD, ``state`` live.
- Deribit ``public/get_instruments?kind=future``: ``settlement_period`` != ``perpetual``,
  ``expiration_timestamp`` ms, ``instrument_type`` reversed (inverse) or linear, ``contract_size``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime

import orjson

from exporter.feeds import PARSE_FAILURES, arr, chunks, loads, ms, num, obj, parse_error, text
from exporter.feeds.base import WsPlan
from exporter.model import Exchange, InstrumentInfo

BINANCE_DATED = frozenset({"CURRENT_QUARTER", "NEXT_QUARTER", "CURRENT_MONTH", "NEXT_MONTH"})
BYBIT_DATED = {"LinearFutures": False, "InverseFutures": True}  # -> inverse
STREAM = "futures"  # label of the futures connections in fr_stream_* series
_CHUNK = 100


def expiry_date(expiry: float) -> str:
    """The ``expiry`` label: the UTC calendar date of the delivery (``2026-03-27``)."""
    return datetime.fromtimestamp(expiry, tz=UTC).date().isoformat()


def _expiry(v: object, key: str) -> float:
    t = ms(v, key)
    if t <= 0:
        raise ValueError(f"field {key!r}: not a delivery time: {v!r}")
    return t


def parse_binance(body: bytes) -> list[InstrumentInfo]:
    """``GET /fapi/v1/exchangeInfo`` -> the delivery contracts that are trading."""
    ex = Exchange.BINANCE
    try:
        out = []
        for s in arr(obj(loads(body), "exchangeInfo")["symbols"], "symbols"):
            if s.get("contractType") not in BINANCE_DATED or s.get("status", "TRADING") != "TRADING":
                continue
            out.append(
                InstrumentInfo(
                    exchange=ex,
                    instrument=text(s["symbol"], "symbol"),
                    base=text(s["baseAsset"], "baseAsset"),
                    quote=text(s["quoteAsset"], "quoteAsset"),
                    expiry=_expiry(s["deliveryDate"], "deliveryDate"),
                )
            )
        return out
    except PARSE_FAILURES as exc:
        raise parse_error(ex, "exchangeInfo (delivery)", exc) from None


def parse_bybit(body: bytes) -> list[InstrumentInfo]:
    """``GET /v5/market/instruments-info`` (linear or inverse) -> dated futures that are trading."""
    ex = Exchange.BYBIT
    try:
        msg = obj(loads(body), "instruments-info")
        if msg.get("retCode", 0) != 0:
            raise ValueError(f"retCode {msg.get('retCode')}: {msg.get('retMsg')}")
        out = []
        for row in arr(obj(msg["result"], "result")["list"], "list"):
            inverse = BYBIT_DATED.get(row.get("contractType"))
            if inverse is None or row.get("status", "Trading") != "Trading":
                continue
            out.append(
                InstrumentInfo(
                    exchange=ex,
                    instrument=text(row["symbol"], "symbol"),
                    base=text(row["baseCoin"], "baseCoin"),
                    quote=text(row["quoteCoin"], "quoteCoin"),
                    inverse=inverse,
                    contract_size=1.0,  # linear: 1 coin; inverse: 1 USD per contract
                    expiry=_expiry(row["deliveryTime"], "deliveryTime"),
                )
            )
        return out
    except PARSE_FAILURES as exc:
        raise parse_error(ex, "instruments-info (futures)", exc) from None


def parse_okx(body: bytes) -> list[InstrumentInfo]:
    """``GET /api/v5/public/instruments?instType=FUTURES`` -> live futures."""
    ex = Exchange.OKX
    try:
        msg = obj(loads(body), "instruments")
        if str(msg.get("code", "0")) != "0":
            raise ValueError(f"code {msg.get('code')}: {msg.get('msg')}")
        out = []
        for row in arr(msg["data"], "data"):
            if row.get("instType") != "FUTURES" or row.get("state", "live") != "live":
                continue
            family = text(row.get("instFamily") or row.get("uly"), "instFamily")
            base, _, quote = family.partition("-")
            if not base or not quote:
                raise ValueError(f"field 'instFamily': not BASE-QUOTE: {family!r}")
            ct = row.get("ctType")
            if ct not in ("linear", "inverse"):
                raise ValueError(f"field 'ctType': {ct!r}")
            out.append(
                InstrumentInfo(
                    exchange=ex,
                    instrument=text(row["instId"], "instId"),
                    base=base,
                    quote=quote,
                    inverse=ct == "inverse",
                    contract_size=num(row["ctVal"], "ctVal"),
                    expiry=_expiry(row["expTime"], "expTime"),
                )
            )
        return out
    except PARSE_FAILURES as exc:
        raise parse_error(ex, "instruments (FUTURES)", exc) from None


def parse_deribit(body: bytes) -> list[InstrumentInfo]:
    """``public/get_instruments`` (kind=future) -> the dated futures (not ``settlement_period`` perpetual)."""
    ex = Exchange.DERIBIT
    try:
        msg = obj(loads(body), "get_instruments")
        if "error" in msg:
            raise ValueError(f"error {msg['error']}")
        out = []
        for row in arr(msg["result"], "result"):
            if row.get("kind") != "future" or row.get("settlement_period") == "perpetual":
                continue
            if row.get("is_active") is False:
                continue
            out.append(
                InstrumentInfo(
                    exchange=ex,
                    instrument=text(row["instrument_name"], "instrument_name"),
                    base=text(row["base_currency"], "base_currency"),
                    quote=text(row.get("counter_currency") or row["quote_currency"], "counter_currency"),
                    inverse=row.get("instrument_type", "reversed") == "reversed",
                    contract_size=num(row["contract_size"], "contract_size"),
                    expiry=_expiry(row["expiration_timestamp"], "expiration_timestamp"),
                )
            )
        return out
    except PARSE_FAILURES as exc:
        raise parse_error(ex, "get_instruments (future)", exc) from None


PARSERS = {
    Exchange.BINANCE: parse_binance,
    Exchange.BYBIT: parse_bybit,
    Exchange.OKX: parse_okx,
    Exchange.DERIBIT: parse_deribit,
}


def select(
    listed: Iterable[InstrumentInfo],
    bases: Sequence[str],
    nearest: int | None,
    now: float,
    held: Collection[str] = (),
) -> list[InstrumentInfo]:
    """The futures to follow: of the configured bases, not expired, the ``nearest`` expiries per
    (base, quote, linear/inverse) (``None``: every listed expiry), plus any listed contract in
    ``held`` (a configured position's: its liquidation price needs its mark, whatever the base or
    the expiry); sorted by base, then expiry."""
    wanted = {b.upper() for b in bases}
    groups: dict[tuple[str, str, bool], list[InstrumentInfo]] = {}
    extra: list[InstrumentInfo] = []
    for i in listed:
        if i.expiry is None or i.expiry <= now:
            continue
        if i.base.upper() in wanted:
            groups.setdefault((i.base, i.quote, i.inverse), []).append(i)
        elif i.instrument in held:
            extra.append(i)
    out: list[InstrumentInfo] = []
    for group in groups.values():
        group.sort(key=lambda i: (i.expiry or 0.0, i.instrument))
        chosen = group if nearest is None else group[:nearest]
        out.extend(chosen)
        out.extend(i for i in group[len(chosen) :] if i.instrument in held)
    out.extend(extra)
    out.sort(key=lambda i: (i.base, i.expiry or 0.0, i.instrument))
    return out


def ws_plans(exchange: Exchange, ws_base_url: str, futures: Sequence[InstrumentInfo]) -> list[WsPlan]:
    """The connections that carry the futures' prices (frames parsed by the exchange's own feed)."""
    if not futures:
        return []
    base = ws_base_url.rstrip("/")
    names = [f.instrument for f in futures]
    if exchange is Exchange.BINANCE:
        streams = "/".join(f"{s.lower()}@markPrice@1s" for s in names)
        return [WsPlan(STREAM, f"{base}/market/stream?streams={streams}", max_lifetime_s=23.5 * 3600)]
    if exchange is Exchange.BYBIT:
        plans = []
        for inverse, path in ((False, "linear"), (True, "inverse")):
            topics = [f"tickers.{f.instrument}" for f in futures if f.inverse is inverse]
            if topics:
                plans.append(
                    WsPlan(
                        STREAM if not inverse else f"{STREAM}-inverse",
                        f"{base}/v5/public/{path}",
                        subscribe=tuple(_sub({"op": "subscribe", "args": list(c)}) for c in chunks(topics, 10)),
                        ping_frame='{"op":"ping"}',
                    )
                )
        return plans
    if exchange is Exchange.OKX:
        args = [{"channel": "mark-price", "instId": n} for n in names]
        return [
            WsPlan(
                STREAM,
                f"{base}/ws/v5/public",
                subscribe=tuple(_sub({"op": "subscribe", "args": list(c)}) for c in chunks(args, _CHUNK)),
                ping_frame="ping",
            )
        ]
    channels = [f"ticker.{n}.100ms" for n in names]
    subscribe = tuple(
        _sub({"jsonrpc": "2.0", "id": 900 + k, "method": "public/subscribe", "params": {"channels": list(c)}})
        for k, c in enumerate(chunks(channels, _CHUNK))
    )
    return [WsPlan(STREAM, f"{base}/ws/api/v2", subscribe=subscribe, silence_timeout_s=45.0)]


def _sub(payload: object) -> str:
    return orjson.dumps(payload).decode()
