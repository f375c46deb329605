"""Seeded market model behind the simulated exchanges.

One price process per base asset (Markov-switching calm/volatile regimes plus jumps), one premium
per exchange x instrument (slow shared sentiment + exchange offset + fast Ornstein-Uhlenbeck noise),
funding from each exchange's own formula, open interest, and a leveraged crowd whose liquidation
prices sit around the price: when the price runs through them they are liquidated, and the forced
orders push the price further (cascade).

Deterministic: the same seed and the same sequence of ``step(dt)`` calls give the same numbers.
Only ``numpy.random.Generator(PCG64(seed))`` is used, drawn in a fixed order.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporter.model import EIGHT_HOURS, Exchange, Side
from exporter.sim.curve import Curve
from exporter.sim.tape import Tape

HOUR = 3600.0
DAY = 86400.0
YEAR = 365.0 * DAY
HISTORY_DAYS = 60
INTEREST_8H = 0.0001  # 0.03 %/day = 0.01 % per 8 h (Binance, Bybit, OKX "withRate")
CLAMP_BAND = 0.0005  # clamp(I - P, -0.05 %, +0.05 %)
DERIBIT_DAMPER = 0.00025  # +-0.025 % dead band of Deribit's formula
MMR = 0.005  # maintenance margin rate of the simulated crowd

# Default caps (fraction per interval). Binance BTCUSDT +-0.3 % (reference 2.7), Bybit doc example 0.5 %,
# OKX 0.375 % (2026 capture), Deribit 0.5 %/8 h (assumed; the reference gives no number).
DEFAULT_CAP: dict[Exchange, float] = {
    Exchange.BINANCE: 0.003,
    Exchange.BYBIT: 0.005,
    Exchange.OKX: 0.00375,
    Exchange.DERIBIT: 0.005,
}

KNOWN_BASES: list[tuple[str, float]] = [
    ("BTC", 90_000.0),
    ("ETH", 3_000.0),
    ("SOL", 150.0),
    ("XRP", 2.2),
    ("DOGE", 0.32),
    ("ADA", 0.75),
    ("AVAX", 35.0),
    ("LINK", 18.0),
    ("DOT", 6.5),
    ("LTC", 95.0),
    ("BNB", 620.0),
    ("TRX", 0.24),
    ("BCH", 420.0),
    ("NEAR", 4.8),
    ("APT", 9.0),
    ("ARB", 0.8),
    ("OP", 1.9),
    ("SUI", 3.6),
    ("ATOM", 6.2),
    ("FIL", 4.9),
    ("ETC", 26.0),
    ("UNI", 11.0),
    ("AAVE", 260.0),
    ("INJ", 22.0),
]

# Passive open interest per exchange as a share of the BTC Binance figure (USD).
OI_SHARE: dict[Exchange, float] = {
    Exchange.BINANCE: 1.0,
    Exchange.BYBIT: 0.65,
    Exchange.OKX: 0.4,
    Exchange.DERIBIT: 0.15,
}
BTC_BINANCE_OI_USD = 8.0e9


@dataclass(slots=True)
class Spec:
    """Static facts of one simulated perpetual."""

    exchange: Exchange
    symbol: str
    base: str
    quote: str
    interval_s: float  # Deribit: 28800 (continuous funding expressed per 8 h)
    cap: float
    floor: float
    contract_size: float = 1.0  # OKX ctVal (coin, or USD for inverse); Deribit contract size
    inverse: bool = False
    continuous: bool = False  # Deribit
    price_decimals: int = 2
    qty_decimals: int = 3


@dataclass(slots=True)
class SimLiquidation:
    exchange: Exchange
    symbol: str
    time: float  # Unix seconds
    side: Side  # side of the liquidated position
    price: float  # fill price (Binance ap, Deribit trade price)
    bankruptcy_price: float  # Bybit p, OKX bkPx
    qty_base: float
    notional_usd: float
    seq: int


@dataclass(slots=True)
class Settlement:
    time_ms: int
    rate: float  # per interval (Deribit: interest_8h)
    mark: float
    index: float
    prev_index: float = 0.0
    interest_1h: float = 0.0  # Deribit only


@dataclass(slots=True)
class Asset:
    base: str
    price: float
    index_scale: float  # passive OI and crowd sizes relative to BTC
    volatile: bool = False
    sentiment: float = 0.00015
    pre_sentiment: float = 0.00015  # where the sentiment returns after a scenario
    pending_impact: float = 0.0  # log-price move from last step's forced orders


@dataclass(slots=True)
class Crowd:
    side: np.ndarray  # +1 long, -1 short
    size: np.ndarray  # base coin
    entry: np.ndarray
    liq: np.ndarray
    bk: np.ndarray
    # (highest long, lowest short liquidation price) of the crowd or of a superset of it (closing
    # positions only narrows the range): a mark between them liquidates nobody, the common case,
    # decided without an array pass (None: to be computed)
    _bounds: tuple[float, float] | None = None

    @staticmethod
    def empty() -> Crowd:
        z = np.zeros(0)
        return Crowd(z.copy(), z.copy(), z.copy(), z.copy(), z.copy())

    def add(self, side: np.ndarray, size: np.ndarray, entry: np.ndarray, lev: np.ndarray) -> None:
        liq = entry * (1.0 - side / lev + side * MMR)
        bk = entry * (1.0 - side / lev)
        self.side = np.concatenate([self.side, side])
        self.size = np.concatenate([self.size, size])
        self.entry = np.concatenate([self.entry, entry])
        self.liq = np.concatenate([self.liq, liq])
        self.bk = np.concatenate([self.bk, bk])
        self._bounds = None

    def keep(self, mask: np.ndarray) -> None:
        # new arrays, never writes into the old ones: the step's crowd snapshot keeps reading those
        self.side, self.size, self.entry = self.side[mask], self.size[mask], self.entry[mask]
        self.liq, self.bk = self.liq[mask], self.bk[mask]

    def safe_at(self, mark: float) -> bool:
        """True when a mark of ``mark`` liquidates no position (exactly the negation of any hit)."""
        if self._bounds is not None and self._bounds[0] < mark < self._bounds[1]:
            return True
        longs = self.side > 0
        shorts = self.side < 0
        self._bounds = (
            float(self.liq[longs].max()) if longs.any() else -math.inf,
            float(self.liq[shorts].min()) if shorts.any() else math.inf,
        )
        return self._bounds[0] < mark < self._bounds[1]

    def base_total(self) -> float:
        return float(self.size.sum())


@dataclass(slots=True)
class LiqCount:
    count: int = 0
    notional_usd: float = 0.0

    def add(self, notional: float) -> None:
        self.count += 1
        self.notional_usd += notional


@dataclass(slots=True)
class Instrument:
    spec: Spec
    asset: Asset
    offset: float  # exchange-specific mean premium offset
    noise_sd: float
    index_dev: float  # small constant index deviation of this exchange's index basket
    noise: float = 0.0
    premium: float = 0.0
    ewma_premium: float = 0.0
    mark: float = 0.0
    index: float = 0.0
    funding_rate: float = 0.0  # predicted rate for the next settlement (Deribit: current_funding)
    funding_8h: float = 0.0  # Deribit trailing 8 h
    next_funding_time: float = 0.0  # Unix s (Deribit: next hourly history record)
    interval_start: float = 0.0
    acc_wp: float = 0.0  # time-weighted premium sums over the current interval
    acc_w: float = 0.0
    hour_sum: float = 0.0  # Deribit: current-hour average of the instantaneous rate
    hour_n: float = 0.0
    passive_oi_base: float = 0.0
    oi_target_base: float = 0.0
    ls_ratio: float = 1.2
    crowd: Crowd = field(default_factory=Crowd.empty)
    hist_factory: Callable[[], list[Settlement]] | None = None
    hist: list[Settlement] | None = None  # materialised on first use
    hist_tail: list[Settlement] = field(default_factory=list)  # settled before materialisation
    last_record: Settlement | None = None
    recent_1h: list[float] = field(default_factory=list)  # Deribit: last hourly interest_1h values
    settlements_count: int = 0
    liq_all: dict[Side, LiqCount] = field(default_factory=lambda: {Side.LONG: LiqCount(), Side.SHORT: LiqCount()})
    liq_sent: dict[Side, LiqCount] = field(default_factory=lambda: {Side.LONG: LiqCount(), Side.SHORT: LiqCount()})
    last_settled_rate: float | None = None

    @property
    def history(self) -> list[Settlement]:
        """Settled funding, oldest first: 60 generated days plus everything settled since start."""
        if self.hist is None:
            self.hist = (self.hist_factory() if self.hist_factory else []) + self.hist_tail
            self.hist_tail = []
        return self.hist

    def add_record(self, rec: Settlement) -> None:
        (self.hist if self.hist is not None else self.hist_tail).append(rec)
        self.last_record = rec
        if self.spec.continuous:
            self.recent_1h = [*self.recent_1h, rec.interest_1h][-7:]

    @property
    def oi_base(self) -> float:
        return self.passive_oi_base + self.crowd.base_total()

    @property
    def oi_usd(self) -> float:
        return self.oi_base * self.mark


def funding_formula(exchange: Exchange, avg_premium: float, interval_s: float, cap: float, floor: float) -> float:
    """Rate per interval from the interval's average premium index, per the exchange's rules.

    Binance/Bybit/OKX(withRate): F = clamp(P + clamp(I - P, -0.05 %, 0.05 %), floor, cap), with the
    interest I = 0.01 % per 8 h scaled to the interval. Deribit (per 8 h):
    F = clamp(max(0.025 %, P) + min(-0.025 %, P), floor, cap).
    """
    if exchange is Exchange.DERIBIT:
        raw = max(DERIBIT_DAMPER, avg_premium) + min(-DERIBIT_DAMPER, avg_premium)
    else:
        interest = INTEREST_8H * interval_s / EIGHT_HOURS
        raw = avg_premium + min(CLAMP_BAND, max(-CLAMP_BAND, interest - avg_premium))
    return min(cap, max(floor, raw))


def _symbol(exchange: Exchange, base: str, index: int) -> tuple[str, str, bool]:
    """(symbol, quote, inverse) for the exchange's naming rules."""
    if exchange is Exchange.BINANCE or exchange is Exchange.BYBIT:
        return f"{base}USDT", "USDT", False
    if exchange is Exchange.OKX:
        return f"{base}-USDT-SWAP", "USDT", False
    if index < 2:
        return f"{base}-PERPETUAL", "USD", True
    return f"{base}_USDC-PERPETUAL", "USDC", False


def _interval_for(exchange: Exchange, index: int) -> float:
    if exchange is Exchange.DERIBIT or index < 2:
        return EIGHT_HOURS
    if index == 2:
        return 4 * HOUR
    if index == 3:
        return HOUR if exchange is not Exchange.OKX else 4 * HOUR
    return 4 * HOUR if index % 3 == 0 else EIGHT_HOURS


def base_list(n: int, rng: np.random.Generator) -> list[tuple[str, float]]:
    out = list(KNOWN_BASES[: max(2, n)])
    for i in range(len(out), n):
        out.append((f"SYN{i:03d}", float(np.exp(rng.uniform(math.log(0.05), math.log(500.0))))))
    return out


class Scenario:
    CALM = "calm"
    FUNDING_SPIKE = "funding_spike"
    CASCADE = "cascade"
    CURVE_DISLOCATION = "curve_dislocation"  # one exchange's dated futures pushed off the curve
    ALL = (CALM, FUNDING_SPIKE, CASCADE, CURVE_DISLOCATION)


class MarketModel:
    """All simulated exchanges' market state. Call ``step`` to advance."""

    def __init__(
        self,
        seed: int = 1,
        instruments_per_exchange: int = 2,
        start_time: float = 1_767_225_600.0,
        history_days: int = HISTORY_DAYS,
        exchanges: tuple[Exchange, ...] = tuple(Exchange),
        crowd_size: int = 120,
        futures: bool = True,
        futures_short_seconds: float | None = None,
        tape: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.now = float(start_time)
        self.exchanges = exchanges
        self.crowd_size = crowd_size
        self.scenario = Scenario.CALM
        self.scenario_started = self.now
        self.scenario_params: dict[str, float] = {}
        self.cascade_phase = ""  # build | crash | ""
        self.relax_until = 0.0  # after a scenario the premium returns to its level before it
        self.liq_seq = 0
        self.pending: dict[Exchange, list[SimLiquidation]] = {ex: [] for ex in exchanges}
        self.insurance: dict[Exchange, float] = {ex: 5.0e8 * OI_SHARE[ex] for ex in exchanges}
        self.assets: dict[str, Asset] = {}
        for base, price in base_list(instruments_per_exchange, self.rng):
            scale = 1.0 if base == "BTC" else (0.4 if base == "ETH" else 0.03)
            self.assets[base] = Asset(base=base, price=price, index_scale=scale)
        self.instruments: dict[Exchange, dict[str, Instrument]] = {ex: {} for ex in exchanges}
        offsets = {Exchange.BINANCE: 0.0, Exchange.BYBIT: 0.00002, Exchange.OKX: -0.00001, Exchange.DERIBIT: 0.00003}
        noise_sd = {Exchange.BINANCE: 0.00012, Exchange.BYBIT: 0.00015, Exchange.OKX: 0.00014, Exchange.DERIBIT: 0.0002}
        for i, asset in enumerate(self.assets.values()):
            for ex in exchanges:
                sym, quote, inverse = _symbol(ex, asset.base, i)
                interval = _interval_for(ex, i)
                cap = DEFAULT_CAP[ex] if i < 2 else (0.02 if interval < 8 * HOUR else 0.0075)
                ct = 1.0
                if ex is Exchange.OKX:
                    ct = {"BTC": 0.01, "ETH": 0.1}.get(asset.base, 1.0 if asset.price < 50 else 0.1)
                elif ex is Exchange.DERIBIT:
                    ct = 10.0 if asset.base == "BTC" else (1.0 if inverse else 0.1)
                pdec = max(2, min(8, 4 - math.floor(math.log10(asset.price))))
                spec = Spec(
                    ex,
                    sym,
                    asset.base,
                    quote,
                    interval,
                    cap,
                    -cap,
                    ct,
                    inverse,
                    ex is Exchange.DERIBIT,
                    price_decimals=pdec,
                    qty_decimals=3 if asset.price > 100 else 1,
                )
                inst = Instrument(
                    spec=spec,
                    asset=asset,
                    offset=offsets[ex],
                    noise_sd=noise_sd[ex],
                    index_dev=float(self.rng.normal(0.0, 0.00005)),
                )
                oi_usd = BTC_BINANCE_OI_USD * OI_SHARE[ex] * asset.index_scale
                inst.passive_oi_base = inst.oi_target_base = oi_usd / asset.price
                inst.ls_ratio = float(np.exp(self.rng.normal(0.2, 0.15)))
                self.instruments[ex][sym] = inst
        self._generate_history(history_days)
        for ex in exchanges:
            for inst in self.instruments[ex].values():
                self._price_instrument(inst)
                inst.ewma_premium = inst.premium
                self._init_funding(inst)
                self._seed_crowd(inst)
        self._crowd_at_step_end: list[tuple[str, np.ndarray, float]] = []
        self._update_crowd_totals()
        # dated futures (term structure); their own random generator leaves the perpetuals' draws as they were
        self.curve = Curve(self, futures_short_seconds) if futures else None
        # the minute history the exchanges' kline and open-interest history endpoints serve
        self.tape = Tape(self)
        self.record_tape = tape  # off: no minute history served (a run stepped for its perpetuals only)
        if tape:
            self.tape.record(self.now)

    # ------------------------------------------------------------------------------------------
    # queries

    def all_instruments(self) -> list[Instrument]:
        return [inst for ex in self.exchanges for inst in self.instruments[ex].values()]

    def get(self, exchange: Exchange, symbol: str) -> Instrument | None:
        return self.instruments.get(exchange, {}).get(symbol)

    def drain_liquidations(self, exchange: Exchange) -> list[SimLiquidation]:
        out = self.pending[exchange]
        self.pending[exchange] = []
        return out

    def record_sent(self, liq: SimLiquidation) -> None:
        """The exchange's stream actually published this liquidation (truth `liquidations`)."""
        inst = self.get(liq.exchange, liq.symbol)
        if inst is not None:
            inst.liq_sent[liq.side].add(liq.notional_usd)

    # ------------------------------------------------------------------------------------------
    # scenarios

    def set_scenario(self, name: str, seconds: float | None = None) -> None:
        if name not in Scenario.ALL:
            raise ValueError(f"unknown scenario {name!r}")
        self.scenario = name
        self.scenario_started = self.now
        self.scenario_params = {}
        self.cascade_phase = ""
        if name != Scenario.CALM:
            for asset in self.assets.values():
                asset.pre_sentiment = asset.sentiment
        else:
            self.relax_until = self.now + 60.0
        if name == Scenario.FUNDING_SPIKE:
            self.scenario_params["seconds"] = 60.0 if seconds is None else float(seconds)
            self.scenario_params["level"] = 0.004
        elif name == Scenario.CURVE_DISLOCATION:
            self.scenario_params["seconds"] = 300.0 if seconds is None else float(seconds)
            if self.curve is not None:
                self.curve.dislocate(self.scenario_params["seconds"])
        elif name == Scenario.CASCADE:
            # Build-up 20-40 s (seeded), then the break, then calm again.
            self.scenario_params["build"] = float(self.rng.uniform(20.0, 40.0)) if seconds is None else float(seconds)
            self.scenario_params["crash"] = 12.0
            self.cascade_phase = "build"

    def _scenario_tick(self) -> None:
        el = self.now - self.scenario_started
        if self.scenario == Scenario.CURVE_DISLOCATION and el >= self.scenario_params["seconds"]:
            self.scenario = Scenario.CALM
        elif self.scenario == Scenario.FUNDING_SPIKE and el >= self.scenario_params["seconds"]:
            self.scenario, self.relax_until = Scenario.CALM, self.now + 60.0
        elif self.scenario == Scenario.CASCADE:
            build, crash = self.scenario_params["build"], self.scenario_params["crash"]
            if el >= build + crash:
                self.scenario, self.cascade_phase, self.relax_until = Scenario.CALM, "", self.now + 60.0
            elif el >= build:
                self.cascade_phase = "crash"

    # ------------------------------------------------------------------------------------------
    # history

    def _generate_history(self, days: int) -> None:
        """Hourly sentiment and price paths for `days` before now, with the live model's processes.

        Per-instrument settlements are derived from them lazily (``Instrument.history``): a universe of
        2000 instruments would otherwise hold a million records nobody asked for.
        """
        hours = (days + 1) * 24 + 1  # one spare day so the first settlements have a full interval
        t_end = math.floor(self.now / HOUR) * HOUR
        self._hist_times = t_end - HOUR * np.arange(hours - 1, -1, -1)
        assets = list(self.assets.values())
        n = len(assets)
        # sentiment OU (tau 36 h, stationary sd 0.0006, mean 0.00015), calibrated to the settled BTC
        # funding of ../shared/data (40 % of 8 h settlements pinned at 0.01 %, lag-1 correlation 0.8)
        a, mu, sd = math.exp(-1.0 / 36.0), 0.00015, 0.0006
        s = np.empty((hours, n))
        s[0] = mu + sd * self.rng.standard_normal(n)
        eps = self.rng.standard_normal((hours, n)) * sd * math.sqrt(1 - a * a)
        for k in range(1, hours):
            s[k] = mu + a * (s[k - 1] - mu) + eps[k]
        rets = self.rng.normal(0.0, 0.6 * math.sqrt(HOUR / YEAR), (hours, n))
        tail = np.cumsum(rets[::-1], axis=0)[::-1] - rets  # sum of the returns after hour k
        prices = np.array([x.price for x in assets])[None, :] * np.exp(-tail)  # paths end at today's price
        self._hist_paths: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for j, asset in enumerate(assets):
            asset.sentiment = float(s[-1, j])
            self._hist_paths[asset.base] = (s[:, j].copy(), prices[:, j].copy())
        for inst in self.all_instruments():
            inst.hist_factory = self._history_factory(inst)
            recs = self._history_records(inst, last_only=8)
            inst.last_record = recs[-1] if recs else None
            inst.recent_1h = [r.interest_1h for r in recs[-7:]] if inst.spec.continuous else []

    def _history_records(self, inst: Instrument, last_only: int | None = None) -> list[Settlement]:
        """Settled records of one instrument over the generated window (all, or only the last few)."""
        spec = inst.spec
        sent, prices = self._hist_paths[spec.base]
        times = self._hist_times
        # the instrument's own noise comes from a generator keyed by its name: any access order gives
        # the same history
        key = zlib.crc32(f"{spec.exchange.value}:{spec.symbol}".encode())
        rng = np.random.Generator(np.random.PCG64([self.seed, key]))
        prem = sent + inst.offset + rng.normal(0.0, inst.noise_sd * 0.3, len(times))
        idx = prices * (1 + inst.index_dev)
        marks = idx * (1 + prem)
        out: list[Settlement] = []
        if spec.continuous:
            raw = np.maximum(DERIBIT_DAMPER, prem) + np.minimum(-DERIBIT_DAMPER, prem)
            rates = np.clip(raw, spec.floor, spec.cap)
            i8 = np.convolve(rates, np.ones(8) / 8.0)[: len(rates)]  # trailing 8 h mean
            i8[:7] = [rates[: k + 1].mean() for k in range(7)]
            ks: Sequence[int] = range(max(1, len(times) - last_only) if last_only else 1, len(times))
            for k in ks:
                out.append(
                    Settlement(
                        int(times[k] * 1000),
                        round(float(i8[k]), 12),
                        float(marks[k]),
                        float(idx[k]),
                        float(idx[k - 1]),
                        round(float(rates[k]) / 8, 12),
                    )
                )
            return out
        step = int(spec.interval_s // HOUR)
        w = np.arange(1, step + 1, dtype=float)
        ks = [k for k in range(step, len(times)) if int(times[k]) % int(spec.interval_s) == 0]
        if last_only:
            ks = ks[-last_only:]
        interest = INTEREST_8H * spec.interval_s / EIGHT_HOURS
        for k in ks:
            avg = float((prem[k - step + 1 : k + 1] * w).sum() / w.sum())  # linearly increasing weights
            unclamped = avg + min(CLAMP_BAND, max(-CLAMP_BAND, interest - avg))
            rate = round(min(spec.cap, max(spec.floor, unclamped)), 8)
            out.append(Settlement(int(times[k] * 1000), rate, float(marks[k]), float(idx[k]), float(idx[k - step])))
        return out

    def _history_factory(self, inst: Instrument) -> Callable[[], list[Settlement]]:
        return lambda: self._history_records(inst)

    def _init_funding(self, inst: Instrument) -> None:
        spec = inst.spec
        if spec.continuous:
            inst.next_funding_time = math.floor(self.now / HOUR) * HOUR + HOUR
            inst.interval_start = inst.next_funding_time - HOUR
            inst.funding_rate = funding_formula(spec.exchange, inst.premium, EIGHT_HOURS, spec.cap, spec.floor)
            inst.funding_8h = inst.last_record.rate if inst.last_record else inst.funding_rate
            return
        inst.next_funding_time = math.floor(self.now / spec.interval_s) * spec.interval_s + spec.interval_s
        inst.interval_start = inst.next_funding_time - spec.interval_s
        elapsed = max(1.0, self.now - inst.interval_start)
        # the part of the interval before start: as if the premium had been at today's sentiment level
        inst.acc_w = elapsed * elapsed / 2.0
        inst.acc_wp = inst.acc_w * (inst.asset.sentiment + inst.offset)
        inst.funding_rate = self._predicted(inst)

    def _seed_crowd(self, inst: Instrument) -> None:
        n = self.crowd_size
        self._open_positions(inst, n, spread=0.01, long_bias=0.5, lev_median=12.0)

    def _open_positions(self, inst: Instrument, n: int, spread: float, long_bias: float, lev_median: float) -> None:
        if n <= 0:
            return
        r = self.rng
        side = np.where(r.random(n) < long_bias, 1.0, -1.0)
        entry = inst.mark * np.exp(r.normal(0.0, spread, n)) if spread > 0 else np.full(n, inst.mark)
        lev = np.clip(np.exp(r.normal(math.log(lev_median), 0.7, n)), 2.0, 100.0)
        notional = np.exp(r.normal(math.log(40_000.0 * max(inst.asset.index_scale, 0.05) ** 0.5), 1.0, n))
        size = notional / inst.mark
        # positions seeded already through their liquidation price are re-entered at the mark
        liq = entry * (1.0 - side / lev + side * MMR)
        bad = (side > 0) & (liq >= inst.mark) | (side < 0) & (liq <= inst.mark)
        entry = np.where(bad, inst.mark, entry)
        inst.crowd.add(side, size, entry, lev)

    def _update_crowd_totals(self) -> None:
        # only a step with forced orders reads the totals: keep what they are made of (the crowd's
        # arrays are replaced, never written into) and sum them then, in the same order
        self._crowd_at_step_end = [(inst.asset.base, inst.crowd.size, inst.mark) for inst in self.all_instruments()]

    def _crowd_notional(self) -> dict[str, float]:
        """Each base's crowd notional at the end of the previous step (at least 1 USD)."""
        tot: dict[str, float] = {}
        for base, size, mark in self._crowd_at_step_end:
            tot[base] = tot.get(base, 0.0) + float((size * mark).sum())
        return {base: max(v, 1.0) for base, v in tot.items()}

    # ------------------------------------------------------------------------------------------
    # dynamics

    def _price_instrument(self, inst: Instrument) -> None:
        inst.premium = inst.asset.sentiment + inst.offset + inst.noise
        inst.index = inst.asset.price * (1.0 + inst.index_dev)
        inst.mark = inst.index * (1.0 + inst.premium)

    def _predicted(self, inst: Instrument) -> float:
        spec = inst.spec
        # The published rate follows a fast average so a premium jump shows within seconds (the
        # exchanges re-estimate every minute); the settled rate uses the whole interval's average.
        return funding_formula(spec.exchange, inst.ewma_premium, spec.interval_s, spec.cap, spec.floor)

    def step(self, dt: float, now: float | None = None) -> None:
        """Advance the model by dt seconds (timestamps jump to `now` if given: live wall clock)."""
        r = self.rng
        self.now = self.now + dt if now is None else float(now)
        self._scenario_tick()
        spike = self.scenario == Scenario.FUNDING_SPIKE
        phase = self.cascade_phase
        for asset in self.assets.values():
            # regime switching: calm -> volatile mean 30 min, volatile -> calm mean 10 min
            u = r.random()
            if (not asset.volatile and u < dt / 1800.0) or (asset.volatile and u < dt / 600.0):
                asset.volatile = not asset.volatile
            sigma = 1.2 if asset.volatile else 0.45
            dlog = sigma * math.sqrt(dt / YEAR) * r.standard_normal()
            if r.random() < dt / (600.0 if asset.volatile else 3600.0):
                dlog += r.normal(0.0, 0.004)
            if phase == "build":
                dlog += 0.006 / self.scenario_params["build"] * dt  # slow grind up, +0.6 %
            elif phase == "crash":
                el = self.now - self.scenario_started - self.scenario_params["build"]
                if el < 3.0:
                    dlog -= 0.012 * dt  # the sharp break: about -3.6 % over 3 s, then forced selling
            dlog += asset.pending_impact
            asset.pending_impact = 0.0
            asset.price *= math.exp(dlog)
            # sentiment OU; the spike and the build-up pull it far up quickly
            if spike:
                mu, tau, sd = self.scenario_params["level"], 5.0, 0.0
            elif phase == "build":
                mu, tau, sd = 0.0025, 8.0, 0.0
            elif self.now < self.relax_until:
                mu, tau, sd = asset.pre_sentiment, 8.0, 0.0
            else:
                mu, tau, sd = 0.00015, 36 * HOUR, 0.0006
            a = math.exp(-dt / tau)
            asset.sentiment = mu + a * (asset.sentiment - mu) + sd * math.sqrt(1 - a * a) * r.standard_normal()
        ewma_a = math.exp(-dt / 15.0)
        impacts: dict[str, float] = {}
        for ex in self.exchanges:
            for inst in self.instruments[ex].values():
                a = math.exp(-dt / 300.0)
                inst.noise = a * inst.noise + inst.noise_sd * math.sqrt(1 - a * a) * r.standard_normal()
                self._price_instrument(inst)
                inst.ewma_premium = ewma_a * inst.ewma_premium + (1 - ewma_a) * inst.premium
                self._funding_tick(inst, dt)
                self._oi_tick(inst, dt, phase)
                imp = self._liquidate(inst)
                if imp:
                    impacts[inst.asset.base] = impacts.get(inst.asset.base, 0.0) + imp
        crowd_notional = self._crowd_notional() if impacts else {}
        for base, signed_notional in impacts.items():
            asset = self.assets[base]
            # forced selling (long liquidations) pushes down: 8 % of the whole crowd's notional = -1 %
            k = 0.08 if phase == "crash" else 0.05
            asset.pending_impact = max(-0.01, min(0.01, -k * signed_notional / crowd_notional.get(base, 1.0)))
        self._update_crowd_totals()
        if self.record_tape:
            self.tape.record(self.now)
        if self.curve is not None:
            self.curve.step(dt)

    def _funding_tick(self, inst: Instrument, dt: float) -> None:
        spec = inst.spec
        if spec.continuous:
            inst.funding_rate = funding_formula(spec.exchange, inst.premium, EIGHT_HOURS, spec.cap, spec.floor)
            inst.hour_sum += inst.funding_rate * dt
            inst.hour_n += dt
            cur = inst.hour_sum / inst.hour_n
            prev = [x * 8 for x in inst.recent_1h]
            inst.funding_8h = (sum(prev) + cur) / (len(prev) + 1)
            if self.now >= inst.next_funding_time:
                self.settle(inst)
            return
        w = max(self.now - inst.interval_start, 1e-3)
        inst.acc_wp += w * inst.premium * dt
        inst.acc_w += w * dt
        inst.funding_rate = self._predicted(inst)
        if self.now >= inst.next_funding_time:
            self.settle(inst)

    def settle(self, inst: Instrument) -> Settlement:
        """Settle the current interval now: append to history, move the next funding time one interval."""
        spec = inst.spec
        t_ms = int(inst.next_funding_time * 1000)
        prev_index = inst.last_record.index if inst.last_record else inst.index
        if spec.continuous:
            cur = inst.hour_sum / inst.hour_n if inst.hour_n else inst.funding_rate
            prev = [x * 8 for x in inst.recent_1h]
            i8 = (sum(prev) + cur) / (len(prev) + 1)
            rec = Settlement(t_ms, round(i8, 12), inst.mark, inst.index, prev_index, round(cur / 8, 12))
            inst.hour_sum = inst.hour_n = 0.0
            inst.next_funding_time += HOUR
        else:
            # time-weighted average with linearly increasing weights (all three; OKX: "weighted MA")
            avg = inst.acc_wp / inst.acc_w if inst.acc_w else inst.premium
            rate = round(funding_formula(spec.exchange, avg, spec.interval_s, spec.cap, spec.floor), 8)
            rec = Settlement(t_ms, rate, inst.mark, inst.index, prev_index)
            inst.next_funding_time += spec.interval_s
            inst.interval_start = self.now
            inst.acc_wp = inst.acc_w = 0.0
            # pay funding into the crowd's margin is ignored; the insurance fund earns nothing here
        inst.add_record(rec)
        inst.settlements_count += 1
        inst.last_settled_rate = rec.rate
        return rec

    def settle_exchange(self, exchange: Exchange) -> list[Settlement]:
        return [self.settle(inst) for inst in self.instruments[exchange].values()]

    def _oi_tick(self, inst: Instrument, dt: float, phase: str) -> None:
        r = self.rng
        base_oi = BTC_BINANCE_OI_USD * OI_SHARE[inst.spec.exchange] * inst.asset.index_scale / inst.asset.price
        if phase == "build":
            inst.oi_target_base *= math.exp(0.04 / self.scenario_params["build"] * dt)  # +4 % over the build
        else:
            inst.oi_target_base += (base_oi - inst.oi_target_base) * dt / (6 * HOUR)
        a = math.exp(-dt / (10.0 if phase == "build" else 600.0))  # leverage piles in fast in a build-up
        dev = (inst.passive_oi_base - inst.oi_target_base) * a
        inst.passive_oi_base = max(
            0.0, inst.oi_target_base + dev + inst.oi_target_base * 0.0005 * math.sqrt(1 - a * a) * r.standard_normal()
        )
        lsa = math.exp(-dt / 1800.0)
        target = 1.0 + 300.0 * inst.asset.sentiment
        inst.ls_ratio = max(
            0.2, target + lsa * (inst.ls_ratio - target) + 0.05 * math.sqrt(1 - lsa * lsa) * r.standard_normal()
        )
        # crowd churn: open at the mark, close at random (mean holding 1 h)
        if phase == "build":
            n_open = int(r.poisson(self.crowd_size * 2.0 / self.scenario_params["build"] * dt))
            self._open_positions(inst, n_open, spread=0.0, long_bias=0.97, lev_median=40.0)
        else:
            n_open = int(r.poisson(self.crowd_size / HOUR * dt))
            self._open_positions(inst, n_open, spread=0.0, long_bias=0.5, lev_median=12.0)
        if inst.crowd.size.size:
            keep = r.random(inst.crowd.size.size) >= dt / HOUR
            if not keep.all():
                inst.crowd.keep(keep)

    def _liquidate(self, inst: Instrument) -> float:
        """Liquidate every position the mark ran through; returns signed notional (+ = longs sold)."""
        c = inst.crowd
        if not c.size.size or c.safe_at(inst.mark):
            return 0.0
        hit = ((c.side > 0) & (inst.mark <= c.liq)) | ((c.side < 0) & (inst.mark >= c.liq))
        if not hit.any():
            return 0.0
        idx = np.flatnonzero(hit)
        signed = 0.0
        spec = inst.spec
        for i in idx:
            side = Side.LONG if c.side[i] > 0 else Side.SHORT
            # fill slightly beyond the mark in the direction of the forced order
            fill = float(inst.mark * (1.0 - 0.0005 * c.side[i]))
            bk = float(c.bk[i])
            qty, notional = self._wire_size(spec, float(c.size[i]), fill, bk)
            self.liq_seq += 1
            liq = SimLiquidation(spec.exchange, spec.symbol, self.now, side, fill, bk, qty, notional, self.liq_seq)
            inst.liq_all[side].add(notional)
            self.pending[spec.exchange].append(liq)
            self.insurance[spec.exchange] += notional * 0.001
            signed += notional * c.side[i]
        c.keep(~hit)
        return signed

    @staticmethod
    def _wire_size(spec: Spec, qty: float, fill: float, bk: float) -> tuple[float, float]:
        """(base quantity, USD notional) as the exchange's liquidation message expresses them.

        The notional uses the price the message carries (Binance ap = fill, Bybit p / OKX bkPx =
        bankruptcy price, Deribit: inverse amount in USD) so the truth matches what a parser can sum.
        """
        ex = spec.exchange
        if ex is Exchange.OKX:
            contracts = max(1, round(qty / spec.contract_size))
            q = contracts * spec.contract_size
            return q, q * round(bk, spec.price_decimals)
        if ex is Exchange.DERIBIT:
            if spec.inverse:
                usd = max(1, round(qty * fill / spec.contract_size)) * spec.contract_size
                return usd / fill, float(usd)
            q = max(1, round(qty / spec.contract_size)) * spec.contract_size
            return q, q * round(fill, spec.price_decimals)
        step = 10.0**-spec.qty_decimals
        q = max(1, round(qty / step)) * step
        q = round(q, spec.qty_decimals)
        price = round(fill, spec.price_decimals) if ex is Exchange.BINANCE else round(bk, spec.price_decimals)
        return q, q * price

    # ------------------------------------------------------------------------------------------
    # truth

    def truth(self, exchange: Exchange) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sym, inst in self.instruments[exchange].items():
            spec = inst.spec

            def lc(d: dict[Side, LiqCount]) -> dict[str, Any]:
                return {s.value: {"count": v.count, "notional_usd": v.notional_usd} for s, v in d.items()}

            out[sym] = {
                "base": spec.base,
                "quote": spec.quote,
                "mark": inst.mark,
                "index": inst.index,
                "premium": inst.premium,
                "funding_rate": inst.funding_rate,
                "funding_rate_8h": inst.funding_8h
                if spec.continuous
                else inst.funding_rate * EIGHT_HOURS / spec.interval_s,
                "funding_interval_seconds": spec.interval_s,
                "funding_cap": spec.cap,
                "funding_floor": spec.floor,
                "next_funding_time": None if spec.continuous else inst.next_funding_time,
                "last_settled_rate": inst.last_settled_rate,
                "open_interest_base": inst.oi_base,
                "open_interest_usd": inst.oi_usd,
                "long_short_ratio": inst.ls_ratio,
                "liquidations": lc(inst.liq_sent),
                "liquidations_all": lc(inst.liq_all),
                "settlements_count": inst.settlements_count,
                "contract_size": spec.contract_size,
                "inverse": spec.inverse,
            }
        return {
            "exchange": exchange.value,
            "time": self.now,
            "seed": self.seed,
            "scenario": self.scenario,
            "cascade_phase": self.cascade_phase,
            "insurance_fund_usd": self.insurance[exchange],
            "instruments": out,
            **(self.curve.truth(exchange) if self.curve is not None else {"futures": {}, "expired": []}),
        }
