"""Per-base views of the exporter's /api/state JSON (see docs/ARCHITECTURE.md).

The state is read defensively: a stale value is ``null`` and any field may be missing when the
exporter is older or newer than the sidecar; such values become ``None`` here, never zero.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _liq(block: Any, side: str) -> tuple[float, float]:
    """(count, notional_usd) of one side of a liquidations block; missing -> zeros."""
    if not isinstance(block, dict):
        return 0.0, 0.0
    s = block.get(side)
    if not isinstance(s, dict):
        return 0.0, 0.0
    return _num(s.get("count")) or 0.0, _num(s.get("notional_usd")) or 0.0


@dataclass(frozen=True, slots=True)
class InstrumentRow:
    exchange: str
    instrument: str
    base: str
    mark_price: float | None
    index_price: float | None
    premium_ratio: float | None
    funding_rate: float | None
    funding_interval_seconds: float | None
    funding_rate_8h: float | None
    funding_zscore: float | None
    open_interest_usd: float | None
    open_interest_change_1h_ratio: float | None
    long_short_ratio: float | None
    liq_1h_long_usd: float
    liq_1h_short_usd: float
    liq_1h_long_count: float
    liq_1h_short_count: float
    # cumulative since the exporter started (the store differences these)
    liq_total_long_usd: float
    liq_total_short_usd: float


@dataclass(frozen=True, slots=True)
class PositionRow:
    position: str
    exchange: str
    instrument: str
    side: str
    liq_gap_pct: float | None


@dataclass(frozen=True, slots=True)
class BaseSnapshot:
    """Everything the models see about one base asset at one read of /api/state."""

    base: str
    at: float
    rows: tuple[InstrumentRow, ...]
    positions: tuple[PositionRow, ...] = field(default_factory=tuple)

    @property
    def fresh_rows(self) -> tuple[InstrumentRow, ...]:
        return tuple(r for r in self.rows if r.mark_price is not None)

    def price(self) -> float | None:
        """Median mark across exchanges (robust to one exchange's glitch)."""
        marks = [r.mark_price for r in self.rows if r.mark_price is not None and r.mark_price > 0]
        return statistics.median(marks) if marks else None

    def liquidations_1h_usd(self) -> tuple[float, float]:
        return sum(r.liq_1h_long_usd for r in self.rows), sum(r.liq_1h_short_usd for r in self.rows)

    def open_interest_usd(self) -> float:
        return sum(r.open_interest_usd or 0.0 for r in self.rows)

    def oi_weighted_change_1h(self) -> float | None:
        """Open-interest-weighted 1 h change ratio over the exchanges that report both."""
        pairs = [
            (r.open_interest_usd, r.open_interest_change_1h_ratio)
            for r in self.rows
            if r.open_interest_usd and r.open_interest_change_1h_ratio is not None
        ]
        weight = sum(w for w, _ in pairs)
        if not pairs or weight <= 0:
            return None
        return sum(w * c for w, c in pairs) / weight

    def oi_weighted_funding_8h(self) -> float | None:
        pairs = [(r.open_interest_usd or 1.0, r.funding_rate_8h) for r in self.rows if r.funding_rate_8h is not None]
        weight = sum(w for w, _ in pairs)
        if not pairs or weight <= 0:
            return None
        return sum(w * f for w, f in pairs) / weight

    def max_abs_zscore(self) -> float | None:
        zs = [abs(r.funding_zscore) for r in self.rows if r.funding_zscore is not None]
        return max(zs) if zs else None

    def max_abs_funding_8h(self) -> float | None:
        fs = [abs(r.funding_rate_8h) for r in self.rows if r.funding_rate_8h is not None]
        return max(fs) if fs else None


def _row(raw: dict[str, Any]) -> InstrumentRow | None:
    exchange, instrument, base = raw.get("exchange"), raw.get("instrument"), raw.get("base")
    if not (isinstance(exchange, str) and isinstance(instrument, str) and isinstance(base, str)):
        return None
    l1_long_n, l1_long = _liq(raw.get("liquidations_1h"), "long")
    l1_short_n, l1_short = _liq(raw.get("liquidations_1h"), "short")
    _, lt_long = _liq(raw.get("liquidations"), "long")
    _, lt_short = _liq(raw.get("liquidations"), "short")
    return InstrumentRow(
        exchange=exchange,
        instrument=instrument,
        base=base.upper(),
        mark_price=_num(raw.get("mark_price")),
        index_price=_num(raw.get("index_price")),
        premium_ratio=_num(raw.get("premium_ratio")),
        funding_rate=_num(raw.get("funding_rate")),
        funding_interval_seconds=_num(raw.get("funding_interval_seconds")),
        funding_rate_8h=_num(raw.get("funding_rate_8h")),
        funding_zscore=_num(raw.get("funding_zscore")),
        open_interest_usd=_num(raw.get("open_interest_usd")),
        open_interest_change_1h_ratio=_num(raw.get("open_interest_change_1h_ratio")),
        long_short_ratio=_num(raw.get("long_short_ratio")),
        liq_1h_long_usd=l1_long,
        liq_1h_short_usd=l1_short,
        liq_1h_long_count=l1_long_n,
        liq_1h_short_count=l1_short_n,
        liq_total_long_usd=lt_long,
        liq_total_short_usd=lt_short,
    )


def instrument_rows(state: dict[str, Any]) -> list[InstrumentRow]:
    items = state.get("instruments")
    if not isinstance(items, list):
        return []
    rows = [_row(raw) for raw in items if isinstance(raw, dict)]
    return [r for r in rows if r is not None]


def bases_in(state: dict[str, Any]) -> list[str]:
    return sorted({r.base for r in instrument_rows(state)})


def snapshots(state: dict[str, Any], at: float) -> dict[str, BaseSnapshot]:
    """One snapshot per base asset in the state."""
    rows = instrument_rows(state)
    by_instrument = {(r.exchange, r.instrument): r.base for r in rows}
    positions: dict[str, list[PositionRow]] = {}
    raw_positions = state.get("positions")
    for p in raw_positions if isinstance(raw_positions, list) else []:
        if not isinstance(p, dict):
            continue
        exchange, instrument = str(p.get("exchange", "")), str(p.get("instrument", ""))
        base = by_instrument.get((exchange, instrument))
        if base is None:
            continue
        positions.setdefault(base, []).append(
            PositionRow(
                position=str(p.get("position", "")),
                exchange=exchange,
                instrument=instrument,
                side=str(p.get("side", "")),
                liq_gap_pct=_num(p.get("liq_gap_pct")),
            )
        )
    out: dict[str, BaseSnapshot] = {}
    for base in sorted({r.base for r in rows}):
        out[base] = BaseSnapshot(
            base=base,
            at=at,
            rows=tuple(r for r in rows if r.base == base),
            positions=tuple(positions.get(base, ())),
        )
    return out


@dataclass(frozen=True, slots=True)
class StateEvent:
    seq: int
    at: float
    base: str
    kind: str


def events(state: dict[str, Any]) -> list[StateEvent]:
    raw = state.get("events")
    out: list[StateEvent] = []
    for e in raw if isinstance(raw, list) else []:
        if not isinstance(e, dict):
            continue
        seq, base, kind = e.get("seq"), e.get("base"), e.get("kind")
        if isinstance(seq, int) and not isinstance(seq, bool) and isinstance(base, str) and isinstance(kind, str):
            out.append(StateEvent(seq=seq, at=_num(e.get("at")) or 0.0, base=base.upper(), kind=kind))
    return out
