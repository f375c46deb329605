"""``fr-exporter evaluate``: score what is due, then report skill per model and horizon.

Text (default) or ``--format json``; ``--plot FILE.png`` draws, per model and horizon, the
reliability diagram (observed frequency against mean predicted probability per decile, with the
count of each bin) and the Brier skill score over time (rolling over the last predictions). The
plot needs matplotlib (``pip install 'fr-exporter[plot]'``; the test extra includes it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from exporter.config import Config
from exporter.sidecar.metrics import horizon_label
from exporter.sidecar.scoring import CalibrationBin, Scores, calibration_table, scores, skill_over_time
from exporter.sidecar.store import ScoredPrediction, Store

PROGRESS_MIN_ROWS = 10_000


@dataclass(slots=True)
class GroupReport:
    model: str
    horizon_hours: float
    scored: list[ScoredPrediction]
    pending: int

    @property
    def horizon(self) -> str:
        return horizon_label(self.horizon_hours)

    def series(self, calibration: str) -> tuple[list[float], list[float], list[bool]]:
        rows = self.scored if calibration == "raw" else [s for s in self.scored if s.calibrated is not None]
        probs = [s.probability if calibration == "raw" else float(s.calibrated or 0.0) for s in rows]
        return [s.made_at for s in rows], probs, [s.outcome for s in rows]


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, 6)


def _scores_doc(sc: Scores) -> dict[str, Any]:
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in asdict(sc).items()}


def _bins_doc(bins: list[CalibrationBin]) -> list[dict[str, Any]]:
    return [{k: (_num(v) if isinstance(v, float) else v) for k, v in asdict(b).items()} for b in bins]


def collect(store: Store, progress: bool) -> list[GroupReport]:
    groups: dict[tuple[str, float], GroupReport] = {}
    total = store.prediction_count()
    with tqdm(total=total, disable=not progress, desc="scoring", unit="pred", file=sys.stderr) as bar:
        for model, _base, horizon in store.groups():
            g = groups.setdefault((model, horizon), GroupReport(model, horizon, [], 0))
            rows = store.scored(model, _base, horizon)
            g.scored.extend(rows)
            g.pending += store.pending_count(model, _base, horizon)
            bar.update(len(rows))
    for g in groups.values():
        g.scored.sort(key=lambda s: s.made_at)
    return sorted(groups.values(), key=lambda g: (g.model, g.horizon_hours))


def report(groups: list[GroupReport], config: Config, now: float) -> dict[str, Any]:
    sc = config.sidecar
    out: list[dict[str, Any]] = []
    for g in groups:
        doc: dict[str, Any] = {
            "model": g.model,
            "horizon": g.horizon,
            "horizon_hours": g.horizon_hours,
            "scored": len(g.scored),
            "pending": g.pending,
            "scores": {},
            "reliability": {},
        }
        for calibration in ("raw", "calibrated"):
            times, probs, outcomes = g.series(calibration)
            if not probs:
                continue
            recent = [i for i, t in enumerate(times) if t >= now - sc.skill_window_seconds]
            doc["scores"][calibration] = {
                "all": _scores_doc(scores(probs, outcomes, sc.alert_probability)),
                "rolling": _scores_doc(
                    scores([probs[i] for i in recent], [outcomes[i] for i in recent], sc.alert_probability)
                ),
            }
            doc["reliability"][calibration] = _bins_doc(calibration_table(probs, outcomes))
        out.append(doc)
    return {
        "threshold_usd": sc.event_threshold_usd,
        "alert_probability": sc.alert_probability,
        "rolling_window_seconds": sc.skill_window_seconds,
        "groups": out,
    }


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_text(doc: dict[str, Any], out: TextIO) -> None:
    thr = doc["threshold_usd"]
    for g in doc["groups"]:
        print(
            f"model {g['model']}, horizon {g['horizon']}: {g['scored']} scored, {g['pending']} pending "
            f"(event: >= ${thr:,.0f} liquidated)",
            file=out,
        )
        for calibration, windows in g["scores"].items():
            for window, s in windows.items():
                print(
                    f"  {calibration:>10} {window:>7}: n {s['count']:<6d} base rate {_fmt(s['base_rate'])}  "
                    f"brier {_fmt(s['brier'])}  skill {_fmt(s['brier_skill'], 3)}  log loss {_fmt(s['log_loss'])}  "
                    f"P/R/F1@{doc['alert_probability']:g} {_fmt(s['precision'], 3)}/{_fmt(s['recall'], 3)}/"
                    f"{_fmt(s['f1'], 3)}",
                    file=out,
                )
        for calibration, bins in g["reliability"].items():
            print(f"  reliability ({calibration}):  bin        n   mean p  observed", file=out)
            for b in bins:
                print(
                    f"               {b['low']:.1f}-{b['high']:.1f} {b['count']:6d}  "
                    f"{_fmt(b['mean_probability'], 3):>7}  {_fmt(b['observed_rate'], 3):>8}",
                    file=out,
                )


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """One line per model x horizon (the demo's running report)."""
    lines = []
    for g in doc["groups"]:
        line = f"{g['model']} {g['horizon']}: {g['scored']} scored, {g['pending']} pending"
        for calibration in ("raw", "calibrated"):
            s = g["scores"].get(calibration, {}).get("all")
            if s and s["count"]:
                line += (
                    f" | {calibration} n {s['count']} base rate {_fmt(s['base_rate'], 3)} "
                    f"Brier {_fmt(s['brier'], 4)} skill {_fmt(s['brier_skill'], 3)}"
                )
        lines.append(line)
    return lines


def report_for(config: Config, path: Path) -> dict[str, Any] | None:
    """Score what is due in the store at ``path`` and return the report (None: no store yet)."""
    if not path.exists():
        return None
    store = Store(path, config.sidecar.observation_max_gap_seconds)
    try:
        now = time.time()
        store.score_due(now, config.sidecar.event_threshold_usd)
        return report(collect(store, False), config, now)
    finally:
        store.close()


def plot(groups: list[GroupReport], path: Path) -> None:
    """One row per (model, horizon): reliability diagram with counts | Brier skill score over time."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    rows = max(1, len(groups))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 4.2 * rows), squeeze=False)
    colors = {"raw": "tab:blue", "calibrated": "tab:orange"}
    for r, g in enumerate(groups):
        rel, skill = axes[r][0], axes[r][1]
        rel.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
        for calibration in ("raw", "calibrated"):
            times, probs, outcomes = g.series(calibration)
            if not probs:
                continue
            bins = [b for b in calibration_table(probs, outcomes) if b.count]
            xs = [b.mean_probability or 0.0 for b in bins]
            ys = [b.observed_rate or 0.0 for b in bins]
            rel.plot(xs, ys, marker="o", color=colors[calibration], label=f"{calibration} (n={len(probs)})")
            for b, x, y in zip(bins, xs, ys, strict=True):
                rel.annotate(str(b.count), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            window = max(20, len(probs) // 10)
            curve = [(t, s) for t, _b, s in skill_over_time(times, probs, outcomes, window) if s is not None]
            if curve:
                t0 = g.scored[0].made_at
                skill.plot(
                    [(t - t0) / 3600 for t, _ in curve],
                    [s for _, s in curve],
                    color=colors[calibration],
                    label=f"{calibration} (last {window})",
                )
        rel.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="predicted probability (bin mean)",
            ylabel="observed frequency",
            title=f"{g.model} {g.horizon}: reliability",
        )
        rel.legend(fontsize=8, loc="upper left")
        skill.axhline(0, color="grey", lw=1, ls="--")
        skill.set(
            xlabel="hours since the first scored prediction",
            ylabel="Brier skill score vs climatology",
            title=f"{g.model} {g.horizon}: skill over time",
        )
        skill.legend(fontsize=8, loc="lower right")
    if not groups:
        axes[0][0].set_title("no scored predictions")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def evaluate(
    config: Config,
    options: argparse.Namespace | Path | str | None = None,
    progress: bool | None = None,
    out: TextIO | None = None,
) -> int:
    """Score what can be scored and report per model and horizon. -> exit code (2: no database / no plot)."""
    out = out or sys.stdout
    db_path: Path | str | None = None
    fmt, plot_path = "text", None
    if isinstance(options, argparse.Namespace):
        db_path = getattr(options, "db", None)
        progress = getattr(options, "progress", progress)
        fmt = getattr(options, "format", None) or "text"
        plot_path = getattr(options, "plot", None)
    else:
        db_path = options
    path = Path(db_path) if db_path is not None else config.sidecar.db_path
    if not path.exists():
        print(f"no predictions database at {path}", file=sys.stderr)
        return 2
    store = Store(path, config.sidecar.observation_max_gap_seconds)
    try:
        now = time.time()
        store.score_due(now, config.sidecar.event_threshold_usd)
        total = store.prediction_count()
        show = progress is not False and total >= PROGRESS_MIN_ROWS and (progress is True or sys.stderr.isatty())
        groups = collect(store, show)
    finally:
        store.close()
    doc = report(groups, config, now)
    doc["db"] = str(path)
    if fmt == "json":
        json.dump(doc, out, indent=2)
        print(file=out)
    elif not groups:
        print(f"no predictions in {path}", file=out)
    else:
        print_text(doc, out)
    if plot_path:
        try:
            plot(groups, Path(plot_path))
        except ImportError:
            print("evaluate --plot needs matplotlib: pip install 'fr-exporter[plot]'", file=sys.stderr)
            return 2
        print(f"plot written to {plot_path}", file=sys.stderr)
    return 0
