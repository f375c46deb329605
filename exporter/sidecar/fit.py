"""``fr-exporter fit-baseline``: fit the baseline's constants to observed liquidation flow.

Data: feature rows (the baseline's inputs at the moment of a prediction) and the liquidation flow
observed afterwards, per base asset. Two sources, the same method:

- the shipped simulator run, ``exporter/sidecar/data/baseline-{samples,flows}.csv.gz`` (written by
  ``python -m exporter.simrun``), from which the shipped defaults come;
- a user's own prediction store (``--db``): the baseline stores its inputs with every prediction
  and the store keeps the flow of every read.

For each horizon H the outcome of a row at time t is "liquidated notional in (t, t+H] >= the event
threshold" (the sidecar's own scoring rule). The constants minimise the mean over the horizons of
Brier / Brier of climatology (i.e. maximise the mean Brier skill score, so a short horizon with a
low base rate weighs as much as a long one), by coordinate descent over fixed log-spaced grids:
deterministic, no optimiser dependency, and every step is printed with ``--verbose``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from exporter.sidecar.baseline import JUDGEMENT, Features, Params, probabilities
from exporter.sidecar.metrics import horizon_label
from exporter.sidecar.store import Store

SAMPLES_FILE = "baseline-samples.csv.gz"  # as written by exporter.simrun
FLOWS_FILE = "baseline-flows.csv.gz"

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_HORIZONS = (0.25, 1.0, 4.0, 8.0)
FEATURE_COLUMNS = ("zscore", "funding_abs_8h", "oi_change_1h", "vol_per_sqrt_hour", "decayed_flow_usd")

# The fitted constants and their grids (coordinate descent tries every value of one, the others fixed).
GRIDS: dict[str, tuple[float, ...]] = {
    "calm_distance": tuple(float(x) for x in np.geomspace(0.002, 0.5, 31)),
    "distance_decay": tuple(float(x) for x in np.linspace(0.0, 2.0, 21)),
    "stress_weight": tuple(float(x) for x in np.linspace(0.0, 1.2, 13)),
    "flow_scale": (0.0, *(float(x) for x in np.geomspace(0.001, 10.0, 41))),
    "flow_persistence_seconds": tuple(float(x) for x in np.geomspace(60.0, 8 * 3600.0, 23)),
    "background_rate_per_hour": (0.0, *(float(x) for x in np.geomspace(0.001, 1.0, 31))),
}
PASSES = 6
# Coordinate descent finds a local optimum: it starts from each of these and keeps the best.
STARTS: tuple[dict[str, float], ...] = (
    {},  # the judgement constants the baseline had before it was fitted
    {"calm_distance": 0.1, "distance_decay": 1.0, "stress_weight": 0.6, "background_rate_per_hour": 0.05},
    {"calm_distance": 0.2, "background_rate_per_hour": 0.1, "flow_scale": 0.0},
)


@dataclass(slots=True)
class FitData:
    times: np.ndarray
    bases: np.ndarray  # str
    cols: dict[str, np.ndarray]
    flows: dict[str, tuple[np.ndarray, np.ndarray]]  # base -> (read times, cumulative USD)
    source: str
    # (horizon, threshold) -> outcomes and the observed rows' columns: the same for every trial of a fit
    _observed: dict[tuple[float, float], tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.times.size)

    def outcomes(self, horizon_hours: float, threshold_usd: float) -> tuple[np.ndarray, np.ndarray]:
        """(mask of rows observed to the end of the horizon, outcome of those rows)."""
        h = horizon_hours * 3600.0
        known = np.zeros(len(self), dtype=bool)
        liquidated = np.zeros(len(self))
        for base, (t, cum) in self.flows.items():
            rows = self.bases == base
            if not t.size or not rows.any():
                continue
            start, end = self.times[rows], self.times[rows] + h
            # flows at reads in (start, end]: cumulative at end minus cumulative at start
            i_end = np.searchsorted(t, end, side="right") - 1
            at_end = np.where(i_end >= 0, cum[np.clip(i_end, 0, None)], 0.0)
            i_start = np.searchsorted(t, start, side="right") - 1
            at_start = np.where(i_start >= 0, cum[np.clip(i_start, 0, None)], 0.0)
            liquidated[rows] = at_end - at_start
            known[rows] = end <= t[-1]
        return known, liquidated[known] >= threshold_usd

    def observed(self, horizon_hours: float, threshold_usd: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(outcomes, feature columns) of the rows observed to the end of the horizon, computed once."""
        key = (horizon_hours, threshold_usd)
        if key not in self._observed:
            known, y = self.outcomes(horizon_hours, threshold_usd)
            self._observed[key] = (y, {k: v[known] for k, v in self.cols.items()})
        return self._observed[key]


def _flows_from(rows: Sequence[tuple[float, str, float]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for t, base, usd in rows:
        out.setdefault(base, []).append((t, usd))
    result: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for base, pairs in out.items():
        pairs.sort()
        result[base] = (np.array([p[0] for p in pairs]), np.cumsum([p[1] for p in pairs]))
    return result


def _frame(times: list[float], bases: list[str], feats: list[Features], flows: Any, source: str) -> FitData:
    cols = {
        "zscore": np.array([f.zscore for f in feats]),
        "funding_abs_8h": np.array([f.funding_abs_8h for f in feats]),
        "oi_change_1h": np.array([f.oi_change_1h for f in feats]),
        "vol_per_sqrt_hour": np.array([np.nan if f.vol_per_sqrt_hour is None else f.vol_per_sqrt_hour for f in feats]),
        "decayed_flow_usd": np.array([f.decayed_flow_usd for f in feats]),
    }
    return FitData(np.array(times, dtype=float), np.array(bases), cols, _flows_from(flows), source)


def _open(path: Path) -> TextIO:
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="")


def load_csv(directory: Path) -> FitData:
    feats: list[Features] = []
    times: list[float] = []
    bases: list[str] = []
    with _open(directory / SAMPLES_FILE) as f:
        for row in csv.DictReader(f):
            times.append(float(row["t"]))
            bases.append(row["base"])
            d: dict[str, Any] = {k: (None if v == "" else v) for k, v in row.items()}
            feats.append(Features.from_dict(d))
    with _open(directory / FLOWS_FILE) as f:
        flows = [(float(r["t"]), r["base"], float(r["liquidated_usd"])) for r in csv.DictReader(f)]
    return _frame(times, bases, feats, flows, _shown(directory))


def _shown(path: Path) -> str:
    """The path as the repo names it when it is the shipped data (no machine-specific prefix)."""
    try:
        return str(path.resolve().relative_to(DATA_DIR.parents[2]))
    except ValueError:
        return str(path)


def load_store(path: Path, model: str = "baseline") -> FitData:
    store = Store(path)
    try:
        times, bases, feats = [], [], []
        for base, t, raw in store.baseline_samples(model):
            try:
                feats.append(Features.from_dict(json.loads(raw)))
            except (ValueError, KeyError, TypeError):
                continue  # a row from another version: skip it
            times.append(t)
            bases.append(base)
        flows = [(t, base, usd) for base in sorted(set(bases)) for t, usd in store.flows(base)]
    finally:
        store.close()
    return _frame(times, bases, feats, flows, str(path))


@dataclass(frozen=True, slots=True)
class HorizonScore:
    horizon_hours: float
    count: int
    base_rate: float
    brier: float
    brier_skill: float


def evaluate(data: FitData, params: Params, horizons: Sequence[float], threshold_usd: float) -> list[HorizonScore]:
    out = []
    for h in horizons:
        y, cols = data.observed(h, threshold_usd)
        p = probabilities(cols, params, horizon_hours=h, threshold_usd=threshold_usd)["p"]
        yf = y.astype(float)
        n = int(yf.size)
        base = float(yf.mean()) if n else float("nan")
        brier = float(np.mean((p - yf) ** 2)) if n else float("nan")
        clim = base * (1 - base)
        out.append(HorizonScore(h, n, base, brier, 1.0 - brier / clim if clim > 0 else float("nan")))
    return out


def objective(scores: Sequence[HorizonScore]) -> float:
    """Mean Brier skill score over the horizons (higher is better); horizons without events are skipped."""
    vals = [s.brier_skill for s in scores if math.isfinite(s.brier_skill)]
    return float(np.mean(vals)) if vals else float("-inf")


def fit(
    data: FitData,
    horizons: Sequence[float],
    threshold_usd: float,
    start: Params | None = None,
    log: TextIO | None = None,
) -> tuple[Params, list[HorizonScore]]:
    if start is not None:
        return _descend(data, horizons, threshold_usd, start, log)
    results = []
    for i, overrides in enumerate(STARTS):
        if log is not None:
            print(f" start {i + 1}: {overrides or 'defaults'}", file=log)
        results.append(_descend(data, horizons, threshold_usd, replace(JUDGEMENT, **overrides), log))
    return max(results, key=lambda r: objective(r[1]))


def _descend(
    data: FitData, horizons: Sequence[float], threshold_usd: float, params: Params, log: TextIO | None
) -> tuple[Params, list[HorizonScore]]:
    best = objective(evaluate(data, params, horizons, threshold_usd))
    for k in range(PASSES):
        improved = False
        for name, grid in GRIDS.items():
            for value in grid:
                trial = replace(params, **{name: value})
                score = objective(evaluate(data, trial, horizons, threshold_usd))
                if score > best + 1e-9:
                    best, params, improved = score, trial, True
            if log is not None:
                print(f"  pass {k + 1} {name:26s} = {getattr(params, name):.6g}  mean skill {best:+.4f}", file=log)
        if not improved:
            break
    return params, evaluate(data, params, horizons, threshold_usd)


FITTED = ("calm_distance", "distance_decay", "stress_weight", "flow_scale", "flow_persistence_seconds",
          "background_rate_per_hour")  # fmt: skip
CONFIG_NAMES = {"calm_distance": "cascade_distance_ratio"}


def params_from_file(path: Path) -> Params:
    d = json.loads(path.read_text())["params"]
    known = {f.name for f in fields(Params)}
    return Params(**{k: v for k, v in d.items() if k in known})


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, default=None, help=f"fit data directory (default: {DATA_DIR})")
    src.add_argument("--db", type=Path, default=None, help="a sidecar prediction store instead of the CSV data")
    p.add_argument("--horizons", default=",".join(f"{h:g}" for h in DEFAULT_HORIZONS), help="hours, comma-separated")
    p.add_argument("--threshold-usd", type=float, default=10_000_000.0, help="event threshold (sidecar's)")
    p.add_argument("--out", type=Path, default=None, help="write the fitted constants as JSON")
    p.add_argument("--verbose", action="store_true", help="print every coordinate-descent step")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        horizons = [float(x) for x in str(args.horizons).split(",") if x.strip()]
    except ValueError:
        print(f"fit-baseline: --horizons must be numbers of hours, got {args.horizons!r}", file=sys.stderr)
        return 2
    if args.db is not None:
        if not args.db.exists():
            print(f"fit-baseline: no predictions database at {args.db}", file=sys.stderr)
            return 2
        data = load_store(args.db)
    else:
        directory = args.data or DATA_DIR
        if not (directory / SAMPLES_FILE).exists():
            print(f"fit-baseline: no {SAMPLES_FILE} in {directory}", file=sys.stderr)
            return 2
        data = load_csv(directory)
    if len(data) < 50:
        print(f"fit-baseline: only {len(data)} baseline rows with inputs in {data.source}; need 50", file=sys.stderr)
        return 2
    threshold = float(args.threshold_usd)
    before = evaluate(data, JUDGEMENT, horizons, threshold)
    print(f"fitting on {len(data)} rows from {data.source}, event >= ${threshold:,.0f}", file=out)
    params, after = fit(data, horizons, threshold, log=out if args.verbose else None)
    print("horizon  rows  base rate  Brier (judgement)  skill (judgement)  Brier (fitted)  skill (fitted)", file=out)
    for b, a in zip(before, after, strict=True):
        print(
            f"{horizon_label(a.horizon_hours):>7} {a.count:5d}  {a.base_rate:9.3f}  {b.brier:17.4f}  "
            f"{b.brier_skill:+17.3f}  {a.brier:14.4f}  {a.brier_skill:+14.3f}",
            file=out,
        )
    print("sidecar configuration (fitted):", file=out)
    for name in FITTED:
        print(f"  {CONFIG_NAMES.get(name, name)}: {getattr(params, name):.6g}", file=out)
    if args.out is not None:
        doc = {
            "source": data.source,
            "rows": len(data),
            "threshold_usd": threshold,
            "horizons_hours": horizons,
            "params": {k: v for k, v in asdict(params).items() if k in FITTED},
            "skill": {horizon_label(s.horizon_hours): round(s.brier_skill, 4) for s in after},
        }
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"written to {args.out}", file=out)
    return 0
