"""The local, deterministic baseline model (model="baseline"). The method is in docs/sidecar.md.

In short: a liquidation cascade starts when the price moves far enough against the crowded side.
How far ("cascade distance") shrinks as leverage builds up (funding extremity, open-interest
build-up) and grows after a deleveraging (open interest falling). The chance of such a move within
the horizon comes from realised volatility with fat tails (Student-t, 4 degrees of freedom, unit
variance) and the reflection principle for the running maximum. A cascade already under way
(recent liquidation flow observed by the sidecar, exponentially decayed) adds to it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from exporter.sidecar.features import BaseSnapshot
from exporter.sidecar.schema import Action, RiskAnswer, RiskLevel

STUDENT_T_DF = 4
Z_SCALE = 2.0  # |z| of 2 adds one unit of stress
FUNDING_SCALE_8H = 0.0005  # 5 bp per 8 h adds one unit (a typical "normal" rate is 1 bp)
OI_SCALE = 0.05  # +5 % open interest in one hour adds one unit
LIQUIDATED_SHARE_OF_OI = 0.035  # a day of forced liquidations, share of OI (Cheng et al. 2021, BitMEX)
LEVEL_BOUNDS: tuple[tuple[float, RiskLevel], ...] = (
    (0.1, RiskLevel.LOW),
    (0.3, RiskLevel.MEDIUM),
    (0.6, RiskLevel.HIGH),
)
ACTIONS = {
    RiskLevel.LOW: Action.HOLD,
    RiskLevel.MEDIUM: Action.HEDGE,
    RiskLevel.HIGH: Action.REDUCE,
    RiskLevel.CRITICAL: Action.CLOSE,
}


def student_t4_cdf(t: float) -> float:
    """CDF of Student's t with 4 degrees of freedom (closed form)."""
    u = 1.0 + t * t / 4.0
    return 0.5 + 0.375 * (t / math.sqrt(u)) * (1.0 - t * t / (12.0 * u))


def move_probability(distance_ratio: float, vol_per_sqrt_hour: float, horizon_hours: float) -> float:
    """P(the running maximum of a one-sided log-price move reaches ``distance_ratio`` within the horizon).

    Reflection principle: P(max >= d) = 2 P(X_H >= d), X_H a unit-variance Student-t(4) scaled by
    sigma * sqrt(H). The t(4) has variance 2, hence the sqrt(2) to standardise it.
    """
    scale = vol_per_sqrt_hour * math.sqrt(horizon_hours)
    if scale <= 0:
        return 0.0
    x = math.log1p(distance_ratio) / scale * math.sqrt(STUDENT_T_DF / (STUDENT_T_DF - 2))
    return min(1.0, 2.0 * (1.0 - student_t4_cdf(x)))


# Median of |X| for a unit-variance Student-t(4): the t(4) median |X| is 0.7407, its sd sqrt(2).
T4_MEDIAN_ABS = 0.7407 / math.sqrt(2.0)


def realised_vol(
    prices: Sequence[tuple[float, float]], now: float, half_life_seconds: float, max_gap_seconds: float
) -> tuple[float | None, int]:
    """Robust realised volatility per sqrt(hour) from (time, price) samples -> (vol, returns used).

    Each log return is normalised to one hour (|r| / sqrt(dt in hours)); the estimate is the
    exponentially time-weighted *median* of those, divided by the median |X| of the unit-variance
    Student-t(4). A median ignores the few huge returns of a cascade itself, so the estimate says
    how much the market moves between jumps: the jump is what the model predicts, not an input.
    """
    k = math.log(2) / half_life_seconds
    samples: list[tuple[float, float]] = []
    for (t0, p0), (t1, p1) in itertools.pairwise(prices):
        dt = t1 - t0
        if dt <= 0 or dt > max_gap_seconds or p0 <= 0 or p1 <= 0:
            continue
        samples.append((abs(math.log(p1 / p0)) / math.sqrt(dt / 3600.0), math.exp(-k * max(0.0, now - t1))))
    if not samples:
        return None, 0
    samples.sort()
    half = sum(w for _, w in samples) / 2.0
    acc = 0.0
    for value, w in samples:
        acc += w
        if acc >= half:
            return value / T4_MEDIAN_ABS, len(samples)
    return samples[-1][0] / T4_MEDIAN_ABS, len(samples)


@dataclass(frozen=True, slots=True)
class Features:
    """The baseline's inputs at one moment (stored with each baseline prediction for fit-baseline)."""

    zscore: float  # largest |funding z-score|, capped at 6
    funding_abs_8h: float  # largest |8 h-equivalent funding|, capped
    funding_signed_8h: float  # OI-weighted 8 h funding (sign: the crowded side)
    oi_change_1h: float  # OI-weighted 1 h open-interest change ratio
    vol_per_sqrt_hour: float | None  # None: not enough history, the configured default is used
    returns: int
    decayed_flow_usd: float
    open_interest_usd: float = 0.0
    complete_share: float = 0.0  # share of instruments with z-score and OI (confidence)

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "zscore": self.zscore,
            "funding_abs_8h": self.funding_abs_8h,
            "funding_signed_8h": self.funding_signed_8h,
            "oi_change_1h": self.oi_change_1h,
            "vol_per_sqrt_hour": self.vol_per_sqrt_hour,
            "returns": self.returns,
            "decayed_flow_usd": self.decayed_flow_usd,
            "open_interest_usd": self.open_interest_usd,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Features:
        vol = d.get("vol_per_sqrt_hour")
        return cls(
            zscore=float(d["zscore"]),
            funding_abs_8h=float(d["funding_abs_8h"]),
            funding_signed_8h=float(d["funding_signed_8h"]),
            oi_change_1h=float(d["oi_change_1h"]),
            vol_per_sqrt_hour=None if vol is None else float(vol),
            returns=int(d.get("returns", 0)),
            decayed_flow_usd=float(d["decayed_flow_usd"]),
            open_interest_usd=float(d.get("open_interest_usd", 0.0)),
        )


def features_of(
    snap: BaseSnapshot, *, vol_per_sqrt_hour: float | None, returns: int, decayed_flow_usd: float
) -> Features:
    rows = snap.rows
    complete = sum(1 for r in rows if r.funding_zscore is not None and r.open_interest_usd is not None)
    return Features(
        zscore=min(snap.max_abs_zscore() or 0.0, 6.0),
        funding_abs_8h=min(abs(snap.max_abs_funding_8h() or 0.0), 4 * FUNDING_SCALE_8H),
        funding_signed_8h=snap.oi_weighted_funding_8h() or 0.0,
        oi_change_1h=snap.oi_weighted_change_1h() or 0.0,
        vol_per_sqrt_hour=vol_per_sqrt_hour,
        returns=returns,
        decayed_flow_usd=decayed_flow_usd,
        open_interest_usd=snap.open_interest_usd(),
        complete_share=complete / len(rows) if rows else 0.0,
    )


@dataclass(frozen=True, slots=True)
class Params:
    """The baseline's constants. Defaults: ``fr-exporter fit-baseline`` on the simulator data (docs/sidecar.md)."""

    calm_distance: float = 0.239466
    distance_decay: float = 1.0
    stress_weight: float = 0.6
    flow_scale: float = 0.0
    flow_persistence_seconds: float = 7079.78
    flow_half_life_seconds: float = 900.0  # of the observed (decayed) flow, not fitted: an input's memory
    default_vol: float = 0.006
    background_rate_per_hour: float = 0.0630957  # events the market state does not explain (a hazard rate)

    @classmethod
    def from_config(cls, sc: Any) -> Params:
        return cls(
            calm_distance=sc.cascade_distance_ratio,
            distance_decay=sc.distance_decay,
            stress_weight=sc.stress_weight,
            flow_scale=sc.flow_scale,
            flow_persistence_seconds=sc.flow_persistence_seconds,
            flow_half_life_seconds=sc.flow_half_life_seconds,
            default_vol=sc.default_vol_per_sqrt_hour,
            background_rate_per_hour=sc.background_rate_per_hour,
        )


# The constants before they were fitted (judgement; docs/sidecar.md history): mechanics tests use them.
JUDGEMENT = Params(
    calm_distance=0.05,
    distance_decay=0.5,
    stress_weight=0.4,
    flow_scale=1.0,
    flow_persistence_seconds=900.0 / math.log(2),  # = the flow term of the unfitted model, q = decayed / threshold
    background_rate_per_hour=0.0,
)


@dataclass(frozen=True, slots=True)
class BaselineParts:
    stress: float
    distance_crowded: float
    distance_other: float
    vol: float
    move_probability: float
    flow_probability: float
    expected_flow_usd: float
    probability: float
    crowded: str  # "long" | "short"


def level_for(probability: float) -> RiskLevel:
    for bound, level in LEVEL_BOUNDS:
        if probability < bound:
            return level
    return RiskLevel.CRITICAL


def _t4_cdf(t: np.ndarray) -> np.ndarray:
    u = 1.0 + t * t / 4.0
    return 0.5 + 0.375 * (t / np.sqrt(u)) * (1.0 - t * t / (12.0 * u))


def _move(distance: np.ndarray, vol: np.ndarray, horizon_hours: float) -> np.ndarray:
    scale = vol * math.sqrt(horizon_hours)
    x = np.log1p(distance) / scale * math.sqrt(STUDENT_T_DF / (STUDENT_T_DF - 2))
    return np.minimum(1.0, 2.0 * (1.0 - _t4_cdf(x)))


def expected_flow_factor(horizon_hours: float, params: Params) -> float:
    """Expected liquidated notional within the horizon per USD of decayed observed flow.

    The decayed flow D (half-life T) of a steady rate r is r T / ln 2; a rate that then fades with
    persistence tau liquidates r tau (1 - exp(-H / tau)) within H. flow_scale is the fitted share.
    """
    h = horizon_hours * 3600.0
    tau = params.flow_persistence_seconds
    return params.flow_scale * math.log(2) / params.flow_half_life_seconds * tau * (1.0 - math.exp(-h / tau))


def probabilities(
    cols: dict[str, np.ndarray], params: Params, *, horizon_hours: float, threshold_usd: float
) -> dict[str, np.ndarray]:
    """The method, vectorised over samples (``cols``: the Features fields as arrays; vol NaN = default)."""
    stress = params.stress_weight * (
        np.minimum(cols["zscore"], 6.0) / Z_SCALE
        + np.minimum(np.abs(cols["funding_abs_8h"]), 4 * FUNDING_SCALE_8H) / FUNDING_SCALE_8H
        + np.clip(cols["oi_change_1h"] / OI_SCALE, -2.0, 3.0)
    )
    stress = np.maximum(-1.0, stress)  # a deleveraged market is safer, but only so much
    vol = np.where(np.isnan(cols["vol_per_sqrt_hour"]), params.default_vol, cols["vol_per_sqrt_hour"])
    vol = np.clip(vol, params.default_vol / 4, 0.2)  # a frozen feed is not a riskless market
    d_crowded = params.calm_distance * np.exp(-params.distance_decay * stress)
    d_other = params.calm_distance * np.exp(-params.distance_decay * np.minimum(stress, 0.0))
    p_move = 1.0 - (1.0 - _move(d_crowded, vol, horizon_hours)) * (1.0 - _move(d_other, vol, horizon_hours))
    expected = cols["decayed_flow_usd"] * expected_flow_factor(horizon_hours, params)
    q = expected / threshold_usd
    p_flow = q / (1.0 + q)
    p_background = 1.0 - math.exp(-params.background_rate_per_hour * horizon_hours)
    p = np.clip(1.0 - (1.0 - p_move) * (1.0 - p_flow) * (1.0 - p_background), 0.0, 1.0)
    return {
        "stress": stress,
        "vol": vol,
        "d_crowded": d_crowded,
        "d_other": d_other,
        "p_move": p_move,
        "p_flow": p_flow,
        "expected_flow": expected,
        "p": p,
    }


def columns(samples: list[Features]) -> dict[str, np.ndarray]:
    return {
        "zscore": np.array([f.zscore for f in samples], dtype=float),
        "funding_abs_8h": np.array([f.funding_abs_8h for f in samples], dtype=float),
        "oi_change_1h": np.array([f.oi_change_1h for f in samples], dtype=float),
        "vol_per_sqrt_hour": np.array(
            [np.nan if f.vol_per_sqrt_hour is None else f.vol_per_sqrt_hour for f in samples], dtype=float
        ),
        "decayed_flow_usd": np.array([f.decayed_flow_usd for f in samples], dtype=float),
    }


def parts(features: Features, params: Params, *, horizon_hours: float, threshold_usd: float) -> BaselineParts:
    r = probabilities(columns([features]), params, horizon_hours=horizon_hours, threshold_usd=threshold_usd)
    return BaselineParts(
        stress=float(r["stress"][0]),
        distance_crowded=float(r["d_crowded"][0]),
        distance_other=float(r["d_other"][0]),
        vol=float(r["vol"][0]),
        move_probability=float(r["p_move"][0]),
        flow_probability=float(r["p_flow"][0]),
        expected_flow_usd=float(r["expected_flow"][0]),
        probability=float(r["p"][0]),
        crowded="short" if features.funding_signed_8h < 0 else "long",
    )


def predict(
    snap: BaseSnapshot, features: Features, params: Params, *, horizon_hours: float, threshold_usd: float
) -> RiskAnswer:
    p = parts(features, params, horizon_hours=horizon_hours, threshold_usd=threshold_usd)
    level = level_for(p.probability)
    # Confidence: how much of the inputs the method actually had (history length, field coverage).
    confidence = 0.3 + 0.4 * min(1.0, features.returns / 60) + 0.3 * features.complete_share
    z = snap.max_abs_zscore()
    f8 = snap.oi_weighted_funding_8h()
    oi = snap.oi_weighted_change_1h()
    factors = [
        f"crowded side: {p.crowded}s; cascade distance {p.distance_crowded * 100:.2f}%",
        f"realised volatility {p.vol * 100:.3f}%/sqrt(h)"
        + ("" if features.vol_per_sqrt_hour is not None else " (default)"),
        "max |funding z-score| " + ("n/a" if z is None else f"{z:.2f}"),
        "OI-weighted funding " + ("n/a" if f8 is None else f"{f8 * 1e4:+.2f} bp/8h"),
        "OI change 1h " + ("n/a" if oi is None else f"{oi * 100:+.2f}%"),
        f"recent liquidation flow ${features.decayed_flow_usd:,.0f} (decayed), "
        f"expected within {horizon_hours:g} h ${p.expected_flow_usd:,.0f}",
    ]
    reasoning = (
        f"Stress {p.stress:.2f} puts the cascade distance for {p.crowded}s at {p.distance_crowded * 100:.2f}%; "
        f"a fat-tailed move of that size within {horizon_hours:g} h has probability {p.move_probability:.3f}. "
        f"Recent liquidation flow adds {p.flow_probability:.3f}."
    )
    return RiskAnswer(
        liquidation_probability=round(p.probability, 6),
        risk_level=level,
        time_horizon_hours=horizon_hours,
        confidence=round(min(1.0, confidence), 4),
        action=ACTIONS[level],
        reasoning=reasoning,
        estimated_liquidation_volume_usd=round(p.probability * LIQUIDATED_SHARE_OF_OI * features.open_interest_usd, 2),
        key_factors=factors,
    )
