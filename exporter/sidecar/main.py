"""The AI sidecar process: scheduler, per-model prediction tasks, scoring, and ``evaluate``.

Entry points (called by ``exporter.cli``):
- :func:`run_sidecar` ``(config, stop)``: run until ``stop`` is set (``fr-exporter sidecar``).
- :func:`evaluate` ``(config, db_path=None, progress=None)``: print scores, return an exit code
  (``fr-exporter evaluate``); :func:`add_evaluate_arguments` adds its flags to a parser.

One loop reads the exporter's /api/state every ``event_poll_seconds``: it records liquidation flow
and prices, scores predictions whose horizon has passed, and reacts to unseen threshold events.
Every ``interval_seconds`` (and on such events) each model gets one task per base asset; a task
still running for a (model, base) makes the next trigger skip it, so a slow or failing model
never delays the loop, the other models or the metrics endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from tqdm import tqdm

from exporter.config import Config, ConfigError, ModelConfig, load_config, parse_listen_address, read_secret
from exporter.redact import redact
from exporter.sidecar import baseline
from exporter.sidecar.features import BaseSnapshot, events, snapshots
from exporter.sidecar.llm import ChatClient, ModelError
from exporter.sidecar.metrics import AiMetrics, ModelScoreValues, make_registry
from exporter.sidecar.prompt import build_messages
from exporter.sidecar.schema import AnswerError, RiskAnswer, parse_answer
from exporter.sidecar.scoring import calibration_table, scores
from exporter.sidecar.serve import exporter_client, start_server
from exporter.sidecar.slack import SlackNotifier
from exporter.sidecar.store import Store
from exporter.web import WebSecurity

log = logging.getLogger(__name__)

BASELINE = "baseline"
EVENT_KINDS = ("funding", "liquidation")


@dataclass(slots=True)
class _Runner:
    name: str
    client: ChatClient | None  # None: the local baseline
    cfg: ModelConfig | None = None
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    limit: asyncio.Semaphore | None = None  # bounds calls in flight (many bases, one API quota)


class Sidecar:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock  # wall time of reads and predictions (tests replay hours in milliseconds)
        sc = config.sidecar
        self.sc = sc
        self.metrics = AiMetrics()
        self.registry = make_registry(self.metrics)
        self.store = Store(sc.db_path, sc.observation_max_gap_seconds)
        self.http = exporter_client(sc)
        self.runners: list[_Runner] = []
        if sc.baseline or not sc.models:
            self.runners.append(_Runner(BASELINE, None))
        for m in sc.models:
            key = read_secret(m.api_key_env, m.api_key_file)
            client = ChatClient(m, key, self._attempt_hook(m.name))
            self.runners.append(_Runner(m.name, client, m, limit=asyncio.Semaphore(m.max_concurrency)))
        for r in self.runners:
            self.metrics.register_model(r.name)
        self.slack = SlackNotifier(sc.slack, on_result=self._slack_result)
        self.snaps: dict[str, BaseSnapshot] = {}
        self.last_seq: int | None = None
        self.last_read_ok = False
        self._last_prune = 0.0
        self.refresh_scores()

    def _attempt_hook(self, name: str) -> Any:
        def hook(duration: float, reason: str | None) -> None:
            self.metrics.attempt(name, duration, reason)

        return hook

    def _slack_result(self, result: str) -> None:
        self.metrics.slack[result] = self.metrics.slack.get(result, 0) + 1

    def bases(self) -> list[str]:
        if self.sc.bases is not None:
            wanted = [b.upper() for b in self.sc.bases]
            return [b for b in wanted if b in self.snaps]
        return sorted(self.snaps)

    # -- reading the exporter -------------------------------------------------------------------

    async def read_state(self) -> list[str]:
        """Read /api/state, record observations, score; -> bases with unseen threshold events."""
        try:
            resp = await self.http.get("/api/state")
            resp.raise_for_status()
            state = resp.json()
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
        except (httpx.HTTPError, ValueError) as exc:
            self.metrics.state_reads["error"] += 1
            if self.last_read_ok:
                log.warning("sidecar: cannot read %s/api/state: %s", self.sc.exporter_url, type(exc).__name__)
            self.last_read_ok = False
            return []
        self.metrics.state_reads["ok"] += 1
        self.last_read_ok = True
        now = self.clock()
        self.snaps = snapshots(state, now)
        self.store.record_state(self.snaps, now)
        if self.store.score_due(now, self.sc.event_threshold_usd):
            self.refresh_scores()
        if now - self._last_prune > 3600:
            keep = max(10 * self.sc.vol_half_life_seconds, 2 * self.sc.horizon_hours * 3600, 86400.0)
            self.store.prune(now - keep)
            self._last_prune = now
        return self._new_event_bases(state)

    def _new_event_bases(self, state: dict[str, Any]) -> list[str]:
        evs = [e for e in events(state) if e.kind.startswith(EVENT_KINDS)]
        all_seqs = [e.seq for e in events(state)]
        top = max(all_seqs, default=0)
        if self.last_seq is None:
            self.last_seq = top  # history before we started: the first scheduled run covers it
            return []
        if top < self.last_seq:
            self.last_seq = 0  # the exporter restarted and numbers events from 1 again
        fresh = sorted({e.base for e in evs if e.seq > self.last_seq})
        self.last_seq = max(self.last_seq, top)
        wanted = set(self.bases())
        return [b for b in fresh if b in wanted]

    # -- predictions ----------------------------------------------------------------------------

    def trigger(self, bases: list[str], why: str) -> int:
        """Start one task per (model, base) unless one is still running. -> tasks started."""
        started = 0
        for runner in self.runners:
            for base in bases:
                snap = self.snaps.get(base)
                if snap is None or not snap.fresh_rows:
                    continue  # nothing current to reason about: keep the last prediction
                task = runner.tasks.get(base)
                if task is not None and not task.done():
                    log.debug("sidecar: %s/%s still running, skipping %s trigger", runner.name, base, why)
                    continue
                runner.tasks[base] = asyncio.create_task(self._predict(runner, snap), name=f"{runner.name}/{base}")
                started += 1
        return started

    def vol(self, base: str, now: float) -> tuple[float | None, int]:
        window = 10 * self.sc.vol_half_life_seconds
        prices = self.store.prices(base, now - window)
        return baseline.realised_vol(prices, now, self.sc.vol_half_life_seconds, self.sc.observation_max_gap_seconds)

    async def _predict(self, runner: _Runner, snap: BaseSnapshot) -> None:
        try:
            answer = await (self._baseline(snap) if runner.client is None else self._ask(runner, snap))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sidecar: %s/%s failed unexpectedly", runner.name, snap.base)
            self.metrics.failure(runner.name, "internal")
            return
        if answer is not None:
            self.accept(runner.name, snap.base, answer)

    async def _baseline(self, snap: BaseSnapshot) -> RiskAnswer:
        started = time.monotonic()
        now = self.clock()
        vol, n = self.vol(snap.base, now)
        inputs = baseline.BaselineInputs(
            vol_per_sqrt_hour=vol if n >= 10 else None,
            returns=n,
            decayed_flow_usd=self.store.decayed_flow(snap.base, now, self.sc.flow_half_life_seconds),
        )
        answer = baseline.predict(
            snap,
            inputs,
            horizon_hours=self.sc.horizon_hours,
            threshold_usd=self.sc.event_threshold_usd,
            calm_distance=self.sc.cascade_distance_ratio,
            default_vol=self.sc.default_vol_per_sqrt_hour,
        )
        self.metrics.attempt(BASELINE, time.monotonic() - started, None)
        return answer

    async def _ask(self, runner: _Runner, snap: BaseSnapshot) -> RiskAnswer | None:
        assert runner.client is not None and runner.cfg is not None
        if runner.client.blocked_until > time.time():
            log.debug("sidecar: %s rate-limited until %.0f, skipping", runner.name, runner.client.blocked_until)
            return None
        vol, n = self.vol(snap.base, self.clock())
        messages = build_messages(snap, self.sc.horizon_hours, self.sc.event_threshold_usd, vol if n >= 10 else None)
        try:
            assert runner.limit is not None
            async with runner.limit:
                completion = await runner.client.complete(messages)
        except ModelError as exc:
            log.warning("sidecar: model %s for %s: %s", runner.name, snap.base, exc)
            return None
        cfg = runner.cfg
        cost = (
            completion.prompt_tokens * cfg.price_prompt_per_million_usd
            + completion.completion_tokens * cfg.price_completion_per_million_usd
        ) / 1e6
        self.metrics.usage(runner.name, completion.prompt_tokens, completion.completion_tokens, cost)
        try:
            return parse_answer(completion.text)
        except AnswerError as exc:
            # the reply itself is untrusted: log the reason, never the text
            log.warning("sidecar: model %s for %s rejected: %s", runner.name, snap.base, exc.reason)
            self.metrics.failure(runner.name, exc.reason)
            return None

    def accept(self, model: str, base: str, answer: RiskAnswer) -> None:
        """A validated answer: persist, publish, maybe tell Slack."""
        now = self.clock()
        # A model may echo a key or token it saw: every configured secret is redacted before the text
        # is stored or posted (the same redaction as the log lines).
        answer = answer.model_copy(
            update={"reasoning": redact(answer.reasoning), "key_factors": [redact(k) for k in answer.key_factors]}
        )
        self.store.add_prediction(model, base, now, self.sc.horizon_hours, answer)
        self.metrics.publish(model, base, self.sc.horizon_hours, answer, now)
        self.slack.notify(model, base, self.sc.horizon_hours, answer)

    def refresh_scores(self) -> None:
        names = {r.name for r in self.runners} | set(self.store.models())
        for name in names:
            scored = self.store.scored(name)
            sc = scores([s.probability for s in scored], [s.outcome for s in scored])
            self.metrics.scores[name] = ModelScoreValues(sc.count, sc.brier, sc.precision, sc.recall)

    async def wait_idle(self) -> None:
        """Wait for every running prediction task (tests)."""
        tasks = [t for r in self.runners for t in r.tasks.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        host, port = parse_listen_address(self.sc.listen_address)
        try:
            security = WebSecurity.from_file(self.sc.web_config_file)
            server = await start_server(self.registry, host, port, security)
        except (OSError, ConfigError):
            await self.close()
            raise
        self.slack.start()
        log.info(
            "sidecar: metrics on %s, exporter %s, models %s",
            self.sc.listen_address,
            self.sc.exporter_url,
            ", ".join(r.name for r in self.runners),
        )
        next_run = 0.0  # the first successful read triggers a full run
        try:
            while not stop.is_set():
                tick = time.monotonic()
                event_bases = await self.read_state()
                if self.last_read_ok:
                    if tick >= next_run:
                        self.trigger(self.bases(), "schedule")
                        next_run = tick + self.sc.interval_seconds
                    elif event_bases:
                        log.info("sidecar: threshold event for %s", ", ".join(event_bases))
                        self.trigger(event_bases, "event")
                delay = max(0.0, tick + self.sc.event_poll_seconds - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self.close(server)

    async def close(self, server: Any = None) -> None:
        for r in self.runners:
            for t in r.tasks.values():
                t.cancel()
        for r in self.runners:
            for t in r.tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        await self.slack.stop()
        for r in self.runners:
            if r.client is not None:
                await r.client.aclose()
        await self.http.aclose()
        if server is not None:
            await server.cleanup()
        self.store.close()


async def run_sidecar(config: Config, stop: asyncio.Event) -> int:
    """Run the sidecar until ``stop`` is set. -> exit code (2: unusable secret file, 1: cannot listen)."""
    try:
        sidecar = Sidecar(config)
    except ConfigError as exc:
        log.error("sidecar: %s", exc)
        return 2
    try:
        await sidecar.run(stop)
    except ConfigError as exc:
        log.error("sidecar: %s", exc)
        return 2
    except OSError as exc:
        log.error("sidecar: cannot serve on %s: %s", config.sidecar.listen_address, exc.strerror or exc)
        return 1
    return 0


# -- evaluate -------------------------------------------------------------------------------------


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None, help="predictions database (default: sidecar.db_path)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal and there are many predictions)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``fr-exporter sidecar`` (none beyond --config yet; kept for the CLI's symmetry)."""
    return None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


PROGRESS_MIN_ROWS = 10_000


def evaluate(
    config: Config,
    options: argparse.Namespace | Path | str | None = None,
    progress: bool | None = None,
    out: TextIO | None = None,
) -> int:
    """Score what can be scored and print per model: count, base rate, Brier, log loss, P/R@0.5, calibration.

    ``options`` is the CLI's parsed arguments (``db``, ``progress``) or a database path. The progress
    bar appears for long runs (>= PROGRESS_MIN_ROWS predictions) unless ``progress`` is False; with
    ``progress`` None only when stderr is a terminal.
    """
    out = out or sys.stdout
    db_path: Path | str | None
    if isinstance(options, argparse.Namespace):
        db_path = getattr(options, "db", None)
        progress = getattr(options, "progress", progress)
    else:
        db_path = options
    path = Path(db_path) if db_path is not None else config.sidecar.db_path
    if not path.exists():
        print(f"no predictions database at {path}", file=sys.stderr)
        return 2
    store = Store(path, config.sidecar.observation_max_gap_seconds)
    try:
        store.score_due(time.time(), config.sidecar.event_threshold_usd)
        models = store.models()
        if not models:
            print(f"no predictions in {path}", file=out)
            return 0
        total = store.prediction_count()
        show = progress is not False and total >= PROGRESS_MIN_ROWS and (progress is True or sys.stderr.isatty())
        with tqdm(total=total, disable=not show, desc="scoring", unit="pred", file=sys.stderr) as bar:
            for model in models:
                probs: list[float] = []
                outcomes: list[bool] = []
                pending = 0
                for _m, _b, _t, p, o in store.predictions(model):
                    bar.update(1)
                    if o is None:
                        pending += 1
                        continue
                    probs.append(p)
                    outcomes.append(bool(o))
                _print_model(out, model, probs, outcomes, pending, config.sidecar.event_threshold_usd)
        return 0
    finally:
        store.close()


def _print_model(out: TextIO, model: str, probs: list[float], outcomes: list[bool], pending: int, thr: float) -> None:
    sc = scores(probs, outcomes)
    print(f"model {model}: {sc.count} scored, {pending} pending (event: >= ${thr:,.0f} liquidated)", file=out)
    print(
        f"  base rate {_fmt(sc.base_rate)}  brier {_fmt(sc.brier)}  log loss {_fmt(sc.log_loss)}  "
        f"precision@0.5 {_fmt(sc.precision)}  recall@0.5 {_fmt(sc.recall)}",
        file=out,
    )
    if not sc.count:
        return
    print("  calibration:  bin        n   mean p  observed", file=out)
    for b in calibration_table(probs, outcomes):
        print(
            f"             {b.low:.1f}-{b.high:.1f} {b.count:6d}  {_fmt(b.mean_probability, 3):>7}  "
            f"{_fmt(b.observed_rate, 3):>8}",
            file=out,
        )


# -- standalone entry point (python -m exporter.sidecar.main) -------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.sidecar.main")
    parser.add_argument("command", nargs="?", choices=["sidecar", "evaluate"], default="sidecar")
    parser.add_argument("--config", type=Path, default=None)
    add_evaluate_arguments(parser)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "evaluate":
        return evaluate(config, args.db, args.progress)

    async def _run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await run_sidecar(config, stop)

    return asyncio.run(_run())


if __name__ == "__main__":
    sys.exit(main())
