"""The scrape's views built in bulk, as columns, against the same views built instrument by instrument.

``MarketViews.table`` reads every instrument's stored values in one copy and applies the view rules
(staleness, the settled-rate guard, Deribit's 8 h interval, the derived values, non-finite values
left out and counted) over whole columns; ``MarketViews._views_each`` is the per-instrument path it
replaced, kept as its fallback. Both must give the same views, value for value (NaN, -0.0 and None
told apart), the same error counts, and the same exposition byte for byte.
"""

from __future__ import annotations

import math
import random
import threading
from typing import Any

import pytest
from prometheus_client import generate_latest

from exporter.analytics import factors
from exporter.analytics import funding as fa
from exporter.config import Config
from exporter.metrics import build_registry, market
from exporter.model import EIGHT_HOURS, Exchange, InstrumentInfo, Liquidation, MarketUpdate, Side
from exporter.state import MARK_MINUTES, MarketState
from exporter.views import InstrumentView, MarketViews, ViewTable

T0 = 1_767_225_600.0
FIELDS = tuple(InstrumentView.__dataclass_fields__)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def _market(seed: int = 3, per_exchange: int = 40) -> tuple[Clock, MarketState]:
    """Instruments in every condition a view tells apart: fresh and stale prices, funding and open
    interest; a settled rate (next funding time in the past); no rate; a 1 h and an unknown interval;
    a negative rate (longs receive) and a zero one; a published premium without an index; windows full
    enough for z-scores, anchors, volatility and open-interest changes; and one value that overflows."""
    rng = random.Random(seed)
    clock = Clock()
    state = MarketState(clock=clock)
    now = clock.t
    for ex in Exchange:
        state.register_exchange(ex)
        for k in range(per_exchange):
            sym = f"C{k}{ex.value[:2].upper()}"
            interval = None if k % 9 == 4 else (3600.0 if k % 5 == 0 else EIGHT_HOURS)
            st = state.register(
                InstrumentInfo(
                    ex, sym, f"C{k}", "USDT", funding_interval_s=interval, funding_cap=0.003 if k % 2 else None
                )
            )
            step = interval or EIGHT_HOURS
            state.add_settlements(
                st, [(now - (i + 1) * step, rng.gauss(1e-4, 5e-5)) for i in range(30 if k % 6 else 2)]
            )
            if k % 4 == 0:  # a settlement about to leave the z-score window: it does during the test
                state.add_settlements(st, [(now - Config().analytics.zscore_window_seconds + 60.0 + k, 3e-4)])
            st.anchor_samples.extend(
                (now - (400 - i) * 60.0, rng.gauss(1e-4, 2e-5), rng.gauss(0, 5e-4))
                for i in range(0 if k % 7 == 3 else 400)
            )
            sampled = 30 if k % 10 == 3 else 250  # 30 minutes: no change over an hour yet
            st.oi_samples.extend((now - (sampled - i) * 60.0, 1e8 * (1 + 0.001 * i)) for i in range(sampled))
            px = 10 ** rng.uniform(-2, 4)
            minute = math.floor(now / 60) * 60
            st.mark_minutes.extend(
                (minute - (sampled - i) * 60.0, px * (1 + rng.gauss(0, 1e-3))) for i in range(sampled)
            )
            rate = (-1 if k % 4 == 1 else 1) * rng.uniform(0, 3e-4) if k % 10 != 7 else 0.0
            received = now - (1000.0 if k % 8 == 2 else 1.0)  # some stale
            state.apply(
                MarketUpdate(
                    ex,
                    sym,
                    mark_price=px,
                    index_price=None if k % 11 == 5 else px * (1 + rng.gauss(0, 5e-4)),
                    premium=rng.gauss(0, 1e-4) if k % 11 == 5 else None,
                    funding_rate=None if k % 13 == 6 else rate,
                    next_funding_time=None if ex is Exchange.DERIBIT else now + (-600 if k % 12 == 8 else 600),
                    open_interest_usd=rng.uniform(1e6, 5e9),
                ),
                received,
            )
            if k % 3 == 0:
                st.long_short_ratio, st.ratio_at = rng.uniform(0.5, 2), now - (10.0 if k % 2 else 10_000.0)
            if k % 5 == 1:
                st.liq_recent.append(Liquidation(ex, sym, now - 60, Side.LONG, px, 1.0, px))
                st.liq_long_count += 1
                st.liq_long_usd += px
    # an interval so small that the 8 h rate overflows: those values are left out and counted
    next(iter(state.snapshot())).funding_interval_s = 5e-324
    return clock, state


def _same(a: Any, b: Any) -> bool:
    """Equal as a reader sees them: None apart from NaN, -0.0 apart from 0.0."""
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return repr(float(a)) == repr(float(b))
    return bool(a == b)


def _rows(views: list[InstrumentView]) -> list[tuple[Any, ...]]:
    return [tuple(getattr(v, f) for f in FIELDS) for v in views]


def _move(clock: Clock, state: MarketState, rng: random.Random, step: int) -> None:
    """What happens between two scrapes: time moves (across minute boundaries), most instruments
    update (some not: they go stale), some settle, take an anchor or open-interest sample, one
    changes its interval."""
    clock.t += 25.0
    now = clock.t
    for k, st in enumerate(state.snapshot()):
        if (k + step) % 8 == 2:
            continue
        info = st.info
        rate = (st.funding_rate or 1e-4) + rng.gauss(0, 1e-6)
        state.apply(
            MarketUpdate(
                info.exchange,
                info.instrument,
                mark_price=(st.mark_price or 1.0) * (1 + rng.gauss(0, 1e-4)),
                funding_rate=rate,
                open_interest_usd=rng.uniform(1e6, 5e9),
            ),
            now,
        )
        if (k + step) % 3 == 0:
            state.add_settlements(st, [(now, rate)])
        if (k + step) % 2 == 0 and st.anchor_samples:
            st.anchor_samples.append((now, rate, rng.gauss(0, 5e-4)))
        if (k + step) % 3 == 1:
            st.oi_samples.append((now, rng.uniform(1e6, 5e9)))
    if step == 2:
        state.snapshot()[5].funding_interval_s = 3600.0


# the overflowing instrument's anchor samples hold an infinite 8 h rate: numpy warns on its sums
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_bulk_views_equal_the_per_instrument_views_value_for_value() -> None:
    clock, state = _market()
    rng = random.Random(11)
    # both keep their caches from scrape to scrape, as a server does (the anchors' running sums
    # depend on the path they took: a fresh computation can differ in the last bit)
    bulk, each = MarketViews(Config(), state), MarketViews(Config(), state)
    for step in range(8):
        _move(clock, state, rng, step)
        got = bulk.table().views()
        want = each._views_each(state.snapshot(), clock.t)
        assert len(got) == len(want) == len(state.instruments)
        for g, w in zip(_rows(got), _rows(want), strict=True):
            bad = [(f, x, y) for f, x, y in zip(FIELDS, g, w, strict=True) if f != "st" and not _same(x, y)]
            assert not bad, (g[0], bad)
            assert g[0] is w[0]
    assert bulk.errors.snapshot() == each.errors.snapshot() == {"market": 8}
    # what the conditions above must have produced, so that the comparison covers them
    assert {v.stale for v in want} == {True, False}
    assert {v.edge_side for v in want} == {"long", "short", None}
    for f in ("zscore", "anchor_strength", "anchor_difference", "oi_change_1h", "volatility_4h", "long_short_ratio"):
        assert {getattr(v, f) is None for v in want} == {True, False}, f


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_bulk_volatility_of_full_windows_equals_the_per_instrument_views(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every window of minute closes full (one length: the bulk path reads them as rows, without a
    search), some with a minute missing or a bad close; at first each one's last complete minute is
    still in progress (no mark has closed it: it counts, with the mark as its close): the bulk views
    equal the per-instrument ones over moving scrapes across minute boundaries (some instruments
    miss minutes: a gap), and most rows were answered as rows."""
    clock, state = _market(seed=21, per_exchange=30)
    rng = random.Random(2)
    minute = math.floor(clock.t / 60) * 60
    for k, st in enumerate(state.snapshot()):
        px = st.mark_price or 1.0
        # the closes up to the minute before the one in progress
        last = (st.mark_minute if st.mark_minute >= 0 else minute) - 60.0
        closes = [(last - (MARK_MINUTES - 1 - i) * 60.0, px * (1 + rng.gauss(0, 1e-3))) for i in range(MARK_MINUTES)]
        if k % 9 == 1:
            del closes[MARK_MINUTES - 30]
            closes.insert(0, (closes[0][0] - 60.0, px))
        if k % 11 == 2:
            closes[-5] = (closes[-5][0], 0.0)
        st.mark_minutes.replace(closes)
    answered: list[int] = []
    real = factors.realized_volatility_rows

    def spy(*args: Any, **kwargs: Any) -> Any:
        out, done = real(*args, **kwargs)
        answered.append(int(done.sum()))
        return out, done

    monkeypatch.setattr(factors, "realized_volatility_rows", spy)
    bulk, each = MarketViews(Config(), state), MarketViews(Config(), state)
    for step in range(10):
        got = bulk.table().views()
        want = each._views_each(state.snapshot(), clock.t)
        for g, w in zip(_rows(got), _rows(want), strict=True):
            bad = [(f, x, y) for f, x, y in zip(FIELDS, g, w, strict=True) if f != "st" and not _same(x, y)]
            assert not bad, (step, g[0], bad)
        _move(clock, state, rng, step)
    assert sum(answered) > 2 * len(state.instruments)
    assert {v.volatility_4h is None for v in want} == {True, False}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_two_scrape_threads_never_apply_the_same_anchor_samples_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two scrapes at once (an HA pair of Prometheus servers, /api/state): the first to step the
    anchors' running sums waits there for the other to step too (half a second: with the lock the
    other cannot, which is what is checked), and both see the per-instrument views' anchors."""
    clock, state = _market(seed=8, per_exchange=12)
    rng = random.Random(4)
    bulk, each = MarketViews(Config(), state), MarketViews(Config(), state)
    bulk.table()
    each._views_each(state.snapshot(), clock.t)
    for step in range(4):  # samples arrive, and leave the window as it moves on
        _move(clock, state, rng, step)
    real = fa.AnchorColumns._step
    both = threading.Barrier(2)
    waits: list[bool] = []

    def step_then_wait(self: fa.AnchorColumns, *args: Any) -> None:
        real(self, *args)
        try:  # the other thread's step, if it could get there
            both.wait(timeout=0.5)
            waits.append(True)
        except threading.BrokenBarrierError:
            waits.append(False)

    monkeypatch.setattr(fa.AnchorColumns, "_step", step_then_wait)
    tables: list[Any] = []
    threads = [threading.Thread(target=lambda: tables.append(bulk.table(clock.t).views())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    want = each._views_each(state.snapshot(), clock.t)
    assert len(tables) == 2 and waits and not any(waits)
    for got in tables:
        for g, w in zip(got, want, strict=True):
            assert _same(g.anchor_strength, w.anchor_strength) and _same(g.anchor_difference, w.anchor_difference)
    assert sum(v.anchor_strength is not None for v in want) > 10


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_listing_keeps_the_anchors_running_sums_of_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """An instrument listed between two scrapes (the list of instruments changes): the others keep
    their anchors' running sums, only the new one is computed from its whole window, and the views
    still equal the per-instrument ones."""
    clock, state = _market(seed=12, per_exchange=10)
    rng = random.Random(9)
    bulk, each = MarketViews(Config(), state), MarketViews(Config(), state)
    _move(clock, state, rng, 0)
    bulk.table()
    each._views_each(state.snapshot(), clock.t)  # the same history of sums on both sides
    cached = bulk._cached
    assert cached is not None
    summed = {key for key, s in zip(cached.static.keys, cached.anchor.storage, strict=True) if s is not None}
    whole: list[int] = []
    real = fa.AnchorColumns._one

    def counted(self: fa.AnchorColumns, i: int, *args: Any) -> None:
        whole.append(i)
        real(self, i, *args)

    monkeypatch.setattr(fa.AnchorColumns, "_one", counted)
    info = InstrumentInfo(Exchange.BYBIT, "NEWUSDT", "NEW", "USDT", funding_interval_s=EIGHT_HOURS)
    st = state.register(info)
    st.anchor_samples.extend((clock.t - (30 - i) * 60.0, 1e-4 + 1e-6 * i, 1e-4 * (i % 7)) for i in range(30))
    state.apply(MarketUpdate(Exchange.BYBIT, "NEWUSDT", mark_price=2.0, index_price=1.999, funding_rate=1e-4), clock.t)
    for step in range(1, 4):
        _move(clock, state, rng, step)
        got = bulk.table().views()
        want = each._views_each(state.snapshot(), clock.t)
        for g, w in zip(got, want, strict=True):
            assert _same(g.anchor_strength, w.anchor_strength) and _same(g.anchor_difference, w.anchor_difference)
        if step == 1:
            keys = [v.st.key for v in got]
            # from its whole window: the new one, and any that never had sums (stale until now)
            assert (Exchange.BYBIT, "NEWUSDT") in {keys[i] for i in whole}
            assert not summed & {keys[i] for i in whole} and len(summed) > 20
            assert want[keys.index((Exchange.BYBIT, "NEWUSDT"))].anchor_strength is not None
        whole.clear()
    assert sum(v.anchor_strength is not None for v in want) > 10


def test_bulk_render_equals_the_per_instrument_render_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    _, state = _market(seed=5)
    body = build_registry(Config(), state, process=False).render()
    assert body.count(b"\n") > 2000
    # the same registry built instrument by instrument: the bulk path made to fail
    monkeypatch.setattr(MarketViews, "_table_bulk", lambda *_: 1 / 0)
    assert build_registry(Config(), state, process=False).render() == body


def test_a_table_from_views_gives_back_the_same_views() -> None:
    clock, state = _market(seed=7, per_exchange=10)
    views = MarketViews(Config(), state)._views_each(state.snapshot(), clock.t)
    table = ViewTable.from_views(views)
    assert len(table) == len(views)
    table._views = None  # built again from the columns
    for g, w in zip(_rows(table.views()), _rows(views), strict=True):
        assert all(_same(x, y) for f, x, y in zip(FIELDS, g, w, strict=True) if f != "st"), (g, w)


@pytest.mark.parametrize("block", [1024, 5])
def test_kept_value_texts_follow_every_change(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value's text is kept from one scrape to the next while the value stays the same bit for
    bit: after each change (0.0 to -0.0 and back, across Go's exponent threshold of 1e6, absent and
    back, a counter) the render equals prometheus_client's of the same registry. With small pieces
    of kept lines (5 positions) a change rewrites one piece and the others are written as kept."""
    monkeypatch.setattr(market, "_BLOCK", block)
    _, state = _market(seed=9, per_exchange=6)
    state.snapshot()[0].funding_interval_s = EIGHT_HOURS  # no overflow: fr_render_errors_total stays
    reg = build_registry(Config(), state, process=False)
    bodies = [reg.render()]
    sts = state.snapshot()
    a, b, c = sts[5], sts[6], sts[7]  # fresh ones
    for change in (
        lambda: setattr(a, "funding_cap", -0.0),
        lambda: setattr(a, "funding_cap", 0.0),
        lambda: setattr(b, "open_interest_usd", 999_999.5),
        lambda: setattr(b, "open_interest_usd", 1_000_000.5),
        lambda: setattr(c, "funding_floor", -0.002),
        lambda: setattr(c, "funding_floor", None),
        lambda: setattr(a, "liq_short_count", a.liq_short_count + 1),
    ):
        change()
        body = reg.render()
        assert body == generate_latest(reg)
        assert body != bodies[-1]
        bodies.append(body)
    assert b"-0.0\n" in bodies[1] and b"1.0000005e+06\n" in bodies[4]


def test_cross_figures_base_by_base_equal_the_columns_and_isolate_a_failing_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cross-exchange families over columns equal the base-by-base path they fall back to, byte
    for byte; there, a base whose figures raise loses only its own series (counted)."""
    import exporter.metrics.market as market
    from exporter.analytics import cross

    _, state = _market(seed=13, per_exchange=12)
    state.snapshot()[0].funding_interval_s = EIGHT_HOURS  # no overflow: fr_render_errors_total stays
    columns = build_registry(Config(), state, process=False).render()
    assert columns.count(b"fr_funding_spread_bp{") > 10

    def fail(*_: Any) -> Any:
        raise RuntimeError("columns")

    monkeypatch.setattr(market, "spreads_columns", fail)
    reg = build_registry(Config(), state, process=False)
    assert reg.render() == columns
    real = cross.funding_spreads

    def one_base_fails(points: Any, *args: Any) -> Any:
        if points and points[0].base == "C3":
            raise ZeroDivisionError("C3")
        return real(points, *args)

    monkeypatch.setattr(market, "funding_spreads", one_base_fails)
    body = reg.render()
    lines = set(body.splitlines())
    left_out = {ln for ln in columns.splitlines() if ln not in lines}
    assert left_out and all(b'base="C3"' in ln for ln in left_out if b"render_errors" not in ln)
    assert all(b"fr_funding_spread_bp" in ln or b"fr_oi_weighted" in ln for ln in left_out if b'base="C3"' in ln)
    assert reg.views.errors.snapshot() == {"cross": 1}


@pytest.mark.parametrize("block", [1024, 7])
def test_kept_lines_equal_a_fresh_render_over_moving_scrapes(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The market collector keeps each family's lines per piece of positions and writes a piece again
    as it was when none of its values moved: over moving scrapes (values moving, going stale and
    coming back, settlements, an interval changed) every render equals the same registry's render
    with nothing kept, and prometheus_client's of the same registry (the families' lists). (A fresh
    registry is no reference: its anchors' running sums can differ in the last bit.)"""
    monkeypatch.setattr(market, "_BLOCK", block)
    clock, state = _market(seed=4)
    state.snapshot()[0].funding_interval_s = EIGHT_HOURS  # no overflow: fr_render_errors_total stays
    reg = build_registry(Config(), state, process=False)
    (collector,) = [c for c in reg.collectors() if isinstance(c, market.MarketCollector)]
    rng = random.Random(6)
    bodies = [reg.render()]
    for step in range(6):
        _move(clock, state, rng, step)
        body = reg.render()
        assert body == generate_latest(reg)
        kept = dict(collector._texts)
        collector._texts.clear()  # every line made again from the values
        assert reg.render() == body
        collector._texts.update(kept)
        bodies.append(body)
    assert len(set(bodies)) == len(bodies)


@pytest.mark.parametrize("block", [1024, 3])
def test_a_percent_sign_in_a_label_is_written_as_it_is(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A piece in which most values moved is written from a template with ``%r`` for its values:
    a ``%`` in a label value (an instrument id is the exchange's string) is a character of the
    line, never a placeholder, before and after the values move."""
    monkeypatch.setattr(market, "_BLOCK", block)
    clock = Clock()
    state = MarketState(clock=clock)
    for k, sym in enumerate(("A%rB", "C%%D", "E%sF", "G%")):
        state.register(InstrumentInfo(Exchange.BYBIT, sym, f"B{k}", "USDT", funding_interval_s=EIGHT_HOURS))
    reg = build_registry(Config(), state, process=False)
    for step in range(3):
        for k, sym in enumerate(("A%rB", "C%%D", "E%sF", "G%")):
            state.apply(
                MarketUpdate(Exchange.BYBIT, sym, mark_price=1.5 + k + step, funding_rate=1e-4 * (k + step + 1)),
                clock.t,
            )
        body = reg.render()
        assert body == generate_latest(reg)
        line = f'fr_mark_price{{base="B2",exchange="bybit",instrument="E%sF",quote="USDT"}} {3.5 + step!r}\n'
        assert line.encode() in body
        clock.t += 15.0
