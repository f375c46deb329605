"""Dated futures of the simulated exchanges: a curve consistent with the funding regime.

Per exchange and base (BTC, ETH), the two next quarterlies (last Friday of Mar/Jun/Sep/Dec, 08:00
UTC; on Bybit both the USDT-margined and the inverse ones, ``BTCUSDT-27MAR26`` and ``BTCUSDH26``). A
future's mark is the exchange's index times ``1 + carry x days / 365``: the carry (a rate a year) is
the exchange's perpetual funding annualised (held within +-8 %/yr, where real quarterlies mostly
trade: the sim's funding regimes run hotter), plus a slow noise per contract and, during the
``curve_dislocation`` scenario, a jump on one exchange's contracts. So the basis shrinks to zero at
the delivery. When the nearest contract expires it is delisted and the next one is listed.

``short_seconds`` (tests): a ladder of BTC contracts ``S`` seconds apart, the first expiring ``S``
seconds after start, so a test sees an expiry and a roll within a minute. Their names take a date
``k`` days after the start (unique ids); the expiry fields carry the real (short) delivery time.

Its own random generator: the perpetuals' numbers for a seed are the same with or without it.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.model import EIGHT_HOURS, Exchange

if TYPE_CHECKING:
    from exporter.sim.market import Instrument, MarketModel

DAY = 86400.0
YEAR_DAYS = 365.0
BASES = ("BTC", "ETH")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
MONTH_CODES = "FGHJKMNQUVXZ"  # futures month letters: Bybit's inverse futures are BTCUSDH26 (March 2026)
NOISE_SD = 0.005  # carry noise, a year
CARRY_LIMIT = 0.08  # calm carry follows the annualised funding, held within +-8 %/yr
NOISE_TAU = 1800.0
DISLOCATION = 0.25  # curve_dislocation: one exchange's carry jumps by 25 %/yr
DISLOCATED = Exchange.OKX


@dataclass(slots=True)
class DatedFuture:
    exchange: Exchange
    symbol: str
    base: str
    quote: str
    inverse: bool
    contract_size: float
    expiry: float
    listed_at: float
    name_day: date
    k: int = 0  # short-dated ladder position (1, 2, ...); 0 for a quarterly
    mark: float = 0.0
    index: float = 0.0
    noise: float = 0.0
    carry: float = 0.0  # a year


def quarterlies(now: float, n: int) -> list[float]:
    """The next ``n`` quarterly deliveries after ``now``: last Friday of Mar/Jun/Sep/Dec, 08:00 UTC."""
    out: list[float] = []
    d = datetime.fromtimestamp(now, tz=UTC)
    y, m = d.year, d.month
    while len(out) < n:
        if m % 3 == 0:
            last = calendar.monthrange(y, m)[1]
            day = date(y, m, last)
            day -= timedelta(days=(day.weekday() - 4) % 7)
            t = datetime(day.year, day.month, day.day, 8, tzinfo=UTC).timestamp()
            if t > now:
                out.append(t)
        m += 1
        if m > 12:
            y, m = y + 1, 1
    return out


def symbol_of(exchange: Exchange, base: str, day: date, inverse: bool = False) -> tuple[str, str, bool, float]:
    """(symbol, quote, inverse, contract size) as each exchange names its dated futures (``inverse``:
    Bybit's inverse futures, 1 USD a contract, settled in the coin)."""
    yymmdd = day.strftime("%y%m%d")
    mon = MONTHS[day.month - 1]
    if exchange is Exchange.BINANCE:
        return f"{base}USDT_{yymmdd}", "USDT", False, 1.0
    if exchange is Exchange.BYBIT and inverse:
        return f"{base}USD{MONTH_CODES[day.month - 1]}{day:%y}", "USD", True, 1.0
    if exchange is Exchange.BYBIT:
        return f"{base}USDT-{day.day:02d}{mon}{day:%y}", "USDT", False, 1.0
    if exchange is Exchange.OKX:
        return f"{base}-USD-{yymmdd}", "USD", True, 100.0 if base == "BTC" else 10.0
    return f"{base}-{day.day}{mon}{day:%y}", "USD", True, 10.0 if base == "BTC" else 1.0


class Curve:
    def __init__(self, market: MarketModel, short_seconds: float | None = None) -> None:
        self.market = market
        self.rng = np.random.Generator(np.random.PCG64(market.seed + 7919))
        self.short_seconds = short_seconds
        self.futures: dict[Exchange, dict[str, DatedFuture]] = {ex: {} for ex in market.exchanges}
        self.expired: dict[Exchange, list[str]] = {ex: [] for ex in market.exchanges}
        self.dislocation_until = 0.0
        now = market.now
        start_day = datetime.fromtimestamp(now, tz=UTC).date()
        for ex in market.exchanges:
            for base in self._bases(ex):
                for t in quarterlies(now, 2):
                    day = datetime.fromtimestamp(t, tz=UTC).date()
                    self._list(ex, base, t, day)
                    if ex is Exchange.BYBIT:  # Bybit lists both: USDT-margined and inverse quarterlies
                        self._list(ex, base, t, day, inverse=True)
        if short_seconds:
            for ex in market.exchanges:
                if "BTC" in self._bases(ex):
                    for k in (1, 2):
                        self._list(ex, "BTC", now + k * short_seconds, start_day + timedelta(days=k), k)
        self._start_day = start_day
        self.step(0.0)

    def _bases(self, exchange: Exchange) -> list[str]:
        have = {i.spec.base for i in self.market.instruments[exchange].values()}
        return [b for b in BASES if b in have]

    def _perp(self, exchange: Exchange, base: str) -> Instrument | None:
        for inst in self.market.instruments[exchange].values():
            if inst.spec.base == base:
                return inst
        return None

    def _list(
        self, ex: Exchange, base: str, expiry: float, day: date, k: int = 0, inverse: bool = False
    ) -> DatedFuture:
        sym, quote, inverse, ct = symbol_of(ex, base, day, inverse)
        f = DatedFuture(ex, sym, base, quote, inverse, ct, expiry, self.market.now, day, k)
        f.noise = float(self.rng.normal(0.0, NOISE_SD))
        self.futures[ex][sym] = f
        return f

    def dislocate(self, seconds: float | None) -> None:
        self.dislocation_until = self.market.now + (300.0 if seconds is None else float(seconds))

    def step(self, dt: float) -> None:
        now = self.market.now
        a = math.exp(-dt / NOISE_TAU) if dt > 0 else 1.0
        for ex, futs in self.futures.items():
            for sym, f in list(futs.items()):
                if f.expiry <= now:
                    del futs[sym]  # delivered: delisted, and the next one listed
                    self.expired[ex].append(sym)
                    self._roll(ex, f)
            for f in futs.values():
                if dt > 0:
                    f.noise = a * f.noise + NOISE_SD * math.sqrt(1 - a * a) * float(self.rng.standard_normal())
                self._price(f, now)

    def _roll(self, ex: Exchange, gone: DatedFuture) -> None:
        same = [
            f
            for f in self.futures[ex].values()
            if f.base == gone.base and (f.k > 0) == (gone.k > 0) and f.inverse is gone.inverse
        ]
        if gone.k > 0 and self.short_seconds:
            last = max(same, key=lambda f: f.k, default=gone)
            k = last.k + 1
            self._list(ex, gone.base, last.expiry + self.short_seconds, self._start_day + timedelta(days=k), k)
            return
        after = max((f.expiry for f in same), default=gone.expiry)
        nxt = quarterlies(after, 1)[0]
        self._list(ex, gone.base, nxt, datetime.fromtimestamp(nxt, tz=UTC).date(), inverse=gone.inverse)

    def _price(self, f: DatedFuture, now: float) -> None:
        perp = self._perp(f.exchange, f.base)
        if perp is None:
            return
        spec = perp.spec
        rate_8h = perp.funding_8h if spec.continuous else perp.funding_rate * EIGHT_HOURS / spec.interval_s
        carry = max(-CARRY_LIMIT, min(CARRY_LIMIT, rate_8h * 3 * YEAR_DAYS)) + f.noise
        if now < self.dislocation_until and f.exchange is DISLOCATED:
            carry += DISLOCATION
        f.carry = carry
        f.index = perp.index
        f.mark = perp.index * (1.0 + carry * max(0.0, f.expiry - now) / DAY / YEAR_DAYS)

    def truth(self, exchange: Exchange) -> dict[str, Any]:
        now = self.market.now
        out = {}
        for sym, f in sorted(self.futures[exchange].items(), key=lambda kv: kv[1].expiry):
            days = (f.expiry - now) / DAY
            basis = (f.mark - f.index) / f.index if f.index else None
            out[sym] = {
                "base": f.base,
                "quote": f.quote,
                "inverse": f.inverse,
                "contract_size": f.contract_size,
                "expiry": f.expiry,
                "listed_at": f.listed_at,
                "mark": f.mark,
                "index": f.index,
                "days_to_expiry": days,
                "basis": basis,
                "carry_annualized": f.carry,
            }
        return {"futures": out, "expired": list(self.expired[exchange])}
