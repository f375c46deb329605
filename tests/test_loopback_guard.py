"""The suite's own guard (tests/conftest.py): nothing a test does can reach past loopback."""

from __future__ import annotations

import socket

import httpx
import pytest
import websockets


def test_http_to_a_live_exchange_is_refused_before_any_traffic() -> None:
    with pytest.raises(httpx.ConnectError) as err:
        httpx.get("https://fapi.binance.com/fapi/v1/ping", timeout=2)
    assert "only loopback" in str(err.value)


async def test_websocket_to_a_live_exchange_is_refused() -> None:
    with pytest.raises(OSError) as err:
        await websockets.connect("wss://stream.bybit.com/v5/public/linear", open_timeout=2)
    assert "only loopback" in str(err.value)


def test_a_raw_connect_to_a_public_address_is_refused_and_loopback_is_not(port: int) -> None:
    with socket.socket() as s, pytest.raises(OSError, match="only loopback"):
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed anyway
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", port))
        server.listen()
        client.connect(("127.0.0.1", port))
        assert client.getpeername() == ("127.0.0.1", port)
