"""A position's view: the pure function from a position and its inputs to the published record.

:func:`build_view` takes everything as arguments (mark, tiers, volatility, funding totals, carry
legs...) and returns an immutable :class:`PositionView`: liquidation price (the exchange's or
ours), gap, hit probabilities, stress, APY. No I/O, no clock, no state: the service gathers the
inputs, the collector (``metrics/positions.py``) and ``/api/state`` read the views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.analytics.carry import PerpLeg, leg_pnl, net_apy_projected_pct, net_apy_realized_pct, total_pnl
from exporter.analytics.risk import (
    LiqInput,
    Volatility,
    equity_usd,
    liq_gap_pct,
    liq_hit_probability,
    liquidation_price,
    maintenance_margin,
    margin_buffer_ratio,
    stress,
)
from exporter.analytics.stress import StressFigures
from exporter.model import Tier
from exporter.positions.ledger import Totals
from exporter.positions.model import Position


@dataclass(frozen=True, slots=True)
class StressView:
    shock_pct: float
    equity_usd: float
    survives: bool


@dataclass(frozen=True, slots=True)
class HistoricalStressView:
    """The worst adverse mark move of the trailing history over one window, and its outcome."""

    window: str  # label, e.g. "5m"
    move_ratio: float  # signed: < 0 for a long (a fall), > 0 for a short (a rise)
    survives: bool | None  # None: the liquidation price cannot be computed (no margin known)


@dataclass(frozen=True, slots=True)
class ParametricStressView:
    """The window move at a confidence under a law fitted to the same history's window returns."""

    window: str
    confidence: str  # label, e.g. "0.99"
    distribution: str  # "normal" | "student_t"
    move_ratio: float
    survives: bool | None


@dataclass(frozen=True, slots=True)
class PositionView:
    """Everything published for one position, computed at one moment."""

    position: str
    exchange: str
    instrument: str
    side: str
    source: str  # "config" | "account"
    size: float
    entry_price: float
    mark_price: float | None
    notional_usd: float | None
    liq_exchange: float | None
    liq_computed: float | None
    liq_gap_pct: float | None
    hit_probability: Mapping[str, float] = field(default_factory=dict)  # horizon label -> probability
    adl_rank: float | None = None
    adl_raw: float | None = None
    funding_pnl_usd: float = 0.0
    funding_received_usd: float = 0.0
    funding_paid_usd: float = 0.0
    settlements: int = 0
    apy_realized_pct: float | None = None
    apy_projected_pct: float | None = None
    locked_capital_usd: float | None = None
    stress: Sequence[StressView] = ()
    equity_usd: float | None = None  # margin + unrealised PnL at the mark
    maintenance_margin_usd: float | None = None
    margin_buffer_ratio: float | None = None  # (equity - maintenance) / equity
    basis_pnl_usd: float | None = None  # unrealised PnL of every leg at the live marks
    total_pnl_usd: float | None = None  # basis + net funding since opening - fees
    historical_stress: Sequence[HistoricalStressView] = ()
    parametric_stress: Sequence[ParametricStressView] = ()

    @property
    def labels(self) -> list[str]:
        return [self.position, self.exchange, self.instrument, self.side]

    @property
    def liquidation_price(self) -> float | None:
        return self.liq_exchange if self.liq_exchange is not None else self.liq_computed


@dataclass(frozen=True, slots=True)
class ViewSettings:
    hit_horizons_hours: Sequence[float]
    shocks_pct: Sequence[float]
    holding_period_hours: float
    points_bp: float = 0.0  # points per traded notional (bp per side), income on the opening trades
    stress_confidences: Sequence[float] = (0.99, 0.999)


@dataclass(frozen=True, slots=True)
class ViewInputs:
    """What the service gathered for one position at ``now``."""

    now: float
    opened: float  # start of the current opening (configured, exchange's, else first seen)
    mark: float | None  # live mark (None: stale/unknown)
    tiers: Sequence[Tier]
    taker_fee: float  # fraction, where the exchange's liquidation includes it (OKX), else 0
    volatility: Volatility | None
    funding: Totals  # ledger totals: net, received, paid, accruals
    net_since_opening: float  # funding accrued since ``opened`` (realised APY numerator)
    legs: Sequence[PerpLeg]  # carry legs at current rates; empty when a leg's rate/mark is unknown
    adl_rank: float | None
    # the hedge leg's live price (perp: its mark; spot: the main instrument's index); None: unknown
    hedge_mark: float | None = None
    # the instrument's historical stress figures per window (seconds); empty until its history is in
    history: Mapping[int, StressFigures] = field(default_factory=dict)


def horizon_label(hours: float) -> str:
    return f"{hours:g}h"


def window_label(seconds: int) -> str:
    """``300`` -> ``5m``, ``3600`` -> ``1h`` (the Prometheus duration spelling)."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def confidence_label(confidence: float) -> str:
    return f"{confidence:g}"


def _historical(
    p: Position, x: ViewInputs, s: ViewSettings, liq_in: LiqInput | None, liq: float | None
) -> tuple[tuple[HistoricalStressView, ...], tuple[ParametricStressView, ...]]:
    """Each window's worst and parametric moves for the position's side, and whether it survives
    them: the same rule as the instant shocks (``stress``: the moved mark against the liquidation
    price, i.e. equity above maintenance margin)."""
    side = p.side

    def survives(move: float) -> bool | None:
        if liq_in is None or x.mark is None:
            return None
        (r,) = stress(liq_in, x.mark, liq, [move * 100.0])
        return r.survives

    hist: list[HistoricalStressView] = []
    para: list[ParametricStressView] = []
    for w, fig in sorted(x.history.items()):
        label = window_label(w)
        worst = fig.worst_move(side)
        hist.append(HistoricalStressView(label, worst, survives(worst)))
        for fit in fig.fits:
            for c in s.stress_confidences:
                move = fit.move(side, c)
                para.append(ParametricStressView(label, confidence_label(c), fit.distribution, move, survives(move)))
    return tuple(hist), tuple(para)


def build_view(p: Position, x: ViewInputs, s: ViewSettings) -> PositionView:
    mark = x.mark
    liq_in = None
    liq_computed = None
    if p.margin_usd is not None and p.size > 0 and p.entry_price > 0:
        liq_in = LiqInput(
            p.exchange, p.side, p.size, p.entry_price, p.margin_usd, x.tiers, p.contract_size, x.taker_fee, p.inverse
        )
        liq_computed = liquidation_price(liq_in)
    liq = p.exchange_liq_price if p.exchange_liq_price is not None else liq_computed
    gap = liq_gap_pct(p.side, mark, liq) if mark is not None else None

    hit: dict[str, float] = {}
    # Published only when the liquidation price is known, or our formula ran and found none (a
    # position that cannot be liquidated: 0). Unknown (no figure, no margin to compute it) is absent.
    if mark is not None and x.volatility is not None and (liq is not None or liq_in is not None):
        for hours in s.hit_horizons_hours:
            prob = liq_hit_probability(p.side, mark, liq, x.volatility, hours * 3600.0)
            if prob is not None:
                hit[horizon_label(hours)] = prob

    stress_views: tuple[StressView, ...] = ()
    if liq_in is not None and mark is not None:
        stress_views = tuple(
            StressView(r.shock_pct, r.equity_usd, r.survives) for r in stress(liq_in, mark, liq, s.shocks_pct)
        )

    equity = maint = buffer = None
    if liq_in is not None and mark is not None:
        equity = equity_usd(liq_in, mark)
        maint = maintenance_margin(liq_in, mark)
        buffer = margin_buffer_ratio(equity, maint)

    capital = p.capital_usd()
    h = p.hedge
    # fees paid (a negative fee, a rebate, lowers them) minus points earned on the opening trades
    traded = p.size * p.entry_price + (h.size * h.entry_price if h is not None else 0.0)
    fees = p.fees_usd + (h.fees_usd if h is not None else 0.0) - s.points_bp * 1e-4 * traded
    apy_real = apy_proj = None
    if capital:
        apy_real = net_apy_realized_pct(x.net_since_opening, fees, p.gas_usd, p.borrow_apr, capital, x.now - x.opened)
        if x.legs:
            hold = s.holding_period_hours * 3600.0
            apy_proj = net_apy_projected_pct(x.legs, fees, p.gas_usd, p.borrow_apr, capital, hold)

    basis = total = None
    if mark is not None:
        basis = leg_pnl(p.side, p.size, p.entry_price, mark)
        if h is not None:  # a half-known carry would show the unhedged leg's PnL as the carry's
            basis = None if x.hedge_mark is None else basis + leg_pnl(h.side, h.size, h.entry_price, x.hedge_mark)
        if basis is not None:
            total = total_pnl(basis, x.net_since_opening, fees)

    hist_stress, para_stress = _historical(p, x, s, liq_in, liq)

    pnl, received, paid, n = x.funding
    return PositionView(
        position=p.name,
        exchange=p.exchange.value,
        instrument=p.instrument,
        side=p.side.value,
        source=p.source,
        size=p.size,
        entry_price=p.entry_price,
        mark_price=mark,
        notional_usd=p.size * mark if mark is not None else None,
        liq_exchange=p.exchange_liq_price,
        liq_computed=liq_computed,
        liq_gap_pct=gap,
        hit_probability=hit,
        adl_rank=x.adl_rank,
        adl_raw=p.adl_raw,
        funding_pnl_usd=pnl,
        funding_received_usd=received,
        funding_paid_usd=paid,
        settlements=n,
        apy_realized_pct=apy_real,
        apy_projected_pct=apy_proj,
        locked_capital_usd=capital,
        stress=stress_views,
        equity_usd=equity,
        maintenance_margin_usd=maint,
        margin_buffer_ratio=buffer,
        basis_pnl_usd=basis,
        total_pnl_usd=total,
        historical_stress=hist_stress,
        parametric_stress=para_stress,
    )


def api_row(v: PositionView) -> dict[str, Any]:
    """One row of /api/state "positions" (no secrets: only what /metrics shows)."""
    return {
        "position": v.position,
        "exchange": v.exchange,
        "instrument": v.instrument,
        "side": v.side,
        "source": v.source,
        "size": v.size,
        "entry_price": v.entry_price,
        "mark_price": v.mark_price,
        "notional_usd": v.notional_usd,
        "liquidation_price": v.liquidation_price,
        "liquidation_price_computed": v.liq_computed,
        "liquidation_price_source": "exchange"
        if v.liq_exchange is not None
        else ("computed" if v.liq_computed is not None else None),
        "liq_gap_pct": v.liq_gap_pct,
        "liq_hit_probability": dict(v.hit_probability),
        "adl_rank": v.adl_rank,
        "funding_pnl_usd": v.funding_pnl_usd,
        "funding_settlements": v.settlements,
        "net_apy_pct": {"realized": v.apy_realized_pct, "projected": v.apy_projected_pct},
        "locked_capital_usd": v.locked_capital_usd,
        "equity_usd": v.equity_usd,
        "maintenance_margin_usd": v.maintenance_margin_usd,
        "margin_buffer_ratio": v.margin_buffer_ratio,
        "basis_pnl_usd": v.basis_pnl_usd,
        "total_pnl_usd": v.total_pnl_usd,
        "stress": [{"shock_pct": s.shock_pct, "equity_usd": s.equity_usd, "survives": s.survives} for s in v.stress],
        "historical_stress": [
            {"window": h.window, "move_ratio": h.move_ratio, "survives": h.survives} for h in v.historical_stress
        ],
        "parametric_stress": [
            {
                "window": q.window,
                "confidence": q.confidence,
                "distribution": q.distribution,
                "move_ratio": q.move_ratio,
                "survives": q.survives,
            }
            for q in v.parametric_stress
        ],
    }
