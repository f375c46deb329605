"""The baseline's fitted constants: reproducible from the shipped data with the shipped command, and
with them the baseline has skill on a simulator run it was not fitted on, at every horizon."""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from exporter import simrun
from exporter.config import SidecarConfig
from exporter.sidecar import baseline, fit
from exporter.sidecar.schema import Action, RiskAnswer, RiskLevel
from exporter.sidecar.store import Store

pytestmark = pytest.mark.slow(seconds=30)  # the 96 h run, all CPU: scheduled first (tests/conftest.py)

THRESHOLD = 10_000_000.0
HORIZONS = (0.25, 1.0, 4.0, 8.0)  # 15 minutes (the real-time monitor), 1 h, 4 h, 8 h


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    fit.add_arguments(p)
    return p.parse_args(list(argv))


def test_shipped_defaults_are_what_fit_baseline_gives_on_the_shipped_data(tmp_path: Path) -> None:
    out = tmp_path / "params.json"
    text = io.StringIO()
    assert fit.run(_args("--out", str(out)), text) == 0
    fitted = json.loads(out.read_text())["params"]
    shipped = json.loads((fit.DATA_DIR / "baseline-params.json").read_text())["params"]
    assert fitted == pytest.approx(shipped, rel=1e-9)
    config, params = SidecarConfig(), baseline.Params()
    for name in fit.FITTED:
        cfg_name = fit.CONFIG_NAMES.get(name, name)
        assert getattr(config, cfg_name) == pytest.approx(fitted[name], rel=1e-5), name
        assert getattr(params, name) == pytest.approx(fitted[name], rel=1e-5), name
    assert "cascade_distance_ratio:" in text.getvalue()
    assert {f.name for f in fields(baseline.Params)} >= set(fit.FITTED)


def _flows(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per base: the read times and the cumulative liquidated USD up to each read, from the written file."""
    import csv
    import gzip

    rows: dict[str, list[tuple[float, float]]] = {}
    with gzip.open(path, "rt", newline="") as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["base"], []).append((float(r["t"]), float(r["liquidated_usd"])))
    return {base: (np.array([t for t, _ in s]), np.cumsum([usd for _, usd in s])) for base, s in rows.items()}


UNSEEN = simrun.RunConfig(hours=96.0, seed=2)  # another seed than the shipped fit data


@pytest.fixture(scope="module")
def unseen_run() -> simrun.RunData:
    """A run with calm periods and cascades, shared by the tests of this module (the run is most of their time)."""
    return simrun.run(UNSEEN)


def test_baseline_has_skill_on_an_unseen_simulator_run_at_every_horizon(
    tmp_path: Path, unseen_run: simrun.RunData
) -> None:
    data = unseen_run
    assert len(data.cascades) >= 4
    _, flows_path = simrun.write(data, tmp_path)
    flows = _flows(flows_path)
    params = baseline.Params.from_config(SidecarConfig())
    features = [baseline.Features.from_dict(s) for s in data.samples]
    figures = {}
    for h in HORIZONS:
        probs, outcomes = [], []
        for s, f in zip(data.samples, features, strict=True):
            t, base = float(s["t"]), s["base"]
            times, cum = flows[base]
            if t + h * 3600 > times[-1]:
                continue  # not observed to the end of the horizon
            # outcome, computed here: liquidated notional in (t, t + H] against the threshold (the
            # difference of the cumulative sums; the written amounts are whole dollars: exact in floats)
            i, j = np.searchsorted(times, (t, t + h * 3600), side="right")
            liquidated = (cum[j - 1] if j else 0.0) - (cum[i - 1] if i else 0.0)
            outcomes.append(liquidated >= THRESHOLD)
            probs.append(baseline.parts(f, params, horizon_hours=h, threshold_usd=THRESHOLD).probability)
        p, o = np.array(probs), np.array(outcomes, dtype=float)
        rate = o.mean()
        assert 0 < rate < 1, h
        brier = float(np.mean((p - o) ** 2))
        skill = 1 - brier / float(np.mean((rate - o) ** 2))
        figures[h] = (round(rate, 3), round(brier, 4), round(skill, 3))
    assert all(skill > 0 for _, _, skill in figures.values()), figures


def test_fit_baseline_over_a_users_store(tmp_path: Path) -> None:
    db = tmp_path / "p.sqlite"
    store = Store(db)
    rng = np.random.default_rng(4)
    t0 = 1_700_000_000.0
    answer = RiskAnswer(
        liquidation_probability=0.1,
        risk_level=RiskLevel.LOW,
        time_horizon_hours=1.0,
        confidence=0.5,
        action=Action.HOLD,
        reasoning="x",
    )
    for i in range(300):
        t = t0 + 300 * i
        stressed = i % 20 >= 17  # a build-up before every 20th step
        f = baseline.Features(
            zscore=4.0 if stressed else float(rng.uniform(0, 1)),
            funding_abs_8h=0.002 if stressed else 0.0001,
            funding_signed_8h=0.001,
            oi_change_1h=0.05 if stressed else 0.0,
            vol_per_sqrt_hour=0.005,
            returns=60,
            decayed_flow_usd=0.0,
        )
        store.add_prediction("baseline", "BTC", t, 1.0, answer, None, json.dumps(f.to_dict()))
        store._db.execute("INSERT INTO flows VALUES ('BTC', ?, ?)", (t + 150, 2e7 if i % 20 == 19 else 0.0))
    store._db.commit()
    store.close()
    text = io.StringIO()
    out = tmp_path / "fitted.json"
    assert fit.run(_args("--db", str(db), "--horizons", "0.25,1", "--out", str(out)), text) == 0
    doc = json.loads(out.read_text())
    assert doc["rows"] == 300 and set(doc["skill"]) == {"15m", "1h"}
    assert doc["skill"]["1h"] > 0  # the build-ups announce the events
    assert fit.run(_args("--db", str(tmp_path / "missing.sqlite")), io.StringIO()) == 2


def test_simrun_is_deterministic(tmp_path: Path, unseen_run: simrun.RunData) -> None:
    """A second, shorter run of the same seed is the long run's beginning, to the written byte."""
    short = simrun.run(simrun.RunConfig(hours=2.0, seed=UNSEEN.seed))
    assert short.samples and short.flows
    end = short.flows[-1][0]
    prefix = simrun.RunData(
        [s for s in unseen_run.samples if s["t"] <= end],
        [f for f in unseen_run.flows if f[0] <= end],
        [c for c in unseen_run.cascades if c <= end],
    )
    assert (prefix.samples, prefix.flows, prefix.cascades) == (short.samples, short.flows, short.cascades)
    a = simrun.write(short, tmp_path / "a")
    b = simrun.write(prefix, tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
