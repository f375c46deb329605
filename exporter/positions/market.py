"""What positions read from the market state: fresh marks and rates, settlements, volatility.

A value older than the exchange's staleness limit is no value (None), as everywhere in the
exporter. The mark is sampled here (every ``vol_sample_seconds``, 24 h kept) for the realised
volatility that the hit probability uses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

from exporter.analytics.carry import PerpLeg
from exporter.analytics.risk import Volatility, realised_volatility
from exporter.config import Config
from exporter.model import Exchange
from exporter.positions.model import Position
from exporter.state import MarketState

VOL_WINDOW_SECONDS = 24 * 3600.0

Key = tuple[Exchange, str]


class MarketReader:
    def __init__(
        self, config: Config, state: MarketState, clock: Callable[[], float], vol_sample_seconds: float
    ) -> None:
        self.config = config
        self.state = state
        self.clock = clock
        self.vol_sample_seconds = vol_sample_seconds
        self._marks: dict[Key, deque[tuple[float, float]]] = {}
        self._vol: dict[Key, tuple[float, Volatility | None]] = {}

    def mark(self, ex: Exchange, instrument: str) -> float | None:
        st = self.state.instruments.get((ex, instrument))
        if st is None:
            # a dated future (the long leg of a perp-vs-quarterly spread): priced like a perpetual,
            # and rate() stays None for it, so no funding accrues or is projected
            st = self.state.futures.get((ex, instrument))  # type: ignore[assignment]
        if st is None or st.mark_price is None:
            return None
        ec = self.config.exchanges.get(ex)
        limit = ec.stale.price_seconds if ec is not None else 30.0
        return st.mark_price if self.clock() - st.price_at <= limit else None

    def hedge_mark(self, p: Position) -> float | None:
        """The hedge leg's live price: a perp hedge's mark; a spot hedge's, the main instrument's index
        (the exchange's spot composite), else None."""
        h = p.hedge
        if h is None:
            return None
        if h.kind == "perp":
            return self.mark(h.exchange, h.instrument) if h.exchange is not None and h.instrument else None
        st = self.state.instruments.get((p.exchange, p.instrument))
        if st is None or st.index_price is None:
            return None
        ec = self.config.exchanges.get(p.exchange)
        limit = ec.stale.price_seconds if ec is not None else 30.0
        return st.index_price if self.clock() - st.price_at <= limit else None

    def rate(self, ex: Exchange, instrument: str) -> tuple[float, float] | None:
        """(rate per interval, interval seconds) of the current funding rate, if fresh."""
        st = self.state.instruments.get((ex, instrument))
        if st is None or st.funding_rate is None:
            return None
        ec = self.config.exchanges.get(ex)
        limit = ec.stale.funding_seconds if ec is not None else 120.0
        if self.clock() - st.funding_at > limit:
            return None
        interval = st.interval_s
        return (st.funding_rate, interval) if interval else None

    def stream_settlements(self, ex: Exchange, instrument: str) -> Sequence[tuple[float, float]]:
        st = self.state.instruments.get((ex, instrument))
        return st.settlement_window() if st is not None else ()

    def carry_legs(self, p: Position, mark: float | None) -> list[PerpLeg]:
        """Perp legs at their current rates; empty when a leg's rate or mark is unknown (a half-known
        hedge would overstate the carry)."""
        r = self.rate(p.exchange, p.instrument)
        if r is None or mark is None:
            return []
        legs = [PerpLeg(p.side, p.size * mark, r[0], r[1])]
        h = p.hedge
        if h is not None and h.kind == "perp" and h.exchange is not None and h.instrument:
            hr = self.rate(h.exchange, h.instrument)
            hm = self.mark(h.exchange, h.instrument)
            if hr is None or hm is None:
                return []
            legs.append(PerpLeg(h.side, h.size * hm, hr[0], hr[1]))
        return legs

    # ---- volatility ------------------------------------------------------------------------

    def sample(self, keys: Iterable[Key], now: float, fallback: Callable[[Exchange, str], float | None]) -> None:
        """Record the mark of each instrument (``fallback``: e.g. the account's mark) when due."""
        for key in keys:
            mark = self.mark(*key) or fallback(*key)
            if mark is None:
                continue
            dq = self._marks.setdefault(key, deque())
            if not dq or now - dq[-1][0] >= self.vol_sample_seconds:
                dq.append((now, mark))
            while dq and dq[0][0] < now - VOL_WINDOW_SECONDS:
                dq.popleft()

    def add_samples(self, ex: Exchange, instrument: str, samples: Sequence[tuple[float, float]]) -> None:
        dq = self._marks.setdefault((ex, instrument), deque())
        dq.extend(samples)
        self._vol.pop((ex, instrument), None)

    def volatility(self, ex: Exchange, instrument: str, now: float) -> Volatility | None:
        cached = self._vol.get((ex, instrument))
        if cached is not None and now - cached[0] < self.vol_sample_seconds:
            return cached[1]
        vol = realised_volatility(list(self._marks.get((ex, instrument), ())))
        self._vol[(ex, instrument)] = (now, vol)
        return vol
