"""The AI sidecar process: scheduler, per-model prediction tasks, scoring, and ``evaluate``.

Entry points (called by ``exporter.cli``):
- :func:`run_sidecar` ``(config, stop)``: run until ``stop`` is set (``fr-exporter sidecar``).
- :func:`evaluate` (from :mod:`exporter.sidecar.evaluate`): ``fr-exporter evaluate``;
  :func:`add_evaluate_arguments` adds its flags to a parser.

The poll loop reads the exporter's /api/state every ``event_poll_seconds``: it records liquidation
flow and prices, scores predictions whose horizon has passed, refits the recalibrations, and reacts
to unseen threshold events. The schedule loop, on its own timer, gives every ``interval_seconds``
each model one task per base asset and horizon; a task still running for a (model, base, horizon)
makes the next trigger skip it, so a slow or failing model never delays the loops, the other models
or the metrics endpoint. Time comes from the injected Clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config, ConfigError, ModelConfig, load_config, parse_listen_address, read_secret
from exporter.redact import redact
from exporter.sidecar import baseline
from exporter.sidecar.calibration import IsotonicCalibrator
from exporter.sidecar.evaluate import evaluate
from exporter.sidecar.features import BaseSnapshot, events, snapshots
from exporter.sidecar.llm import ChatClient, ModelError
from exporter.sidecar.metrics import WINDOWS, AiMetrics, horizon_label, make_registry
from exporter.sidecar.prompt import build_messages
from exporter.sidecar.schema import AnswerError, ParseNotes, RiskAnswer, parse_answer
from exporter.sidecar.scoring import calibration_table, scores
from exporter.sidecar.serve import exporter_client, start_server
from exporter.sidecar.slack import SlackNotifier
from exporter.sidecar.store import ScoredPrediction, Store
from exporter.web import WebSecurity

log = logging.getLogger(__name__)

BASELINE = "baseline"
EVENT_KINDS = ("funding", "liquidation")


@dataclass(slots=True)
class _Runner:
    name: str
    client: ChatClient | None  # None: the local baseline
    horizons: tuple[float, ...]
    cfg: ModelConfig | None = None
    tasks: dict[tuple[str, float], asyncio.Task[None]] = field(default_factory=dict)  # (base, horizon)
    limit: asyncio.Semaphore | None = None  # bounds calls in flight (many bases, one API quota)


class Sidecar:
    def __init__(
        self,
        config: Config,
        clock: Clock = SYSTEM_CLOCK,
        model_sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """``model_sleep``: how a model's retries wait (default the clock's; a replay's virtual clock
        passes wall time, since a real API's rate limits run on it)."""
        self.config = config
        self.clock = clock  # reads, predictions, scoring and the schedule (tests: VirtualClock)
        sc = config.sidecar
        self.sc = sc
        self.metrics = AiMetrics()
        self.metrics.skill_min_scored = sc.skill_min_scored
        self.registry = make_registry(self.metrics)
        self.store = Store(sc.db_path, sc.observation_max_gap_seconds)
        self.http = exporter_client(sc)
        self.runners: list[_Runner] = []
        if sc.baseline or not sc.models:
            self.runners.append(_Runner(BASELINE, None, tuple(sc.horizons_for(None))))
        for m in sc.models:
            key = read_secret(m.api_key_env, m.api_key_file)
            client = ChatClient(m, key, self._attempt_hook(m.name), clock=clock, sleep=model_sleep)
            self.runners.append(
                _Runner(m.name, client, tuple(sc.horizons_for(m)), m, limit=asyncio.Semaphore(m.max_concurrency))
            )
        for r in self.runners:
            self.metrics.register_model(r.name)
        self.slack = SlackNotifier(sc.slack, on_result=self._slack_result)
        self.snaps: dict[str, BaseSnapshot] = {}
        self.last_seq: int | None = None
        self.last_read_ok = False
        self.first_read = asyncio.Event()
        self._last_prune = 0.0
        self.calibrators: dict[tuple[str, str, float], IsotonicCalibrator] = {}
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
        now = self.clock.time()
        self.snaps = snapshots(state, now)
        self.store.record_state(self.snaps, now)
        if self.store.score_due(now, self.sc.event_threshold_usd):
            self.refresh_scores()
        if now - self._last_prune > 3600:
            longest = max((h for r in self.runners for h in r.horizons), default=self.sc.horizon_hours)
            keep = max(10 * self.sc.vol_half_life_seconds, 2 * longest * 3600, 86400.0)
            self.store.prune(now - keep)
            self._last_prune = now
        self.first_read.set()
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
        """Start one task per (model, base, horizon) unless one is still running. -> tasks started."""
        started = 0
        for runner in self.runners:
            if (
                runner.cfg is not None
                and runner.client is not None
                and (runner.client.blocked_for() > runner.cfg.max_backoff_seconds)
            ):
                # a long Retry-After holds for the whole model: no task until it has passed (a short one
                # is waited out inside the client, before any request)
                log.debug("sidecar: %s rate-limited for %.0fs, skipping", runner.name, runner.client.blocked_for())
                continue
            for base in bases:
                snap = self.snaps.get(base)
                if snap is None or not snap.fresh_rows:
                    continue  # nothing current to reason about: keep the last prediction
                for horizon in runner.horizons:
                    task = runner.tasks.get((base, horizon))
                    if task is not None and not task.done():
                        log.debug("sidecar: %s/%s/%gh still running, skipping %s", runner.name, base, horizon, why)
                        continue
                    runner.tasks[(base, horizon)] = asyncio.create_task(
                        self._predict(runner, snap, horizon), name=f"{runner.name}/{base}/{horizon:g}h"
                    )
                    started += 1
        return started

    def vol(self, base: str, now: float) -> tuple[float | None, int]:
        window = 10 * self.sc.vol_half_life_seconds
        prices = self.store.prices(base, now - window)
        return baseline.realised_vol(prices, now, self.sc.vol_half_life_seconds, self.sc.observation_max_gap_seconds)

    async def _predict(self, runner: _Runner, snap: BaseSnapshot, horizon: float) -> None:
        features: baseline.Features | None = None
        answer: RiskAnswer | None
        try:
            if runner.client is None:
                answer, features = self._baseline(snap, horizon)
            else:
                answer = await self._ask(runner, snap, horizon)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sidecar: %s/%s failed unexpectedly", runner.name, snap.base)
            self.metrics.failure(runner.name, "internal")
            return
        if answer is not None:
            self.accept(runner.name, snap.base, answer, horizon, features)

    def baseline_features(self, snap: BaseSnapshot) -> baseline.Features:
        now = self.clock.time()
        vol, n = self.vol(snap.base, now)
        return baseline.features_of(
            snap,
            vol_per_sqrt_hour=vol if n >= 10 else None,
            returns=n,
            decayed_flow_usd=self.store.decayed_flow(snap.base, now, self.sc.flow_half_life_seconds),
        )

    def _baseline(self, snap: BaseSnapshot, horizon: float) -> tuple[RiskAnswer, baseline.Features]:
        started = time.monotonic()
        features = self.baseline_features(snap)
        answer = baseline.predict(
            snap,
            features,
            baseline.Params.from_config(self.sc),
            horizon_hours=horizon,
            threshold_usd=self.sc.event_threshold_usd,
        )
        self.metrics.attempt(BASELINE, time.monotonic() - started, None)
        return answer, features

    async def _ask(self, runner: _Runner, snap: BaseSnapshot, horizon: float) -> RiskAnswer | None:
        assert runner.client is not None and runner.cfg is not None
        if runner.client.blocked_for() > runner.cfg.max_backoff_seconds:
            log.debug("sidecar: %s rate-limited until %.0f, skipping", runner.name, runner.client.blocked_until)
            return None
        vol, n = self.vol(snap.base, self.clock.time())
        messages = build_messages(snap, horizon, self.sc.event_threshold_usd, vol if n >= 10 else None)
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
        notes = ParseNotes()
        try:
            answer = parse_answer(completion.text, notes)
        except AnswerError as exc:
            # the reply itself is untrusted: log the reason, never the text
            log.warning("sidecar: model %s for %s rejected: %s", runner.name, snap.base, exc.reason)
            self.metrics.failure(runner.name, exc.reason)
            return None
        for name in notes.truncated:
            self.metrics.truncated(runner.name, name)
        return answer

    def calibrated(self, model: str, base: str, horizon: float, probability: float) -> float | None:
        cal = self.calibrators.get((model, base, horizon))
        return None if cal is None else round(cal(probability), 6)

    def accept(
        self,
        model: str,
        base: str,
        answer: RiskAnswer,
        horizon: float | None = None,
        features: baseline.Features | None = None,
    ) -> None:
        """A validated answer: persist, publish, maybe tell Slack."""
        h = self.sc.horizons_for(None)[0] if horizon is None else horizon
        now = self.clock.time()
        # A model may echo a key or token it saw: every configured secret is redacted before the text
        # is stored or posted (the same redaction as the log lines).
        answer = answer.model_copy(
            update={
                "reasoning": redact(answer.reasoning),
                "key_factors": [redact(k) for k in answer.key_factors],
                "prediction": None if answer.prediction is None else redact(answer.prediction),
            }
        )
        cal = self.calibrated(model, base, h, answer.liquidation_probability)
        self.store.add_prediction(
            model, base, now, h, answer, cal, None if features is None else json.dumps(features.to_dict())
        )
        self.metrics.publish(model, base, h, answer, now, cal)
        self.slack.notify(model, base, h, answer)

    def refresh_scores(self) -> None:
        """Refit the calibrations and recompute every skill series from the store (after new outcomes)."""
        now = self.clock.time()
        sc = self.sc
        for model, base, horizon in self.store.groups():
            history = self.store.scored(model, base, horizon, limit=sc.calibration_max_history)
            label = horizon_label(horizon)
            if len(history) >= sc.calibration_min_scored:
                self.calibrators[(model, base, horizon)] = IsotonicCalibrator.fit(
                    [s.probability for s in history], [s.outcome for s in history]
                )
                self.metrics.calibrated_on[(model, base, label)] = len(history)
            else:
                self.metrics.calibrated_on[(model, base, label)] = 0
        for r in self.runners:
            for h in r.horizons:
                self.metrics.scored_total.setdefault((r.name, horizon_label(h)), 0)
        by_group: dict[tuple[str, float], list[ScoredPrediction]] = {}
        for s in self.store.scored():
            by_group.setdefault((s.model, s.horizon_hours), []).append(s)
        for (model, horizon), rows in by_group.items():
            label = horizon_label(horizon)
            self.metrics.scored_total[(model, label)] = len(rows)
            for window in WINDOWS:
                chosen = rows if window == "all" else [r for r in rows if r.made_at >= now - sc.skill_window_seconds]
                raw = scores([r.probability for r in chosen], [r.outcome for r in chosen], sc.alert_probability)
                self.metrics.scores[(model, label, window, "raw")] = raw
                cal_rows = [r for r in chosen if r.calibrated is not None]
                cal = scores(
                    [r.calibrated or 0.0 for r in cal_rows], [r.outcome for r in cal_rows], sc.alert_probability
                )
                self.metrics.scores[(model, label, window, "calibrated")] = cal
            self.metrics.reliability[(model, label, "raw")] = calibration_table(
                [r.probability for r in rows], [r.outcome for r in rows]
            )
            cal_rows = [r for r in rows if r.calibrated is not None]
            if cal_rows:
                self.metrics.reliability[(model, label, "calibrated")] = calibration_table(
                    [r.calibrated or 0.0 for r in cal_rows], [r.outcome for r in cal_rows]
                )

    async def wait_idle(self) -> None:
        """Wait for every running prediction task (tests)."""
        tasks = [t for r in self.runners for t in r.tasks.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the loops ------------------------------------------------------------------------------

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        """Read /api/state every event_poll_seconds; react to threshold events at once."""
        while not stop.is_set():
            tick = self.clock.monotonic()
            event_bases = await self.read_state()
            if self.last_read_ok and event_bases:
                log.info("sidecar: threshold event for %s", ", ".join(event_bases))
                self.trigger(event_bases, "event")
            await self.clock.sleep(max(0.0, tick + self.sc.event_poll_seconds - self.clock.monotonic()))

    async def _schedule_loop(self, stop: asyncio.Event) -> None:
        """Every interval_seconds every model for every base, on its own clock (not the poll's tick)."""
        await self.first_read.wait()
        while not stop.is_set():
            tick = self.clock.monotonic()
            if self.snaps:
                self.trigger(self.bases(), "schedule")
            await self.clock.sleep(max(0.0, tick + self.sc.interval_seconds - self.clock.monotonic()))

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
            ", ".join(f"{r.name} ({', '.join(horizon_label(h) for h in r.horizons)})" for r in self.runners),
        )
        loops = [
            asyncio.create_task(self._poll_loop(stop), name="sidecar-poll"),
            asyncio.create_task(self._schedule_loop(stop), name="sidecar-schedule"),
        ]
        waiter = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*loops, waiter], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not waiter and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            waiter.cancel()
            for t in loops:
                t.cancel()
            for t in loops:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
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
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--plot", default=None, help="write a PNG: reliability diagram and skill over time")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal and there are many predictions)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``fr-exporter sidecar`` (none beyond --config yet; kept for the CLI's symmetry)."""
    return None


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
        return evaluate(config, args)

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
