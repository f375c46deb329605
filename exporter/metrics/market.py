"""Market and cross-exchange collectors: readers of the view layer.

Every value comes from :class:`~exporter.views.MarketViews` (the same views /api/state reads);
these collectors only give them names and labels. Nothing here writes to state or computes a value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any

from prometheus_client.core import Metric

from exporter.analytics.cross import FundingPoint, funding_spreads, oi_weighted_funding
from exporter.metrics import catalog as m
from exporter.metrics.exposition import Family, LabelSet, Spec, yield_gil
from exporter.model import InstrumentInfo, Side
from exporter.state import InstrumentState, Key
from exporter.views import InstrumentView, MarketViews

# One instrument's label sets: the plain one and one per side (fr_edge_bp, liquidation counters).
Labels = tuple[LabelSet, dict[str, LabelSet]]
Row = tuple[LabelSet, dict[str, LabelSet], InstrumentView]


def _window_text(seconds: float) -> str:
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


log = logging.getLogger(__name__)


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
    then
    fr_effective_anchor_strength{base="BTC",exchange="binance",instrument="BTCUSDT",method="level",quote="USDT"} 0.9
    fr_effective_anchor_strength{...,method="difference"} 0.7
    fr_edge_bp{base="BTC",exchange="binance",instrument="BTCUSDT",quote="USDT",side="short"} 0.58
    fr_liquidations_total{base="BTC",exchange="binance",instrument="BTCUSDT",quote="USDT",side="long"} 3.0
    fr_liquidated_notional_usd_total{...,side="long"} 150000.0
    fr_insurance_fund_balance_usd{exchange="binance",pool="USDT"} 1.2e+09

    A stale value's series is absent, and so are the values derived from it.
    """

    def __init__(self, views: MarketViews) -> None:
        self.views = views
        cfg = views.config
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
        self.s_oi_change = m.OPEN_INTEREST_CHANGE.spec()
        self.s_vol = m.PRICE_VOLATILITY.spec()
        # the `window` label sets per instrument base label set (same lifetime as _labels)
        self._window_labels: dict[Key, tuple[LabelSet, LabelSet, LabelSet]] = {}
        self.s_liq = m.LIQUIDATIONS.spec()
        self.s_liq_usd = m.LIQUIDATED_NOTIONAL.spec()
        self.s_ins = m.INSURANCE_FUND.spec()
        self._ins_labels: dict[tuple[str, str], LabelSet] = {}
        self._labels: dict[Key, tuple[InstrumentInfo, LabelSet, dict[str, LabelSet]]] = {}
        # the anchor's method label sets, per instrument base label set (same lifetime as _labels)
        self._method_labels: dict[Key, tuple[LabelSet, LabelSet, LabelSet]] = {}
        self._calls = 0

    def labels_of(self, st: InstrumentState) -> Labels:
        """The instrument's label sets, rendered once and reused while its static facts hold."""
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

    def _rows(self, views: Sequence[InstrumentView]) -> list[Row]:
        labels_of = self.labels_of
        rows = [(*labels_of(v.st), v) for v in views]
        self._calls += 1
        if self._calls % 100 == 0 or len(self._labels) > len(views) + 64:
            # Instruments delisted from state: drop their cached labels (bounded memory).
            live = {v.st.key for v in views}
            for k in [k for k in list(self._labels) if k not in live]:  # list(): other scrapes may insert
                self._labels.pop(k, None)
                self._method_labels.pop(k, None)
                self._window_labels.pop(k, None)
        return rows

    def families(self, views: Sequence[InstrumentView] | None = None) -> list[Family]:
        if views is None:
            views = self.views.current_views()
        rows = self._rows(views)
        # One comprehension per family: a C-speed loop each, instead of 2,000 Python iterations of
        # twenty branches. Values must be floats for the renderer's repr() fast path. (`x or 0.0`
        # where x was filtered to be not None only tells the type checker so: 0.0 stays 0.0.)
        fresh = [r for r in rows if r[2].funding_rate is not None]
        fams: list[Family] = []

        def present(spec: Spec, source: Sequence[Row], get: Callable[[InstrumentView], Any]) -> None:
            """The family of one optional value: only the instruments that have it."""
            pairs = [(lb, x) for lb, _, v in source if (x := get(v)) is not None]
            fams.append(spec.family([lb for lb, _ in pairs], [float(x) for _, x in pairs]))
            yield_gil()

        fams.append(self.s_rate.family([lb for lb, _, _ in fresh], [v.funding_rate or 0.0 for _, _, v in fresh]))
        yield_gil()
        sel = [r for r in rows if r[2].funding_interval_s]
        fams.append(
            self.s_interval.family([lb for lb, _, _ in sel], [float(v.funding_interval_s or 0.0) for _, _, v in sel])
        )
        yield_gil()
        for spec, source, attr in (
            (self.s_ann, fresh, "funding_rate_annualized"),
            (self.s_next, fresh, "next_funding_timestamp"),
            (self.s_cap, rows, "funding_cap"),
            (self.s_floor, rows, "funding_floor"),
            (self.s_mark, rows, "mark_price"),
            (self.s_index, rows, "index_price"),
            (self.s_premium, rows, "premium_ratio"),
            (self.s_oi, rows, "open_interest_usd"),
            (self.s_ls, rows, "long_short_ratio"),
            (self.s_z, fresh, "zscore"),
            (self.s_mom, fresh, "momentum"),
            (self.s_acc, fresh, "acceleration"),
        ):
            present(spec, source, attrgetter(attr))
        edges = [(sides[v.edge_side], v.edge_bp) for _, sides, v in fresh if v.edge_bp is not None and v.edge_side]
        fams.append(self.s_edge.family([lb for lb, _ in edges], [x or 0.0 for _, x in edges]))
        methods = ("method", "level", "difference")
        windows = ("window", "1h", "4h")
        anchor_fields = ("anchor_strength", "anchor_difference")
        fams.append(self._paired_family(self.s_anchor, fresh, anchor_fields, methods, self._method_labels))
        oi_fields = ("oi_change_1h", "oi_change_4h")
        fams.append(self._paired_family(self.s_oi_change, rows, oi_fields, windows, self._window_labels))
        vol_fields = ("volatility_1h", "volatility_4h")
        fams.append(self._paired_family(self.s_vol, rows, vol_fields, windows, self._window_labels))
        # Counters are always present (0 before the first liquidation) so rate() works from the start.
        side_labels = [lb for _, sides, _ in rows for lb in (sides["long"], sides["short"])]
        long_, short_ = Side.LONG, Side.SHORT
        counts = [(v.st.liq_count, v.st.liq_notional_usd) for _, _, v in rows]
        fams.append(self.s_liq.family(side_labels, [float(c.get(s, 0)) for c, _ in counts for s in (long_, short_)]))
        fams.append(
            self.s_liq_usd.family(list(side_labels), [float(n.get(s, 0.0)) for _, n in counts for s in (long_, short_)])
        )
        f_ins = self.s_ins.family()
        for ex, pool, balance in self.views.insurance(self.views.state.clock()):
            lbl = self._ins_labels.get((ex, pool))
            if lbl is None:
                lbl = self._ins_labels[(ex, pool)] = LabelSet([("exchange", ex.value), ("pool", pool)])
            f_ins.add(lbl, balance)
        fams.append(f_ins)
        return fams

    def _paired_family(
        self,
        spec: Spec,
        rows: Sequence[Row],
        fields: tuple[str, str],
        label: tuple[str, str, str],
        cache: dict[Key, tuple[LabelSet, LabelSet, LabelSet]],
    ) -> Family:
        """A family whose rows carry two view fields, one series each, told apart by one label:
        ``label`` = (name, value of the first, value of the second); a field that is None is left out."""
        labels: list[LabelSet] = []
        values: list[float] = []
        get_a, get_b = attrgetter(fields[0]), attrgetter(fields[1])
        name, first, second = label
        for lb, _, v in rows:
            xa, xb = get_a(v), get_b(v)
            if xa is None and xb is None:
                continue
            hit = cache.get(v.st.key)
            if hit is None or hit[0] is not lb:
                hit = cache[v.st.key] = (lb, lb.with_(**{name: first}), lb.with_(**{name: second}))
            if xa is not None:
                labels.append(hit[1])
                values.append(float(xa))
            if xb is not None:
                labels.append(hit[2])
                values.append(float(xb))
        yield_gil()
        return spec.family(labels, values)

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

    def __init__(self, views: MarketViews) -> None:
        self.views = views
        an = views.config.analytics
        self.s_oiw = m.OI_WEIGHTED_FUNDING.spec()
        self.s_spread = m.FUNDING_SPREAD.spec(
            holding_hours=f"{an.holding_period_hours:g}", fee_kind=an.fee_kind, top_n=an.spread_top_n
        )
        self._labels: dict[tuple[str, ...], LabelSet] = {}
        self._used: dict[tuple[str, ...], LabelSet] = {}  # the label sets of the scrape in progress

    def _label(self, *pairs: tuple[str, str]) -> LabelSet:
        key = tuple(v for _, v in pairs)
        lbl = self._labels.get(key)
        if lbl is None:
            lbl = self._labels[key] = LabelSet(pairs)
        self._used[key] = lbl
        return lbl

    def _prune(self) -> None:
        """Keep the cache bounded as bases come and go (all_perpetuals) by what the scrape used, not
        by a fixed size: at 8,000 instruments one scrape uses more than 10,000 label sets (a spread
        per pair of exchanges per base), and clearing the cache every scrape rebuilt them all."""
        used, self._used = self._used, {}
        if len(self._labels) > 2 * len(used) + 1024:
            self._labels = used

    def families(self, views: Sequence[InstrumentView] | None = None) -> list[Family]:
        mv = self.views
        if views is None:
            views = mv.current_views()
        by_base: dict[str, list[FundingPoint]] = {}
        for p in mv.funding_points(views):
            by_base.setdefault(p.base, []).append(p)
        f_oiw, f_spread = self.s_oiw.family(), self.s_spread.family()
        cfg = mv.config.analytics
        # Base by base: one base whose figures cannot be computed loses its series, not the others.
        for base in sorted(by_base):
            points = by_base[base]
            try:
                oiw = oi_weighted_funding(points).get(base)
                spreads = funding_spreads(points, cfg.holding_period_hours, cfg.spread_top_n)
            except Exception:
                mv.errors.count("cross")
                log.warning("cross-exchange figures of %s failed; its series are left out", base, exc_info=True)
                continue
            if oiw is not None:
                f_oiw.add(self._label(("base", base)), oiw)
            for s in spreads:
                f_spread.add(
                    self._label(
                        ("base", s.base), ("long_exchange", s.long_exchange), ("short_exchange", s.short_exchange)
                    ),
                    s.net_bp,
                )
        self._prune()
        return [f_oiw, f_spread]

    def collect(self) -> Iterable[Metric]:
        for fam in self.families():
            yield fam.to_metric_family()
