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

from exporter.sidecar.features import BaseSnapshot
from exporter.sidecar.schema import Action, RiskAnswer, RiskLevel

STUDENT_T_DF = 4
Z_SCALE = 2.0  # |z| of 2 adds one unit of stress
FUNDING_SCALE_8H = 0.0005  # 5 bp per 8 h adds one unit (a typical "normal" rate is 1 bp)
OI_SCALE = 0.05  # +5 % open interest in one hour adds one unit
STRESS_WEIGHT = 0.4
DISTANCE_DECAY = 0.5  # cascade distance = calm distance * exp(-DISTANCE_DECAY * stress)
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
class BaselineInputs:
    vol_per_sqrt_hour: float | None  # None: not enough history, the configured default is used
    returns: int
    decayed_flow_usd: float


@dataclass(frozen=True, slots=True)
class BaselineParts:
    stress: float
    distance_crowded: float
    distance_other: float
    vol: float
    move_probability: float
    flow_probability: float
    probability: float
    crowded: str  # "long" | "short"


def level_for(probability: float) -> RiskLevel:
    for bound, level in LEVEL_BOUNDS:
        if probability < bound:
            return level
    return RiskLevel.CRITICAL


def parts(
    snap: BaseSnapshot,
    inputs: BaselineInputs,
    *,
    horizon_hours: float,
    threshold_usd: float,
    calm_distance: float,
    default_vol: float,
) -> BaselineParts:
    z = min(snap.max_abs_zscore() or 0.0, 6.0)
    f_abs = min(abs(snap.max_abs_funding_8h() or 0.0), 4 * FUNDING_SCALE_8H)
    oi = snap.oi_weighted_change_1h() or 0.0
    stress = STRESS_WEIGHT * (z / Z_SCALE + f_abs / FUNDING_SCALE_8H + max(-2.0, min(3.0, oi / OI_SCALE)))
    stress = max(-1.0, stress)  # a deleveraged market is safer, but only so much
    f_signed = snap.oi_weighted_funding_8h() or 0.0
    crowded = "short" if f_signed < 0 else "long"
    vol = inputs.vol_per_sqrt_hour if inputs.vol_per_sqrt_hour is not None else default_vol
    vol = min(max(vol, default_vol / 4), 0.2)  # a frozen feed is not a riskless market
    d_crowded = calm_distance * math.exp(-DISTANCE_DECAY * stress)
    d_other = calm_distance * math.exp(-DISTANCE_DECAY * min(stress, 0.0))
    p_move = 1.0 - (1.0 - move_probability(d_crowded, vol, horizon_hours)) * (
        1.0 - move_probability(d_other, vol, horizon_hours)
    )
    q = inputs.decayed_flow_usd / threshold_usd
    p_flow = q / (1.0 + q)
    probability = 1.0 - (1.0 - p_move) * (1.0 - p_flow)
    return BaselineParts(
        stress=stress,
        distance_crowded=d_crowded,
        distance_other=d_other,
        vol=vol,
        move_probability=p_move,
        flow_probability=p_flow,
        probability=min(1.0, max(0.0, probability)),
        crowded=crowded,
    )


def predict(
    snap: BaseSnapshot,
    inputs: BaselineInputs,
    *,
    horizon_hours: float,
    threshold_usd: float,
    calm_distance: float,
    default_vol: float,
) -> RiskAnswer:
    p = parts(
        snap,
        inputs,
        horizon_hours=horizon_hours,
        threshold_usd=threshold_usd,
        calm_distance=calm_distance,
        default_vol=default_vol,
    )
    level = level_for(p.probability)
    rows = snap.rows
    complete = sum(1 for r in rows if r.funding_zscore is not None and r.open_interest_usd is not None)
    # Confidence: how much of the inputs the method actually had (history length, field coverage).
    confidence = 0.3 + 0.4 * min(1.0, inputs.returns / 60) + 0.3 * (complete / len(rows) if rows else 0.0)
    z = snap.max_abs_zscore()
    f8 = snap.oi_weighted_funding_8h()
    oi = snap.oi_weighted_change_1h()
    factors = [
        f"crowded side: {p.crowded}s; cascade distance {p.distance_crowded * 100:.2f}%",
        f"realised volatility {p.vol * 100:.3f}%/sqrt(h)"
        + ("" if inputs.vol_per_sqrt_hour is not None else " (default)"),
        "max |funding z-score| " + ("n/a" if z is None else f"{z:.2f}"),
        "OI-weighted funding " + ("n/a" if f8 is None else f"{f8 * 1e4:+.2f} bp/8h"),
        "OI change 1h " + ("n/a" if oi is None else f"{oi * 100:+.2f}%"),
        f"recent liquidation flow ${inputs.decayed_flow_usd:,.0f} (decayed)",
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
        estimated_liquidation_volume_usd=round(p.probability * LIQUIDATED_SHARE_OF_OI * snap.open_interest_usd(), 2),
        key_factors=factors,
    )
