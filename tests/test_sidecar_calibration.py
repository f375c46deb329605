"""Online recalibration and skill: a scripted model whose raw probabilities are miscalibrated by a
known function, over scripted outcomes. Expected values are computed here with numpy, independently."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from support import free_port

from exporter.clock import VirtualClock
from exporter.config import Config, SidecarConfig
from exporter.sidecar.calibration import IsotonicCalibrator, pav
from exporter.sidecar.main import Sidecar
from exporter.sidecar.schema import Action, RiskAnswer, RiskLevel

pytestmark = pytest.mark.slow(seconds=4)  # the file: recalibration on large simulated samples

THRESHOLD = 1e6
HORIZON_H = 1 / 60  # one minute
ALERT = 0.5


def _answer(p: float) -> RiskAnswer:
    return RiskAnswer(
        liquidation_probability=p,
        risk_level=RiskLevel.LOW,
        time_horizon_hours=HORIZON_H,
        confidence=0.5,
        action=Action.HOLD,
        reasoning="scripted",
    )


def distort(p: np.ndarray) -> np.ndarray:
    """The known miscalibration: overconfident near 0 and 1 (a squashed logit) and shifted up."""
    logit = np.log(p / (1 - p))
    return 1 / (1 + np.exp(-(2.5 * logit + 1.0)))


def test_pav_against_the_min_max_formula() -> None:
    # isotonic regression's closed form: fit[i] = max over j <= i of min over k >= i of mean(y[j..k])
    rng = np.random.default_rng(2)
    for _ in range(30):
        y = rng.integers(0, 2, 9).astype(float)
        w = rng.uniform(0.5, 3.0, 9)
        expected = [
            max(min(float(np.average(y[j : k + 1], weights=w[j : k + 1])) for k in range(i, 9)) for j in range(i + 1))
            for i in range(9)
        ]
        assert pav(y, w) == pytest.approx(expected)
    assert list(pav([1.0, 0.0, 1.0, 0.0])) == [0.5, 0.5, 0.5, 0.5]


def test_calibrator_interpolates_and_never_says_0_or_1() -> None:
    cal = IsotonicCalibrator.fit([0.1, 0.1, 0.2, 0.9, 0.9], [False, False, False, True, True])
    assert cal(0.0) > 0 and cal(1.0) < 1
    assert cal(0.1) <= cal(0.5) <= cal(0.9)
    assert 0.1 < cal(0.5) < 0.9  # between the blocks: interpolated, not a cliff


async def test_recalibration_approaches_true_probabilities_and_skill_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(42)
    n = 3000
    true_p = rng.uniform(0.02, 0.7, n)
    outcomes = rng.random(n) < true_p
    raw = np.round(distort(true_p), 6)
    clock = VirtualClock(1_700_000_000.0)
    cfg = Config(
        sidecar=SidecarConfig(
            listen_address=f"127.0.0.1:{free_port()}",
            db_path=tmp_path / "c.sqlite",
            baseline=False,
            event_threshold_usd=THRESHOLD,
            horizons_hours=[HORIZON_H],
            calibration_min_scored=200,
            alert_probability=ALERT,
            skill_window_seconds=1e9,
            skill_min_scored=30,
        )
    )
    sc = Sidecar(cfg, clock=clock)
    db = sc.store._db
    published: list[float | None] = []
    try:
        for i in range(n):
            made = clock.time()
            sc.accept("scripted", "BTC", _answer(float(raw[i])), HORIZON_H)
            published.append(sc.metrics.latest[("scripted", "BTC", HORIZON_H)].calibrated)
            # what the exporter's flow would show: an event within the minute, or none
            db.execute("INSERT INTO flows VALUES ('BTC', ?, ?)", (made + 30, THRESHOLD * 2 if outcomes[i] else 0.0))
            db.execute("INSERT INTO flows VALUES ('BTC', ?, 0)", (made + 60,))
            clock.advance(120)
            if i % 50 == 49:  # outcomes arrive in batches, the calibration is refitted each time
                db.commit()
                if sc.store.score_due(clock.time(), THRESHOLD):
                    sc.refresh_scores()
        db.commit()
        sc.store.score_due(clock.time(), THRESHOLD)
        sc.refresh_scores()

        cal = np.array([np.nan if c is None else c for c in published])
        have = ~np.isnan(cal)
        assert have[:200].sum() == 0 and have[300:].all()  # calibration starts after 200 scored
        o = outcomes.astype(float)
        late = np.arange(n) >= 1000  # out of sample: calibrated with what was known before each prediction
        brier_true = float(np.mean((true_p[late] - o[late]) ** 2))
        brier_raw = float(np.mean((raw[late] - o[late]) ** 2))
        brier_cal = float(np.mean((cal[late] - o[late]) ** 2))
        assert brier_raw > brier_true + 0.02  # the distortion costs a lot
        assert brier_cal == pytest.approx(brier_true, abs=0.005)  # recalibration wins it back

        # published skill equals an independent computation over the same predictions
        get = sc.registry.get_sample_value
        h = "1m"
        for calibration, probs, mask in (("raw", raw, np.ones(n, bool)), ("calibrated", cal, have)):
            p, y = probs[mask], o[mask]
            labels = {"model": "scripted", "horizon": h, "window": "all", "calibration": calibration}
            brier = float(np.mean((p - y) ** 2))
            base = float(y.mean())
            bss = 1 - brier / float(np.mean((base - y) ** 2))
            tp = float(np.sum((p >= ALERT) & (y == 1)))
            prec, rec = tp / float(np.sum(p >= ALERT)), tp / float(np.sum(y == 1))
            q = np.clip(p, 1e-6, 1 - 1e-6)
            assert get("fr_ai_skill_predictions", labels) == mask.sum()
            assert get("fr_ai_brier_score", labels) == pytest.approx(brier)
            assert get("fr_ai_brier_skill_score", labels) == pytest.approx(bss)
            assert get("fr_ai_f1_ratio", labels) == pytest.approx(2 * prec * rec / (prec + rec))
            assert get("fr_ai_log_loss", labels) == pytest.approx(
                float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
            )
            for k in range(10):
                lo, hi = k / 10, (k + 1) / 10
                in_bin = (p >= lo) & ((p < hi) if k < 9 else (p <= hi))
                rl = {**labels, "bin": f"{lo:.1f}-{hi:.1f}"}
                del rl["window"]
                assert get("fr_ai_reliability_predictions", rl) == in_bin.sum()
                if in_bin.any():
                    assert get("fr_ai_reliability_observed_ratio", rl) == pytest.approx(float(y[in_bin].mean()))
                    assert get("fr_ai_reliability_mean_probability_ratio", rl) == pytest.approx(float(p[in_bin].mean()))
        raw_bss = get(
            "fr_ai_brier_skill_score", {"model": "scripted", "horizon": h, "window": "all", "calibration": "raw"}
        )
        cal_bss = get(
            "fr_ai_brier_skill_score", {"model": "scripted", "horizon": h, "window": "all", "calibration": "calibrated"}
        )
        assert raw_bss is not None and cal_bss is not None and cal_bss > raw_bss
        assert get("fr_ai_calibration_fitted_predictions", {"model": "scripted", "base": "BTC", "horizon": h}) == n
        assert math.isfinite(cal_bss)
    finally:
        await sc.close()
