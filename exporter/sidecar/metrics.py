"""The sidecar's own /metrics: the "AI risk" section of the metric contract.

Values live in :class:`AiMetrics` (written by the scheduler, on the event loop) and are turned into
metric families at scrape time by one collector on a private CollectorRegistry, so there are no
``_created`` series and no GC noise (process_* yes: memory and CPU of the sidecar). Served by
:mod:`exporter.sidecar.serve`. Only validated answers are ever recorded here.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import Metric

from exporter.metrics import catalog as m
from exporter.sidecar.schema import RISK_LEVELS, RiskAnswer
from exporter.sidecar.scoring import CalibrationBin, Scores

FAILURE_REASONS: tuple[str, ...] = (
    "timeout",
    "http_error",
    "rate_limited",
    "connection_error",
    "bad_response",
    "invalid_json",
    "multiple_objects",
    "schema",
    "internal",
)
DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


def horizon_label(hours: float) -> str:
    """``8h``, ``4h``; under an hour in whole minutes: ``15m``."""
    minutes = hours * 60.0
    if hours < 1.0 and abs(minutes - round(minutes)) < 1e-3:  # 0.0333333 h is "2m"
        return f"{round(minutes)}m"
    return f"{hours:g}h"


WINDOWS = ("rolling", "all")
CALIBRATIONS = ("raw", "calibrated")


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value


@dataclass(frozen=True, slots=True)
class Published:
    answer: RiskAnswer
    horizon: str
    at: float
    calibrated: float | None = None


# (model, horizon label, window, calibration)
ScoreKey = tuple[str, str, str, str]


class AiMetrics:
    """State behind the AI series. Keys: model, (model, base, horizon), (model, reason), (model, kind)."""

    def __init__(self) -> None:
        self.models: set[str] = set()
        self.latest: dict[tuple[str, str, float], Published] = {}
        self.requests: dict[str, int] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.truncations: dict[tuple[str, str], int] = {}
        self.durations: dict[str, _Histogram] = {}
        self.tokens: dict[tuple[str, str], int] = {}
        self.cost: dict[str, float] = {}
        self.scores: dict[ScoreKey, Scores] = {}
        self.scored_total: dict[tuple[str, str], int] = {}  # (model, horizon) -> scored since start
        self.reliability: dict[tuple[str, str, str], list[CalibrationBin]] = {}  # (model, horizon, calibration)
        self.calibrated_on: dict[tuple[str, str, str], int] = {}  # (model, base, horizon) -> fitted on n
        self.skill_min_scored = 1
        self.state_reads: dict[str, int] = {"ok": 0, "error": 0}
        self.slack: dict[str, int] = {}

    def register_model(self, model: str) -> None:
        # Series exist from the start at zero, so rate() and absent() behave before the first call.
        self.models.add(model)
        self.requests.setdefault(model, 0)
        self.durations.setdefault(model, _Histogram())
        self.cost.setdefault(model, 0.0)
        for kind in ("prompt", "completion"):
            self.tokens.setdefault((model, kind), 0)
        for reason in FAILURE_REASONS:
            self.failures.setdefault((model, reason), 0)
        for name in TRUNCATED_FIELDS:
            self.truncations.setdefault((model, name), 0)

    def attempt(self, model: str, duration: float, reason: str | None) -> None:
        self.requests[model] = self.requests.get(model, 0) + 1
        self.durations.setdefault(model, _Histogram()).observe(duration)
        if reason is not None:
            self.failure(model, reason)

    def failure(self, model: str, reason: str) -> None:
        self.failures[(model, reason)] = self.failures.get((model, reason), 0) + 1

    def truncated(self, model: str, field_name: str) -> None:
        self.truncations[(model, field_name)] = self.truncations.get((model, field_name), 0) + 1

    def usage(self, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        self.tokens[(model, "prompt")] = self.tokens.get((model, "prompt"), 0) + prompt_tokens
        self.tokens[(model, "completion")] = self.tokens.get((model, "completion"), 0) + completion_tokens
        self.cost[model] = self.cost.get(model, 0.0) + cost_usd

    def publish(
        self,
        model: str,
        base: str,
        horizon_hours: float,
        answer: RiskAnswer,
        at: float | None = None,
        calibrated: float | None = None,
    ) -> None:
        self.latest[(model, base, horizon_hours)] = Published(
            answer, horizon_label(horizon_hours), time.time() if at is None else at, calibrated
        )


TRUNCATED_FIELDS = ("reasoning", "key_factors", "prediction")


class AiCollector:
    """The AI sidecar's series (its own registry and port), per model, base asset and horizon.

    # HELP fr_ai_risk_probability Probability (0..1) of a large liquidation event for the base asset ...
    # TYPE fr_ai_risk_probability gauge
    fr_ai_risk_probability{base="BTC",calibration="raw",horizon="8h",model="baseline"} 0.07
    fr_ai_risk_probability{base="BTC",calibration="calibrated",horizon="8h",model="baseline"} 0.05
    fr_ai_confidence{base="BTC",horizon="8h",model="baseline"} 0.6
    fr_ai_risk_level{base="BTC",horizon="8h",level="low",model="baseline"} 1.0   (0.0 for the others)
    fr_ai_last_success_timestamp_seconds{base="BTC",model="baseline"} 1.7e+09
    fr_ai_requests_total{model="gpt"} 12.0
    fr_ai_request_failures_total{model="gpt",reason="timeout"} 1.0
    fr_ai_answer_truncations_total{field="reasoning",model="gpt"} 1.0
    fr_ai_request_duration_seconds_bucket{le="1.0",model="gpt"} 9.0   (histogram)
    fr_ai_tokens_total{kind="prompt",model="gpt"} 5400.0, fr_ai_cost_usd_total{model="gpt"} 0.02
    fr_ai_brier_score{calibration="raw",horizon="8h",model="baseline",window="rolling"} 0.08, and with the
    same labels fr_ai_brier_skill_score, fr_ai_log_loss, fr_ai_base_rate_ratio, fr_ai_precision_ratio,
    fr_ai_recall_ratio, fr_ai_f1_ratio, fr_ai_skill_predictions
    fr_ai_scored_predictions_total{horizon="8h",model="baseline"} 40.0
    fr_ai_reliability_predictions{bin="0.1-0.2",calibration="raw",horizon="8h",model="baseline"} 12.0,
    fr_ai_reliability_mean_probability_ratio, fr_ai_reliability_observed_ratio (same labels)
    fr_ai_calibration_fitted_predictions{base="BTC",horizon="8h",model="baseline"} 120.0
    """

    def __init__(self, state: AiMetrics) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        s = self.state
        prob = m.AI_RISK_PROBABILITY.gauge()
        conf = m.AI_CONFIDENCE.gauge()
        level = m.AI_RISK_LEVEL.gauge()
        volume = m.AI_LIQUIDATION_VOLUME.gauge()
        last = m.AI_LAST_SUCCESS.gauge()
        last_at: dict[tuple[str, str], float] = {}
        for (model, base, _h), pub in sorted(s.latest.items()):
            a = pub.answer
            prob.add_metric([base, "raw", pub.horizon, model], a.liquidation_probability)
            if pub.calibrated is not None:
                prob.add_metric([base, "calibrated", pub.horizon, model], pub.calibrated)
            conf.add_metric([base, pub.horizon, model], a.confidence)
            if a.estimated_liquidation_volume_usd is not None:
                volume.add_metric([base, pub.horizon, model], a.estimated_liquidation_volume_usd)
            last_at[(base, model)] = max(pub.at, last_at.get((base, model), 0.0))
            for name in RISK_LEVELS:
                level.add_metric([base, pub.horizon, model, name], 1.0 if a.risk_level.value == name else 0.0)
        for (base, model), at in sorted(last_at.items()):
            last.add_metric([base, model], at)
        yield from (prob, conf, level, volume, last)

        requests = m.AI_REQUESTS.counter()
        for model, n in sorted(s.requests.items()):
            requests.add_metric([model], n)
        failures = m.AI_REQUEST_FAILURES.counter()
        for (model, reason), n in sorted(s.failures.items()):
            failures.add_metric([model, reason], n)
        truncations = m.AI_ANSWER_TRUNCATIONS.counter()
        for (model, name), n in sorted(s.truncations.items()):
            truncations.add_metric([name, model], n)
        duration = m.AI_REQUEST_DURATION.histogram()
        for model, h in sorted(s.durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), h.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            duration.add_metric([model], buckets, h.total)
        tokens = m.AI_TOKENS.counter()
        for (model, kind), n in sorted(s.tokens.items()):
            tokens.add_metric([model, kind], n)
        cost = m.AI_COST.counter()
        for model, usd in sorted(s.cost.items()):
            cost.add_metric([model], usd)
        yield from (requests, failures, truncations, duration, tokens, cost)
        yield from self._skill()

        reads = m.AI_STATE_READS.counter()
        for result, n in sorted(s.state_reads.items()):
            reads.add_metric([result], n)
        slack = m.AI_SLACK_MESSAGES.counter()
        for result, n in sorted(s.slack.items()):
            slack.add_metric([result], n)
        yield from (reads, slack)

    def _skill(self) -> Iterable[Metric]:
        s = self.state
        fams = {
            "brier": m.AI_BRIER.gauge(),
            "brier_skill": m.AI_BRIER_SKILL.gauge(),
            "log_loss": m.AI_LOG_LOSS.gauge(),
            "base_rate": m.AI_BASE_RATE.gauge(),
            "precision": m.AI_PRECISION.gauge(),
            "recall": m.AI_RECALL.gauge(),
            "f1": m.AI_F1.gauge(),
        }
        count = m.AI_SKILL_PREDICTIONS.gauge()
        for (model, horizon, window, calibration), sc in sorted(s.scores.items()):
            key = [calibration, horizon, model, window]
            count.add_metric(key, sc.count)
            if sc.count < s.skill_min_scored:
                continue  # too few to mean anything: absent, so no alert fires on noise
            for attr, fam in fams.items():
                value = getattr(sc, attr)
                if value is not None:
                    fam.add_metric(key, value)
        yield from fams.values()
        yield count
        scored = m.AI_SCORED.counter()
        for (model, horizon), n in sorted(s.scored_total.items()):
            scored.add_metric([horizon, model], n)
        yield scored
        rel_n = m.AI_RELIABILITY_PREDICTIONS.gauge()
        rel_p = m.AI_RELIABILITY_MEAN.gauge()
        rel_o = m.AI_RELIABILITY_OBSERVED.gauge()
        for (model, horizon, calibration), bins in sorted(s.reliability.items()):
            for b in bins:
                key = [f"{b.low:.1f}-{b.high:.1f}", calibration, horizon, model]
                rel_n.add_metric(key, b.count)
                if b.mean_probability is not None and b.observed_rate is not None:
                    rel_p.add_metric(key, b.mean_probability)
                    rel_o.add_metric(key, b.observed_rate)
        yield from (rel_n, rel_p, rel_o)
        fitted = m.AI_CALIBRATION_FITTED.gauge()
        for (model, base, horizon), n in sorted(s.calibrated_on.items()):
            fitted.add_metric([base, horizon, model], n)
        yield fitted


def make_registry(state: AiMetrics, process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AiCollector(state))
    if process:
        ProcessCollector(registry=registry)  # process_* (memory, CPU, fds), as on the exporter
    return registry
