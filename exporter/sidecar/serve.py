"""The sidecar's HTTP side: its own /metrics server and its client for the exporter's /api/state.

The server is an aiohttp adapter over :mod:`exporter.web` (the exporter's server uses the same
module): the same web config (TLS, mTLS, basic auth), the same /metrics negotiation (text 0.0.4,
OpenMetrics, gzip, ``?name[]=``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.config import ConfigError, SidecarConfig, read_secret
from exporter.web import UNAUTHORIZED_HEADERS, WebSecurity, metrics_response


def make_app(
    registry: CollectorRegistry, security: WebSecurity | None = None, telemetry_path: str = "/metrics"
) -> web.Application:
    security = security or WebSecurity()
    extra_headers = security.headers

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        # bcrypt is slow by design: checked off the event loop
        if (
            request.path != "/healthz"
            and security.auth_required
            and not await asyncio.to_thread(security.authorized, request.headers.get("Authorization"))
        ):
            return web.Response(status=401, text="unauthorized\n", headers=UNAUTHORIZED_HEADERS)
        return await handler(request)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(extra_headers)

    async def metrics(request: web.Request) -> web.Response:
        p = metrics_response(
            registry, request.headers.get("Accept"), request.headers.get("Accept-Encoding"), request.query_string
        )
        return web.Response(body=p.body, headers=p.headers)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"fr-exporter AI sidecar: {telemetry_path} /healthz\n")

    app = web.Application(middlewares=[auth])
    app.on_response_prepare.append(add_headers)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    return app


async def start_server(
    registry: CollectorRegistry, host: str, port: int, security: WebSecurity | None = None
) -> web.AppRunner:
    """Serve until ``runner.cleanup()``. Raises OSError when the address cannot be bound."""
    security = security or WebSecurity()
    runner = web.AppRunner(make_app(registry, security), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=security.ssl_context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def exporter_client(sc: SidecarConfig, timeout: float = 10.0) -> httpx.AsyncClient:
    """The client for the exporter's /api/state, with the credentials ``sidecar.exporter_client``
    names (needed when the exporter has basic auth or requires client certificates)."""
    c = sc.exporter_client
    auth: httpx.BasicAuth | None = None
    if c.username:
        password = read_secret(c.password_env, c.password_file)
        if password is None:
            raise ConfigError("sidecar.exporter_client.username is set but no password (password_env/password_file)")
        auth = httpx.BasicAuth(c.username, password)
    verify: Any = True
    if c.ca_file is not None or c.cert_file is not None:
        try:
            ctx = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
            if c.cert_file is not None:
                ctx.load_cert_chain(str(c.cert_file), str(c.key_file) if c.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"sidecar.exporter_client: cannot use the TLS files: {exc}") from None
        verify = ctx
    return httpx.AsyncClient(
        base_url=sc.exporter_url.rstrip("/"), timeout=httpx.Timeout(timeout), auth=auth, verify=verify
    )
