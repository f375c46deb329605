"""Prometheus recording and alerting rules, built from :class:`mixin.config.MixinConfig`.

Every alert carries labels ``severity`` (``info`` < ``warning`` < ``critical`` < ``emergency``),
``family`` (alerts that are levels of one condition share it; Alertmanager inhibits the lower level
with it) and ``component`` (``exporter`` or ``sidecar``: what must be up for the alert to mean
anything; ``scrape`` for ExporterDown itself), and annotations ``summary``, ``description`` (with
the live value), ``value``, ``runbook_url`` and ``dashboard_url`` (Grafana variables filled in from the alert's labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.metrics import catalog as m
from mixin.config import MixinConfig

# Dashboards that alerts link to: key -> (uid, title). dashboards.py builds them with these uids.
DASHBOARDS: dict[str, tuple[str, str]] = {
    "funding": ("fr-funding-overview", "Funding overview"),
    "positions": ("fr-positions-risk", "Positions and risk"),
    "liquidations": ("fr-liquidations", "Liquidations"),
    "ai": ("fr-ai-risk", "AI risk"),
    "health": ("fr-exporter-health", "Exporter health"),
    "term": ("fr-term-structure", "Term structure"),
    "feed": ("fr-feed-quality", "Feed quality"),
}

# Recording rules
FUNDING_8H = "fr:funding_rate_8h:ratio"
LIQ_RATE = "fr:liquidated_notional_usd:rate5m"  # by exchange, base, instrument, side
LIQ_RATE_EXCHANGE = "fr_exchange_base:liquidated_notional_usd:rate5m"  # by exchange, base
LIQ_RATE_BASELINE = "fr_exchange_base:liquidated_notional_usd:rate5m_avg1h"
FEED_COMPLETENESS = "fr:stream_completeness:ratio24h"  # by exchange, stream
FEED_LAG_P99 = "fr:stream_event_lag_seconds:p99_5m"  # by exchange, stream

PCT = "humanizePercentage"


def _fmt(x: float) -> str:
    """A threshold as PromQL/prose text: 0.0005 -> '0.0005', 10.0 -> '10'."""
    return f"{x:g}"


def _pct(x: float) -> str:
    """A fraction as a percentage for prose: 0.0005 -> '0.05 %'."""
    return f"{x * 100:g} %"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    value: str  # template of the live value, e.g. '{{ $value | humanizePercentage }}'
    dashboard: str
    dashboard_vars: tuple[str, ...]
    family: str | None = None
    component: str = "exporter"

    def rule(self, cfg: MixinConfig) -> dict[str, Any]:
        uid, _ = DASHBOARDS[self.dashboard]
        query = "&".join(f"var-{v}={{{{ $labels.{v} }}}}" for v in self.dashboard_vars)
        url = f"{cfg.grafana_url.rstrip('/')}/d/{uid}" + (f"?{query}" if query else "")
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, "family": self.family or self.name, "component": self.component},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "value": self.value,
                "runbook_url": cfg.runbook_url(self.name),
                "dashboard_url": url,
            },
        }


MARKET = ("exchange", "base", "instrument")
MARKET_LABELS = "exchange, base, quote, instrument"  # the labels of one instrument's series
POSITION = ("exchange", "instrument")


def recording_rules(cfg: MixinConfig) -> list[dict[str, Any]]:
    w = cfg.windows
    return [
        {
            "record": FUNDING_8H,
            # Funding normalised to 8 h: rate per interval x (8 h / interval). Deribit reports 28800.
            # Both sides are first reduced to one series per instrument: two exporters publishing one
            # instrument (an HA pair, shards overlapping while resharding) would otherwise make the
            # one-to-one match fail as a whole and silence every funding alert.
            "expr": (
                f"avg by ({MARKET_LABELS}) ({m.FUNDING_RATE}) * 28800"
                " / on (exchange, instrument) group_left ()"
                f" max by (exchange, instrument) ({m.FUNDING_INTERVAL})"
            ),
        },
        {
            "record": LIQ_RATE,
            # max, not sum, over duplicates: two exporters see the same liquidations once each
            "expr": f"max by (exchange, base, instrument, side) (rate({m.LIQUIDATED_NOTIONAL}[{w.rate}]))",
        },
        {"record": LIQ_RATE_EXCHANGE, "expr": f"sum by (exchange, base) ({LIQ_RATE})"},
        {
            "record": LIQ_RATE_BASELINE,
            "expr": f"avg_over_time({LIQ_RATE_EXCHANGE}[{w.liquidation_baseline}])",
        },
        {
            # the share of the last 24 h in which each stream spoke within its cadence
            "record": FEED_COMPLETENESS,
            "expr": f"1 - sum by (exchange, stream) (increase({m.STREAM_GAP}[24h])) / "
            f"sum by (exchange, stream) (increase({m.STREAM_EXPECTED}[24h]) > 0)",
        },
        {
            "record": FEED_LAG_P99,
            "expr": f"histogram_quantile(0.99, sum by (exchange, stream, le) "
            f"(rate({m.STREAM_EVENT_LAG}_bucket[{w.feed_lag}])))",
        },
    ]


def _funding_alerts(cfg: MixinConfig) -> list[Alert]:
    t, d = cfg.thresholds, cfg.durations
    out = []
    for level, thr, severity in (
        ("Warning", t.funding_warning, "warning"),
        ("Critical", t.funding_critical, "critical"),
        ("Emergency", t.funding_emergency, "emergency"),
    ):
        out.append(
            Alert(
                name=f"FundingRate{level}",
                expr=f"{FUNDING_8H} > {_fmt(thr)} or {FUNDING_8H} < -{_fmt(thr)}",
                for_=d.funding,
                severity=severity,
                summary="Funding on {{ $labels.exchange }} {{ $labels.instrument }} beyond " + f"±{_pct(thr)} per 8 h.",
                description="{{ $labels.exchange }} {{ $labels.instrument }} ({{ $labels.base }}) funding is "
                "{{ $value | humanizePercentage }} per 8 h-equivalent"
                + f" (threshold ±{_pct(thr)}, held {d.funding}).",
                value="{{ $value | humanizePercentage }}",
                dashboard="funding",
                dashboard_vars=MARKET,
                family="FundingRate",
            )
        )
    out.append(
        Alert(
            name="FundingZScoreExtreme",
            expr=f"{m.FUNDING_ZSCORE} > {_fmt(t.zscore)} or {m.FUNDING_ZSCORE} < -{_fmt(t.zscore)}",
            for_=d.zscore,
            severity="warning",
            summary="Funding on {{ $labels.exchange }} {{ $labels.instrument }} far from its own history.",
            description="{{ $labels.exchange }} {{ $labels.instrument }} funding z-score is "
            '{{ $value | printf "%.2f" }}' + f" (|z| > {_fmt(t.zscore)} for {d.zscore}).",
            value='{{ $value | printf "%.2f" }}',
            dashboard="funding",
            dashboard_vars=MARKET,
        )
    )
    out.append(
        Alert(
            name="EdgeTurnedNegative",
            expr=f"{m.EDGE} < {_fmt(t.edge_min_bp)}",
            for_=d.edge,
            severity="warning",
            summary="Carry on {{ $labels.exchange }} {{ $labels.instrument }} no longer pays its fees.",
            description="Edge for the {{ $labels.side }} side of {{ $labels.exchange }} {{ $labels.instrument }} is "
            "{{ $value | humanize }} bp per interval after fees" + f" (below {_fmt(t.edge_min_bp)} bp for {d.edge}).",
            value="{{ $value | humanize }} bp",
            dashboard="funding",
            dashboard_vars=MARKET,
        )
    )
    out.append(
        Alert(
            name="CarryEdgeAboveEntry",
            expr=f"{m.EDGE} >= {_fmt(t.carry_entry_edge_bp)}",
            for_=d.carry_entry,
            severity="info",
            summary="Carry on {{ $labels.exchange }} {{ $labels.instrument }} pays above the entry threshold.",
            description="Edge for the {{ $labels.side }} side of {{ $labels.exchange }} {{ $labels.instrument }} is "
            "{{ $value | humanize }} bp per interval after fees"
            + f" (at or above the entry threshold {_fmt(t.carry_entry_edge_bp)} bp for {d.carry_entry}).",
            value="{{ $value | humanize }} bp",
            dashboard="funding",
            dashboard_vars=MARKET,
        )
    )
    # --- factor signals (the multi-factor model desks run) -------------------------------------
    oi_1h = f'{m.OPEN_INTEREST_CHANGE}{{window="1h"}}'
    out.append(
        Alert(
            name="OpenInterestSurge",
            expr=f"{oi_1h} > {_fmt(t.oi_surge_ratio)}",
            for_=d.oi_surge,
            severity="warning",
            summary="Open interest on {{ $labels.exchange }} {{ $labels.instrument }} is surging.",
            description="Open interest of {{ $labels.exchange }} {{ $labels.instrument }} rose "
            "{{ $value | humanizePercentage }} in the last hour"
            + f" (above {_pct(t.oi_surge_ratio)} for {d.oi_surge}): fresh leverage is piling in; "
            "a crowded side is what a cascade liquidates.",
            value="{{ $value | humanizePercentage }}",
            dashboard="funding",
            dashboard_vars=MARKET,
        )
    )
    vol_1h = f'{m.PRICE_VOLATILITY}{{window="1h"}}'
    out.append(
        Alert(
            name="PriceVolatilityHigh",
            expr=f"{vol_1h} > {_fmt(t.price_volatility_1h)}",
            for_=d.price_volatility,
            severity="warning",
            summary="The {{ $labels.exchange }} {{ $labels.instrument }} mark is unusually volatile.",
            description="Realised volatility of the {{ $labels.exchange }} {{ $labels.instrument }} mark over "
            "the last hour is {{ $value | humanizePercentage }} (1-minute returns, not annualised;"
            + f" above {_pct(t.price_volatility_1h)} for {d.price_volatility}): liquidation distances shrink "
            "in moves of this size.",
            value="{{ $value | humanizePercentage }}",
            dashboard="funding",
            dashboard_vars=MARKET,
        )
    )
    ls, hi = m.LONG_SHORT_RATIO, t.long_short_imbalance
    out.append(
        Alert(
            name="LongShortImbalance",
            # `1 / x` stays exact in the expression (a rounded 0.666667 would not be the inverse)
            expr=f"{ls} > {_fmt(hi)} or {ls} < 1 / {_fmt(hi)}",
            for_=d.long_short_imbalance,
            severity="info",
            summary="Accounts on {{ $labels.exchange }} {{ $labels.instrument }} are lopsided.",
            description="The long/short account ratio of {{ $labels.exchange }} {{ $labels.instrument }} is "
            '{{ $value | printf "%.2f" }}'
            + f" (above {_fmt(hi)} or below 1/{_fmt(hi)} for {d.long_short_imbalance}): most accounts are on "
            "one side.",
            value='{{ $value | printf "%.2f" }}',
            dashboard="funding",
            dashboard_vars=MARKET,
        )
    )
    # acceleration per 8 h: the instrument's own interval scaled, as the funding levels are
    acc_8h = (
        f"{m.FUNDING_ACCELERATION} * 28800 / on (exchange, instrument) group_left ()"
        f" max by (exchange, instrument) ({m.FUNDING_INTERVAL})"
    )
    a_thr, f_thr = _fmt(t.funding_acceleration_8h), _fmt(t.funding_warning)
    out.append(
        Alert(
            name="FundingAccelerating",
            expr=f"({acc_8h} > {a_thr} and on (exchange, instrument) {FUNDING_8H} > {f_thr})"
            f" or ({acc_8h} < -{a_thr} and on (exchange, instrument) {FUNDING_8H} < -{f_thr})",
            for_=d.funding_accelerating,
            severity="warning",
            summary="Funding on {{ $labels.exchange }} {{ $labels.instrument }} is accelerating away from zero.",
            description="The funding of {{ $labels.exchange }} {{ $labels.instrument }} is beyond the warning "
            f"level (±{_pct(t.funding_warning)} per 8 h) and still accelerating: "
            "{{ $value | humanizePercentage }} per 8 h between the last settlements"
            + f" (beyond ±{_pct(t.funding_acceleration_8h)} for {d.funding_accelerating}).",
            value="{{ $value | humanizePercentage }}",
            dashboard="funding",
            dashboard_vars=MARKET,
        )
    )
    out.append(
        Alert(
            name="FundingSpreadWide",
            expr=f"{m.FUNDING_SPREAD} > {_fmt(t.funding_spread_bp)}",
            for_=d.funding_spread,
            severity="info",
            summary="Wide {{ $labels.base }} funding spread between {{ $labels.short_exchange }} and "
            "{{ $labels.long_exchange }}.",
            description="Short {{ $labels.base }} on {{ $labels.short_exchange }} and long on "
            "{{ $labels.long_exchange }} earns {{ $value | humanize }} bp per 8 h after fees"
            + f" (above {_fmt(t.funding_spread_bp)} bp for {d.funding_spread}).",
            value="{{ $value | humanize }} bp",
            dashboard="funding",
            dashboard_vars=("base",),
        )
    )
    return out


def _term_alerts(cfg: MixinConfig) -> list[Alert]:
    t, d = cfg.thresholds, cfg.durations
    basis, div, days = m.BASIS_ANNUALIZED, m.IMPLIED_MINUS_ACTUAL, m.FUTURE_DAYS
    return [
        Alert(
            name="FuturesBasisExtreme",
            expr=f"{basis} > {_fmt(t.basis_annualized)} or {basis} < -{_fmt(t.basis_annualized)}",
            for_=d.basis,
            severity="warning",
            summary="Annualised basis of {{ $labels.exchange }} {{ $labels.instrument }} beyond "
            + f"±{_pct(t.basis_annualized)} a year.",
            description="{{ $labels.exchange }} {{ $labels.instrument }} ({{ $labels.base }}, expiry "
            "{{ $labels.expiry }}) trades at an annualised basis of {{ $value | humanizePercentage }}"
            + f" (threshold ±{_pct(t.basis_annualized)} a year, held {d.basis}).",
            value="{{ $value | humanizePercentage }}",
            dashboard="term",
            dashboard_vars=("exchange", "base"),
        ),
        Alert(
            name="ImpliedFundingDivergence",
            expr=f"{div} > {_fmt(t.implied_divergence_bp)} or {div} < -{_fmt(t.implied_divergence_bp)}",
            for_=d.implied_divergence,
            severity="warning",
            summary="{{ $labels.exchange }} {{ $labels.instrument }} implies funding far from the perpetual's.",
            description="The funding {{ $labels.exchange }} {{ $labels.instrument }} (expiry {{ $labels.expiry }}) "
            "implies differs from the {{ $labels.base }} perpetual's by {{ $value | humanize }} bp per 8 h"
            + f" (threshold ±{_fmt(t.implied_divergence_bp)} bp, held {d.implied_divergence}).",
            value="{{ $value | humanize }} bp",
            dashboard="term",
            dashboard_vars=("exchange", "base"),
        ),
        Alert(
            name="FutureRollWindow",
            expr=f"{days} < {_fmt(t.roll_days)}",
            for_=d.roll,
            severity="info",
            summary="{{ $labels.exchange }} {{ $labels.instrument }} delivers within " + f"{_fmt(t.roll_days)} days.",
            description="{{ $labels.exchange }} {{ $labels.instrument }} ({{ $labels.base }}) delivers on "
            "{{ $labels.expiry }}, in {{ $value | humanize }} days"
            + f" (roll window: under {_fmt(t.roll_days)} days). Positions in it roll now or are delivered.",
            value="{{ $value | humanize }} days",
            dashboard="term",
            dashboard_vars=("exchange", "base"),
        ),
    ]


def _position_alerts(cfg: MixinConfig) -> list[Alert]:
    t, d, g = cfg.thresholds, cfg.durations, cfg.guards
    gap = []
    for thr, severity, action in (
        (t.liq_gap_warning_pct, "warning", g.liq_gap_warning),
        (t.liq_gap_critical_pct, "critical", g.liq_gap_critical),
    ):
        gap.append(
            Alert(
                name="LiquidationGapLow",
                expr=f"{m.LIQ_GAP} < {_fmt(thr)}",
                for_=d.liq_gap,
                severity=severity,
                summary="Position {{ $labels.position }} is within " + f"{_fmt(thr)} % of liquidation.",
                description="Position {{ $labels.position }} ({{ $labels.side }} {{ $labels.exchange }} "
                "{{ $labels.instrument }}) is {{ $value | humanize }} % from its liquidation price"
                + f" (below {_fmt(thr)} %). Risk rule: {action}.",
                value="{{ $value | humanize }} %",
                dashboard="positions",
                dashboard_vars=POSITION,
            )
        )
    return [
        Alert(
            name="NetApyNegative",
            expr=f'{m.NET_APY}{{basis="projected"}} < {_fmt(t.net_apy_min_pct)}',
            for_=d.net_apy,
            severity="warning",
            summary="Position {{ $labels.position }} is projected to lose money.",
            description="Projected net APY of {{ $labels.position }} ({{ $labels.exchange }} {{ $labels.instrument }}) "
            "is {{ $value | humanize }} % at the current funding rate"
            + f" (below {_fmt(t.net_apy_min_pct)} %). Risk rule: {g.net_apy_negative}.",
            value="{{ $value | humanize }} %",
            dashboard="positions",
            dashboard_vars=POSITION,
        ),
        Alert(
            name="NetApyRealizedNegative",
            expr=f'{m.NET_APY}{{basis="realized"}} < {_fmt(t.realized_apy_min_pct)}',
            for_=d.realized_apy,
            severity="warning",
            summary="Position {{ $labels.position }} has lost money since it opened.",
            description="Realised net APY of {{ $labels.position }} ({{ $labels.exchange }} {{ $labels.instrument }}) "
            "since it opened is {{ $value | humanize }} %"
            + f" (below {_fmt(t.realized_apy_min_pct)} %). Risk rule: {g.net_apy_realized_negative}.",
            value="{{ $value | humanize }} %",
            dashboard="positions",
            dashboard_vars=POSITION,
        ),
        Alert(
            name="MarginBufferLow",
            expr=f"{m.MARGIN_BUFFER} < {_fmt(t.margin_buffer_min)}",
            for_=d.margin_buffer,
            severity="warning",
            summary="Position {{ $labels.position }} has little margin above maintenance.",
            description="Margin buffer (equity - maintenance margin) / equity of {{ $labels.position }} "
            "({{ $labels.side }} {{ $labels.exchange }} {{ $labels.instrument }}) is {{ $value | humanizePercentage }}"
            + f" (below {_pct(t.margin_buffer_min)}). Recommended: {g.margin_buffer_low}.",
            value="{{ $value | humanizePercentage }}",
            dashboard="positions",
            dashboard_vars=POSITION,
        ),
        Alert(
            name="HistoricalStressNotSurvived",
            # the value is the move itself (the survives series only says 0)
            expr=f"{m.HISTORICAL_WORST_MOVE} and on (position, exchange, instrument, side, window) "
            f"({m.HISTORICAL_STRESS_SURVIVES} == 0)",
            for_=d.historical_stress,
            severity="warning",
            summary="Position {{ $labels.position }} would not survive its instrument's worst "
            "{{ $labels.window }} move of the trailing history.",
            description="A repeat of the worst {{ $labels.window }} move of the {{ $labels.exchange }} "
            "{{ $labels.instrument }} mark in the trailing history ({{ $value | humanizePercentage }}) would "
            "liquidate {{ $labels.position }} ({{ $labels.side }}) from the current mark"
            + f". Recommended: {g.historical_stress}.",
            value="{{ $value | humanizePercentage }}",
            dashboard="positions",
            dashboard_vars=POSITION,
        ),
        *gap,
        Alert(
            name="LiquidationHitProbabilityHigh",
            expr=f"{m.LIQ_HIT_PROBABILITY} > {_fmt(t.liq_hit_probability)}",
            for_=d.liq_hit,
            severity="warning",
            summary="Position {{ $labels.position }} may be liquidated within {{ $labels.horizon }}.",
            description="Probability that {{ $labels.exchange }} {{ $labels.instrument }} touches the liquidation "
            "price of {{ $labels.position }} within {{ $labels.horizon }} is {{ $value | humanizePercentage }}"
            + f" (above {_pct(t.liq_hit_probability)}).",
            value="{{ $value | humanizePercentage }}",
            dashboard="positions",
            dashboard_vars=POSITION,
        ),
        Alert(
            name="AdlRankHigh",
            expr=f"{m.ADL_RANK} >= {_fmt(t.adl_rank)}",
            for_=d.adl,
            severity="warning",
            summary="Position {{ $labels.position }} is near the front of the auto-deleveraging queue.",
            description="ADL rank of {{ $labels.position }} ({{ $labels.exchange }} {{ $labels.instrument }}) is "
            "{{ $value }} of 4" + f" (at or above {_fmt(t.adl_rank)}).",
            value="{{ $value }}",
            dashboard="positions",
            dashboard_vars=POSITION,
        ),
    ]


def _liquidation_alerts(cfg: MixinConfig) -> list[Alert]:
    t, d, w = cfg.thresholds, cfg.durations, cfg.windows
    return [
        Alert(
            name="LiquidationSpike",
            expr=(
                f"{LIQ_RATE_EXCHANGE} > {_fmt(t.liquidation_spike_factor)} * {LIQ_RATE_BASELINE}"
                f" and {LIQ_RATE_EXCHANGE} > {_fmt(t.liquidation_spike_min_usd_per_second)}"
            ),
            for_=d.liquidation_spike,
            severity="warning",
            summary="{{ $labels.base }} liquidations on {{ $labels.exchange }} far above their recent baseline.",
            description="{{ $labels.exchange }} is liquidating {{ $value | humanize }} USD/s of {{ $labels.base }} "
            f"positions ({w.rate} rate), more than {_fmt(t.liquidation_spike_factor)}x its "
            f"{w.liquidation_baseline} average and above {_fmt(t.liquidation_spike_min_usd_per_second)} USD/s.",
            value="{{ $value | humanize }} USD/s",
            dashboard="liquidations",
            dashboard_vars=("exchange", "base"),
        )
    ]


def _ai_alerts(cfg: MixinConfig) -> list[Alert]:
    t, d, w = cfg.thresholds, cfg.durations, cfg.windows
    return [
        Alert(
            name="AiRiskHigh",
            # the calibrated probability once the sidecar has one for the series, else the raw one
            expr=(
                f'({m.AI_RISK_PROBABILITY}{{calibration="calibrated"}}'
                f' or ignoring (calibration) {m.AI_RISK_PROBABILITY}{{calibration!="calibrated"}})'
                f" > {_fmt(t.ai_risk_probability)}"
            ),
            for_=d.ai_risk,
            severity="warning",
            summary="{{ $labels.model }} sees a high {{ $labels.base }} liquidation risk.",
            description="{{ $labels.model }} puts the probability of a large {{ $labels.base }} liquidation event "
            "within {{ $labels.horizon }} at {{ $value | humanizePercentage }} ({{ $labels.calibration }})"
            + f" (above {_pct(t.ai_risk_probability)} for {d.ai_risk}).",
            value="{{ $value | humanizePercentage }}",
            dashboard="ai",
            dashboard_vars=("base",),
            component="sidecar",
        ),
        Alert(
            name="AiSidecarStale",
            expr=f"time() - {m.AI_LAST_SUCCESS} > {_fmt(t.ai_stale_seconds)}",
            for_=d.ai_stale,
            severity="warning",
            summary="The AI sidecar has produced no valid answer for a while.",
            description="Last valid answer from {{ $labels.model }} was {{ $value | humanizeDuration }} ago"
            + f" (limit {_fmt(t.ai_stale_seconds)} s).",
            value="{{ $value | humanizeDuration }}",
            dashboard="ai",
            dashboard_vars=(),
            component="sidecar",
        ),
        Alert(
            name="AiModelNoSkill",
            # the better of raw and calibrated: a model whose information calibration recovers has skill
            expr=f'max by (job, model, horizon) ({m.AI_BRIER_SKILL}{{window="rolling"}}) < 0',
            for_=d.ai_no_skill,
            severity="info",
            summary="{{ $labels.model }} predicts worse than the base rate at {{ $labels.horizon }}.",
            description="Over the rolling window the Brier skill score of {{ $labels.model }} at horizon "
            '{{ $labels.horizon }} is {{ $value | printf "%.2f" }}: always answering the observed base rate '
            "would have scored better, raw or calibrated. Its probabilities carry no information yet.",
            value='{{ $value | printf "%.2f" }}',
            dashboard="ai",
            dashboard_vars=(),
            component="sidecar",
        ),
        Alert(
            name="AiSidecarFailing",
            expr=(
                f"sum by (job, model) (rate({m.AI_REQUEST_FAILURES}[{w.ai_failures}]))"
                f" / sum by (job, model) (rate({m.AI_REQUESTS}[{w.ai_failures}]))"
                f" > {_fmt(t.ai_failure_ratio)}"
            ),
            for_=d.ai_failing,
            severity="warning",
            summary="Most calls to {{ $labels.model }} fail.",
            description="{{ $value | humanizePercentage }} of the calls to {{ $labels.model }} failed over the last "
            f"{w.ai_failures} (above {_pct(t.ai_failure_ratio)}).",
            value="{{ $value | humanizePercentage }}",
            dashboard="ai",
            dashboard_vars=(),
            component="sidecar",
        ),
    ]


def _health_alerts(cfg: MixinConfig) -> list[Alert]:
    t, d = cfg.thresholds, cfg.durations
    job = f'job="{cfg.exporter_job}"'
    return [
        Alert(
            name="ExporterDown",
            expr=f"up{{{job}}} == 0 or absent(up{{{job}}})",
            for_=d.exporter_down,
            severity="critical",
            summary="The funding-rate exporter is down or not scraped.",
            # absent(up{...}) has no instance label and the value 1: say "no target", never "(up = 1)"
            description="{{ if $labels.instance }}Prometheus has had no successful scrape of {{ $labels.job }} at "
            "{{ $labels.instance }}" + f" for {d.exporter_down} (up = {{{{ $value }}}})."
            "{{ else }}Prometheus has no target of job {{ $labels.job }}" + f" for {d.exporter_down} "
            "(it is absent from the scrape targets: check the scrape configuration or service discovery).{{ end }}",
            value="{{ if $labels.instance }}up = {{ $value }}{{ else }}no target{{ end }}",
            dashboard="health",
            dashboard_vars=(),
            component="scrape",
        ),
        Alert(
            name="ExchangeStreamDown",
            expr=f"{m.UP} == 0",
            for_=d.stream_down,
            severity="critical",
            summary="No live market data from {{ $labels.exchange }}.",
            description="The exporter's streams to {{ $labels.exchange }} are disconnected or silent "
            f"({m.UP} = {{{{ $value }}}} for {d.stream_down}); its funding and liquidation series are absent.",
            value="{{ $value }}",
            dashboard="health",
            dashboard_vars=("exchange",),
        ),
        Alert(
            name="ExchangeStreamStale",
            expr=f"time() - {m.STREAM_LAST_MESSAGE} > {_fmt(t.stream_stale_seconds)}",
            for_=d.stream_stale,
            severity="warning",
            summary="Stream {{ $labels.stream }} of {{ $labels.exchange }} is silent.",
            description="Last message on {{ $labels.exchange }} {{ $labels.stream }} was "
            "{{ $value | humanizeDuration }} ago" + f" (limit {_fmt(t.stream_stale_seconds)} s).",
            value="{{ $value | humanizeDuration }}",
            dashboard="health",
            dashboard_vars=("exchange",),
        ),
    ]


# One series every followed instrument has from its start (a counter present from 0), joined to the
# publishing exporter's fr_shard_info{index,count} by its target labels.
_SHARD_OF_INSTRUMENT = f'{m.LIQUIDATIONS}{{side="long"}} * on (job, instance) group_left (index, count) {m.SHARD_INFO}'


def _shard_alerts(cfg: MixinConfig) -> list[Alert]:
    d = cfg.durations
    job = f'job="{cfg.exporter_job}"'
    # Distinct shard indices seen for shard count S fewer than S: the bases of the absent shards are
    # followed by nobody. HA replicas of one index count once.
    missing = " or ".join(
        f'count by (job, count) (count by (job, count, index) ({m.SHARD_INFO}{{{job},count="{n}"}})) < {n}'
        for n in range(2, cfg.max_shards + 1)
    )
    return [
        Alert(
            name="ShardOverlap",
            expr=(
                "count by (exchange, instrument) (count by (exchange, instrument, index, count) "
                f"({_SHARD_OF_INSTRUMENT})) > 1"
            ),
            for_=d.shard_overlap,
            severity="warning",
            summary="{{ $labels.exchange }} {{ $labels.instrument }} is published by more than one shard.",
            description="{{ $labels.exchange }} {{ $labels.instrument }} comes from {{ $value | humanize }} "
            f"different shards (index/count) for {d.shard_overlap}: the shards disagree on the shard count or a "
            "resharding was left half done. Rules and alerts deduplicate, but sums on dashboards count it twice.",
            value="{{ $value | humanize }} shards",
            dashboard="health",
            dashboard_vars=("exchange",),
        ),
        Alert(
            name="ShardMissing",
            expr=missing,
            for_=d.shard_missing,
            severity="critical",
            summary="Only some of the {{ $labels.count }} exporter shards report: their bases are not followed.",
            description="{{ $value | humanize }} of {{ $labels.count }} shards of {{ $labels.job }} report "
            f"{m.SHARD_INFO} (for {d.shard_missing}); the base assets of the others have no funding or "
            "liquidation series and no alerts.",
            value="{{ $value | humanize }} shards",
            dashboard="health",
            dashboard_vars=(),
            component="scrape",
        ),
    ]


def _feed_alerts(cfg: MixinConfig) -> list[Alert]:
    t, d = cfg.thresholds, cfg.durations
    return [
        Alert(
            name="FeedCompletenessLow",
            expr=f"{FEED_COMPLETENESS} < {_fmt(t.feed_completeness_min)}",
            for_=d.feed_completeness,
            severity="warning",
            summary="Stream {{ $labels.stream }} of {{ $labels.exchange }} missed data over 24 h.",
            description="{{ $labels.exchange }} {{ $labels.stream }} spoke within its cadence only "
            "{{ $value | humanizePercentage }} of the last 24 h"
            + f" (minimum {_pct(t.feed_completeness_min)}): gaps from disconnects or stalls.",
            value="{{ $value | humanizePercentage }}",
            dashboard="feed",
            dashboard_vars=("exchange",),
        ),
        Alert(
            name="FeedLagHigh",
            expr=f"{FEED_LAG_P99} > {_fmt(t.feed_lag_p99_seconds)}",
            for_=d.feed_lag,
            severity="warning",
            summary="Data from {{ $labels.exchange }} {{ $labels.stream }} arrives late.",
            description="The p99 delay from the exchange's event time to receipt on {{ $labels.exchange }} "
            "{{ $labels.stream }} is {{ $value | humanizeDuration }}"
            + f" (limit {_fmt(t.feed_lag_p99_seconds)} s, held {d.feed_lag}).",
            value="{{ $value | humanizeDuration }}",
            dashboard="feed",
            dashboard_vars=("exchange",),
        ),
    ]


def alerts(cfg: MixinConfig) -> dict[str, list[Alert]]:
    """Alert groups by name."""
    return {
        "fr-exporter.funding": _funding_alerts(cfg),
        "fr-exporter.term": _term_alerts(cfg),
        "fr-exporter.positions": _position_alerts(cfg),
        "fr-exporter.liquidations": _liquidation_alerts(cfg),
        "fr-exporter.ai": _ai_alerts(cfg),
        "fr-exporter.health": _health_alerts(cfg),
        "fr-exporter.shards": _shard_alerts(cfg),
        "fr-exporter.feed": _feed_alerts(cfg),
    }


def alert_names(cfg: MixinConfig) -> list[str]:
    seen: dict[str, None] = {}
    for group in alerts(cfg).values():
        for a in group:
            seen.setdefault(a.name, None)
    return list(seen)


def recording_file(cfg: MixinConfig) -> dict[str, Any]:
    return {"groups": [{"name": "fr-exporter.recording", "rules": recording_rules(cfg)}]}


def alerts_file(cfg: MixinConfig) -> dict[str, Any]:
    return {"groups": [{"name": name, "rules": [a.rule(cfg) for a in group]} for name, group in alerts(cfg).items()]}
