"""The simulated market's own minute history: what the exchanges' history endpoints serve.

Two sources, one shape (a row per minute: start, mark open/high/low/close, index close, premium
close, open interest in USD at the minute's close):

* **before the simulator started**: generated on demand from the market model's hourly anchors
  (``MarketModel._hist_paths``: the price and sentiment paths the funding history was settled on).
  Between two anchors the log-price is a Brownian bridge and the premium follows the sentiment plus
  the instrument's offset and noise, all drawn from generators keyed by (seed, instrument, hour):
  any request, in any order, sees the same numbers, and nothing is stored.
* **since**: recorded from the model as it steps (``record``), a bounded buffer per instrument
  (``keep_minutes``, 8 floats = 64 bytes a minute).

Index and premium are sampled at minute closes: their candles open at the previous minute's close.
:meth:`Tape.candles` and :meth:`Tape.open_interest` aggregate the rows into any interval; the truth
of the factor signals (:meth:`Tape.volatility`, :meth:`Tape.oi_change`) reads the same rows.
"""

from __future__ import annotations

import math
import zlib
from array import array
from typing import TYPE_CHECKING

import numpy as np

from exporter.model import Exchange

if TYPE_CHECKING:
    from exporter.sim.market import Instrument, MarketModel

MINUTE = 60.0
HOUR = 3600.0
YEAR = 365.0 * 86400.0
WIDTH = 8  # start, mark o, h, l, c, index c, premium c, oi usd
SIGMA = 0.6  # annual volatility of the generated minutes (the hourly history's own)
OI_WAVE_S = 5 * HOUR  # generated open interest drifts on a slow wave of this period
OI_WAVE_AMP = 0.03
KEEP_MINUTES = 26 * 60  # the live buffer: a day plus the 2 h the longest signal window reaches back

Key = tuple[Exchange, str]


class Tape:
    def __init__(self, model: MarketModel, keep_minutes: int = KEEP_MINUTES) -> None:
        self.model = model
        self.seed = model.seed
        self.start = model.now  # generated rows end at the minute this falls in
        self.start_minute = math.floor(self.start / MINUTE) * MINUTE
        self.keep_minutes = keep_minutes
        self._live: dict[Key, array] = {}
        self._cur: dict[Key, list[float]] = {}  # the minute in progress, as a row
        self._oi0: dict[Key, float] = {}
        self._phase: dict[Key, float] = {}
        for inst in model.all_instruments():
            key = (inst.spec.exchange, inst.spec.symbol)
            self._oi0[key] = inst.oi_base
            self._phase[key] = (zlib.crc32(f"oi:{key[0].value}:{key[1]}".encode()) % 6283) / 1000.0

    # ---- live --------------------------------------------------------------------------------

    def record(self, now: float) -> None:
        """After a model step: the minute in progress of every instrument takes the step's values."""
        m = math.floor(now / MINUTE) * MINUTE
        cur, keep = self._cur, self.keep_minutes
        for inst in self.model.all_instruments():
            spec = inst.spec
            key = (spec.exchange, spec.symbol)
            mark = inst.mark
            row = cur.get(key)
            if row is not None and row[0] == m:
                if mark > row[2]:
                    row[2] = mark
                elif mark < row[3]:
                    row[3] = mark
                row[4], row[5], row[6], row[7] = mark, inst.index, inst.premium, inst.oi_usd
                continue
            if row is not None:
                buf = self._live.get(key)
                if buf is None:
                    buf = self._live[key] = array("d")
                buf.extend(row)
                if len(buf) > keep * WIDTH:
                    del buf[: len(buf) - keep * WIDTH]
            cur[key] = [m, mark, mark, mark, mark, inst.index, inst.premium, inst.oi_usd]

    # ---- generated (before start) ------------------------------------------------------------

    def _segment(self, inst: Instrument, k: int) -> np.ndarray:
        """Generated rows of the hour after anchor k (to the next anchor, or to the start minute)."""
        model = self.model
        times = model._hist_times
        sent, prices = model._hist_paths[inst.spec.base]
        t0 = float(times[k])
        t1 = float(times[k + 1]) if k + 1 < len(times) else self.start_minute
        n = round((t1 - t0) / MINUTE)
        if n <= 0:
            return np.zeros((0, WIDTH))
        spec = inst.spec
        p0, p1 = float(prices[k]), float(prices[min(k + 1, len(prices) - 1)])
        s0, s1 = float(sent[k]), float(sent[min(k + 1, len(sent) - 1)])
        if k + 1 >= len(times):  # the last part hour: to the price and sentiment at start
            p1, s1 = inst.asset.price, inst.asset.sentiment
        akey = zlib.crc32(f"px:{spec.base}".encode())
        ikey = zlib.crc32(f"pm:{spec.exchange.value}:{spec.symbol}".encode())
        rng_a = np.random.Generator(np.random.PCG64([self.seed, akey, k]))
        rng_i = np.random.Generator(np.random.PCG64([self.seed, ikey, k]))
        sd = SIGMA * math.sqrt(MINUTE / YEAR)
        # Brownian bridge of the log price from p0 (at t0) to p1 (at t1), one point per minute end
        w = np.cumsum(rng_a.normal(0.0, sd, n))
        frac = np.arange(1, n + 1) / n
        logp = math.log(p0) + frac * (math.log(p1) - math.log(p0)) + w - frac * w[-1]
        closes_px = np.exp(logp)
        opens_px = np.concatenate([[p0], closes_px[:-1]])
        wick = np.abs(rng_a.normal(0.0, 0.3 * sd, (2, n)))
        prem = s0 + frac * (s1 - s0) + inst.offset + rng_i.normal(0.0, inst.noise_sd * 0.3, n)
        prem_open = np.concatenate([[s0 + inst.offset], prem[:-1]])
        scale = 1.0 + inst.index_dev
        index_c = closes_px * scale
        mark_c = index_c * (1.0 + prem)
        mark_o = opens_px * scale * (1.0 + prem_open)
        hi = np.maximum(mark_o, mark_c) * (1.0 + wick[0])
        lo = np.minimum(mark_o, mark_c) * (1.0 - wick[1])
        starts = t0 + MINUTE * np.arange(n)
        key = (spec.exchange, spec.symbol)
        oi_usd = self._oi_base(key, starts + MINUTE) * mark_c
        return np.column_stack([starts, mark_o, hi, lo, mark_c, index_c, prem, oi_usd])

    def _oi_base(self, key: Key, t: np.ndarray) -> np.ndarray:
        """Generated open interest in coin at times t: a slow wave that meets the start value at start."""
        ph = self._phase[key]
        wave = np.sin(2 * math.pi * t / OI_WAVE_S + ph) - math.sin(2 * math.pi * self.start / OI_WAVE_S + ph)
        return self._oi0[key] * (1.0 + OI_WAVE_AMP * wave)

    # ---- queries -----------------------------------------------------------------------------

    def rows(self, inst: Instrument, t_from: float, t_to: float) -> np.ndarray:
        """Minute rows with start in [t_from, t_to], oldest first (the minute in progress included)."""
        parts: list[np.ndarray] = []
        times = self.model._hist_times
        if t_from < self.start_minute and len(times):
            k0 = max(0, int((t_from - float(times[0])) // HOUR))
            k1 = min(len(times) - 1, int((min(t_to, self.start_minute) - float(times[0])) // HOUR))
            for k in range(k0, k1 + 1):
                parts.append(self._segment(inst, k))
        key = (inst.spec.exchange, inst.spec.symbol)
        buf = self._live.get(key)
        if buf is not None and len(buf):
            parts.append(np.frombuffer(buf, dtype=float).reshape(-1, WIDTH).copy())
        cur = self._cur.get(key)
        if cur is not None:
            parts.append(np.array([cur]))
        if not parts:
            return np.zeros((0, WIDTH))
        rows = np.concatenate(parts)
        return rows[(rows[:, 0] >= t_from) & (rows[:, 0] <= t_to)]

    def candles(self, inst: Instrument, kind: str, interval_s: float, t_from: float, t_to: float) -> np.ndarray:
        """(open_time, open, high, low, close) of ``kind`` (mark, index, premium) per ``interval_s``,
        open times aligned on the epoch within [t_from, t_to]."""
        lo_t = math.floor(t_from / interval_s) * interval_s
        rows = self.rows(inst, lo_t - MINUTE, t_to + interval_s)
        if kind == "mark":
            o, h, lo, c = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
        else:
            c = rows[:, 5] if kind == "index" else rows[:, 6]
            o = np.concatenate([c[:1], c[:-1]])  # sampled at closes: opens at the previous close
            h, lo = np.maximum(o, c), np.minimum(o, c)
        starts = rows[:, 0]
        keep = starts >= lo_t
        starts, o, h, lo, c = starts[keep], o[keep], h[keep], lo[keep], c[keep]
        keep = (starts >= t_from) & (starts < t_to + interval_s)
        starts, o, h, lo, c = starts[keep], o[keep], h[keep], lo[keep], c[keep]
        b = np.floor(starts / interval_s) * interval_s
        b_keep = (b >= t_from) & (b <= t_to)
        starts, o, h, lo, c, b = starts[b_keep], o[b_keep], h[b_keep], lo[b_keep], c[b_keep], b[b_keep]
        if not len(b):
            return np.zeros((0, 5))
        times, first = np.unique(b, return_index=True)
        last = np.r_[first[1:], len(b)] - 1
        return np.column_stack(
            [times, o[first], np.maximum.reduceat(h, first), np.minimum.reduceat(lo, first), c[last]]
        )

    def open_interest(self, inst: Instrument, interval_s: float, t_from: float, t_to: float) -> np.ndarray:
        """(time, open interest USD, mark) at each multiple of ``interval_s`` in [t_from, t_to] already
        passed: the open interest (and the mark) at the close of the minute that ends there."""
        rows = self.rows(inst, t_from - MINUTE, t_to)
        ends = rows[:, 0] + MINUTE
        keep = (np.mod(ends, interval_s) == 0) & (ends >= t_from) & (ends <= t_to)
        if self.model.now < ends.max(initial=0.0):  # the minute in progress has not closed
            keep &= ends <= self.model.now
        return np.column_stack([ends[keep], rows[keep, 7], rows[keep, 4]])

    # ---- truth of the factor signals (independent of the exporter's code) ---------------------

    def volatility(self, inst: Instrument, now: float, window_s: float = HOUR) -> float | None:
        """Stdev (ddof 1) of the 1-minute log returns of the mark closes over the ``window_s`` of complete
        minutes before ``now``, scaled by sqrt(minutes in the window)."""
        m = math.floor(now / MINUTE) * MINUTE
        n = int(window_s // MINUTE)
        rows = self.rows(inst, m - (n + 1) * MINUTE, m - MINUTE)
        if len(rows) < n + 1:
            return None
        r = np.diff(np.log(rows[-(n + 1) :, 4]))
        return float(np.std(r, ddof=1) * math.sqrt(n))

    def oi_change(self, inst: Instrument, now: float, window_s: float, step_s: float = 300.0) -> float | None:
        """Open interest now over its value at the ``step_s`` step at or before ``now - window_s``, minus 1."""
        t = math.floor((now - window_s) / step_s) * step_s
        pts = self.open_interest(inst, step_s, t, t)
        if not len(pts) or not pts[0, 1]:
            return None
        return float(inst.oi_usd / pts[0, 1] - 1.0)
