"""Cache lines an update touches on Binance's all-market arrays, counted deterministically.

Runs itself under valgrind's callgrind with its cache simulation (D1 48 KB 12-way, LL 2 MB 16-way by
default, ``--LL``), ``PYTHONHASHSEED=0``, once per size: the state built as ``bench_scale`` builds it
(uninstrumented), one untimed pass of ``bench_scale``'s Binance frames and the housekeeping step as the
app does it (the relayout, the parser's instruments in the array's order), then instrumented: a few
seconds of frames to warm the simulated caches, then ``--seconds`` seconds of frames, each frame built
uncounted and then put through ``parse_ws`` and ``apply_many`` counted (callgrind's client requests,
through a two-line C helper compiled here with gcc). Prints per update: instructions, D1 and LL read and
write misses, and per function the misses the largest size adds to the smallest.

The simulator models no prefetcher: a line read in memory order counts like a random one, so it tells
which structures an update touches, not what the hardware hides. docs/scaling.md, session 7 (bin8).

Run: ``.venv/bin/python bench/cache_binance.py [--sizes 100,8000] [--seconds 60]`` (valgrind, gcc and
valgrind's headers needed; a few minutes at 8,000). Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER_C = """#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
"""
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")


def child(n: int, seconds: int, helper: str) -> None:
    """Under valgrind: build, warm, then count ``seconds`` seconds of Binance frames."""
    sys.path.insert(0, HERE)
    import bench_scale as B
    from bench_scrape import build_state

    from exporter.feeds import feed_for
    from exporter.feeds.base import FeedContext
    from exporter.model import Exchange

    ex = Exchange.BINANCE
    clock, state, _ = build_state(max(1, n // 4))
    gc.collect()
    gc.freeze()
    infos = {i: st.info for (e, i), st in state.instruments.items() if e is ex}
    ctx = FeedContext(ex, infos, clock=clock, settled={})
    syms = list(infos)
    random.Random(5).shuffle(syms)  # the exchange's own order (bench_scale's FrameIngest)
    parse = feed_for(ex).parse_ws
    walk = B.Walk(7)
    step = B.array_seconds(len(syms))  # the seconds a frame holds (a small market's several, as FrameIngest's)

    def frames() -> tuple[float, list[bytes]]:
        clock.t += step
        return clock.t, [
            f
            for k in range(0, len(syms), B.FRAME_UPDATES)
            for f in B._frames(ex, syms[k : k + B.FRAME_UPDATES], clock.t, walk, step)
        ]

    ctx.take_array_order()
    for _ in range(3):
        now, fs = frames()
        for f in fs:
            state.apply_many(parse(f, ctx), now)
    state.relayout(ex, ctx.take_array_order())  # the app's housekeeping step (Exporter._relayout)
    ctx.follow_order(state.record_ids(ex))
    cg = ctypes.CDLL(helper)
    cg.cg_start()
    for _ in range(2):  # warm the simulated caches, not counted
        now, fs = frames()
        for f in fs:
            state.apply_many(parse(f, ctx), now)
    updates = 0
    for _ in range(-(-seconds // step)):  # as FrameIngest: a frame built, then parsed and applied while in the cache
        clock.t += step
        now = clock.t
        for k in range(0, len(syms), B.FRAME_UPDATES):
            for f in B._frames(ex, syms[k : k + B.FRAME_UPDATES], now, walk, step):
                cg.cg_toggle()
                recs = parse(f, ctx)
                state.apply_many(recs, now)
                cg.cg_toggle()
                updates += len(recs)
    if state.unknown_instrument_updates or state.rejected_records:
        raise SystemExit("frames for unknown instruments or rejected: the benchmark frames are wrong")
    print(f"updates {updates}")


def per_function(out: str) -> dict[str, list[int]]:
    """Self cost per function of a callgrind output file (callgrind_annotate's table)."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", out], capture_output=True, text=True, check=True
    ).stdout
    rows: dict[str, list[int]] = {}
    started = False
    for line in text.splitlines():
        if "file:function" in line:
            started = True
            continue
        parts = re.sub(r"\([^)]*\)", "", line).replace(",", "").split()
        nums: list[int] = []
        while parts and (parts[0].isdigit() or parts[0] == "."):
            tok = parts.pop(0)
            nums.append(0 if tok == "." else int(tok))
        if not started or len(nums) != len(EVENTS) or not parts:
            continue
        name = " ".join(parts).split(" [")[0].rsplit(":", 1)[-1]
        acc = rows.setdefault(name, [0] * len(EVENTS))
        for i, v in enumerate(nums):
            acc[i] += v
    return rows


def measure(n: int, seconds: int, helper: str, ll: str, tmp: str) -> tuple[int, dict[str, list[int]], list[int]]:
    out = os.path.join(tmp, f"callgrind.{n}.out")
    cmd = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no", "--cache-sim=yes",
        f"--LL={ll}", f"--callgrind-out-file={out}", sys.executable, os.path.abspath(__file__),
        "--child", str(n), "--seconds", str(seconds), "--helper", helper,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    updates = int(re.search(r"updates (\d+)", run.stdout).group(1))  # type: ignore[union-attr]
    rows = per_function(out)
    totals = [sum(r[i] for r in rows.values()) for i in range(len(EVENTS))]
    return updates, rows, totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,8000")
    ap.add_argument(
        "--seconds", type=int, default=60, help="seconds of frames counted (whole minutes: the minute's work)"
    )
    ap.add_argument("--LL", dest="ll", default="2097152,16,64", help="the simulated last-level cache (size,ways,line)")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--helper", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.seconds, args.helper)
        return
    missing = [t for t in ("valgrind", "callgrind_annotate", "gcc") if shutil.which(t) is None]
    if missing or not os.path.exists("/usr/include/valgrind/callgrind.h"):
        raise SystemExit(f"needs valgrind, its headers and gcc (missing: {', '.join(missing) or 'callgrind.h'})")
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        src, helper = os.path.join(tmp, "cg.c"), os.path.join(tmp, "libcg.so")
        with open(src, "w") as f:
            f.write(HELPER_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", helper, src], check=True)
        results: dict[int, Any] = {n: measure(n, args.seconds, helper, args.ll, tmp) for n in sizes}
    print(
        f"Binance all-market arrays, {args.seconds} s of frames; callgrind cache simulation, LL {args.ll}; per update:"
    )
    for n, (updates, _, t) in results.items():
        e = dict(zip(EVENTS, (v / updates for v in t), strict=True))
        print(
            f"  {n:>6,} instruments ({updates:,} updates): {e['Ir']:,.0f} instructions, D1 misses read {e['D1mr']:.2f} "
            f"write {e['D1mw']:.2f}, LL misses read {e['DLmr']:.3f} write {e['DLmw']:.3f}"
        )
    (ua, ra, _), (ub, rb, _) = results[sizes[0]], results[sizes[-1]]
    zero = [0] * len(EVENTS)

    def extra(name: str, ev: str) -> float:
        i = EVENTS.index(ev)
        return rb.get(name, zero)[i] / ub - ra.get(name, zero)[i] / ua

    def weight(name: str) -> float:
        return abs(extra(name, "D1mr")) + abs(extra(name, "D1mw")) + abs(extra(name, "DLmr")) + abs(extra(name, "DLmw"))

    print(f"  misses an update at {sizes[-1]:,} less at {sizes[0]:,}, by function (D1 read, write; LL read, write):")
    for name in sorted(set(ra) | set(rb), key=weight, reverse=True)[: args.top]:
        print(
            f"    {name[:44]:44s} {extra(name, 'D1mr'):+6.2f} {extra(name, 'D1mw'):+6.2f} "
            f"{extra(name, 'DLmr'):+7.3f} {extra(name, 'DLmw'):+7.3f}"
        )


if __name__ == "__main__":
    main()
