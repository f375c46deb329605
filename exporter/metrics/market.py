"""Market and cross-exchange collectors over a state snapshot.

:class:`MarketAnalytics` turns the live :class:`~exporter.state.MarketState` into one
:class:`InstrumentView` per instrument at scrape time: stale values become ``None`` (so their series
disappear) and the derived values are computed from the fresh ones only. The collectors and
``/api/state`` both read these views, so the two can never disagree. Nothing here writes to state.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from prometheus_client.core import Metric

from exporter.analytics import funding as fa
from exporter.analytics.cross import FundingPoint, funding_spreads, oi_weighted_funding
from exporter.config import Config
from exporter.metrics import catalog as m
from exporter.metrics.exposition import Family, LabelSet, Spec, yield_gil
from exporter.model import EIGHT_HOURS, Exchange, InstrumentInfo, Side
from exporter.state import InstrumentState, Key, MarketState


def _window_text(seconds: float) -> str:
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


class _InInterval:
    """An instrument's settlement window with every rate expressed per ``interval`` (see state)."""

    __slots__ = ("interval", "st")

    def __init__(self, st: InstrumentState, interval: float | None) -> None:
        self.st = st
        self.interval = interval

    def settlement_window(self) -> tuple[tuple[float, float], ...]:
        return self.st.settlement_window_in(self.interval)


@dataclass(slots=True)
class InstrumentView:
    """One instrument at one scrape. ``None``: unknown, stale, or not computable from fresh inputs."""

    st: InstrumentState
    labels: LabelSet
    side_labels: dict[str, LabelSet]
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
    anchor_strength: float | None
    fee_bp: float


class MarketAnalytics:
    """Builds :class:`InstrumentView` lists; owns the label and window caches shared by scrapes."""

    def __init__(self, config: Config, state: MarketState) -> None:
        self.config = config
        self.state = state
        self.cache = fa.WindowCache()
        self._labels: dict[Key, tuple[InstrumentInfo, LabelSet, dict[str, LabelSet]]] = {}
        self._scrapes = 0
        self._tls = threading.local()

    @contextmanager
    def scrape(self) -> Iterator[None]:
        """Within this scope (one scrape, one thread) every collector shares one list of views."""
        tls = self._tls
        depth = getattr(tls, "depth", 0)
        tls.depth = depth + 1
        try:
            yield
        finally:
            tls.depth = depth
            if depth == 0:
                tls.views = None

    def current_views(self) -> list[InstrumentView]:
        tls = self._tls
        if not getattr(tls, "depth", 0):
            return self.views()
        views = getattr(tls, "views", None)
        if views is None:
            views = tls.views = self.views()
        return views

    def labels_of(self, st: InstrumentState) -> tuple[LabelSet, dict[str, LabelSet]]:
        hit = self._labels.get(st.key)
        info = st.info
        if hit is not None and (hit[0] is info or hit[0] == info):
            return hit[1], hit[2]
        base = LabelSet(
            [
                ("exchange", info.exchange.value),
                ("instrument", info.instrument),
                ("base", info.base),
                ("quote", info.quote),
            ]
        )
        sides = {s.value: base.with_(side=s.value) for s in Side}
        self._labels[st.key] = (info, base, sides)
        return base, sides

    def views(self, now: float | None = None) -> list[InstrumentView]:
        state = self.state
        now = state.clock() if now is None else now
        cfg = self.config
        an = cfg.analytics
        z_start = now - an.zscore_window_seconds
        anchor_start = now - an.anchor_window_seconds
        min_obs = an.zscore_min_observations
        hold_h = an.holding_period_hours
        limits = {}
        for ex, ex_cfg in cfg.exchanges.items():
            s = ex_cfg.stale
            fee = ex_cfg.fees.taker_bp if an.fee_kind == "taker" else ex_cfg.fees.maker_bp
            limits[ex] = (
                now - s.price_seconds,
                now - s.funding_seconds,
                now - s.open_interest_seconds,
                now - s.long_short_ratio_seconds,
                fee,
            )
        instruments = state.snapshot()
        out: list[InstrumentView] = []
        cache = self.cache
        for i, st in enumerate(instruments):
            if i and not i % 500:
                yield_gil()
            info = st.info
            price_cut, funding_cut, oi_cut, ratio_cut, fee_bp = limits[info.exchange]
            labels, sides = self.labels_of(st)
            price_ok = st.price_at > 0.0 and st.price_at >= price_cut
            funding_ok = st.funding_at > 0.0 and st.funding_at >= funding_cut and st.funding_rate is not None
            oi_ok = st.oi_at > 0.0 and st.oi_at >= oi_cut
            ratio_ok = st.ratio_at > 0.0 and st.ratio_at >= ratio_cut
            # Deribit funds continuously; its rate is the 8 h equivalent, so its interval is 8 h by
            # definition (never the 1 h spacing of the observations state keeps for the z-score).
            interval = EIGHT_HOURS if info.exchange is Exchange.DERIBIT else st.interval_s
            mark = st.mark_price if price_ok else None
            index = st.index_price if price_ok else None
            premium = state.premium_of(st) if price_ok else None
            rate = st.funding_rate if funding_ok else None
            r8 = ann = z = mom = acc = edge = anchor = None
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
                    anchor = cache.anchor(st.key, st, anchor_start)
            oi = st.open_interest_usd if oi_ok else None
            out.append(
                InstrumentView(
                    st=st,
                    labels=labels,
                    side_labels=sides,
                    stale=not (price_ok and funding_ok),
                    mark_price=mark,
                    index_price=index,
                    premium_ratio=premium,
                    funding_rate=rate,
                    funding_interval_s=interval,
                    funding_rate_8h=r8,
                    funding_rate_annualized=ann,
                    next_funding_timestamp=st.next_funding_time if rate is not None else None,
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
                    fee_bp=fee_bp,
                )
            )
        self._scrapes += 1
        if self._scrapes % 100 == 0 or len(self._labels) > len(instruments) + 64:
            # Instruments delisted from state: drop their cached labels and windows (bounded memory).
            live: set[Hashable] = {st.key for st in instruments}
            self.cache.forget(live)
            for k in [k for k in list(self._labels) if k not in live]:  # list(): other scrapes may insert
                self._labels.pop(k, None)
        return out

    def funding_points(self, views: Iterable[InstrumentView]) -> list[FundingPoint]:
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


def oi_change_1h(st: InstrumentState, oi_usd: float | None, now: float) -> float | None:
    """Relative change of open interest since the sample nearest one hour ago (none within 10 min of it: None)."""
    if oi_usd is None:
        return None
    samples = tuple(st.oi_samples)  # time-ordered
    if len(samples) < 2:
        return None
    target = now - 3600.0
    i = bisect_left(samples, (target,))
    best = min(samples[max(0, i - 1) : i + 1], key=lambda s: abs(s[0] - target))
    if abs(best[0] - target) > 600.0 or not best[1]:
        return None
    return oi_usd / best[1] - 1.0


def liquidations_since(st: InstrumentState, since: float) -> dict[str, dict[str, float]]:
    """Liquidation count and USD notional per side after ``since`` (from the 1 h flow window)."""
    long_: dict[str, float] = {"count": 0, "notional_usd": 0.0}
    short_: dict[str, float] = {"count": 0, "notional_usd": 0.0}
    # A full pass: event times from the exchange are not guaranteed to arrive in order.
    for t, side, usd in tuple(st.liq_recent):
        if t < since:
            continue
        d = long_ if side is Side.LONG else short_
        d["count"] += 1
        d["notional_usd"] += usd
    return {"long": long_, "short": short_}


class MarketCollector:
    """Per exchange x instrument series (labels exchange, instrument, base, quote).

    # HELP fr_funding_rate Current (predicted, next-settlement) funding rate ...
    # TYPE fr_funding_rate gauge
    fr_funding_rate{base="BTC",exchange="binance",instrument="BTCUSDT",quote="USDT"} 0.0001
    # HELP fr_funding_interval_seconds ...
    # TYPE fr_funding_interval_seconds gauge
    fr_funding_interval_seconds{base="BTC",exchange="binance",instrument="BTCUSDT",quote="USDT"} 28800.0
    ... fr_funding_rate_annualized_ratio, fr_next_funding_timestamp_seconds, fr_funding_cap_ratio,
    fr_funding_floor_ratio, fr_mark_price, fr_index_price, fr_premium_ratio, fr_open_interest_usd,
    fr_long_short_account_ratio, fr_funding_zscore, fr_funding_momentum, fr_funding_acceleration,
    fr_effective_anchor_strength (same labels), then
    fr_edge_bp{base="BTC",exchange="binance",instrument="BTCUSDT",quote="USDT",side="short"} 0.58
    fr_liquidations_total{base="BTC",exchange="binance",instrument="BTCUSDT",quote="USDT",side="long"} 3.0
    fr_liquidated_notional_usd_total{...,side="long"} 150000.0
    fr_insurance_fund_balance_usd{exchange="binance",pool="USDT"} 1.2e+09

    A stale value's series is absent, and so are the values derived from it.
    """

    def __init__(self, analytics: MarketAnalytics) -> None:
        self.analytics = analytics
        cfg = analytics.config
        an = cfg.analytics
        zw = _window_text(an.zscore_window_seconds)
        aw = _window_text(an.anchor_window_seconds)
        self.s_rate = m.FUNDING_RATE.spec()
        self.s_interval = m.FUNDING_INTERVAL.spec()
        self.s_ann = m.FUNDING_RATE_ANNUALIZED.spec()
        self.s_next = m.NEXT_FUNDING_TIMESTAMP.spec()
        self.s_cap = m.FUNDING_CAP.spec()
        self.s_floor = m.FUNDING_FLOOR.spec()
        self.s_mark = m.MARK_PRICE.spec()
        self.s_index = m.INDEX_PRICE.spec()
        self.s_premium = m.PREMIUM.spec()
        self.s_oi = m.OPEN_INTEREST.spec()
        self.s_ls = m.LONG_SHORT_RATIO.spec()
        self.s_z = m.FUNDING_ZSCORE.spec(window=zw, min_observations=an.zscore_min_observations)
        self.s_mom = m.FUNDING_MOMENTUM.spec(window=zw)
        self.s_acc = m.FUNDING_ACCELERATION.spec(window=zw)
        self.s_edge = m.EDGE.spec(fee_kind=an.fee_kind, holding_hours=f"{an.holding_period_hours:g}")
        self.s_anchor = m.ANCHOR_STRENGTH.spec(window=aw)
        self.s_liq = m.LIQUIDATIONS.spec()
        self.s_liq_usd = m.LIQUIDATED_NOTIONAL.spec()
        self.s_ins = m.INSURANCE_FUND.spec()
        self._ins_labels: dict[tuple[str, str], LabelSet] = {}

    def families(self, views: Sequence[InstrumentView] | None = None) -> list[Family]:
        if views is None:
            views = self.analytics.current_views()
        # One comprehension per family: a C-speed loop each, instead of 2,000 Python iterations of
        # twenty branches. Values must be floats for the renderer's repr() fast path. (`x or 0.0`
        # where x was filtered to be not None only tells the type checker so: 0.0 stays 0.0.)
        fresh = [v for v in views if v.funding_rate is not None]
        fams: list[Family] = []

        def fam(spec: Spec, sel: list[InstrumentView], values: list[Any]) -> None:
            fams.append(spec.family([v.labels for v in sel], values))
            yield_gil()

        def present(spec: Spec, source: Sequence[InstrumentView], get: Callable[[InstrumentView], Any]) -> None:
            """The family of one optional value: only the instruments that have it."""
            pairs = [(v.labels, x) for v in source if (x := get(v)) is not None]
            fams.append(spec.family([lb for lb, _ in pairs], [float(x) for _, x in pairs]))
            yield_gil()

        fam(self.s_rate, fresh, [v.funding_rate for v in fresh])
        sel = [v for v in views if v.funding_interval_s]
        fam(self.s_interval, sel, [float(v.funding_interval_s or 0.0) for v in sel])
        for spec, source, attr in (
            (self.s_ann, fresh, "funding_rate_annualized"),
            (self.s_next, fresh, "next_funding_timestamp"),
            (self.s_cap, views, "funding_cap"),
            (self.s_floor, views, "funding_floor"),
            (self.s_mark, views, "mark_price"),
            (self.s_index, views, "index_price"),
            (self.s_premium, views, "premium_ratio"),
            (self.s_oi, views, "open_interest_usd"),
            (self.s_ls, views, "long_short_ratio"),
            (self.s_z, fresh, "zscore"),
            (self.s_mom, fresh, "momentum"),
            (self.s_acc, fresh, "acceleration"),
        ):
            present(spec, source, attrgetter(attr))
        sel = [v for v in fresh if v.edge_bp is not None and v.edge_side is not None]
        fams.append(
            self.s_edge.family([v.side_labels[v.edge_side or "short"] for v in sel], [v.edge_bp or 0.0 for v in sel])
        )
        present(self.s_anchor, fresh, attrgetter("anchor_strength"))
        # Counters are always present (0 before the first liquidation) so rate() works from the start.
        side_labels = [lb for v in views for lb in (v.side_labels["long"], v.side_labels["short"])]
        long_, short_ = Side.LONG, Side.SHORT
        counts = [(v.st.liq_count, v.st.liq_notional_usd) for v in views]
        fams.append(self.s_liq.family(side_labels, [float(c.get(s, 0)) for c, _ in counts for s in (long_, short_)]))
        fams.append(
            self.s_liq_usd.family(list(side_labels), [float(n.get(s, 0.0)) for _, n in counts for s in (long_, short_)])
        )
        f_ins = self.s_ins.family()
        state = self.analytics.state
        now = state.clock()
        cfg = self.analytics.config.exchanges
        for (ex, pool), (balance, at) in sorted(list(state.insurance.items())):
            ex_cfg = cfg.get(ex)
            limit = ex_cfg.stale.insurance_fund_seconds if ex_cfg is not None else 7200.0
            if at > 0.0 and now - at <= limit:
                lbl = self._ins_labels.get((ex, pool))
                if lbl is None:
                    lbl = self._ins_labels[(ex, pool)] = LabelSet([("exchange", ex.value), ("pool", pool)])
                f_ins.add(lbl, balance)
        fams.append(f_ins)
        return fams

    def collect(self) -> Iterable[Metric]:
        for fam in self.families():
            yield fam.to_metric_family()


class CrossCollector:
    """Per base asset, across exchanges.

    # HELP fr_oi_weighted_funding_rate Open-interest-weighted funding rate ...
    # TYPE fr_oi_weighted_funding_rate gauge
    fr_oi_weighted_funding_rate{base="BTC"} 0.00012
    # HELP fr_funding_spread_bp Funding earned per 8 h by shorting ...
    # TYPE fr_funding_spread_bp gauge
    fr_funding_spread_bp{base="BTC",long_exchange="okx",short_exchange="binance"} 1.7
    """

    def __init__(self, analytics: MarketAnalytics) -> None:
        self.analytics = analytics
        an = analytics.config.analytics
        self.s_oiw = m.OI_WEIGHTED_FUNDING.spec()
        self.s_spread = m.FUNDING_SPREAD.spec(
            holding_hours=f"{an.holding_period_hours:g}", fee_kind=an.fee_kind, top_n=an.spread_top_n
        )
        self._labels: dict[tuple[str, ...], LabelSet] = {}

    def _label(self, *pairs: tuple[str, str]) -> LabelSet:
        key = tuple(v for _, v in pairs)
        lbl = self._labels.get(key)
        if lbl is None:
            if len(self._labels) > 10000:  # bases come and go with all_perpetuals: keep the cache bounded
                self._labels.clear()
            lbl = self._labels[key] = LabelSet(pairs)
        return lbl

    def families(self, views: Sequence[InstrumentView] | None = None) -> list[Family]:
        an = self.analytics
        if views is None:
            views = an.current_views()
        points = an.funding_points(views)
        f_oiw, f_spread = self.s_oiw.family(), self.s_spread.family()
        for base, rate in sorted(oi_weighted_funding(points).items()):
            f_oiw.add(self._label(("base", base)), rate)
        cfg = an.config.analytics
        for s in funding_spreads(points, cfg.holding_period_hours, cfg.spread_top_n):
            f_spread.add(
                self._label(("base", s.base), ("long_exchange", s.long_exchange), ("short_exchange", s.short_exchange)),
                s.net_bp,
            )
        return [f_oiw, f_spread]

    def collect(self) -> Iterable[Metric]:
        for fam in self.families():
            yield fam.to_metric_family()
