"""The web surface both servers share (exporter/web.py): exporter-toolkit web config, basic auth,
mTLS, /metrics negotiation and ``name[]`` filtering, process_* and fr_build_info, on the exporter
and on the sidecar alike."""

from __future__ import annotations

import asyncio
import gzip
import platform
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config, ConfigError, SidecarConfig
from exporter.metrics import build_registry
from exporter.server import start_server
from exporter.sidecar.metrics import AiMetrics, make_registry
from exporter.sidecar.serve import exporter_client
from exporter.sidecar.serve import start_server as start_sidecar_server
from exporter.state import MarketState
from exporter.web import WebSecurity, load_web_config

USER, PASSWORD = "prometheus", "correct horse battery"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@contextmanager
def exporter(web_config: Path | None) -> Iterator[str]:
    cfg = Config.model_validate({"listen_address": "127.0.0.1:0", "web_config_file": web_config})
    state = MarketState()
    handle = start_server(cfg, state, build_registry(cfg, state))
    try:
        yield handle.url
    finally:
        handle.stop()


@asynccontextmanager
async def sidecar(web_config: Path | None) -> AsyncIterator[str]:
    security = WebSecurity.from_file(web_config)
    port = free_port()
    metrics = AiMetrics()
    metrics.register_model("baseline")
    runner = await start_sidecar_server(make_registry(metrics), "127.0.0.1", port, security)
    try:
        yield f"{security.scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def auth_config(tmp_path: Path) -> Path:
    return write(tmp_path / "web.yml", f"basic_auth_users:\n  {USER}: '{HASH}'\n")


def check_basic_auth(client: httpx.Client, url: str) -> None:
    for path in ("/metrics", "/"):
        anonymous = client.get(url + path)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
        assert "fr_" not in anonymous.text
        assert client.get(url + path, auth=(USER, "wrong password")).status_code == 401
        assert client.get(url + path, auth=("nobody", PASSWORD)).status_code == 401
    ok = client.get(url + "/metrics", auth=(USER, PASSWORD))
    assert ok.status_code == 200 and "process_resident_memory_bytes" in ok.text
    again = client.get(url + "/metrics", auth=(USER, PASSWORD))  # the verified-credentials cache
    assert again.status_code == 200
    assert client.get(url + "/metrics", auth=(USER, PASSWORD + "x")).status_code == 401
    # liveness probes carry no credentials; /healthz says nothing but "ok"
    assert client.get(url + "/healthz").status_code == 200


def test_basic_auth_on_the_exporter_including_api_state(tmp_path: Path) -> None:
    with exporter(auth_config(tmp_path)) as url, httpx.Client() as c:
        check_basic_auth(c, url)
        assert c.get(url + "/api/state").status_code == 401  # positions: sizes, liquidation prices
        assert c.get(url + "/api/state", auth=(USER, "nope")).status_code == 401
        assert c.get(url + "/api/state", auth=(USER, PASSWORD)).json()["instruments"] == []


async def test_basic_auth_on_the_sidecar(tmp_path: Path) -> None:
    async with sidecar(auth_config(tmp_path)) as url:
        await asyncio.to_thread(lambda: check_basic_auth(httpx.Client(), url))


async def test_sidecar_reads_a_protected_exporter_with_its_client_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FR_TEST_EXPORTER_PASSWORD", PASSWORD)
    with exporter(auth_config(tmp_path)) as url:
        sc = SidecarConfig(
            exporter_url=url,
            exporter_client={"username": USER, "password_env": "FR_TEST_EXPORTER_PASSWORD"},
        )
        async with exporter_client(sc) as client:
            assert (await client.get("/api/state")).status_code == 200
        async with exporter_client(SidecarConfig(exporter_url=url)) as anonymous:
            assert (await anonymous.get("/api/state")).status_code == 401


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    client_ca = trustme.CA()
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.crt"))
    client = client_ca.issue_cert("prometheus@example")
    stranger = trustme.CA().issue_cert("stranger@example")
    # relative paths: resolved against the web config's own directory, as exporter-toolkit does
    web = write(
        tmp_path / "web.yml",
        "tls_server_config:\n"
        "  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients-ca.crt\n"
        "  min_version: TLS13\n",
    )
    return {"ca": ca, "client": client, "stranger": stranger, "web": web}


def _ctx(pki: dict[str, object], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki["ca"].configure_trust(ctx)  # type: ignore[attr-defined]
    if cert is not None:
        pki[cert].configure_cert(ctx)  # type: ignore[attr-defined]
    return ctx


def check_mtls(url: str, pki: dict[str, object]) -> None:
    assert url.startswith("https://")
    with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
        httpx.get(url + "/metrics", verify=_ctx(pki, None), timeout=5).raise_for_status()
    with pytest.raises(httpx.HTTPError):  # a certificate from a CA the server does not trust
        httpx.get(url + "/metrics", verify=_ctx(pki, "stranger"), timeout=5).raise_for_status()
    r = httpx.get(url + "/metrics", verify=_ctx(pki, "client"), timeout=5)
    assert r.status_code == 200 and "process_open_fds" in r.text
    old = _ctx(pki, "client")
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.HTTPError):  # below min_version
        httpx.get(url + "/metrics", verify=old, timeout=5)


def test_mtls_on_the_exporter(pki: dict[str, object]) -> None:
    with exporter(pki["web"]) as url:  # type: ignore[arg-type]
        check_mtls(url, pki)


async def test_sidecar_client_certificate_for_an_mtls_exporter(pki: dict[str, object], tmp_path: Path) -> None:
    ca_file, cert_file = tmp_path / "exporter-ca.pem", tmp_path / "client.pem"
    pki["ca"].cert_pem.write_to_path(str(ca_file))  # type: ignore[attr-defined]
    pki["client"].private_key_and_cert_chain_pem.write_to_path(str(cert_file))  # type: ignore[attr-defined]
    with exporter(pki["web"]) as url:  # type: ignore[arg-type]
        sc = SidecarConfig(exporter_url=url, exporter_client={"ca_file": ca_file, "cert_file": cert_file})
        async with exporter_client(sc) as client:
            assert (await client.get("/api/state")).status_code == 200
        no_cert = SidecarConfig(exporter_url=url, exporter_client={"ca_file": ca_file})
        async with exporter_client(no_cert) as client:
            # TLS 1.3: the server's refusal arrives after the client's handshake, as an SSL alert
            with pytest.raises((httpx.HTTPError, ssl.SSLError)):
                (await client.get("/api/state")).raise_for_status()


async def test_mtls_on_the_sidecar(pki: dict[str, object]) -> None:
    async with sidecar(pki["web"]) as url:  # type: ignore[arg-type]
        await asyncio.to_thread(check_mtls, url, pki)


# ---- /metrics negotiation, filtering, process and build series -----------------------------


def check_negotiation(url: str) -> None:
    with httpx.Client() as c:
        text = c.get(url + "/metrics", headers={"Accept-Encoding": "identity"})
        assert text.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "content-encoding" not in text.headers
        om = c.get(url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        assert om.text.endswith("# EOF\n")
        with c.stream("GET", url + "/metrics", headers={"Accept-Encoding": "gzip"}) as raw:
            body = b"".join(raw.iter_raw())  # as sent, not decoded
        assert raw.headers["content-encoding"] == "gzip"
        assert b"process_start_time_seconds" in gzip.decompress(body)
        only = c.get(url + "/metrics?name[]=process_open_fds&name[]=process_resident_memory_bytes")
        names = {f.name for f in text_string_to_metric_families(only.text)}
        assert names == {"process_open_fds", "process_resident_memory_bytes"}
        counter = c.get(url + "/metrics?name[]=process_cpu_seconds_total")
        assert {f.name for f in text_string_to_metric_families(counter.text)} == {"process_cpu_seconds"}


def test_exporter_negotiation_and_name_filter() -> None:
    with exporter(None) as url:
        check_negotiation(url)
        fams = {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)}
        (build,) = fams["fr_build_info"].samples
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout
        assert build.labels["python_version"] == platform.python_version()
        if head:  # a checkout: the revision is its HEAD
            assert head.startswith(build.labels["revision"])
        assert fams["process_resident_memory_bytes"].samples[0].value > 1e6


async def test_sidecar_negotiation_and_name_filter() -> None:
    async with sidecar(None) as url:
        await asyncio.to_thread(check_negotiation, url)
        only = await asyncio.to_thread(httpx.get, url + "/metrics?name[]=fr_ai_requests_total")
        assert {f.name for f in text_string_to_metric_families(only.text)} == {"fr_ai_requests"}


# ---- the web config file ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("basic_auth_users:\n  alice: plaintext-password\n", "not a bcrypt hash"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n", "client_auth_type"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
            "needs client_ca_file",
        ),
        ("basic_auth_user:\n  alice: x\n", "basic_auth_user"),  # misspelt: an error, never ignored
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n", "min_version"),
    ],
)
def test_invalid_web_configs_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path / "web.yml", text)
    with pytest.raises(ConfigError) as exc:
        load_web_config(path)
    assert needle in str(exc.value) and str(path) in str(exc.value)


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
    with pytest.raises(ConfigError, match=r"cannot read TLS certificate file \(cert_file\) .*nope.crt: no such file"):
        WebSecurity.from_file(path)


def test_non_utf8_web_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(b"basic_auth_users:\n  \xff\xfe: x\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_web_config(path)
