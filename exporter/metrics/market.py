"""Market and cross-exchange collectors: readers of the view layer.

Every value comes from :class:`~exporter.views.MarketViews` (the same views /api/state reads);
these collectors only give them names and labels. Nothing here writes to state or computes a value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, compress, repeat
from operator import attrgetter
from typing import Any

import numpy as np
from prometheus_client.core import Metric

from exporter.analytics.cross import (
    FundingPoint,
    funding_spreads,
    oi_weighted_columns,
    oi_weighted_funding,
    spreads_columns,
)
from exporter.metrics import catalog as m
from exporter.metrics.exposition import YIELD_EVERY, Family, LabelSet, Spec, format_value, yield_gil
from exporter.model import InstrumentInfo, Side
from exporter.state import InstrumentState, Key
from exporter.views import InstrumentView, MarketViews, ViewTable

_read_liquidations = attrgetter("liq_long_count", "liq_short_count", "liq_long_usd", "liq_short_usd")
_LONG, _SHORT = Side.LONG, Side.SHORT
_compacted = attrgetter("compacted")
_OIW_NAMES = ("base",)
_SPREAD_NAMES = ("base", "long_exchange", "short_exchange")  # sorted: a label set's values are its key


class InstrumentLabels:
    """Every label set of one instrument's series, rendered once while its static facts hold:
    the plain one, per side (fr_edge_bp, liquidation counters), per anchor method, per window."""

    __slots__ = ("base", "compacted", "difference", "info", "level", "long", "short", "sides", "w1h", "w4h")

    def __init__(self, info: InstrumentInfo) -> None:
        self.info = info
        self.compacted = False  # its texts were put side by side with the others' (see _compact)
        base = self.base = LabelSet(
            [
                ("exchange", info.exchange.value),
                ("instrument", info.instrument),
                ("base", info.base),
                ("quote", info.quote),
            ]
        )
        self.sides = {s.value: base.with_(side=s.value) for s in Side}
        self.long, self.short = self.sides[_LONG.value], self.sides[_SHORT.value]
        self.level, self.difference = base.with_(method="level"), base.with_(method="difference")
        self.w1h, self.w4h = base.with_(window="1h"), base.with_(window="4h")


def _window_text(seconds: float) -> str:
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


def _compact(labels: Sequence[LabelSet]) -> list[str]:
    """The label sets' texts copied side by side in memory (one join, one split: the strings are
    allocated one after the other), and the label sets pointed at the copies.

    A label set is built when its instrument first shows, among that instrument's other objects;
    at 8,000 instruments a family's texts were then spread over hundreds of megabytes and each
    sample's text a cache and TLB miss: the render's label part grew 5.2x from 2,000 to 8,000."""
    if not labels:
        return []
    texts = "\n".join([lb.text for lb in labels]).split("\n")  # a text never holds a raw newline
    for lb, t in zip(labels, texts, strict=True):
        lb.text = t
    return texts


class _Column:
    """One kind of label set of every instrument of a scrape, in view order, with its texts."""

    __slots__ = ("labels", "texts")

    def __init__(self, labels: list[LabelSet], compact: bool) -> None:
        self.labels = labels
        self.texts = _compact(labels) if compact else [lb.text for lb in labels]

    def subset(self, mask: Sequence[bool]) -> _Column:
        out = _Column.__new__(_Column)
        out.labels, out.texts = list(compress(self.labels, mask)), list(compress(self.texts, mask))
        return out


# A family's lines are kept in pieces of this many positions of its label column: a piece in which
# no value moved since the last scrape is written again as it is (no label or value text read)
_BLOCK = 1024


class _Texts:
    """A family's output of the last scrape, per piece of ``_BLOCK`` positions of its label column:
    the piece's lines (UTF-8), each position's value text (None: absent; the whole list None when the
    piece was written by its template) and the piece's template with the mask it was made for; and
    the values they were made from. Never changed once made (another scrape thread may be reading it)."""

    __slots__ = ("blocks", "col", "strs", "templates", "values")

    def __init__(
        self,
        col: _Column,
        values: np.ndarray,
        strs: list[list[str | None] | None],
        blocks: list[bytes],
        templates: list[tuple[np.ndarray, str] | None],
    ) -> None:
        self.col, self.values, self.strs, self.blocks, self.templates = col, values, strs, blocks, templates


def _value_texts(values: np.ndarray) -> list[str]:
    """``exposition.value_text`` of each finite value, ``repr`` (most values) mapped in C."""
    vals = values.tolist()
    small = (values > -1e300) & (values < 1e6)
    if small.all():
        return list(map(repr, vals))
    if not small.any():
        return list(map(format_value, vals))
    return [repr(v) if -1e300 < v < 1e6 else format_value(v) for v in vals]


def _template(name: str, texts: Iterable[str]) -> str:
    """The lines of ``texts`` with ``%r`` where each value goes (a ``%`` of a label text doubled)."""
    labels = list(texts)
    tmpl = "".join(chain.from_iterable(zip(repeat(name), labels, repeat(" %r\n"))))
    if tmpl.count("%") != len(labels):
        tmpl = "".join(chain.from_iterable(zip(repeat(name), (t.replace("%", "%%") for t in labels), repeat(" %r\n"))))
    return tmpl


def _present(spec: Spec, col: _Column, values: np.ndarray, kept: dict[str, _Texts]) -> Family:
    """The family of one optional value (a column, NaN where absent): only the instruments that have
    it, all in C.

    The lines are kept per piece of ``_BLOCK`` positions (``kept``, per family): a piece in which no
    value moved since the last scrape, bit for bit, is handed to the renderer as it was (at 8,000
    instruments half the families do not move between two scrapes, and joining their lines read
    every label text again, spread over megabytes). A piece in which most values moved is written
    in one C call from its template (its lines with ``%r`` for the values, kept while the same
    positions are present): ``%r`` is ``repr``, the renderer's own text below 1e6
    (``exposition.value_text``), and no text per value is made or kept. A piece with few values
    moved, or one with a value outside ``repr``'s range (Go's exponent form from 1e6 up), keeps a
    text per value (made for every value when the piece was last written from its template) and
    formats only the moved ones: many values do not move between two scrapes (intervals, caps, next
    funding times, counters, a minute's volatility and anchors). The label sets, values and texts
    as lists are built only when read (``collect()``, tests)."""
    mask = ~np.isnan(values)
    if np.isinf(values).any():  # the renderer leaves these out and counts them
        keep = mask.tolist()
        return Family.masked(spec, col.labels, keep, values[mask].tolist(), list(compress(col.texts, keep)))
    n = len(values)
    nblocks = -(-n // _BLOCK)
    hit = kept.get(spec.name)
    strs: list[list[str | None] | None]
    templates: list[tuple[np.ndarray, str] | None]
    if hit is None or hit.col is not col:
        strs, blocks, templates = [None] * nblocks, [b""] * nblocks, [None] * nblocks
        moved = mask
        changed = range(nblocks)
    else:
        # copies: the kept ones stay as they are
        strs, blocks, templates = list(hit.strs), list(hit.blocks), list(hit.templates)
        diff = hit.values.view(np.int64) != values.view(np.int64)  # bits: -0.0 is not 0.0
        moved = mask & diff
        changed = np.unique(np.flatnonzero(diff) // _BLOCK).tolist()
    idx = np.flatnonzero(moved)
    bounds = np.searchsorted(idx, [b * _BLOCK for b in range(nblocks + 1)]).tolist()
    name, texts = spec.name, col.texts
    join = "".join
    for k, b in enumerate(changed):
        if k:
            yield_gil()  # a piece is ~a thousand lines, as the renderer's own pieces
        start, end = b * _BLOCK, min(n, (b + 1) * _BLOCK)
        present = mask[start:end]
        pv = values[start:end][present]
        old = strs[b]
        if 2 * (bounds[b + 1] - bounds[b]) >= len(pv) and ((pv > -1e300) & (pv < 1e6)).all():
            t = templates[b]
            if t is None or not np.array_equal(t[0], present):
                t = templates[b] = (present.copy(), _template(name, compress(texts[start:end], present.tolist())))
            blocks[b] = (t[1] % tuple(pv.tolist())).encode()
            strs[b] = None
            continue
        if old is None:  # the piece was written by its template (or is new): every present value's text
            blk: list[str | None] = [None] * (end - start)
            at, new = np.flatnonzero(present).tolist(), _value_texts(pv)
        else:
            blk = list(old)
            lo, hi = bounds[b], bounds[b + 1]
            at, new = (idx[lo:hi] - start).tolist(), _value_texts(values[idx[lo:hi]])
        any(map(blk.__setitem__, at, new))  # the texts, in C
        strs[b] = blk
        keep = present.tolist()
        part = zip(repeat(name), compress(texts[start:end], keep), repeat(" "), compress(blk, keep), repeat("\n"))
        blocks[b] = join(chain.from_iterable(part)).encode()  # type: ignore[arg-type]  # present: never None
    kept[spec.name] = _Texts(col, values, strs, blocks, templates)

    def lists() -> tuple[list[LabelSet], list[float], list[str]]:
        keep = mask.tolist()
        return list(compress(col.labels, keep)), values[mask].tolist(), list(compress(col.texts, keep))

    return Family.rendered(spec, [b for b in blocks if b], lists)


def _pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The two columns interleaved (a0, b0, a1, b1, ...): an instrument's two series side by side."""
    out = np.empty(2 * len(a), dtype=np.float64)
    out[0::2], out[1::2] = a, b
    return out


def _interleave(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    return list(chain.from_iterable(zip(a, b, strict=True)))


class _Columns:
    """The label columns of one list of instruments (rebuilt when the list changes)."""

    __slots__ = ("base", "infos", "methods", "records", "sides", "windows")

    def __init__(self, infos: list[InstrumentInfo], records: list[InstrumentLabels]) -> None:
        self.infos = infos
        self.records = records
        # Copy the texts only when an instrument is new to them: a list that only lost instruments
        # (one whose view failed this scrape) keeps them where they are (a copy: ~20 ms at 8,000).
        compact = not all(map(_compacted, records))
        self.base = _Column([r.base for r in records], compact)
        # the two series of an instrument side by side: (level, difference), (1h, 4h), (long, short)
        self.methods = _Column(_interleave([r.level for r in records], [r.difference for r in records]), compact)
        self.windows = _Column(_interleave([r.w1h for r in records], [r.w4h for r in records]), compact)
        self.sides = _Column(_interleave([r.long for r in records], [r.short for r in records]), compact)
        if compact:
            for r in records:
                r.compacted = True


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
        self.s_liq = m.LIQUIDATIONS.spec()
        self.s_liq_usd = m.LIQUIDATED_NOTIONAL.spec()
        self.s_ins = m.INSURANCE_FUND.spec()
        self._ins_labels: dict[tuple[str, str], LabelSet] = {}
        self._labels: dict[Key, InstrumentLabels] = {}
        # the last scrape's instruments (their static facts) and label columns, in view order: a
        # scrape over the same instruments takes them as they are, without a lookup per instrument
        self._columns = _Columns([], [])
        self._calls = 0
        # per family, the value texts of the last scrape (see _present); a scrape at a time
        self._texts: dict[str, _Texts] = {}

    def labels_of(self, st: InstrumentState) -> InstrumentLabels:
        """The instrument's label sets, rendered once and reused while its static facts hold."""
        hit = self._labels.get(st.key)
        info = st.info
        if hit is not None and (hit.info is info or hit.info == info):
            return hit
        hit = self._labels[st.key] = InstrumentLabels(info)
        return hit

    def _columns_of(self, table: ViewTable) -> _Columns:
        infos = table.infos
        if infos == self._columns.infos:  # identity first: the same objects compare in C, no __eq__ call
            return self._columns
        labels_of = self.labels_of
        cols = self._columns = _Columns(infos, [labels_of(st) for st in table.states])
        self._calls += 1
        if self._calls % 100 == 0 or len(self._labels) > len(table) + 64:
            # Instruments delisted from state: drop their cached labels (bounded memory).
            live = {st.key for st in table.states}
            for k in [k for k in list(self._labels) if k not in live]:  # list(): other scrapes may insert
                self._labels.pop(k, None)
        return cols

    def families(self, views: ViewTable | Sequence[InstrumentView] | None = None) -> list[Family]:
        if views is None:
            table = self.views.current_table()
        elif isinstance(views, ViewTable):
            table = views
        else:
            table = ViewTable.from_views(views)
        lc = self._columns_of(table)
        # Each family from its column of the scrape's views (a float array, NaN where absent): a
        # mask, the present values and their label texts, all in C. The values derived from the
        # funding rate are absent with it (a stale rate), so no subset is needed for them.
        cols = table.cols
        base = lc.base
        fams: list[Family] = []

        def add(fam: Family) -> None:
            fams.append(fam)
            yield_gil()  # a family's worth of work (~1-3 ms at 8,000 instruments) between two yields

        kept = self._texts
        add(_present(self.s_rate, base, cols["funding_rate"], kept))
        interval = cols["funding_interval_s"]
        add(_present(self.s_interval, base, np.where(interval == 0.0, np.nan, interval), kept))  # unknown or 0: none
        for spec, field in (
            (self.s_ann, "funding_rate_annualized"),
            (self.s_next, "next_funding_timestamp"),
            (self.s_cap, "funding_cap"),
            (self.s_floor, "funding_floor"),
            (self.s_mark, "mark_price"),
            (self.s_index, "index_price"),
            (self.s_premium, "premium_ratio"),
            (self.s_oi, "open_interest_usd"),
            (self.s_ls, "long_short_ratio"),
            (self.s_z, "zscore"),
            (self.s_mom, "momentum"),
            (self.s_acc, "acceleration"),
        ):
            add(_present(spec, base, cols[field], kept))
        # the receiving side's label set of each instrument with an edge: long, short side by side
        # in lc.sides (an edge exists only with a fresh rate)
        edge, short = cols["edge_bp"], table.short
        add(_present(self.s_edge, lc.sides, _pairs(np.where(short, np.nan, edge), np.where(short, edge, np.nan)), kept))
        add(_present(self.s_anchor, lc.methods, _pairs(cols["anchor_strength"], cols["anchor_difference"]), kept))
        add(_present(self.s_oi_change, lc.windows, _pairs(cols["oi_change_1h"], cols["oi_change_4h"]), kept))
        add(_present(self.s_vol, lc.windows, _pairs(cols["volatility_1h"], cols["volatility_4h"]), kept))
        # Counters are always present (0 before the first liquidation) so rate() works from the start.
        sides = lc.sides
        # per instrument (long count, short count, long USD, short USD): counts in columns 0-1, USD in 2-3,
        # long and short side by side as lc.sides has them
        counts = np.array(list(map(_read_liquidations, table.states)), dtype=np.float64).reshape(-1, 4)
        add(_present(self.s_liq, sides, counts[:, :2].ravel(), kept))
        add(_present(self.s_liq_usd, sides, counts[:, 2:].ravel(), kept))
        f_ins = self.s_ins.family()
        for ex, pool, balance in self.views.insurance(self.views.state.clock()):
            lbl = self._ins_labels.get((ex, pool))
            if lbl is None:
                lbl = self._ins_labels[(ex, pool)] = LabelSet([("exchange", ex.value), ("pool", pool)])
            f_ins.add(lbl, balance)
        add(f_ins)
        return fams

    def collect(self) -> Iterable[Metric]:
        for fam in self.families():
            yield fam.to_metric_family()


class _CrossCodes:
    """The cross-exchange label sets of one list of bases and exchanges (``FundingColumns``' names:
    the same list objects while the instrument list holds), by code: a base's, and a (base, long
    exchange, short exchange)'s at ``(base * E + long) * E + short``, with their texts; each filled
    when first used. A scrape then takes its label texts by the codes, in C, where a lookup by the
    values' tuple per series and a read of each label set object cost 4 ms at 8,000 instruments."""

    __slots__ = ("bases", "exchanges", "oiw", "spread")

    def __init__(self, bases: list[str], exchanges: list[str]) -> None:
        self.bases, self.exchanges = bases, exchanges
        ne = len(exchanges)
        self.oiw = _Coded(len(bases))
        self.spread = _Coded(len(bases) * ne * ne)


class _Coded:
    """Label sets and their texts by an integer code (object arrays), and which codes are filled."""

    __slots__ = ("known", "labels", "texts")

    def __init__(self, n: int) -> None:
        self.labels = np.full(n, None, dtype=object)
        self.texts = np.full(n, None, dtype=object)
        self.known = np.zeros(n, dtype=bool)

    def take(self, codes: np.ndarray, make: Callable[[int], LabelSet]) -> tuple[np.ndarray, list[str]]:
        """The label sets (an object array) and texts of ``codes``; ``make(code)`` for a new one."""
        for c in np.unique(codes[~self.known[codes]]).tolist():
            lb = make(c)
            self.labels[c], self.texts[c], self.known[c] = lb, lb.text, True
        return self.labels[codes], self.texts[codes].tolist()


def _rendered(spec: Spec, labels: np.ndarray, texts: list[str], values: np.ndarray) -> Family:
    """The family of ``labels`` (an object array) with their ``texts`` and ``values``, its lines
    rendered here a thousand at a time (value texts mapped in C, ``exposition.value_text``'s), or,
    should a value not be finite, left to the renderer, which leaves it out and counts it."""
    if not np.isfinite(values).all():
        return spec.family(labels.tolist(), values.tolist(), texts)
    name, join, body = spec.name, "".join, []
    for i in range(0, len(texts), YIELD_EVERY):
        if i:
            yield_gil()
        strs = _value_texts(values[i : i + YIELD_EVERY])
        part = zip(repeat(name), texts[i : i + YIELD_EVERY], repeat(" "), strs, repeat("\n"))
        body.append(join(chain.from_iterable(part)).encode())
    return Family.rendered(spec, body, lambda: (labels.tolist(), values.tolist(), texts))


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
        # label values -> label set; a label set's values are its key (the names are in sorted order)
        self._labels: dict[tuple[str, ...], LabelSet] = {}
        self._new = 0  # label sets built since their texts were last put side by side
        self._codes: _CrossCodes | None = None  # the same label sets by code, for the scrape's names

    def _label(self, names: tuple[str, ...], key: tuple[str, ...]) -> LabelSet:
        lbl = self._labels[key] = LabelSet(zip(names, key, strict=True))
        self._new += 1
        return lbl

    def _tidy(self, n_used: int, used: Callable[[], Iterable[LabelSet]]) -> None:
        """Keep the cache bounded as bases come and go (all_perpetuals) by what the scrape used
        (``n_used`` label sets, ``used()``), not by a fixed size: at 8,000 instruments one scrape
        uses more than 10,000 label sets (a spread per pair of exchanges per base), and clearing the
        cache every scrape rebuilt them all. Then, once a sixteenth of the label sets are new, their
        texts are put side by side in memory (see market._compact): spreads that turn positive bring
        new ones, built among other objects (the texts by code are taken again from the label sets)."""
        if len(self._labels) > 2 * n_used + 1024:
            self._labels = {lb.values: lb for lb in used()}
        if self._new * 16 > len(self._labels):
            _compact(list(self._labels.values()))
            self._new = 0
            self._codes = None

    def _codes_for(self, bases: list[str], exchanges: list[str]) -> _CrossCodes:
        c = self._codes
        if c is None or c.bases is not bases or c.exchanges is not exchanges:
            c = self._codes = _CrossCodes(bases, exchanges)
        return c

    def families(self, views: ViewTable | Sequence[InstrumentView] | None = None) -> list[Family]:
        mv = self.views
        if views is None:
            views = mv.current_table()
        cfg = mv.config.analytics
        get = self._labels.get
        try:
            # Every base at once, over columns (the same floats and order as the functions over
            # points). Should anything raise, base by base below: one base loses its series.
            fc = mv.funding_columns(views)
            codes, oiw_col = oi_weighted_columns(fc)
            sb, sl, ss, _, net = spreads_columns(fc, cfg.holding_period_hours, cfg.spread_top_n)
            ok = True
        except Exception:
            log.debug("cross-exchange figures over columns failed; base by base", exc_info=True)
            ok = False
        if ok:
            names, exchanges = fc.bases, fc.exchanges
            coded = self._codes_for(names, exchanges)
            ne = len(exchanges)

            def base_label(b: int) -> LabelSet:
                return get((names[b],)) or self._label(_OIW_NAMES, (names[b],))

            def spread_label(code: int) -> LabelSet:
                b, pair = divmod(code, ne * ne)
                # a spread's label values, in sorted name order: base, long_exchange, short_exchange
                key = (names[b], exchanges[pair // ne], exchanges[pair % ne])
                return get(key) or self._label(_SPREAD_NAMES, key)

            oiw_labels, oiw_texts = coded.oiw.take(codes, base_label)
            f_oiw = _rendered(self.s_oiw, oiw_labels, oiw_texts, oiw_col)
            spread_labels, spread_texts = coded.spread.take((sb * ne + sl) * ne + ss, spread_label)
            f_spread = _rendered(self.s_spread, spread_labels, spread_texts, net)
            self._tidy(len(oiw_labels) + len(spread_labels), lambda: chain(oiw_labels, spread_labels))
            return [f_oiw, f_spread]
        f_oiw, f_spread = self.s_oiw.family(), self.s_spread.family()
        by_base: dict[str, list[FundingPoint]] = {}
        for p in mv.funding_points(views):
            by_base.setdefault(p.base, []).append(p)
        # Base by base: one base whose figures cannot be computed loses its series, not the others.
        for base in sorted(by_base):
            group = by_base[base]
            try:
                oiw = oi_weighted_funding(group).get(base)
                spreads = funding_spreads(group, cfg.holding_period_hours, cfg.spread_top_n)
            except Exception:
                mv.errors.count("cross")
                log.warning("cross-exchange figures of %s failed; its series are left out", base, exc_info=True)
                continue
            if oiw is not None:
                f_oiw.add(get((base,)) or self._label(_OIW_NAMES, (base,)), oiw)
            for s in spreads:
                key = s[:3]  # base, long_exchange, short_exchange
                f_spread.add(get(key) or self._label(_SPREAD_NAMES, key), s.net_bp)
        self._tidy(len(f_oiw.labels) + len(f_spread.labels), lambda: [*f_oiw.labels, *f_spread.labels])
        return [f_oiw, f_spread]

    def collect(self) -> Iterable[Metric]:
        for fam in self.families():
            yield fam.to_metric_family()
