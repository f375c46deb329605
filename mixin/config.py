"""Every knob of the monitoring mixin in one place: selectors, thresholds, durations, URLs.

The rules (:mod:`mixin.rules`) and dashboards (:mod:`mixin.dashboards`) read only this object, so
changing a threshold here and running ``python -m mixin.generate`` changes the alert expression,
its description, the line drawn on the dashboard and the runbook's numbers together.

Funding thresholds are fractions per 8 h-equivalent (0.0005 = 0.05 % per 8 h), either sign.
Durations are Prometheus duration strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

LINKS_FILE = Path(__file__).resolve().parent / "links.yml"
LINK_KEYS = ("runbook_base_url", "grafana_url")


@dataclass(frozen=True)
class Thresholds:
    # Funding, per 8 h-equivalent, |rate| above
    funding_warning: float = 0.0005  # 0.05 %
    funding_critical: float = 0.0008  # 0.08 %
    funding_emergency: float = 0.0012  # 0.12 %
    zscore: float = 2.5  # |fr_funding_zscore| above
    edge_min_bp: float = 0.0  # fr_edge_bp below
    carry_entry_edge_bp: float = 4.0  # fr_edge_bp at or above: the desks' entry threshold (CarryEdgeAboveEntry)
    net_apy_min_pct: float = 0.0  # fr_net_apy_pct{basis="projected"} below
    realized_apy_min_pct: float = 0.0  # fr_net_apy_pct{basis="realized"} below (NetApyRealizedNegative)
    margin_buffer_min: float = 0.15  # fr_margin_buffer_ratio below (MarginBufferLow)
    liq_gap_warning_pct: float = 10.0  # fr_liq_gap_pct below
    liq_gap_critical_pct: float = 5.0
    liq_hit_probability: float = 0.25  # fr_liq_hit_probability above (any horizon)
    adl_rank: float = 3.0  # fr_adl_rank at or above (0 safest .. 4 first in line)
    # Liquidation spike: 5 m notional rate above `factor` x its own 1 h average, and above a floor
    liquidation_spike_factor: float = 5.0
    liquidation_spike_min_usd_per_second: float = 50_000.0  # 3 M USD per minute
    funding_spread_bp: float = 10.0  # fr_funding_spread_bp above (informational)
    basis_annualized: float = 0.10  # |fr_basis_annualized_ratio| above (10 %/yr)
    implied_divergence_bp: float = 10.0  # |fr_implied_minus_actual_funding_bp| above (bp per 8 h)
    roll_days: float = 10.0  # fr_future_days_to_expiry below (informational: roll window)
    ai_risk_probability: float = 0.7
    ai_stale_seconds: float = 1800.0  # no valid model answer for this long (sidecar default period 300 s)
    ai_failure_ratio: float = 0.5  # failed / all model calls over the failure window
    stream_stale_seconds: float = 120.0  # no websocket message for this long
    feed_completeness_min: float = 0.99  # 24 h completeness of a stream below (FeedCompletenessLow)
    feed_lag_p99_seconds: float = 1.0  # p99 event lag of a stream above (FeedLagHigh)
    # Factor signals (the multi-factor model desks run)
    oi_surge_ratio: float = 0.20  # fr_open_interest_change_ratio{window="1h"} above (OpenInterestSurge)
    price_volatility_1h: float = 0.03  # fr_price_volatility_ratio{window="1h"} above (PriceVolatilityHigh)
    long_short_imbalance: float = 1.5  # fr_long_short_account_ratio above this or below 1 / this
    # |fr_funding_acceleration| scaled to 8 h above this, in the direction of the funding, while the
    # 8 h funding is beyond funding_warning (FundingAccelerating)
    funding_acceleration_8h: float = 0.0003  # 0.03 % per 8 h


@dataclass(frozen=True)
class Durations:
    """`for:` of each alert (how long the condition must hold before it fires)."""

    funding: str = "5m"
    zscore: str = "15m"
    edge: str = "30m"
    carry_entry: str = "15m"
    net_apy: str = "30m"
    realized_apy: str = "1h"
    margin_buffer: str = "5m"
    historical_stress: str = "15m"  # the live mark must stay where a repeat of the worst move liquidates
    liq_gap: str = "1m"
    liq_hit: str = "5m"
    adl: str = "5m"
    liquidation_spike: str = "2m"
    funding_spread: str = "30m"
    basis: str = "15m"
    implied_divergence: str = "15m"
    roll: str = "5m"
    ai_risk: str = "10m"
    ai_stale: str = "5m"
    ai_failing: str = "15m"
    ai_no_skill: str = "1h"  # skill is a slow quantity: only a lasting negative score is worth a note
    exporter_down: str = "5m"
    stream_down: str = "2m"
    stream_stale: str = "2m"
    shard_overlap: str = "15m"  # longer than a resharding rollout, where old and new shards overlap
    shard_missing: str = "10m"
    feed_completeness: str = "15m"
    feed_lag: str = "10m"
    oi_surge: str = "5m"
    price_volatility: str = "10m"
    long_short_imbalance: str = "30m"
    funding_accelerating: str = "15m"


@dataclass(frozen=True)
class Guards:
    """What the desk's risk rule says to do, put into the Slack text of the alert (a desk changes
    its rule here, not in the rules)."""

    net_apy_negative: str = "halve the position"
    net_apy_realized_negative: str = "review the carry: it has lost money since it opened; halve the position"
    liq_gap_warning: str = "add margin or reduce the position"
    liq_gap_critical: str = "close now"
    margin_buffer_low: str = "add margin or reduce the position until the buffer is back above the limit"
    historical_stress: str = "reduce the leverage until the position survives the worst historical move"


@dataclass(frozen=True)
class Windows:
    """Range-vector windows used inside rule expressions."""

    rate: str = "5m"  # liquidation notional rates (the recording rules' names say 5m)
    liquidation_baseline: str = "1h"
    ai_failures: str = "15m"
    feed_lag: str = "5m"  # the p99 lag recording rule's window (its name says 5m)


@dataclass(frozen=True)
class MixinConfig:
    exporter_job: str = "fr-exporter"
    sidecar_job: str = "fr-ai-sidecar"
    exporter_port: int = 9466
    sidecar_port: int = 9467
    # Links put into every alert (the runbook anchor is the lower-cased alert name). The shipped
    # values come from mixin/links.yml (load_links): change them there, not here.
    runbook_base_url: str = "https://github.com/fr-exporter/fr-exporter/blob/main/docs/runbook.md"
    grafana_url: str = "http://localhost:3000"
    dashboard_tag: str = "fr-exporter"
    grafana_schema_version: int = 41  # Grafana 11.6, the image pinned in docker-compose.yml
    datasource_uid: str = "prometheus"
    # ShardMissing checks shard counts 2..max_shards (PromQL cannot turn the `count` label into a
    # number, so the expression has one clause per count).
    max_shards: int = 16
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    thresholds: Thresholds = field(default_factory=Thresholds)
    durations: Durations = field(default_factory=Durations)
    windows: Windows = field(default_factory=Windows)
    guards: Guards = field(default_factory=Guards)

    def runbook_url(self, alert: str) -> str:
        return f"{self.runbook_base_url}#{alert.lower()}"


def load_links(path: Path = LINKS_FILE) -> dict[str, str]:
    """The link settings of a links YAML file (mixin/links.yml): only the known keys, each an
    http(s) URL; anything else is an error naming the file and key."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {', '.join(LINK_KEYS)}")
    unknown = sorted(set(data) - set(LINK_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(LINK_KEYS)})")
    for key, value in data.items():
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ValueError(f"{path}: {key} must be an http(s) URL, not {value!r}")
    return {k: str(v).rstrip("/") for k, v in data.items()}


def with_links(cfg: MixinConfig, path: Path = LINKS_FILE) -> MixinConfig:
    links = load_links(path)
    return replace(
        cfg,
        runbook_base_url=links.get("runbook_base_url", cfg.runbook_base_url),
        grafana_url=links.get("grafana_url", cfg.grafana_url),
    )


DEFAULT = with_links(MixinConfig())


def fast_variant(cfg: MixinConfig = DEFAULT) -> MixinConfig:
    """The same rules with `for:` durations and staleness limits shortened for the end-to-end test.

    Only durations and the two "how long is too long" limits change; every expression, label and
    annotation keeps its shape (tests/test_rules.py checks that).
    """
    short = {name: "2s" for name in Durations.__dataclass_fields__}
    short["stream_stale"] = "4s"
    return replace(
        cfg,
        durations=Durations(**short),
        thresholds=replace(cfg.thresholds, stream_stale_seconds=10.0, ai_stale_seconds=60.0),
        scrape_interval="1s",
        evaluation_interval="1s",
    )
