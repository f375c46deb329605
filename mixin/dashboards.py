"""Grafana dashboards as plain dictionaries (dashboard JSON model, schemaVersion from the config).

A deliberately small builder instead of grafana-foundation-sdk: the dashboards use five panel
types and a handful of fields, the JSON stays diffable and readable in review, the generator runs
with the standard library only (no pinned epoch-versioned wheel in the project's dependencies), and
the lint that matters (datasource variable, units, ``$__rate_interval``) is in tests/test_dashboards.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.metrics import catalog as m
from mixin.config import MixinConfig
from mixin.rules import DASHBOARDS, FEED_COMPLETENESS, FUNDING_8H, LIQ_RATE_BASELINE, LIQ_RATE_EXCHANGE

DS = {"type": "prometheus", "uid": "${datasource}"}
MKT = 'exchange=~"$exchange",base=~"$base",instrument=~"$instrument"'
POS = 'exchange=~"$exchange",instrument=~"$instrument"'
RI = "$__rate_interval"
LATENCY = f"sum by (le, model) (rate({m.AI_REQUEST_DURATION}_bucket[{RI}]))"


@dataclass
class Panel:
    title: str
    description: str
    targets: list[tuple[str, str]]  # (expr, legendFormat)
    unit: str
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    thresholds: list[tuple[str, float | None]] = field(default_factory=list)  # (color, from value)
    threshold_style: str | None = None  # timeseries: "line", "line+area", "dashed"
    min: float | None = None
    max: float | None = None
    extra_defaults: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    instant: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # more panel keys (repeat, pluginVersion)
    overrides: list[dict[str, Any]] = field(default_factory=list)  # Grafana field overrides, as JSON

    def build(self, pid: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {"unit": self.unit}
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.thresholds:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"color": c, "value": v} for c, v in self.thresholds],
            }
        if self.threshold_style:
            defaults["custom"] = {"thresholdsStyle": {"mode": self.threshold_style}}
        defaults.update(self.extra_defaults)
        targets = []
        for i, (expr, legend) in enumerate(self.targets):
            t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            if self.instant:
                t["instant"] = True
                t["range"] = False
                t["format"] = "table"
            targets.append(t)
        return {
            "id": pid,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DS,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "options": self.options,
            "targets": targets,
            **self.extra,
        }


def _variables(cfg: MixinConfig) -> list[dict[str, Any]]:
    def query(name: str, label: str, q: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": q,
            "definition": q,
            "refresh": 2,  # on time-range change
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "regex": "",
        }

    return [
        {
            "name": "datasource",
            "label": "Data Source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "includeAll": False,
            "multi": False,
        },
        query("exchange", "Exchange", f"label_values({m.UP}, exchange)"),
        query("base", "Base asset", f'label_values({m.FUNDING_RATE}{{exchange=~"$exchange"}}, base)'),
        query(
            "instrument",
            "Instrument",
            f'label_values({m.FUNDING_RATE}{{exchange=~"$exchange",base=~"$base"}}, instrument)',
        ),
    ]


def _layout(panels: list[Panel]) -> list[dict[str, Any]]:
    out, x, y, row_h = [], 0, 0, 0
    for i, p in enumerate(panels, start=1):
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        out.append(p.build(i, x, y))
        x += p.width
        row_h = max(row_h, p.height)
    return out


def _dashboard(
    cfg: MixinConfig,
    key: str,
    description: str,
    panels: list[Panel],
    overrides: dict[str, list[tuple[str, str]]] | None = None,
    transformations: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    uid, title = DASHBOARDS[key]
    links = [
        {"title": t, "type": "link", "url": f"/d/{u}", "keepTime": True, "includeVars": True}
        for k, (u, t) in DASHBOARDS.items()
        if k != key
    ]
    return {
        "id": None,
        "uid": uid,
        "title": f"FR exporter / {title}",
        "description": description,
        "tags": [cfg.dashboard_tag],
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "schemaVersion": cfg.grafana_schema_version,
        "version": 1,
        "links": links,
        "annotations": {"list": []},
        "templating": {"list": _variables(cfg)},
        "panels": _extras(_layout(panels), overrides or {}, transformations or {}),
    }


def _extras(
    built: list[dict[str, Any]], overrides: dict[str, list[tuple[str, str]]], transformations: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per-column units (a table of mixed units) and transformations, by panel title."""
    for p in built:
        for column, unit in overrides.get(p["title"], []):
            p["fieldConfig"]["overrides"].append(
                {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "unit", "value": unit}]}
            )
        if p["title"] in transformations:
            p["transformations"] = transformations[p["title"]]
    return built


def _funding(cfg: MixinConfig) -> dict[str, Any]:
    t = cfg.thresholds
    levels = [
        ("red", None),  # below -emergency
        ("orange", -t.funding_emergency),
        ("yellow", -t.funding_critical),
        ("green", -t.funding_warning),
        ("yellow", t.funding_warning),
        ("orange", t.funding_critical),
        ("red", t.funding_emergency),
    ]
    f8 = f"{FUNDING_8H}{{{MKT}}}"
    return _dashboard(
        cfg,
        "funding",
        "Funding per exchange and instrument, normalised to 8 h; z-score, edge after fees, cross-exchange views.",
        [
            Panel(
                "Funding heat map: exchange x instrument (8 h-equivalent)",
                "Each row is one instrument on one exchange; colour is the funding rate normalised to 8 h "
                f"(yellow beyond ±{t.funding_warning:.2%}, orange ±{t.funding_critical:.2%}, "
                f"red ±{t.funding_emergency:.2%}).",
                [(f8, "{{exchange}} {{instrument}}")],
                "percentunit",
                kind="state-timeline",
                width=24,
                height=10,
                thresholds=levels,
                extra_defaults={"color": {"mode": "thresholds"}},
                options={"showValue": "never", "mergeValues": False, "rowHeight": 0.8},
            ),
            Panel(
                "Funding rate, 8 h-equivalent",
                f"{m.FUNDING_RATE} x 28800 / {m.FUNDING_INTERVAL}. Lines: alert thresholds (either sign).",
                [(f8, "{{exchange}} {{instrument}}")],
                "percentunit",
                thresholds=levels,
                threshold_style="dashed",
            ),
            Panel(
                "Funding z-score",
                f"Current funding against the trailing window of settlements; the alert fires beyond ±{t.zscore:g}.",
                [(f"{m.FUNDING_ZSCORE}{{{MKT}}}", "{{exchange}} {{instrument}}")],
                "none",
                thresholds=[("red", None), ("green", -t.zscore), ("red", t.zscore)],
                threshold_style="dashed",
            ),
            Panel(
                "Edge after fees",
                "Funding received over one interval minus amortised trading cost, for the side that receives "
                "funding. Below zero the carry does not pay its fees.",
                [(f"{m.EDGE}{{{MKT}}}", "{{exchange}} {{instrument}} ({{side}} receives)")],
                "suffix: bp",
                thresholds=[("red", None), ("green", t.edge_min_bp)],
                threshold_style="dashed",
            ),
            Panel(
                "Open-interest-weighted funding (8 h)",
                "Funding across exchanges weighted by open interest, each normalised to 8 h.",
                [(f'{m.OI_WEIGHTED_FUNDING}{{base=~"$base"}}', "{{base}}")],
                "percentunit",
            ),
            Panel(
                "Cross-exchange funding spreads",
                "Funding earned per 8 h by shorting on short_exchange and longing on long_exchange, after fees. "
                f"Informational alert above {t.funding_spread_bp:g} bp.",
                [
                    (
                        f'{m.FUNDING_SPREAD}{{base=~"$base"}}',
                        "{{base}} short {{short_exchange}} / long {{long_exchange}}",
                    )
                ],
                "suffix: bp",
            ),
            Panel(
                "Time to next settlement",
                "Seconds until the next funding settlement (instruments with scheduled settlements only).",
                [(f"{m.NEXT_FUNDING_TIMESTAMP}{{{MKT}}} - time()", "{{exchange}} {{instrument}}")],
                "s",
                kind="bargauge",
                options={"orientation": "horizontal", "displayMode": "basic"},
            ),
            Panel(
                "Annualised funding",
                f"{m.FUNDING_RATE} x intervals per year, with each instrument's own interval.",
                [(f"{m.FUNDING_RATE_ANNUALIZED}{{{MKT}}}", "{{exchange}} {{instrument}}")],
                "percentunit",
            ),
            Panel(
                "Funding momentum and acceleration",
                "Momentum: the current rate minus the mean of the z-score window; acceleration: "
                "(r3 - r2) - (r2 - r1) of the last three settlements. Both per the instrument's interval.",
                [
                    (f"{m.FUNDING_MOMENTUM}{{{MKT}}}", "{{exchange}} {{instrument}} momentum"),
                    (f"{m.FUNDING_ACCELERATION}{{{MKT}}}", "{{exchange}} {{instrument}} acceleration"),
                ],
                "percentunit",
            ),
            Panel(
                "Anchor watcher: effective anchor l (level and difference), funding and premium",
                f"{m.ANCHOR_STRENGTH}: OLS slope of funding (per 8 h) on the premium over the anchor window, "
                'by levels (method="level") and by one-minute changes (method="difference", as desks '
                "estimate it); left axis. Near the exchange's nominal anchor the funding follows the premium; "
                "far below it the cap/floor or the interest term dominates; a level slope well above the "
                "difference slope is a shared trend, not anchoring. Right axis, for context: the funding rate "
                "per 8 h and the premium (mark - index) / index. Backfilled at start from the exchanges' "
                "candles (Deribit: from live samples, after 10 minutes).",
                [
                    (f"{m.ANCHOR_STRENGTH}{{{MKT}}}", "{{exchange}} {{instrument}} l {{method}}"),
                    (f8, "{{exchange}} {{instrument}} funding (8 h)"),
                    (f"{m.PREMIUM}{{{MKT}}}", "{{exchange}} {{instrument}} premium"),
                ],
                "none",
                width=24,
                overrides=[
                    {
                        "matcher": {"id": "byFrameRefID", "options": ref},
                        "properties": [
                            {"id": "unit", "value": "percentunit"},
                            {"id": "custom.axisPlacement", "value": "right"},
                        ],
                    }
                    for ref in ("B", "C")
                ],
            ),
            Panel(
                "Long/short account ratio",
                "Accounts net long / accounts net short, as the exchange publishes it (Binance, Bybit, OKX). "
                f"LongShortImbalance above {t.long_short_imbalance:g} or below 1/{t.long_short_imbalance:g}.",
                [(f"{m.LONG_SHORT_RATIO}{{{MKT}}}", "{{exchange}} {{instrument}}")],
                "none",
                thresholds=[("red", None), ("green", 1 / t.long_short_imbalance), ("red", t.long_short_imbalance)],
                threshold_style="dashed",
            ),
            Panel(
                "Insurance funds",
                "Insurance fund balance per exchange and pool, where published.",
                [(f'{m.INSURANCE_FUND}{{exchange=~"$exchange"}}', "{{exchange}} {{pool}}")],
                "currencyUSD",
            ),
            Panel(
                "Premium (mark vs index)",
                "(mark - index) / index: what drives the next funding rate.",
                [(f"{m.PREMIUM}{{{MKT}}}", "{{exchange}} {{instrument}}")],
                "percentunit",
            ),
            Panel(
                "Open interest",
                "Open interest in USD notional.",
                [(f"{m.OPEN_INTEREST}{{{MKT}}}", "{{exchange}} {{instrument}}")],
                "currencyUSD",
            ),
            Panel(
                "Open-interest change (1 h, 4 h)",
                "Open interest now over its value one (four) hours ago, minus 1; backfilled from the exchanges' "
                f"open-interest history (none on Deribit). OpenInterestSurge above {t.oi_surge_ratio:.0%} in 1 h.",
                [(f"{m.OPEN_INTEREST_CHANGE}{{{MKT}}}", "{{exchange}} {{instrument}} {{window}}")],
                "percentunit",
                thresholds=[("green", None), ("red", t.oi_surge_ratio)],
                threshold_style="dashed",
            ),
            Panel(
                "Realised volatility of the mark (1 h, 4 h)",
                "Stdev of the 1-minute log returns of the mark over the window, times sqrt(minutes): not "
                f"annualised. PriceVolatilityHigh above {t.price_volatility_1h:.0%} in 1 h.",
                [(f"{m.PRICE_VOLATILITY}{{{MKT}}}", "{{exchange}} {{instrument}} {{window}}")],
                "percentunit",
                min=0,
                thresholds=[("green", None), ("red", t.price_volatility_1h)],
                threshold_style="dashed",
            ),
        ],
    )


def _positions(cfg: MixinConfig) -> dict[str, Any]:
    t = cfg.thresholds
    legend = "{{position}} ({{side}} {{exchange}} {{instrument}})"
    return _dashboard(
        cfg,
        "positions",
        "Configured and account positions: distance to liquidation, hit probability, ADL, carry.",
        [
            Panel(
                "Distance to liquidation",
                f"Mark to liquidation price in % of mark. Warning below {t.liq_gap_warning_pct:g} %, "
                f"critical below {t.liq_gap_critical_pct:g} % (the shaded bands).",
                [(f"{m.LIQ_GAP}{{{POS}}}", legend)],
                "percent",
                thresholds=[("red", None), ("orange", t.liq_gap_critical_pct), ("green", t.liq_gap_warning_pct)],
                threshold_style="line+area",
                # no min: a position past its liquidation price has a negative gap and must show it
            ),
            Panel(
                "Margin buffer",
                f"(equity - maintenance margin) / equity; 0 at liquidation. MarginBufferLow below "
                f"{t.margin_buffer_min:.0%}.",
                [(f"{m.MARGIN_BUFFER}{{{POS}}}", legend)],
                "percentunit",
                thresholds=[("red", None), ("green", t.margin_buffer_min)],
                threshold_style="line+area",
                max=1,
            ),
            Panel(
                "Equity and maintenance margin",
                "Margin equity at the live mark (margin + unrealised PnL) next to the maintenance margin the "
                "exchange requires; liquidation where they meet.",
                [
                    (f"{m.POSITION_EQUITY}{{{POS}}}", "{{position}} equity"),
                    (f"{m.POSITION_MAINTENANCE_MARGIN}{{{POS}}}", "{{position}} maintenance"),
                ],
                "currencyUSD",
            ),
            Panel(
                "Basis and total PnL",
                "Basis PnL of both legs at the live marks, and total = basis + net funding - fees.",
                [
                    (f"{m.BASIS_PNL}{{{POS}}}", "{{position}} basis"),
                    (f"{m.TOTAL_PNL}{{{POS}}}", "{{position}} total"),
                ],
                "currencyUSD",
            ),
            Panel(
                "Stress: equity after instant moves",
                "Margin equity if the mark moved instantly by shock_pct; below zero the position is gone.",
                [(f"{m.STRESS_EQUITY}{{{POS}}}", "{{position}} {{shock_pct}} %")],
                "currencyUSD",
            ),
            Panel(
                "Stress: survives instant moves",
                "1 if the position survives an instant mark move of shock_pct, else 0.",
                [(f"{m.STRESS_SURVIVES}{{{POS}}}", "{{position}} {{shock_pct}} %")],
                "none",
                min=0,
                max=1,
            ),
            Panel(
                "Historical stress: worst and parametric moves",
                "Worst adverse mark move over any window of the trailing history of 1-minute closes (period in "
                "the series' HELP, default 30 days), and the moves at 99 / 99.9 % under normal and Student-t "
                "fits of the same history: negative for a long (a fall), positive for a short (a rise).",
                [
                    (f"{m.HISTORICAL_WORST_MOVE}{{{POS}}}", "{{position}} worst {{window}}"),
                    (f"{m.PARAMETRIC_MOVE}{{{POS}}}", "{{position}} {{distribution}} {{confidence}} {{window}}"),
                ],
                "percentunit",
            ),
            Panel(
                "Historical stress: survives",
                "1 if the position survives the historical worst move (or the parametric move) from the live mark "
                "(equity stays above maintenance margin), else 0. HistoricalStressNotSurvived fires on the worst "
                "move's 0.",
                [
                    (f"{m.HISTORICAL_STRESS_SURVIVES}{{{POS}}}", "{{position}} worst {{window}}"),
                    (f"{m.PARAMETRIC_STRESS_SURVIVES}{{{POS}}}", "{{position}} {{distribution}} {{confidence}}"),
                ],
                "none",
                min=0,
                max=1,
            ),
            Panel(
                "Locked capital and notional",
                "Capital the APY is computed on, and the perp leg's notional at the mark.",
                [
                    (f"{m.LOCKED_CAPITAL}{{{POS}}}", "{{position}} capital"),
                    (f"{m.POSITION_NOTIONAL}{{{POS}}}", "{{position}} notional"),
                ],
                "currencyUSD",
            ),
            Panel(
                "Liquidation hit probability",
                f"Probability that mark touches the liquidation price within the horizon; alert above "
                f"{t.liq_hit_probability:.0%}.",
                [(f"{m.LIQ_HIT_PROBABILITY}{{{POS}}}", "{{position}} within {{horizon}}")],
                "percentunit",
                thresholds=[("green", None), ("red", t.liq_hit_probability)],
                threshold_style="dashed",
                min=0,
                max=1,
            ),
            Panel(
                "ADL rank",
                f"0 safest .. 4 first in the auto-deleveraging queue; alert at {t.adl_rank:g} and above.",
                [(f"{m.ADL_RANK}{{{POS}}}", legend)],
                "none",
                thresholds=[("green", None), ("red", t.adl_rank)],
                threshold_style="dashed",
                min=0,
                max=4,
            ),
            Panel(
                "Net APY: realised vs projected",
                "(funding received - paid - fees - borrow - gas) / locked capital, annualised. Realised since the "
                "position opened; projected at the current funding rate.",
                [(f"{m.NET_APY}{{{POS}}}", "{{position}} {{basis}}")],
                "percent",
                thresholds=[("red", None), ("green", t.net_apy_min_pct)],
                threshold_style="dashed",
            ),
            Panel(
                "Funding PnL (cumulative)",
                "Funding received (positive) or paid (negative), accumulated at each settlement.",
                [(f"{m.FUNDING_PNL}{{{POS}}}", legend)],
                "currencyUSD",
            ),
            Panel(
                "Liquidation price and mark",
                "Liquidation price (source: exchange or computed) next to the instrument's mark price.",
                [
                    (f"{m.LIQUIDATION_PRICE}{{{POS}}}", "{{position}} liquidation ({{source}})"),
                    (
                        f"{m.MARK_PRICE}{{{POS}}} and on (exchange, instrument) {m.LIQUIDATION_PRICE}",
                        "{{exchange}} {{instrument}} mark",
                    ),
                ],
                "currencyUSD",
            ),
        ],
    )


def _liquidations(cfg: MixinConfig) -> dict[str, Any]:
    t = cfg.thresholds
    return _dashboard(
        cfg,
        "liquidations",
        "Liquidations seen on the exchanges' public streams (Binance and OKX send at most one per instrument "
        "per second), by exchange and side of the liquidated position.",
        [
            Panel(
                "Liquidated notional by exchange and side (USD/s)",
                "USD notional liquidated per second; side = side of the liquidated position.",
                [
                    (
                        f"sum by (exchange, side) (rate({m.LIQUIDATED_NOTIONAL}{{{MKT}}}[{RI}]))",
                        "{{exchange}} {{side}}",
                    )
                ],
                "currencyUSD",
                width=24,
                extra_defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}, "fillOpacity": 80}},
            ),
            Panel(
                "Liquidation orders by exchange and side",
                "Liquidation orders per second seen on the stream (sampled on Binance and OKX).",
                [(f"sum by (exchange, side) (rate({m.LIQUIDATIONS}{{{MKT}}}[{RI}]))", "{{exchange}} {{side}}")],
                "cps",
            ),
            Panel(
                "Liquidated notional by base asset and side (USD/s)",
                "Across exchanges.",
                [
                    (
                        f"sum by (base, side) (rate({m.LIQUIDATED_NOTIONAL}{{{MKT}}}[{RI}]))",
                        "{{base}} {{side}}",
                    )
                ],
                "currencyUSD",
            ),
            Panel(
                "Spike detector: 5 m rate vs its 1 h baseline",
                f"The LiquidationSpike alert fires when the 5 m rate exceeds {t.liquidation_spike_factor:g}x the "
                f"1 h average and {t.liquidation_spike_min_usd_per_second:g} USD/s.",
                [
                    (f'{LIQ_RATE_EXCHANGE}{{exchange=~"$exchange",base=~"$base"}}', "{{exchange}} {{base}} 5m rate"),
                    (
                        f'{t.liquidation_spike_factor:g} * {LIQ_RATE_BASELINE}{{exchange=~"$exchange",base=~"$base"}}',
                        "{{exchange}} {{base}} spike level",
                    ),
                ],
                "currencyUSD",
                width=24,
            ),
        ],
    )


def _ai(cfg: MixinConfig) -> dict[str, Any]:
    t = cfg.thresholds
    sc = f'job="{cfg.sidecar_job}"'
    return _dashboard(
        cfg,
        "ai",
        "The AI sidecar: predicted probability of a large liquidation event per base asset, its confidence, "
        "cost, latency and how well past predictions scored.",
        [
            Panel(
                "AI risk probability",
                "Probability of a large liquidation event within the horizon; "
                f"alert above {t.ai_risk_probability:.0%}.",
                [(f'{m.AI_RISK_PROBABILITY}{{base=~"$base"}}', "{{base}} {{horizon}} {{calibration}} ({{model}})")],
                "percentunit",
                thresholds=[("green", None), ("red", t.ai_risk_probability)],
                threshold_style="dashed",
                min=0,
                max=1,
            ),
            Panel(
                "Confidence",
                "The model's stated confidence in its answer.",
                [(f'{m.AI_CONFIDENCE}{{base=~"$base"}}', "{{base}} ({{model}})")],
                "percentunit",
                min=0,
                max=1,
            ),
            Panel(
                "Risk level",
                "Current level per base asset and model (low, medium, high, critical).",
                [(f'{m.AI_RISK_LEVEL}{{base=~"$base"}} == 1', "{{base}} {{horizon}} {{model}}: {{level}}")],
                "none",
                kind="table",
                instant=True,
            ),
            Panel(
                "Model latency",
                "50th and 90th percentile of model call duration.",
                [
                    (
                        f"histogram_quantile(0.5, {LATENCY})",
                        "p50 {{model}}",
                    ),
                    (
                        f"histogram_quantile(0.9, {LATENCY})",
                        "p90 {{model}}",
                    ),
                ],
                "s",
            ),
            Panel(
                "Cost (USD per hour)",
                "Spend at the configured token prices.",
                [(f"sum by (model) (rate({m.AI_COST}[{RI}])) * 3600", "{{model}}")],
                "currencyUSD",
            ),
            Panel(
                "Tokens per second",
                "Prompt and completion tokens.",
                [(f"sum by (model, kind) (rate({m.AI_TOKENS}[{RI}]))", "{{model}} {{kind}}")],
                "short",
            ),
            Panel(
                "Model calls",
                "Calls to each model per second.",
                [(f"sum by (model) (rate({m.AI_REQUESTS}[{RI}]))", "{{model}}")],
                "reqps",
            ),
            Panel(
                "Failed model calls",
                f"Failures per second by reason; AiSidecarFailing fires above {t.ai_failure_ratio:.0%} of calls.",
                [(f"sum by (model, reason) (rate({m.AI_REQUEST_FAILURES}[{RI}]))", "{{model}} {{reason}}")],
                "reqps",
            ),
            Panel(
                "Skill against climatology (rolling window)",
                "Brier skill score: 1 - Brier / Brier of always answering the observed base rate. Above 0 the "
                "model adds information; AiModelNoSkill fires when raw and calibrated stay below 0 for "
                f"{cfg.durations.ai_no_skill}.",
                [(f'{m.AI_BRIER_SKILL}{{window="rolling"}}', "{{model}} {{horizon}} {{calibration}}")],
                "none",
                thresholds=[("red", None), ("green", 0)],
                threshold_style="dashed",
            ),
            Panel(
                "Prediction scores: Brier and log loss (rolling window)",
                "Brier score and log loss of the raw and the calibrated probabilities (lower is better).",
                [
                    (f'{m.AI_BRIER}{{window="rolling"}}', "Brier {{model}} {{horizon}} {{calibration}}"),
                    (f'{m.AI_LOG_LOSS}{{window="rolling"}}', "log loss {{model}} {{horizon}} {{calibration}}"),
                ],
                "none",
                min=0,
            ),
            Panel(
                "Precision, recall, F1 at the alert threshold",
                f"Of the predictions at or above {t.ai_risk_probability:.0%} (AiRiskHigh's threshold), the share "
                "followed by an event (precision); of the events, the share predicted (recall); their harmonic "
                "mean (F1). Rolling window.",
                [
                    (f'{m.AI_F1}{{window="rolling"}}', "F1 {{model}} {{horizon}} {{calibration}}"),
                    (f'{m.AI_PRECISION}{{window="rolling"}}', "precision {{model}} {{horizon}} {{calibration}}"),
                    (f'{m.AI_RECALL}{{window="rolling"}}', "recall {{model}} {{horizon}} {{calibration}}"),
                ],
                "percentunit",
                min=0,
                max=1,
            ),
            Panel(
                "Calibration: calibrated minus raw probability",
                "How far each model's recalibration (isotonic, fitted on its scored history per base asset and "
                "horizon) moves its probability; 0 until enough predictions are scored. Below 0 the model "
                "overstates the risk. The reliability diagram: fr-exporter evaluate --plot.",
                [
                    (
                        f'({m.AI_RISK_PROBABILITY}{{calibration="calibrated",base=~"$base"}} or ignoring (calibration) '
                        f'{m.AI_RISK_PROBABILITY}{{calibration="raw",base=~"$base"}}) - ignoring (calibration) '
                        f'{m.AI_RISK_PROBABILITY}{{calibration="raw",base=~"$base"}}',
                        "{{base}} {{horizon}} ({{model}})",
                    )
                ],
                "percentunit",
                min=-1,
                max=1,
            ),
            Panel(
                "Scored predictions",
                "Past predictions scored against the events that followed (the skill panels need 30).",
                [(m.AI_SCORED.name, "{{model}} {{horizon}}")],
                "short",
            ),
            Panel(
                "Age of the last valid answer",
                f"Seconds since the last valid model answer; AiSidecarStale fires above {t.ai_stale_seconds:g} s.",
                [(f"time() - {m.AI_LAST_SUCCESS}", "{{model}}")],
                "s",
                thresholds=[("green", None), ("red", t.ai_stale_seconds)],
                threshold_style="dashed",
            ),
            Panel(
                "Sidecar up",
                "Prometheus scrape of the sidecar.",
                [(f"up{{{sc}}}", "{{instance}}")],
                "none",
                kind="stat",
                width=12,
                height=8,
                extra_defaults={
                    "mappings": [{"type": "value", "options": {"0": {"text": "down"}, "1": {"text": "up"}}}]
                },
            ),
        ],
    )


def _health(cfg: MixinConfig) -> dict[str, Any]:
    t = cfg.thresholds
    ex = 'exchange=~"$exchange"'
    updown = {
        "mappings": [
            {"type": "value", "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}
        ],
        "color": {"mode": "thresholds"},
    }
    return _dashboard(
        cfg,
        "health",
        "Is the exporter scraped, are the exchange streams connected and fresh, how many errors.",
        [
            Panel(
                "Scrape targets up",
                "Prometheus `up` for the exporter and the AI sidecar.",
                [(f'up{{job=~"{cfg.exporter_job}|{cfg.sidecar_job}"}}', "{{job}} {{instance}}")],
                "none",
                kind="state-timeline",
                thresholds=[("red", None), ("green", 1)],
                extra_defaults=updown,
            ),
            Panel(
                f"Exchange streams up ({m.UP})",
                "1 when the exchange's streams are connected and fresh.",
                [(f"{m.UP}{{{ex}}}", "{{exchange}}")],
                "none",
                kind="state-timeline",
                thresholds=[("red", None), ("green", 1)],
                extra_defaults=updown,
            ),
            Panel(
                "Stream messages per second",
                "WebSocket messages received per exchange and stream.",
                [
                    (
                        f"sum by (exchange, stream) (rate({m.STREAM_MESSAGES}{{{ex}}}[{RI}]))",
                        "{{exchange}} {{stream}}",
                    )
                ],
                "mps",
            ),
            Panel(
                "Age of the last stream message",
                f"ExchangeStreamStale fires above {t.stream_stale_seconds:g} s.",
                [(f"time() - {m.STREAM_LAST_MESSAGE}{{{ex}}}", "{{exchange}} {{stream}}")],
                "s",
                thresholds=[("green", None), ("red", t.stream_stale_seconds)],
                threshold_style="dashed",
            ),
            Panel(
                "Reconnects",
                "WebSocket reconnects per rate interval.",
                [
                    (
                        f"sum by (exchange, stream) (increase({m.STREAM_RECONNECTS}{{{ex}}}[{RI}]))",
                        "{{exchange}} {{stream}}",
                    )
                ],
                "short",
            ),
            Panel(
                "Parse errors per second",
                "Frames that could not be parsed (malformed, truncated or unknown).",
                [(f"sum by (exchange, stream) (rate({m.PARSE_ERRORS}{{{ex}}}[{RI}]))", "{{exchange}} {{stream}}")],
                "cps",
            ),
            Panel(
                "REST requests per second",
                "Backfill and polling requests per exchange and endpoint.",
                [
                    (
                        f"sum by (exchange, endpoint) (rate({m.REST_REQUESTS}{{{ex}}}[{RI}]))",
                        "{{exchange}} {{endpoint}}",
                    )
                ],
                "reqps",
            ),
            Panel(
                "REST errors per second",
                "Failed REST requests (HTTP errors, 429, timeouts).",
                [
                    (
                        f"sum by (exchange, endpoint) (rate({m.REST_FAILURES}{{{ex}}}[{RI}]))",
                        "{{exchange}} {{endpoint}}",
                    )
                ],
                "reqps",
            ),
            Panel(
                "Resident memory",
                "Resident memory of the exporter and the AI sidecar (process_resident_memory_bytes); "
                "the README quotes 126 MB at 2,000 instruments.",
                [
                    (
                        f'process_resident_memory_bytes{{job=~"{cfg.exporter_job}|{cfg.sidecar_job}"}}',
                        "{{job}} {{instance}}",
                    )
                ],
                "bytes",
            ),
            Panel(
                "CPU",
                "CPU time per second (1 = one core) of the exporter and the AI sidecar.",
                [
                    (
                        f'rate(process_cpu_seconds_total{{job=~"{cfg.exporter_job}|{cfg.sidecar_job}"}}[{RI}])',
                        "{{job}} {{instance}}",
                    )
                ],
                "percentunit",
            ),
            Panel(
                "Build",
                "Exporter version, git revision and Python version.",
                [(m.BUILD_INFO.name, "{{version}} {{revision}} Python {{python_version}}")],
                "none",
                kind="table",
                width=24,
                height=5,
                instant=True,
            ),
        ],
    )


def _term(cfg: MixinConfig) -> dict[str, Any]:
    t = cfg.thresholds
    sel = 'exchange=~"$exchange",base=~"$base"'
    perp_ann = f"{m.FUNDING_RATE_ANNUALIZED}{{{sel}}}"
    # The curve: per point the same labels on x and y (the merge joins on them; no __name__, job...):
    # the futures with an annualised basis, and the perpetual at day 0 (its annualised funding),
    # labelled expiry="perpetual".
    by = "max by (exchange, base, instrument, expiry)"
    as_perp = f'{by} (label_replace({{}}, "expiry", "perpetual", "", ""))'
    dated = f"{m.BASIS_ANNUALIZED}{{{sel}}}"
    curve_x = f"{by} ({m.FUTURE_DAYS}{{{sel}}} and on (exchange, instrument) {dated}) or " + as_perp.format(
        f"0 * {perp_ann}"
    )
    curve_y = f"{by} ({dated}) or " + as_perp.format(perp_ann)
    ann_lines = [("red", None), ("green", -t.basis_annualized), ("red", t.basis_annualized)]
    div_lines = [("red", None), ("green", -t.implied_divergence_bp), ("red", t.implied_divergence_bp)]
    curve_units = [("Value #A", "suffix: d")]  # the x axis: days to expiry
    # the table: one column per figure, the same labels on each (no __name__, job...) so they merge
    row = "max by (exchange, base, quote, instrument, expiry)"
    table_columns = [
        (m.FUTURE_DAYS, "days to expiry"),
        (m.BASIS, "basis"),
        (m.BASIS_ANNUALIZED, "annualised basis"),
        (m.IMPLIED_FUNDING, "implied funding"),
        (m.IMPLIED_MINUS_ACTUAL, "implied minus actual"),
    ]
    table_units = [
        ("Value #A", "suffix: d"),
        ("Value #B", "percentunit"),
        ("Value #C", "percentunit"),
        ("Value #D", "percentunit"),
        ("Value #E", "suffix: bp"),
    ]
    return _dashboard(
        cfg,
        "term",
        "Dated futures beside the perpetuals: annualised basis against days to expiry, the per-8 h funding the "
        "curve implies against the perpetual's, and the contracts followed (docs/term-structure.md).",
        [
            Panel(
                "Curve: annualised basis against days to expiry",
                "The curve of $base, one line per exchange: its dated futures at their days to expiry (x) and "
                "annualised basis (y), the perpetual's annualised funding at day 0. Contracts under a day to "
                f"expiry have no annualised figure. FuturesBasisExtreme fires beyond ±{t.basis_annualized:.0%} a year.",
                [(curve_x, "{{exchange}} {{instrument}}"), (curve_y, "{{exchange}} {{instrument}}")],
                "percentunit",
                kind="xychart",
                width=24,  # the row: Grafana shares it among the repeats (two per row)
                height=10,
                instant=True,
                options={
                    # every frame (one per exchange, see the transformations) is a series: x days, y basis
                    "mapping": "auto",
                    "series": [
                        {
                            "x": {"matcher": {"id": "byName", "options": "Value #A"}},
                            "y": {"matcher": {"id": "byName", "options": "Value #B"}},
                        }
                    ],
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "single", "sort": "none"},
                },
                extra_defaults={
                    "custom": {"show": "points+lines", "pointSize": {"fixed": 7}, "lineWidth": 2},
                    "displayName": "${__field.labels.exchange}",
                },
                # one panel per base ("All" repeats it); pluginVersion: the options are the current
                # schema, not one to migrate (Grafana migrates xychart options of unversioned panels)
                extra={"repeat": "base", "repeatDirection": "h", "maxPerRow": 2, "pluginVersion": "11.6.0"},
            ),
            Panel(
                "Annualised basis over time",
                "(F - S) / S x 365 / days to expiry per contract; lines: the alert threshold (either sign).",
                [(f"{m.BASIS_ANNUALIZED}{{{sel}}}", "{{exchange}} {{instrument}}")],
                "percentunit",
                thresholds=ann_lines,
                threshold_style="dashed",
            ),
            Panel(
                "Implied against actual funding (per 8 h)",
                "The per-8 h funding each contract implies until expiry, and the perpetual's current rate per 8 h.",
                [
                    (f"{m.IMPLIED_FUNDING}{{{sel}}}", "implied {{exchange}} {{instrument}}"),
                    (f"{FUNDING_8H}{{{sel}}}", "actual {{exchange}} {{instrument}}"),
                ],
                "percentunit",
            ),
            Panel(
                "Implied minus actual funding",
                "Basis points per 8 h; ImpliedFundingDivergence fires beyond "
                f"±{t.implied_divergence_bp:g} bp. Positive: the curve pays more than the perpetual.",
                [(f"{m.IMPLIED_MINUS_ACTUAL}{{{sel}}}", "{{exchange}} {{instrument}}")],
                "suffix: bp",
                thresholds=div_lines,
                threshold_style="dashed",
            ),
            Panel(
                "Contracts followed",
                "One row per dated future: days to expiry (FutureRollWindow under "
                f"{t.roll_days:g} days), basis, annualised basis, implied funding per 8 h, implied minus actual.",
                [(f"{row} ({d.name}{{{sel}}})", legend) for d, legend in table_columns],
                "none",
                kind="table",
                width=24,
                height=10,
                instant=True,
                extra_defaults={},
                options={"showHeader": True, "sortBy": [{"displayName": "days to expiry", "desc": False}]},
            ),
        ],
        overrides={"Contracts followed": table_units, "Curve: annualised basis against days to expiry": curve_units},
        transformations={
            # one table (x and y joined on the labels), sorted by days (a line joins the points in row
            # order), then one frame per exchange: one line each
            "Curve: annualised basis against days to expiry": [
                {"id": "merge", "options": {}},
                {"id": "sortBy", "options": {"sort": [{"field": "Value #A", "desc": False}]}},
                {
                    "id": "partitionByValues",
                    "options": {"fields": ["exchange"], "keepFields": False, "naming": {"asLabels": True}},
                },
            ],
            # one row per contract (the columns carry the same labels: merged), named columns
            "Contracts followed": [
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {f"Value #{chr(65 + i)}": c for i, (_, c) in enumerate(table_columns)},
                    },
                },
            ],
        },
    )


def _feed(cfg: MixinConfig) -> dict[str, Any]:
    t = cfg.thresholds
    ex = 'exchange=~"$exchange"'
    lag = f"sum by (exchange, le) (rate({m.STREAM_EVENT_LAG}_bucket{{{ex}}}[{RI}]))"
    return _dashboard(
        cfg,
        "feed",
        "How late and how complete each exchange's data is: event lag (exchange stamp to receipt, corrected "
        "by the measured clock offset), clock offset and round trips, 24 h completeness, gaps, reconnects, "
        "parse errors; and the AI model's request latency.",
        [
            Panel(
                "Event lag p50 / p95 / p99 per exchange",
                "The latency table: quantiles of the delay from the exchange's event time to receipt. "
                f"FeedLagHigh fires when a stream's p99 stays above {t.feed_lag_p99_seconds:g} s.",
                [(f"histogram_quantile({q}, {lag})", f"{{{{exchange}}}} p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
                "s",
                thresholds=[("green", None), ("red", t.feed_lag_p99_seconds)],
                threshold_style="dashed",
                width=24,
            ),
            Panel(
                "Event lag now (table)",
                "p50 / p95 / p99 over the last rate interval, per exchange.",
                [
                    (
                        f"histogram_quantile({q}, sum by (exchange, le) "
                        f"(rate({m.STREAM_EVENT_LAG}_bucket{{{ex}}}[{RI}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                "s",
                kind="table",
                instant=True,
            ),
            Panel(
                "Exchange clock offset",
                "Exchange clock minus ours from the server-time endpoint (NTP-style); lags are corrected by it.",
                [(f"{m.EXCHANGE_CLOCK_OFFSET}{{{ex}}}", "{{exchange}}")],
                "s",
            ),
            Panel(
                "Round trips",
                "Server-time REST round trip and websocket ping round trip.",
                [
                    (f"{m.EXCHANGE_RTT}{{{ex}}}", "{{exchange}} REST"),
                    (f"{m.STREAM_PING_RTT}{{{ex}}}", "{{exchange}} {{stream}} ping"),
                ],
                "s",
            ),
            Panel(
                "Completeness over 24 h",
                f"Share of the last 24 h each stream spoke within its cadence; FeedCompletenessLow below "
                f"{t.feed_completeness_min:.0%}.",
                [(f"{FEED_COMPLETENESS}{{{ex}}}", "{{exchange}} {{stream}}")],
                "percentunit",
                thresholds=[("red", None), ("green", t.feed_completeness_min)],
                threshold_style="dashed",
                max=1,
            ),
            Panel(
                "Gaps",
                "Seconds of silence beyond the cadence per rate interval (disconnects, stalls).",
                [(f"sum by (exchange, stream) (increase({m.STREAM_GAP}{{{ex}}}[{RI}]))", "{{exchange}} {{stream}}")],
                "s",
            ),
            Panel(
                "Missed funding settlements",
                "Settlement times that passed unseen (stream away, not in the history), per rate interval.",
                [(f"sum by (exchange) (increase({m.FUNDING_SETTLEMENTS_MISSED}{{{ex}}}[{RI}]))", "{{exchange}}")],
                "short",
            ),
            Panel(
                "Reconnects and parse errors",
                "WebSocket reconnects and unparsable frames per rate interval.",
                [
                    (f"sum by (exchange) (increase({m.STREAM_RECONNECTS}{{{ex}}}[{RI}]))", "{{exchange}} reconnects"),
                    (f"sum by (exchange) (increase({m.PARSE_ERRORS}{{{ex}}}[{RI}]))", "{{exchange}} parse errors"),
                ],
                "short",
            ),
            Panel(
                "AI model request latency p50 / p95 / p99",
                f"The sidecar's model calls ({m.AI_REQUEST_DURATION}, per attempt).",
                [(f"histogram_quantile({q}, {LATENCY})", f"{{{{model}}}} p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
                "s",
            ),
        ],
    )


def dashboards(cfg: MixinConfig) -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model."""
    return {
        "fr-funding-overview.json": _funding(cfg),
        "fr-positions-risk.json": _positions(cfg),
        "fr-liquidations.json": _liquidations(cfg),
        "fr-ai-risk.json": _ai(cfg),
        "fr-exporter-health.json": _health(cfg),
        "fr-term-structure.json": _term(cfg),
        "fr-feed-quality.json": _feed(cfg),
    }
