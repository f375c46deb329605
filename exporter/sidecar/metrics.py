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

FAILURE_REASONS: tuple[str, ...] = (
    "timeout",
    "http_error",
    "rate_limited",
    "connection_error",
    "bad_response",
    "invalid_json",
    "schema",
    "internal",
)
DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


def horizon_label(hours: float) -> str:
    return f"{hours:g}h"


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


@dataclass(frozen=True, slots=True)
class ModelScoreValues:
    count: int
    brier: float | None
    precision: float | None
    recall: float | None


class AiMetrics:
    """State behind the AI series. Keys: model, (model, base), (model, reason), (model, kind)."""

    def __init__(self) -> None:
        self.models: set[str] = set()
        self.latest: dict[tuple[str, str], Published] = {}
        self.requests: dict[str, int] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.durations: dict[str, _Histogram] = {}
        self.tokens: dict[tuple[str, str], int] = {}
        self.cost: dict[str, float] = {}
        self.scores: dict[str, ModelScoreValues] = {}
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

    def attempt(self, model: str, duration: float, reason: str | None) -> None:
        self.requests[model] = self.requests.get(model, 0) + 1
        self.durations.setdefault(model, _Histogram()).observe(duration)
        if reason is not None:
            self.failure(model, reason)

    def failure(self, model: str, reason: str) -> None:
        self.failures[(model, reason)] = self.failures.get((model, reason), 0) + 1

    def usage(self, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        self.tokens[(model, "prompt")] = self.tokens.get((model, "prompt"), 0) + prompt_tokens
        self.tokens[(model, "completion")] = self.tokens.get((model, "completion"), 0) + completion_tokens
        self.cost[model] = self.cost.get(model, 0.0) + cost_usd

    def publish(self, model: str, base: str, horizon_hours: float, answer: RiskAnswer, at: float | None = None) -> None:
        self.latest[(model, base)] = Published(answer, horizon_label(horizon_hours), time.time() if at is None else at)


class AiCollector:
    """The AI sidecar's series (its own registry and port), per model and base asset.

    # HELP fr_ai_risk_probability Probability (0..1) of a large liquidation event for the base asset ...
    # TYPE fr_ai_risk_probability gauge
    fr_ai_risk_probability{base="BTC",horizon="8h",model="baseline"} 0.07
    fr_ai_confidence{base="BTC",horizon="8h",model="baseline"} 0.6
    fr_ai_risk_level{base="BTC",level="low",model="baseline"} 1.0   (0.0 for medium, high, critical)
    fr_ai_last_success_timestamp_seconds{base="BTC",model="baseline"} 1.7e+09
    fr_ai_requests_total{model="gpt"} 12.0
    fr_ai_request_failures_total{model="gpt",reason="timeout"} 1.0
    fr_ai_request_duration_seconds_bucket{le="1.0",model="gpt"} 9.0   (histogram)
    fr_ai_tokens_total{kind="prompt",model="gpt"} 5400.0, fr_ai_cost_usd_total{model="gpt"} 0.02
    fr_ai_brier_score{model="baseline"} 0.08, fr_ai_precision_ratio, fr_ai_recall_ratio,
    fr_ai_scored_predictions_total{model="baseline"} 40.0
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
        for (model, base), pub in sorted(s.latest.items()):
            a = pub.answer
            prob.add_metric([base, pub.horizon, model], a.liquidation_probability)
            conf.add_metric([base, pub.horizon, model], a.confidence)
            volume.add_metric([base, pub.horizon, model], a.estimated_liquidation_volume_usd)
            last.add_metric([base, model], pub.at)
            for name in RISK_LEVELS:
                level.add_metric([base, model, name], 1.0 if a.risk_level.value == name else 0.0)
        yield from (prob, conf, level, volume, last)

        requests = m.AI_REQUESTS.counter()
        for model, n in sorted(s.requests.items()):
            requests.add_metric([model], n)
        failures = m.AI_REQUEST_FAILURES.counter()
        for (model, reason), n in sorted(s.failures.items()):
            failures.add_metric([model, reason], n)
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
        yield from (requests, failures, duration, tokens, cost)

        brier = m.AI_BRIER.gauge()
        precision = m.AI_PRECISION.gauge()
        recall = m.AI_RECALL.gauge()
        scored = m.AI_SCORED.counter()
        for model, sc in sorted(s.scores.items()):
            scored.add_metric([model], sc.count)
            if sc.brier is not None:
                brier.add_metric([model], sc.brier)
            if sc.precision is not None:
                precision.add_metric([model], sc.precision)
            if sc.recall is not None:
                recall.add_metric([model], sc.recall)
        yield from (brier, precision, recall, scored)

        reads = m.AI_STATE_READS.counter()
        for result, n in sorted(s.state_reads.items()):
            reads.add_metric([result], n)
        slack = m.AI_SLACK_MESSAGES.counter()
        for result, n in sorted(s.slack.items()):
            slack.add_metric([result], n)
        yield from (reads, slack)


def make_registry(state: AiMetrics, process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AiCollector(state))
    if process:
        ProcessCollector(registry=registry)  # process_* (memory, CPU, fds), as on the exporter
    return registry
