"""HTTP(S) server: /metrics, /, /healthz, /api/state.

It runs in its own thread (one more per connection, at most ``ServerLimits.max_connections``), so a
scrape never blocks the asyncio loop that writes state; it only reads state, through collectors that
copy what they need. TLS, basic auth and the /metrics negotiation come from :mod:`exporter.web`,
shared with the sidecar.
"""

from __future__ import annotations

import contextlib
import html
import io
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.api_state import ExtraApi, build_state_document
from exporter.config import Config, parse_listen_address
from exporter.metrics.exposition import maybe_gzip
from exporter.redact import redact
from exporter.state import MarketState
from exporter.views import MarketViews
from exporter.web import (
    UNAUTHORIZED_HEADERS,
    TlsServerConfig,
    WebConfig,
    WebSecurity,
    metrics_response,
    server_ssl_context,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client may hold of the server (issue 9: 300 half-open requests made 304 threads)."""

    max_connections: int = 64  # one thread each; beyond this a connection gets 503 and is closed
    request_read_timeout_s: float = 10.0  # request line + headers must arrive within this, however slowly
    idle_timeout_s: float = 60.0  # keep-alive connections (Prometheus reuses them) closed after this silence
    backlog: int = 128  # listen queue (socketserver's default of 5 stalled 50 clients opening at once)


DEFAULT_LIMITS = ServerLimits()
TLS_HANDSHAKE_TIMEOUT_S = 10.0
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 13\r\nConnection: close\r\n\r\ntoo many conn\n"


class ListenError(OSError):
    """The address cannot be bound (busy port, no permission, unknown host)."""


@dataclass
class ServerHandle:
    """A running server: where it listens, and how to stop it."""

    port: int
    url: str
    _server: _Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    @property
    def active_connections(self) -> int:
        return self._server.active_count()


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


class _Server(HTTPServer):
    """HTTPServer with a bounded number of connection threads, TLS in the connection's thread and
    TCP_NODELAY (a response is one write, but a small one must not wait for the previous ACK)."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limits: ServerLimits) -> None:
        self.limits = limits
        self.request_queue_size = limits.backlog
        self.tls: ssl.SSLContext | None = None
        self.rejected = 0
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._active: set[Any] = set()
        self._active_lock = threading.Lock()
        super().__init__(address, handler)

    def active_count(self) -> int:
        with self._active_lock:
            return len(self._active)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Full: answer at once rather than queue (a queued scrape would time out anyway).
            self.rejected += 1
            log.debug("connection from %s refused: %d connections open", client_address, self.limits.max_connections)
            if self.tls is None:
                with contextlib.suppress(OSError):
                    request.settimeout(0.5)
                    request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        with self._active_lock:
            self._active.add(request)
        t = threading.Thread(target=self._work, args=(request, client_address), name="fr-http-conn", daemon=True)
        t.start()

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._active_lock:
                self._active.discard(request)
            self.shutdown_request(request)
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so a slow or silent client
        # cannot stall accept() for everyone else.
        if self.tls is not None:
            try:
                request.settimeout(min(TLS_HANDSHAKE_TIMEOUT_S, self.limits.request_read_timeout_s))
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        # wake connection threads blocked in a read so they end now, not at their timeout
        with self._active_lock:
            active = list(self._active)
        for sock in active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _DeadlineReader(io.RawIOBase):
    """The connection's read side: every read waits at most until the request's deadline, so a
    client sending a byte every few seconds cannot hold a connection past it (a per-read timeout
    alone restarts with each byte)."""

    def __init__(self, sock: socket.socket, owner: Any) -> None:
        self._sock = sock
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        deadline = self._owner.deadline
        if deadline is None:
            self._sock.settimeout(self._owner.idle_timeout)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("request not received in time")
            self._sock.settimeout(remaining)
        return self._sock.recv_into(buf)


def _make_handler(
    state: MarketState,
    registry: CollectorRegistry,
    views: MarketViews,
    config: Config,
    extra_api: ExtraApi | None,
    security: WebSecurity,
    limits: ServerLimits,
    telemetry_path: str,
) -> type[BaseHTTPRequestHandler]:
    landing = _landing_page().replace(b'href="/metrics">/metrics', f'href="{telemetry_path}">{telemetry_path}'.encode())
    extra_headers = security.headers

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"fr-exporter/{__version__}"
        idle_timeout = limits.idle_timeout_s
        deadline: float | None = None
        status = 0
        _served = 0
        _headers_buffer: list[bytes]

        def setup(self) -> None:
            super().setup()
            # the first request line must arrive within the read deadline of the accept
            self.deadline = time.monotonic() + limits.request_read_timeout_s
            self._reader = io.BufferedReader(_DeadlineReader(self.connection, self), 65536)
            self.rfile = self._reader

        def handle_one_request(self) -> None:
            if self._served:
                # keep-alive: wait up to the idle timeout for the next request's first byte, then
                # give the rest of it the read deadline
                self.deadline = None
                try:
                    if not self._reader.peek(1):
                        self.close_connection = True
                        return
                except OSError:
                    self.close_connection = True
                    return
                self.deadline = time.monotonic() + limits.request_read_timeout_s
            self._served += 1
            super().handle_one_request()

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            self.status = int(code) if str(code).isdigit() else 0  # logged once, with the duration, by _route

        def _send(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str],
            head_only: bool = False,
        ) -> None:
            self.send_response(status)
            for k, v in {**extra_headers, **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            # One write for head and body: two small writes on a keep-alive connection can wait
            # for a delayed ACK (the 44 ms stall issue 9 measured).
            self._headers_buffer.append(b"\r\n")
            data = b"".join(self._headers_buffer)
            self._headers_buffer = []
            self.wfile.write(data if head_only else data + body)

        def _text(self, status: int, text: str, head_only: bool, headers: dict[str, str] | None = None) -> None:
            self._send(
                status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}, head_only
            )

        def _route(self, head_only: bool) -> None:
            # the request is in: writing the answer is bounded by the idle timeout, not the read deadline
            self.deadline = None
            self.connection.settimeout(limits.idle_timeout_s)
            path, _, query = self.path.partition("?")
            t0 = time.perf_counter()
            try:
                if path != "/healthz" and not security.authorized(self.headers.get("Authorization")):
                    self._text(401, "unauthorized\n", head_only, UNAUTHORIZED_HEADERS)
                elif path == telemetry_path:
                    p = metrics_response(
                        registry, self.headers.get("Accept"), self.headers.get("Accept-Encoding"), query
                    )
                    self._send(200, p.body, p.headers, head_only)
                elif path == "/":
                    self._send(200, landing, {"Content-Type": "text/html; charset=utf-8"}, head_only)
                elif path == "/healthz":
                    self._text(200, "ok\n", head_only)
                elif path == "/api/state":
                    doc = build_state_document(config, state, views, extra_api)
                    # Defence in depth: anything that looks like a registered secret is masked.
                    text = redact(orjson.dumps(doc).decode())
                    body, enc = maybe_gzip(text.encode(), self.headers.get("Accept-Encoding"))
                    hdrs = {"Content-Type": "application/json"}
                    if enc:
                        hdrs.update({"Content-Encoding": enc, "Vary": "Accept-Encoding"})
                    self._send(200, body, hdrs, head_only)
                else:
                    self._text(404, "not found\n", head_only)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("client %s went away during %s", self.address_string(), path)
            except Exception:
                log.exception("error serving %s", path)
                try:
                    self._text(500, "internal error\n", head_only)
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


def all_interfaces(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def bind_check(address: str) -> None:
    """Raise ListenError now if ``address`` cannot be bound (the exporter binds only after its
    start-up backfill; a busy port should not wait that long to be reported)."""
    host, port = parse_listen_address(address)
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise ListenError(exc.errno, f"cannot listen on {address}: {exc.strerror or exc}") from None


def start_server(
    config: Config,
    state: MarketState,
    registry: CollectorRegistry,
    extra_api: Callable[[], Any] | None = None,
    *,
    security: WebSecurity | None = None,
    limits: ServerLimits = DEFAULT_LIMITS,
    telemetry_path: str | None = None,
) -> ServerHandle:
    """Serve on ``config.listen_address`` (port 0: any free port) in a daemon thread; TLS and basic
    auth from ``security`` (default: ``config.web_config_file``, or the older ``config.tls``).
    ``extra_api()`` returns extra top-level keys for /api/state (e.g. ``{"positions": [...]}``; a
    bare list is taken as the positions). Raises ListenError, or ConfigError for the web config."""
    host, port = parse_listen_address(config.listen_address) if config.listen_address else ("127.0.0.1", 0)
    if security is None:
        security = security_for(config)
    path = telemetry_path or config.telemetry_path
    views = getattr(registry, "views", None)  # one view layer (and its caches) for /metrics and /api/state
    if not isinstance(views, MarketViews):
        views = MarketViews(config, state)
    handler = _make_handler(state, registry, views, config, extra_api, security, limits, path)
    cls = _Server6 if ":" in host else _Server
    try:
        server = cls((host, port), handler, limits)
    except OSError as exc:
        raise ListenError(exc.errno, f"cannot listen on {config.listen_address}: {exc.strerror or exc}") from None
    server.tls = security.ssl_context
    bound_port = int(server.server_address[1])
    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in url_host and not url_host.startswith("["):
        url_host = f"[{url_host}]"
    thread = threading.Thread(target=server.serve_forever, name="fr-http", daemon=True, kwargs={"poll_interval": 0.2})
    thread.start()
    where = " (all interfaces)" if all_interfaces(host) else ""
    log.info("serving %s://%s:%d%s%s; %s", security.scheme, host, bound_port, path, where, security.describe())
    return ServerHandle(bound_port, f"{security.scheme}://{url_host}:{bound_port}", server, thread)


def security_for(config: Config) -> WebSecurity:
    """The exporter's web security: ``web_config_file`` (exporter-toolkit format), else ``tls:``."""
    if config.web_config_file is not None:
        return WebSecurity.from_file(config.web_config_file)
    if config.tls is not None:
        tls = TlsServerConfig(cert_file=config.tls.cert_file, key_file=config.tls.key_file)
        return WebSecurity(WebConfig(tls_server_config=tls), server_ssl_context(tls))
    return WebSecurity()
