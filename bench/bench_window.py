"""The once-a-minute appends to full windows (exporter.state.Window), alone: per instrument and minute,
the mark minute's close, the open-interest sample and the anchor sample, each appended to its full
window (248, 256 and 362 records, as the store keeps them), the instruments in a new random order
every minute. Printed: the mean cost of one instrument's minute (three appends) over all the timed
minutes (a window's occasional copy included, shared out), and the median minute, at each size.

The instruments' windows start at different points of their trims (a random number of minutes run
before the timing), as a running exporter's do. ``--against TREE``: the Window class of another tree
(its exporter/state.py loaded as a module of its own) on a second set of instruments, the two sets'
minutes alternated in the same process (both meet the same machine state); printed side by side with
the ratio, and the share of minutes this tree's was the cheaper.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from exporter.state import MARK_MINUTES, OI_SPAN_SECONDS, Window
from exporter.trackers import ANCHOR_SAMPLE_SECONDS

ANCHOR_SPAN = 6 * 3600.0 + ANCHOR_SAMPLE_SECONDS  # MarketState's default anchor span


def _windows(n: int, rng: random.Random, cls: Any = Window) -> list[tuple[Any, Any, Any, list[float]]]:
    out = []
    for _ in range(n):
        mark = cls(2, MARK_MINUTES)
        oi = cls(2, 300, OI_SPAN_SECONDS)
        anchor = cls(3, 2000, ANCHOR_SPAN)
        t = 0.0
        for _ in range(400):  # full, then some minutes more: the trims at different points
            t += 60.0
            mark.append((t, 100.0))
            oi.append((t, 1e6))
            anchor.append((t, 1e-4, 1e-5))
        for _ in range(rng.randrange(100)):
            t += 60.0
            mark.append((t, 100.0))
            oi.append((t, 1e6))
            anchor.append((t, 1e-4, 1e-5))
        out.append((mark, oi, anchor, [t]))
    return out


def _minute(insts: list[tuple[Any, Any, Any, list[float]]], rng: random.Random) -> float:
    """One minute of every instrument: us an instrument."""
    rng.shuffle(insts)
    t0 = time.perf_counter_ns()
    for mark, oi, anchor, last in insts:
        t = last[0] = last[0] + 60.0
        mark.append((t, 100.0))
        oi.append((t, 1e6))
        anchor.append((t, 1e-4, 1e-5))
    return (time.perf_counter_ns() - t0) / len(insts) / 1000.0


def _other_window(tree: str) -> Any:
    spec = importlib.util.spec_from_file_location("_other_state", Path(tree) / "exporter" / "state.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_other_state"] = mod
    spec.loader.exec_module(mod)
    return mod.Window


def run(n: int, minutes: int, seed: int, other: Any = None) -> None:
    rng = random.Random(seed)
    sides = [_windows(n, random.Random(seed))]
    if other is not None:
        sides.append(_windows(n, random.Random(seed), other))
    times: list[list[float]] = [[] for _ in sides]
    for m in range(minutes):
        for k in range(len(sides)) if m % 2 == 0 else reversed(range(len(sides))):
            times[k].append(_minute(sides[k], rng))
    this = times[0]
    mean, median = statistics.fmean(this), statistics.median(this)
    line = f"{n:>6} instruments: {mean:.3f} us an instrument-minute (mean), median {median:.3f}"
    if other is not None:
        before = times[1]
        lower = sum(a < b for a, b in zip(this, before, strict=True)) / minutes
        line += (
            f"; other tree {statistics.fmean(before):.3f}, median {statistics.median(before):.3f}:"
            f" {mean / statistics.fmean(before):.2f}x of the mean, this tree cheaper in {lower:.0%} of the minutes"
        )
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,8000")
    ap.add_argument("--minutes", type=int, default=180, help="timed minutes per size (default 180)")
    ap.add_argument("--against", metavar="TREE", help="another tree's Window, alternated minute by minute")
    args = ap.parse_args()
    other = _other_window(args.against) if args.against else None
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, args.minutes, n, other)


if __name__ == "__main__":
    main()
