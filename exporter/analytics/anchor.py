"""The anchor regression's samples for the past, rebuilt from the exchanges' one-minute candles.

The live samples pair the exchange's published *predicted* funding rate with the premium
``(mark - index) / index``, one a minute (:class:`exporter.trackers.Sampler`). No exchange publishes
its predicted rate historically, so the backfill rebuilds it with the exchange's documented formula
from the one-minute premium-index candles, and takes the premium from the mark and index candles of
the same minute. Rebuilding the predicted rate keeps one sample a minute, the cadence of the live
samples; pairing each settlement with its interval's average premium would give one point per
interval (six or fewer in a 6 h window), too few for the regression.

Binance, Bybit and OKX (``formulaType=withRate``) publish the same form (../shared/reference/
exchanges.md §2.7, §3.7, §4.7):

    F = clamp(Pavg + clamp(I - Pavg, -0.05 %, +0.05 %), floor, cap)

with ``Pavg`` the average of the one-minute premium-index values from the start of the funding interval
to the minute, weighted 1, 2, …, n (Bybit documents the linearly increasing weights; Binance and
OKX describe a weighted average of the same kind), and ``I`` the interest of 0.03 %/day for the
interval (0.01 % per 8 h). The rebuilt rate is what the exchange would have predicted at that minute
from the interval so far: at the interval's last minute it is the rate that settled.

Deribit publishes no mark history for perpetuals (``public/get_mark_price_history`` answers an empty
list for them) and no premium candles: nothing is rebuilt there; its window fills from live samples.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Protocol

from exporter.model import EIGHT_HOURS

INTEREST_8H = 0.0001  # 0.03 % a day, per 8 h
CLAMP_BAND = 0.0005  # ±0.05 %, the band of the interest-minus-premium clamp
CANDLE_SECONDS = 60.0


class CandleLike(Protocol):
    """What the rebuild reads of a candle (exporter.model.Candle fits): open time (epoch s), close."""

    @property
    def open_time(self) -> float: ...

    @property
    def close(self) -> float: ...


def predicted_rate(avg_premium: float, interval_s: float, cap: float | None, floor: float | None) -> float:
    """The funding rate per interval from the interval's average premium index (formula above)."""
    interest = INTEREST_8H * interval_s / EIGHT_HOURS
    rate = avg_premium + min(CLAMP_BAND, max(-CLAMP_BAND, interest - avg_premium))
    if cap is not None:
        rate = min(cap, rate)
    if floor is not None:
        rate = max(floor, rate)
    return rate


def interval_start(open_time: float, interval_s: float, settlements: Sequence[float] = ()) -> float:
    """Start of the funding interval a minute opening at ``open_time`` belongs to: the interval grid
    of the UTC day (00:00, 08:00, 16:00 for 8 h), or a later known settlement (an interval change
    moved the grid). ``settlements`` sorted ascending."""
    start = math.floor(open_time / interval_s) * interval_s
    k = bisect_right(settlements, open_time)
    return max(start, settlements[k - 1]) if k else start


def backfill_samples(
    premium_index: Iterable[CandleLike],
    marks: Iterable[CandleLike],
    indexes: Iterable[CandleLike],
    interval_s: float,
    start: float,
    end: float,
    cap: float | None = None,
    floor: float | None = None,
    settlements: Sequence[float] = (),
) -> list[tuple[float, float, float]]:
    """(time, funding per 8 h, premium) a minute over ``(start, end]``, as the live sampler takes them.

    ``time`` is the minute's close (open time + 60 s). The premium-index candles must reach back to
    the start of the interval that contains ``start`` (the average runs from there); a minute
    without all three closes is skipped (its weight position is kept, so later minutes weigh what
    they weigh at the exchange). Non-finite or non-positive prices are skipped."""
    pi = {c.open_time: c.close for c in premium_index if math.isfinite(c.close)}
    mk = {c.open_time: c.close for c in marks if math.isfinite(c.close) and c.close > 0}
    ix = {c.open_time: c.close for c in indexes if math.isfinite(c.close) and c.close > 0}
    scale = EIGHT_HOURS / interval_s
    out: list[tuple[float, float, float]] = []
    cur_start = -math.inf
    wsum = wpsum = 0.0
    for t in sorted(pi):
        s = interval_start(t, interval_s, settlements)
        if s != cur_start:
            cur_start, wsum, wpsum = s, 0.0, 0.0
        w = math.floor((t - s) / CANDLE_SECONDS) + 1.0  # the minute's position in its interval
        wsum += w
        wpsum += w * pi[t]
        close_t = t + CANDLE_SECONDS
        if not start < close_t <= end:
            continue
        m, i = mk.get(t), ix.get(t)
        if m is None or i is None:
            continue
        rate = predicted_rate(wpsum / wsum, interval_s, cap, floor)
        out.append((close_t, rate * scale, (m - i) / i))
    return out
