"""Signing per exchange documentation: a published test vector (Binance) and the documented
string-to-sign rebuilt independently for the others."""

from __future__ import annotations

import base64
import hashlib
import hmac

from exporter.rest.signing import (
    ApiKey,
    binance_signed_query,
    bybit_headers,
    deribit_authorization,
    okx_headers,
    okx_timestamp,
)

KEY = ApiKey("my-key-123", "my-secret-456", "my-pass-789")


def _hmac(secret: str, msg: str) -> bytes:
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).digest()


def test_binance_documented_example() -> None:
    # Binance's API documentation example (SIGNED endpoint, HMAC SHA256)
    key = ApiKey(
        "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
        "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    )
    params = [
        ("symbol", "LTCBTC"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "1"),
        ("price", "0.1"),
    ]
    query, headers = binance_signed_query(params, key, 1499827319559, 5000)
    assert query.endswith("&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")
    assert headers == {"X-MBX-APIKEY": key.key}


def test_bybit_headers() -> None:
    h = bybit_headers("category=linear&settleCoin=USDT", KEY, 1700000000123, 5000)
    expected = _hmac(KEY.secret, "1700000000123my-key-1235000category=linear&settleCoin=USDT").hex()
    assert h["X-BAPI-SIGN"] == expected
    assert h["X-BAPI-API-KEY"] == KEY.key and h["X-BAPI-TIMESTAMP"] == "1700000000123"
    assert h["X-BAPI-RECV-WINDOW"] == "5000"


def test_okx_headers() -> None:
    assert okx_timestamp(1607418537.715) == "2020-12-08T09:08:57.715Z"  # the documented format
    h = okx_headers("get", "/api/v5/account/positions?instType=SWAP", "", KEY, 1607418537.715)
    msg = "2020-12-08T09:08:57.715ZGET/api/v5/account/positions?instType=SWAP"
    assert h["OK-ACCESS-SIGN"] == base64.b64encode(_hmac(KEY.secret, msg)).decode()
    assert h["OK-ACCESS-PASSPHRASE"] == KEY.passphrase and h["OK-ACCESS-KEY"] == KEY.key


def test_deribit_authorization_header() -> None:
    uri = "/api/v2/private/get_positions?currency=any&kind=future"
    h = deribit_authorization("GET", uri, "", KEY, 1700000000000, nonce="abcd")
    sig = _hmac(KEY.secret, f"1700000000000\nabcd\nGET\n{uri}\n\n").hex()
    assert h["Authorization"] == f"deri-hmac-sha256 id={KEY.key},ts=1700000000000,sig={sig},nonce=abcd"


def test_api_key_never_shows_its_values() -> None:
    for text in (repr(KEY), str(KEY), f"{KEY}", repr([KEY])):
        assert "my-key" not in text and "my-secret" not in text and "my-pass" not in text
