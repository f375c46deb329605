"""Memory benchmark: resident set size at 2,000 instruments with full windows.

Builds the same state as bench_scrape.py (settlements over the whole z-score window, 6 h of anchor
samples, 3 h of OI samples, liquidations), registers the collectors, scrapes twice (so the label
and window caches are filled) and prints RSS before and after, and the peak. Target: <= 250 MB.
``--worst`` fills the settlement and anchor deques to their bounds (2,000 each): where a process
that runs for days ends up, because state trims those deques by count, not by time window.

Run: ``.venv/bin/python bench/bench_memory.py [--per-exchange 500] [--worst]``. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scrape import build_state, machine

from exporter.metrics import build_registry


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _deep_size(obj: object) -> int:
    """Bytes of a tuple and the floats in it (enum members and other shared objects not counted)."""
    size = sys.getsizeof(obj)
    if isinstance(obj, tuple):
        size += sum(sys.getsizeof(x) for x in obj if isinstance(x, float))
    return size


def breakdown(state) -> list[tuple[str, float]]:
    """Estimated bytes per rolling window of the state (deque slots + tuples + floats)."""
    out = []
    for attr in ("settlements", "anchor_samples", "oi_samples", "liq_recent"):
        total = 0
        for st in state.snapshot():
            dq = getattr(st, attr)
            total += sys.getsizeof(dq)
            if dq:
                total += len(dq) * _deep_size(dq[-1])
        out.append((f"InstrumentState.{attr}", total / 2**20))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-exchange", type=int, default=500)
    ap.add_argument("--worst", action="store_true", help="settlement and anchor deques at their bounds (2,000 each)")
    args = ap.parse_args()
    print(machine())
    gc.collect()
    base = status_mb("VmRSS")
    print(f"RSS after imports (python, numpy, prometheus_client, pydantic): {base:7.1f} MB")
    _clock, state, cfg = build_state(args.per_exchange, args.worst)
    gc.collect()
    after_state = status_mb("VmRSS")
    n = len(state.instruments)
    settlements = sum(len(s.settlements) for s in state.snapshot())
    print(
        f"state: {n} instruments, {settlements} settlements, "
        f"{sum(len(s.anchor_samples) for s in state.snapshot())} anchor samples, "
        f"{sum(len(s.liq_recent) for s in state.snapshot())} recent liquidations"
    )
    print(
        f"RSS with state                                                : {after_state:7.1f} MB "
        f"(+{after_state - base:.1f})"
    )
    for name, mb in breakdown(state):
        print(f"  ~{mb:6.1f} MB  {name}")
    reg = build_registry(cfg, state)
    body = reg.render()
    reg.render(openmetrics=True)
    body = reg.render()
    gc.collect()
    rss = status_mb("VmRSS")
    peak = status_mb("VmHWM")
    print(
        f"RSS with registry, caches filled, one {len(body) / 1e6:.1f} MB scrape held        : {rss:7.1f} MB "
        f"(+{rss - after_state:.1f})"
    )
    print(f"peak RSS (VmHWM)                                              : {peak:7.1f} MB")
    print(f"per instrument (state + caches)                               : {(rss - base) * 1024 / n:7.1f} KB")
    print(f"target <= 250 MB: {'met' if peak <= 250 else 'NOT met'} (peak {peak:.0f} MB)")


if __name__ == "__main__":
    main()
