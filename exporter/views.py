"""The view layer: where a stored value becomes what a reader is shown.

:class:`MarketViews` turns a snapshot of :class:`~exporter.state.MarketState` into the views of
every instrument, built in bulk as columns (:class:`ViewTable`; an :class:`InstrumentView` per
instrument on demand): a stale value becomes ``None`` (so its series disappears and /api/state
says ``null``), and derived values (8 h rate, APY, z-score, edge, anchor strength) are computed
from fresh inputs only. The metric collectors, ``/api/state`` and the server read
these views, so /metrics and /api/state can never disagree. Exchange liveness (``fr_up``), fresh
insurance funds and the /api/state extras (1 h open-interest change, liquidations of the last
hour, ages) are views too.

Nothing here writes to state, knows about Prometheus, or does I/O.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from bisect import bisect_right
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import compress, repeat
from operator import attrgetter, is_not, mul
from typing import Any

import numpy as np

from exporter.analytics import factors, term
from exporter.analytics import funding as fa
from exporter.analytics.cross import FundingColumns, FundingPoint
from exporter.config import Config
from exporter.feeds.dated import expiry_date
from exporter.model import EIGHT_HOURS, Exchange, InstrumentInfo, Side
from exporter.state import (
    F_CAP,
    F_FLOOR,
    F_FUNDING_AT,
    F_INDEX,
    F_INTERVAL_EFF,
    F_MARK,
    F_NFT,
    F_OI_AT,
    F_OI_USD,
    F_PREMIUM,
    F_PRICE_AT,
    F_RATE,
    LIQ_FLOW_WINDOW_SECONDS,
    RECORD,
    FutureState,
    InstrumentState,
    MarketState,
    record_rows,
    window_ends,
    window_storage,
)

__all__ = [
    "LIQ_FLOW_WINDOW_SECONDS",
    "FutureView",
    "InstrumentView",
    "MarketViews",
    "RenderErrors",
    "ViewTable",
    "ages",
    "exchange_up",
    "fresh_insurance",
    "liquidation_totals",
    "liquidations_since",
    "oi_change_1h",
]

log = logging.getLogger(__name__)

YIELD_EVERY_INSTRUMENTS = 500
# the bulk views look up one cache per instrument in each of four passes: about the same work as
# YIELD_EVERY_INSTRUMENTS instruments built one by one between two yields
_LOOKUPS_PER_YIELD = 4 * YIELD_EVERY_INSTRUMENTS
# After a settlement the exchanges push the next settlement time within seconds; a next-funding
# time older than this means the rate is the settled one, stale by definition.
NEXT_FUNDING_GRACE_S = 60.0


class RenderErrors:
    """Series left out of a scrape because building or rendering them failed, per collector
    (``fr_render_errors_total{collector}``): an instrument whose view raised or held a non-finite
    value (market), a base whose cross-exchange figures raised (cross), an /api/state row, a
    non-finite sample, a whole collector that raised.

    Written by the scrape threads, read by the health collector; a lock keeps the counts exact.
    """

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, collector: str, n: int = 1) -> None:
        with self._lock:
            self._counts[collector] = self._counts.get(collector, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _yield_gil() -> None:
    # A scrape runs in the HTTP thread: hand the GIL to the event loop now and then (see exposition).
    time.sleep(0)


class _InInterval:
    """An instrument's settlement window with every rate expressed per ``interval`` (see state)."""

    __slots__ = ("interval", "st")

    def __init__(self, st: InstrumentState, interval: float | None) -> None:
        self.st = st
        self.interval = interval

    def settlement_window(self) -> tuple[tuple[float, float], ...]:
        return self.st.settlement_window_in(self.interval)

    def settlement_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """The same as two arrays, from one copy of the state's flat storage (the first scrape reads
        every instrument's window: no tuple per settlement)."""
        return fa.settlement_columns(self.st.settlements.raw(), self.interval)


@dataclass(slots=True)
class InstrumentView:
    """One instrument at one scrape. ``None``: unknown, stale, or not computable from fresh inputs.

    ``st`` is the stored instrument, for what is shown as stored (counters, windows, receive times).
    """

    st: InstrumentState
    stale: bool  # price or funding older than its limit (or never received)
    mark_price: float | None
    index_price: float | None
    premium_ratio: float | None
    funding_rate: float | None
    funding_interval_s: float | None
    funding_rate_8h: float | None
    funding_rate_annualized: float | None
    next_funding_timestamp: float | None
    funding_cap: float | None
    funding_floor: float | None
    open_interest_usd: float | None
    long_short_ratio: float | None
    zscore: float | None
    momentum: float | None
    acceleration: float | None
    edge_side: str | None
    edge_bp: float | None
    anchor_strength: float | None  # method=level: OLS of funding (per 8 h) on premium
    anchor_difference: float | None  # method=difference: the same on one-minute changes
    fee_bp: float
    # factor signals (exporter.analytics.factors): open-interest change and realised volatility
    oi_change_1h: float | None = None
    oi_change_4h: float | None = None
    volatility_1h: float | None = None
    volatility_4h: float | None = None


# The float fields of a view: none may be NaN or infinite (checked once per view, see _finite).
_VIEW_FLOATS = tuple(f.name for f in dataclasses.fields(InstrumentView) if f.name not in ("st", "stale", "edge_side"))
_view_floats = attrgetter(*_VIEW_FLOATS)
_is_value = partial(is_not, None)
_OI_WINDOWS = (factors.OI_CHANGE_WINDOWS["1h"], factors.OI_CHANGE_WINDOWS["4h"])


@dataclass(slots=True)
class FutureView:
    """One dated future at one scrape (term structure). ``None``: stale, unknown or not defined
    (the annualised figures under one day to expiry, see :mod:`exporter.analytics.term`)."""

    st: FutureState
    expiry: float
    expiry_date: str  # UTC date, the ``expiry`` label
    days_to_expiry: float
    mark_price: float | None
    index_price: float | None  # S: the future's own index, else the same-base perpetual's
    basis_ratio: float | None
    basis_annualized: float | None
    implied_funding_8h: float | None
    actual_funding_8h: float | None  # the same exchange's perpetual of the base, per 8 h
    implied_minus_actual_bp: float | None
    estimated_settle_price: float | None = None  # the last hour before delivery only (Binance P)


def _reference(views: Iterable[InstrumentView]) -> dict[tuple[Exchange, str], list[InstrumentView]]:
    """Perpetuals per (exchange, base), preferred first: USDT, then USD, then any (by id)."""
    rank = {"USDT": 0, "USD": 1}
    out: dict[tuple[Exchange, str], list[InstrumentView]] = {}
    for v in views:
        out.setdefault((v.st.info.exchange, v.st.info.base), []).append(v)
    for vs in out.values():
        vs.sort(key=lambda v: (rank.get(v.st.info.quote, 2), v.st.info.instrument))
    return out


def _pick(perps: list[InstrumentView], quote: str, field: str) -> float | None:
    """The value of the perpetual with the future's quote when fresh, else of the preferred one."""
    same = [v for v in perps if v.st.info.quote == quote]
    for v in (*same, *perps):
        x = getattr(v, field)
        if x is not None:
            return float(x)
    return None


def _finite(v: InstrumentView) -> bool:
    # 0.0 * x is 0.0 for every finite float, NaN for NaN and the infinities; the sum of those is 0.0
    # only if every one is (no overflow: the terms are zeros). All in C: no Python step per field.
    return sum(map(mul, filter(_is_value, _view_floats(v)), repeat(0.0))) == 0.0


def _without_non_finite(v: InstrumentView) -> InstrumentView:
    """The view with each NaN/infinite value replaced by None (its series left out)."""
    bad: dict[str, Any] = {
        name: None for name, x in zip(_VIEW_FLOATS, _view_floats(v), strict=True) if x is not None and x - x != 0.0
    }
    if "edge_bp" in bad:
        bad["edge_side"] = None
    return dataclasses.replace(v, **bad)


# exporter.analytics.funding, typed for floats, called with arrays (looked up at each call)
_fa_columns: Any = fa
_info_of = attrgetter("info")
_ratio = attrgetter("long_short_ratio")
_ratio_at = attrgetter("ratio_at")
_mark_minute = attrgetter("mark_minute")
_settlements_version = attrgetter("settlements_version")
# InstrumentView's fields in order, and where the table keeps each
_VIEW_FIELDS = tuple(f.name for f in dataclasses.fields(InstrumentView))


class _Static:
    """What the bulk views need of a list of instruments' static facts, kept while the list holds."""

    __slots__ = (
        "_names",
        "bases",
        "deribit",
        "ex_index",
        "exchange_values",
        "exchanges",
        "infos",
        "instruments",
        "keys",
    )

    def __init__(self, infos: list[InstrumentInfo]) -> None:
        n = len(infos)
        self.infos = infos
        self.exchanges = list(dict.fromkeys(i.exchange for i in infos))
        index = {ex: k for k, ex in enumerate(self.exchanges)}
        self.ex_index = np.fromiter((index[i.exchange] for i in infos), dtype=np.intp, count=n)
        self.deribit = np.fromiter((i.exchange is Exchange.DERIBIT for i in infos), dtype=bool, count=n)
        self.keys = [(i.exchange, i.instrument) for i in infos]  # InstrumentState.key
        self.bases = [i.base for i in infos]
        self.exchange_values = [i.exchange.value for i in infos]
        self.instruments = [i.instrument for i in infos]
        self._names: tuple[list[str], np.ndarray, list[str], np.ndarray] | None = None

    def name_codes(self) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
        """The bases and exchanges sorted, and each instrument's codes into them (built once)."""
        if self._names is None:
            bases, exchanges = sorted(set(self.bases)), sorted(set(self.exchange_values))
            bi = {b: k for k, b in enumerate(bases)}
            ei = {e: k for k, e in enumerate(exchanges)}
            self._names = (
                bases,
                np.array([bi[b] for b in self.bases], dtype=np.intp),
                exchanges,
                np.array([ei[e] for e in self.exchange_values], dtype=np.intp),
            )
        return self._names


def _ends(windows: list[Any], first: bool = True) -> np.ndarray:
    """Each window's (records, first time, last time), -inf times when empty, as an (n, 3) array;
    (records, last time), (n, 2), without ``first``."""
    return np.array(window_ends(windows, first), dtype=np.float64).reshape(len(windows), 3 if first else 2)


class _Cached:
    """Per instrument of a list (the positions of a ``_Static``), what its windowed figures were last
    computed from and their values, as columns: NaN where never computed (NaN equals nothing)."""

    __slots__ = (
        "anchor",
        "oi_bounds",
        "oi_ends",
        "oi_then",
        "set_interval",
        "set_oldest",
        "set_stats",
        "set_version",
        "static",
        "vol",
        "vol_has",
        "vol_sig",
    )

    def __init__(self, static: _Static) -> None:
        n = len(static.infos)
        self.static = static
        self.oi_ends = np.full((n, 3), np.nan)  # the OI window's (records, first time, last time)
        self.oi_bounds = np.full((n, 4), np.nan)  # each start's samples before and after: lo1, hi1, lo4, hi4
        self.oi_then = np.full((n, 4), np.nan)  # the sample each start picks: t1, v1, t4, v4 (NaN: none)
        self.vol_sig = np.full((n, 4), np.nan)  # minute, mark minutes' records and last time, minute in progress
        self.vol = np.full((n, 2), np.nan)
        self.vol_has = np.zeros((n, 2), dtype=bool)
        # the settlement window's version, interval and oldest time; its statistics n, mean, std, acceleration
        self.set_version = np.full(n, np.nan)
        self.set_interval = np.full(n, np.nan)
        self.set_oldest = np.full(n, np.nan)
        self.set_stats = np.full((n, 4), np.nan)
        self.anchor = fa.AnchorColumns(n)  # the anchor regressions' running sums and slopes


class ViewTable:
    """One scrape's views as columns, in instrument order: ``cols`` holds one float64 array per
    float field of :class:`InstrumentView` (NaN: None), ``stale`` and ``short`` (the side receiving
    funding, where there is an edge) are boolean arrays. Readers of every instrument (the market
    and cross-exchange collectors) take the columns: a family is a pass over contiguous memory, not
    a read of an object per instrument. :meth:`views` gives the same as InstrumentView objects."""

    __slots__ = ("_views", "cols", "infos", "short", "stale", "states", "static")

    def __init__(
        self,
        states: list[InstrumentState],
        infos: list[InstrumentInfo],
        cols: dict[str, np.ndarray],
        stale: np.ndarray,
        short: np.ndarray,
        static: _Static | None = None,
    ) -> None:
        self.states = states
        self.infos = infos
        self.cols = cols
        self.stale = stale
        self.short = short
        self.static: _Static | None = static
        self._views: list[InstrumentView] | None = None

    def __len__(self) -> int:
        return len(self.states)

    @classmethod
    def from_views(cls, views: Sequence[InstrumentView]) -> ViewTable:
        """The columns of views built one by one (the per-instrument path, tests)."""
        n = len(views)
        cols = {name: np.array([getattr(v, name) for v in views], dtype=np.float64).reshape(n) for name in _VIEW_FLOATS}
        # an edge is shown with its side only
        cols["edge_bp"] = np.where(np.array([bool(v.edge_side) for v in views], dtype=bool), cols["edge_bp"], np.nan)
        table = cls(
            [v.st for v in views],
            [v.st.info for v in views],
            cols,
            np.array([v.stale for v in views], dtype=bool),
            np.array([v.edge_side == "short" for v in views], dtype=bool),
        )
        table._views = list(views)
        return table

    def views(self) -> list[InstrumentView]:
        """The views as :class:`InstrumentView` objects (built once, when first asked)."""
        if self._views is None:
            lists: dict[str, list[Any]] = {
                name: [None if x != x else x for x in self.cols[name].tolist()] for name in _VIEW_FLOATS
            }
            lists["st"] = self.states
            lists["stale"] = self.stale.tolist()
            lists["edge_side"] = [
                None if e is None else ("short" if s else "long")
                for e, s in zip(lists["edge_bp"], self.short.tolist(), strict=True)
            ]
            self._views = list(map(InstrumentView, *(lists[name] for name in _VIEW_FIELDS)))
        return self._views


# The volatility and open-interest samples of this many instruments are found in one call (their windows
# copied, searched and reduced together): a minute's close moves every instrument's windows. Blocks
# this small keep the temporaries in the caches and off fresh pages (1,024 at a time cost twice the CPU
# at 2,000 instruments); the GIL is handed over every _COLUMNS_YIELD instruments.
_COLUMNS_BLOCK = 256
_COLUMNS_YIELD = 1024
_VOLATILITY_WINDOWS = (factors.VOLATILITY_WINDOWS["1h"], factors.VOLATILITY_WINDOWS["4h"])


def _volatility_columns(sts: list[InstrumentState], marks: np.ndarray, now: float) -> np.ndarray:
    """Realised volatility over 1 h and 4 h of each instrument (a row each; NaN: None), as
    :meth:`MarketViews._volatility` computes it one by one: the closed minutes of its window, and the
    minute in progress with the mark as its close so far when it is later than the last one;
    computed over all of them at once (factors.realized_volatility_rows where the windows are full
    and none misses a minute, factors.realized_volatility_columns for the others: the same floats)."""
    k = len(sts)
    # one copy of each window, taken with the minute in progress beside it (the event loop may close
    # a minute meanwhile: each window is read once and matched with the minute read with it)
    raws = [st.mark_minutes.raw() for st in sts]
    cur = np.fromiter(map(_mark_minute, sts), dtype=np.float64, count=k)
    lengths = np.fromiter(map(len, raws), dtype=np.intp, count=k) // 2
    flat = np.frombuffer(b"".join(raws), dtype=np.float64).reshape(-1, 2)
    ends = np.cumsum(lengths)
    last_t = np.where(lengths > 0, flat[np.maximum(ends - 1, 0), 0] if len(flat) else np.nan, np.nan)
    with np.errstate(invalid="ignore"):
        extra = (cur >= 0.0) & ((lengths == 0) | (cur > last_t))
    if k and len(flat) and (lengths == lengths[0]).all():
        # Windows of one length (full ones) read as rows, no copy. A row the rows' path answers has
        # its last close at the last complete minute: a minute in progress later than that is after
        # every point of the grid and changes nothing, so it is not added there.
        rows = flat.reshape(k, int(lengths[0]), 2)
        out, done = factors.realized_volatility_rows(rows[:, :, 0], rows[:, :, 1], now, _VOLATILITY_WINDOWS)
        rest = np.flatnonzero(~done)
        if not len(rest):
            return out
        out[rest] = _volatility_general(
            [raws[i] for i in rest.tolist()], cur[rest], marks[rest], lengths[rest], extra[rest], now
        )
        return out
    return _volatility_general(raws, cur, marks, lengths, extra, now)


def _volatility_general(
    raws: list[Any], cur: np.ndarray, marks: np.ndarray, lengths: np.ndarray, extra: np.ndarray, now: float
) -> np.ndarray:
    """:func:`_volatility_columns` of any windows: the minute in progress put after each window where
    it is later than its last close, and the windows searched together (realized_volatility_columns)."""
    flat = np.frombuffer(b"".join(raws), dtype=np.float64).reshape(-1, 2)
    ends = np.cumsum(lengths)
    total = lengths + extra
    starts = np.cumsum(total) - total
    times = np.empty(int(total.sum()))
    closes = np.empty_like(times)
    rows = np.repeat(starts - (ends - lengths), lengths) + np.arange(len(flat))
    times[rows], closes[rows] = flat[:, 0], flat[:, 1]
    tail = (starts + lengths)[extra]
    times[tail], closes[tail] = cur[extra], marks[extra]
    return factors.realized_volatility_columns(times, closes, total, now, _VOLATILITY_WINDOWS)


def _oi_columns(sts: list[InstrumentState], targets: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :meth:`MarketViews._oi_changes` keeps of each instrument's open-interest window, for many
    at once: per window start (``targets``), the times of the samples before and after it (lo, hi:
    -inf / inf where none; columns lo1, hi1, lo4, hi4) and the sample it picks (t, v: NaN where none;
    t1, v1, t4, v4); and the positions of the windows out of order, left to the per-instrument path."""
    k = len(sts)
    raws = [st.oi_samples.raw() for st in sts]  # one copy each (the event loop may append meanwhile)
    lengths = np.fromiter(map(len, raws), dtype=np.intp, count=k) // 2
    flat = np.frombuffer(b"".join(raws), dtype=np.float64).reshape(-1, 2)
    times = flat[:, 0]
    pos, odd = factors.latest_at_or_before(times, lengths, targets)
    # a NaN after the last point: position -1 and the position after a series' last read it
    t = np.append(times, np.nan)
    v = np.append(flat[:, 1], np.nan)
    offsets = np.cumsum(lengths) - lengths
    bounds = np.empty((k, 4))
    then = np.empty((k, 4))
    for j in range(len(targets)):
        p = pos[:, j]
        has = p >= 0
        after = np.where(has, p + 1, offsets)
        bounds[:, 2 * j] = np.where(has, t[p], -np.inf)
        bounds[:, 2 * j + 1] = np.where(after < offsets + lengths, t[after], np.inf)
        then[:, 2 * j] = np.where(has, t[p], np.nan)
        then[:, 2 * j + 1] = np.where(has, v[p], np.nan)
    return bounds, then, np.array(odd, dtype=np.intp)


class MarketViews:
    """Builds :class:`InstrumentView` lists; owns the window caches shared by scrapes.

    One instrument whose view cannot be built (or holds a non-finite value) loses those values
    for the scrape, counted in ``errors`` (``fr_render_errors_total{collector="market"}``); the
    others are unaffected.
    """

    def __init__(self, config: Config, state: MarketState, errors: RenderErrors | None = None) -> None:
        self.config = config
        self.state = state
        self.errors = errors if errors is not None else RenderErrors()
        self.cache = fa.WindowCache()
        # instrument -> (what the values were computed from, realised volatility over 1 h and 4 h):
        # they change only when a minute closes, so a scrape mostly reads them from here
        self._vol: dict[Hashable, tuple[tuple[float, ...], float | None, float | None]] = {}
        # instrument -> (what the window held, the samples around each OI-change window's start)
        self._oi: dict[Hashable, tuple[tuple[float, ...], tuple[tuple[float, float, Any, Any], ...]]] = {}
        self._builds = 0
        self._static_cache: _Static | None = None
        self._cached: _Cached | None = None
        self._tls = threading.local()

    @contextmanager
    def scrape(self) -> Iterator[None]:
        """Within this scope (one scrape, one thread) every reader shares one list of views."""
        tls = self._tls
        depth = getattr(tls, "depth", 0)
        tls.depth = depth + 1
        try:
            yield
        finally:
            tls.depth = depth
            if depth == 0:
                tls.table = None

    def current_table(self) -> ViewTable:
        """This scrape's views (built once per scrape, shared by every reader in it)."""
        tls = self._tls
        if not getattr(tls, "depth", 0):
            return self.table()
        table = getattr(tls, "table", None)
        if table is None:
            table = tls.table = self.table()
        return table

    def current_views(self) -> list[InstrumentView]:
        return self.current_table().views()

    def views(self, now: float | None = None) -> list[InstrumentView]:
        """One :class:`InstrumentView` per instrument (those of :meth:`table`)."""
        return self.table(now).views()

    def table(self, now: float | None = None) -> ViewTable:
        """Every instrument's view at ``now``, as columns (see :class:`ViewTable`).

        Built in bulk: the stored values read in one copy (``record_rows``), staleness and the
        derived values computed over whole columns by the same functions, only the windowed figures
        (z-score statistics, anchors, open-interest change, volatility) looked up per instrument in
        their caches. If anything raises there, the scrape is built again instrument by instrument
        (:meth:`_views_each`): one instrument whose figures cannot be built loses its values, the
        others keep theirs."""
        state = self.state
        now = state.clock() if now is None else now
        instruments = state.snapshot()
        try:
            table = self._table_bulk(instruments, now)
        except Exception:
            log.debug("views in bulk failed; built instrument by instrument", exc_info=True)
            table = ViewTable.from_views(self._views_each(instruments, now))
        self._builds += 1
        if self._builds % 100 == 0:
            # Instruments delisted from state: drop their cached windows (bounded memory).
            live: set[Hashable] = {st.key for st in instruments}
            self.cache.forget(live)
            for k in [k for k in list(self._vol) if k not in live]:
                self._vol.pop(k, None)
            for k in [k for k in list(self._oi) if k not in live]:
                self._oi.pop(k, None)
        return table

    def _limits(self, now: float) -> dict[Exchange, tuple[float, float, float, float, float]]:
        """Per exchange: the receive times below which price, funding, open interest and the
        long/short ratio are stale, and the effective fee per side."""
        cfg = self.config
        an = cfg.analytics
        limits = {}
        for ex, ex_cfg in cfg.exchanges.items():
            s = ex_cfg.stale
            # the effective fee per side: a rebate is a negative fee, points are income
            fee = (ex_cfg.fees.taker_bp if an.fee_kind == "taker" else ex_cfg.fees.maker_bp) - an.points_bp
            limits[ex] = (
                now - s.price_seconds,
                now - s.funding_seconds,
                now - s.open_interest_seconds,
                now - s.long_short_ratio_seconds,
                fee,
            )
        return limits

    def _static(self, instruments: list[InstrumentState]) -> _Static:
        infos = list(map(_info_of, instruments))
        st = self._static_cache
        if st is None or infos != st.infos:  # identity first: the same objects compare in C
            st = self._static_cache = _Static(infos)
        return st

    def _table_bulk(self, instruments: list[InstrumentState], now: float) -> ViewTable:
        """The columns of every instrument (see :meth:`table`): the per-instrument view's rules, over
        arrays. None is NaN in a column; a value that is there but not finite is left out (NaN) and
        its instrument counted once in ``errors``, as the per-instrument path does."""
        an = self.config.analytics
        static = self._static(instruments)
        n = len(instruments)
        limits = self._limits(now)
        per_ex = np.array([limits[ex] for ex in static.exchanges], dtype=np.float64).reshape(-1, 5)
        cuts = per_ex[static.ex_index] if n else np.empty((0, 5))
        rec = np.frombuffer(record_rows(instruments), dtype=np.float64).reshape(n, RECORD)
        nan = np.nan
        with np.errstate(all="ignore"):
            price_at, funding_at, oi_at = rec[:, F_PRICE_AT], rec[:, F_FUNDING_AT], rec[:, F_OI_AT]
            ratio_at = np.fromiter(map(_ratio_at, instruments), dtype=np.float64, count=n)
            ratio_s = np.array(list(map(_ratio, instruments)), dtype=np.float64).reshape(n)  # None: NaN
            price_ok = (price_at > 0.0) & (price_at >= cuts[:, 0])
            rate_s, nft = rec[:, F_RATE], rec[:, F_NFT]
            # a next settlement time in the past: the rate shown would be the one already settled
            funding_ok = (
                (funding_at > 0.0)
                & (funding_at >= cuts[:, 1])
                & ~np.isnan(rate_s)
                & (np.isnan(nft) | (nft >= now - NEXT_FUNDING_GRACE_S))
            )
            oi_ok = (oi_at > 0.0) & (oi_at >= cuts[:, 2])
            ratio_ok = (ratio_at > 0.0) & (ratio_at >= cuts[:, 3])
            fee = cuts[:, 4].copy()
            # Deribit's interval is 8 h by definition (see _views_each); the others' the stored one or
            # the instrument list's (interval_s; 0.0 or None when neither is known)
            interval = np.where(static.deribit, EIGHT_HOURS, rec[:, F_INTERVAL_EFF])
            for i in np.flatnonzero(interval == 0.0).tolist():
                x = instruments[i].interval_s
                interval[i] = nan if x is None else x
            mark_s, index_s, prem_s = rec[:, F_MARK], rec[:, F_INDEX], rec[:, F_PREMIUM]
            mark = np.where(price_ok, mark_s, nan)
            index = np.where(price_ok, index_s, nan)
            # MarketState.premium_of: from mark and index when both are known, else the published one
            computed = ~np.isnan(mark_s) & ~np.isnan(index_s) & (index_s != 0.0)
            premium = np.where(computed, (mark_s - index_s) / index_s, prem_s)
            premium_has = price_ok & (computed | ~np.isnan(prem_s))
            rate = np.where(funding_ok, rate_s, nan)
            with_interval = funding_ok & (interval != 0.0) & ~np.isnan(interval)
            # the per-instrument formulas themselves, over the columns (their arithmetic broadcasts)
            r8 = _fa_columns.rate_8h(rate, interval)
            ann = _fa_columns.annualize(rate, interval)
            edge = _fa_columns.edge_bp(rate, interval, fee, an.holding_period_hours)
            cols: dict[str, np.ndarray] = {
                "mark_price": mark,
                "index_price": index,
                "premium_ratio": np.where(premium_has, premium, nan),
                "funding_rate": rate,
                "funding_interval_s": interval,
                "funding_rate_8h": np.where(with_interval, r8, nan),
                "funding_rate_annualized": np.where(with_interval, ann, nan),
                "next_funding_timestamp": np.where(funding_ok, nft, nan),
                "funding_cap": rec[:, F_CAP].copy(),
                "funding_floor": rec[:, F_FLOOR].copy(),
                "open_interest_usd": np.where(oi_ok, rec[:, F_OI_USD], nan),
                "long_short_ratio": np.where(ratio_ok, ratio_s, nan),
                "edge_bp": np.where(with_interval, edge, nan),
                "fee_bp": fee,
            }
            # present but not finite: a derived value that overflowed or a stored infinity
            present = {
                "premium_ratio": premium_has,
                "funding_rate_8h": with_interval,
                "funding_rate_annualized": with_interval,
                "edge_bp": with_interval,
            }
            cols.update(self._windowed(instruments, static, now, cols, funding_ok, premium_has, present))
            bad = np.zeros(n, dtype=bool)
            for name, col in cols.items():
                has = present.get(name)
                wrong = ~np.isfinite(col) & (has if has is not None else ~np.isnan(col))
                if wrong.any():
                    bad |= wrong
                    cols[name] = np.where(wrong, nan, col)
        if bad.any():
            self.errors.count("market", int(np.count_nonzero(bad)))
        # the side that receives funding: shorts unless the rate is negative (fa.receiving_side)
        short = ~(rate < 0.0)
        return ViewTable(instruments, static.infos, cols, ~(price_ok & funding_ok), short, static)

    def _windowed(
        self,
        instruments: list[InstrumentState],
        static: _Static,
        now: float,
        cols: dict[str, np.ndarray],
        funding_ok: np.ndarray,
        premium_has: np.ndarray,
        present: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """The figures over each instrument's windows, from the caches (looked up per instrument, only
        where their inputs are fresh): z-score, momentum, acceleration, anchors, open-interest change,
        volatility. A None is NaN in the columns; the presence masks say which values were computed."""
        an = self.config.analytics
        z_start = now - an.zscore_window_seconds
        anchor_start = now - an.anchor_window_seconds
        min_obs = an.zscore_min_observations
        n = len(instruments)
        keys = static.keys
        cache = self.cache
        intervals = [None if x != x else x for x in cols["funding_interval_s"].tolist()]
        c = self._cached_for(static)
        nan = np.nan
        # z-score statistics: per instrument with a fresh rate, while its settlements' version and
        # interval hold and no settlement left the window, the kept ones stand
        idx = np.flatnonzero(funding_ok)
        sts = [instruments[i] for i in idx.tolist()]
        version = np.fromiter(map(_settlements_version, sts), dtype=np.float64, count=len(sts))
        interval = cols["funding_interval_s"][idx]
        stale = ~((c.set_version[idx] == version) & (c.set_interval[idx] == interval) & (c.set_oldest[idx] > z_start))
        for k, j in enumerate(np.flatnonzero(stale).tolist()):
            if k and not k % _LOOKUPS_PER_YIELD:
                _yield_gil()
            i = int(idx[j])
            st, iv = instruments[i], intervals[i]
            # read the version before the data (see WindowCache); the interval is part of it, as
            # the window is rescaled to the current interval when an exchange changes it
            stats = cache.settlement_stats(keys[i], (int(version[j]), iv), _InInterval(st, iv), z_start)
            c.set_version[i], c.set_interval[i] = version[j], interval[j]
            c.set_oldest[i] = cache.settlement_oldest(keys[i])
            if stats is None:  # no settlement in the window: NaN, never enough observations
                c.set_stats[i] = (nan, nan, nan, nan)
            else:
                s_std, s_acc = stats.std, stats.acceleration
                c.set_stats[i] = (stats.n, stats.mean, nan if s_std is None else s_std, nan if s_acc is None else s_acc)
        stats_cols = np.full((n, 4), nan)
        stats_cols[idx] = c.set_stats[idx]
        stats_n = stats_cols[:, 0]
        mean, std, acc = stats_cols[:, 1], stats_cols[:, 2], stats_cols[:, 3]
        enough = funding_ok & (stats_n >= min_obs)  # NaN (no statistics) is never enough
        z_has = enough & ~np.isnan(std)
        rate = cols["funding_rate"]
        out = {
            "zscore": np.where(z_has, fa.zscore_columns(rate, mean, std), nan),
            "momentum": np.where(enough, fa.momentum_columns(rate, mean), nan),
            "acceleration": np.where(funding_ok, acc, nan),
        }
        present.update(zscore=z_has, momentum=enough, acceleration=funding_ok & ~np.isnan(acc))
        # anchors: while nothing arrived or left the window, the kept slopes stand (WindowCache.anchors);
        # the others are advanced together, over columns (AnchorColumns)
        idx = np.flatnonzero(funding_ok & premium_has)
        windows = [instruments[i].anchor_samples for i in idx.tolist()]
        ends = _ends(windows, first=False)
        anchor = c.anchor
        anc = np.full((n, 2), nan)
        anc_has = np.zeros((n, 2), dtype=bool)
        with anchor.lock:
            pub = anchor.published(idx)
            stale = ~(
                (pub[:, 0] <= anchor_start)
                & (anchor_start < pub[:, 1])
                & (pub[:, 2] == ends[:, 1])
                & (pub[:, 3] == ends[:, 0])
            )
            moved = np.flatnonzero(stale)
            for k in range(0, len(moved), _LOOKUPS_PER_YIELD):
                if k:
                    _yield_gil()
                block = moved[k : k + _LOOKUPS_PER_YIELD]
                storages = window_storage([windows[j] for j in block.tolist()])
                anchor.advance(idx[block], storages, ends[block, 0], anchor_start)
            anc[idx], anc_has[idx] = anchor.slopes[idx], anchor.has[idx]
        out.update(anchor_strength=anc[:, 0].copy(), anchor_difference=anc[:, 1].copy())
        present.update(anchor_strength=anc_has[:, 0], anchor_difference=anc_has[:, 1])
        oi1c, oi4c, vol1c, vol4c, vol_has = self._factor_columns(instruments, static, now, cols)
        for name, col, has in (
            ("oi_change_1h", oi1c, ~np.isnan(oi1c)),  # oi / then - 1 of finite values: NaN only when absent
            ("oi_change_4h", oi4c, ~np.isnan(oi4c)),
            ("volatility_1h", vol1c, vol_has[:, 0]),
            ("volatility_4h", vol4c, vol_has[:, 1]),
        ):
            out[name] = col
            present[name] = has
        return out

    def _factor_columns(
        self, instruments: list[InstrumentState], static: _Static, now: float, cols: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Open-interest change and volatility over 1 h and 4 h of every instrument, as columns.

        What each was last computed from is kept per instrument of the list (``_Cached``): the
        windows' ends (records, first and last time), the open-interest samples around each
        window's start, the minute and the minute in progress. A scrape compares those columns with
        the windows' ends now and asks :meth:`_oi_changes` / :meth:`_volatility` only for the
        instruments whose inputs moved; the open-interest change itself is computed over the
        columns from the sample each window's start picks (factors.oi_change_columns)."""
        c = self._cached_for(static)
        nan = np.nan
        keys = static.keys
        oi = cols["open_interest_usd"]
        idx = np.flatnonzero(~np.isnan(oi))
        ends = _ends([instruments[i].oi_samples for i in idx.tolist()])
        t1, t4 = now - _OI_WINDOWS[0], now - _OI_WINDOWS[1]
        b = c.oi_bounds[idx]
        valid = (
            (c.oi_ends[idx] == ends).all(axis=1) & (b[:, 0] <= t1) & (t1 < b[:, 1]) & (b[:, 2] <= t4) & (t4 < b[:, 3])
        )
        ois = oi.tolist()
        moved = np.flatnonzero(~valid)
        odd: list[int] = []
        for k in range(0, len(moved), _COLUMNS_BLOCK):
            if k and not k % _COLUMNS_YIELD:
                _yield_gil()
            block = moved[k : k + _COLUMNS_BLOCK]
            at = idx[block]
            bounds, then, out_of_order = _oi_columns([instruments[i] for i in at.tolist()], (t1, t4))
            c.oi_ends[at] = ends[block]
            c.oi_bounds[at] = bounds
            c.oi_then[at] = then
            odd.extend(block[out_of_order].tolist())
        for j in odd:  # a window out of order: searched as the reference searches it
            i = int(idx[j])
            self._oi_changes(instruments[i], ois[i], now)  # refreshes self._oi
            (lo1, hi1, ts1, vs1), (lo4, hi4, ts4, vs4) = self._oi[keys[i]][1]
            c.oi_ends[i] = ends[j]
            c.oi_bounds[i] = (lo1, hi1, lo4, hi4)
            c.oi_then[i] = (
                ts1[0] if ts1 else nan,
                vs1[0] if vs1 else nan,
                ts4[0] if ts4 else nan,
                vs4[0] if vs4 else nan,
            )
        then = np.full((len(instruments), 4), nan)
        then[idx] = c.oi_then[idx]
        oi1 = factors.oi_change_columns(then[:, 0], then[:, 1], oi, now, _OI_WINDOWS[0])
        oi4 = factors.oi_change_columns(then[:, 2], then[:, 3], oi, now, _OI_WINDOWS[1])
        mark = cols["mark_price"]
        idx = np.flatnonzero(~np.isnan(mark))
        sts = [instruments[i] for i in idx.tolist()]
        ends = _ends([st.mark_minutes for st in sts], first=False)
        sig = np.empty((len(idx), 4))
        sig[:, 0] = now // factors.MINUTE
        sig[:, 1:3] = ends
        sig[:, 3] = np.fromiter(map(_mark_minute, sts), dtype=np.float64, count=len(sts))
        moved = np.flatnonzero(~(c.vol_sig[idx] == sig).all(axis=1))
        for k in range(0, len(moved), _COLUMNS_BLOCK):
            if k and not k % _COLUMNS_YIELD:
                _yield_gil()
            block = moved[k : k + _COLUMNS_BLOCK]
            at = idx[block]
            vol_block = _volatility_columns([instruments[i] for i in at.tolist()], mark[at], now)
            c.vol_sig[at] = sig[block]
            c.vol[at] = vol_block
            c.vol_has[at] = ~np.isnan(vol_block)
        vol = np.full((len(instruments), 2), nan)
        vol_has = np.zeros((len(instruments), 2), dtype=bool)
        vol[idx], vol_has[idx] = c.vol[idx], c.vol_has[idx]
        return oi1, oi4, vol[:, 0].copy(), vol[:, 1].copy(), vol_has

    def _cached_for(self, static: _Static) -> _Cached:
        c = self._cached
        if c is None or c.static is not static:
            fresh = _Cached(static)
            if c is not None:  # the instruments still listed keep their anchors' running sums
                old = {key: i for i, key in enumerate(c.static.keys)}
                source = np.fromiter((old.get(key, -1) for key in static.keys), dtype=np.intp, count=len(static.keys))
                fresh.anchor.take(c.anchor, source)
            c = self._cached = fresh
        return c

    def _views_each(self, instruments: list[InstrumentState], now: float) -> list[InstrumentView]:
        """The views built instrument by instrument: the reference for the bulk path, and its
        fallback when something in it raises (one instrument's failure then costs only its values)."""
        state = self.state
        cfg = self.config
        an = cfg.analytics
        z_start = now - an.zscore_window_seconds
        anchor_start = now - an.anchor_window_seconds
        min_obs = an.zscore_min_observations
        hold_h = an.holding_period_hours
        limits = self._limits(now)
        out: list[InstrumentView] = []
        cache = self.cache
        errors = self.errors
        for i, st in enumerate(instruments):
            if i and not i % YIELD_EVERY_INSTRUMENTS:
                _yield_gil()
            try:
                info = st.info
                price_cut, funding_cut, oi_cut, ratio_cut, fee_bp = limits[info.exchange]
                # each stored value read once (they are properties over the state's columns)
                price_at, funding_at, oi_at, ratio_at = st.price_at, st.funding_at, st.oi_at, st.ratio_at
                price_ok = price_at > 0.0 and price_at >= price_cut
                nft = st.next_funding_time
                stored_rate = st.funding_rate
                # a next settlement time in the past: the rate shown would be the one already settled
                funding_ok = (
                    funding_at > 0.0
                    and funding_at >= funding_cut
                    and stored_rate is not None
                    and (nft is None or nft >= now - NEXT_FUNDING_GRACE_S)
                )
                oi_ok = oi_at > 0.0 and oi_at >= oi_cut
                ratio_ok = ratio_at > 0.0 and ratio_at >= ratio_cut
                # Deribit funds continuously; its rate is the 8 h equivalent, so its interval is 8 h by
                # definition (never the 1 h spacing of the observations state keeps for the z-score).
                interval = EIGHT_HOURS if info.exchange is Exchange.DERIBIT else st.interval_s
                mark = st.mark_price if price_ok else None
                index = st.index_price if price_ok else None
                premium = state.premium_of(st) if price_ok else None
                rate = stored_rate if funding_ok else None
                r8 = ann = z = mom = acc = edge = anchor = anchor_d = None
                side = None
                if rate is not None:
                    # read the version before the data (see WindowCache); the interval is part of it, as
                    # the window is rescaled to the current interval when an exchange changes it
                    version = (st.settlements_version, interval)
                    stats = cache.settlement_stats(st.key, version, _InInterval(st, interval), z_start)
                    z = fa.zscore(rate, stats, min_obs)
                    mom = fa.momentum(rate, stats, min_obs)
                    acc = stats.acceleration if stats is not None else None
                    if interval:
                        r8 = fa.rate_8h(rate, interval)
                        ann = fa.annualize(rate, interval)
                        side = fa.receiving_side(rate)
                        edge = fa.edge_bp(rate, interval, fee_bp, hold_h)
                    if premium is not None:
                        anchor, anchor_d = cache.anchors(st.key, st, anchor_start)
                oi = st.open_interest_usd if oi_ok else None
                oi1 = oi4 = vol1 = vol4 = None
                if oi is not None:
                    oi1, oi4 = self._oi_changes(st, oi, now)
                if mark is not None:
                    vol1, vol4 = self._volatility(st, now, mark)
                view = InstrumentView(
                    st=st,
                    stale=not (price_ok and funding_ok),
                    mark_price=mark,
                    index_price=index,
                    premium_ratio=premium,
                    funding_rate=rate,
                    funding_interval_s=interval,
                    funding_rate_8h=r8,
                    funding_rate_annualized=ann,
                    next_funding_timestamp=nft if rate is not None else None,
                    funding_cap=st.funding_cap,
                    funding_floor=st.funding_floor,
                    open_interest_usd=oi,
                    long_short_ratio=st.long_short_ratio if ratio_ok else None,
                    zscore=z,
                    momentum=mom,
                    acceleration=acc,
                    edge_side=side,
                    edge_bp=edge,
                    anchor_strength=anchor,
                    anchor_difference=anchor_d,
                    fee_bp=fee_bp,
                    oi_change_1h=oi1,
                    oi_change_4h=oi4,
                    volatility_1h=vol1,
                    volatility_4h=vol4,
                )
                if not _finite(view):
                    view = _without_non_finite(view)
                    errors.count("market")
            except Exception:
                # One instrument whose figures cannot be built loses its values for this scrape;
                # every other instrument, and the endpoint, carry on.
                errors.count("market")
                log.warning("%s %s: view failed; left out", st.info.exchange, st.info.instrument, exc_info=True)
                continue
            out.append(view)
        return out

    def _oi_changes(self, st: InstrumentState, oi: float, now: float) -> tuple[float | None, float | None]:
        """Open-interest change over 1 h and 4 h (analytics.factors.oi_change) from the sample at or
        before each window's start. The samples around those starts are kept per instrument while
        the window holds the same samples (count, first and last time) and each start stays between
        the same two samples: a scrape then reads no copy of the window (2.9 KB an instrument, 23 MB
        a scrape at 8,000 instruments, more than the caches hold). The figure is computed by the same
        function, from the one sample it would pick."""
        w = st.oi_samples
        n = len(w)
        version = (n, w[-n][0] if n else 0.0, w.last_time() or 0.0)
        key = st.key
        hit = self._oi.get(key)
        targets = (now - _OI_WINDOWS[0], now - _OI_WINDOWS[1])
        if (
            hit is None
            or hit[0] != version
            or not (hit[1][0][0] <= targets[0] < hit[1][0][1] and hit[1][1][0] <= targets[1] < hit[1][1][1])
        ):
            raw = w.raw()  # one consistent copy (the event loop may append meanwhile)
            ts, vs = raw[0::2], raw[1::2]
            around = []
            for t in targets:
                i = bisect_right(ts, t) - 1
                lo = ts[i] if i >= 0 else -math.inf
                hi = ts[i + 1] if i + 1 < len(ts) else math.inf
                around.append((lo, hi, ts[i : i + 1] if i >= 0 else ts[:0], vs[i : i + 1] if i >= 0 else vs[:0]))
            n = len(ts)
            hit = self._oi[key] = ((n, ts[0] if n else 0.0, ts[-1] if n else 0.0), tuple(around))
        (_, _, t1, v1), (_, _, t4, v4) = hit[1]
        return (
            factors.oi_change(t1, v1, oi, now, _OI_WINDOWS[0]),
            factors.oi_change(t4, v4, oi, now, _OI_WINDOWS[1]),
        )

    def _volatility(self, st: InstrumentState, now: float, mark: float) -> tuple[float | None, float | None]:
        """Realised volatility of the mark over the 1 h and 4 h windows (analytics.factors), cached
        until a minute closes or the window's content changes (a backfill): one lookup for both."""
        w = st.mark_minutes
        cur = st.mark_minute
        version = (now // factors.MINUTE, float(len(w)), w.last_time() or 0.0, cur)
        key = st.key
        hit = self._vol.get(key)
        if hit is not None and hit[0] == version:
            return hit[1], hit[2]
        raw = w.raw()
        times, closes = list(raw[0::2]), list(raw[1::2])
        if cur >= 0.0 and (not times or cur > times[-1]):
            times.append(cur)  # the minute in progress: its close so far; complete once it has passed
            closes.append(mark)
        vol1 = factors.realized_volatility(times, closes, now, factors.VOLATILITY_WINDOWS["1h"])
        vol4 = factors.realized_volatility(times, closes, now, factors.VOLATILITY_WINDOWS["4h"])
        self._vol[key] = (version, vol1, vol4)
        return vol1, vol4

    def futures(self, now: float | None = None, perps: list[InstrumentView] | None = None) -> list[FutureView]:
        """The dated futures that have not expired; expired ones are left out at once (the instrument
        list refresh then drops them from state and brings their successors)."""
        state = self.state
        futures = sorted(list(state.futures.values()), key=lambda f: f.key)
        if not futures:
            return []  # no index of every perpetual built for nothing (8,000 of them sorted per scrape)
        now = state.clock() if now is None else now
        perps = self.current_views() if perps is None else perps
        ref = _reference(perps)
        out: list[FutureView] = []
        for fs in futures:
            info = fs.info
            expiry = info.expiry
            if expiry is None or expiry <= now:
                continue
            ex_cfg = self.config.exchanges.get(info.exchange)
            limit = ex_cfg.stale.price_seconds if ex_cfg is not None else 30.0
            fresh = fs.price_at > 0.0 and now - fs.price_at <= limit
            mark = fs.mark_price if fresh else None
            candidates = ref.get((info.exchange, info.base), [])
            index = fs.index_price if fresh and fs.index_price else _pick(candidates, info.quote, "index_price")
            actual = _pick(candidates, info.quote, "funding_rate_8h")
            days = term.days_to_expiry(expiry, now)
            basis = term.basis_ratio(mark, index) if mark is not None and index is not None else None
            ann = implied = diff = None
            if basis is not None:
                ann = term.annualized_basis(basis, days)
                implied = term.implied_funding_8h(basis, days)
                if implied is not None and actual is not None:
                    diff = term.implied_minus_actual_bp(implied, actual)
            out.append(
                FutureView(
                    st=fs,
                    expiry=expiry,
                    expiry_date=expiry_date(expiry),
                    days_to_expiry=days,
                    mark_price=mark,
                    index_price=index,
                    basis_ratio=basis,
                    basis_annualized=ann,
                    implied_funding_8h=implied,
                    actual_funding_8h=actual,
                    implied_minus_actual_bp=diff,
                    estimated_settle_price=fs.settle_estimate
                    if mark is not None and expiry - now <= term.SETTLE_WINDOW_SECONDS
                    else None,
                )
            )
        return out

    def funding_columns(self, views: ViewTable | Sequence[InstrumentView]) -> FundingColumns:
        """The cross-exchange inputs as columns: the instruments with a fresh 8 h rate."""
        if not isinstance(views, ViewTable):
            return FundingColumns.from_points(self.funding_points(views))
        cols, static = views.cols, views.static or _Static(views.infos)
        r8 = cols["funding_rate_8h"]
        has = ~np.isnan(r8)
        bases, base_codes, exchanges, exchange_codes = static.name_codes()
        return FundingColumns(
            bases,
            exchanges,
            base_codes[has],
            exchange_codes[has],
            r8[has],
            cols["open_interest_usd"][has],
            cols["fee_bp"][has],
        )

    def funding_points(self, views: ViewTable | Iterable[InstrumentView]) -> list[FundingPoint]:
        """The cross-exchange inputs: instruments with a fresh 8 h rate."""
        if isinstance(views, ViewTable):
            cols, static = views.cols, views.static or _Static(views.infos)
            r8 = cols["funding_rate_8h"]
            has = ~np.isnan(r8)
            keep = has.tolist()
            oi = cols["open_interest_usd"][has]
            oi_or_none = oi.astype(object)
            oi_or_none[np.isnan(oi)] = None  # unknown or stale
            # the labels' strings from the instrument list's static facts, the values in C
            return list(
                map(
                    FundingPoint._make,
                    zip(
                        compress(static.bases, keep),
                        compress(static.exchange_values, keep),
                        compress(static.instruments, keep),
                        r8[has].tolist(),
                        oi_or_none.tolist(),
                        cols["fee_bp"][has].tolist(),
                        strict=True,
                    ),
                )
            )
        return [
            FundingPoint(
                v.st.info.base,
                v.st.info.exchange.value,
                v.st.info.instrument,
                v.funding_rate_8h,
                v.open_interest_usd,
                v.fee_bp,
            )
            for v in views
            if v.funding_rate_8h is not None
        ]

    def exchange_up(self, exchange: Exchange, now: float) -> bool:
        return exchange_up(self.config, self.state, exchange, now)

    def insurance(self, now: float) -> list[tuple[Exchange, str, float]]:
        return fresh_insurance(self.config, self.state, now)


def exchange_up(config: Config, state: MarketState, exchange: Exchange, now: float) -> bool:
    """At least one connected stream of the exchange parsed a data message within
    ``stale.stream_seconds`` (a flood of garbage or of pongs alone does not count)."""
    ex_cfg = config.exchanges.get(exchange)
    limit = ex_cfg.stale.stream_seconds if ex_cfg is not None else 30.0
    return any(
        h.exchange == exchange and h.connected and h.last_parsed_at > 0.0 and now - h.last_parsed_at <= limit
        for h in list(state.streams.values())
    )


def fresh_insurance(config: Config, state: MarketState, now: float) -> list[tuple[Exchange, str, float]]:
    """(exchange, pool, balance_usd) of the insurance funds within their staleness limit, sorted."""
    out = []
    cfg = config.exchanges
    for (ex, pool), (balance, at) in sorted(list(state.insurance.items())):
        ex_cfg = cfg.get(ex)
        limit = ex_cfg.stale.insurance_fund_seconds if ex_cfg is not None else 7200.0
        if at > 0.0 and now - at <= limit:
            out.append((ex, pool, balance))
    return out


def oi_change_1h(st: InstrumentState, oi_usd: float | None, now: float) -> float | None:
    """Relative change of open interest over the last hour (analytics.factors.oi_change: the sample at
    or before one hour ago, none within 10 min of it: None); the same figure as fr_open_interest_change_ratio."""
    if oi_usd is None:
        return None
    raw = st.oi_samples.raw()
    return factors.oi_change(raw[0::2], raw[1::2], oi_usd, now, factors.OI_CHANGE_WINDOWS["1h"])


def liquidations_since(st: InstrumentState, since: float) -> dict[str, dict[str, float]]:
    """Liquidation count and USD notional per side after ``since`` (from the 1 h flow window)."""
    long_: dict[str, float] = {"count": 0, "notional_usd": 0.0}
    short_: dict[str, float] = {"count": 0, "notional_usd": 0.0}
    # A full pass: event times from the exchange are not guaranteed to arrive in order.
    for liq in tuple(st.liq_recent):
        if liq.event_time < since:
            continue
        d = long_ if liq.side is Side.LONG else short_
        d["count"] += 1
        d["notional_usd"] += liq.notional_usd
    return {"long": long_, "short": short_}


def liquidation_totals(st: InstrumentState) -> dict[str, dict[str, float]]:
    """Liquidation count and USD notional per side since the exporter started."""
    return {
        "long": {"count": st.liq_long_count, "notional_usd": st.liq_long_usd},
        "short": {"count": st.liq_short_count, "notional_usd": st.liq_short_usd},
    }


def ages(st: InstrumentState, now: float) -> dict[str, float | None]:
    """Seconds since each group of values was received (None: never), stale or not."""
    return {
        "price": now - st.price_at if st.price_at else None,
        "funding": now - st.funding_at if st.funding_at else None,
        "open_interest": now - st.oi_at if st.oi_at else None,
        "long_short_ratio": now - st.ratio_at if st.ratio_at else None,
    }


def futures_by_exchange(futures: Iterable[FutureView], now: float) -> dict[str, list[dict[str, Any]]]:
    """The /api/state ``futures`` block: per exchange, its dated contracts by expiry. What /metrics
    leaves out is null here (a stale price and what derives from it; the annualised figures under a
    day to expiry), never an old number."""
    out: dict[str, list[dict[str, Any]]] = {}
    for v in sorted(futures, key=lambda v: (v.expiry, v.st.info.instrument)):
        info = v.st.info
        out.setdefault(info.exchange.value, []).append(
            {
                "instrument": info.instrument,
                "base": info.base,
                "quote": info.quote,
                "inverse": info.inverse,
                "stale": v.mark_price is None,
                "expiry": datetime.fromtimestamp(v.expiry, tz=UTC).isoformat().replace("+00:00", "Z"),
                "expiry_timestamp": v.expiry,
                "days_to_expiry": v.days_to_expiry,
                "mark_price": v.mark_price,
                "index_price": v.index_price,
                "estimated_settle_price": v.estimated_settle_price,
                "basis_ratio": v.basis_ratio,
                "basis_annualized": v.basis_annualized,
                "implied_funding_rate_8h": v.implied_funding_8h,
                "actual_funding_rate_8h": v.actual_funding_8h,
                "implied_minus_actual_bp": v.implied_minus_actual_bp,
                "price_age_seconds": now - v.st.price_at if v.st.price_at else None,
            }
        )
    return dict(sorted(out.items()))
