"""How one exchange's request budget is split between its pollers and everything else (docs/rate-limits.md).

Pure arithmetic on the documented weights (exporter/limits.py), the budget's rates and the instrument
count: each per-instrument poller (open interest, long/short ratio) is *guaranteed* a rate in every
bucket its requests cost, the backfills and refreshes take the rest, and whatever a side leaves
unused the other takes (the budget serves the guarantees first, then by turns:
:class:`exporter.rest.client.RequestBudget`).

The rule, per exchange:
- where every bucket can give the pollers what their configured periods ask (instruments x weight /
  period) within ``POLLERS_CAP`` of it, each is guaranteed that: the periods hold as configured;
- otherwise each is guaranteed what a round needs to fit in ``ROUND_FIT`` of its series' staleness
  limit (instruments x weight / (0.9 x limit)), no more: the rest of the bucket goes to the backfills
  by turns, so the pollers are not handed more than freshness needs while the start-up reads history.
  Where even that exceeds ``POLLERS_CAP`` of a bucket, the guarantees are cut by progressive filling
  (every poller of a full bucket gets the same fraction of its need, and what a poller held by another
  bucket leaves goes to the others), and the staleness limit *follows* the round: a value as old as
  the round the budget allows is the latest there can be, and dropping it between rounds would only
  make the series flap.
Once the start-up's backfills are done the split is made again with ``POLLERS_CAP_AFTER_BACKFILL``: a
poller cut during the start gets what its staleness needs where that fits now, and a limit that
followed a round comes back down (exporter/app.py lowers it one new limit's span later, so no value
read under the old split goes absent at the switch).
A poller's effective period is ``instruments x weight / guarantee`` (never below the configured one):
the longest a round can take, shorter whenever the backfills leave room (either side takes the turns
the other leaves).

Why a cap rather than whatever each staleness limit needs: at 2,000 Binance instruments the long/short
ratio alone would need 83 % of `futures_data` to fit its 1,800 s limit, leaving the open-interest
history backfill a sixth of the bucket. Half of each bucket keeps the open interest within its limit
(a round of at most 270 s against 300 s) and bounds every backfill's time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POLLERS_CAP = 0.5  # of each bucket's rate, for all pollers together: the backfills keep at least the rest
# once the start-up's backfills are done: a tenth stays for the refreshes, funding info and account reads
POLLERS_CAP_AFTER_BACKFILL = 0.9
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
    fraction: float  # of what the configured period asks that is guaranteed (1: the period holds)
    period_s: float  # effective: the configured period, or the stretched round
    stale_s: float  # effective staleness limit: the configured one, or what the round needs

    @property
    def stretched(self) -> bool:
        return self.period_s > self.demand.period_s


def _fill(rates: Mapping[str, float], ask: Mapping[str, Mapping[str, float]], cap: float) -> dict[str, float]:
    """Progressive filling: the largest common fraction (at most 1) of each poller's ``ask`` (bucket ->
    weight per second) such that the pollers of every bucket stay within ``cap`` of its rate."""
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
    return level


def split(rates: Mapping[str, float], demands: Sequence[PollDemand], cap: float = POLLERS_CAP) -> list[PollShare]:
    """Each poller's guaranteed share of ``rates`` (bucket -> weight per second the budget allows)."""
    live = [d for d in demands if d.requests > 0 and d.period_s > 0 and any(w > 0 for _, w in d.weights)]
    for b in (b for d in live for b, _ in d.weights):
        if b not in rates:
            raise KeyError(f"unknown bucket {b!r}")
    asked = {d.poller: {b: d.requests * w / d.period_s for b, w in d.weights if w > 0} for d in live}
    load = {b: sum(a.get(b, 0.0) for a in asked.values()) for b in rates}
    if all(load[b] <= cap * rates[b] * (1 + 1e-9) for b in rates):
        target = asked  # every period holds as configured within the pollers' part
    else:  # what a round needs to fit its staleness limit, never more than the period asks
        target = {
            d.poller: {
                b: min(asked[d.poller][b], d.requests * w / (ROUND_FIT * d.stale_s)) for b, w in d.weights if w > 0
            }
            for d in live
        }
    level = _fill(rates, target, cap)
    out: list[PollShare] = []
    for d in demands:
        if d.poller not in target:
            out.append(PollShare(d, {}, 1.0, d.period_s, d.stale_s))
            continue
        got = {b: level[d.poller] * v for b, v in target[d.poller].items()}
        # a round: the requests at the guarantee of the bucket that holds it back most
        rounds = [d.requests * w / got[b] for b, w in d.weights if w > 0 and got.get(b, 0.0) > 0]
        period = max([d.period_s, *rounds]) if rounds else float("inf")
        fraction = min(got[b] / asked[d.poller][b] for b in got) if got else 0.0
        stale = max(d.stale_s, period / ROUND_FIT)
        out.append(PollShare(d, got, fraction, period, stale))
    return out


def describe(exchange: str, rates: Mapping[str, float], shares: Sequence[PollShare]) -> str:
    """One log line: each poller's guarantee, effective period and staleness limit; what the rest keep."""
    parts = []
    for s in shares:
        d = s.demand
        got = ", ".join(f"{r:.3g}/s of {b} ({r / rates[b]:.0%})" for b, r in sorted(s.guaranteed.items()))
        period = f"a round within {s.period_s:.0f} s" if s.stretched else f"period {s.period_s:.0f} s as configured"
        stale = f"staleness {s.stale_s:.0f} s" + (" (follows the round)" if s.stale_s > d.stale_s else "")
        parts.append(f"{d.poller}: {d.requests} a round, {got or 'nothing'}: {period}, {stale}")
    rest = {b: r - sum(s.guaranteed.get(b, 0.0) for s in shares) for b, r in rates.items()}
    left = ", ".join(f"{b} {r:.3g}/s" for b, r in sorted(rest.items()))
    return f"{exchange}: REST budget split: " + "; ".join(parts) + f"; backfills and the rest at least: {left}"
