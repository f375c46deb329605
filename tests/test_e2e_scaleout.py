"""Scale-out on loopback with the real binaries: three exporter shards over the simulator, scraped
by Prometheus in agent mode and written to VictoriaMetrics; vmalert evaluates the shipped rules
there and sends to Alertmanager. Each service runs the command, environment and files that
docker-compose.yml's `scaleout` profile gives it, hostnames and container paths made local.

Checked: VictoriaMetrics holds the same series set as one unsharded exporter serves, no instrument
comes twice, vmalert loads every shipped rule, and a simulated funding spike fires
FundingRateWarning in vmalert and reaches Alertmanager.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.fakes import FakeSlack

from mixin import generate
from mixin.config import DEFAULT, fast_variant
from mixin.stack import (
    Process,
    alertmanager_config,
    am_alerts,
    binary,
    free_port,
    http_json,
    run_alertmanager,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 3
PER_EXCHANGE = 8  # BTC, ETH, SOL, XRP, DOGE, ADA, AVAX, LINK on every exchange: all three shards get bases

# families compared between VictoriaMetrics and the single exporter: per instrument and per base
COMPARED = (
    "fr_funding_interval_seconds",
    "fr_liquidations_total",
    "fr_liquidated_notional_usd_total",
    "fr_mark_price",
    "fr_funding_rate",
    "fr_open_interest_usd",
)
IDENTITY = ("exchange", "instrument", "base", "quote", "side")

prometheus = binary("prometheus")
victoria = binary("victoria-metrics")
vmalert = binary("vmalert")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        None in (prometheus, victoria, vmalert, binary("prometheus-alertmanager", "alertmanager")),
        reason="needs prometheus, victoria-metrics, vmalert and alertmanager (apt-get install prometheus "
        "prometheus-alertmanager victoria-metrics)",
    ),
]


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    return Process([sys.executable, "-m", "exporter.cli", *args], log, cwd=ROOT, env={**os.environ, **(env or {})})


def _sim_urls(proc: Process) -> dict[str, dict[str, Any]]:
    def parse() -> dict[str, Any] | None:
        if not proc.alive():
            raise RuntimeError(f"simulator exited:\n{proc.log()}")
        for line in proc.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"simulator"' in line:
                return dict(json.loads(line)["simulator"])
        return None

    return dict(wait_for(parse, 30, what="simulator URLs"))


# The scale-out profile as docker-compose.yml declares it, run on loopback: each service's own command,
# environment and mounted files, with only what a container runtime would provide translated (service
# hostnames to loopback ports, container paths to temporary ones) and the intervals shortened for a test.
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
SHARD_SERVICES = ("exporter", "exporter-shard-1", "exporter-shard-2")
assert len(SHARD_SERVICES) == SHARDS and all(s in COMPOSE for s in SHARD_SERVICES)


def _localize(value: str, replace: dict[str, str]) -> str:
    for old, new in replace.items():
        value = value.replace(old, new)
    return value


def _command(service: str, replace: dict[str, str]) -> list[str]:
    return [_localize(str(a), replace) for a in COMPOSE[service]["command"]]


def _no_container_names(args: list[str] | str) -> None:
    """Guard: nothing still points at a compose service or a container path."""
    text = " ".join(args) if isinstance(args, list) else args
    left = [n for n in COMPOSE if f"//{n}:" in text or f"{n}:9" in text or f"{n}:8" in text]
    assert not left and "/etc/" not in text and "/var/lib/" not in text, (left, text)


def _compose_config_dir(tmp: Path, sim: dict[str, dict[str, Any]]) -> Path:
    """config/scaleout.yaml as mounted at /etc/fr-exporter, pointed at the simulator instead of the exchanges
    (fewer instruments and no history backfill: the start stays short). Everything else is as shipped: the
    shard count, the REST budget split between shards, the analytics settings."""
    cfg = yaml.safe_load((ROOT / "config/scaleout.yaml").read_text())
    assert cfg["shard"]["count"] == SHARDS
    for ex, u in sim.items():
        cfg["exchanges"][ex].update(
            ws_url=u["ws"], rest_url=u["rest"], max_instruments=PER_EXCHANGE, backfill=False
        )  # fmt: skip
    cfg["log_level"] = "warning"
    cfg["position_settings"] = {"db_path": str(tmp / "positions.sqlite")}  # shard 0's default; 1 and 2 set theirs
    out = tmp / "config"
    out.mkdir()
    (out / "scaleout.yaml").write_text(yaml.safe_dump(cfg))
    single = {**cfg, "shard": {"index": 0, "count": 1}, "position_settings": {"db_path": str(tmp / "single.sqlite")}}
    (out / "single.yaml").write_text(yaml.safe_dump(single))
    return out


def _shard_process(tmp: Path, service: str, config_dir: Path, port: int) -> Process:
    replace = {
        "${COMPOSE_PROFILES:-live}": "scaleout",  # COMPOSE_PROFILES=scaleout
        "/etc/fr-exporter": str(config_dir),
        "/var/lib/fr-exporter/var": str(tmp),
        "0.0.0.0:9466": f"127.0.0.1:{port}",
    }
    args = _command(service, replace)
    env = {k: _localize(str(v), replace) for k, v in (COMPOSE[service].get("environment") or {}).items()}
    _no_container_names(args + list(env.values()))
    return _spawn(args, tmp / f"{service}.log", env)


def _agent_config(tmp: Path, hosts: dict[str, str]) -> Path:
    """prometheus/agent.yml with the compose hostnames mapped to loopback; a job whose targets are not run
    here (the sidecar) is left out. Test timings: a 1 s scrape and remote-write deadline."""
    cfg = yaml.safe_load((ROOT / "prometheus/agent.yml").read_text())
    cfg["global"]["scrape_interval"] = "1s"
    jobs = []
    for job in cfg["scrape_configs"]:
        for sc in job["static_configs"]:
            sc["targets"] = [hosts[t] for t in sc["targets"] if t in hosts]
        if any(sc["targets"] for sc in job["static_configs"]):
            jobs.append(job)
    cfg["scrape_configs"] = jobs
    for rw in cfg["remote_write"]:
        rw["url"] = _localize(rw["url"], {f"//{k}": f"//{v}" for k, v in hosts.items()})
        rw["queue_config"] = {"batch_send_deadline": "1s"}
    text = yaml.safe_dump(cfg)
    _no_container_names(text)
    path = tmp / "agent.yml"
    path.write_text(text)
    return path


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def _vm_query(vm: str, expr: str) -> list[dict[str, Any]]:
    body = http_json(vm + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _identity(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, labels[k]) for k in IDENTITY if k in labels)


def _single_series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    out = set()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in COMPARED:
                out.add((s.name, _identity(s.labels)))
    return out


class Scaleout:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Process] = []

    def start(self, args: list[str], log: str) -> Process:
        p = Process(args, self.tmp / log)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture(scope="module")
def scaleout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("scaleout")
    run = Scaleout(tmp)
    try:
        sim_proc = _spawn(["simulate", "--base-port", "0", "--seed", "5", "--instruments-per-exchange",
                           str(PER_EXCHANGE), "--okx-funding-push-seconds", "2"], tmp / "sim.log")  # fmt: skip
        run.procs.append(sim_proc)
        sim = _sim_urls(sim_proc)
        ports = [free_port() for _ in range(SHARDS + 1)]
        config_dir = _compose_config_dir(tmp, sim)
        exporters = [_shard_process(tmp, s, config_dir, p) for s, p in zip(SHARD_SERVICES, ports, strict=False)]
        single = ["--config", str(config_dir / "single.yaml"), "--web.listen-address", f"127.0.0.1:{ports[SHARDS]}"]
        exporters.append(_spawn(single, tmp / "single.log"))
        run.procs.extend(exporters)
        for port, proc in zip(ports, exporters, strict=True):
            url = f"http://127.0.0.1:{port}/healthz"

            def up(url: str = url, proc: Process = proc) -> bool:
                if not proc.alive():
                    raise RuntimeError(f"exporter exited:\n{proc.log()}")
                return bool(_get(url))

            wait_for(up, 120, what=f"exporter {url}")  # four exporters start at once on a busy machine

        vm_port, agent_port, vma_port = free_port(), free_port(), free_port()
        vm = f"http://127.0.0.1:{vm_port}"
        hosts = {f"{s}:9466": f"127.0.0.1:{p}" for s, p in zip(SHARD_SERVICES, ports, strict=False)}
        hosts["victoriametrics:8428"] = f"127.0.0.1:{vm_port}"
        vm_args = _command(
            "victoriametrics", {"=/storage": f"={tmp / 'vm-data'}", "=:8428": f"=127.0.0.1:{vm_port}"}
        )  # fmt: skip
        _no_container_names(vm_args)
        # test-only: no query cache and a 1 s latency offset, so just-written samples are read at once
        run.start([str(victoria), *vm_args, "-search.latencyOffset=1s", "-search.disableCache"], "victoria-metrics.log")
        wait_for(lambda: _get(vm + "/health").strip() == "OK", 30, what="VictoriaMetrics healthy")

        agent_args = _command(
            "prometheus-agent",
            {"/etc/prometheus/agent.yml": str(_agent_config(tmp, hosts)), "=/prometheus": f"={tmp / 'agent-data'}"},
        )
        _no_container_names(agent_args)
        agent_args.append(f"--web.listen-address=127.0.0.1:{agent_port}")
        run.start([str(prometheus), *agent_args], "prometheus-agent.log")

        rules = [p for p in generate.write(tmp / "mixin", fast_variant(), with_tests=False) if p.suffix == ".yml"]
        with FakeSlack() as slack, run_alertmanager(tmp, alertmanager_config(tmp, slack.url)) as am:
            vma = f"http://127.0.0.1:{vma_port}"
            hosts["alertmanager:9093"] = am.split("//", 1)[1]
            vma_args = _command(
                "vmalert",
                {
                    "/etc/vmalert/rules": str(rules[0].parent),  # the fast variant of the shipped rules (short `for`)
                    **{f"//{k}": f"//{v}" for k, v in hosts.items()},
                    "-evaluationInterval=15s": "-evaluationInterval=1s",
                },
            )
            _no_container_names(vma_args)
            vmalert_proc = run.start([str(vmalert), *vma_args, f"-httpListenAddr=127.0.0.1:{vma_port}"], "vmalert.log")
            wait_for(lambda: _get(vma + "/health").strip() == "OK", 30, what=f"vmalert up:\n{vmalert_proc.log()}")
            yield {
                "sim": sim,
                "vm": vm,
                "vmalert": vma,
                "am": am,
                "single": f"http://127.0.0.1:{ports[SHARDS]}",
                "rules": rules,
                "vmalert_proc": vmalert_proc,
            }
    finally:
        run.stop()


def test_victoriametrics_holds_what_one_exporter_serves_once(scaleout: dict[str, Any]) -> None:
    vm = scaleout["vm"]
    selector = '{__name__=~"' + "|".join(COMPARED) + '",job="' + DEFAULT.exporter_job + '"}'
    last: dict[str, Any] = {}

    def same() -> bool:
        single = _single_series(_get(scaleout["single"] + "/metrics"))
        rows = _vm_query(vm, f"count by (__name__, {', '.join(IDENTITY)}) ({selector})")
        stored = {(r["metric"]["__name__"], _identity(r["metric"])) for r in rows}
        last.update(single=single, stored=stored, rows=rows)
        return bool(single) and stored == single

    try:
        wait_for(same, 45, interval=1.0, what="the shards' series in VictoriaMetrics")
    except TimeoutError:
        pytest.fail(
            f"only in VictoriaMetrics: {sorted(last['stored'] - last['single'])[:5]}; "
            f"only in the single exporter: {sorted(last['single'] - last['stored'])[:5]}"
        )
    # no instrument twice: every identity comes from exactly one shard
    assert all(r["value"][1] == "1" for r in last["rows"])
    per_shard = _vm_query(vm, f'count by (instance) (fr_funding_interval_seconds{{job="{DEFAULT.exporter_job}"}})')
    assert len(per_shard) == SHARDS  # each shard contributes instruments
    shards = _vm_query(vm, "fr_shard_info")
    assert sorted((r["metric"]["index"], r["metric"]["count"]) for r in shards) == [
        (str(k), str(SHARDS)) for k in range(SHARDS)
    ]
    bases = _vm_query(vm, "count by (base) (count by (base, instance) (fr_funding_interval_seconds))")
    assert bases and all(r["value"][1] == "1" for r in bases)  # a base never spans two shards


def test_vmalert_loads_the_rules_and_fires_on_a_funding_spike(scaleout: dict[str, Any]) -> None:
    vma = scaleout["vmalert"]
    groups = http_json(vma + "/api/v1/rules")["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    shipped = {
        r.get("alert") or r.get("record")
        for p in scaleout["rules"]
        for g in yaml.safe_load(Path(p).read_text())["groups"]
        for r in g["rules"]
    }
    assert shipped and shipped <= loaded, shipped - loaded
    errors = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r.get("lastError")]
    assert not errors, errors

    http_json(scaleout["sim"]["binance"]["rest"] + "/_sim/scenario", {"name": "funding_spike", "seconds": 600})

    def firing() -> list[dict[str, Any]]:
        alerts = http_json(vma + "/api/v1/alerts")["data"]["alerts"] or []  # null when none
        return [
            a for a in alerts
            if a["name"] == "FundingRateWarning" and a["state"] == "firing" and a["labels"].get("exchange") == "binance"
        ]  # fmt: skip

    alerts = wait_for(firing, 60, interval=1.0, what="FundingRateWarning firing in vmalert")
    labels = alerts[0]["labels"]
    assert labels["severity"] == "warning" and labels["instrument"].endswith("USDT")

    def in_alertmanager() -> list[dict[str, Any]]:
        return [
            a
            for a in am_alerts(scaleout["am"])
            if a["labels"].get("alertname") == "FundingRateWarning" and a["labels"].get("exchange") == "binance"
        ]

    in_am = wait_for(in_alertmanager, 30, what="FundingRateWarning in Alertmanager")
    assert in_am[0]["annotations"]["runbook_url"].endswith("#fundingratewarning")
