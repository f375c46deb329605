"""Every metric family the exporter and the AI sidecar publish, declared once.

Each :class:`MetricDef` holds a family's name, type, label names, unit, HELP text and the meaning
written in ``docs/metrics.md``. The collectors build their families from these declarations
(:meth:`MetricDef.spec` for the fast renderer; ``gauge()``, ``counter()``, ``histogram()`` for
prometheus_client families), ``python -m mixin.generate`` writes ``docs/metrics.md`` from them,
and the mixin's PromQL takes its metric names from them (``f"{m.FUNDING_ZSCORE} > 2.5"``: a
definition's ``str()`` is its name). Renaming a series here renames it everywhere, and
tests/test_golden.py shows the change.

A HELP text may hold ``{placeholders}`` for configured values (windows, fees); the collector fills
them when it builds the family (``help_params`` names them). Counters are declared with their
sample name, ending in ``_total``, as they appear in the text format and in PromQL. A renamed
family keeps its old name for a release as a second declaration with ``deprecated_by`` (the docs
mark it; the old name may break the ``_total`` rule, as the contract's gauge renames do).

This module imports nothing from the rest of the exporter but the renderer's ``Spec``, so the
mixin can read it without a configuration or a state.
"""

# ruff: noqa: RUF001 (the documentation text uses math signs and Greek letters on purpose)
from __future__ import annotations

import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from exporter.metrics.exposition import Spec

Kind = Literal["gauge", "counter", "histogram"]

MARKET_LABELS: tuple[str, ...] = ("exchange", "instrument", "base", "quote")
POSITION_LABELS: tuple[str, ...] = ("position", "exchange", "instrument", "side")


@dataclass(frozen=True, slots=True)
class Section:
    """A group of families: one table of ``docs/metrics.md``."""

    key: str
    title: str
    intro: str = ""


SECTIONS: tuple[Section, ...] = (
    Section("market", "Market (per exchange × instrument)"),
    Section("cross", "Cross-exchange (per base)"),
    Section(
        "term",
        "Term structure (per exchange × dated future)",
        "Labels: `exchange`, `instrument`, `base`, `quote`, `expiry` (UTC delivery date, `2026-03-27`). "
        "A contract leaves at its delivery time. Sources and formulas in `docs/term-structure.md`.",
    ),
    Section("health", "Exporter health"),
    Section(
        "feed",
        "Feed quality and recording",
        "How late and how complete each stream's data is (the exchange's own stamps against our receive "
        "time, corrected by the measured clock offset), and the raw recording (`recording:` in the "
        "configuration). Method in `docs/feed-quality.md`.",
    ),
    Section(
        "positions",
        "Positions and carry (per configured or account position)",
        "Labels: `position`, `exchange`, `instrument`, `side` (`long`/`short`). Method details in `docs/positions.md`.",
    ),
    Section(
        "ai",
        "AI risk (served by the sidecar on its own port, default 9467)",
        "Scheduling, failure reasons and scoring in `docs/sidecar.md`.",
    ),
)
_SECTION_KEYS = {s.key for s in SECTIONS}


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One family. ``name`` is the sample name (a counter's ends in ``_total``; a histogram's is
    the family name, its samples add ``_bucket``/``_sum``/``_count``)."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    unit: str  # as docs/metrics.md states it
    help: str  # HELP line, possibly with {placeholders}
    doc: str  # the meaning column of docs/metrics.md (Markdown)
    section: str
    fixed: bool = False  # the contract fixes this name
    label_note: str = ""  # shown after the label names in the docs (e.g. the values of a label)
    deprecated_by: str = ""  # the family that replaces this one (kept for a release beside it)

    def __str__(self) -> str:
        return self.name

    @property
    def help_params(self) -> tuple[str, ...]:
        """Names of the placeholders in the HELP text, in order of appearance."""
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.help) if f)

    def help_text(self, **params: object) -> str:
        """The HELP line with its placeholders filled (a missing or unknown one is an error)."""
        missing = set(self.help_params) - params.keys()
        unknown = params.keys() - set(self.help_params)
        if missing or unknown:
            raise ValueError(f"{self.name}: HELP parameters missing {sorted(missing)}, unknown {sorted(unknown)}")
        return self.help.format(**params) if params else self.help

    def spec(self, **params: object) -> Spec:
        """The fast renderer's head for this family (gauges and counters)."""
        if self.kind == "histogram":
            raise ValueError(f"{self.name}: the fast renderer has no histograms")
        return Spec(self.name, self.kind, self.help_text(**params))

    def gauge(self, **params: object) -> GaugeMetricFamily:
        """An empty prometheus_client gauge family with the declared labels, for a ``collect()``."""
        return GaugeMetricFamily(self.name, self._help_of("gauge", params), labels=self.labels)

    def counter(self, **params: object) -> CounterMetricFamily:
        """An empty counter family (prometheus_client names it without ``_total``; the samples keep it)."""
        return CounterMetricFamily(self.name, self._help_of("counter", params), labels=self.labels)

    def histogram(self, **params: object) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self._help_of("histogram", params), labels=self.labels)

    def _help_of(self, kind: Kind, params: dict[str, object]) -> str:
        # the collector says which type it builds: a catalog change of type fails here, not in Grafana
        if kind != self.kind:
            raise TypeError(f"{self.name} is declared a {self.kind}, built as a {kind}")
        return self.help_text(**params)

    @property
    def family_name(self) -> str:
        """The name of the family in a scrape's ``# TYPE`` line of OpenMetrics (counters lose ``_total``)."""
        return self.name[: -len("_total")] if self.kind == "counter" else self.name

    def sample_names(self) -> tuple[str, ...]:
        """Every series name this family puts on a scrape (what PromQL may select)."""
        if self.kind == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


FAMILIES: dict[str, MetricDef] = {}


def _def(
    name: str,
    kind: Kind,
    section: str,
    labels: Sequence[str],
    unit: str,
    help: str,
    doc: str,
    *,
    fixed: bool = False,
    label_note: str = "",
    deprecated_by: str = "",
) -> MetricDef:
    if name in FAMILIES:
        raise ValueError(f"{name} declared twice")
    if section not in _SECTION_KEYS:
        raise ValueError(f"{name}: unknown section {section!r}")
    # a deprecated alias keeps its old name whatever its type now is (the contract's renames)
    if (kind == "counter") != name.endswith("_total") and not deprecated_by:
        raise ValueError(f"{name}: counters, and only counters, end in _total")
    m = MetricDef(name, kind, tuple(labels), unit, help, doc, section, fixed, label_note, deprecated_by)
    FAMILIES[name] = m
    return m


def in_section(key: str) -> Iterator[MetricDef]:
    return (m for m in FAMILIES.values() if m.section == key)


def by_sample_name(name: str) -> MetricDef | None:
    """The family a series name belongs to (``fr_x_bucket`` -> the histogram ``fr_x``)."""
    hit = FAMILIES.get(name)
    if hit is not None:
        return hit
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            m = FAMILIES.get(name[: -len(suffix)])
            if m is not None and m.kind == "histogram":
                return m
    return None


_PER = "fraction per the instrument's funding interval"
_MARKET_SIDE = (*MARKET_LABELS, "side")

# ---- market (per exchange x instrument) -------------------------------------------------------

FUNDING_RATE = _def(
    "fr_funding_rate",
    "gauge",
    "market",
    MARKET_LABELS,
    "fraction per interval",
    f"Current (predicted, next-settlement) funding rate as delivered by the exchange, {_PER} "
    "(see fr_funding_interval_seconds). Positive: longs pay shorts. Absent when older than "
    "the exchange's funding staleness limit.",
    "Current (predicted, next-settlement) funding rate as delivered by the exchange. Positive: longs "
    "pay shorts. Deribit: its 8 h-equivalent `funding_8h`.",
)
FUNDING_INTERVAL = _def(
    "fr_funding_interval_seconds",
    "gauge",
    "market",
    MARKET_LABELS,
    "seconds",
    "Funding interval of the instrument in seconds (8 h = 28800, 4 h, 1 h). Deribit funds "
    "continuously and is exported as 28800 with its 8 h-equivalent rate.",
    "Funding interval: 28800 (8 h), 14400 (4 h), 3600 (1 h). Deribit funds continuously and is "
    "exported as 28800 with its 8 h-equivalent rate.",
)
FUNDING_RATE_ANNUALIZED = _def(
    "fr_funding_rate_annualized_ratio",
    "gauge",
    "market",
    MARKET_LABELS,
    "fraction per year",
    "fr_funding_rate x 31536000 / fr_funding_interval_seconds: simple (not compounded) "
    "annual funding rate, fraction per year, using the instrument's own interval.",
    "`fr_funding_rate × 31536000 / fr_funding_interval_seconds` (simple, not compounded), with the "
    "instrument's own interval. The same per-8 h rate on a 1 h and an 8 h instrument annualises identically.",
)
NEXT_FUNDING_TIMESTAMP = _def(
    "fr_next_funding_timestamp_seconds",
    "gauge",
    "market",
    MARKET_LABELS,
    "Unix seconds",
    "Unix time in seconds of the next funding settlement; absent where the exchange has none (Deribit, continuous).",
    "Next settlement. Absent where the exchange has none (Deribit).",
)
FUNDING_CAP = _def(
    "fr_funding_cap_ratio",
    "gauge",
    "market",
    MARKET_LABELS,
    "fraction per interval",
    f"Published funding rate cap, {_PER}, where the exchange publishes it.",
    "Published cap, where the exchange publishes it.",
)
FUNDING_FLOOR = _def(
    "fr_funding_floor_ratio",
    "gauge",
    "market",
    MARKET_LABELS,
    "fraction per interval",
    f"Published funding rate floor, {_PER}, where the exchange publishes it.",
    "Published floor, where the exchange publishes it.",
)
MARK_PRICE = _def(
    "fr_mark_price",
    "gauge",
    "market",
    MARKET_LABELS,
    "quote currency",
    "Mark price in quote currency.",
    "Mark price.",
)
INDEX_PRICE = _def(
    "fr_index_price",
    "gauge",
    "market",
    MARKET_LABELS,
    "quote currency",
    "Index (spot reference) price in quote currency.",
    "Index (spot reference) price.",
)
PREMIUM = _def(
    "fr_premium_ratio",
    "gauge",
    "market",
    MARKET_LABELS,
    "ratio",
    "(mark - index) / index as a ratio; the exchange's published premium index when mark or index is unknown.",
    "`(mark − index) / index`; the exchange's published premium index when mark or index is unknown.",
)
OPEN_INTEREST = _def(
    "fr_open_interest_usd",
    "gauge",
    "market",
    MARKET_LABELS,
    "USD",
    "Open interest in USD notional (contracts converted with the contract size).",
    "Open interest notional (contracts converted with the contract size).",
)
LONG_SHORT_RATIO = _def(
    "fr_long_short_account_ratio",
    "gauge",
    "market",
    MARKET_LABELS,
    "dimensionless",
    "Exchange-published ratio of accounts net long to accounts net short (dimensionless), where available.",
    "Exchange-published long/short account ratio, where available.",
)
FUNDING_ZSCORE = _def(
    "fr_funding_zscore",
    "gauge",
    "market",
    MARKET_LABELS,
    "dimensionless",
    "z-score of the current funding rate against the settled funding rates of the trailing "
    "{window} window: (fr_funding_rate - mean) / sample standard deviation (n-1). Needs "
    "{min_observations} observations; absent when all rates in the window are "
    "equal. The window is backfilled from the exchange's history at start. Deribit "
    "(continuous): hourly observations of the 8 h-equivalent rate.",
    "`(fr_funding_rate − mean) / std` over the settled rates of the trailing "
    "`analytics.zscore_window_seconds` [30 d]; **sample** standard deviation (n − 1). Needs "
    "`analytics.zscore_min_observations` [10]; absent when every rate in the window is the same (no "
    "spread). The window is backfilled from the exchange's history at start. Settlements made under "
    "another interval (an exchange moving a symbol from 8 h to 1 h) are rescaled to the current "
    "interval first. Deribit: hourly observations of its 8 h-equivalent rate.",
    fixed=True,
)
FUNDING_MOMENTUM = _def(
    "fr_funding_momentum",
    "gauge",
    "market",
    MARKET_LABELS,
    "fraction per interval",
    f"fr_funding_rate minus the mean settled rate of the trailing {{window}} window, {_PER}.",
    "`fr_funding_rate` − mean of the same window (needs the same `analytics.zscore_min_observations`).",
)
FUNDING_ACCELERATION = _def(
    "fr_funding_acceleration",
    "gauge",
    "market",
    MARKET_LABELS,
    "fraction per interval",
    "Change of the change between consecutive settlements, over the last three settled "
    f"rates of the trailing {{window}} window: (r3 - r2) - (r2 - r1), {_PER}.",
    "Change of the change over the last three settlements in the window: `(r₃ − r₂) − (r₂ − r₁)`.",
)
EDGE = _def(
    "fr_edge_bp",
    "gauge",
    "market",
    _MARKET_SIDE,
    "basis points per interval",
    "Carry edge per funding interval for the side that receives funding (label side: short "
    "when the rate is >= 0, long when negative), in basis points: |fr_funding_rate| x 1e4 "
    "- 2 x fee_bp x fr_funding_interval_seconds / (holding_hours x 3600), where fee_bp is "
    "the configured {fee_kind} fee per side (negative: a rebate) minus analytics.points_bp (points "
    "per traded notional, income) and holding_hours = "
    "{holding_hours}. Negative: the carry does not pay its fees.",
    'Carry edge of the side that receives funding (`side="short"` when the rate ≥ 0, `"long"` when '
    "negative): `|rate| × 1e4 − 2 × fee_bp × interval_s / (holding_period_hours × 3600)`. `fee_bp` is "
    "the exchange's configured `fees.taker_bp` or `fees.maker_bp` per `analytics.fee_kind` [taker] "
    "(negative: a maker rebate) minus `analytics.points_bp` [0] (points per traded notional, income); "
    "`holding_period_hours` [168]. Negative: the carry does not pay its fees.",
    fixed=True,
)
ANCHOR_STRENGTH = _def(
    "fr_effective_anchor_strength",
    "gauge",
    "market",
    (*MARKET_LABELS, "method"),
    "dimensionless",
    "Effective anchor strength l, in 8 h units: ordinary least-squares slope of the funding "
    "rate (scaled to 8 h with the interval in force when sampled) on the premium ratio "
    "(mark - index) / index over the trailing {window} window of one-a-minute samples. "
    "method=level regresses the values, method=difference their changes between consecutive "
    "samples at most 5 min apart. Needs 10 points and spread in the premium. Backfilled at start "
    "from one-minute premium-index, mark and index candles, the past predicted rate rebuilt by the "
    "exchange's formula from the interval-to-date weighted premium index (Binance, Bybit, OKX; "
    "Deribit publishes no such history: live samples only).",
    "Effective anchor ℓ in 8 h units: OLS slope of the funding rate, scaled to 8 h "
    "(`rate × 28800 / interval` with the interval in force when sampled, so 1 h, 4 h and 8 h "
    "instruments compare; Deribit's rate is already per 8 h), on the premium `(mark − index) / index` "
    "over the trailing `analytics.anchor_window_seconds` [6 h] of one-a-minute samples. "
    '`method="level"` regresses the values; `method="difference"` regresses their changes between '
    "consecutive samples (at most 5 min apart: no difference spans a gap), as desks estimate ℓ. "
    "The per-interval slope is this × interval / 28800. Needs 10 points and spread in the premium. "
    "Backfilled at start from the exchanges' one-minute premium-index, mark and index candles: the past "
    "predicted rate (not published historically) is rebuilt with the exchange's formula "
    "`clamp(P + clamp(I − P, ±0.05 %), floor, cap)` from the interval-to-date premium index P weighted "
    "1, 2, …, n, paired with that minute's `(mark − index) / index` (Binance, Bybit, OKX); Deribit "
    "publishes no index or premium history, so its window fills from live samples (10 minutes). "
    "Why and where: [anchor.md](anchor.md).",
)
OPEN_INTEREST_CHANGE = _def(
    "fr_open_interest_change_ratio",
    "gauge",
    "market",
    (*MARKET_LABELS, "window"),
    "ratio",
    "Relative change of open interest (USD) over the window: fr_open_interest_usd now divided "
    "by the open interest at the latest sample at or before the window's start, minus 1 "
    "(window=1h|4h; absent without a sample within 10 min of it). Backfilled at start from the "
    "exchange's open-interest history (5-minute steps; Deribit publishes none: from the live "
    "stream only), then one sample a minute.",
    "`fr_open_interest_usd / OI(now − window) − 1`, `window` = `1h` | `4h`; OI(t) is the latest "
    "sample at or before t (absent when none lies within 10 min of it). Backfilled at start from "
    "the exchange's open-interest history at 5-minute steps (Binance `openInterestHist`, Bybit "
    "`open-interest`, OKX contract `open-interest-history`; Deribit publishes none, so its series "
    "appear once the exporter has run for the window), then sampled once a minute from the live "
    "values. Absent while `fr_open_interest_usd` is stale. Memory: the samples of the last 4 h 15 min, "
    "at most 300 × 16 bytes (4.4 kB measured per instrument).",
    label_note="`window`: `1h`, `4h`.",
)
PRICE_VOLATILITY = _def(
    "fr_price_volatility_ratio",
    "gauge",
    "market",
    (*MARKET_LABELS, "window"),
    "ratio",
    "Realised volatility of the mark over the window, not annualised: sample standard "
    "deviation (n-1) of the 1-minute log returns of the mark's minute closes over the window's "
    "complete minutes, times sqrt(minutes in the window) (window=1h|4h). A minute without a "
    "mark repeats the previous close; needs 80% of the minutes. Backfilled at start from the "
    "exchange's 1-minute mark-price candles (Deribit: its trade-price chart).",
    "Realised volatility of the mark over `window` (`1h` | `4h`), **not annualised**: the sample "
    "standard deviation (n − 1) of the 1-minute log returns `ln(c_i / c_{i−1})` of the mark's "
    "minute closes over the window's complete minutes (61 closes for 1 h, 241 for 4 h), times "
    "`sqrt(60)` resp. `sqrt(240)`: the typical move over the window as a fraction. Minutes are "
    "on the exchange's clock; a minute without a mark repeats the previous close (a zero "
    "return); absent with fewer than 80 % of the minutes. Backfilled at start from the "
    "exchange's 1-minute mark-price candles (Deribit publishes no mark history: its perpetual's "
    "trade-price chart stands in, docs/history.md), then from the live mark. Absent while the "
    "price is stale. Annualised: × sqrt(525600 / minutes in the window). Memory: the closes of the last "
    "248 minutes, 248 × 16 bytes (4.1 kB measured per instrument).",
    label_note="`window`: `1h`, `4h`.",
)
LIQUIDATIONS = _def(
    "fr_liquidations_total",
    "counter",
    "market",
    _MARKET_SIDE,
    "orders",
    "Liquidation orders seen on the exchange's public liquidation stream since the exporter "
    "started; label side = side of the liquidated position. Sampled feeds: Binance and OKX "
    "push at most one liquidation per instrument per second (cascades are undercounted); "
    "Bybit allLiquidation sends all; Deribit: trades flagged as liquidations.",
    "Liquidations seen on the public stream since start; `side` = side of the liquidated position. "
    "Sampled feeds: Binance and OKX send at most one per instrument per second (cascades are "
    "undercounted); Bybit `allLiquidation` sends all; Deribit: trades flagged as liquidations. "
    "Present from 0.",
)
LIQUIDATED_NOTIONAL = _def(
    "fr_liquidated_notional_usd_total",
    "counter",
    "market",
    _MARKET_SIDE,
    "USD",
    "USD notional of the liquidations counted in fr_liquidations_total (same sampling).",
    "Notional of the liquidations counted in `fr_liquidations_total` (same sampling).",
)
INSURANCE_FUND = _def(
    "fr_insurance_fund_balance_usd",
    "gauge",
    "market",
    ("exchange", "pool"),
    "USD",
    "Insurance fund balance in USD per exchange and pool, where published.",
    "Insurance fund balance, where published.",
)

# ---- cross-exchange (per base) ----------------------------------------------------------------

OI_WEIGHTED_FUNDING = _def(
    "fr_oi_weighted_funding_rate",
    "gauge",
    "cross",
    ("base",),
    "fraction per 8 h",
    "Open-interest-weighted funding rate per base across exchanges and instruments, each rate "
    "normalised to an 8 h interval: sum(rate_8h x open_interest_usd) / sum(open_interest_usd); "
    "fraction per 8 h; instruments with fresh funding and open interest only.",
    "`Σ rate_8h × OI_usd / Σ OI_usd` over every instrument of the base with fresh funding and fresh, "
    "positive open interest.",
)
FUNDING_SPREAD = _def(
    "fr_funding_spread_bp",
    "gauge",
    "cross",
    ("base", "long_exchange", "short_exchange"),
    "basis points per 8 h",
    "Funding earned per 8 h by shorting the highest-rate instrument of the base on "
    "short_exchange and longing the lowest-rate one on long_exchange, in basis points: "
    "(rate_8h short - rate_8h long) x 1e4 - 2 x (fee_bp long + fee_bp short) x 8 / "
    "{holding_hours} (round-trip {fee_kind} fees of both legs amortised over "
    "the holding period). Only pairs with a positive gross spread, best "
    "{top_n} per base.",
    "Short the highest-rate instrument of the base on `short_exchange`, long the lowest-rate one on "
    "`long_exchange`: `(rate_8h short − rate_8h long) × 1e4 − 2 × (fee_bp long + fee_bp short) × 8 / "
    "holding_period_hours`. Only pairs with a positive gross spread, best `analytics.spread_top_n` [10] "
    "per base by net value.",
)

# ---- term structure (per exchange x dated future) ---------------------------------------------

TERM_LABELS: tuple[str, ...] = (*MARKET_LABELS, "expiry")
_S = (
    "S is the index price the exchange sends with the future (Binance i, Bybit indexPrice, Deribit "
    "index_price), else that of the same exchange's perpetual of the base (OKX)"
)

FUTURE_MARK_PRICE = _def(
    "fr_future_mark_price",
    "gauge",
    "term",
    TERM_LABELS,
    "quote currency",
    "Mark price F of a dated (delivery) future in quote currency. Absent when older than the exchange's "
    "price staleness limit.",
    "Mark price `F` of the dated future (Binance `p`, Bybit `markPrice`, OKX `markPx`, Deribit `mark_price`).",
)
FUTURE_SETTLE_ESTIMATE = _def(
    "fr_future_estimated_settle_price",
    "gauge",
    "term",
    TERM_LABELS,
    "quote currency",
    "Estimated delivery (settle) price of a dated future in quote currency, in the last hour before its "
    "delivery only (Binance P, documented as only useful then); absent otherwise and elsewhere.",
    "Binance `P` in the last hour before the delivery (documented as only useful then); absent otherwise.",
)
FUTURE_EXPIRY = _def(
    "fr_future_expiry_timestamp_seconds",
    "gauge",
    "term",
    TERM_LABELS,
    "Unix seconds",
    "Unix time in seconds of the future's delivery (Binance deliveryDate, Bybit deliveryTime, OKX expTime, "
    "Deribit expiration_timestamp).",
    "Delivery time (Binance `deliveryDate`, Bybit `deliveryTime`, OKX `expTime`, Deribit `expiration_timestamp`).",
)
FUTURE_DAYS = _def(
    "fr_future_days_to_expiry",
    "gauge",
    "term",
    TERM_LABELS,
    "days",
    "(expiry - now) / 86400: days until the future's delivery.",
    "`(expiry − now) / 86400`.",
)
BASIS = _def(
    "fr_basis_ratio",
    "gauge",
    "term",
    TERM_LABELS,
    "ratio",
    f"(F - S) / S: basis of the dated future against the index; F the future's mark price, {_S}.",
    "`(F − S) / S`; `S`: the index sent with the future (Binance `i`, Bybit `indexPrice`, Deribit "
    "`index_price`), else the index of the same exchange's perpetual of the base (OKX).",
)
BASIS_ANNUALIZED = _def(
    "fr_basis_annualized_ratio",
    "gauge",
    "term",
    TERM_LABELS,
    "fraction per year",
    "(F - S) / S x 365 / days to expiry: simple annualised basis, fraction per year. Absent under one day "
    "to expiry (fr_basis_ratio is still given).",
    "`(F − S) / S × 365 / days_to_expiry` (simple, as desks quote it). Absent under one day to expiry, "
    "where a few basis points of noise would annualise into hundreds of percent.",
)
IMPLIED_FUNDING = _def(
    "fr_implied_funding_rate_8h",
    "gauge",
    "term",
    TERM_LABELS,
    "fraction per 8 h",
    "Per-8 h funding rate r that, paid from now until expiry, adds up to the basis: "
    "r = (F - S) / S x 28800 / (expiry - now). Absent under one day to expiry.",
    "`r = (F − S) / S × 28800 / (expiry − now)` = basis / (3 × days): the per-8 h funding that, paid until "
    "expiry (simple, not compounded), equals the basis. Absent under one day to expiry.",
)
IMPLIED_MINUS_ACTUAL = _def(
    "fr_implied_minus_actual_funding_bp",
    "gauge",
    "term",
    TERM_LABELS,
    "basis points per 8 h",
    "(fr_implied_funding_rate_8h - the same exchange's perpetual funding rate of the base per 8 h) x 1e4, "
    "in basis points per 8 h; the perpetual of the future's quote, else USDT, USD, any. Absent when either is.",
    "`(implied − actual) × 1e4`; actual: the same exchange's perpetual of the base (the future's quote, "
    "else USDT, USD, any), its current rate per 8 h. Positive: the curve pays more than the perpetual.",
)

# ---- exporter health --------------------------------------------------------------------------

_STREAM = ("exchange", "stream")
_ENDPOINT = ("exchange", "endpoint")

UP = _def(
    "fr_up",
    "gauge",
    "health",
    ("exchange",),
    "0/1",
    "1 when at least one websocket stream of the exchange is connected and parsed a data message "
    "within the exchange's stream staleness limit (stale.stream_seconds), else 0: frames that fail "
    "to parse do not count (see fr_stream_last_parsed_timestamp_seconds). Present for every "
    "configured exchange.",
    "1 when at least one of the exchange's websocket streams is connected and parsed a data message "
    "within `stale.stream_seconds` (a flood of unparsable frames does not keep it at 1). Always "
    "present for every configured exchange.",
)
STREAM_CONNECTED = _def(
    "fr_stream_connected",
    "gauge",
    "health",
    _STREAM,
    "0/1",
    "1 while the websocket connection of the stream is open, else 0.",
    "The stream's websocket is open.",
)
STREAM_LAST_MESSAGE = _def(
    "fr_stream_last_message_timestamp_seconds",
    "gauge",
    "health",
    _STREAM,
    "Unix seconds",
    "Unix time in seconds of the last message received on the stream (absent before the first one).",
    "Last message on the stream (absent before the first). Alert on `time() - x`.",
)
STREAM_LAST_PARSED = _def(
    "fr_stream_last_parsed_timestamp_seconds",
    "gauge",
    "health",
    _STREAM,
    "Unix seconds",
    "Unix time in seconds of the last message of the stream that parsed into data (fr_up follows "
    "it; absent before the first one). Far behind fr_stream_last_message_timestamp_seconds: the "
    "stream delivers frames that do not parse.",
    "Last message of the stream that parsed into data; `fr_up` follows it. Far behind "
    "`fr_stream_last_message_timestamp_seconds`: frames arrive but do not parse.",
)
STREAM_MESSAGES = _def(
    "fr_stream_messages_total",
    "counter",
    "health",
    _STREAM,
    "messages",
    "Websocket messages received on the stream.",
    "Websocket messages received.",
)
STREAM_RECONNECTS = _def(
    "fr_stream_reconnects_total",
    "counter",
    "health",
    _STREAM,
    "reconnects",
    "Reconnections of the stream (after errors, silence or planned rotation).",
    "Reconnections (errors, silence, planned rotation).",
)
PARSE_ERRORS = _def(
    "fr_parse_errors_total",
    "counter",
    "health",
    _STREAM,
    "messages",
    "Messages of the stream that could not be parsed (dropped, state unchanged).",
    "Messages that could not be parsed (dropped; state unchanged).",
)
PARSE_ERROR_REASONS = _def(
    "fr_parse_errors_by_reason_total",
    "counter",
    "health",
    (*_STREAM, "reason"),
    "messages",
    "fr_parse_errors_total broken down by reason: invalid_json, missing_field, bad_shape, not_a_number, "
    "not_finite, a domain check that failed (price_out_of_range, size_out_of_range, usd_out_of_range, "
    "rate_out_of_range, interval_out_of_range, ratio_out_of_range, timestamp_out_of_range), parser_error.",
    "`fr_parse_errors_total` by reason: `invalid_json`, `missing_field`, `bad_shape`, `not_a_number`, "
    "`not_finite`, a failed domain check (`price_out_of_range`, `size_out_of_range`, `usd_out_of_range`, "
    "`rate_out_of_range`, `interval_out_of_range`, `ratio_out_of_range`, `timestamp_out_of_range`; bounds "
    "in `exporter/feeds/validate.py`), `parser_error`. A value outside its domain is dropped and the "
    "previous good value stays. Present once a reason occurred.",
)
STREAM_RESYNCS = _def(
    "fr_stream_resyncs_total",
    "counter",
    "health",
    _STREAM,
    "requests",
    "Fresh snapshots asked for after a parse error on a snapshot+delta stream (Bybit tickers).",
    "Fresh snapshots asked for after a parse error on a snapshot+delta stream (Bybit tickers); until "
    "it arrives, a delta refreshes only the fields it carries.",
)
STREAM_SHORT_SESSIONS = _def(
    "fr_stream_short_sessions_total",
    "counter",
    "health",
    _STREAM,
    "connections",
    "Connections that ended within a few seconds of opening (connect-then-drop); they never "
    "reset the reconnect backoff.",
    "Connections that ended within `short_session_s` (5 s) of opening: a connect-then-drop loop. They "
    "never reset the reconnect backoff, which otherwise resets once a session's data flows.",
)
SUBSCRIPTION_ERRORS = _def(
    "fr_stream_subscription_errors_total",
    "counter",
    "health",
    _STREAM,
    "errors",
    "Subscriptions the exchange refused on the stream.",
    "Subscriptions the exchange refused.",
)
REST_REQUESTS = _def(
    "fr_rest_requests_total",
    "counter",
    "health",
    _ENDPOINT,
    "requests",
    "REST requests sent to the exchange endpoint.",
    "REST requests sent.",
)
REST_FAILURES = _def(
    "fr_rest_request_failures_total",
    "counter",
    "health",
    (*_ENDPOINT, "reason"),
    "requests",
    "Failed REST requests per endpoint and reason (rate_limited, http_5xx, timeout, ...).",
    "Failed requests by reason (`rate_limited`, `http_5xx`, `timeout`, ...).",
)
REST_LAST_SUCCESS = _def(
    "fr_rest_last_success_timestamp_seconds",
    "gauge",
    "health",
    _ENDPOINT,
    "Unix seconds",
    "Unix time in seconds of the endpoint's last successful response.",
    "Last successful response.",
)
UNKNOWN_INSTRUMENT_UPDATES = _def(
    "fr_unknown_instrument_updates_total",
    "counter",
    "health",
    (),
    "records",
    "Records for instruments the exporter does not follow (ignored).",
    "Records for instruments the exporter does not follow (ignored).",
)
RENDER_ERRORS = _def(
    "fr_render_errors_total",
    "counter",
    "health",
    ("collector",),
    "series",
    "Series left out of a scrape because building them failed, per collector: an instrument whose "
    "view raised (market), a base whose cross-exchange figures raised (cross), a non-finite sample, "
    "a collector that raised as a whole. The other series of the scrape are unaffected.",
    "Series left out of a scrape because building them failed: an instrument whose view raised or held "
    "a non-finite value (`market`), a base whose cross-exchange figures raised (`cross`), an `/api/state` "
    "row (`api_state`), non-finite samples or a whole collector that raised (its name). No NaN or ±Inf "
    "sample is ever rendered. Present once an error occurred.",
)
BUILD_INFO = _def(
    "fr_build_info",
    "gauge",
    "health",
    ("version", "revision", "python_version"),
    "—",
    "Always 1; labels: the exporter's version, git revision and Python version.",
    "Always 1; the release, its git revision (`$FR_BUILD_REVISION` in the image, else the checkout's HEAD, "
    "else `unknown`) and the Python version.",
)
SHARD_INFO = _def(
    "fr_shard_info",
    "gauge",
    "health",
    ("index", "count"),
    "—",
    "Always 1; this exporter follows the base assets hashed to shard index of count "
    "(Prometheus hashmod of the base; 0 of 1 when not sharded).",
    "Always 1: this exporter follows the base assets that Prometheus' `hashmod` of the base puts on shard "
    "`index` of `count` (`--shard K/S`, `shard:` in the configuration). An unsharded exporter is shard 0 of 1. "
    "See `docs/scaling.md`.",
)
INSTRUMENTS_LISTED = _def(
    "fr_instruments_listed",
    "gauge",
    "health",
    ("exchange",),
    "instruments",
    "Instruments of the followed kind the exchange lists (configured ones included; 0 when the list "
    "could not be read).",
    "Instruments of the followed kind the exchange lists (every USDT perpetual, every Deribit perpetual, plus "
    "the configured ones); 0 when the list could not be read. The same on every shard.",
)
INSTRUMENTS_FOLLOWED = _def(
    "fr_instruments_followed",
    "gauge",
    "health",
    ("exchange",),
    "instruments",
    "Instruments this exporter follows on the exchange: the selection (instruments, all_perpetuals up to "
    "max_instruments) restricted to this shard's base assets.",
    "Instruments this exporter follows: the selection (`instruments`, then `all_perpetuals` up to "
    "`max_instruments`) restricted to this shard's bases. Summed over the shards: the selection. Fewer than "
    "listed when `max_instruments` cuts (the instruments left out are logged once).",
)

POLL_PERIOD = _def(
    "fr_rest_poll_period_seconds",
    "gauge",
    "health",
    ("exchange", "poller"),
    "seconds",
    "Effective period of a per-instrument REST poller: the configured one, or the round its guaranteed "
    "share of the exchange's request budget allows when that is longer (the longest a round can take).",
    "Effective period of a per-instrument poller (`poller`: `open_interest`, `long_short_ratio`): the "
    "configured `poll` period, or, where the instruments followed ask more than the pollers' half of a "
    "budget bucket, the round the poller's guaranteed share allows: 0.9 of the series' staleness limit, "
    "or longer where even that does not fit (then the limit follows the round). A bound: rounds are "
    "shorter whenever the backfills leave room. See `docs/rate-limits.md`.",
)
POLL_BUDGET_SHARE = _def(
    "fr_rest_poll_budget_ratio",
    "gauge",
    "health",
    ("exchange", "poller", "bucket"),
    "ratio",
    "Part of the exchange's REST budget bucket guaranteed to the poller (0-1); the backfills and other "
    "requests keep the rest, and either side takes what the other leaves.",
    "Part (0–1) of a request-budget bucket (`bucket` as in `exporter/limits.py`) guaranteed to the poller; "
    "the pollers together are guaranteed at most half of any bucket, the backfills and refreshes keep the "
    "rest, and either side takes what the other leaves unused. See `docs/rate-limits.md`.",
)

# ---- positions and carry ----------------------------------------------------------------------

LIQUIDATION_PRICE = _def(
    "fr_liquidation_price",
    "gauge",
    "positions",
    (*POSITION_LABELS, "source"),
    "quote currency",
    "Liquidation price of the position in quote currency. source=exchange: the exchange's own figure "
    "read with a read-only key; otherwise source=computed: the exchange's isolated/cross formula with its "
    "maintenance-margin tiers (public tiers where published, else configured); see docs/positions.md.",
    '`source="exchange"`: the exchange\'s own figure (read-only key); `source="computed"`: the exchange\'s '
    "isolated/cross formula with its maintenance-margin tiers. One series per position.",
)
LIQ_GAP = _def(
    "fr_liq_gap_pct",
    "gauge",
    "positions",
    POSITION_LABELS,
    "percent of mark",
    "Distance from the live mark price to the liquidation price, percent of mark (long: (mark-liq)/mark, "
    "short: (liq-mark)/mark); 0 at the liquidation price, negative beyond it. Uses the exchange's "
    "liquidation price when known, else the computed one.",
    "Long `(mark − liq) / mark`, short `(liq − mark) / mark`, × 100; 0 at the liquidation price, negative beyond it.",
    fixed=True,
)
LIQ_HIT_PROBABILITY = _def(
    "fr_liq_hit_probability",
    "gauge",
    "positions",
    (*POSITION_LABELS, "horizon"),
    "probability 0..1",
    "Probability (0..1) that the mark touches the liquidation price within label horizon. First passage "
    "of a driftless Brownian motion with an inverse-gamma volatility mixture (reflection principle: "
    "P = 2*sf_t(d/(sigma*sqrt(T)*sqrt((nu-2)/nu)), nu), Student-t tails), sigma = realised volatility of "
    "the mark sampled by the exporter (up to 24 h), nu from the excess kurtosis of its returns (3..30).",
    "First passage of the mark to the liquidation price within the horizon: driftless Brownian motion "
    "with Student-t tails (volatility mixture), σ = realised volatility of the mark, ν from the excess "
    "kurtosis of its returns. Checked against a Monte Carlo in the tests.",
    label_note="(`1h`, `8h`)",
)
ADL_RANK = _def(
    "fr_adl_rank",
    "gauge",
    "positions",
    POSITION_LABELS,
    "0 (safest) .. 4 (first in line)",
    "ADL rank of the position normalised to 0 (safest) .. 4 (first in line). Raw scales: Binance "
    "adlQuantile 0-4 (as is); Bybit adlRankIndicator 1-5 (minus 1; 0 = no position); OKX adl 0-5 "
    "(x 4/5); Deribit has no ADL ranking (absent). Needs a read-only API key.",
    "Raw scales: Binance `adlQuantile` 0–4 as is; Bybit `adlRankIndicator` 1–5 minus 1; OKX `adl` 0–5 "
    "× 4/5; Deribit has no ADL ranking (absent). Needs a read-only key.",
    fixed=True,
)
_FUNDING_PNL_HELP = (
    "Net funding received (+) / paid (-) by the position in USD, accrued exactly once per settlement "
    "over the whole holding period (persisted in SQLite across restarts; Deribit accrues continuously "
    "at its 8 h-equivalent rate). Each settlement is valued at its own mark price where the exchange's "
    "history gives one (Binance); Bybit, OKX and Deribit histories carry none, so a settlement is "
    "valued at the mark when it is accrued (read back after a downtime: the current mark); OKX keeps "
    "3 months of history. Both legs of a hedged position count. A gauge: it falls when funding is paid; "
    "use fr_funding_received_usd_total / fr_funding_paid_usd_total for rate()."
)
_FUNDING_PNL_DOC = (
    "Net funding received (+) / paid (−), accrued once per settlement over the whole holding period "
    "(SQLite, survives restarts); Deribit continuously. Each settlement at its own mark where the "
    "history gives one (Binance); Bybit, OKX and Deribit at the mark when accrued (after a downtime: "
    "the current mark); OKX history reaches 3 months back. Both legs of a hedge count. A gauge (it "
    "falls when funding is paid): use `fr_funding_received_usd_total` and `fr_funding_paid_usd_total` "
    "with `rate()`."
)
FUNDING_PNL = _def(
    "fr_funding_pnl_usd", "gauge", "positions", POSITION_LABELS, "USD", _FUNDING_PNL_HELP, _FUNDING_PNL_DOC
)
# The contract renamed the counter-style name (issue 14); the old one stays one release, same value.
FUNDING_PNL_DEPRECATED = _def(
    "fr_funding_pnl_usd_total",
    "gauge",
    "positions",
    POSITION_LABELS,
    "USD",
    "DEPRECATED: use fr_funding_pnl_usd (same value; removed in the next release). " + _FUNDING_PNL_HELP,
    _FUNDING_PNL_DOC,
    deprecated_by="fr_funding_pnl_usd",
)
FUNDING_RECEIVED = _def(
    "fr_funding_received_usd_total",
    "counter",
    "positions",
    POSITION_LABELS,
    "USD",
    "Funding received by the position, USD (monotonic).",
    "Funding received: the monotonic half of `fr_funding_pnl_usd` that grows on receipts.",
)
FUNDING_PAID = _def(
    "fr_funding_paid_usd_total",
    "counter",
    "positions",
    POSITION_LABELS,
    "USD",
    "Funding paid by the position, USD (monotonic, positive).",
    "Funding paid (positive): the monotonic half of `fr_funding_pnl_usd` that grows on payments.",
)
FUNDING_ACCRUALS = _def(
    "fr_position_funding_accruals_total",
    "counter",
    "positions",
    POSITION_LABELS,
    "accruals",
    "Funding accruals recorded for the position (one per settlement per leg; Deribit: per period).",
    "Settlements accrued (one per settlement per leg).",
)
NET_APY = _def(
    "fr_net_apy_pct",
    "gauge",
    "positions",
    (*POSITION_LABELS, "basis"),
    "percent per year",
    "Net carry APY in percent: (funding received - funding paid - fees - borrow interest - gas) / locked "
    "capital, annualised. basis=realized: since the position opened (shown after 1 h); basis=projected: "
    "one year at the current funding rate of every perp leg with its own interval, minus borrow APR, "
    "minus fees and gas amortised over analytics.holding_period_hours.",
    "`(funding received − funding paid − fees − borrow interest − gas) / locked capital`, annualised. "
    "`realized`: since the position opened (after 1 h); `projected`: at the current funding rate of "
    "every perp leg with its own interval.",
    fixed=True,
)
STRESS_EQUITY = _def(
    "fr_position_stress_equity_usd",
    "gauge",
    "positions",
    (*POSITION_LABELS, "shock_pct"),
    "USD",
    "Margin equity (margin + unrealised PnL) of the position in USD if the mark moved instantly by "
    "label shock_pct percent.",
    "Margin equity after an instant mark move of `shock_pct` (±5, ±10, ±15 %).",
)
STRESS_SURVIVES = _def(
    "fr_position_stress_survives",
    "gauge",
    "positions",
    (*POSITION_LABELS, "shock_pct"),
    "0/1",
    "1 if the position would not be liquidated after an instant mark move of shock_pct percent, else 0.",
    "1 if the position survives that move.",
)
HISTORICAL_WORST_MOVE = _def(
    "fr_position_historical_worst_move_ratio",
    "gauge",
    "positions",
    (*POSITION_LABELS, "window"),
    "ratio",
    "Worst adverse move of the mark over any window of label window in the trailing {period} of the "
    "instrument's 1-minute mark closes (backfilled from the exchange's mark-price klines, then live): "
    "the largest fall p_j/p_i - 1 (negative) for a long, the largest rise (positive) for a short, over "
    "closes at most a window apart.",
    "Worst adverse mark move over any `window` (default `5m`) in the trailing period (default 30 days) "
    "of 1-minute closes: peak to trough for a long (negative), trough to peak for a short (positive). "
    "Backfilled at start from mark-price klines; absent until the backfill is in.",
    label_note="(`5m`)",
)
HISTORICAL_STRESS_SURVIVES = _def(
    "fr_position_historical_stress_survives",
    "gauge",
    "positions",
    (*POSITION_LABELS, "window"),
    "0/1",
    "1 if the position would not be liquidated (equity above maintenance margin) after the worst "
    "adverse move of the mark over label window in the trailing {period} "
    "(fr_position_historical_worst_move_ratio), else 0.",
    "1 if the position survives the historical worst move from the live mark (the rule of "
    "`fr_position_stress_survives`).",
)
PARAMETRIC_MOVE = _def(
    "fr_position_parametric_move_ratio",
    "gauge",
    "positions",
    (*POSITION_LABELS, "window", "confidence", "distribution"),
    "ratio",
    "Adverse move of the mark over label window not exceeded with probability label confidence, under a "
    "law (label distribution: normal, or Student-t with maximum-likelihood degrees of freedom) fitted "
    "to the log returns over every such window in the trailing {period} of 1-minute mark closes: "
    "exp(Q(1 - confidence)) - 1 for a long (negative), exp(Q(confidence)) - 1 for a short (positive).",
    "Parametric `window` move at `confidence` (0.99, 0.999) under a `distribution` (`normal`, "
    "`student_t`) fitted to the same history's window log returns; signed like the worst move.",
)
PARAMETRIC_STRESS_SURVIVES = _def(
    "fr_position_parametric_stress_survives",
    "gauge",
    "positions",
    (*POSITION_LABELS, "window", "confidence", "distribution"),
    "0/1",
    "1 if the position would not be liquidated after the parametric move of the mark "
    "(fr_position_parametric_move_ratio, same labels, fitted on the trailing {period}), else 0.",
    "1 if the position survives that parametric move from the live mark.",
)
POSITION_SIZE = _def(
    "fr_position_size",
    "gauge",
    "positions",
    POSITION_LABELS,
    "base coin",
    "Position size in base coin.",
    "Size.",
)
POSITION_NOTIONAL = _def(
    "fr_position_notional_usd",
    "gauge",
    "positions",
    POSITION_LABELS,
    "USD",
    "Position size x live mark price, USD.",
    "Size × live mark.",
)
LOCKED_CAPITAL = _def(
    "fr_position_locked_capital_usd",
    "gauge",
    "positions",
    POSITION_LABELS,
    "USD",
    "Capital the carry APY is computed on: configured, else margin of the perp leg plus the hedge's capital.",
    "Capital the APY is computed on.",
)
POSITION_EQUITY = _def(
    "fr_position_equity_usd",
    "gauge",
    "positions",
    POSITION_LABELS,
    "USD",
    "Margin equity of the position at the live mark in USD: isolated margin (or, cross, the wallet "
    "balance) plus the position's unrealised PnL (other positions of a cross account not counted).",
    "Margin equity at the mark: isolated margin (cross: wallet balance) + this position's unrealised PnL.",
)
POSITION_MAINTENANCE_MARGIN = _def(
    "fr_position_maintenance_margin_usd",
    "gauge",
    "positions",
    POSITION_LABELS,
    "USD",
    "Maintenance margin of the position at the live mark in USD, by the exchange's rule and tier "
    "(notional x MMR - maintenance amount; OKX adds the taker fee).",
    "Maintenance margin at the mark under the exchange's tiers (notional × MMR − maintenance amount).",
)
MARGIN_BUFFER = _def(
    "fr_margin_buffer_ratio",
    "gauge",
    "positions",
    POSITION_LABELS,
    "ratio",
    "Margin buffer beta = (equity - maintenance margin) / equity of the position: 1 = no requirement, "
    "0 = at liquidation, < 0 beyond; absent when the equity is 0 or less.",
    "β = (equity − maintenance margin) / equity: 0 at liquidation, negative beyond; absent when the equity is ≤ 0.",
)
BASIS_PNL = _def(
    "fr_position_basis_pnl_usd",
    "gauge",
    "positions",
    POSITION_LABELS,
    "USD",
    "Basis PnL of the carry in USD: side x size x (mark - entry) of the perp leg plus the same of the "
    "hedge leg (perp: its mark; spot: the perp's index price); absent while a leg's price is unknown.",
    "Unrealised PnL of both legs from their entry prices and the live marks (spot hedge: the index).",
)
TOTAL_PNL = _def(
    "fr_position_total_pnl_usd",
    "gauge",
    "positions",
    POSITION_LABELS,
    "USD",
    "Total PnL of the carry in USD: basis PnL + net funding since the position opened - fees of both "
    "legs (a negative fee, a maker rebate, adds).",
    "Basis PnL + net funding since opening − fees (rebates add).",
)
POSITION_CONFIG_ERRORS = _def(
    "fr_position_config_errors_total",
    "counter",
    "positions",
    ("field",),
    "positions",
    "Configured positions skipped at start because of an error, by the field at fault (the error is "
    "logged with the position's index and name).",
    "Configured positions skipped at start (unknown instrument, negative size, leverage above the "
    "tier's maximum, ...), by the offending field.",
)
ACCOUNT_READS = _def(
    "fr_position_account_reads_total",
    "counter",
    "positions",
    ("exchange",),
    "requests",
    "Signed account reads attempted, per exchange.",
    "Signed read-only account reads.",
)
ACCOUNT_READ_FAILURES = _def(
    "fr_position_account_read_failures_total",
    "counter",
    "positions",
    ("exchange", "reason"),
    "requests",
    "Failed signed account reads, per exchange and reason (auth, rate_limited, http_5xx, timeout, "
    "connect, exchange_error, invalid_response).",
    "Failed signed account reads by reason (`auth`, `rate_limited`, `http_5xx`, `timeout`, `connect`, "
    "`exchange_error`, `invalid_response`).",
)

# ---- AI risk (the sidecar's own /metrics) -----------------------------------------------------

_AI_ANSWER = ("base", "horizon", "model")

AI_RISK_PROBABILITY = _def(
    "fr_ai_risk_probability",
    "gauge",
    "ai",
    ("base", "calibration", "horizon", "model"),
    "probability 0..1",
    "Probability (0..1) of a large liquidation event for the base asset within the horizon, "
    "by model (last valid answer): calibration=raw as the model said it, calibrated through the "
    "model's isotonic recalibration (once enough predictions are scored).",
    "Last valid probability of a large liquidation event for the base within the horizon, per model: "
    '`calibration="raw"` as the model said it, `"calibrated"` through its recalibration (present once '
    "it exists; alerts use it then).",
    fixed=True,
)
AI_CONFIDENCE = _def(
    "fr_ai_confidence",
    "gauge",
    "ai",
    _AI_ANSWER,
    "0..1",
    "The model's stated confidence (0..1) in its last valid answer.",
    "Last valid confidence.",
)
AI_RISK_LEVEL = _def(
    "fr_ai_risk_level",
    "gauge",
    "ai",
    ("base", "horizon", "model", "level"),
    "0/1",
    "1 for the model's current risk level (label level), 0 for the others.",
    "1 for the current level, 0 for the other three.",
    label_note="(`low`, `medium`, `high`, `critical`)",
)
AI_LIQUIDATION_VOLUME = _def(
    "fr_ai_estimated_liquidation_volume_usd",
    "gauge",
    "ai",
    _AI_ANSWER,
    "USD",
    "The model's estimate of liquidated notional within the horizon, in USD (absent if it gave none).",
    "The model's volume estimate (absent if it gave none).",
)
AI_LAST_SUCCESS = _def(
    "fr_ai_last_success_timestamp_seconds",
    "gauge",
    "ai",
    ("base", "model"),
    "Unix seconds",
    "Unix time (seconds) when the last valid answer arrived for the base asset.",
    "When the last valid answer arrived. A stale prediction is not removed: alert on `time() - x`.",
)
AI_REQUESTS = _def(
    "fr_ai_requests_total",
    "counter",
    "ai",
    ("model",),
    "requests",
    "Calls to the model (HTTP attempts, retries included; baseline runs).",
    "HTTP attempts (baseline: runs).",
)
AI_REQUEST_FAILURES = _def(
    "fr_ai_request_failures_total",
    "counter",
    "ai",
    ("model", "reason"),
    "requests",
    "Failed calls or rejected answers by reason (timeout, http_error, rate_limited, connection_error, "
    "bad_response, invalid_json, multiple_objects, schema, internal).",
    "Failed calls or rejected answers by reason (see `docs/sidecar.md`); all reasons start at 0.",
)
AI_REQUEST_DURATION = _def(
    "fr_ai_request_duration_seconds",
    "histogram",
    "ai",
    ("model",),
    "seconds",
    "Model call latency per attempt, in seconds.",
    "Model call latency per attempt, buckets 0.05 s .. 120 s.",
)
AI_TOKENS = _def(
    "fr_ai_tokens_total",
    "counter",
    "ai",
    ("model", "kind"),
    "tokens",
    "Tokens reported by the model's API (kind = prompt | completion).",
    "`prompt` / `completion`, as reported in `usage`.",
)
AI_COST = _def(
    "fr_ai_cost_usd_total",
    "counter",
    "ai",
    ("model",),
    "USD",
    "Cost of the model's tokens at the configured prices per million tokens, in USD.",
    "Tokens × configured price per million.",
)
AI_ANSWER_TRUNCATIONS = _def(
    "fr_ai_answer_truncations_total",
    "counter",
    "ai",
    ("field", "model"),
    "answers",
    "Accepted answers whose over-long text field (label field) was cut to the schema's limit.",
    "Accepted answers whose `reasoning` / `key_factors` / `prediction` was cut to its limit.",
)

_SKILL = ("calibration", "horizon", "model", "window")
_OF_SCORED = (
    " of scored predictions (window: rolling = the last skill_window_seconds, all = since start; "
    "calibration: raw or calibrated probabilities)."
)
AI_BRIER = _def(
    "fr_ai_brier_score",
    "gauge",
    "ai",
    _SKILL,
    "0 (best) .. 1",
    "Brier score (mean squared error, 0 best, 0.25 = constant 0.5)" + _OF_SCORED,
    "Brier score of the scored predictions (0 best, 0.25 = a constant 0.5); absent below `skill_min_scored`.",
)
AI_BRIER_SKILL = _def(
    "fr_ai_brier_skill_score",
    "gauge",
    "ai",
    _SKILL,
    "ratio (≤ 1)",
    "Brier skill score against climatology (1 - Brier / Brier of the observed base rate; > 0 adds "
    "information, < 0 worse than the base rate)" + _OF_SCORED,
    "1 − Brier / Brier of climatology (the observed base rate of the same predictions): > 0 adds "
    "information; absent while every outcome is the same.",
)
AI_LOG_LOSS = _def(
    "fr_ai_log_loss",
    "gauge",
    "ai",
    _SKILL,
    "nats",
    "Log loss (nats, p clipped to 1e-6)" + _OF_SCORED,
    "Log loss (p clipped to [1e-6, 1 − 1e-6]).",
)
AI_BASE_RATE = _def(
    "fr_ai_base_rate_ratio",
    "gauge",
    "ai",
    _SKILL,
    "ratio 0..1",
    "Observed event frequency (climatology)" + _OF_SCORED,
    "Observed event frequency of the same predictions (climatology).",
)
AI_PRECISION = _def(
    "fr_ai_precision_ratio",
    "gauge",
    "ai",
    _SKILL,
    "ratio 0..1",
    "Precision at the alert threshold (absent while undefined)" + _OF_SCORED,
    "At `alert_probability` (0.7, AiRiskHigh's threshold); absent while undefined.",
)
AI_RECALL = _def(
    "fr_ai_recall_ratio",
    "gauge",
    "ai",
    _SKILL,
    "ratio 0..1",
    "Recall at the alert threshold (absent while undefined)" + _OF_SCORED,
    "At `alert_probability`; absent while undefined.",
)
AI_F1 = _def(
    "fr_ai_f1_ratio",
    "gauge",
    "ai",
    _SKILL,
    "ratio 0..1",
    "F1 at the alert threshold (absent while undefined)" + _OF_SCORED,
    "Harmonic mean of precision and recall at `alert_probability`; absent while undefined.",
)
AI_SKILL_PREDICTIONS = _def(
    "fr_ai_skill_predictions",
    "gauge",
    "ai",
    _SKILL,
    "predictions",
    "Number of scored predictions" + _OF_SCORED,
    "How many scored predictions the skill series cover.",
)
AI_SCORED = _def(
    "fr_ai_scored_predictions_total",
    "counter",
    "ai",
    ("horizon", "model"),
    "predictions",
    "Predictions whose horizon has passed and that were scored against the observed liquidation flow.",
    "Predictions scored so far (persisted).",
)
_RELIABILITY = ("bin", "calibration", "horizon", "model")
AI_RELIABILITY_PREDICTIONS = _def(
    "fr_ai_reliability_predictions",
    "gauge",
    "ai",
    _RELIABILITY,
    "predictions",
    "Scored predictions (since start) whose probability fell in the bin (reliability diagram).",
    'Scored predictions (since start) per probability decile `bin="0.3-0.4"`.',
)
AI_RELIABILITY_MEAN = _def(
    "fr_ai_reliability_mean_probability_ratio",
    "gauge",
    "ai",
    _RELIABILITY,
    "probability 0..1",
    "Mean predicted probability of the bin's scored predictions (reliability diagram).",
    "Mean predicted probability of the bin.",
)
AI_RELIABILITY_OBSERVED = _def(
    "fr_ai_reliability_observed_ratio",
    "gauge",
    "ai",
    _RELIABILITY,
    "ratio 0..1",
    "Observed event frequency of the bin's scored predictions (reliability diagram).",
    "Observed event frequency of the bin (a calibrated model's equals the mean probability).",
)
AI_CALIBRATION_FITTED = _def(
    "fr_ai_calibration_fitted_predictions",
    "gauge",
    "ai",
    ("base", "horizon", "model"),
    "predictions",
    "Scored predictions the current recalibration of (model, base, horizon) was fitted on "
    "(0: not enough yet, only the raw probability is published).",
    "Scored predictions the current recalibration was fitted on (0: none yet).",
)
AI_STATE_READS = _def(
    "fr_ai_state_reads_total",
    "counter",
    "ai",
    ("result",),
    "reads",
    "Reads of the exporter's /api/state by result (ok | error).",
    "`/api/state` reads, `ok` / `error`.",
)
AI_SLACK_MESSAGES = _def(
    "fr_ai_slack_messages_total",
    "counter",
    "ai",
    ("result",),
    "messages",
    "Slack messages by result (sent | failed | dropped).",
    "`sent` / `failed` / `dropped`.",
)


# ---- feed quality and recording --------------------------------------------------------------

STREAM_EVENT_LAG = _def(
    "fr_stream_event_lag_seconds",
    "histogram",
    "feed",
    _STREAM,
    "seconds",
    "Delay from the exchange's event timestamp to local receipt, corrected by the measured clock offset "
    "(one observation per data frame, its newest stamp).",
    "Receive time on the exchange's clock (ours + `fr_exchange_clock_offset_seconds`) minus the newest "
    "exchange stamp of the frame; one observation per data frame. Buckets 1 ms .. 10 s. Note that a "
    "batched stream (Binance liquidations, 1 s snapshots) adds up to its batch period.",
)
EXCHANGE_CLOCK_OFFSET = _def(
    "fr_exchange_clock_offset_seconds",
    "gauge",
    "feed",
    ("exchange",),
    "seconds",
    "Exchange clock minus local clock, from the server-time endpoint (NTP-style, lowest-RTT of the last 8 samples).",
    "`server − (sent + received) / 2` of the server-time call with the shortest round trip among the "
    "last 8 (`poll.server_time_seconds`, default 60 s). Absent before the first sample.",
)
EXCHANGE_RTT = _def(
    "fr_exchange_rtt_seconds",
    "gauge",
    "feed",
    ("exchange",),
    "seconds",
    "Round trip of the last server-time REST call.",
    "Round trip of the last server-time call (the offset's uncertainty is at most half of it).",
)
STREAM_PING_RTT = _def(
    "fr_stream_ping_rtt_seconds",
    "gauge",
    "feed",
    _STREAM,
    "seconds",
    "Round trip of the last websocket ping on the stream's connection.",
    "Round trip of the last websocket protocol ping (keepalive every 20 s); absent before the first pong.",
)
STREAM_GAP = _def(
    "fr_stream_gap_seconds_total",
    "counter",
    "feed",
    _STREAM,
    "seconds",
    "Seconds the stream was silent beyond its expected cadence (disconnects and stalls included).",
    "Silence beyond the stream's cadence (Binance markPrice 1 s; Bybit tickers and Deribit ticker 1 s, "
    "their 100 ms pushes are silent when nothing changed; OKX mark-price 10 s), the silence still "
    "going on included. Streams with no cadence (none today) are absent.",
)
STREAM_EXPECTED = _def(
    "fr_stream_expected_seconds_total",
    "counter",
    "feed",
    _STREAM,
    "seconds",
    "Seconds the stream was expected to speak (since it was first started).",
    "Time since the stream was first started. Completeness over a range: "
    "`1 − increase(gap) / increase(expected)` (recording rule `fr:stream_completeness:ratio24h`).",
)
FUNDING_SETTLEMENTS_MISSED = _def(
    "fr_funding_settlements_missed_total",
    "counter",
    "feed",
    ("exchange", "instrument"),
    "settlements",
    "Funding settlement times that passed without the settlement being seen (stream or history).",
    "A next-funding time that passed without a settlement recorded within the grace period "
    "(inferred from the stream or read from the history).",
)
RECORDING_FRAMES = _def(
    "fr_recording_frames_total",
    "counter",
    "feed",
    ("kind",),
    "frames",
    "Raw frames and REST lines written to the recording (kind = ws | rest; rest: bodies and failed calls).",
    "Written to the recording: `ws` frames and `rest` lines (bodies, and failed attempts without their body).",
)
RECORDING_DROPPED = _def(
    "fr_recording_dropped_total",
    "counter",
    "feed",
    (),
    "frames",
    "Frames not recorded because the writer's queue was full (slow disk).",
    "Frames not recorded because the writer fell behind (queue full): the state was still updated.",
)
RECORDING_BYTES = _def(
    "fr_recording_bytes_total",
    "counter",
    "feed",
    (),
    "bytes",
    "Compressed bytes written to the recording files.",
    "Compressed bytes written to the recording files (rotated files deleted beyond `recording.max_bytes`).",
)
