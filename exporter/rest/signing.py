"""Request signing for the exchanges' read-only account endpoints, per their documentation.

* Binance USDⓈ-M (SIGNED / USER_DATA): header ``X-MBX-APIKEY``; query gets ``timestamp`` (ms)
  and ``recvWindow``, then ``signature`` = hex HMAC-SHA256(secret, total query string).
* Bybit v5: headers ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP`` (ms), ``X-BAPI-RECV-WINDOW``,
  ``X-BAPI-SIGN`` = hex HMAC-SHA256(secret, timestamp + api_key + recv_window + queryString).
* OKX v5: headers ``OK-ACCESS-KEY``, ``OK-ACCESS-PASSPHRASE``, ``OK-ACCESS-TIMESTAMP``
  (ISO-8601 UTC with milliseconds), ``OK-ACCESS-SIGN`` = base64 HMAC-SHA256(secret,
  timestamp + METHOD + requestPath(+?query) + body).
* Deribit: HTTP header ``Authorization: deri-hmac-sha256 id=..,ts=..,sig=..,nonce=..`` with
  sig = hex HMAC-SHA256(secret, ts + "\\n" + nonce + "\\n" + METHOD + "\\n" + URI + "\\n" + body + "\\n").
  (The client-credentials ``public/auth`` flow is the alternative; the header needs no token state.)

Nothing here logs; secrets live only in :class:`ApiKey` whose ``repr`` hides them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

DEFAULT_RECV_WINDOW_MS = 5000


@dataclass(frozen=True)
class ApiKey:
    key: str = field(repr=False)
    secret: str = field(repr=False)
    passphrase: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show the values, even in a traceback's locals
        return "ApiKey(***)"

    __str__ = __repr__


def hmac_sha256(secret: str, message: str) -> bytes:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()


# ---- Binance ---------------------------------------------------------------------------------


def binance_signed_query(
    params: list[tuple[str, str]], key: ApiKey, timestamp_ms: int, recv_window_ms: int = DEFAULT_RECV_WINDOW_MS
) -> tuple[str, dict[str, str]]:
    """(query string incl. signature, headers) for a GET to a SIGNED Binance endpoint."""
    return binance_sign(urlencode(params), key, timestamp_ms, recv_window_ms)


def binance_sign(
    query: str, key: ApiKey, timestamp_ms: int, recv_window_ms: int = DEFAULT_RECV_WINDOW_MS
) -> tuple[str, dict[str, str]]:
    """Like :func:`binance_signed_query` for an already encoded query (``symbol=BTCUSDT`` or "")."""
    extra = urlencode([("recvWindow", str(recv_window_ms)), ("timestamp", str(timestamp_ms))])
    total = f"{query}&{extra}" if query else extra
    sig = hmac_sha256(key.secret, total).hex()
    return f"{total}&signature={sig}", {"X-MBX-APIKEY": key.key}


# ---- Bybit -----------------------------------------------------------------------------------


def bybit_headers(
    query_or_body: str, key: ApiKey, timestamp_ms: int, recv_window_ms: int = DEFAULT_RECV_WINDOW_MS
) -> dict[str, str]:
    payload = f"{timestamp_ms}{key.key}{recv_window_ms}{query_or_body}"
    return {
        "X-BAPI-API-KEY": key.key,
        "X-BAPI-TIMESTAMP": str(timestamp_ms),
        "X-BAPI-RECV-WINDOW": str(recv_window_ms),
        "X-BAPI-SIGN": hmac_sha256(key.secret, payload).hex(),
        "X-BAPI-SIGN-TYPE": "2",  # 2 = HMAC_SHA256
    }


# ---- OKX -------------------------------------------------------------------------------------


def okx_timestamp(unix_s: float) -> str:
    """``2020-12-08T09:08:57.715Z``."""
    dt = datetime.fromtimestamp(unix_s, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def okx_headers(method: str, request_path: str, body: str, key: ApiKey, unix_s: float) -> dict[str, str]:
    """``request_path`` includes the query string for GET (``/api/v5/account/positions?instType=SWAP``)."""
    ts = okx_timestamp(unix_s)
    sig = base64.b64encode(hmac_sha256(key.secret, f"{ts}{method.upper()}{request_path}{body}")).decode()
    return {
        "OK-ACCESS-KEY": key.key,
        "OK-ACCESS-SIGN": sig,
        "OK-ACCESS-TIMESTAMP": ts,
        "OK-ACCESS-PASSPHRASE": key.passphrase or "",
    }


# ---- Deribit ---------------------------------------------------------------------------------


def deribit_authorization(
    method: str, uri: str, body: str, key: ApiKey, timestamp_ms: int, nonce: str | None = None
) -> dict[str, str]:
    """``uri`` is the path with its query (``/api/v2/private/get_positions?currency=any``)."""
    nonce = nonce or secrets.token_hex(8)
    request_data = f"{method.upper()}\n{uri}\n{body}\n"
    sig = hmac_sha256(key.secret, f"{timestamp_ms}\n{nonce}\n{request_data}").hex()
    return {"Authorization": f"deri-hmac-sha256 id={key.key},ts={timestamp_ms},sig={sig},nonce={nonce}"}
