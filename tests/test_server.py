"""HTTP server: endpoints, negotiation, /api/state, TLS."""

from __future__ import annotations

import logging
import select
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families
from support import wait_for
from support.clock import ManualClock as Clock

from exporter import __version__
from exporter.config import Config
from exporter.metrics import build_registry
from exporter.model import EIGHT_HOURS, Exchange, InstrumentInfo, Liquidation, MarketUpdate, Side
from exporter.server import ListenError, ServerHandle, ServerLimits, bind_check, start_server
from exporter.state import MarketState

T0 = 1_700_000_000.0


def make_state() -> tuple[Clock, MarketState]:
    clock = Clock()
    state = MarketState(clock=clock)
    st = state.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=EIGHT_HOURS))
    state.add_settlements(st, [(T0 - i * EIGHT_HOURS, 1e-4 * (1 + i % 3)) for i in range(1, 40)])
    state.apply(
        MarketUpdate(
            Exchange.BINANCE,
            "BTCUSDT",
            mark_price=101.0,
            index_price=100.0,
            funding_rate=2e-4,
            next_funding_time=T0 + 600,
            open_interest_usd=5e8,
        )
    )
    state.apply(Liquidation(Exchange.BINANCE, "BTCUSDT", T0, Side.LONG, 100.0, 10.0, 1000.0))
    h = state.stream(Exchange.BINANCE, "markPrice")
    h.connected, h.last_message_at, h.last_parsed_at, h.messages = True, T0, T0, 5
    return clock, state


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Clock, MarketState, ServerHandle]]:
    monkeypatch.setenv("FR_TEST_API_KEY", "sk-very-secret-value")
    clock, state = make_state()
    cfg = Config.model_validate(
        {
            "listen_address": "127.0.0.1:0",
            "exchanges": {"binance": {"credentials": {"api_key_env": "FR_TEST_API_KEY"}}},
        }
    )
    reg = build_registry(cfg, state, process=False)  # two scrapes are compared: CPU seconds would move
    handle = start_server(cfg, state, reg, extra_api=lambda: {"positions": [{"position": "carry-btc", "size": 1.0}]})
    try:
        yield clock, state, handle
    finally:
        handle.stop()


def test_metrics_text_default(served) -> None:
    _, _, h = served
    r = httpx.get(h.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert fams["fr_funding_rate"].samples[0].value == 2e-4
    assert "# EOF" not in r.text


def test_metrics_openmetrics_and_gzip(served) -> None:
    _, _, h = served
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    with httpx.Client() as c:
        r = c.get(h.url + "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert r.headers["content-encoding"] == "gzip"
        assert r.text.endswith("# EOF\n")  # httpx decompressed it
        raw = c.get(h.url + "/metrics", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers
        zipped = c.get(h.url + "/metrics", headers={"Accept-Encoding": "gzip"})
        # Content-Length is the compressed size on the wire.
        assert int(zipped.headers["content-length"]) < len(raw.content) / 3
        assert zipped.content == raw.content


def test_landing_healthz_404_head(served) -> None:
    _, _, h = served
    root = httpx.get(h.url + "/")
    assert root.status_code == 200 and 'href="/metrics"' in root.text and __version__ in root.text
    hz = httpx.get(h.url + "/healthz")
    assert hz.status_code == 200 and hz.text.strip() == "ok"
    assert httpx.get(h.url + "/nope").status_code == 404
    head = httpx.head(h.url + "/metrics")
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0 and head.content == b""


def test_api_state_document(served) -> None:
    clock, _, h = served
    doc = httpx.get(h.url + "/api/state").json()
    assert doc["version"] == __version__ and doc["generated_at"] == T0
    assert doc["exchanges"]["binance"]["up"] is True
    assert doc["exchanges"]["binance"]["streams"][0] == {
        "stream": "markPrice",
        "connected": True,
        "last_message_age_seconds": 0.0,
        "last_parsed_age_seconds": 0.0,
        "messages": 5,
        "reconnects": 0,
        "parse_errors": 0,
    }
    (row,) = doc["instruments"]
    assert row["exchange"] == "binance" and row["instrument"] == "BTCUSDT" and row["base"] == "BTC"
    assert row["stale"] is False
    assert row["funding_rate"] == 2e-4 and row["funding_rate_8h"] == pytest.approx(2e-4)
    assert row["funding_rate_annualized"] == pytest.approx(2e-4 * 1095)
    assert row["funding_zscore"] is not None
    assert row["premium_ratio"] == pytest.approx(0.01)
    assert row["liquidations"]["long"] == {"count": 1, "notional_usd": 1000.0}
    assert row["liquidations_1h"]["long"]["count"] == 1
    assert row["ages_seconds"]["long_short_ratio"] is None
    assert doc["positions"] == [{"position": "carry-btc", "size": 1.0}]
    assert isinstance(doc["events"], list)
    # Stale values are null, never the old number.
    clock.t = T0 + 200
    row = httpx.get(h.url + "/api/state").json()["instruments"][0]
    assert row["stale"] is True
    assert row["mark_price"] is None and row["funding_rate"] is None and row["funding_zscore"] is None
    assert row["open_interest_usd"] == 5e8  # 300 s limit
    assert row["ages_seconds"]["price"] == pytest.approx(200.0)
    assert httpx.get(h.url + "/api/state").json()["exchanges"]["binance"]["up"] is False


def test_api_state_never_contains_secrets(served) -> None:
    _, _, h = served
    body = httpx.get(h.url + "/api/state").text
    assert "sk-very-secret-value" not in body and "FR_TEST_API_KEY" not in body
    assert orjson.loads(body)


def test_extra_api_failure_does_not_break_api_state() -> None:
    _, state = make_state()
    cfg = Config(listen_address="127.0.0.1:0")

    def broken() -> dict:
        raise RuntimeError("position store down")

    h = start_server(cfg, state, build_registry(cfg, state), extra_api=broken)
    try:
        r = httpx.get(h.url + "/api/state")
        assert r.status_code == 200 and r.json()["instruments"]
    finally:
        h.stop()


def test_https_with_tls_config(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    _, state = make_state()
    cfg = Config.model_validate(
        {"listen_address": "127.0.0.1:0", "tls": {"cert_file": str(cert_file), "key_file": str(key_file)}}
    )
    h = start_server(cfg, state, build_registry(cfg, state))
    try:
        assert h.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        r = httpx.get(h.url + "/metrics", verify=ctx)
        assert r.status_code == 200 and "fr_funding_rate{" in r.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{h.port}/metrics", timeout=5)  # plain HTTP is refused
        # A client that does not trust the CA fails the handshake; the server keeps serving.
        with pytest.raises(httpx.ConnectError):
            httpx.get(h.url + "/healthz", verify=ssl.create_default_context())
        assert httpx.get(h.url + "/healthz", verify=ctx).text.strip() == "ok"
    finally:
        h.stop()


def test_stop_releases_the_port() -> None:
    _, state = make_state()
    cfg = Config(listen_address="127.0.0.1:0")
    h = start_server(cfg, state, build_registry(cfg, state))
    port = h.port
    h.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_requests_are_logged_at_debug_only(served, caplog: pytest.LogCaptureFixture) -> None:
    _, _, h = served
    with caplog.at_level(logging.INFO, logger="exporter.server"):
        httpx.get(h.url + "/healthz")
    assert not [r for r in caplog.records if r.name == "exporter.server"]
    with caplog.at_level(logging.DEBUG, logger="exporter.server"):
        httpx.get(h.url + "/nope")
        # The line is written just after the response went out, by the server thread: wait for it.
        wait_for(
            lambda: any("GET /nope -> 404" in r.getMessage() for r in caplog.records if r.name == "exporter.server"),
            5,
            interval=0.01,
            what="the request log line",
        )
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "exporter.server")


# ---- limits (issue 9, item 7) ---------------------------------------------------------------


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _closed_by_server(sock: socket.socket, within: float, trickle: bytes = b"") -> bool:
    """Trickle ``trickle`` a byte every 0.1 s; True once the server has closed the connection."""
    deadline = time.monotonic() + within
    i = 0
    while time.monotonic() < deadline:
        try:
            if i < len(trickle):
                sock.sendall(trickle[i : i + 1])
                i += 1
            ready, _, _ = select.select([sock], [], [], 0.1)
            if ready and sock.recv(4096) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def _limited(limits: ServerLimits) -> ServerHandle:
    _, state = make_state()
    cfg = Config(listen_address="127.0.0.1:0")
    return start_server(cfg, state, build_registry(cfg, state, process=False), limits=limits)


def test_connections_are_capped_and_the_excess_refused_at_once() -> None:
    h = _limited(ServerLimits(max_connections=4, request_read_timeout_s=30.0))
    idle = [_raw(h.port) for _ in range(4)]
    try:
        wait_for(lambda: h.active_connections >= 4, 30, interval=0.01, what="four connections accepted")
        assert h.active_connections == 4
        extra = _raw(h.port)
        extra.settimeout(5)
        assert extra.recv(100).startswith(b"HTTP/1.1 503")
        extra.close()
        assert len([t for t in threading.enumerate() if t.name == "fr-http-conn"]) <= 4
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: h.active_connections == 0, 30, interval=0.01, what="the connections' slots released")
    try:
        assert httpx.get(h.url + "/healthz").status_code == 200  # slots come back
    finally:
        h.stop()


def test_a_slow_or_silent_client_is_cut_at_the_read_deadline() -> None:
    h = _limited(ServerLimits(request_read_timeout_s=0.5, idle_timeout_s=60.0))
    try:
        silent = _raw(h.port)  # half-open: connects, sends nothing
        slow = _raw(h.port)  # a byte every 0.1 s: each read is quick, the request never completes
        assert _closed_by_server(slow, 5.0, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100)
        assert _closed_by_server(silent, 5.0)
        # an ordinary keep-alive client is not affected: idle between requests is the idle timeout
        with httpx.Client() as c:
            assert c.get(h.url + "/healthz").status_code == 200
            time.sleep(0.8)  # longer than the read deadline, between two requests
            assert c.get(h.url + "/healthz").status_code == 200
    finally:
        h.stop()


def test_backlog_nodelay_and_one_write_per_response(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    original = socketserver._SocketWriter.write

    def counting(self: Any, b: Any) -> int:
        writes.append(len(b))
        return original(self, b)

    monkeypatch.setattr(socketserver._SocketWriter, "write", counting)
    h = _limited(ServerLimits())
    try:
        assert h._server.request_queue_size >= 128
        ss = subprocess.run(["ss", "-ltnH", f"sport = :{h.port}"], capture_output=True, text=True, check=False)
        if ss.returncode == 0 and ss.stdout.strip():
            assert int(ss.stdout.split()[2]) >= 128  # a listening socket's Send-Q is its backlog
        with httpx.Client() as c:
            for path in ("/metrics", "/healthz", "/api/state", "/nope"):
                writes.clear()
                assert c.get(h.url + path).status_code in (200, 404)
                assert len(writes) == 1, (path, writes)
            conn = _raw(h.port)
            wait_for(lambda: h.active_connections >= 2, 30, interval=0.01, what="the raw connection accepted")
            flags = {s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in list(h._server._active)}
            conn.close()
        assert flags == {1}
    finally:
        h.stop()


def test_start_line_says_all_interfaces(caplog: pytest.LogCaptureFixture) -> None:
    _, state = make_state()
    for address, expect in (("0.0.0.0:0", True), ("127.0.0.1:0", False)):
        cfg = Config(listen_address=address)
        with caplog.at_level(logging.INFO, logger="exporter.server"):
            caplog.clear()
            h = start_server(cfg, state, build_registry(cfg, state, process=False))
            h.stop()
        (line,) = [r.getMessage() for r in caplog.records if r.name == "exporter.server"]
        assert ("all interfaces" in line) is expect, line


def test_busy_port_is_a_listen_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _, state = make_state()
        cfg = Config(listen_address=f"127.0.0.1:{port}")
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            start_server(cfg, state, build_registry(cfg, state, process=False))
        with pytest.raises(ListenError):
            bind_check(f"127.0.0.1:{port}")


def test_telemetry_path() -> None:
    _, state = make_state()
    cfg = Config.model_validate({"listen_address": "127.0.0.1:0", "telemetry_path": "/prom/metrics"})
    h = start_server(cfg, state, build_registry(cfg, state, process=False))
    try:
        assert "fr_funding_rate{" in httpx.get(h.url + "/prom/metrics").text
        assert httpx.get(h.url + "/metrics").status_code == 404
        assert 'href="/prom/metrics"' in httpx.get(h.url + "/").text
    finally:
        h.stop()
    with pytest.raises(ValueError):
        Config.model_validate({"telemetry_path": "metrics"})  # must start with /
