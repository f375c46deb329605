"""Collector for positions and carry: liquidation distance, stress, hit probability, ADL, funding.

Reads the immutable snapshot of :class:`~exporter.positions.view.PositionView` the positions
service rebuilds on the event loop; a scrape never touches the service's mutable state or the
database.

Example exposition::

    fr_liquidation_price{position="carry-btc",exchange="binance",instrument="BTCUSDT",side="short",
                         source="computed"} 41234.5
    fr_liq_gap_pct{position="carry-btc",exchange="binance",instrument="BTCUSDT",side="short"} 37.2
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalog as m
from exporter.positions.view import PositionView, StressView

__all__ = ["PositionCollector", "PositionSource", "PositionView", "StressView"]

POSITION_LABELS = list(m.POSITION_LABELS)


class PositionSource(Protocol):
    def views(self) -> Sequence[PositionView]: ...

    def health(self) -> tuple[Mapping[str, int], Mapping[str, int], Mapping[tuple[str, str], int]]:
        """(config errors by field, account reads by exchange, failures by (exchange, reason))."""
        ...


def _fmt(v: float) -> str:
    return f"{v:g}"


class PositionCollector(Collector):
    """Per configured or account position (labels position, exchange, instrument, side).

    # HELP fr_liquidation_price Liquidation price of the position in quote currency. ...
    # TYPE fr_liquidation_price gauge
    fr_liquidation_price{exchange="binance",instrument="BTCUSDT",position="btc",side="short",source="computed"} 1e5
    # HELP fr_liq_gap_pct Distance from the live mark price to the liquidation price, percent of mark ...
    # TYPE fr_liq_gap_pct gauge
    fr_liq_gap_pct{exchange="binance",instrument="BTCUSDT",position="btc",side="short"} 19.4
    fr_liq_hit_probability{exchange="binance",horizon="8h",instrument="BTCUSDT",position="btc",side="short"} 0.003
    fr_adl_rank{...} 2.0                        (account positions with a read-only key)
    fr_funding_pnl_usd{...} 12.5                (+ fr_funding_received_usd_total, fr_funding_paid_usd_total)
    fr_net_apy_pct{basis="projected",...} 11.2  (and basis="realized" after an hour)
    fr_position_stress_equity_usd{...,shock_pct="-10",...} 8120.0, fr_position_stress_survives{...} 1.0
    fr_position_historical_worst_move_ratio{...,window="5m"} -0.031, fr_position_historical_stress_survives{...} 1.0
    fr_position_parametric_move_ratio{...,distribution="student_t",confidence="0.999",window="5m"} -0.018
    (+ fr_position_parametric_stress_survives)
    fr_position_size, fr_position_notional_usd, fr_position_locked_capital_usd,
    fr_position_funding_accruals_total, and health: fr_position_config_errors_total{field},
    fr_position_account_reads_total{exchange}, fr_position_account_read_failures_total{exchange,reason}
    """

    def __init__(self, source: PositionSource, stress_period_days: float = 30.0) -> None:
        self.source = source
        # the historical stress families' HELP says the period
        self.period = f"{stress_period_days:g} day" + ("" if stress_period_days == 1 else "s")

    def describe(self) -> Iterator[Metric]:
        yield from self._families(())

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.source.views(), health=True)

    def _families(self, views: Sequence[PositionView], health: bool = False) -> Iterator[Metric]:
        liq = m.LIQUIDATION_PRICE.gauge()
        gap = m.LIQ_GAP.gauge()
        hit = m.LIQ_HIT_PROBABILITY.gauge()
        adl = m.ADL_RANK.gauge()
        pnl = m.FUNDING_PNL.gauge()
        pnl_old = m.FUNDING_PNL_DEPRECATED.gauge()
        received = m.FUNDING_RECEIVED.counter()
        paid = m.FUNDING_PAID.counter()
        settled = m.FUNDING_ACCRUALS.counter()
        apy = m.NET_APY.gauge()
        stress_eq = m.STRESS_EQUITY.gauge()
        stress_ok = m.STRESS_SURVIVES.gauge()
        size = m.POSITION_SIZE.gauge()
        notional = m.POSITION_NOTIONAL.gauge()
        capital = m.LOCKED_CAPITAL.gauge()
        equity = m.POSITION_EQUITY.gauge()
        maint = m.POSITION_MAINTENANCE_MARGIN.gauge()
        buffer = m.MARGIN_BUFFER.gauge()
        basis = m.BASIS_PNL.gauge()
        total = m.TOTAL_PNL.gauge()
        worst = m.HISTORICAL_WORST_MOVE.gauge(period=self.period)
        worst_ok = m.HISTORICAL_STRESS_SURVIVES.gauge(period=self.period)
        para = m.PARAMETRIC_MOVE.gauge(period=self.period)
        para_ok = m.PARAMETRIC_STRESS_SURVIVES.gauge(period=self.period)
        for v in views:
            lab = v.labels
            # one series per position: the exchange's figure when known, else ours (api rows carry both)
            if v.liq_exchange is not None:
                liq.add_metric([*lab, "exchange"], v.liq_exchange)
            elif v.liq_computed is not None:
                liq.add_metric([*lab, "computed"], v.liq_computed)
            if v.liq_gap_pct is not None:
                gap.add_metric(lab, v.liq_gap_pct)
            for horizon, prob in v.hit_probability.items():
                hit.add_metric([*lab, horizon], prob)
            if v.adl_rank is not None:
                adl.add_metric(lab, v.adl_rank)
            pnl.add_metric(lab, v.funding_pnl_usd)
            pnl_old.add_metric(lab, v.funding_pnl_usd)
            received.add_metric(lab, v.funding_received_usd)
            paid.add_metric(lab, v.funding_paid_usd)
            settled.add_metric(lab, v.settlements)
            if v.apy_realized_pct is not None:
                apy.add_metric([*lab, "realized"], v.apy_realized_pct)
            if v.apy_projected_pct is not None:
                apy.add_metric([*lab, "projected"], v.apy_projected_pct)
            for s in v.stress:
                stress_eq.add_metric([*lab, _fmt(s.shock_pct)], s.equity_usd)
                stress_ok.add_metric([*lab, _fmt(s.shock_pct)], 1.0 if s.survives else 0.0)
            for h in v.historical_stress:
                worst.add_metric([*lab, h.window], h.move_ratio)
                if h.survives is not None:
                    worst_ok.add_metric([*lab, h.window], 1.0 if h.survives else 0.0)
            for q in v.parametric_stress:
                qlab = [*lab, q.window, q.confidence, q.distribution]
                para.add_metric(qlab, q.move_ratio)
                if q.survives is not None:
                    para_ok.add_metric(qlab, 1.0 if q.survives else 0.0)
            size.add_metric(lab, v.size)
            for fam, value in (
                (equity, v.equity_usd),
                (maint, v.maintenance_margin_usd),
                (buffer, v.margin_buffer_ratio),
                (basis, v.basis_pnl_usd),
                (total, v.total_pnl_usd),
            ):
                if value is not None:
                    fam.add_metric(lab, value)
            if v.notional_usd is not None:
                notional.add_metric(lab, v.notional_usd)
            if v.locked_capital_usd is not None:
                capital.add_metric(lab, v.locked_capital_usd)
        yield from (
            liq,
            gap,
            hit,
            adl,
            pnl,
            pnl_old,
            equity,
            maint,
            buffer,
            basis,
            total,
            received,
            paid,
            settled,
            apy,
            stress_eq,
            stress_ok,
            worst,
            worst_ok,
            para,
            para_ok,
            size,
            notional,
            capital,
        )

        errors = m.POSITION_CONFIG_ERRORS.counter()
        reads = m.ACCOUNT_READS.counter()
        failures = m.ACCOUNT_READ_FAILURES.counter()
        if health:
            by_field, by_exchange, by_failure = self.source.health()
            for f, n in sorted(by_field.items()):
                errors.add_metric([f], n)
            for ex, n in sorted(by_exchange.items()):
                reads.add_metric([ex], n)
            for (ex, reason), n in sorted(by_failure.items()):
                failures.add_metric([ex, reason], n)
        yield from (errors, reads, failures)
