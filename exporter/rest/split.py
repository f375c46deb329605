"""How one exchange's request budget is split between its pollers and everything else (docs/rate-limits.md).

Pure arithmetic on the documented weights (exporter/limits.py), the budget's rates and the instrument
count: each per-instrument poller (open interest, long/short ratio) is *guaranteed* a rate in every
bucket its requests cost, the backfills and refreshes take the rest, and whatever a side leaves
unused the other takes (the budget serves the guarantees first, then by turns:
:class:`exporter.rest.client.RequestBudget`).

The rule: a poller is guaranteed what its configured period asks (instruments x weight / period), as
long as all the pollers' guarantees in a bucket stay within ``POLLERS_CAP`` of it; beyond that they
are cut by progressive filling (every poller of a full bucket gets the same fraction of its ask, and
what a poller limited elsewhere leaves is shared by the others). A cut poller's round is *stretched*
to ``instruments x weight / guarantee`` (its effective period: the longest a round can take, shorter
whenever the backfills leave room), and where that round would not fit in ``ROUND_FIT`` of its
series' staleness limit the limit *follows* it: a value as old as the round the budget allows is the
latest there can be, and dropping it between rounds would only make the series flap.

Why a cap rather than "whatever the staleness needs": at 2,000 Binance instruments the long/short
ratio alone would need 83 % of `futures_data` to fit its 1,800 s limit, leaving the open-interest
history backfill a sixth of the bucket (2 h instead of 45 min). Half of each bucket keeps the open
interest within its limit (a round of 245 s against 300 s) and bounds every backfill's time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POLLERS_CAP = 0.5  # of each bucket's rate, for all pollers together: the backfills keep at least the rest
ROUND_FIT = 0.9  # a round fits its staleness limit when it takes at most this part of it


@dataclass(frozen=True, slots=True)
class PollDemand:
    """One poller: a request per instrument every ``period_s``, each costing ``weights`` per bucket."""

    poller: str  # the lane and the metric label: open_interest, long_short_ratio
    requests: int  # a round (the instruments followed)
    period_s: float  # configured
    stale_s: float  # the configured staleness limit of the series it polls
    weights: tuple[tuple[str, float], ...]  # (bucket, weight) of one request


@dataclass(frozen=True, slots=True)
class PollShare:
    demand: PollDemand
    guaranteed: Mapping[str, float]  # bucket -> weight per second promised
    fraction: float  # of the configured ask that is guaranteed (1: none cut)
    period_s: float  # effective: the configured period, or the stretched round
    stale_s: float  # effective staleness limit: the configured one, or what the round needs

    @property
    def stretched(self) -> bool:
        return self.fraction < 1.0


def split(rates: Mapping[str, float], demands: Sequence[PollDemand], cap: float = POLLERS_CAP) -> list[PollShare]:
    """Each poller's guaranteed share of ``rates`` (bucket -> weight per second the budget allows)."""
    ask = {
        d.poller: {b: d.requests * w / d.period_s for b, w in d.weights if w > 0}
        for d in demands
        if d.requests > 0 and d.period_s > 0
    }
    for b in (b for a in ask.values() for b in a):
        if b not in rates:
            raise KeyError(f"unknown bucket {b!r}")
    level = dict.fromkeys(ask, 0.0)
    active = {p for p, a in ask.items() if a}
    for p in set(ask) - active:
        level[p] = 1.0
    room = {b: cap * r for b, r in rates.items()}
    while active:
        # raise every active poller's fraction together until one of its buckets is full, or all are served
        step = 1.0 - max(level[p] for p in active)
        for b in {b for p in active for b in ask[p]}:
            slope = sum(ask[p][b] for p in active if b in ask[p])
            used = sum(level[p] * ask[p].get(b, 0.0) for p in ask)
            step = min(step, max(0.0, room[b] - used) / slope)
        for p in active:
            level[p] += step
        full = {
            b
            for b in room
            if sum(level[p] * ask[p].get(b, 0.0) for p in ask) >= room[b] * (1 - 1e-9)
            and any(b in ask[p] for p in active)
        }
        active = {p for p in active if level[p] < 1.0 - 1e-12 and not full.intersection(ask[p])}
    out: list[PollShare] = []
    for d in demands:
        x = min(1.0, level.get(d.poller, 1.0))
        if d.requests <= 0 or d.poller not in ask:
            out.append(PollShare(d, {}, 1.0, d.period_s, d.stale_s))
            continue
        period = d.period_s / x if x > 0 else float("inf")
        stale = max(d.stale_s, period / ROUND_FIT)
        out.append(PollShare(d, {b: x * a for b, a in ask[d.poller].items()}, x, period, stale))
    return out


def describe(exchange: str, rates: Mapping[str, float], shares: Sequence[PollShare]) -> str:
    """One log line: each poller's guarantee, effective period and staleness limit; what the rest keep."""
    parts = []
    for s in shares:
        d = s.demand
        got = ", ".join(f"{r:.3g}/s of {b} ({r / rates[b]:.0%})" for b, r in sorted(s.guaranteed.items()))
        how = "stretched" if s.stretched else "as configured"
        stale = f"staleness {s.stale_s:.0f} s" + (" (follows the round)" if s.stale_s > d.stale_s else "")
        parts.append(
            f"{d.poller}: {d.requests} a round, {got or 'nothing'}: period {s.period_s:.0f} s ({how}), {stale}"
        )
    rest = {b: r - sum(s.guaranteed.get(b, 0.0) for s in shares) for b, r in rates.items()}
    left = ", ".join(f"{b} {r:.3g}/s" for b, r in sorted(rest.items()))
    return f"{exchange}: REST budget split: " + "; ".join(parts) + f"; backfills and the rest at least: {left}"
