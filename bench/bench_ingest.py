"""Ingest benchmark: exchange frames -> parse_ws -> MarketState.apply_many, without network.

Builds frames for 2,000 instruments (500 per exchange) shaped like the recorded samples, pushes them
through the real parsers and the state store for about 3 s per exchange, and prints instrument
updates per CPU-second of this process (median of several runs) next to plain ``orjson.loads`` of
the same bytes, measured interleaved with it so that both see the same (noisy) machine.

Run: ``.venv/bin/python bench/bench_ingest.py [--seconds 3] [--runs 5]``. Prints figures; not a test.

``--futures``: the same market with the term structure on (issue 11): 8 dated futures per exchange
(BTC and ETH, four expiries each) registered and their frames (the simulator's wire shapes) mixed
into the stream, measured interleaved with the market without them; prints the cost per update of
both and the ratio (target: within 10 %).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, InstrumentInfo
from exporter.state import MarketState

N = 500  # instruments per exchange
T0 = 1_765_541_474_086  # ms, a recent timestamp
NEXT_FUNDING = 1_765_555_200_000


def _rate(rng: random.Random) -> float:
    """A funding rate as usually seen (around 0.01 %), below the threshold-event level of state."""
    return rng.gauss(1e-4, 5e-5)


def _px(rng: random.Random) -> float:
    return round(10 ** rng.uniform(-2, 4.8), 4)


def binance(rng: random.Random) -> tuple[list[InstrumentInfo], list[bytes]]:
    syms = [f"C{n:03d}USDT" for n in range(N)]
    infos = [InstrumentInfo(Exchange.BINANCE, s, s[:-4], "USDT", funding_interval_s=28800.0) for s in syms]
    frames = []
    for k in range(20):  # 20 different one-second snapshots of the whole market
        rows = []
        for s in syms:
            p = _px(rng)
            rows.append(
                {
                    "e": "markPriceUpdate",
                    "E": T0 + k * 1000,
                    "s": s,
                    "p": f"{p:.8f}",
                    "ap": f"{p * 1.0001:.8f}",
                    "P": f"{p * 0.9999:.8f}",
                    "i": f"{p * 0.9998:.8f}",
                    "r": f"{_rate(rng):.8f}",
                    "T": NEXT_FUNDING,
                }
            )
        frames.append(orjson.dumps({"stream": "!markPrice@arr@1s", "data": rows}))
    return infos, frames


def bybit(rng: random.Random) -> tuple[list[InstrumentInfo], list[bytes]]:
    syms = [f"C{n:03d}USDT" for n in range(N)]
    infos = [InstrumentInfo(Exchange.BYBIT, s, s[:-4], "USDT", funding_interval_s=28800.0) for s in syms]
    frames = []
    for k, s in enumerate(syms * 4):
        p = _px(rng)
        if k < N:  # one snapshot per symbol, then deltas (most of a live tickers stream)
            data = {
                "symbol": s,
                "tickDirection": "PlusTick",
                "price24hPcnt": "0.017103",
                "lastPrice": f"{p:.4f}",
                "prevPrice24h": f"{p * 0.98:.4f}",
                "highPrice24h": f"{p * 1.02:.4f}",
                "lowPrice24h": f"{p * 0.97:.4f}",
                "prevPrice1h": f"{p:.4f}",
                "markPrice": f"{p:.4f}",
                "indexPrice": f"{p * 1.0003:.4f}",
                "openInterest": "68744.761",
                "openInterestValue": "1183601235.91",
                "turnover24h": "1570383121.943499",
                "volume24h": "91705.276",
                "nextFundingTime": str(NEXT_FUNDING),
                "fundingRate": "-0.000212",
                "bid1Price": f"{p:.4f}",
                "bid1Size": "84.489",
                "ask1Price": f"{p * 1.0001:.4f}",
                "ask1Size": "83.020",
                "fundingIntervalHour": "8",
                "fundingCap": "0.005",
            }
            kind = "snapshot"
        else:
            data = {
                "symbol": s,
                "price24hPcnt": "0.023362",
                "markPrice": f"{p:.4f}",
                "indexPrice": f"{p * 1.0003:.4f}",
                "openInterest": f"{rng.uniform(1e3, 1e6):.3f}",
                "fundingRate": f"{_rate(rng):.6f}",
                "bid1Price": f"{p:.4f}",
                "bid1Size": "340549",
                "ask1Price": f"{p * 1.0001:.4f}",
                "ask1Size": "70817",
            }
            kind = "delta"
        frames.append(
            orjson.dumps({"topic": f"tickers.{s}", "type": kind, "data": data, "cs": 20856433578 + k, "ts": T0 + k})
        )
    return infos, frames


def okx(rng: random.Random) -> tuple[list[InstrumentInfo], list[bytes]]:
    insts = [f"C{n:03d}-USDT-SWAP" for n in range(N)]
    infos = [InstrumentInfo(Exchange.OKX, i, i.split("-")[0], "USDT", contract_size=0.01) for i in insts]
    frames = []
    for k, inst in enumerate(insts * 2):
        p = _px(rng)
        ts = str(T0 + k)
        frames.append(
            orjson.dumps(
                {
                    "arg": {"channel": "mark-price", "instId": inst},
                    "data": [{"instId": inst, "instType": "SWAP", "markPx": f"{p:.4f}", "ts": ts}],
                }
            )
        )
        frames.append(
            orjson.dumps(
                {
                    "arg": {"channel": "index-tickers", "instId": inst[:-5]},
                    "data": [
                        {
                            "instId": inst[:-5],
                            "idxPx": f"{p * 0.9999:.4f}",
                            "open24h": "63848.2",
                            "high24h": "64360.7",
                            "low24h": "63265.5",
                            "sodUtc0": "63465.3",
                            "sodUtc8": "64075.9",
                            "ts": ts,
                        }
                    ],
                }
            )
        )
        if k % 2 == 0:
            frames.append(
                orjson.dumps(
                    {
                        "arg": {"channel": "open-interest", "instId": inst},
                        "data": [
                            {
                                "instId": inst,
                                "instType": "SWAP",
                                "oi": "644195",
                                "oiCcy": "6441.95",
                                "oiUsd": f"{6441.95 * p:.2f}",
                                "ts": ts,
                            }
                        ],
                    }
                )
            )
        if k % 4 == 0:
            frames.append(
                orjson.dumps(
                    {
                        "arg": {"channel": "funding-rate", "instId": inst},
                        "data": [
                            {
                                "formulaType": "withRate",
                                "fundingRate": f"{_rate(rng):.16f}",
                                "fundingTime": str(NEXT_FUNDING),
                                "impactValue": "10000.0000000000000000",
                                "instId": inst,
                                "instType": "SWAP",
                                "interestRate": "0.0001000000000000",
                                "maxFundingRate": "0.00375",
                                "method": "current_period",
                                "minFundingRate": "-0.00375",
                                "nextFundingRate": "",
                                "nextFundingTime": str(NEXT_FUNDING + 28_800_000),
                                "premium": "-0.0008949500017283",
                                "prevFundingTime": str(NEXT_FUNDING - 28_800_000),
                                "settFundingRate": "-0.0001996513270201",
                                "settState": "settled",
                                "ts": ts,
                            }
                        ],
                    }
                )
            )
    return infos, frames


def deribit(rng: random.Random) -> tuple[list[InstrumentInfo], list[bytes]]:
    insts = ["BTC-PERPETUAL", "ETH-PERPETUAL"] + [f"C{n:03d}_USDC-PERPETUAL" for n in range(N - 2)]
    infos = [
        InstrumentInfo(
            Exchange.DERIBIT,
            i,
            i.split("-")[0].split("_")[0],
            "USD" if "_" not in i else "USDC",
            contract_size=10.0 if "_" not in i else 1.0,
            inverse="_" not in i,
            funding_interval_s=28800.0,
        )
        for i in insts
    ]
    frames = []
    for k, inst in enumerate(insts * 4):
        p = _px(rng)
        data = {
            "timestamp": T0 + k,
            "state": "open",
            "stats": {
                "high": p * 1.02,
                "low": p * 0.97,
                "price_change": 2.3275,
                "volume": 11897.27640428,
                "volume_usd": 1092371540.0,
                "volume_notional": 1092371540.0,
            },
            "index_price": round(p * 0.9998, 4),
            "instrument_name": inst,
            "last_price": p,
            "settlement_price": p,
            "min_price": round(p * 0.98, 4),
            "max_price": round(p * 1.02, 4),
            "open_interest": round(rng.uniform(1e4, 1e9), 1),
            "mark_price": round(p * 1.0001, 4),
            "interest_value": 0.0028213400122472977,
            "best_ask_price": round(p * 1.0001, 4),
            "best_bid_price": p,
            "estimated_delivery_price": round(p * 0.9998, 4),
            "best_ask_amount": 186520.0,
            "best_bid_amount": 117660.0,
            "current_funding": 0.0,
            "funding_8h": _rate(rng),
        }
        frames.append(
            orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "subscription",
                    "params": {"channel": f"ticker.{inst}.100ms", "data": data},
                }
            )
        )
    return infos, frames


BUILDERS: dict[Exchange, Callable[[random.Random], tuple[list[InstrumentInfo], list[bytes]]]] = {
    Exchange.BINANCE: binance,
    Exchange.BYBIT: bybit,
    Exchange.OKX: okx,
    Exchange.DERIBIT: deribit,
}


def _timed(fn: Callable[[], int], seconds: float) -> tuple[int, float]:
    """Repeat fn (one pass over the frames, returns updates) for about `seconds` of CPU time.

    (updates, CPU seconds of this process). CPU time rather than wall time: the machine is shared,
    and other processes' load must not count as this code's cost.
    """
    total = 0
    clock = time.process_time
    start = clock()
    deadline = start + seconds
    while True:
        total += fn()
        now = clock()
        if now >= deadline:
            return total, now - start


def measure(
    ex: Exchange, infos: list[InstrumentInfo], frames: list[bytes], seconds: float, runs: int
) -> tuple[int, float, float, float]:
    """(updates in one pass, median ingest updates/s, best ingest updates/s, median orjson frames/s)."""
    feed = feed_for(ex)
    state = MarketState()
    for info in infos:
        state.register(info)
    # as the connection: bounds near now, and the settlements passed on remembered (OKX repeats the last
    # one in every funding push; the exporter's context passes it on once)
    ctx = FeedContext(ex, {i.instrument: i for i in infos}, clock=time.time, settled={})
    state.bind(ctx)  # the state's handles (the exporter's contexts have them: app._bind)
    parse = feed.parse_ws
    apply_many = state.apply_many
    loads = orjson.loads

    def ingest() -> int:
        n = 0
        for f in frames:
            recs = parse(f, ctx)
            apply_many(recs)
            n += len(recs)
        return n

    def decode_only() -> int:
        for f in frames:
            loads(f)
        return len(frames)

    per_pass = ingest()  # warm up, and the update count of one pass
    if state.unknown_instrument_updates:
        raise SystemExit(f"{ex}: updates for unknown instruments: the benchmark frames are wrong")
    rates, json_rates = [], []
    gc.collect()
    gc.freeze()  # as the exporter does once started: state and instruments leave the collector's scans
    per_run = seconds / runs
    for _ in range(runs):  # interleaved, so both see the same machine state (it is noisy)
        n, dt = _timed(ingest, per_run * 0.8)
        rates.append(n / dt)
        n, dt = _timed(decode_only, per_run * 0.2)
        json_rates.append(n / dt)
    return per_pass, statistics.median(rates), max(rates), statistics.median(json_rates)


def futures_of(ex: Exchange) -> tuple[list[InstrumentInfo], list[bytes]]:
    """8 dated futures and 20 one-second frames of each, in the exchange's own wire shape."""
    from datetime import UTC, datetime

    from exporter.sim import futures_wire as fw
    from exporter.sim.curve import DatedFuture, symbol_of

    now = T0 / 1000.0
    infos, futs = [], []
    for base, px in (("BTC", 90_000.0), ("ETH", 3_000.0)):
        for q in range(4):
            expiry = now + (q + 1) * 91 * 86400.0
            day = datetime.fromtimestamp(expiry, tz=UTC).date()
            sym, quote, inverse, ct = symbol_of(ex, base, day)
            f = DatedFuture(ex, sym, base, quote, inverse, ct, expiry, now, day, mark=px * 1.01, index=px)
            futs.append(f)
            infos.append(InstrumentInfo(ex, sym, base, quote, ct, inverse, expiry=expiry))
    frames = []
    for k in range(20):
        t = now + k
        for f in futs:
            f.mark *= 1.0001
            if ex is Exchange.BINANCE:
                msg: dict[str, object] = {"stream": f"{f.symbol.lower()}@markPrice@1s", "data": fw.binance_mark(f, t)}
            elif ex is Exchange.BYBIT:
                msg = fw.bybit_ticker(f, t)
            elif ex is Exchange.OKX:
                msg = fw.okx_mark(f, t)
            else:
                msg = fw.deribit_ticker(f, t)
            frames.append(orjson.dumps(msg))
    return infos, frames


def compare_futures(seconds: float, runs: int) -> None:
    """Cost per update with and without the dated futures, measured interleaved."""
    rng = random.Random(7)
    print(f"{'exchange':<9} {'us/update off':>14} {'us/update on':>13} {'ratio':>7} {'futures upd/pass':>17}")
    ratios = []
    for ex, build in BUILDERS.items():
        infos, frames = build(rng)
        finfos, fframes = futures_of(ex)
        feed = feed_for(ex)
        variants = []
        for on in (False, True):
            state = MarketState()
            for info in infos:
                state.register(info)
            ctx = FeedContext(
                ex, {i.instrument: i for i in infos}, clock=time.time, settled={}
            )  # as the connection: bounds near now, settlements passed on once
            mixed = list(frames)
            if on:
                state.set_futures(ex, finfos)
                ctx = FeedContext(ex, {i.instrument: i for i in (*infos, *finfos)}, settled={})
                step = max(1, len(frames) // len(fframes))  # spread the futures frames through the market's
                for n, f in enumerate(fframes):
                    mixed.insert(min(len(mixed), (n + 1) * step + n), f)

            def ingest(
                mixed: list[bytes] = mixed,
                ctx: FeedContext = ctx,
                state: MarketState = state,
                parse: Any = feed.parse_ws,
            ) -> int:
                n = 0
                for f in mixed:
                    recs = parse(f, ctx)
                    state.apply_many(recs)
                    n += len(recs)
                return n

            ingest()
            if state.unknown_instrument_updates:
                raise SystemExit(f"{ex}: updates for unknown instruments: the benchmark frames are wrong")
            variants.append((ingest, state))
        off_rates, on_rates = [], []
        gc.collect()
        gc.freeze()
        for _ in range(runs):
            n, dt = _timed(variants[0][0], seconds / runs / 2)
            off_rates.append(n / dt)
            n, dt = _timed(variants[1][0], seconds / runs / 2)
            on_rates.append(n / dt)
        us_off, us_on = 1e6 / statistics.median(off_rates), 1e6 / statistics.median(on_rates)
        ratios.append(us_on / us_off)
        futs = sum(len(feed.parse_ws(f, FeedContext(ex, {i.instrument: i for i in finfos}))) for f in fframes)
        print(f"{ex.value:<9} {us_off:>14.3f} {us_on:>13.3f} {us_on / us_off:>7.3f} {futs:>17}")
    worst = max(ratios)
    print(f"worst ratio {worst:.3f}: {'within' if worst <= 1.10 else 'NOT within'} 10 % of the per-update cost")


def run(seconds: float, runs: int) -> None:
    rng = random.Random(7)
    print(
        f"{'exchange':<9} {'frames':>7} {'upd/pass':>8} {'updates/s':>12} {'best run':>10} {'orjson frames/s':>16} "
        f"{'orjson-equiv upd/s':>19} {'cost vs orjson':>15}"
    )
    inv_rate = inv_best = inv_json = 0.0
    for ex, build in BUILDERS.items():
        infos, frames = build(rng)
        per_pass, rate, best, json_frames = measure(ex, infos, frames, seconds, runs)
        json_updates = json_frames * per_pass / len(frames)  # updates/s if only decoding were done
        inv_rate += 1.0 / rate
        inv_best += 1.0 / best
        inv_json += 1.0 / json_updates
        print(
            f"{ex.value:<9} {len(frames):>7} {per_pass:>8} {rate:>12,.0f} {best:>10,.0f} {json_frames:>16,.0f} "
            f"{json_updates:>19,.0f} {json_updates / rate:>14.2f}x"
        )
    # Every instrument of the four exchanges updated once: total updates / total time (harmonic mean).
    overall = len(BUILDERS) / inv_rate
    overall_json = len(BUILDERS) / inv_json
    print(
        f"{'overall':<9} {'':>7} {'':>8} {overall:>12,.0f} {len(BUILDERS) / inv_best:>10,.0f} {'':>16} "
        f"{overall_json:>19,.0f} {overall_json / overall:>14.2f}x"
    )
    print(f"target 250,000 instrument updates/s on one core: {'met' if overall >= 250_000 else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per exchange")
    ap.add_argument("--runs", type=int, default=5, help="runs per exchange (the median is printed)")
    ap.add_argument("--futures", action="store_true", help="compare the per-update cost with the dated futures on")
    args = ap.parse_args()
    if args.futures:
        compare_futures(args.seconds, args.runs)
    else:
        run(args.seconds, args.runs)


if __name__ == "__main__":
    main()
