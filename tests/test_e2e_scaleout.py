"""Scale-out on loopback with the real binaries: three exporter shards over the simulator, scraped
by Prometheus in agent mode and written to VictoriaMetrics; vmalert evaluates the shipped rules
there and sends to Alertmanager.

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


def _spawn(args: list[str], log: Path) -> Process:
    return Process([sys.executable, "-m", "exporter.cli", *args], log, cwd=ROOT, env=dict(os.environ))


def _sim_urls(proc: Process) -> dict[str, dict[str, Any]]:
    def parse() -> dict[str, Any] | None:
        if not proc.alive():
            raise RuntimeError(f"simulator exited:\n{proc.log()}")
        for line in proc.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"simulator"' in line:
                return dict(json.loads(line)["simulator"])
        return None

    return dict(wait_for(parse, 30, what="simulator URLs"))


def _exporter_config(tmp: Path, name: str, sim: dict[str, dict[str, Any]], port: int, shard: tuple[int, int]) -> Path:
    exchanges = {
        ex: {
            "ws_url": u["ws"],
            "rest_url": u["rest"],
            "instruments": [],
            "all_perpetuals": True,
            "max_instruments": PER_EXCHANGE,
            "backfill": False,  # the funding alerts need no history; the start stays short
        }
        for ex, u in sim.items()
    }
    cfg = {
        "listen_address": f"127.0.0.1:{port}",
        "log_level": "WARNING",
        "exchanges": exchanges,
        "shard": {"index": shard[0], "count": shard[1]},
        "position_settings": {"db_path": str(tmp / f"{name}.sqlite")},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
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
        for k in range(SHARDS):
            cfg = _exporter_config(tmp, f"shard-{k}", sim, ports[k], (k, SHARDS))
            run.procs.append(_spawn(["--config", str(cfg)], tmp / f"shard-{k}.log"))
        single_cfg = _exporter_config(tmp, "single", sim, ports[SHARDS], (0, 1))
        run.procs.append(_spawn(["--config", str(single_cfg)], tmp / "single.log"))
        for port in ports:
            url = f"http://127.0.0.1:{port}/healthz"

            def up(url: str = url) -> bool:
                return bool(_get(url))

            wait_for(up, 120, what=f"exporter {url}")  # four exporters start at once on a busy machine

        vm_port = free_port()
        vm = f"http://127.0.0.1:{vm_port}"
        run.start(
            [str(victoria), f"-httpListenAddr=127.0.0.1:{vm_port}", f"-storageDataPath={tmp / 'vm-data'}",
             "-retentionPeriod=1d", "-search.latencyOffset=1s", "-search.disableCache"],
            "victoria-metrics.log",
        )  # fmt: skip
        wait_for(lambda: _get(vm + "/health").strip() == "OK", 30, what="VictoriaMetrics healthy")

        agent_cfg = {
            "global": {"scrape_interval": "1s", "external_labels": {"monitor": "fr-exporter"}},
            "scrape_configs": [
                {
                    "job_name": DEFAULT.exporter_job,
                    "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports[:SHARDS]]}],
                }
            ],
            "remote_write": [{"url": vm + "/api/v1/write", "queue_config": {"batch_send_deadline": "1s"}}],
        }
        (tmp / "agent.yml").write_text(yaml.safe_dump(agent_cfg))
        agent_port = free_port()
        run.start(
            [str(prometheus), "--enable-feature=agent", f"--config.file={tmp / 'agent.yml'}",
             f"--storage.agent.path={tmp / 'agent-data'}", f"--web.listen-address=127.0.0.1:{agent_port}"],
            "prometheus-agent.log",
        )  # fmt: skip

        rules = [p for p in generate.write(tmp / "mixin", fast_variant(), with_tests=False) if p.suffix == ".yml"]
        with FakeSlack() as slack, run_alertmanager(tmp, alertmanager_config(tmp, slack.url)) as am:
            vma_port = free_port()
            vma = f"http://127.0.0.1:{vma_port}"
            vmalert_proc = run.start(
                [str(vmalert), *(f"-rule={p}" for p in rules), f"-datasource.url={vm}",
                 f"-remoteWrite.url={vm}", f"-remoteRead.url={vm}", f"-notifier.url={am}",
                 "-evaluationInterval=1s", f"-httpListenAddr=127.0.0.1:{vma_port}",
                 "-external.label=monitor=fr-exporter"],
                "vmalert.log",
            )  # fmt: skip
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
