"""Liquidation price, gap, stress and first-passage probability for one perpetual position.

Pure functions: no I/O, no state. Each exchange's own margin model (see the shared protocol
reference, sections 2.8, 3.8, 4.8, 5.8):

* Binance USDⓈ-M: maintenance margin is taken on the *mark* notional with the leverage bracket
  that contains the notional **at the liquidation price** (the bracket is re-picked there; the
  FAQ states it for COIN-M, assumed identical for USDⓈ-M — UNVERIFIED). ``cum`` (maintenance
  amount) makes the maintenance margin continuous across brackets.
  ``LP = (WB - TMM1 + UPNL1 + cum - s*Q*EP) / (Q*MMR - s*Q)``, s = +1 long, -1 short.
* Bybit (classic USDT contract doc): maintenance margin is taken on the position value at
  *entry*: ``MM = Q*EP*MMR - mmDeduction``; ``LP = EP -/+ (margin - MM)/Q``. The fee-inclusive
  Unified-Trading-Account variant is UNVERIFIED and not modelled; cross uses the wallet balance
  as margin (UNVERIFIED).
* OKX: margin ratio ``(margin + upl) / (q*P*(mmr + taker fee))`` <= 100 % liquidates
  (secondary source, UNVERIFIED); tiers are by position size in contracts.
  ``LP = (EP -/+ M/q) / (1 +/- (mmr + fee))``.
* Deribit: no published isolated formula (UNVERIFIED). Linear (``*_USDC-PERPETUAL``) uses the
  OKX-shaped formula without fee; inverse (``BTC-PERPETUAL``) keeps margin in coin:
  ``LP = S(1+mmr)/(WB + S/EP)`` long, ``S(1-mmr)/(S/EP - WB)`` short, S = USD notional at entry.

A long that can never be liquidated gets liquidation price 0; a short that can never be
liquidated gets ``None`` (no finite price).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.model import Exchange, Side, Tier


def tiers_from_caps(rows: Sequence[Sequence[float]]) -> list[Tier]:
    """Tiers from ``[[cap, mmr], ...]`` or ``[[cap, mmr, max_leverage], ...]`` (ascending caps).

    Floors are the previous caps; deductions are chosen so the maintenance margin is continuous
    at every boundary (Binance's ``cum`` rule: ``cum_i = cum_{i-1} + floor_i*(mmr_i - mmr_{i-1})``).
    """
    out: list[Tier] = []
    floor = 0.0
    ded = 0.0
    prev_mmr: float | None = None
    for row in sorted(rows, key=lambda r: r[0]):
        cap, mmr = float(row[0]), float(row[1])
        lev = float(row[2]) if len(row) > 2 and row[2] else None
        if prev_mmr is not None:
            ded += floor * (mmr - prev_mmr)
        out.append(Tier(floor, cap, mmr, lev, ded))
        floor, prev_mmr = cap, mmr
    return out


# Used only when neither the exchange (public tiers / account brackets) nor the configuration
# gives tiers. Binance's published BTCUSDT USDT-M perpetual brackets ("Updates to Leverage and Margin
# Tiers of Binance Futures Contracts", 2021-03-18,
# https://www.binance.com/en/support/announcement/86cf9aa472574b8cb2e05bb751c2a9a6), the table its
# liquidation-price FAQ works its examples on (250k-1M notional at 1 %, maintenance amount 1,300).
# Brackets differ per symbol and change over time: configure `maintenance_tiers` or give a
# read-only key for the account's own brackets.
DEFAULT_TIER_ROWS: tuple[tuple[float, float, float], ...] = (
    (50_000, 0.004, 125),
    (250_000, 0.005, 100),
    (1_000_000, 0.01, 50),
    (10_000_000, 0.025, 20),
    (20_000_000, 0.05, 10),
    (50_000_000, 0.1, 5),
    (100_000_000, 0.125, 4),
    (200_000_000, 0.15, 3),
    (300_000_000, 0.25, 2),
    (500_000_000, 0.5, 1),
)
DEFAULT_TIERS: list[Tier] = tiers_from_caps(DEFAULT_TIER_ROWS)


def tier_for(tiers: Sequence[Tier], value: float) -> Tier:
    """The tier whose [floor, cap) holds ``value``; the last one beyond every cap."""
    if not tiers:
        raise ValueError("no maintenance-margin tiers")
    for t in tiers:
        if value < t.cap:
            return t
    return tiers[-1]


def max_leverage_for(tiers: Sequence[Tier], value: float) -> float | None:
    return tier_for(tiers, value).max_leverage


def _sign(side: Side) -> float:
    return 1.0 if side is Side.LONG else -1.0


def _finish(side: Side, lp: float | None) -> float | None:
    if lp is None or math.isnan(lp):
        return None
    if side is Side.LONG:
        return max(lp, 0.0)
    return lp if lp > 0 else None


def binance_liq_price(
    side: Side,
    size: float,
    entry: float,
    wallet: float,
    tiers: Sequence[Tier],
    other_mm: float = 0.0,
    other_upnl: float = 0.0,
) -> float | None:
    """Binance one-way position; ``wallet`` = isolated wallet (isolated) or cross wallet balance."""
    s = _sign(side)
    q = abs(size)
    base = wallet - other_mm + other_upnl
    candidates: list[float] = []
    for t in tiers:
        den = q * t.mmr - s * q
        if den == 0:
            continue
        lp = (base + t.deduction - s * q * entry) / den
        notional = q * max(lp, 0.0)
        last = t is tiers[-1]
        if lp <= 0 and side is Side.LONG and t is tiers[0]:
            return 0.0
        if t.floor <= notional and (notional < t.cap or last) and lp > 0:
            candidates.append(lp)
    if candidates:
        # Equity - MM is monotone in price, so one bracket is consistent; keep the safe pick anyway.
        return max(candidates) if side is Side.LONG else min(candidates)
    t = tier_for(tiers, q * entry)
    lp = (base + t.deduction - s * q * entry) / (q * t.mmr - s * q)
    return _finish(side, lp)


def bybit_liq_price(side: Side, size: float, entry: float, margin: float, tiers: Sequence[Tier]) -> float | None:
    """Bybit classic: ``margin`` = position margin IM + extra margin added (isolated) or wallet (cross)."""
    q = abs(size)
    value = q * entry
    t = tier_for(tiers, value)
    mm = value * t.mmr - t.deduction
    lp = entry - _sign(side) * (margin - mm) / q
    return _finish(side, lp)


def okx_liq_price(
    side: Side,
    size: float,
    entry: float,
    margin: float,
    tiers: Sequence[Tier],
    contract_size: float = 1.0,
    taker_fee: float = 0.0,
) -> float | None:
    """OKX USDT swap; ``size`` in base coin, tiers by contracts (``size / contract_size``)."""
    q = abs(size)
    t = tier_for(tiers, q / contract_size)
    k = t.mmr + taker_fee
    if side is Side.LONG:
        return _finish(side, (entry - margin / q) / (1.0 - k))
    return _finish(side, (entry + margin / q) / (1.0 + k))


def deribit_liq_price(
    side: Side, size: float, entry: float, margin: float, tiers: Sequence[Tier], inverse: bool
) -> float | None:
    """Deribit (UNVERIFIED model, see module doc). ``margin`` in USD at the entry price."""
    q = abs(size)
    t = tier_for(tiers, q * entry)
    if not inverse:
        if side is Side.LONG:
            return _finish(side, (entry - margin / q) / (1.0 - t.mmr))
        return _finish(side, (entry + margin / q) / (1.0 + t.mmr))
    notional = q * entry  # USD face value of the contracts
    wb = margin / entry  # collateral in coin
    if side is Side.LONG:
        return _finish(side, notional * (1.0 + t.mmr) / (wb + notional / entry))
    den = notional / entry - wb
    if den <= 0:
        return None
    return _finish(side, notional * (1.0 - t.mmr) / den)


@dataclass(frozen=True, slots=True)
class LiqInput:
    exchange: Exchange
    side: Side
    size: float  # base coin
    entry_price: float
    margin_usd: float  # isolated margin, or cross wallet balance
    tiers: Sequence[Tier]
    contract_size: float = 1.0  # OKX ctVal
    taker_fee: float = 0.0  # OKX: fraction
    inverse: bool = False  # Deribit BTC-PERPETUAL


def liquidation_price(p: LiqInput) -> float | None:
    if p.size <= 0 or p.entry_price <= 0:
        raise ValueError("size and entry price must be positive")
    if p.exchange is Exchange.BINANCE:
        return binance_liq_price(p.side, p.size, p.entry_price, p.margin_usd, p.tiers)
    if p.exchange is Exchange.BYBIT:
        return bybit_liq_price(p.side, p.size, p.entry_price, p.margin_usd, p.tiers)
    if p.exchange is Exchange.OKX:
        return okx_liq_price(p.side, p.size, p.entry_price, p.margin_usd, p.tiers, p.contract_size, p.taker_fee)
    return deribit_liq_price(p.side, p.size, p.entry_price, p.margin_usd, p.tiers, p.inverse)


def maintenance_margin(p: LiqInput, price: float) -> float:
    """Maintenance margin (USD) at ``price`` under the exchange's rule (see module doc)."""
    q = abs(p.size)
    if p.exchange is Exchange.BINANCE:
        t = tier_for(p.tiers, q * price)
        return q * price * t.mmr - t.deduction
    if p.exchange is Exchange.BYBIT:
        t = tier_for(p.tiers, q * p.entry_price)
        return q * p.entry_price * t.mmr - t.deduction
    if p.exchange is Exchange.OKX:
        t = tier_for(p.tiers, q / p.contract_size)
        return q * price * (t.mmr + p.taker_fee)
    t = tier_for(p.tiers, q * p.entry_price)
    if p.inverse:
        return q * p.entry_price * t.mmr  # mmr x face value S in coin (S/P) is worth mmr x S in USD
    return q * price * t.mmr


def equity_usd(p: LiqInput, price: float) -> float:
    """Margin equity (USD) of the position's account at ``price``: margin + unrealised PnL."""
    q = abs(p.size)
    s = _sign(p.side)
    if p.exchange is Exchange.DERIBIT and p.inverse:
        notional = q * p.entry_price
        coin = p.margin_usd / p.entry_price + s * notional * (1.0 / p.entry_price - 1.0 / price)
        return coin * price
    return p.margin_usd + s * q * (price - p.entry_price)


def margin_buffer_ratio(equity: float, maintenance: float) -> float | None:
    """beta = (equity - maintenance margin) / equity: the share of equity a loss can take before the
    exchange liquidates. 1 = no maintenance requirement, 0 = at liquidation, < 0 beyond it; None when
    the equity itself is gone (<= 0: no ratio means anything, the equity series says it)."""
    if equity <= 0 or not math.isfinite(equity) or not math.isfinite(maintenance):
        return None
    return (equity - maintenance) / equity


def liq_gap_pct(side: Side, mark: float, liq: float | None) -> float | None:
    """Distance from mark to the liquidation price in percent of mark; 0 at the price, < 0 beyond."""
    if liq is None or mark <= 0 or (side is Side.SHORT and liq <= 0):
        return None  # a short with no finite liquidation price (an exchange's "0") has no gap
    return (mark - liq) / mark * 100.0 if side is Side.LONG else (liq - mark) / mark * 100.0


@dataclass(frozen=True, slots=True)
class StressResult:
    shock_pct: float
    price: float
    equity_usd: float
    survives: bool


def stress(p: LiqInput, mark: float, liq: float | None, shocks_pct: Sequence[float]) -> list[StressResult]:
    """Equity and survival after an instantaneous move of the mark by each shock (percent)."""
    out = []
    for shock in shocks_pct:
        price = mark * (1.0 + shock / 100.0)
        if liq is None or (p.side is Side.SHORT and liq <= 0):
            survives = True
        elif p.side is Side.LONG:
            survives = price > liq
        else:
            survives = price < liq
        out.append(StressResult(shock, price, equity_usd(p, price), survives))
    return out


# ---- first-passage probability ----------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(lbeta)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(x: float, nu: float) -> float:
    """P(T > x) for Student's t with ``nu`` degrees of freedom."""
    tail = 0.5 * betainc(nu / 2.0, 0.5, nu / (nu + x * x))
    return tail if x >= 0 else 1.0 - tail


def normal_sf(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


NU_MIN, NU_MAX = 3.0, 30.0


def hit_probability(distance_log: float, sigma_per_sqrt_s: float, horizon_s: float, nu: float | None) -> float:
    """Probability that log(mark) moves by ``distance_log`` (toward the liquidation price) within
    ``horizon_s`` seconds.

    Model: driftless Brownian motion whose volatility is drawn once per path from an inverse-gamma
    law (a normal variance mixture). Conditionally on the volatility the reflection principle
    gives ``P = 2*P(X_T >= b)``; unconditionally X_T is Student-t with ``nu`` degrees of freedom and
    variance sigma^2T, so ``P = 2*sf_t(b / (sigmasqrtT*sqrt((nu-2)/nu)), nu)`` — fat tails from volatility
    uncertainty. ``nu=None`` gives the Gaussian limit.
    """
    if distance_log <= 0:
        return 1.0
    if sigma_per_sqrt_s <= 0 or horizon_s <= 0:
        return 0.0
    scale = sigma_per_sqrt_s * math.sqrt(horizon_s)
    if nu is None:
        return min(1.0, 2.0 * normal_sf(distance_log / scale))
    scale *= math.sqrt((nu - 2.0) / nu)
    return min(1.0, 2.0 * student_t_sf(distance_log / scale, nu))


@dataclass(frozen=True, slots=True)
class Volatility:
    sigma_per_sqrt_s: float  # standard deviation of log price per sqrt(second)
    nu: float  # Student-t degrees of freedom, from the excess kurtosis of normalised returns
    observations: int


def realised_volatility(samples: Sequence[tuple[float, float]], min_returns: int = 20) -> Volatility | None:
    """Realised volatility from (time, price) samples, oldest first, irregular spacing allowed.

    sigma^2 = sum r^2 / sum dt. nu from the excess kurtosis kappa of returns normalised by sqrtdt: a t law has
    kappa = 6/(nu-4), so nu = 4 + 6/kappa, clamped to [3, 30] (kappa <= 0 -> 30, near-Gaussian).
    """
    rets: list[tuple[float, float]] = []
    for (t0, p0), (t1, p1) in itertools.pairwise(samples):
        dt = t1 - t0
        if dt > 0 and p0 > 0 and p1 > 0:
            rets.append((math.log(p1 / p0), dt))
    if len(rets) < min_returns:
        return None
    total_dt = sum(dt for _, dt in rets)
    var = sum(r * r for r, _ in rets) / total_dt
    if var <= 0:
        return Volatility(0.0, NU_MAX, len(rets))
    z = [r / math.sqrt(dt * var) for r, dt in rets]
    m2 = sum(v * v for v in z) / len(z)
    m4 = sum(v**4 for v in z) / len(z)
    kurt = m4 / (m2 * m2) - 3.0 if m2 > 0 else 0.0
    nu = NU_MAX if kurt <= 6.0 / (NU_MAX - 4.0) else max(NU_MIN, min(NU_MAX, 4.0 + 6.0 / kurt))
    return Volatility(math.sqrt(var), nu, len(rets))


def liq_hit_probability(side: Side, mark: float, liq: float | None, vol: Volatility, horizon_s: float) -> float | None:
    """First-passage probability to the liquidation price; 1 when mark is already past it."""
    if mark <= 0:
        return None
    if liq is None or liq <= 0:
        return 0.0  # no price liquidates it (a long's 0, a short's None or an exchange's "0")
    distance = math.log(mark / liq) if side is Side.LONG else math.log(liq / mark)
    return hit_probability(distance, vol.sigma_per_sqrt_s, horizon_s, vol.nu)
