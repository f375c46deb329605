"""Scoring: a scripted sequence of predictions and liquidation flows gives the Brier score, precision
and recall computed independently here; the store survives restarts; ``evaluate`` prints them."""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from support import free_port
from support.fakes import VALID_ANSWER, instrument, state

from exporter.config import Config, SidecarConfig
from exporter.sidecar import evaluate as evaluate_module
from exporter.sidecar.evaluate import evaluate
from exporter.sidecar.features import snapshots
from exporter.sidecar.main import Sidecar
from exporter.sidecar.schema import RiskAnswer
from exporter.sidecar.scoring import brier_score, calibration_table, log_loss, precision_recall
from exporter.sidecar.store import Store

T0 = 1_700_000_000.0
STEP = 60.0
THRESHOLD = 10_000_000.0
HORIZON_H = 1.0


def _answer(p: float) -> RiskAnswer:
    return RiskAnswer.model_validate_json(json.dumps({**VALID_ANSWER, "liquidation_probability": p}))


def _script(seed: int = 7, reads: int = 300) -> tuple[list[float], list[float], int]:
    """Per-read BTC flow (USD) and ETH flow; the exporter restarts before read ``restart``."""
    rng = random.Random(seed)
    btc = [0.0] + [rng.uniform(0, 50_000) for _ in range(reads - 1)]
    for burst in (40, 41, 42, 130, 131, 220):  # cascades: two big ones and one just below threshold
        btc[burst] += 4_000_000.0 if burst != 220 else 8_500_000.0
    eth = [0.0] + [rng.uniform(0, 3_000_000) for _ in range(reads - 1)]  # must never count for BTC
    return btc, eth, 135


def _feed(store: Store, btc: list[float], eth: list[float], restart: int) -> None:
    cum_b_long = cum_b_short = cum_e = 0.0
    for i, (fb, fe) in enumerate(zip(btc, eth, strict=True)):
        if i == restart:  # exporter restart: its counters start again from zero
            cum_b_long = cum_b_short = cum_e = 0.0
        # split BTC flow over two exchanges and both sides
        cum_b_long += fb * 0.7
        cum_b_short += fb * 0.3
        cum_e += fe
        rows = [
            instrument("binance", "BTCUSDT", liq_long_usd=cum_b_long * 0.5, liq_short_usd=cum_b_short),
            instrument("okx", "BTC-USDT-SWAP", liq_long_usd=cum_b_long * 0.5),
            instrument("binance", "ETHUSDT", "ETH", mark=3000.0, liq_long_usd=cum_e),
        ]
        at = T0 + STEP * i
        store.record_state(snapshots(state(rows), at), at)


def _expected(btc: list[float], made: list[float]) -> list[bool]:
    out = []
    for m in made:
        total = sum(f for i, f in enumerate(btc) if m < T0 + STEP * i <= m + HORIZON_H * 3600)
        out.append(total >= THRESHOLD)
    return out


def _fill(path: Path) -> tuple[list[float], list[bool]]:
    btc, eth, restart = _script()
    store = Store(path)
    _feed(store, btc, eth, restart)
    made = [T0 + 90.0 + 600.0 * k for k in range(24)]  # every 10 min over 4 h
    probs = [round(0.5 + 0.45 * math.sin(k * 1.3), 3) for k in range(len(made))]
    for m, p in zip(made, probs, strict=True):
        store.add_prediction("m1", "BTC", m, HORIZON_H, _answer(p))
    store.add_prediction("m1", "BTC", T0 + 299 * STEP - 10, HORIZON_H, _answer(0.9))  # horizon not yet over
    now = T0 + STEP * 299
    store.score_due(now, THRESHOLD)
    store.close()
    due = [m for m in made if m + 3600 <= now]
    expected = _expected(btc, due)
    return probs[: len(due)], expected


def test_scripted_sequence_gives_independent_scores(tmp_path: Path) -> None:
    probs, outcomes = _fill(tmp_path / "p.sqlite")
    assert 0 < sum(outcomes) < len(outcomes)  # the script has both classes
    store = Store(tmp_path / "p.sqlite")  # reopened: persisted
    scored = store.scored("m1")
    assert [s.outcome for s in scored] == outcomes
    assert [s.probability for s in scored] == pytest.approx(probs)
    p, o = np.array(probs), np.array(outcomes, dtype=float)
    assert brier_score(probs, outcomes) == pytest.approx(float(np.mean((p - o) ** 2)))
    tp = float(np.sum((p >= 0.5) & (o == 1)))
    assert precision_recall(probs, outcomes) == pytest.approx(
        (tp / float(np.sum(p >= 0.5)), tp / float(np.sum(o == 1)))
    )
    q = np.clip(p, 1e-6, 1 - 1e-6)
    assert log_loss(probs, outcomes) == pytest.approx(float(-np.mean(o * np.log(q) + (1 - o) * np.log(1 - q))))
    # one prediction is still open
    assert store.prediction_count() == len(probs) + 1
    store.close()


async def test_scores_published_per_model(tmp_path: Path) -> None:
    probs, outcomes = _fill(tmp_path / "p.sqlite")
    cfg = Config(
        sidecar=SidecarConfig(
            db_path=tmp_path / "p.sqlite",
            listen_address=f"127.0.0.1:{free_port()}",
            alert_probability=0.5,
            skill_min_scored=1,
        )
    )
    sc = Sidecar(cfg)
    try:
        p, o = np.array(probs), np.array(outcomes, dtype=float)
        tp = float(np.sum((p >= 0.5) & (o == 1)))
        get = sc.registry.get_sample_value
        h = f"{HORIZON_H:g}h"
        m1 = {"model": "m1", "horizon": h, "window": "all", "calibration": "raw"}
        brier = float(np.mean((p - o) ** 2))
        assert get("fr_ai_brier_score", m1) == pytest.approx(brier)
        precision, recall = tp / float(np.sum(p >= 0.5)), tp / float(np.sum(o == 1))
        assert get("fr_ai_precision_ratio", m1) == pytest.approx(precision)
        assert get("fr_ai_recall_ratio", m1) == pytest.approx(recall)
        assert get("fr_ai_f1_ratio", m1) == pytest.approx(2 * precision * recall / (precision + recall))
        base = float(o.mean())
        assert get("fr_ai_base_rate_ratio", m1) == pytest.approx(base)
        assert get("fr_ai_brier_skill_score", m1) == pytest.approx(1 - brier / float(np.mean((base - o) ** 2)))
        assert get("fr_ai_skill_predictions", m1) == len(probs)
        assert get("fr_ai_scored_predictions_total", {"model": "m1", "horizon": h}) == len(probs)
        assert get("fr_ai_scored_predictions_total", {"model": "baseline", "horizon": "8h"}) == 0
        assert get("fr_ai_brier_score", {**m1, "model": "baseline"}) is None  # nothing scored: no value
        # the rolling window (7 days back from now) holds none of these old predictions
        assert get("fr_ai_skill_predictions", {**m1, "window": "rolling"}) == 0
    finally:
        await sc.close()


def test_counter_differencing_first_sighting_restart_and_gap(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", max_gap_seconds=300)

    def read(at: float, long_usd: float) -> float:
        return store.record_state(snapshots(state([instrument("bybit", "BTCUSDT", liq_long_usd=long_usd)]), at), at)[
            "BTC"
        ]

    assert read(T0, 5e6) == 0.0  # first sighting: baseline only, flow since the exporter started is unplaceable
    assert read(T0 + 60, 6e6) == 1e6
    assert read(T0 + 120, 2e5) == 2e5  # exporter restarted: the counter fell
    assert read(T0 + 1000, 9e5) == 0.0  # a gap longer than 300 s: cannot place it in time
    assert read(T0 + 1060, 1e6) == pytest.approx(1e5)
    assert store.liquidated_between("BTC", T0, T0 + 1060) == pytest.approx(1e6 + 2e5 + 1e5)
    store.close()
    store = Store(tmp_path / "s.sqlite", max_gap_seconds=300)  # a sidecar restart keeps the baseline
    assert read(T0 + 1120, 1.5e6) == pytest.approx(5e5)
    store.close()


def test_calibration_table_deciles() -> None:
    probs = [0.05, 0.07, 0.15, 0.95, 1.0, 0.55]
    outcomes = [False, True, False, True, True, False]
    table = calibration_table(probs, outcomes)
    assert len(table) == 10
    assert table[0].count == 2 and table[0].observed_rate == 0.5 and table[0].mean_probability == pytest.approx(0.06)
    assert table[9].count == 2 and table[9].observed_rate == 1.0
    assert table[5].count == 1 and table[3].count == 0 and table[3].observed_rate is None


def test_evaluate_prints_per_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    probs, outcomes = _fill(tmp_path / "p.sqlite")
    cfg = Config(sidecar=SidecarConfig(db_path=tmp_path / "elsewhere.sqlite", event_threshold_usd=THRESHOLD))
    assert evaluate(cfg, argparse.Namespace(db=None, progress=False)) == 2  # no database there
    out = io.StringIO()
    monkeypatch.setattr(evaluate_module, "PROGRESS_MIN_ROWS", 1)
    assert evaluate(cfg, argparse.Namespace(db=str(tmp_path / "p.sqlite"), progress=True), out=out) == 0
    text = out.getvalue()
    p, o = np.array(probs), np.array(outcomes, dtype=float)
    assert f"model m1, horizon 1h: {len(probs)} scored, 1 pending" in text
    assert f"brier {np.mean((p - o) ** 2):.4f}" in text
    assert f"base rate {np.mean(o):.4f}" in text
    skill = 1 - np.mean((p - o) ** 2) / np.mean((np.mean(o) - o) ** 2)
    assert f"skill {skill:.3f}" in text
    assert "reliability (raw)" in text and "0.9-1.0" in text
    assert "scoring" in capsys.readouterr().err  # the tqdm bar

    # --format json: the same numbers for scripts
    out = io.StringIO()
    ns = argparse.Namespace(db=str(tmp_path / "p.sqlite"), progress=False, format="json", plot=None)
    assert evaluate(cfg, ns, out=out) == 0
    doc = json.loads(out.getvalue())
    (group,) = [g for g in doc["groups"] if g["model"] == "m1"]
    assert group["horizon"] == "1h" and group["scored"] == len(probs) and group["pending"] == 1
    allraw = group["scores"]["raw"]["all"]
    assert allraw["brier"] == pytest.approx(float(np.mean((p - o) ** 2)), abs=1e-6)
    assert allraw["brier_skill"] == pytest.approx(float(skill), abs=1e-6)
    counts = [b["count"] for b in group["reliability"]["raw"]]
    assert counts == [int(np.sum((p >= k / 10) & ((p < (k + 1) / 10) if k < 9 else (p <= 1)))) for k in range(10)]

    # --plot: a valid PNG of non-trivial size
    png = tmp_path / "eval.png"
    ns = argparse.Namespace(db=str(tmp_path / "p.sqlite"), progress=False, format="text", plot=str(png))
    assert evaluate(cfg, ns, out=io.StringIO()) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 800 and height >= 300
