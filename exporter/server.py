"""HTTP(S) server: /metrics, /, /healthz, /api/state.

It runs in its own thread (one more thread per connection), so a scrape never blocks the asyncio
loop that writes state; it only reads state, through collectors that copy what they need.
"""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_om

from exporter import __version__
from exporter.api_state import ExtraApi, build_state_document
from exporter.config import Config, parse_listen_address
from exporter.metrics.exposition import content_type, maybe_gzip, wants_openmetrics
from exporter.metrics.market import MarketAnalytics
from exporter.redact import redact
from exporter.state import MarketState

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 60.0  # keep-alive connections (Prometheus reuses them) closed after this much silence
TLS_HANDSHAKE_TIMEOUT_S = 10.0


@dataclass
class ServerHandle:
    """A running server: where it listens, and how to stop it."""

    port: int
    url: str
    _server: ThreadingHTTPServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def _landing_page() -> bytes:
    v = html.escape(__version__)
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>fr-exporter</title></head><body>'
        f"<h1>fr-exporter {v}</h1>"
        "<p>Prometheus exporter for crypto perpetual-futures funding rates and liquidations.</p><ul>"
        '<li><a href="/metrics">/metrics</a> (text 0.0.4 or OpenMetrics by Accept)</li>'
        '<li><a href="/api/state">/api/state</a> (JSON snapshot)</li>'
        '<li><a href="/healthz">/healthz</a></li></ul></body></html>\n'
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client must not keep the process alive at shutdown
    allow_reuse_address = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so a slow or silent client
        # cannot stall accept() for everyone else.
        if self.tls is not None:
            try:
                request.settimeout(TLS_HANDSHAKE_TIMEOUT_S)
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _make_handler(
    state: MarketState,
    registry: CollectorRegistry,
    analytics: MarketAnalytics,
    config: Config,
    extra_api: ExtraApi | None,
) -> type[BaseHTTPRequestHandler]:
    landing = _landing_page()
    fast = getattr(registry, "render", None)

    def metrics_body(openmetrics: bool) -> bytes:
        if fast is not None:
            return bytes(fast(openmetrics))
        return generate_latest_om(registry) if openmetrics else generate_latest(registry)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"fr-exporter/{__version__}"
        timeout = IDLE_TIMEOUT_S

        status = 0

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            self.status = int(code) if str(code).isdigit() else 0  # logged once, with the duration, by _route

        def _send(
            self, status: int, body: bytes, ctype: str, head_only: bool = False, encoding: str | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if encoding:
                self.send_header("Content-Encoding", encoding)
                self.send_header("Vary", "Accept-Encoding")
            self.end_headers()
            if not head_only:
                self.wfile.write(body)

        def _route(self, head_only: bool) -> None:
            path = self.path.split("?", 1)[0]
            t0 = time.perf_counter()
            try:
                if path == "/metrics":
                    om = wants_openmetrics(self.headers.get("Accept"))
                    body, enc = maybe_gzip(metrics_body(om), self.headers.get("Accept-Encoding"))
                    self._send(200, body, content_type(om), head_only, enc)
                elif path == "/":
                    self._send(200, landing, "text/html; charset=utf-8", head_only)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain; charset=utf-8", head_only)
                elif path == "/api/state":
                    doc = build_state_document(config, state, analytics, extra_api)
                    # Defence in depth: anything that looks like a registered secret is masked.
                    text = redact(orjson.dumps(doc).decode())
                    body, enc = maybe_gzip(text.encode(), self.headers.get("Accept-Encoding"))
                    self._send(200, body, "application/json", head_only, enc)
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8", head_only)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("client %s went away during %s", self.address_string(), path)
            except Exception:
                log.exception("error serving %s", path)
                try:
                    self._send(500, b"internal error\n", "text/plain; charset=utf-8", head_only)
                except OSError:
                    pass
            log.debug(
                "%s %s %s -> %d in %.1f ms",
                self.address_string(),
                self.command,
                path,
                self.status,
                (time.perf_counter() - t0) * 1e3,
            )

        def do_GET(self) -> None:
            self._route(head_only=False)

        def do_HEAD(self) -> None:
            self._route(head_only=True)

    return Handler


def start_server(
    config: Config,
    state: MarketState,
    registry: CollectorRegistry,
    extra_api: Callable[[], Any] | None = None,
) -> ServerHandle:
    """Serve on ``config.listen_address`` (port 0: any free port) in a daemon thread; HTTPS when
    ``config.tls`` is set. ``extra_api()`` returns extra top-level keys for /api/state
    (e.g. ``{"positions": [...]}``; a bare list is taken as the positions)."""
    host, port = parse_listen_address(config.listen_address) if config.listen_address else ("127.0.0.1", 0)
    analytics = getattr(registry, "market", None)
    if not isinstance(analytics, MarketAnalytics):
        analytics = MarketAnalytics(config, state)
    handler = _make_handler(state, registry, analytics, config, extra_api)
    cls = _Server6 if ":" in host else _Server
    server = cls((host, port), handler)
    scheme = "http"
    if config.tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
        server.tls = ctx
        scheme = "https"
    bound_port = int(server.server_address[1])
    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in url_host and not url_host.startswith("["):
        url_host = f"[{url_host}]"
    thread = threading.Thread(target=server.serve_forever, name="fr-http", daemon=True, kwargs={"poll_interval": 0.2})
    thread.start()
    log.info("serving %s://%s:%d/metrics", scheme, host, bound_port)
    return ServerHandle(bound_port, f"{scheme}://{url_host}:{bound_port}", server, thread)
