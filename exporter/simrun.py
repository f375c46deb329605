"""Simulator runs for the baseline's fit and its skill test: the market model stepped directly.

``python -m exporter.simrun --out exporter/sidecar/data`` writes the shipped fit data
(``baseline-samples.csv.gz``, ``baseline-flows.csv.gz``: 240 simulated hours, seed 1);
``fr-exporter fit-baseline`` fits the constants on it. No network and no exporter process: the market model
(:mod:`exporter.sim.market`) is stepped in simulated time, and every read is turned into the rows
the exporter's ``/api/state`` would carry (mark, 8 h funding, its z-score against 30 days of settled
funding with the exporter's own analytics, open interest and its 1 h change, cumulative
liquidations). From there on it is the sidecar's own code: snapshots, the SQLite store's flow
differencing and volatility history, and the baseline's features.

The script: calm periods with cascades at random times (a Poisson process, mean gap
``cascade_gap_hours``), each with a build-up of 20-60 minutes of simulated time (leverage piling in,
funding rising) before the break. The simulator itself runs a build-up for 20-40 seconds; a
longer one here gives hour-scale horizons something to see.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import math
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.analytics.funding import window_stats, zscore
from exporter.model import EIGHT_HOURS
from exporter.sidecar import baseline
from exporter.sidecar.features import snapshots
from exporter.sidecar.store import Store
from exporter.sim.market import MarketModel, Scenario

READ_SECONDS = 60.0  # one /api/state read per simulated minute
SAMPLE_SECONDS = 300.0  # one baseline prediction (feature row) every 5 minutes per base
STEP_SECONDS = 5.0
ZSCORE_WINDOW = 30 * 86400.0
SAMPLE_FIELDS = (
    "t",
    "base",
    "zscore",
    "funding_abs_8h",
    "funding_signed_8h",
    "oi_change_1h",
    "vol_per_sqrt_hour",
    "returns",
    "decayed_flow_usd",
    "open_interest_usd",
)


@dataclass(frozen=True, slots=True)
class RunConfig:
    hours: float = 240.0
    seed: int = 1
    cascade_gap_hours: float = 12.0
    build_minutes: tuple[float, float] = (20.0, 60.0)
    vol_half_life_seconds: float = 3600.0
    flow_half_life_seconds: float = 900.0
    max_gap_seconds: float = 600.0


@dataclass(slots=True)
class RunData:
    samples: list[dict[str, Any]]  # SAMPLE_FIELDS
    flows: list[tuple[float, str, float]]  # (time, base, liquidated USD since the previous read)
    cascades: list[float]  # times the scripted cascades started their build-up


class _History:
    """One instrument's settled funding as the (times, rates) columns the z-score window reads,
    extended as settlements append (the model's history only grows): rebuilding the 30-day lists
    on every read was a third of a run's time."""

    __slots__ = ("rates", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.rates: list[float] = []

    def update(self, records: list[Any]) -> None:
        for r in records[len(self.times) :]:
            self.times.append(r.time_ms / 1000.0)
            self.rates.append(r.rate)


def _state(
    model: MarketModel,
    oi_hist: dict[tuple[str, str], deque[tuple[float, float]]],
    funding: dict[tuple[str, str], _History],
) -> dict[str, Any]:
    """What the exporter's /api/state would show for the model now."""
    rows = []
    now = model.now
    for inst in model.all_instruments():
        spec = inst.spec
        key = (spec.exchange.value, spec.symbol)
        hist = oi_hist.setdefault(key, deque())
        oi = inst.oi_usd
        hist.append((now, oi))
        while len(hist) > 1 and hist[1][0] <= now - 3600.0:
            hist.popleft()
        old_t, old_oi = hist[0]
        change = oi / old_oi - 1.0 if old_oi > 0 and now - old_t >= 3000.0 else None
        settled = funding.setdefault(key, _History())
        settled.update(inst.history)
        stats = window_stats(settled.times, settled.rates, now - ZSCORE_WINDOW)
        rate = inst.funding_8h if spec.continuous else inst.funding_rate
        f8 = inst.funding_8h if spec.continuous else inst.funding_rate * EIGHT_HOURS / spec.interval_s
        liq = {s.value: {"count": c.count, "notional_usd": c.notional_usd} for s, c in inst.liq_all.items()}
        rows.append(
            {
                "exchange": spec.exchange.value,
                "instrument": spec.symbol,
                "base": spec.base,
                "mark_price": inst.mark,
                "index_price": inst.index,
                "premium_ratio": inst.premium,
                "funding_rate": rate,
                "funding_interval_seconds": spec.interval_s,
                "funding_rate_8h": f8,
                "funding_zscore": zscore(rate, stats, 10),
                "open_interest_usd": oi,
                "open_interest_change_1h_ratio": change,
                "liquidations": liq,
            }
        )
    return {"instruments": rows, "events": []}


def _schedule(cfg: RunConfig, rng: np.random.Generator, start: float) -> Iterator[tuple[float, float]]:
    """(start time, build-up seconds) of the scripted cascades."""
    t = start + 3600.0  # an hour of calm first: volatility history
    while True:
        t += float(rng.exponential(cfg.cascade_gap_hours * 3600.0))
        yield t, 60.0 * float(rng.uniform(*cfg.build_minutes))


def run(cfg: RunConfig, progress: bool = False) -> RunData:
    # no dated futures and no minute tape: the baseline reads perpetuals only (both draw from their own
    # random streams, so the perpetuals' run is the same with or without them, at a fraction of the cost)
    model = MarketModel(seed=cfg.seed, instruments_per_exchange=2, crowd_size=120, futures=False, tape=False)
    rng = np.random.default_rng([cfg.seed, 15])
    store = Store(":memory:", cfg.max_gap_seconds)
    start = model.now
    end = start + cfg.hours * 3600.0
    plan = _schedule(cfg, rng, start)
    next_cascade, build = next(plan)
    in_scenario_until = 0.0
    oi_hist: dict[tuple[str, str], deque[tuple[float, float]]] = {}
    funding: dict[tuple[str, str], _History] = {}
    samples: list[dict[str, Any]] = []
    flows: list[tuple[float, str, float]] = []
    cascades: list[float] = []
    next_read = start
    next_sample = start + 3600.0
    while model.now < end:
        if model.now >= next_cascade and model.now >= in_scenario_until:
            model.set_scenario(Scenario.CASCADE, seconds=build)
            cascades.append(model.now)
            in_scenario_until = model.now + build + 12.0 + 120.0
            next_cascade, build = next(plan)
        # the break moves fast: finer steps while a scenario runs
        model.step(STEP_SECONDS if model.scenario == Scenario.CALM else 1.0)
        if model.now < next_read:
            continue
        next_read += READ_SECONDS
        now = model.now
        snaps = snapshots(_state(model, oi_hist, funding), now)
        for base, usd in store.record_state(snaps, now).items():
            flows.append((now, base, usd))
        if now < next_sample:
            continue
        next_sample += SAMPLE_SECONDS
        for base, snap in snaps.items():
            prices = store.prices(base, now - 10 * cfg.vol_half_life_seconds)
            vol, n = baseline.realised_vol(prices, now, cfg.vol_half_life_seconds, cfg.max_gap_seconds)
            f = baseline.features_of(
                snap,
                vol_per_sqrt_hour=vol if n >= 10 else None,
                returns=n,
                decayed_flow_usd=store.decayed_flow(base, now, cfg.flow_half_life_seconds),
            )
            samples.append({"t": now, "base": base, **f.to_dict()})
        if progress:
            print(f"\r{(now - start) / 3600:6.1f} h of {cfg.hours:g}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    store.close()
    return RunData(samples, flows, cascades)


SAMPLES_FILE = "baseline-samples.csv.gz"
FLOWS_FILE = "baseline-flows.csv.gz"


def write(data: RunData, out: Path) -> tuple[Path, Path]:
    """Gzipped CSV (mtime 0: the same run gives the same bytes). Flow rows: non-zero reads, plus each
    base's first and last read (they bound the observed time)."""
    out.mkdir(parents=True, exist_ok=True)
    sp, fp = out / SAMPLES_FILE, out / FLOWS_FILE
    with gzip.GzipFile(sp, "wb", mtime=0) as raw, io.TextIOWrapper(raw, newline="") as f:
        w = csv.writer(f)
        w.writerow(SAMPLE_FIELDS)
        for s in data.samples:
            w.writerow([f"{s['t']:.0f}", *(_cell(s[k]) for k in SAMPLE_FIELDS[1:])])
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for t, base, _ in data.flows:
        first.setdefault(base, t)
        last[base] = t
    with gzip.GzipFile(fp, "wb", mtime=0) as raw, io.TextIOWrapper(raw, newline="") as f:
        w = csv.writer(f)
        w.writerow(("t", "base", "liquidated_usd"))
        for t, base, usd in data.flows:
            if usd > 0 or t in (first[base], last[base]):
                w.writerow((f"{t:.0f}", base, f"{usd:.0f}"))
    return sp, fp


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.5g}" if math.isfinite(v) else ""
    return str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporter.simrun", description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=RunConfig().hours)
    p.add_argument("--seed", type=int, default=RunConfig().seed)
    p.add_argument("--cascade-gap-hours", type=float, default=RunConfig().cascade_gap_hours)
    p.add_argument("--out", type=Path, default=Path("exporter/sidecar/data"))
    args = p.parse_args(argv)
    data = run(RunConfig(hours=args.hours, seed=args.seed, cascade_gap_hours=args.cascade_gap_hours), progress=True)
    sp, fp = write(data, args.out)
    print(f"{len(data.samples)} samples -> {sp}, {len(data.flows)} reads -> {fp}, {len(data.cascades)} cascades")
    return 0


if __name__ == "__main__":
    sys.exit(main())
