"""`promtool test rules` cases for every alert: one where it fires and one where it must not.

Inputs, eval times, expected label sets, descriptions and values are written here by hand; the
summary, runbook_url and dashboard_url are rendered from the alert's own templates by
:func:`_render_labels` (which only knows ``{{ $labels.x }}``), so a wrong label in a link template
still fails the test. ``python -m mixin.generate`` writes the result to prometheus/tests/.
"""

from __future__ import annotations

import re
from typing import Any

from exporter.metrics import catalog as m
from mixin.config import MixinConfig
from mixin.rules import alerts

_LABEL = re.compile(r"\{\{ \$labels\.([a-z_]+) \}\}")


def _render_labels(template: str, labels: dict[str, str]) -> str:
    out = _LABEL.sub(lambda m: labels.get(m.group(1), ""), template)
    if "{{" in out:
        raise ValueError(f"template needs more than label substitution: {template!r}")
    return out


class _Spec:
    def __init__(self, cfg: MixinConfig) -> None:
        self.cfg = cfg
        self.by_key = {(a.name, a.severity): a for group in alerts(cfg).values() for a in group}

    def exp(self, name: str, severity: str, labels: dict[str, str], description: str, value: str) -> dict[str, Any]:
        a = self.by_key[(name, severity)]
        rule = a.rule(self.cfg)
        ann = rule["annotations"]
        return {
            "exp_labels": {**labels, **rule["labels"]},
            "exp_annotations": {
                "summary": _render_labels(ann["summary"], labels),
                "description": description,
                "value": value,
                "runbook_url": ann["runbook_url"],
                "dashboard_url": _render_labels(ann["dashboard_url"], labels),
            },
        }


def _s(metric: m.MetricDef | str, labels: dict[str, str], values: str) -> dict[str, str]:
    """An input series; ``metric``: a catalog family, or the name of another series (``up``)."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def _none(at: str, name: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": []}


def tests(cfg: MixinConfig) -> list[dict[str, Any]]:
    """The test groups. They assume the shipped thresholds and durations (checked by the caller)."""
    sp = _Spec(cfg)
    bin_btc = {"base": "BTC", "exchange": "binance", "instrument": "BTCUSDT", "quote": "USDT"}
    byb_eth = {"base": "ETH", "exchange": "bybit", "instrument": "ETHUSDT", "quote": "USDT"}
    okx_eth = {"base": "ETH", "exchange": "okx", "instrument": "ETH-USDT-SWAP", "quote": "USDT"}
    der_btc = {"base": "BTC", "exchange": "deribit", "instrument": "BTC-PERPETUAL", "quote": "USD"}
    thr = "(threshold ±{}, held 5m)."

    def fund(labels: dict[str, str], value: str, level: str) -> str:
        t = {"warning": "0.05 %", "critical": "0.08 %", "emergency": "0.12 %"}[level]
        return (
            f"{labels['exchange']} {labels['instrument']} ({labels['base']}) funding is {value} per 8 h-equivalent "
            + thr.format(t)
        )

    groups: list[dict[str, Any]] = []

    # --- funding levels: normalisation to 8 h and either sign --------------------------------
    groups.append(
        {
            "name": "funding levels use the 8 h-equivalent rate, either sign",
            "interval": "1m",
            "input_series": [
                _s(m.FUNDING_RATE, bin_btc, "0.0013x15"),  # 0.13 % per 8 h: all three levels
                _s(m.FUNDING_INTERVAL, bin_btc, "28800x15"),
                _s(m.FUNDING_RATE, byb_eth, "0.0003x15"),  # 4 h interval: 0.06 % per 8 h -> warning
                _s(m.FUNDING_INTERVAL, byb_eth, "14400x15"),
                _s(m.FUNDING_RATE, okx_eth, "-0.0009x15"),  # negative: warning + critical
                _s(m.FUNDING_INTERVAL, okx_eth, "28800x15"),
                _s(m.FUNDING_RATE, der_btc, "0.00025x15"),  # calm
                _s(m.FUNDING_INTERVAL, der_btc, "28800x15"),
            ],
            "promql_expr_test": [
                {
                    "expr": "fr:funding_rate_8h:ratio",
                    "eval_time": "1m",
                    "exp_samples": [
                        {"labels": "fr:funding_rate_8h:ratio" + _s("", bin_btc, "")["series"], "value": 0.0013},
                        {"labels": "fr:funding_rate_8h:ratio" + _s("", byb_eth, "")["series"], "value": 0.0006},
                        {"labels": "fr:funding_rate_8h:ratio" + _s("", okx_eth, "")["series"], "value": -0.0009},
                        {"labels": "fr:funding_rate_8h:ratio" + _s("", der_btc, "")["series"], "value": 0.00025},
                    ],
                }
            ],
            "alert_rule_test": [
                _none("4m", "FundingRateWarning"),  # pending: `for: 5m` not yet held
                {
                    "eval_time": "6m",
                    "alertname": "FundingRateWarning",
                    "exp_alerts": [
                        sp.exp("FundingRateWarning", "warning", bin_btc, fund(bin_btc, "0.13%", "warning"), "0.13%"),
                        sp.exp("FundingRateWarning", "warning", byb_eth, fund(byb_eth, "0.06%", "warning"), "0.06%"),
                        sp.exp("FundingRateWarning", "warning", okx_eth, fund(okx_eth, "-0.09%", "warning"), "-0.09%"),
                    ],
                },
                {
                    "eval_time": "6m",
                    "alertname": "FundingRateCritical",
                    "exp_alerts": [
                        sp.exp("FundingRateCritical", "critical", bin_btc, fund(bin_btc, "0.13%", "critical"), "0.13%"),
                        sp.exp(
                            "FundingRateCritical", "critical", okx_eth, fund(okx_eth, "-0.09%", "critical"), "-0.09%"
                        ),
                    ],
                },
                {
                    "eval_time": "6m",
                    "alertname": "FundingRateEmergency",
                    "exp_alerts": [
                        sp.exp(
                            "FundingRateEmergency", "emergency", bin_btc, fund(bin_btc, "0.13%", "emergency"), "0.13%"
                        ),
                    ],
                },
            ],
        }
    )
    groups.append(
        {
            "name": "funding just inside the thresholds never fires",
            "interval": "1m",
            "input_series": [
                _s(m.FUNDING_RATE, bin_btc, "0.00049x30"),
                _s(m.FUNDING_INTERVAL, bin_btc, "28800x30"),
                _s(m.FUNDING_RATE, okx_eth, "-0.00079x30"),  # past warning only
                _s(m.FUNDING_INTERVAL, okx_eth, "28800x30"),
                _s(m.FUNDING_RATE, byb_eth, "0.00059x30"),  # 4 h: 0.118 % per 8 h, below emergency
                _s(m.FUNDING_INTERVAL, byb_eth, "14400x30"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "FundingRateWarning",
                    "exp_alerts": [
                        sp.exp("FundingRateWarning", "warning", byb_eth, fund(byb_eth, "0.118%", "warning"), "0.118%"),
                        sp.exp(
                            "FundingRateWarning", "warning", okx_eth, fund(okx_eth, "-0.079%", "warning"), "-0.079%"
                        ),
                    ],
                },
                {
                    "eval_time": "20m",
                    "alertname": "FundingRateCritical",
                    "exp_alerts": [
                        sp.exp(
                            "FundingRateCritical", "critical", byb_eth, fund(byb_eth, "0.118%", "critical"), "0.118%"
                        ),
                    ],
                },
                _none("20m", "FundingRateEmergency"),
            ],
        }
    )

    groups.append(
        {
            "name": "funding between warning and critical fires only the warning",
            "interval": "1m",
            "input_series": [
                _s(m.FUNDING_RATE, okx_eth, "-0.00079x30"),
                _s(m.FUNDING_INTERVAL, okx_eth, "28800x30"),
                _s(m.FUNDING_RATE, byb_eth, "0.00039x30"),  # 4 h: 0.078 % per 8 h
                _s(m.FUNDING_INTERVAL, byb_eth, "14400x30"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "FundingRateWarning",
                    "exp_alerts": [
                        sp.exp("FundingRateWarning", "warning", byb_eth, fund(byb_eth, "0.078%", "warning"), "0.078%"),
                        sp.exp(
                            "FundingRateWarning", "warning", okx_eth, fund(okx_eth, "-0.079%", "warning"), "-0.079%"
                        ),
                    ],
                },
                _none("20m", "FundingRateCritical"),
                _none("20m", "FundingRateEmergency"),
            ],
        }
    )

    # --- z-score, edge, spread ------------------------------------------------------------------
    def z(labels: dict[str, str], v: str) -> dict[str, Any]:
        d = f"{labels['exchange']} {labels['instrument']} funding z-score is {v} (|z| > 2.5 for 15m)."
        return sp.exp("FundingZScoreExtreme", "warning", labels, d, v)

    groups.append(
        {
            "name": "z-score beyond 2.5 either sign, sustained",
            "interval": "1m",
            "input_series": [
                _s(m.FUNDING_ZSCORE, bin_btc, "3x20"),
                _s(m.FUNDING_ZSCORE, okx_eth, "-3.1x20"),
                _s(m.FUNDING_ZSCORE, byb_eth, "2.4x20"),
                _s(m.FUNDING_ZSCORE, der_btc, "0 3 0 3 0 3 0 3 0 3 0 3 0 3 0 3 0 3 0 3"),  # flapping: not sustained
            ],
            "alert_rule_test": [
                _none("10m", "FundingZScoreExtreme"),
                {
                    "eval_time": "16m",
                    "alertname": "FundingZScoreExtreme",
                    "exp_alerts": [z(bin_btc, "3.00"), z(okx_eth, "-3.10")],
                },
            ],
        }
    )
    edge = {**bin_btc, "side": "short"}
    groups.append(
        {
            "name": "edge below zero for 30m",
            "interval": "1m",
            "input_series": [
                _s(m.EDGE, edge, "2 2 -1.5x40"),
                _s(m.EDGE, {**okx_eth, "side": "long"}, "0.5x42"),
                _s(m.EDGE, {**der_btc, "side": "short"}, "3.9x10 4x30"),  # entry threshold 4 bp from 11m
            ],
            "alert_rule_test": [
                _none("20m", "CarryEdgeAboveEntry"),  # 4 bp since 11 m: not yet held 15 m
                {
                    "eval_time": "27m",
                    "alertname": "CarryEdgeAboveEntry",
                    "exp_alerts": [
                        sp.exp(
                            "CarryEdgeAboveEntry",
                            "info",
                            {**der_btc, "side": "short"},
                            "Edge for the short side of deribit BTC-PERPETUAL is 4 bp per interval after fees "
                            "(at or above the entry threshold 4 bp for 15m).",
                            "4 bp",
                        )
                    ],
                },
                _none("20m", "EdgeTurnedNegative"),
                {
                    "eval_time": "35m",
                    "alertname": "EdgeTurnedNegative",
                    "exp_alerts": [
                        sp.exp(
                            "EdgeTurnedNegative",
                            "warning",
                            edge,
                            "Edge for the short side of binance BTCUSDT is -1.5 bp per interval after fees "
                            "(below 0 bp for 30m).",
                            "-1.5 bp",
                        )
                    ],
                },
            ],
        }
    )
    # --- factor signals --------------------------------------------------------------------------
    w1, w4 = {"window": "1h"}, {"window": "4h"}
    groups.append(
        {
            "name": "open-interest surge and price volatility over 1 h (the 4 h window does not fire them)",
            "interval": "1m",
            "input_series": [
                _s(m.OPEN_INTEREST_CHANGE, {**bin_btc, **w1}, "0.1x5 0.25x30"),  # surging from 6m
                _s(m.OPEN_INTEREST_CHANGE, {**bin_btc, **w4}, "0.5x35"),  # the 4 h change is not the alert's
                _s(m.OPEN_INTEREST_CHANGE, {**okx_eth, **w1}, "0.2x35"),  # at the threshold: not above
                _s(m.PRICE_VOLATILITY, {**byb_eth, **w1}, "0.01x5 0.04x30"),  # volatile from 6m
                _s(m.PRICE_VOLATILITY, {**byb_eth, **w4}, "0.08x35"),
                _s(m.PRICE_VOLATILITY, {**der_btc, **w1}, "0.029x35"),
            ],
            "alert_rule_test": [
                _none("9m", "OpenInterestSurge"),  # above since 6m: not yet held 5m
                {
                    "eval_time": "12m",
                    "alertname": "OpenInterestSurge",
                    "exp_alerts": [
                        sp.exp(
                            "OpenInterestSurge",
                            "warning",
                            {**bin_btc, **w1},
                            "Open interest of binance BTCUSDT rose 25% in the last hour (above 20 % for 5m): "
                            "fresh leverage is piling in; a crowded side is what a cascade liquidates.",
                            "25%",
                        )
                    ],
                },
                _none("14m", "PriceVolatilityHigh"),  # above since 6m: not yet held 10m
                {
                    "eval_time": "17m",
                    "alertname": "PriceVolatilityHigh",
                    "exp_alerts": [
                        sp.exp(
                            "PriceVolatilityHigh",
                            "warning",
                            {**byb_eth, **w1},
                            "Realised volatility of the bybit ETHUSDT mark over the last hour is 4% (1-minute "
                            "returns, not annualised; above 3 % for 10m): liquidation distances shrink in moves of "
                            "this size.",
                            "4%",
                        )
                    ],
                },
            ],
        }
    )

    def ls(labels: dict[str, str], v: str) -> dict[str, Any]:
        d = (
            f"The long/short account ratio of {labels['exchange']} {labels['instrument']} is {v} "
            "(above 1.5 or below 1/1.5 for 30m): most accounts are on one side."
        )
        return sp.exp("LongShortImbalance", "info", labels, d, v)

    groups.append(
        {
            "name": "long/short imbalance either way, sustained",
            "interval": "1m",
            "input_series": [
                _s(m.LONG_SHORT_RATIO, bin_btc, "1.6x40"),
                _s(m.LONG_SHORT_RATIO, okx_eth, "0.6x40"),  # below 1/1.5 = 0.667
                _s(m.LONG_SHORT_RATIO, byb_eth, "1.45x40"),  # inside the band
                _s(m.LONG_SHORT_RATIO, der_btc, "0.7x40"),  # above 1/1.5: inside
            ],
            "alert_rule_test": [
                _none("25m", "LongShortImbalance"),
                {
                    "eval_time": "35m",
                    "alertname": "LongShortImbalance",
                    "exp_alerts": [ls(bin_btc, "1.60"), ls(okx_eth, "0.60")],
                },
            ],
        }
    )

    def acc(labels: dict[str, str], v: str) -> dict[str, Any]:
        d = (
            f"The funding of {labels['exchange']} {labels['instrument']} is beyond the warning level (±0.05 % per 8 h) "
            f"and still accelerating: {v} per 8 h between the last settlements (beyond ±0.03 % for 15m)."
        )
        return sp.exp("FundingAccelerating", "warning", labels, d, v)

    groups.append(
        {
            "name": "funding accelerating while beyond the warning level, either sign, per 8 h",
            "interval": "1m",
            "input_series": [
                # 8 h instrument: funding 0.06 % per 8 h, accelerating 0.04 % per 8 h -> fires
                _s(m.FUNDING_RATE, bin_btc, "0.0006x30"),
                _s(m.FUNDING_INTERVAL, bin_btc, "28800x30"),
                _s(m.FUNDING_ACCELERATION, bin_btc, "0.0004x30"),
                # 1 h instrument: -0.0001 per hour = -0.08 % per 8 h; acceleration -0.00005 per hour = -0.04 %
                _s(m.FUNDING_RATE, okx_eth, "-0.0001x30"),
                _s(m.FUNDING_INTERVAL, okx_eth, "3600x30"),
                _s(m.FUNDING_ACCELERATION, okx_eth, "-0.00005x30"),
                # accelerating, but funding below the warning level: no alert
                _s(m.FUNDING_RATE, byb_eth, "0.0002x30"),
                _s(m.FUNDING_INTERVAL, byb_eth, "28800x30"),
                _s(m.FUNDING_ACCELERATION, byb_eth, "0.001x30"),
                # funding high, but decelerating (acceleration against its sign): no alert
                _s(m.FUNDING_RATE, der_btc, "0.001x30"),
                _s(m.FUNDING_INTERVAL, der_btc, "28800x30"),
                _s(m.FUNDING_ACCELERATION, der_btc, "-0.0005x30"),
            ],
            "alert_rule_test": [
                _none("10m", "FundingAccelerating"),
                {
                    "eval_time": "20m",
                    "alertname": "FundingAccelerating",
                    "exp_alerts": [acc(bin_btc, "0.04%"), acc(okx_eth, "-0.04%")],
                },
            ],
        }
    )
    spread = {"base": "BTC", "long_exchange": "okx", "short_exchange": "binance"}
    groups.append(
        {
            "name": "funding spread wide (informational)",
            "interval": "1m",
            "input_series": [
                _s(m.FUNDING_SPREAD, spread, "12x40"),
                _s(m.FUNDING_SPREAD, {"base": "ETH", "long_exchange": "bybit", "short_exchange": "okx"}, "5x40"),
            ],
            "alert_rule_test": [
                _none("20m", "FundingSpreadWide"),
                {
                    "eval_time": "35m",
                    "alertname": "FundingSpreadWide",
                    "exp_alerts": [
                        sp.exp(
                            "FundingSpreadWide",
                            "info",
                            spread,
                            "Short BTC on binance and long on okx earns 12 bp per 8 h after fees "
                            "(above 10 bp for 30m).",
                            "12 bp",
                        )
                    ],
                },
            ],
        }
    )

    # --- positions -------------------------------------------------------------------------------
    pos_a = {"exchange": "binance", "instrument": "BTCUSDT", "position": "carry-btc", "side": "short"}
    pos_b = {"exchange": "okx", "instrument": "ETH-USDT-SWAP", "position": "carry-eth", "side": "short"}
    pos_c = {"exchange": "bybit", "instrument": "ETHUSDT", "position": "hedge-eth", "side": "long"}

    def gap(labels: dict[str, str], v: str, severity: str) -> dict[str, Any]:
        limit = "10" if severity == "warning" else "5"
        action = cfg.guards.liq_gap_warning if severity == "warning" else cfg.guards.liq_gap_critical
        d = (
            f"Position {labels['position']} ({labels['side']} {labels['exchange']} {labels['instrument']}) is "
            f"{v} % from its liquidation price (below {limit} %). Risk rule: {action}."
        )
        return sp.exp("LiquidationGapLow", severity, labels, d, f"{v} %")

    groups.append(
        {
            "name": "positions: projected APY, liquidation gap, hit probability, ADL rank",
            "interval": "1m",
            "input_series": [
                _s(m.NET_APY, {**pos_a, "basis": "projected"}, "-2.5x40"),
                _s(m.NET_APY, {**pos_a, "basis": "realized"}, "-10x40"),  # realised loss alone: no alert
                _s(m.NET_APY, {**pos_b, "basis": "projected"}, "8x40"),
                _s(m.LIQ_GAP, pos_a, "8x40"),
                _s(m.LIQ_GAP, pos_b, "4x40"),
                _s(m.LIQ_GAP, pos_c, "20x40"),
                _s(m.LIQ_HIT_PROBABILITY, {**pos_a, "horizon": "1h"}, "0.05x40"),
                _s(m.LIQ_HIT_PROBABILITY, {**pos_a, "horizon": "8h"}, "0.4x40"),
                _s(m.ADL_RANK, pos_a, "3x40"),
                _s(m.ADL_RANK, pos_b, "2x40"),
                _s(m.NET_APY, {**pos_b, "basis": "realized"}, "3x80"),  # realised gain: no alert
                _s(m.NET_APY, {**pos_c, "basis": "realized"}, "-5x80"),  # a realised loss held an hour
                _s(m.MARGIN_BUFFER, pos_a, "0.1x40"),  # below 0.15
                _s(m.MARGIN_BUFFER, pos_b, "0.15x40"),  # at the limit: no alert
                _s(m.MARGIN_BUFFER, pos_c, "0.6x40"),
                # a's short would not survive a +6.2 % rise (from 10 m on); b survives; c not, for 10 m only
                _s(m.HISTORICAL_WORST_MOVE, {**pos_a, "window": "5m"}, "0.062x40"),
                _s(m.HISTORICAL_STRESS_SURVIVES, {**pos_a, "window": "5m"}, "1x9 0x30"),
                _s(m.HISTORICAL_WORST_MOVE, {**pos_b, "window": "5m"}, "0.05x40"),
                _s(m.HISTORICAL_STRESS_SURVIVES, {**pos_b, "window": "5m"}, "1x40"),
                _s(m.HISTORICAL_WORST_MOVE, {**pos_c, "window": "5m"}, "-0.08x40"),
                _s(m.HISTORICAL_STRESS_SURVIVES, {**pos_c, "window": "5m"}, "1x4 0x9 1x26"),
            ],
            "alert_rule_test": [
                _none("20m", "NetApyNegative"),
                {
                    "eval_time": "35m",
                    "alertname": "NetApyNegative",
                    "exp_alerts": [
                        sp.exp(
                            "NetApyNegative",
                            "warning",
                            {**pos_a, "basis": "projected"},
                            "Projected net APY of carry-btc (binance BTCUSDT) is -2.5 % at the current funding rate "
                            f"(below 0 %). Risk rule: {cfg.guards.net_apy_negative}.",
                            "-2.5 %",
                        )
                    ],
                },
                _none("0m", "LiquidationGapLow"),
                {
                    "eval_time": "2m",
                    "alertname": "LiquidationGapLow",
                    "exp_alerts": [gap(pos_a, "8", "warning"), gap(pos_b, "4", "warning"), gap(pos_b, "4", "critical")],
                },
                _none("3m", "LiquidationHitProbabilityHigh"),
                {
                    "eval_time": "6m",
                    "alertname": "LiquidationHitProbabilityHigh",
                    "exp_alerts": [
                        sp.exp(
                            "LiquidationHitProbabilityHigh",
                            "warning",
                            {**pos_a, "horizon": "8h"},
                            "Probability that binance BTCUSDT touches the liquidation price of carry-btc within 8h "
                            "is 40% (above 25 %).",
                            "40%",
                        )
                    ],
                },
                _none("4m", "MarginBufferLow"),
                {
                    "eval_time": "6m",
                    "alertname": "MarginBufferLow",
                    "exp_alerts": [
                        sp.exp(
                            "MarginBufferLow",
                            "warning",
                            pos_a,
                            "Margin buffer (equity - maintenance margin) / equity of carry-btc (short binance "
                            f"BTCUSDT) is 10% (below 15 %). Recommended: {cfg.guards.margin_buffer_low}.",
                            "10%",
                        )
                    ],
                },
                _none("20m", "HistoricalStressNotSurvived"),  # a: 0 from 10 m, held 15 m
                {
                    "eval_time": "30m",
                    "alertname": "HistoricalStressNotSurvived",
                    "exp_alerts": [
                        sp.exp(
                            "HistoricalStressNotSurvived",
                            "warning",
                            {**pos_a, "window": "5m"},
                            "A repeat of the worst 5m move of the binance BTCUSDT mark in the trailing history "
                            "(6.2%) would liquidate carry-btc (short) from the current mark. "
                            f"Recommended: {cfg.guards.historical_stress}.",
                            "6.2%",
                        )
                    ],
                },
                _none("50m", "NetApyRealizedNegative"),  # held 1 h before it fires
                {
                    "eval_time": "65m",
                    "alertname": "NetApyRealizedNegative",
                    "exp_alerts": [  # pos_a's realised loss ended at 40 m; pos_b's is a gain
                        sp.exp(
                            "NetApyRealizedNegative",
                            "warning",
                            {**pos_c, "basis": "realized"},
                            "Realised net APY of hedge-eth (bybit ETHUSDT) since it opened is -5 % (below 0 %). "
                            f"Risk rule: {cfg.guards.net_apy_realized_negative}.",
                            "-5 %",
                        )
                    ],
                },
                _none("3m", "AdlRankHigh"),
                {
                    "eval_time": "6m",
                    "alertname": "AdlRankHigh",
                    "exp_alerts": [
                        sp.exp(
                            "AdlRankHigh",
                            "warning",
                            pos_a,
                            "ADL rank of carry-btc (binance BTCUSDT) is 3 of 4 (at or above 3).",
                            "3",
                        )
                    ],
                },
            ],
        }
    )

    # --- liquidations ----------------------------------------------------------------------------
    liq_bin = {"base": "BTC", "exchange": "binance", "instrument": "BTCUSDT", "side": "long"}
    liq_byb = {"base": "ETH", "exchange": "bybit", "instrument": "ETHUSDT", "side": "short"}
    groups.append(
        {
            "name": "liquidation spike: far above its own 1h baseline and above the floor",
            "interval": "1m",
            "input_series": [
                # 100 USD/s for an hour, then 100 000 USD/s
                _s(m.LIQUIDATED_NOTIONAL, liq_bin, "0+6000x60 6360000+6000000x15"),
                # nothing, then 1 000 USD/s: many times its baseline but under the 50 000 USD/s floor
                _s(m.LIQUIDATED_NOTIONAL, liq_byb, "0x60 60000+60000x15"),
            ],
            "promql_expr_test": [
                {
                    "expr": "fr:liquidated_notional_usd:rate5m",
                    "eval_time": "30m",
                    "exp_samples": [
                        {"labels": "fr:liquidated_notional_usd:rate5m" + _s("", liq_bin, "")["series"], "value": 100},
                        {"labels": "fr:liquidated_notional_usd:rate5m" + _s("", liq_byb, "")["series"], "value": 0},
                    ],
                }
            ],
            "alert_rule_test": [
                _none("60m", "LiquidationSpike"),
                {
                    "eval_time": "70m",
                    "alertname": "LiquidationSpike",
                    "exp_alerts": [
                        sp.exp(
                            "LiquidationSpike",
                            "warning",
                            {"base": "BTC", "exchange": "binance"},
                            "binance is liquidating 100k USD/s of BTC positions (5m rate), more than 5x its 1h "
                            "average and above 50000 USD/s.",
                            "100k USD/s",
                        )
                    ],
                },
            ],
        }
    )

    # --- AI sidecar --------------------------------------------------------------------------------
    ai_btc = {"base": "BTC", "horizon": "8h", "model": "baseline"}
    sidecar = {"job": cfg.sidecar_job}
    groups.append(
        {
            "name": "AI risk probability above 0.7, sustained; the calibrated value wins once it exists",
            "interval": "1m",
            "input_series": [
                _s(m.AI_RISK_PROBABILITY, {**ai_btc, "calibration": "raw"}, "0.8x20"),
                _s(m.AI_RISK_PROBABILITY, {**ai_btc, "base": "ETH", "calibration": "raw"}, "0.5x20"),
                # SOL: the raw 0.9 is overconfident; calibrated it is 0.3, and the alert follows that
                _s(m.AI_RISK_PROBABILITY, {**ai_btc, "base": "SOL", "calibration": "raw"}, "0.9x20"),
                _s(m.AI_RISK_PROBABILITY, {**ai_btc, "base": "SOL", "calibration": "calibrated"}, "0.3x20"),
                # XRP: raw 0.5 under the threshold, calibrated 0.85 above it
                _s(m.AI_RISK_PROBABILITY, {**ai_btc, "base": "XRP", "calibration": "raw"}, "0.5x20"),
                _s(m.AI_RISK_PROBABILITY, {**ai_btc, "base": "XRP", "calibration": "calibrated"}, "0.85x20"),
            ],
            "alert_rule_test": [
                _none("5m", "AiRiskHigh"),
                {
                    "eval_time": "15m",
                    "alertname": "AiRiskHigh",
                    "exp_alerts": [
                        sp.exp(
                            "AiRiskHigh",
                            "warning",
                            {**ai_btc, "calibration": "raw"},
                            "baseline puts the probability of a large BTC liquidation event within 8h at 80% (raw) "
                            "(above 70 % for 10m).",
                            "80%",
                        ),
                        sp.exp(
                            "AiRiskHigh",
                            "warning",
                            {**ai_btc, "base": "XRP", "calibration": "calibrated"},
                            "baseline puts the probability of a large XRP liquidation event within 8h at 85% "
                            "(calibrated) (above 70 % for 10m).",
                            "85%",
                        ),
                    ],
                },
            ],
        }
    )
    skill = {**sidecar, "horizon": "15m"}

    def bss(model: str, window: str, calibration: str, values: str) -> dict[str, str]:
        return _s(m.AI_BRIER_SKILL, {**skill, "model": model, "window": window, "calibration": calibration}, values)

    groups.append(
        {
            "name": "AI model without skill: negative rolling skill, raw and calibrated, for an hour",
            "interval": "5m",
            "input_series": [
                # gpt: negative raw and calibrated skill -> fires after 1h
                bss("gpt", "rolling", "raw", "-0.2x30"),
                bss("gpt", "rolling", "calibrated", "-0.05x30"),
                bss("gpt", "all", "raw", "0.1x30"),  # since start it was fine: only the rolling window counts
                # baseline: raw is negative but calibration recovers the information -> no alert
                bss("baseline", "rolling", "raw", "-0.3x30"),
                bss("baseline", "rolling", "calibrated", "0.15x30"),
                # small: negative for only 30 minutes, then positive -> no alert
                bss("small", "rolling", "raw", "-0.1x6 0.05x24"),
            ],
            "alert_rule_test": [
                _none("50m", "AiModelNoSkill"),
                {
                    "eval_time": "65m",
                    "alertname": "AiModelNoSkill",
                    "exp_alerts": [
                        sp.exp(
                            "AiModelNoSkill",
                            "info",
                            {**skill, "model": "gpt"},
                            "Over the rolling window the Brier skill score of gpt at horizon 15m is -0.05: always "
                            "answering the observed base rate would have scored better, raw or calibrated. Its "
                            "probabilities carry no information yet.",
                            "-0.05",
                        )
                    ],
                },
            ],
        }
    )
    stale_model = {**sidecar, "model": "gpt"}
    groups.append(
        {
            "name": "AI sidecar stale, AI calls failing",
            "interval": "1m",
            "input_series": [
                _s(m.AI_LAST_SUCCESS, stale_model, "0x40"),  # never succeeded since t=0
                _s(m.AI_LAST_SUCCESS, {**sidecar, "model": "baseline"}, "0+60x40"),  # fresh
                _s(m.AI_REQUESTS, stale_model, "0+10x40"),
                _s(m.AI_REQUEST_FAILURES, {**stale_model, "reason": "timeout"}, "0+8x40"),
                _s(m.AI_REQUESTS, {**sidecar, "model": "baseline"}, "0+10x40"),
                _s(m.AI_REQUEST_FAILURES, {**sidecar, "model": "baseline", "reason": "schema"}, "0+1x40"),
            ],
            "alert_rule_test": [
                _none("20m", "AiSidecarStale"),
                {
                    "eval_time": "36m",
                    "alertname": "AiSidecarStale",
                    "exp_alerts": [
                        sp.exp(
                            "AiSidecarStale",
                            "warning",
                            stale_model,
                            "Last valid answer from gpt was 36m 0s ago (limit 1800 s).",
                            "36m 0s",
                        )
                    ],
                },
                _none("10m", "AiSidecarFailing"),
                {
                    "eval_time": "20m",
                    "alertname": "AiSidecarFailing",
                    "exp_alerts": [
                        sp.exp(
                            "AiSidecarFailing",
                            "warning",
                            stale_model,
                            "80% of the calls to gpt failed over the last 15m (above 50 %).",
                            "80%",
                        )
                    ],
                },
            ],
        }
    )

    # --- exporter health ---------------------------------------------------------------------------
    job = {"job": cfg.exporter_job}
    inst = {**job, "instance": "exporter:9466"}
    groups.append(
        {
            "name": "exporter never scraped: absent(up) fires",
            "interval": "1m",
            "input_series": [],
            "alert_rule_test": [
                _none("4m", "ExporterDown"),
                {
                    "eval_time": "6m",
                    "alertname": "ExporterDown",
                    "exp_alerts": [
                        sp.exp(
                            "ExporterDown",
                            "critical",
                            job,
                            "Prometheus has no target of job fr-exporter for 5m (it is absent from the scrape targets: "
                            "check the scrape configuration or service discovery).",
                            "no target",
                        )
                    ],
                },
            ],
        }
    )
    groups.append(
        {
            "name": "exporter scrape failing: up == 0 fires, up == 1 does not",
            "interval": "1m",
            "input_series": [
                _s("up", inst, "1x5 0x10"),
                _s("up", {"job": cfg.sidecar_job, "instance": "sidecar:9467"}, "0x15"),  # another job: not ours
            ],
            "alert_rule_test": [
                _none("8m", "ExporterDown"),
                {
                    "eval_time": "12m",
                    "alertname": "ExporterDown",
                    "exp_alerts": [
                        sp.exp(
                            "ExporterDown",
                            "critical",
                            inst,
                            "Prometheus has had no successful scrape of fr-exporter at exporter:9466 for 5m (up = 0).",
                            "up = 0",
                        )
                    ],
                },
            ],
        }
    )
    # --- term structure: annualised basis, implied-vs-actual funding, roll window ------------
    okx_q = {"base": "BTC", "exchange": "okx", "expiry": "2026-03-27", "instrument": "BTC-USD-260327", "quote": "USD"}
    bin_q = {"base": "BTC", "exchange": "binance", "expiry": "2026-06-26", "instrument": "BTCUSDT_260626",
             "quote": "USDT"}  # fmt: skip
    der_q = {"base": "ETH", "exchange": "deribit", "expiry": "2026-03-27", "instrument": "ETH-27MAR26", "quote": "USD"}

    def basis_desc(q: dict[str, str], v: str) -> str:
        return (
            f"{q['exchange']} {q['instrument']} ({q['base']}, expiry {q['expiry']}) trades at an annualised basis "
            f"of {v} (threshold ±10 % a year, held 15m)."
        )

    def div_desc(q: dict[str, str], v: str) -> str:
        return (
            f"The funding {q['exchange']} {q['instrument']} (expiry {q['expiry']}) implies differs from the "
            f"{q['base']} perpetual's by {v} bp per 8 h (threshold ±10 bp, held 15m)."
        )

    groups.append(
        {
            "name": "term structure: basis, implied funding and roll window, either side of the thresholds",
            "interval": "1m",
            "input_series": [
                _s(m.BASIS_ANNUALIZED, okx_q, "0.15x30"),  # 15 %/yr: fires after 15 m
                _s(m.BASIS_ANNUALIZED, der_q, "-0.12x30"),  # backwardation counts too
                _s(m.BASIS_ANNUALIZED, bin_q, "0.099x30"),  # just inside
                _s(m.IMPLIED_MINUS_ACTUAL, okx_q, "12x30"),
                _s(m.IMPLIED_MINUS_ACTUAL, bin_q, "-9.5x30"),  # inside
                _s(m.FUTURE_DAYS, okx_q, "9.5-0.001x30"),  # under 10 days
                _s(m.FUTURE_DAYS, bin_q, "45x30"),
            ],
            "alert_rule_test": [
                _none("14m", "FuturesBasisExtreme"),  # pending: `for: 15m` not yet held
                {
                    "eval_time": "16m",
                    "alertname": "FuturesBasisExtreme",
                    "exp_alerts": [
                        sp.exp("FuturesBasisExtreme", "warning", der_q, basis_desc(der_q, "-12%"), "-12%"),
                        sp.exp("FuturesBasisExtreme", "warning", okx_q, basis_desc(okx_q, "15%"), "15%"),
                    ],
                },
                _none("14m", "ImpliedFundingDivergence"),
                {
                    "eval_time": "16m",
                    "alertname": "ImpliedFundingDivergence",
                    "exp_alerts": [
                        sp.exp("ImpliedFundingDivergence", "warning", okx_q, div_desc(okx_q, "12"), "12 bp"),
                    ],
                },
                _none("4m", "FutureRollWindow"),
                {
                    "eval_time": "6m",
                    "alertname": "FutureRollWindow",
                    "exp_alerts": [
                        sp.exp(
                            "FutureRollWindow",
                            "info",
                            okx_q,
                            "okx BTC-USD-260327 (BTC) delivers on 2026-03-27, in 9.494 days (roll window: under "
                            "10 days). Positions in it roll now or are delivered.",
                            "9.494 days",
                        )
                    ],
                },
            ],
        }
    )
    groups.append(
        {
            "name": "term structure: calm curve never fires",
            "interval": "1m",
            "input_series": [
                _s(m.BASIS_ANNUALIZED, okx_q, "0.05x40"),
                _s(m.IMPLIED_MINUS_ACTUAL, okx_q, "3x40"),
                _s(m.FUTURE_DAYS, okx_q, "40x40"),
            ],
            "alert_rule_test": [
                _none("30m", "FuturesBasisExtreme"),
                _none("30m", "ImpliedFundingDivergence"),
                _none("30m", "FutureRollWindow"),
            ],
        }
    )
    down = {**inst, "exchange": "okx"}
    stream = {**inst, "exchange": "bybit", "stream": "tickers"}
    groups.append(
        {
            "name": "exchange stream down and stale",
            "interval": "1m",
            "input_series": [
                _s(m.UP, down, "0x10"),
                _s(m.UP, {**inst, "exchange": "binance"}, "1x10"),
                _s(m.STREAM_LAST_MESSAGE, stream, "0x10"),  # stuck since t=0
                _s(
                    m.STREAM_LAST_MESSAGE,
                    {**inst, "exchange": "binance", "stream": "markPrice"},
                    "0+60x10",
                ),
            ],
            "alert_rule_test": [
                _none("1m", "ExchangeStreamDown"),
                {
                    "eval_time": "3m",
                    "alertname": "ExchangeStreamDown",
                    "exp_alerts": [
                        sp.exp(
                            "ExchangeStreamDown",
                            "critical",
                            down,
                            f"The exporter's streams to okx are disconnected or silent ({m.UP} = 0 for 2m); "
                            "its funding and liquidation series are absent.",
                            "0",
                        )
                    ],
                },
                _none("4m", "ExchangeStreamStale"),
                {
                    "eval_time": "6m",
                    "alertname": "ExchangeStreamStale",
                    "exp_alerts": [
                        sp.exp(
                            "ExchangeStreamStale",
                            "warning",
                            stream,
                            "Last message on bybit tickers was 6m 0s ago (limit 120 s).",
                            "6m 0s",
                        )
                    ],
                },
            ],
        }
    )
    groups.extend(_duplicate_and_shard_groups(cfg, sp, fund))
    groups.extend(_feed_groups(sp))
    return groups


def _duplicate_and_shard_groups(cfg: MixinConfig, sp: _Spec, fund: Any) -> list[dict[str, Any]]:
    """Two exporters publishing one instrument (HA pair, resharding overlap) and missing shards."""
    job = {"job": cfg.exporter_job}
    a = {**job, "instance": "exporter-a:9466"}
    b = {**job, "instance": "exporter-b:9466"}
    bin_btc = {"base": "BTC", "exchange": "binance", "instrument": "BTCUSDT", "quote": "USDT"}
    okx_eth = {"base": "ETH", "exchange": "okx", "instrument": "ETH-USDT-SWAP", "quote": "USDT"}
    liq = {"base": "BTC", "exchange": "binance", "instrument": "BTCUSDT", "side": "long"}
    ha_pair = {
        "name": "an HA pair: every series twice (instance a and b), one result per instrument",
        "interval": "1m",
        "input_series": [
            # the two replicas received the rate at different moments: 3/2048 and 2/2048 (binary
            # fractions, so the average 2.5/2048 = 0.1221 % compares exactly)
            _s(m.FUNDING_RATE, {**bin_btc, **a}, "0.00146484375x15"),
            _s(m.FUNDING_RATE, {**bin_btc, **b}, "0.0009765625x15"),
            _s(m.FUNDING_INTERVAL, {**bin_btc, **a}, "28800x15"),
            _s(m.FUNDING_INTERVAL, {**bin_btc, **b}, "28800x15"),
            _s(m.FUNDING_RATE, {**okx_eth, **a}, "0.00006103515625x15"),  # calm (2^-14), one replica only
            _s(m.FUNDING_INTERVAL, {**okx_eth, **a}, "28800x15"),
            # both replicas count the same liquidations: 100 USD/s, not 200
            _s(m.LIQUIDATED_NOTIONAL, {**liq, **a}, "0+6000x15"),
            _s(m.LIQUIDATED_NOTIONAL, {**liq, **b}, "0+6000x15"),
            _s(m.LIQUIDATIONS, {**liq, **a}, "0+1x15"),
            _s(m.LIQUIDATIONS, {**liq, **b}, "0+1x15"),
            _s(m.SHARD_INFO, {**a, "index": "0", "count": "1"}, "1x15"),
            _s(m.SHARD_INFO, {**b, "index": "0", "count": "1"}, "1x15"),
        ],
        "promql_expr_test": [
            {
                "expr": "fr:funding_rate_8h:ratio",
                "eval_time": "10m",
                "exp_samples": [
                    {"labels": "fr:funding_rate_8h:ratio" + _s("", bin_btc, "")["series"], "value": 0.001220703125},
                    {"labels": "fr:funding_rate_8h:ratio" + _s("", okx_eth, "")["series"], "value": 0.00006103515625},
                ],
            },
            {
                "expr": "fr:liquidated_notional_usd:rate5m",
                "eval_time": "10m",
                "exp_samples": [
                    {"labels": "fr:liquidated_notional_usd:rate5m" + _s("", liq, "")["series"], "value": 100}
                ],
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": "FundingRateWarning",
                "exp_alerts": [
                    sp.exp("FundingRateWarning", "warning", bin_btc, fund(bin_btc, "0.1221%", "warning"), "0.1221%"),
                ],
            },
            {
                "eval_time": "10m",
                "alertname": "FundingRateCritical",
                "exp_alerts": [
                    sp.exp("FundingRateCritical", "critical", bin_btc, fund(bin_btc, "0.1221%", "critical"), "0.1221%"),
                ],
            },
            {
                "eval_time": "10m",
                "alertname": "FundingRateEmergency",
                "exp_alerts": [
                    sp.exp(
                        "FundingRateEmergency", "emergency", bin_btc, fund(bin_btc, "0.1221%", "emergency"), "0.1221%"
                    ),
                ],
            },
            _none("14m", "ShardOverlap"),  # replicas of one shard are not an overlap
            _none("14m", "ShardMissing"),
        ],
    }
    # Resharding from 2 to 3 shards left half done: the new shard 0/3 and the old 0/2 both publish BTC.
    s02 = {**job, "instance": "shard-0-of-2:9466"}
    s12 = {**job, "instance": "shard-1-of-2:9466"}
    s03 = {**job, "instance": "shard-0-of-3:9466"}
    liq_eth = {**liq, "base": "ETH", "instrument": "ETHUSDT"}
    overlap = {
        "name": "shards overlap: one instrument from two different shards",
        "interval": "1m",
        "input_series": [
            _s(m.SHARD_INFO, {**s02, "index": "0", "count": "2"}, "1x30"),
            _s(m.SHARD_INFO, {**s12, "index": "1", "count": "2"}, "1x30"),
            _s(m.SHARD_INFO, {**s03, "index": "0", "count": "3"}, "1x30"),
            _s(m.LIQUIDATIONS, {**liq, **s02}, "0x30"),
            _s(m.LIQUIDATIONS, {**liq, **s03}, "0x30"),
            _s(m.LIQUIDATIONS, {**liq_eth, **s12}, "0x30"),  # ETH from one shard only
        ],
        "alert_rule_test": [
            _none("10m", "ShardOverlap"),  # a rollout overlaps briefly
            {
                "eval_time": "20m",
                "alertname": "ShardOverlap",
                "exp_alerts": [
                    sp.exp(
                        "ShardOverlap",
                        "warning",
                        {"exchange": "binance", "instrument": "BTCUSDT"},
                        "binance BTCUSDT comes from 2 different shards (index/count) for 15m: the shards disagree "
                        "on the shard count or a resharding was left half done. Rules and alerts deduplicate, but "
                        "sums on dashboards count it twice.",
                        "2 shards",
                    )
                ],
            },
        ],
    }
    # Three shards configured, shard 2 never came up; shard 0 runs as an HA pair (counts once).
    shards = [({**job, "instance": f"shard-{i}:9466"}, str(i)) for i in (0, 1)]
    shards.append(({**job, "instance": "shard-0-replica:9466"}, "0"))
    missing = {
        "name": "a shard is missing: 2 of 3 shard indices report",
        "interval": "1m",
        "input_series": [
            *(_s(m.SHARD_INFO, {**labels, "index": i, "count": "3"}, "1x20") for labels, i in shards),
            # a complete set elsewhere: 2 of 2, and an unsharded exporter
            _s(m.SHARD_INFO, {"job": "other", "instance": "x:1", "index": "0", "count": "2"}, "1x20"),
            _s(m.SHARD_INFO, {"job": "other", "instance": "y:1", "index": "1", "count": "2"}, "1x20"),
            _s(m.SHARD_INFO, {"job": "single", "instance": "z:1", "index": "0", "count": "1"}, "1x20"),
        ],
        "alert_rule_test": [
            _none("5m", "ShardMissing"),
            {
                "eval_time": "15m",
                "alertname": "ShardMissing",
                "exp_alerts": [
                    sp.exp(
                        "ShardMissing",
                        "critical",
                        {**job, "count": "3"},
                        f"2 of 3 shards of {cfg.exporter_job} report {m.SHARD_INFO} (for 10m); the base assets of "
                        "the others have no funding or liquidation series and no alerts.",
                        "2 shards",
                    )
                ],
            },
        ],
    }
    return [ha_pair, overlap, missing]


def _feed_groups(sp: _Spec) -> list[dict[str, Any]]:
    """FeedCompletenessLow and FeedLagHigh, each both ways (one stream fires, one does not)."""
    bad = {"exchange": "binance", "stream": "markPrice"}
    good = {"exchange": "okx", "stream": "public"}
    hourly = "0+3600x30"  # expected seconds: one hour per hour
    completeness = {
        "name": "feed completeness over 24 h",
        "interval": "1h",
        "input_series": [
            _s(m.STREAM_EXPECTED, bad, hourly),
            _s(m.STREAM_GAP, bad, "0+72x30"),  # 2 % of each hour silent: 98 %
            _s(m.STREAM_EXPECTED, good, hourly),
            _s(m.STREAM_GAP, good, "0+18x30"),  # 0.5 %: 99.5 %, above the 99 % minimum
        ],
        "alert_rule_test": [
            _none("1h10m", "FeedCompletenessLow"),  # below since 1h, not yet for 15m
            {
                "eval_time": "25h",
                "alertname": "FeedCompletenessLow",
                "exp_alerts": [
                    sp.exp(
                        "FeedCompletenessLow",
                        "warning",
                        bad,
                        "binance markPrice spoke within its cadence only 98% of the last 24 h "
                        "(minimum 99 %): gaps from disconnects or stalls.",
                        "98%",
                    )
                ],
            },
        ],
    }

    def buckets(labels: dict[str, str], le_values: dict[str, str]) -> list[dict[str, str]]:
        return [_s(f"{m.STREAM_EVENT_LAG}_bucket", {**labels, "le": le}, v) for le, v in le_values.items()]

    late = {"exchange": "bybit", "stream": "tickers"}
    prompt = {"exchange": "deribit", "stream": "public"}
    lag = {
        "name": "feed lag p99",
        "interval": "1m",
        "input_series": [
            # every frame 1-2.5 s late: p99 = 1 + 0.99 * 1.5 = 2.485 s
            *buckets(late, {"0.1": "0x30", "1.0": "0x30", "2.5": "0+10x30", "+Inf": "0+10x30"}),
            # every frame 50-100 ms late: p99 about 0.1 s
            *buckets(prompt, {"0.1": "0+10x30", "1.0": "0+10x30", "2.5": "0+10x30", "+Inf": "0+10x30"}),
        ],
        "alert_rule_test": [
            _none("5m", "FeedLagHigh"),
            {
                "eval_time": "20m",
                "alertname": "FeedLagHigh",
                "exp_alerts": [
                    sp.exp(
                        "FeedLagHigh",
                        "warning",
                        late,
                        "The p99 delay from the exchange's event time to receipt on bybit tickers is 2.485s "
                        "(limit 1 s, held 10m).",
                        "2.485s",
                    )
                ],
            },
        ],
    }
    return [completeness, lag]


# promtool evaluates every rule at each evaluation_interval from 0 to a group's last eval_time (about 2 ms a
# step for the shipped rules): a 25 h group at 1 m cost 1,500 steps, 60 % of the file's CPU. Groups whose
# input series are sampled every 5 m or slower go to a second file evaluated every 5 m: still at least
# one evaluation per sample, and the `for:` of the alerts they test (15 m, 1 h) spans 3+ evaluations.
COARSE_EVALUATION = "5m"


def _coarse(group: dict[str, Any]) -> bool:
    interval = str(group["interval"])
    return interval.endswith(("h", "d")) or (interval.endswith("m") and int(interval[:-1]) >= 5)


def test_files(cfg: MixinConfig, rule_files: list[str]) -> dict[str, dict[str, Any]]:
    """File name -> promtool test file: groups of minute samples evaluated at 1 m, of slower ones at 5 m."""
    groups = tests(cfg)
    return {
        "fr-exporter.test.yml": {
            "rule_files": rule_files,
            "evaluation_interval": "1m",
            "tests": [g for g in groups if not _coarse(g)],
        },
        "fr-exporter.slow-series.test.yml": {
            "rule_files": rule_files,
            "evaluation_interval": COARSE_EVALUATION,
            "tests": [g for g in groups if _coarse(g)],
        },
    }
