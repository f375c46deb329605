"""Scale curve: 100 / 500 / 2,000 / 8,000 instruments (a quarter per exchange), each in its own process.

Per size: the warm-up render the exporter does at start (before the server answers), the first
scrape after it (one scrape interval of updates later), the steady render (median of churned
renders, as in bench_scrape.py), ingest cost per market update and per liquidation (state.apply),
and the process's peak RSS. State as in bench_scrape.py: full windows, every value fresh. Between two
renders a churn applies one scrape interval (15 s) of the market: ``RealisticChurn`` by default (mark,
index, funding rate and open interest at the shares of instruments the exchanges push them in 15 s);
``--churn old`` is ``bench_scrape.churn`` (mark and funding rate of every instrument, index and open
interest never: their kept texts were never re-formatted, and the open interest went stale after 300 s).

Ingest per update is printed two ways, each at the size and at the 100-instrument reference
(interleaved run by run in the same process, the reference rendered and churned alike, both warmed by
one untimed pass), on values that move as the exchanges send them (``Walk``: mark and index on a
random walk, a funding rate that changes on every update, the next funding time constant within an
interval; constant values hid the cost of a changing rate and of fresh float objects):
- apply-only: ``state.apply_many`` of ``MarketUpdate`` records the benchmark built (the state's share:
  full updates of event time, mark, index, rate and next funding time, Deribit's with its 8 h rate);
- frame-to-state: what the exporter does per update, frame bytes in to state: synthetic frames in
  the exchanges' wire formats (Binance ``!markPrice@arr@1s`` arrays of 500 entries in a fixed order
  of their own, Bybit ticker deltas, OKX mark-price and funding-rate pushes, Deribit tickers, one instrument each, in
  a new random order every second), built a batch at a time and each put through its feed's
  ``parse_ws`` and ``apply_many``.
Each figure is the mean of the four exchanges' costs per update (each exchange weighs the same at
both sizes; each is printed too), each run whole minutes of one update per instrument a second
(``whole_minutes``): the once-a-minute work of an update (the mark minute's close, the anchor sample)
weighs the same at every size. At 100 instruments (25 Binance symbols) a Binance
  frame holds 20 successive seconds of the followed symbols (``array_seconds``: 500 entries, each
  stamped its own second), so both sizes decode frames of the same size and each instrument still
  gets one update a second (until session 7 the 25 symbols were repeated 20 times at one second: the
  once-a-minute work then weighed once in 1,200 updates at 100 and once in 60 at 8,000); the real
  all-market frame also carries unfollowed symbols, which the parser skips.

The render ratio 8,000 / 2,000 is measured with the renders of the two sizes alternated, so that
both meet the same machine state (separate runs minutes apart moved between 3.9x and 6.7x): one
process per size as an exporter of that size runs, asked for a render in turn
(``render_pair_processes``, the target's figure), and both states in one process
(``render_pair``). The rendering thread's CPU time beside the wall time, each the median of the
ratios of back-to-back pairs.

Targets (issue 10): first scrape at 2,000 within 150 ms; steady render at 8,000 within 4.2x the
2,000 figure; ingest per update at 8,000 within 15 % of that at 100.

Run: ``.venv/bin/python bench/bench_scale.py [--sizes 100,500,2000,8000] [--runs 5]``;
``--phases --sizes 2000,8000`` prints only where the steady render's CPU goes at each size (the
views' columns, each collector's families and rendering), both sizes in one process, alternated.
``--churns --sizes 2000,8000`` prints only the render with each churn side by side (first scrape,
steady render and the ratio, old and realistic; one process per size and churn, the four alternated).
``--minute --sizes 2000,8000`` prints only the first scrape after a minute boundary against the other
scrapes (every size of 2,000 and up in the default run prints it too), with each instrument's window of
minute closes full (``build_state(mark_history=True)``): the scrape in which every volatility, anchor
and open-interest window moved, one in four at a 15 s interval.
``--against TREE --sizes 2000,8000`` prints only the steady render of this checkout against another's
(``git worktree add --detach TREE <commit>``; one process per checkout and size, the four alternated).
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
FRAME_UPDATES = 500  # updates per frame handed to apply_many
FRAME_BATCH = 25  # single-instrument frames built, then ingested, together (the 100-instrument market's 25 each)
NEXT_FUNDING_S = 28_800.0  # the frames' funding interval: the next funding time they announce is constant within it
SCRAPE_S = 15.0  # the scrape interval a churn stands for
# Binance open interest is REST only (no stream): polled on the budget, the exporter's share of the
# 2,400 weight/min per IP (rest_budget.fraction 0.5: 20 requests/s at weight 1), every instrument
# at most every poll.open_interest_seconds (30 s): a round takes max(30 s, instruments / 20 s)
BINANCE_OI_PER_S = 20.0
BINANCE_OI_PERIOD_S = 30.0
OKX_FUNDING_PUSH_S = 60.0  # OKX pushes funding-rate every 30-90 s; the others push it with the mark


class RealisticChurn:
    """What one scrape interval of a live market changes, as the exchanges push it (the render keeps a
    value's text while the value is bit for bit the same, so what moves is what it pays for):
    - every instrument a new mark and index (Binance markPrice@1s, Bybit tickers deltas, OKX mark-price
      and index-tickers on change, Deribit ticker 100 ms), the index moving with the mark;
    - a new funding rate on every instrument but OKX's, whose funding-rate push comes every 30-90 s
      (a quarter of them per 15 s, in turn);
    - new open interest on every Bybit, OKX (open-interest every 3 s) and Deribit instrument (in the
      ticker); Binance's from the REST poll: 15 s of a round of max(30 s, instruments / 20 per s), in turn;
    - an eighth settle, as ``bench_scrape.churn`` (pessimistic: real settlements bunch at 8 h marks).
    The in-turn shares keep every value within its staleness limit, as the exchanges' cadences do.
    ``bench_scrape.churn`` (the "old" churn) moves only the mark and the funding rate of every instrument."""

    def __init__(self) -> None:
        self.cursor: dict[tuple[Any, str], float] = {}  # (exchange, field) -> position of the turn

    def _turn(self, ex: Any, field: str, n: int, share: float) -> tuple[float, float]:
        start = self.cursor.get((ex, field), 0.0)
        self.cursor[(ex, field)] = (start + share * n) % max(1, n)
        return start, share * n

    def __call__(self, clock: Any, state: Any, rng: random.Random, settle_share: float = 0.125) -> None:
        from exporter.model import Exchange, MarketUpdate

        clock.t += SCRAPE_S
        sts = state.snapshot()
        counts: dict[Any, int] = {}
        for st in sts:
            counts[st.info.exchange] = counts.get(st.info.exchange, 0) + 1
        turns = {}
        for ex, n in counts.items():
            oi = 1.0
            if ex is Exchange.BINANCE:
                oi = min(1.0, SCRAPE_S / max(BINANCE_OI_PERIOD_S, n / BINANCE_OI_PER_S))
            rate = min(1.0, SCRAPE_S / OKX_FUNDING_PUSH_S) if ex is Exchange.OKX else 1.0
            turns[ex] = (n, self._turn(ex, "rate", n, rate), self._turn(ex, "oi", n, oi))
        seen: dict[Any, int] = {}
        for st in sts:
            info = st.info
            ex = info.exchange
            k = seen[ex] = seen.get(ex, -1) + 1
            n, (r0, rn), (o0, on) = turns[ex]
            move = 1.0 + rng.gauss(0, 3e-4)
            mark = (st.mark_price or 1.0) * move
            index = (st.index_price or mark) * move * (1.0 + rng.gauss(0, 2e-5))
            rate = (st.funding_rate or 0.0) + rng.gauss(0, 1e-6) if (k - r0) % n < rn else None
            oi = (st.open_interest_usd or 1e6) * (1.0 + rng.gauss(0, 1e-3)) if (k - o0) % n < on else None
            state.apply(
                MarketUpdate(
                    ex, info.instrument, mark_price=mark, index_price=index, funding_rate=rate, open_interest_usd=oi
                ),
                clock.t,
            )
            if rng.random() < settle_share:
                state.add_settlements(st, [(clock.t, st.funding_rate or 0.0)])


def make_churn(kind: str) -> Any:
    """``realistic`` (RealisticChurn) or ``old`` (bench_scrape.churn: mark and funding rate only)."""
    if kind == "old":
        sys.path.insert(0, HERE)
        from bench_scrape import churn

        return churn
    if kind == "realistic":
        return RealisticChurn()
    raise ValueError(f"churn {kind!r}: realistic or old")


class Walk:
    """Values that move as the exchanges send them, per instrument: mark and index on a random walk
    (the index a few basis points off the mark), a funding rate that changes on every update (the
    exchanges publish an estimated rate that moves each second), the next funding time constant
    within an interval. The same steps at every size: the 100-instrument reference sees the same kind
    of values as the 8,000."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.values: dict[str, list[float]] = {}

    def step(self, sym: str) -> tuple[float, float, float]:
        """(mark, index, rate) of ``sym``'s next update."""
        v = self.values.get(sym)
        r = self.rng.random
        if v is None:
            v = self.values[sym] = [10 ** (r() * 6.8 - 2.0), 1e-4 + (r() - 0.5) * 1.7e-4]
        # uniform steps of the Gaussian ones' spread (2e-4, 3e-4): a tenth of their cost to draw, so that
        # a minute of 8,000 instruments' updates is built in seconds
        v[0] *= 1.0 + (r() - 0.5) * 6.9e-4
        # at least a unit of Bybit's 6 decimals: the rate shows a change on every exchange's wire
        d = 1e-6 + r() * 8e-7
        v[1] += d if r() < 0.5 else -d
        return v[0], v[0] * (1.0 + (r() - 0.5) * 1.04e-3), v[1]


def whole_minutes(updates: int, per_second: int) -> int:
    """Seconds (one update of each instrument a second) for at least ``updates`` updates, in whole
    minutes: every run then holds the same once-a-minute work per update at every size (each
    instrument's mark minute and anchor sample), as the exchanges' streams do. A run of a few seconds
    at 8,000 instruments held it or not by chance, and the median of the runs left it out while the
    100-instrument reference's runs of minutes held it: 8,000 looked cheaper than it is. A run's first
    second is not timed: the runs in between moved the clock on by minutes, so every update of that
    second closes a minute, which timed would weigh once in 60 updates at 8,000 and once in 420 at 100."""
    seconds = -(-updates // per_second)
    return -(-seconds // 60) * 60


def next_funding(t: float) -> float:
    """The next funding time (Unix seconds) the frames announce at ``t``: constant within 8 h."""
    return (t // NEXT_FUNDING_S + 1) * NEXT_FUNDING_S


def ingest_run(clock: Any, state: Any, keys: list[Any], walk: Walk, update: Any) -> dict[Any, float]:
    """CPU seconds per update by exchange, over whole minutes of one update per instrument a second
    (``whole_minutes``, at least 40,000 updates), ingested as the exporter does: one frame's records
    (an all-market Binance frame carries ~500) built, then handed to apply_many together, while still
    in the cache. The values move (``Walk``): Deribit's as its continuous 8 h rate without a next
    funding time, the others' with theirs. CPU time of this process: other processes' load on the
    shared machine is not ours."""
    from exporter.model import Exchange

    cpu = time.process_time
    by_ex: dict[Any, list[str]] = {}
    for ex, inst in keys:
        by_ex.setdefault(ex, []).append(inst)
    spent = dict.fromkeys(by_ex, 0.0)
    seconds = whole_minutes(40_000, len(keys))
    for second in range(-1, seconds):  # -1: untimed, see whole_minutes
        clock.t += 1.0
        now = clock.t
        nft = next_funding(now)
        for ex, insts in by_ex.items():
            for k in range(0, len(insts), FRAME_UPDATES):
                ups = []
                for inst in insts[k : k + FRAME_UPDATES]:
                    mark, index, rate = walk.step(inst)
                    if ex is Exchange.DERIBIT:
                        u = update(ex, inst, event_time=now, mark_price=mark, index_price=index, funding_rate_8h=rate)
                    else:
                        u = update(
                            ex,
                            inst,
                            event_time=now,
                            mark_price=mark,
                            index_price=index,
                            funding_rate=rate,
                            next_funding_time=nft,
                        )
                    ups.append(u)
                if second < 0:
                    state.apply_many(ups, now)
                    continue
                t = cpu()
                state.apply_many(ups, now)
                spent[ex] += cpu() - t
    return {ex: spent[ex] / (seconds * len(insts)) for ex, insts in by_ex.items()}


def array_seconds(symbols: int) -> int:
    """The seconds of Binance's array one benchmark frame holds for ``symbols`` followed symbols: a
    small market's frame holds as many successive seconds as make it FRAME_UPDATES entries (25
    symbols: 20 seconds), so every size decodes frames of the same size while each instrument still
    gets one update a second, and its once-a-minute work (the mark minute's close, the anchor sample)
    weighs once in 60 of its updates at every size."""
    return max(1, FRAME_UPDATES // symbols) if symbols else 1


def _frames(ex: Any, syms: list[str], t: float, walk: Walk, seconds: int = 1) -> list[bytes]:
    """One second of ``syms``' updates in ``ex``'s wire format, stamped ``t`` (Unix seconds), the
    values moving as the exchanges send them (``Walk``): Binance's at its 8 decimals, Bybit's rate at
    its 6; OKX sends a mark-price push and a funding-rate push per instrument. Binance's array holds
    ``seconds`` successive seconds ending at ``t`` (``array_seconds``), each stamped its own second."""
    import orjson

    from exporter.model import Exchange

    ms = int(t * 1000)
    nft = int(next_funding(t) * 1000)

    if ex is Exchange.BINANCE:
        rows = []
        for second in range(seconds - 1, -1, -1):
            nft = int(next_funding(t - second) * 1000)
            for s in syms:
                mark, index, rate = walk.step(s)
                rows.append(
                    {
                        "e": "markPriceUpdate",
                        "E": ms - 1000 * second,
                        "s": s,
                        "p": f"{mark:.8f}",
                        "ap": f"{mark * 1.00001:.8f}",
                        "P": f"{(mark + index) / 2:.8f}",
                        "i": f"{index:.8f}",
                        "r": f"{rate:.8f}",
                        "T": nft,
                    }
                )
        return [
            orjson.dumps({"stream": "!markPrice@arr@1s", "data": rows[k : k + FRAME_UPDATES]})
            for k in range(0, len(rows), FRAME_UPDATES)
        ]
    out = []
    for k, s in enumerate(syms):
        p, index, rate = walk.step(s)
        if ex is Exchange.BYBIT:
            msg: dict[str, Any] = {
                "topic": f"tickers.{s}",
                "type": "delta",
                "data": {
                    "symbol": s,
                    "price24hPcnt": "0.023362",
                    "markPrice": f"{p:.4f}",
                    "indexPrice": f"{index:.4f}",
                    "openInterest": f"{1000 + k:.3f}",
                    "fundingRate": f"{rate:.6f}",
                    "bid1Price": f"{p:.4f}",
                    "bid1Size": "340549",
                    "ask1Price": f"{p * 1.0001:.4f}",
                    "ask1Size": "70817",
                },
                "cs": 20856433578 + k,
                "ts": ms,
            }
        elif ex is Exchange.OKX:
            out.append(
                orjson.dumps(
                    {
                        "arg": {"channel": "mark-price", "instId": s},
                        "data": [{"instId": s, "instType": "SWAP", "markPx": f"{p:.4f}", "ts": str(ms)}],
                    }
                )
            )
            msg = {
                "arg": {"channel": "funding-rate", "instId": s},
                "data": [
                    {
                        "formulaType": "withRate",
                        "fundingRate": f"{rate:.16f}",
                        "fundingTime": str(nft),
                        "impactValue": "10000.0000000000000000",
                        "instId": s,
                        "instType": "SWAP",
                        "interestRate": "0.0001000000000000",
                        "maxFundingRate": "0.003",
                        "method": "current_period",
                        "minFundingRate": "-0.003",
                        "nextFundingRate": "",
                        "nextFundingTime": str(nft + int(NEXT_FUNDING_S * 1000)),
                        "premium": f"{(p - index) / index:.16f}",
                        "prevFundingTime": str(nft - int(NEXT_FUNDING_S * 1000)),
                        "settFundingRate": "0.0001000000000000",
                        "settState": "settled",
                        "ts": str(ms),
                    }
                ],
            }
        else:
            msg = {
                "jsonrpc": "2.0",
                "method": "subscription",
                "params": {
                    "channel": f"ticker.{s}.100ms",
                    "data": {
                        "timestamp": ms,
                        "state": "open",
                        "stats": {"high": p * 1.02, "low": p * 0.97, "price_change": 2.3, "volume": 11897.3},
                        "index_price": round(index, 4),
                        "instrument_name": s,
                        "last_price": p,
                        "settlement_price": p,
                        "min_price": round(p * 0.98, 4),
                        "max_price": round(p * 1.02, 4),
                        "open_interest": 1e6 + k,
                        "mark_price": round(p, 4),
                        "interest_value": 0.0028,
                        "best_ask_price": round(p * 1.0001, 4),
                        "best_bid_price": p,
                        "estimated_delivery_price": round(index, 4),
                        "best_ask_amount": 186520.0,
                        "best_bid_amount": 117660.0,
                        "current_funding": 0.0,
                        "funding_8h": rate,
                    },
                },
            }
        out.append(orjson.dumps(msg))
    return out


class FrameIngest:
    """Frame bytes in to state, as the connection layer does it: ``parse_ws`` then ``apply_many``."""

    def __init__(self, clock: Any, state: Any) -> None:
        from exporter.feeds import feed_for
        from exporter.feeds.base import FeedContext

        self.clock, self.state = clock, state
        self.rng = random.Random(5)
        self.walk = Walk(7)
        self.plans = []
        for ex in sorted({ex for ex, _ in state.instruments}, key=lambda e: e.value):
            infos = {i: st.info for (e, i), st in state.instruments.items() if e is ex}
            # as the exporter's: time bounds around now, and the settlements passed on remembered (OKX
            # repeats the last one in every funding push; the exporter's store sees each once, see
            # FeedContext.settled: without it every push carried a settlement record to the store)
            ctx = FeedContext(ex, infos, clock=clock, settled={})
            bind = getattr(state, "bind", None)  # the state's handles, as the exporter's (app._bind)
            if bind is not None:  # (absent before them: the benchmark runs on an older tree too)
                bind(ctx)
            syms = list(infos)
            self.rng.shuffle(syms)  # the exchange's own order, not the order the state registered them in
            self.plans.append((ex, syms, feed_for(ex).parse_ws, ctx))
            ctx.take_array_order()  # the exporter's housekeeping asks for the streams' order (app._relayout)

    def run(self) -> dict[Any, float]:
        """CPU seconds per update by exchange over whole minutes (``whole_minutes``, at least 10,000
        updates of each exchange). Frames are built
        a batch at a time (one Binance array, 25 single-instrument frames) and ingested at once, while
        their bytes are in the cache as a received frame's are: the same batches at every size. Binance
        sends its array in one fixed order each second; the ticker streams' instruments come in the
        order they changed (shuffled every second here)."""
        from exporter.model import Exchange

        cpu = time.process_time
        apply_many = self.state.apply_many
        out = {}
        for ex, syms, parse, ctx in self.plans:
            batch = FRAME_UPDATES if ex is Exchange.BINANCE else FRAME_BATCH
            # seconds a pass stands for: a small market's Binance frame holds several (array_seconds)
            step = array_seconds(len(syms)) if ex is Exchange.BINANCE else 1
            seconds = whole_minutes(10_000, len(syms))
            while seconds % step:
                seconds += 60
            spent, updates = 0.0, 0
            for p in range(-1, seconds // step):  # -1: untimed, see whole_minutes
                self.clock.t += step
                now = self.clock.t
                if ex is not Exchange.BINANCE:
                    self.rng.shuffle(syms)
                for k in range(0, len(syms), batch):
                    frames = _frames(ex, syms[k : k + batch], now, self.walk, step)
                    if p < 0:
                        for f in frames:
                            apply_many(parse(f, ctx), now)
                        continue
                    t = cpu()
                    for f in frames:
                        recs = parse(f, ctx)
                        apply_many(recs, now)
                        updates += len(recs)
                    spent += cpu() - t
            out[ex] = spent / updates
            # untimed: the exporter's once-a-minute housekeeping, the records laid out in the order the
            # array frames sent them when it changed (app._relayout; a run is whole minutes)
            order = ctx.take_array_order()
            if order:
                self.state.relayout(ex, order)
                ctx.follow_order(self.state.record_ids(ex))  # and the parser's lookup in that order, as the app's
        if self.state.unknown_instrument_updates or self.state.rejected_records:
            raise SystemExit("frames for unknown instruments or rejected: the benchmark frames are wrong")
        return out


def one(n: int, runs: int, churn_kind: str = "realistic") -> dict[str, Any]:
    sys.path.insert(0, HERE)
    from bench_scrape import build_state

    churn, ref_churn = make_churn(churn_kind), make_churn(churn_kind)

    from exporter.metrics import build_registry
    from exporter.model import Exchange, Liquidation, MarketUpdate, Side

    clock, state, cfg = build_state(max(1, n // 4))
    reg = build_registry(cfg, state)
    rng = random.Random(3)
    t = time.perf_counter()
    reg.render()  # what Exporter.start does before the server answers
    warmup = time.perf_counter() - t
    gc.collect()
    gc.freeze()  # as the exporter does after start
    churn(clock, state, rng)
    # wall time, and the render thread's CPU time (on a loaded machine the wall time also holds other
    # processes' time slices)
    t, c = time.perf_counter(), time.thread_time()
    reg.render()
    first, first_cpu = time.perf_counter() - t, time.thread_time() - c
    steady, steady_cpu = [], []
    for _ in range(runs):
        churn(clock, state, rng)
        t, c = time.perf_counter(), time.thread_time()
        reg.render()
        steady_cpu.append(time.thread_time() - c)
        steady.append(time.perf_counter() - t)
    keys = list(state.instruments)
    # Liquidations before the ingest runs, which move the clock by minutes: the windows then hold the
    # last hour's liquidations the state was built with, as in a steady exporter
    cpu = time.process_time
    per_liq = []
    for r in range(runs):
        clock.t += 1.0
        liqs = [
            Liquidation(ex, inst, clock.t, Side.LONG if i % 2 else Side.SHORT, 100.0, 1.0, 100.0 + r)
            for i, (ex, inst) in enumerate(keys[:1000])
        ]
        t = cpu()
        for q in liqs:
            state.apply(q, clock.t)
        per_liq.append((cpu() - t) / len(liqs))
    # The 100-instrument reference is measured in this same process, interleaved run by run: the
    # ratio then compares like with like even when a neighbour thrashes the shared caches for minutes.
    # It goes through what the measured state went through (a render, a churn per steady render),
    # so both states' memory is laid out alike.
    ref_clock, ref_state, ref_cfg = build_state(25)
    build_registry(ref_cfg, ref_state).render()
    for _ in range(runs + 1):
        ref_churn(ref_clock, ref_state, rng)
    ref_keys = list(ref_state.instruments)
    per_update: dict[str, list[float]] = {}
    per_update_ref: dict[str, list[float]] = {}
    frames_big, frames_ref = FrameIngest(clock, state), FrameIngest(ref_clock, ref_state)
    per_frame_update: dict[str, list[float]] = {}
    per_frame_update_ref: dict[str, list[float]] = {}
    walk, walk_ref = Walk(11), Walk(11)
    # One untimed pass of each first: an instrument's first updates do once what no later one does (the
    # first next funding time, Deribit's first hourly observation, OKX's interval and settlement), and at
    # 8,000 a run is only 60 updates an instrument (at 100, hundreds): unwarmed, that once-only work
    # made apply-only at 8,000 look 2x dearer than it is.
    ingest_run(clock, state, keys, walk, MarketUpdate)
    ingest_run(ref_clock, ref_state, ref_keys, walk_ref, MarketUpdate)
    frames_big.run()
    frames_ref.run()
    # apply-only in the state's own order: its records' order in memory, which the frames' pass may have
    # changed (the exporter's housekeeping lays Binance's out in the order its arrays send them)
    keys, ref_keys = state.record_order(), ref_state.record_order()

    def add(into: dict[str, list[float]], costs: dict[Any, float]) -> None:
        for ex, c in costs.items():
            into.setdefault(ex.value, []).append(c)
        into.setdefault("mean", []).append(statistics.fmean(costs.values()))  # each exchange weighs the same

    for _ in range(runs):
        add(per_update, ingest_run(clock, state, keys, walk, MarketUpdate))
        add(per_update_ref, ingest_run(ref_clock, ref_state, ref_keys, walk_ref, MarketUpdate))
        add(per_frame_update, frames_big.run())
        add(per_frame_update_ref, frames_ref.run())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert all(isinstance(ex, Exchange) for ex, _ in keys[:1])
    return {
        "n": len(keys),
        "warmup_ms": warmup * 1e3,
        "first_ms": first * 1e3,
        "first_cpu_ms": first_cpu * 1e3,
        "steady_ms": statistics.median(steady) * 1e3,
        "steady_cpu_ms": statistics.median(steady_cpu) * 1e3,
        "update_us": {k: statistics.median(v) * 1e6 for k, v in per_update.items()},
        "update_ref_us": {k: statistics.median(v) * 1e6 for k, v in per_update_ref.items()},
        "frame_update_us": {k: statistics.median(v) * 1e6 for k, v in per_frame_update.items()},
        "frame_update_ref_us": {k: statistics.median(v) * 1e6 for k, v in per_frame_update_ref.items()},
        "liquidation_us": statistics.median(per_liq) * 1e6,
        "rss_mb": rss_mb,
    }


def _pair_summary(sizes: Any, runs: int, wall: list[list[float]], cpu: list[list[float]]) -> dict[str, Any]:
    """Medians of each size's renders and of the ratios of the pairs measured back to back (the
    steadiest figure)."""
    return {
        "sizes": list(sizes),
        "runs": runs,
        "wall_ms": [statistics.median(w) * 1e3 for w in wall],
        "cpu_ms": [statistics.median(c) * 1e3 for c in cpu],
        "cpu_ratio": statistics.median(b / a for a, b in zip(cpu[0], cpu[1], strict=True)),
        "wall_ratio": statistics.median(b / a for a, b in zip(wall[0], wall[1], strict=True)),
    }


def _render_setups(sizes: Any, churn_kind: str) -> list[tuple[Any, Any, Any, Any]]:
    """Each size's (clock, state, registry, churn), built, warm-up rendered and churned as in ``one``,
    then gc.freeze() after all warm-ups as the exporter does once started."""
    sys.path.insert(0, HERE)
    from bench_scrape import build_state

    from exporter.metrics import build_registry

    setups = []
    for n in sizes:
        clock, state, cfg = build_state(max(1, n // 4))
        reg = build_registry(cfg, state)
        reg.render()
        setups.append((clock, state, reg, make_churn(churn_kind)))
    gc.collect()
    gc.freeze()
    return setups


def render_pair(sizes: tuple[int, int], runs: int, churn_kind: str = "realistic") -> dict[str, Any]:
    """The steady render at two sizes in one process, interleaved render by render (small, large,
    large, small, ...): both see the same machine state, where two processes minutes apart do not
    (the ratio of separate runs moved between 3.9x and 6.7x with the machine). Each state is built,
    warm-up rendered and churned as in ``one``, with gc.freeze() after both warm-ups as the exporter.

    Per render: wall time, and the rendering thread's CPU time (what the render costs; the wall time
    on a shared machine also holds other processes' time slices and the GIL hand-overs' sleeps)."""
    setups = _render_setups(sizes, churn_kind)
    rng = random.Random(5)
    wall: list[list[float]] = [[], []]
    cpu: list[list[float]] = [[], []]
    for r in range(runs):
        for i in (0, 1) if r % 2 else (1, 0):
            clock, state, reg, churn = setups[i]
            churn(clock, state, rng)
            t, c = time.perf_counter(), time.thread_time()
            reg.render()
            cpu[i].append(time.thread_time() - c)
            wall[i].append(time.perf_counter() - t)
    return _pair_summary(sizes, runs, wall, cpu)


def render_phases(sizes: tuple[int, ...], runs: int, churn_kind: str = "realistic") -> dict[str, list[float]]:
    """Where a steady render's CPU goes, both sizes in one process, renders alternated: the views
    (the scrape's columns, built once and shared by the collectors), then each collector's families
    and their rendering. Medians in ms per phase, one entry per size (the rendering thread's CPU)."""
    from exporter.metrics.exposition import Family, render_family, render_metric_family

    setups = _render_setups(sizes, churn_kind)
    rng = random.Random(5)
    spent: list[dict[str, list[float]]] = [{} for _ in sizes]
    tt = time.thread_time
    for r in range(runs):
        for i in range(len(sizes)) if r % 2 else reversed(range(len(sizes))):
            clock, state, reg, churn = setups[i]
            churn(clock, state, rng)
            d = spent[i]
            gc.disable()  # as a render (exporter.metrics.collector_paused)
            try:
                start = tt()
                with reg.views.scrape():
                    c = tt()
                    reg.views.current_table()
                    d.setdefault("views (columns)", []).append(tt() - c)
                    for col in reg.collectors():
                        name = type(col).__name__.removesuffix("Collector").lower()
                        c = tt()
                        fams = col.families() if hasattr(col, "families") else list(col.collect())
                        c2 = tt()
                        out: list[bytes] = []
                        for f in fams:
                            if type(f) is Family:
                                render_family(f, out, False)
                            else:
                                render_metric_family(f, out, False)
                        d.setdefault(f"{name}: families", []).append(c2 - c)
                        d.setdefault(f"{name}: render", []).append(tt() - c2)
                d.setdefault("whole render", []).append(tt() - start)
            finally:
                gc.enable()
    return {k: [statistics.median(d[k]) * 1e3 for d in spent] for k in spent[0]}


def render_server(n: int, churn_kind: str = "realistic") -> None:
    """Child process: one state of ``n`` instruments, built, warm-up rendered and frozen as in ``one``;
    then, per line "render" on stdin, a churn and a render, answered with its wall and CPU seconds."""
    sys.path.insert(0, HERE)
    from bench_scrape import build_state

    from exporter.metrics import build_registry

    churn = make_churn(churn_kind)
    clock, state, cfg = build_state(max(1, n // 4))
    reg = build_registry(cfg, state)
    reg.render()
    gc.collect()
    gc.freeze()
    rng = random.Random(5)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "render":
            break
        churn(clock, state, rng)
        t, c = time.perf_counter(), time.thread_time()
        reg.render()
        cpu = time.thread_time() - c
        print(json.dumps([time.perf_counter() - t, cpu]), flush=True)


def minute_scrapes(n: int, minutes: int, churn_kind: str = "realistic") -> dict[str, Any]:
    """Child process: the scrape that comes first after a minute boundary against the others. One
    state of ``n`` instruments whose windows of minute closes are full (4 h, as after the start-up
    backfill; ``build_state(mark_history=True)``), warm-up rendered and frozen as in ``one``, then
    ``minutes`` minutes of churned renders at the scrape interval (four a minute): when a minute has
    closed, every instrument's volatility, anchors and open-interest change have a window that moved.
    Medians of each kind's CPU and wall time; the first render after the warm-up is left out."""
    sys.path.insert(0, HERE)
    from bench_scrape import build_state

    from exporter.metrics import build_registry

    churn = make_churn(churn_kind)
    clock, state, cfg = build_state(max(1, n // 4), mark_history=True)
    reg = build_registry(cfg, state)
    reg.render()
    gc.collect()
    gc.freeze()
    rng = random.Random(5)
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    minute = clock.t // 60.0
    for r in range(int(minutes * 60 / SCRAPE_S) + 1):
        churn(clock, state, rng)
        crossed = clock.t // 60.0 != minute
        minute = clock.t // 60.0
        t, c = time.perf_counter(), time.thread_time()
        reg.render()
        cpu = time.thread_time() - c
        if r:
            runs[crossed].append((time.perf_counter() - t, cpu))
    med = {
        k: (statistics.median(w for w, _ in v) * 1e3, statistics.median(c for _, c in v) * 1e3) for k, v in runs.items()
    }
    return {
        "n": len(state.instruments),
        "minute_ms": med[True][0],
        "minute_cpu_ms": med[True][1],
        "other_ms": med[False][0],
        "other_cpu_ms": med[False][1],
        "cpu_ratio": med[True][1] / med[False][1],
        "minutes": len(runs[True]),
    }


def print_minute(n: int, minutes: int, churn_kind: str) -> None:
    out = subprocess.run(
        [sys.executable, __file__, "--minute-one", str(n), "--minutes", str(minutes), "--churn", churn_kind],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = json.loads(out.strip().splitlines()[-1])
    print(
        f"minute scrape {m['n']:,}: CPU {m['minute_cpu_ms']:.1f} ms (wall {m['minute_ms']:.1f}) against "
        f"{m['other_cpu_ms']:.1f} ms (wall {m['other_ms']:.1f}) for the other scrapes: {m['cpu_ratio']:.2f}x CPU "
        f"(the first scrape after each of {m['minutes']} minute boundaries, 4 h of minute closes held, medians; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)",
        flush=True,
    )


class _RenderServers:
    """One ``render_server`` process per (size, churn), started and made ready; ``render(i)`` asks the
    i-th for a churn and a render and returns its (wall, CPU) seconds. ``trees``: per process, the
    checkout whose benchmark and exporter it runs (PYTHONPATH; None: this one)."""

    def __init__(self, specs: list[tuple[int, str]], trees: list[str | None] | None = None) -> None:
        self.procs = []
        for (n, kind), tree in zip(specs, trees or [None] * len(specs), strict=True):
            script, env = __file__, None
            if tree is not None:
                script = os.path.join(tree, "bench", "bench_scale.py")
                env = {**os.environ, "PYTHONPATH": tree}
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, script, "--serve", str(n), "--churn", kind],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )

    def __enter__(self) -> _RenderServers:
        try:
            for p in self.procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        except BaseException:
            self.__exit__()
            raise
        return self

    def render(self, i: int) -> tuple[float, float]:
        p = self.procs[i]
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("render\n")
        p.stdin.flush()
        w, c = json.loads(p.stdout.readline())
        return w, c

    def __exit__(self, *_: Any) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
            p.wait()


def render_pair_processes(sizes: tuple[int, int], runs: int, churn_kind: str = "realistic") -> dict[str, Any]:
    """The steady render at two sizes, each in its own process as an exporter of that size runs, the
    renders alternated between the two (small, large, large, small, ...) so both meet the same machine
    state: a render is asked of one process, then of the other. Medians as in ``render_pair``."""
    with _RenderServers([(n, churn_kind) for n in sizes]) as servers:
        for i in (0, 1):
            servers.render(i)  # the first scrape after the warm-up: not a steady render
        wall: list[list[float]] = [[], []]
        cpu: list[list[float]] = [[], []]
        for r in range(runs):
            for i in (0, 1) if r % 2 else (1, 0):
                w, c = servers.render(i)
                wall[i].append(w)
                cpu[i].append(c)
    return _pair_summary(sizes, runs, wall, cpu)


CHURNS = ("old", "realistic")


def render_against(sizes: tuple[int, int], runs: int, tree: str, churn_kind: str = "realistic") -> dict[str, Any]:
    """This checkout's render against another's (``tree``: a git worktree of an earlier commit), one
    process per (checkout, size), the four asked for a render in turn (the order reversed every run)
    so all four meet the same machine state: each checkout's steady render at each size (medians),
    its ratio large / small, and this / that at each size (medians of the back-to-back ratios)."""
    specs = [(n, churn_kind) for _ in range(2) for n in sizes]
    with _RenderServers(specs, [tree, tree, None, None]) as servers:
        for i in range(len(specs)):
            servers.render(i)  # the first scrape after the warm-up: not a steady render
        cpu: list[list[float]] = [[] for _ in specs]
        order = list(range(len(specs)))
        for r in range(runs):
            for i in order if r % 2 else reversed(order):
                cpu[i].append(servers.render(i)[1])
    med = [statistics.median(c) * 1e3 for c in cpu]
    return {
        "sizes": list(sizes),
        "runs": runs,
        "cpu_ms": {"that": med[:2], "this": med[2:]},
        "ratio": {
            k: statistics.median(y / x for x, y in zip(cpu[a], cpu[a + 1], strict=True))
            for k, a in (("that", 0), ("this", 2))
        },
        "this_over_that": [statistics.median(y / x for x, y in zip(cpu[j], cpu[2 + j], strict=True)) for j in (0, 1)],
    }


def print_against(q: dict[str, Any], tree: str) -> None:
    small, large = q["sizes"]
    print(
        f"steady render, this checkout against {tree} (one process per checkout and size, four alternated, "
        f"{q['runs']} renders each, CPU ms, medians):"
    )
    for k in ("that", "this"):
        a, b = q["cpu_ms"][k]
        print(f"  {k:5} {small:>6,}: {a:7.1f}  {large:>6,}: {b:7.1f}  {large:,} / {small:,}: {q['ratio'][k]:.2f}x")
    a, b = q["this_over_that"]
    load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    print(f"  this / that: {a:.3f}x at {small:,}, {b:.3f}x at {large:,}; {load}")


def render_churns(sizes: tuple[int, int], runs: int) -> dict[str, Any]:
    """Both churns side by side: one process per (size, churn), four processes, asked for a render in
    turn (the order reversed every run), so all four meet the same machine state. Per churn: the first
    scrape after the warm-up (one churn later) and the steady render of each size (medians), and the
    render ratio large / small (median of the back-to-back ratios); per size, realistic / old."""
    specs = [(n, kind) for kind in CHURNS for n in sizes]
    with _RenderServers(specs) as servers:
        first = [servers.render(i) for i in range(len(specs))]
        wall: list[list[float]] = [[] for _ in specs]
        cpu: list[list[float]] = [[] for _ in specs]
        order = list(range(len(specs)))
        for r in range(runs):
            for i in order if r % 2 else reversed(order):
                w, c = servers.render(i)
                wall[i].append(w)
                cpu[i].append(c)
    out: dict[str, Any] = {"sizes": list(sizes), "runs": runs}
    for k, kind in enumerate(CHURNS):
        a, b = 2 * k, 2 * k + 1
        out[kind] = {
            "first_wall_ms": [first[a][0] * 1e3, first[b][0] * 1e3],
            "first_cpu_ms": [first[a][1] * 1e3, first[b][1] * 1e3],
            "wall_ms": [statistics.median(wall[a]) * 1e3, statistics.median(wall[b]) * 1e3],
            "cpu_ms": [statistics.median(cpu[a]) * 1e3, statistics.median(cpu[b]) * 1e3],
            "cpu_ratio": statistics.median(y / x for x, y in zip(cpu[a], cpu[b], strict=True)),
            "wall_ratio": statistics.median(y / x for x, y in zip(wall[a], wall[b], strict=True)),
        }
    # realistic / old at each size, from the renders asked of the two back to back
    out["realistic_over_old_cpu"] = [
        statistics.median(y / x for x, y in zip(cpu[j], cpu[2 + j], strict=True)) for j in (0, 1)
    ]
    return out


def print_churns(q: dict[str, Any]) -> None:
    small, large = q["sizes"]
    print(f"render by churn (one process per size and churn, four alternated, {q['runs']} renders each, medians):")
    print(
        f"  {'churn':10} {'first ' + f'{small:,}':>18} {'steady ' + f'{small:,}':>18} "
        f"{'first ' + f'{large:,}':>18} {'steady ' + f'{large:,}':>18} {'ratio CPU':>10} {'ratio wall':>10}"
    )
    for kind in CHURNS:
        r = q[kind]
        cells = [
            f"{r['first_wall_ms'][0]:.1f} ({r['first_cpu_ms'][0]:.1f})",
            f"{r['wall_ms'][0]:.1f} ({r['cpu_ms'][0]:.1f})",
            f"{r['first_wall_ms'][1]:.1f} ({r['first_cpu_ms'][1]:.1f})",
            f"{r['wall_ms'][1]:.1f} ({r['cpu_ms'][1]:.1f})",
        ]
        print(
            f"  {kind:10} " + " ".join(f"{c:>18}" for c in cells) + f" {r['cpu_ratio']:9.2f}x {r['wall_ratio']:9.2f}x"
        )
    a, b = q["realistic_over_old_cpu"]
    print(
        f"  wall ms (render thread CPU ms); realistic / old steady render CPU: {a:.2f}x at {small:,}, "
        f"{b:.2f}x at {large:,}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,500,2000,8000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pair-runs", type=int, default=15, help="interleaved renders per size for the ratio")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one size, JSON out
    ap.add_argument("--pair", help=argparse.SUPPRESS)  # child process: two sizes interleaved, JSON out
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # child process: renders on request
    ap.add_argument("--minute-one", type=int, help=argparse.SUPPRESS)  # child process: minute scrapes, JSON out
    ap.add_argument("--minutes", type=int, default=6, help="minute boundaries crossed for the minute scrape line")
    ap.add_argument(
        "--minute",
        action="store_true",
        help="only the first scrape after a minute boundary against the others (sizes 2,000 and 8,000 of --sizes)",
    )
    ap.add_argument(
        "--phases", action="store_true", help="only where the render's CPU goes at each size (one process, alternated)"
    )
    ap.add_argument(
        "--churn",
        choices=CHURNS,
        default="realistic",
        help="what changes between scrapes (RealisticChurn; old: mark and rate)",
    )
    ap.add_argument(
        "--against",
        metavar="TREE",
        help="only the steady render against another checkout's (a worktree of an earlier commit), the first two sizes",
    )
    ap.add_argument(
        "--churns",
        action="store_true",
        help="only the render with each churn side by side (the first two sizes; one process per size and churn)",
    )
    args = ap.parse_args()
    if args.phases:
        sizes = tuple(int(x) for x in args.sizes.split(","))
        phases = render_phases(sizes, args.pair_runs, args.churn)
        print(f"{'phase (CPU ms, medians)':28}" + "".join(f"{n:>10,}" for n in sizes) + "   last / first")
        for k, v in phases.items():
            ratio = f"   {v[-1] / v[0]:.2f}x" if v[0] >= 0.05 else ""
            print(f"{k:28}" + "".join(f"{x:10.2f}" for x in v) + ratio)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        return
    if args.serve:
        render_server(args.serve, args.churn)
        return
    if args.minute_one:
        print(json.dumps(minute_scrapes(args.minute_one, args.minutes, args.churn)))
        return
    if args.minute:
        for n in (int(x) for x in args.sizes.split(",")):
            print_minute(n, args.minutes, args.churn)
        return
    if args.one:
        print(json.dumps(one(args.one, args.runs, args.churn)))
        return
    if args.pair:
        small, large = (int(x) for x in args.pair.split(","))
        print(json.dumps(render_pair((small, large), args.pair_runs, args.churn)))
        return
    if args.against:
        small, large = (int(x) for x in args.sizes.split(",")[:2])
        print_against(render_against((small, large), args.pair_runs, args.against, args.churn), args.against)
        return
    if args.churns:
        small, large = (int(x) for x in args.sizes.split(",")[:2])
        print_churns(render_churns((small, large), args.pair_runs))
        return
    sys.path.insert(0, HERE)
    from bench_scrape import machine

    print(machine())
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--runs", str(args.runs), "--churn", args.churn],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{r['n']:>6} instruments: warm-up render {r['warmup_ms']:7.1f} ms | "
            f"first scrape {r['first_ms']:6.1f} ms (CPU {r['first_cpu_ms']:6.1f}) | "
            f"steady {r['steady_ms']:6.1f} ms (CPU {r['steady_cpu_ms']:6.1f}) | "
            f"ingest apply-only {r['update_us']['mean']:5.2f} us/update, "
            f"frame-to-state {r['frame_update_us']['mean']:5.2f} us/update, "
            f"{r['liquidation_us']:5.2f} us/liquidation | peak RSS {r['rss_mb']:6.1f} MB",
            flush=True,
        )
    by = {r["n"]: r for r in rows}
    if 2000 in by:
        f = by[2000]["first_ms"]
        print(
            f"first scrape at 2,000 <= 150 ms: {'met' if f <= 150 else 'NOT met'} ({f:.1f} ms wall, "
            f"{by[2000]['first_cpu_ms']:.1f} ms CPU; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )
    if 2000 in by and 8000 in by:
        apart = by[8000]["steady_ms"] / by[2000]["steady_ms"]
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--pair",
                "2000,8000",
                "--pair-runs",
                str(args.pair_runs),
                "--churn",
                args.churn,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        p = json.loads(out.strip().splitlines()[-1])
        q = render_pair_processes((2000, 8000), args.pair_runs, args.churn)
        (cs, cl), (ws, wl) = q["cpu_ms"], q["wall_ms"]
        ratio = q["cpu_ratio"]
        print(
            f"steady render 8,000 / 2,000 <= 4.2: {'met' if ratio <= 4.2 else 'NOT met'} ({ratio:.2f}x CPU: "
            f"{cl:.1f} / {cs:.1f} ms; wall {q['wall_ratio']:.2f}x: {wl:.1f} / {ws:.1f} ms; {q['runs']} renders "
            f"of each, one process per size, alternated, medians)"
        )
        (cs, cl), (ws, wl) = p["cpu_ms"], p["wall_ms"]
        print(
            f"  both sizes in one process, interleaved: {p['cpu_ratio']:.2f}x CPU ({cl:.1f} / {cs:.1f} ms), "
            f"wall {p['wall_ratio']:.2f}x ({wl:.1f} / {ws:.1f} ms); the rows above, minutes apart: {apart:.2f}x wall"
        )
    for n in by:
        if n >= 2000:
            print_minute(n, args.minutes, args.churn)
    for n, big in by.items():
        if n <= 100:
            continue
        for what, key in (("apply-only", "update_us"), ("frame-to-state", "frame_update_us")):
            fb, fr = big[key], big[key.replace("_us", "_ref_us")]
            ratio = fb["mean"] / fr["mean"]
            each = ", ".join(f"{ex} {fb[ex]:.3f}/{fr[ex]:.3f}" for ex in fb if ex != "mean")
            print(
                f"ingest per update, {what}, {n:,} / 100 <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'} "
                f"({ratio:.2f}x: {fb['mean']:.3f} / {fr['mean']:.3f} us, mean of the exchanges, interleaved in "
                f"one process; {each})"
            )


if __name__ == "__main__":
    main()
