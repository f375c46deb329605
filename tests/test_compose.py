"""docker-compose.yml and Dockerfile: valid for docker-compose, healthchecks, startup order,
secrets from files, mounts that exist, the demo profile, and a scrape config that matches."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixin.config import DEFAULT

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"exporter", "sidecar", "prometheus", "alertmanager", "grafana"}
SCALEOUT = {
    "exporter-shard-1",
    "exporter-shard-2",
    "prometheus-agent",
    "victoriametrics",
    "vmalert",
    "grafana-scaleout",
}
PROFILED = {"simulator"} | SCALEOUT


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        res = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if res.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.e2e  # runs docker-compose (.ci/tools installs it)
@pytest.mark.parametrize("profile", [None, "demo", "scaleout"])
def test_docker_compose_config_validates(profile: str | None, tmp_path: Path) -> None:
    cmd = _compose_binary()
    if cmd is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROFILES"}
    if profile:
        env["COMPOSE_PROFILES"] = profile  # enables the profile and selects config/<profile>.yaml
    res = subprocess.run([*cmd, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60, env=env,
                         cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr
    rendered = yaml.safe_load(res.stdout)
    # docker-compose 1.29 lists profile-only services too; `docker compose` v2 leaves them out
    assert SERVICES <= set(rendered["services"]) <= SERVICES | PROFILED
    assert ("simulator" in rendered["services"]) or profile != "demo"
    assert set(rendered["services"]) >= SCALEOUT or profile != "scaleout"
    config = f"/etc/fr-exporter/{profile or 'live'}.yaml"
    for service in ("exporter", "sidecar"):
        assert config in rendered["services"][service]["command"]


def test_structure() -> None:
    c = _compose()
    assert "version" not in c
    services = c["services"]
    assert set(services) == SERVICES | PROFILED
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["simulator"]["command"][0] == "simulate"
    assert all(services[n]["profiles"] == ["scaleout"] for n in SCALEOUT)
    assert all("profiles" not in s for n, s in services.items() if n not in PROFILED)


@pytest.mark.parametrize(
    ("service", "needle"),
    [("prometheus", "/-/healthy"), ("alertmanager", "/-/healthy"), ("grafana", "/api/health"),
     ("exporter", "/healthz"), ("sidecar", "/healthz"), ("simulator", "/_sim/truth")],
)  # fmt: skip
def test_healthchecks(service: str, needle: str) -> None:
    hc = _compose()["services"][service]["healthcheck"]
    assert any(needle in part for part in hc["test"]), hc
    assert hc["test"][0] == "CMD"


def test_startup_order_waits_for_health() -> None:
    services = _compose()["services"]
    deps = {n: s.get("depends_on", {}) for n, s in services.items()}
    assert deps["sidecar"] == {"exporter": {"condition": "service_healthy"}}
    assert deps["grafana"] == {"prometheus": {"condition": "service_healthy"}}
    assert deps["prometheus"] == {"alertmanager": {"condition": "service_healthy"}}
    for name, d in deps.items():
        for target, spec in d.items():
            assert spec["condition"] == "service_healthy", (name, target)
            assert "healthcheck" in services[target], target


def test_secrets_are_files() -> None:
    c = _compose()
    secrets = c["secrets"]
    webhooks = {f"slack_webhook_url_{s}" for s in ("emergency", "critical", "warning", "info", "carry")}
    assert set(secrets) == webhooks | {"slack_webhook_url_ai", "llm_api_key", "grafana_admin_password"}
    for name, spec in secrets.items():
        path = ROOT / spec["file"]
        assert path.is_file() or path.with_name(path.name + ".example").is_file(), f"{name}: no file or example"
    services = c["services"]
    assert set(services["alertmanager"]["secrets"]) == webhooks
    assert {"slack_webhook_url_ai", "llm_api_key"} <= set(services["sidecar"]["secrets"])
    env = services["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    am = yaml.safe_load((ROOT / "prometheus/alertmanager.yml").read_text())
    files = {sc["api_url_file"] for r in am["receivers"] for sc in r["slack_configs"]}
    assert files == {f"/run/secrets/{w}" for w in webhooks}
    # nothing secret-looking inline
    text = COMPOSE.read_text()
    assert not re.search(r"hooks\.slack\.com|xox[bp]-|sk-[A-Za-z0-9]{10}", text)


def test_bind_mounts_exist_and_match_the_configs() -> None:
    services = _compose()["services"]
    for name, s in services.items():
        for vol in s.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name}: {src} does not exist"
    prom_mounts = services["prometheus"]["volumes"]
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in prom_mounts
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom_mounts
    am_mounts = services["alertmanager"]["volumes"]
    assert "./prometheus/templates:/etc/alertmanager/templates:ro" in am_mounts
    graf = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in graf
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in graf
    # config files the exporter and sidecar are started with
    for cfg in ("live.yaml", "demo.yaml"):
        assert (ROOT / "config" / cfg).is_file()


def test_prometheus_scrapes_the_compose_services() -> None:
    prom = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert jobs[DEFAULT.exporter_job] == [f"exporter:{DEFAULT.exporter_port}"]
    assert jobs[DEFAULT.sidecar_job] == [f"sidecar:{DEFAULT.sidecar_port}"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert prom["rule_files"] == ["rules/*.yml"]
    services = _compose()["services"]
    assert services["exporter"]["environment"]["FR_LISTEN_ADDRESS"].endswith(f":{DEFAULT.exporter_port}")
    assert services["sidecar"]["environment"]["FR_SIDECAR__LISTEN_ADDRESS"].endswith(f":{DEFAULT.sidecar_port}")
    assert services["sidecar"]["environment"]["FR_SIDECAR__EXPORTER_URL"] == f"http://exporter:{DEFAULT.exporter_port}"


def test_images_pinned() -> None:
    services = _compose()["services"]
    assert services["prometheus"]["image"] == "prom/prometheus:v2.42.0"
    assert services["alertmanager"]["image"] == "prom/alertmanager:v0.25.0"
    assert re.fullmatch(r"grafana/grafana:11\.6\.\d+", services["grafana"]["image"])


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms == ["FROM python:3.11-slim AS build", "FROM python:3.11-slim"]
    # the image installs the wheel `python -m build` makes, not the source tree
    assert any("python -m build --wheel --outdir /dist" in ln for ln in lines)
    assert any(ln.startswith("RUN pip install /tmp/dist/*.whl") for ln in lines)
    assert "FR_BUILD_REVISION=${REVISION}" in text
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert 'ENTRYPOINT ["fr-exporter"]' in lines
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!exporter/" in ignore and "!pyproject.toml" in ignore and "!LICENSE" in ignore


def test_prometheus_and_alertmanager_know_their_external_urls() -> None:
    """Links in alerts (Prometheus' generator URL) and in Slack (Alertmanager's silence links) must
    open from a user's browser, not from inside the container network."""
    services = _compose()["services"]
    for name, var, port in (
        ("prometheus", "PROMETHEUS_EXTERNAL_URL", 9090),
        ("alertmanager", "ALERTMANAGER_EXTERNAL_URL", 9093),
    ):
        flags = [c for c in services[name]["command"] if c.startswith("--web.external-url=")]
        assert flags == [f"--web.external-url=${{{var}:-http://localhost:{port}}}"], name


def test_scaleout_profile_is_consistent() -> None:
    """The shards, the agent's targets, config/scaleout.yaml's count, vmalert's rules and Grafana's source agree."""
    services = _compose()["services"]
    cfg = yaml.safe_load((ROOT / "config/scaleout.yaml").read_text())
    count = cfg["shard"]["count"]
    shards = {"exporter": 0} | {
        n: int(s["environment"]["FR_SHARD__INDEX"]) for n, s in services.items() if n.startswith("exporter-shard-")
    }
    assert sorted(shards.values()) == list(range(count))  # every index once, the base exporter is shard 0
    agent = yaml.safe_load((ROOT / "prometheus/agent.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in agent["scrape_configs"]}
    assert sorted(jobs[DEFAULT.exporter_job]) == sorted(f"{n}:{DEFAULT.exporter_port}" for n in shards)
    assert agent["remote_write"][0]["url"] == "http://victoriametrics:8428/api/v1/write"
    assert "rule_files" not in agent and "alerting" not in agent  # agent mode evaluates nothing
    assert "--enable-feature=agent" in services["prometheus-agent"]["command"]
    vmalert = services["vmalert"]
    assert "./prometheus/rules:/etc/vmalert/rules:ro" in vmalert["volumes"]
    assert "-rule=/etc/vmalert/rules/*.yml" in vmalert["command"]
    assert "-notifier.url=http://alertmanager:9093" in vmalert["command"]
    assert "-datasource.url=http://victoriametrics:8428" in vmalert["command"]
    ds = yaml.safe_load((ROOT / "grafana/provisioning-scaleout/datasources/victoriametrics.yml").read_text())
    (source,) = ds["datasources"]
    assert source["url"] == "http://victoriametrics:8428" and source["uid"] == DEFAULT.datasource_uid
    assert source["jsonData"]["timeInterval"] == agent["global"]["scrape_interval"]
    # the shards keep their accrual databases apart (one volume)
    paths = [s["environment"].get("FR_POSITION_SETTINGS__DB_PATH") for n, s in services.items() if n in shards]
    assert len({p for p in paths if p}) == count - 1
