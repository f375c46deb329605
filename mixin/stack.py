"""Run the shipped Prometheus / Alertmanager configuration locally for tests, on loopback ports.

The shipped files are loaded and only what a local run must change is rewritten: listen
addresses and targets, the Slack webhook URL file, absolute template/rule paths, and (for speed)
intervals and Alertmanager's group timings. The tests' FakeSlack (tests/support/fakes.py) records
what Alertmanager posts.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "prometheus"


_PICK = random.SystemRandom()  # not the seedable global generator: parallel processes must not pick alike
LOWEST_PORT = 20000  # below: well-known ports and this project's defaults (18001-18004, 9466, 9090...)


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return lo, hi


def port_is_free(port: int) -> bool:
    """Whether a loopback server could bind ``port`` now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """A loopback port (the first of ``count`` consecutive ones) free now, for a server started next.

    Picked at random below the kernel's ephemeral range: a port from there (bind to 0) can be handed
    to any outgoing connection on the machine between this pick and the server's bind, which is how a
    pick-then-bind races on a busy machine. Down here only another explicit pick competes.
    """
    lo, _ = _ephemeral_range()
    if lo - LOWEST_PORT > 1000:
        for _ in range(200):
            port = _PICK.randrange(LOWEST_PORT, lo - count)
            if all(port_is_free(port + i) for i in range(count)):
                return port
    while True:  # a machine with no room below its ephemeral range
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if all(port_is_free(port + i) for i in range(1, count)):
            return port


def binary(*names: str) -> str | None:
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    return None


def http_json(url: str, data: Any = None, timeout: float = 5.0) -> Any:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method="GET" if data is None else "POST")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else None


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; raise TimeoutError with ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


class Process:
    """A child process with its output in a log file; terminated on exit."""

    def __init__(self, args: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None):
        self.args, self.log_path = args, log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd, env=env)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def alertmanager_config(
    dst: Path, slack_url: str, *, group_wait: str = "1s", group_interval: str = "2s", repeat_interval: str = "1h"
) -> Path:
    """The shipped alertmanager.yml with the webhook URL files, template path and timings made local.
    The receiver's webhook file ``slack_webhook_url_critical`` posts to ``{slack_url}/slack_webhook_url_critical``."""
    cfg = yaml.safe_load((PROM_DIR / "alertmanager.yml").read_text())
    cfg["templates"] = [str(PROM_DIR / t) for t in cfg.get("templates", [])]
    for receiver in cfg["receivers"]:
        for sc in receiver.get("slack_configs", []):
            # one webhook file per receiver, as shipped; each URL ends in the file's name, so a
            # test can tell which webhook a message went to (FakeSlack records the path)
            name = Path(sc["api_url_file"]).name
            secret = dst / name
            secret.write_text(f"{slack_url}/{name}\n")
            sc["api_url_file"] = str(secret)

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (
            ("group_wait", group_wait),
            ("group_interval", group_interval),
            ("repeat_interval", repeat_interval),
        ):
            if key in route or route is cfg["route"]:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(cfg["route"])
    path = dst / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextlib.contextmanager
def run_alertmanager(workdir: Path, config: Path) -> Iterator[str]:
    exe = binary("prometheus-alertmanager", "alertmanager")
    if exe is None:
        raise FileNotFoundError("alertmanager binary not installed (apt-get install prometheus-alertmanager)")
    port = free_port()
    data = workdir / "am-data"
    data.mkdir(exist_ok=True)
    proc = Process(
        [
            exe,
            f"--config.file={config}",
            f"--storage.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ],
        workdir / "alertmanager.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200,
            20,
            what=f"alertmanager ready; log:\n{proc.log()}",
        )
        yield url
    finally:
        proc.stop()


def prometheus_config(
    dst: Path,
    *,
    rule_files: list[Path],
    exporter: str,
    sidecar: str | None,
    alertmanager: str,
    interval: str = "1s",
) -> Path:
    """The shipped prometheus.yml with targets on loopback, the given rule files and short intervals."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"]["scrape_interval"] = interval
    cfg["global"]["evaluation_interval"] = interval
    cfg["rule_files"] = [str(p) for p in rule_files]
    cfg["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    targets = {"fr-exporter": exporter, "fr-ai-sidecar": sidecar}
    jobs = []
    for job in cfg["scrape_configs"]:
        if job["job_name"] in targets:
            if targets[job["job_name"]] is None:
                continue
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            jobs.append(job)
    cfg["scrape_configs"] = jobs
    path = dst / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextlib.contextmanager
def run_prometheus(workdir: Path, config: Path) -> Iterator[str]:
    exe = binary("prometheus")
    if exe is None:
        raise FileNotFoundError("prometheus binary not installed (apt-get install prometheus)")
    port = free_port()
    data = workdir / "prom-data"
    data.mkdir(exist_ok=True)
    proc = Process(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
            "--log.level=info",
        ],
        workdir / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200,
            30,
            what=f"prometheus ready; log:\n{proc.log()}",
        )
        yield url
    finally:
        proc.stop()


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = http_json(url)
    if body.get("status") != "success":
        raise ValueError(f"query failed: {expr}: {body}")
    return list(body["data"]["result"])


def am_alerts(am: str) -> list[dict[str, Any]]:
    return list(http_json(am + "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true"))


def post_alerts(am: str, alerts: list[dict[str, Any]]) -> None:
    http_json(am + "/api/v2/alerts", alerts)
