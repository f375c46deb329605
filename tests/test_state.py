"""MarketState: delta semantics, settlement detection, staleness inputs, threshold events."""

from __future__ import annotations

from support.clock import ManualClock as Clock

from exporter.model import (
    Exchange,
    FundingSettlement,
    InstrumentInfo,
    Liquidation,
    MarketUpdate,
    Side,
)
from exporter.state import MarketState


def make_state(clock: Clock | None = None, **kw: float) -> tuple[MarketState, Clock]:
    clock = clock or Clock()
    st = MarketState(clock=clock, **kw)
    st.register(InstrumentInfo(Exchange.BYBIT, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800))
    st.register(InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT"))
    st.register(InstrumentInfo(Exchange.DERIBIT, "BTC-PERPETUAL", "BTC", "USD", inverse=True))
    return st, clock


def test_absent_fields_leave_values_unchanged() -> None:
    st, clock = make_state()
    st.apply(MarketUpdate(Exchange.BYBIT, "BTCUSDT", mark_price=100.0, index_price=99.0, funding_rate=0.0001))
    clock.t += 5
    st.apply(MarketUpdate(Exchange.BYBIT, "BTCUSDT", mark_price=101.0))  # a delta: only mark changed
    s = st.instruments[(Exchange.BYBIT, "BTCUSDT")]
    assert (s.mark_price, s.index_price, s.funding_rate) == (101.0, 99.0, 0.0001)
    assert s.price_at == clock.t and s.funding_at == clock.t - 5


def test_unknown_instrument_is_counted_not_stored() -> None:
    st, _ = make_state()
    st.apply(MarketUpdate(Exchange.BYBIT, "DOGEUSDT", mark_price=1.0))
    assert st.unknown_instrument_updates == 1
    assert (Exchange.BYBIT, "DOGEUSDT") not in st.instruments


def test_rollover_of_next_funding_time_records_the_settled_rate() -> None:
    st, clock = make_state()
    t0 = clock.t + 60
    st.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_rate=0.0003, next_funding_time=t0))
    clock.t = t0 + 1
    st.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_rate=0.0001, next_funding_time=t0 + 28800))
    s = st.instruments[(Exchange.BINANCE, "BTCUSDT")]
    assert s.settlement_window() == ((t0, 0.0003),)
    assert s.funding_rate == 0.0001


def test_settlements_merge_sorted_without_duplicates_and_infer_interval() -> None:
    st, _ = make_state()
    s = st.instruments[(Exchange.BINANCE, "BTCUSDT")]
    for t, r in [(7200.0, 0.2), (0.0, 0.1), (14400.0, 0.3), (7200.0, 0.2), (3600.0, float("nan"))]:
        st.apply(FundingSettlement(Exchange.BINANCE, "BTCUSDT", t, r))
    assert [t for t, _ in s.settlement_window()] == [0.0, 7200.0, 14400.0]
    assert s.interval_s == 7200.0


def test_funding_8h_uses_the_instruments_own_interval() -> None:
    st, _ = make_state()
    st.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_rate=0.0001, funding_interval_s=3600))
    assert abs(MarketState.funding_rate_8h(st.instruments[(Exchange.BINANCE, "BTCUSDT")]) - 0.0008) < 1e-15


def test_deribit_continuous_funding_gets_hourly_observations() -> None:
    st, clock = make_state()
    for _ in range(3):
        st.apply(
            MarketUpdate(
                Exchange.DERIBIT,
                "BTC-PERPETUAL",
                event_time=clock.t,
                funding_rate=0.0002,
                funding_rate_8h=0.0002,
                funding_interval_s=28800,
            )
        )
        clock.t += 1800
    s = st.instruments[(Exchange.DERIBIT, "BTC-PERPETUAL")]
    assert len(s.settlement_window()) == 2  # three updates half an hour apart span two hours


def test_liquidations_accumulate_per_side_and_fire_an_event() -> None:
    st, clock = make_state(liquidation_event_usd_per_minute=1_000_000.0)
    for usd in (400_000.0, 700_000.0):
        st.apply(Liquidation(Exchange.BYBIT, "BTCUSDT", clock.t, Side.LONG, 100.0, usd / 100, usd))
    s = st.instruments[(Exchange.BYBIT, "BTCUSDT")]
    assert s.liq_long_count == 2 and s.liq_short_count == 0
    assert s.liq_long_usd == 1_100_000.0
    kinds = [(e.kind, e.base) for e in st.events]
    assert kinds == [("liquidation", "BTC")]


def test_funding_event_fires_once_per_crossing() -> None:
    st, _ = make_state(funding_event_rate_8h=0.001)
    for rate in (0.0002, 0.0015, 0.002, 0.0001, -0.0012):
        st.apply(MarketUpdate(Exchange.BYBIT, "BTCUSDT", funding_rate=rate))
    assert [round(e.value, 6) for e in st.events if e.kind == "funding"] == [0.0015, -0.0012]


def test_window_bounds_by_count_and_span_and_reads_records() -> None:
    from exporter.state import Window

    w = Window(2, maxlen=5, span=100.0)
    assert not w and w.last_time() is None
    w.extend((float(t), t * 10.0) for t in range(0, 50, 10))
    assert list(w) == [(0.0, 0.0), (10.0, 100.0), (20.0, 200.0), (30.0, 300.0), (40.0, 400.0)]
    w.append((50.0, 500.0))  # over the count: the oldest goes
    assert len(w) == 5 and w[0] == (10.0, 100.0) and w[-1] == (50.0, 500.0) and w[-2] == (40.0, 400.0)
    w.append((200.0, 2000.0))  # the span drops everything older than 200 - 100
    assert list(w) == [(200.0, 2000.0)] and w.last_time() == 200.0
    for bad in (1, -2):
        try:
            w[bad]
        except IndexError:
            pass
        else:
            raise AssertionError(f"index {bad} should be out of range")
    w.replace([(1.0, 1.0), (2.0, 2.0)])
    assert tuple(w) == ((1.0, 1.0), (2.0, 2.0)) and list(w.raw()) == [1.0, 1.0, 2.0, 2.0]


def test_a_window_keeps_what_the_bounds_allow_whatever_the_steps() -> None:
    """Trimming looks at the oldest records before it searches: the result is that of the bounds
    applied to everything appended (the last ``maxlen`` records no older than newest - span)."""
    import random

    from exporter.state import Window

    rng = random.Random(4)
    for maxlen, span in ((5, 100.0), (50, 300.0), (3, 1e9), (40, 0.0)):
        w, every, t = Window(2, maxlen, span), [], 0.0
        for k in range(600):
            new = []
            for _ in range(1 + (k % 7 == 3)):  # now and then two at once (extend)
                t += rng.choice((0.0, 1.0, 7.0, 60.0, 60.0, 150.0, 1000.0)) * rng.random()
                new.append((t, float(len(every) + len(new))))
            if len(new) == 1:
                w.append(new[0])
            else:
                w.extend(new)
            every += new
            kept = [r for r in every if r[0] >= t - span][-maxlen:]
            assert list(w) == kept, (maxlen, span, k)


def test_bybit_deltas_keep_unchanged_funding_fresh_but_other_streams_do_not() -> None:
    """A Bybit delta omits the funding rate when it did not change: it is still current, and must not
    go stale (and vanish from /metrics) while the ticker keeps streaming. An OKX mark-price push says
    nothing about funding, so it must not refresh it."""
    import json

    from exporter.config import Config
    from exporter.feeds.base import FeedContext
    from exporter.feeds.bybit import BybitFeed
    from exporter.metrics import build_registry

    st, clock = make_state()
    info = st.instruments[(Exchange.BYBIT, "BTCUSDT")].info
    feed, ctx = BybitFeed(), FeedContext(Exchange.BYBIT, {"BTCUSDT": info})
    t0 = clock.t
    snap = {
        "topic": "tickers.BTCUSDT",
        "type": "snapshot",
        "ts": int(t0 * 1000),
        "data": {
            "symbol": "BTCUSDT",
            "markPrice": "100",
            "indexPrice": "100",
            "fundingRate": "0.0001",
            "nextFundingTime": str(int((t0 + 3600) * 1000)),
            "openInterestValue": "2000",
        },
    }
    st.apply_many(feed.parse_ws(json.dumps(snap), ctx))
    st.register(InstrumentInfo(Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT", funding_interval_s=28800))
    st.apply(MarketUpdate(Exchange.OKX, "BTC-USDT-SWAP", funding_rate=0.0002))
    for i in range(1, 31):  # 300 s of mark-only deltas, past the 120 s funding staleness limit
        clock.t = t0 + 10 * i
        delta = {
            "topic": "tickers.BTCUSDT",
            "type": "delta",
            "ts": int(clock.t * 1000),
            "data": {"symbol": "BTCUSDT", "markPrice": str(100 + i)},
        }
        st.apply_many(feed.parse_ws(json.dumps(delta), ctx))
        st.apply(MarketUpdate(Exchange.OKX, "BTC-USDT-SWAP", mark_price=100.0 + i))
    reg = build_registry(Config(), st)
    bybit = {"exchange": "bybit", "instrument": "BTCUSDT", "base": "BTC", "quote": "USDT"}
    okx = {"exchange": "okx", "instrument": "BTC-USDT-SWAP", "base": "BTC", "quote": "USDT"}
    assert reg.get_sample_value("fr_funding_rate", bybit) == 0.0001
    assert reg.get_sample_value("fr_open_interest_usd", bybit) == 1000.0  # both sides, halved
    assert reg.get_sample_value("fr_mark_price", okx) == 130.0
    assert reg.get_sample_value("fr_funding_rate", okx) is None  # 300 s old: stale, gone


def _liq(ex: Exchange, inst: str, t: float, usd: float) -> Liquidation:
    return Liquidation(ex, inst, t, Side.LONG, 100.0, usd / 100, usd)


def test_liquidation_events_sum_one_base_across_exchanges_within_the_minute() -> None:
    st, clock = make_state(liquidation_event_usd_per_minute=1_000_000.0)
    st.register(InstrumentInfo(Exchange.BYBIT, "ETHUSDT", "ETH", "USDT", funding_interval_s=28800))
    st.apply(_liq(Exchange.BYBIT, "BTCUSDT", clock.t, 600_000.0))
    st.apply(_liq(Exchange.BYBIT, "ETHUSDT", clock.t, 900_000.0))  # another base: not added to BTC
    assert not st.events
    clock.t += 61.0  # the first BTC liquidation has left the minute
    st.apply(_liq(Exchange.BINANCE, "BTCUSDT", clock.t, 500_000.0))
    st.apply(_liq(Exchange.BINANCE, "BTCUSDT", clock.t - 120.0, 900_000.0))  # arrived late: not in the minute
    assert not st.events
    clock.t += 30.0
    st.apply(_liq(Exchange.DERIBIT, "BTC-PERPETUAL", clock.t, 500_000.0))  # binance + deribit: 1.0M
    events = [(e.kind, e.base, e.exchange, e.value) for e in st.events]
    assert events == [("liquidation", "BTC", "deribit", 1_000_000.0)]


def test_liquidation_events_match_a_full_scan_of_the_minute() -> None:
    """Rolling per-base sums give the events a scan of every liquidation of the last minute gives:
    at each liquidation, once the base's last event is a minute old, sum its liquidations with
    t >= now - 60 s; an event when the sum reaches the limit."""
    import random

    limit = 4_000_000.0
    st, clock = make_state(liquidation_event_usd_per_minute=limit)
    keys = [(Exchange.BYBIT, "BTCUSDT"), (Exchange.BINANCE, "BTCUSDT"), (Exchange.DERIBIT, "BTC-PERPETUAL")]
    for i in range(3):
        for ex in (Exchange.BYBIT, Exchange.OKX):
            st.register(InstrumentInfo(ex, f"A{i}USDT", f"A{i}", "USDT", funding_interval_s=28800))
            keys.append((ex, f"A{i}USDT"))
    rng = random.Random(3)
    seen: list[tuple[str, float, float]] = []  # (base, t, usd)
    last_event: dict[str, float] = {}
    expected = []
    for _ in range(6000):
        clock.t += rng.expovariate(5.0)
        ex, inst = rng.choice(keys)
        usd = rng.lognormvariate(10.0, 1.5)
        st.apply(_liq(ex, inst, clock.t, usd))
        base = st.instruments[(ex, inst)].info.base
        seen.append((base, clock.t, usd))
        if clock.t - last_event.get(base, 0.0) >= 60.0:
            total = sum(u for b, t, u in seen if b == base and t >= clock.t - 60.0)
            if total >= limit:
                last_event[base] = clock.t
                expected.append((base, clock.t, total))
    got = [(e.base, e.at, e.value) for e in st.events if e.kind == "liquidation"][-len(expected) :]
    assert len(expected) > 30  # the stream crosses the limit often, and not always
    assert [(b, t) for b, t, _ in got] == [(b, t) for b, t, _ in expected[-len(got) :]]
    for (_, _, v), (_, _, w) in zip(got, expected[-len(got) :], strict=True):
        assert abs(v - w) <= 1e-9 * w


def test_a_bases_minute_of_liquidations_stays_small_below_the_limit() -> None:
    """The running sum is looked at only at its gate or its due time: below the limit, liquidations
    still leave the base's flow within two minutes (memory bounded by the flow, not by the uptime),
    and a crossing after a long quiet stream is still an event, with the minute's exact sum."""
    st, clock = make_state(liquidation_event_usd_per_minute=1_000_000.0)
    for _ in range(1200):  # 20 minutes, one $1,000 liquidation a second: $60k a minute, no event
        clock.t += 1.0
        st.apply(_liq(Exchange.BYBIT, "BTCUSDT", clock.t, 1_000.0))
    flow = st.instruments[(Exchange.BYBIT, "BTCUSDT")].liq_flow
    assert flow is not None and 60 <= len(flow.entries) <= 121
    assert not st.events
    clock.t += 1.0
    st.apply(_liq(Exchange.BINANCE, "BTCUSDT", clock.t, 940_000.0))  # the minute: 60 x $1,000 + $940k
    assert [(e.kind, e.base, e.value) for e in st.events] == [("liquidation", "BTC", 1_000_000.0)]
    clock.t += 1.0
    st.apply(_liq(Exchange.BINANCE, "BTCUSDT", clock.t, 940_000.0))  # within the event's minute: none
    assert len(st.events) == 1
    clock.t += 60.0
    st.apply(_liq(Exchange.BINANCE, "BTCUSDT", clock.t, 10_000.0))  # the minute: $940k + $10k, no event
    st.apply(_liq(Exchange.BINANCE, "BTCUSDT", clock.t, 50_000.0))  # $1.0M at the same time: the next event
    assert [e.value for e in st.events] == [1_000_000.0, 1_000_000.0]


def test_a_liquidation_or_settlement_of_an_unknown_instrument_or_exchange_is_counted_and_changes_nothing() -> None:
    st, clock = make_state(liquidation_event_usd_per_minute=1_000.0)
    st.apply(_liq(Exchange.BYBIT, "NOPEUSDT", clock.t, 5_000.0))  # not followed
    st.apply_many([_liq(Exchange.DERIBIT, "NOPE-PERPETUAL", clock.t, 5_000.0)], clock.t)
    fresh, _ = make_state()
    fresh.apply(_liq(Exchange.OKX, "BTC-USDT-SWAP", clock.t, 5_000.0))  # no instrument of that exchange
    fresh.apply_many([FundingSettlement(Exchange.OKX, "BTC-USDT-SWAP", clock.t, 1e-4, 28800.0)], clock.t)
    fresh.apply_many([FundingSettlement(Exchange.BYBIT, "NOPEUSDT", clock.t, 1e-4, 28800.0)], clock.t)
    assert st.unknown_instrument_updates == 2 and fresh.unknown_instrument_updates == 3
    assert not st.events and all(s.liq_long_count + s.liq_short_count == 0 for s in st.snapshot())


def test_a_liquidation_never_walks_the_instruments() -> None:
    """O(1) in the number of instruments: a liquidation looks up its own instrument and nothing else."""

    class NoScan(dict):  # type: ignore[type-arg]
        def values(self):  # type: ignore[no-untyped-def]
            raise AssertionError("liquidation scanned every instrument")

        items = keys = __iter__ = values

    st, clock = make_state(liquidation_event_usd_per_minute=1_000.0)
    st.instruments = NoScan(st.instruments)
    for i in range(5):
        clock.t += 1.0
        st.apply(_liq(Exchange.BYBIT, "BTCUSDT", clock.t, 600.0 * (i + 1)))
    assert [e.kind for e in st.events] == ["liquidation"]


def test_samples_are_taken_once_a_minute_and_never_late() -> None:
    st, clock = make_state()
    t0 = clock.t
    for _ in range(31):  # an update every 10 s for 300 s
        st.apply(
            MarketUpdate(
                Exchange.BYBIT, "BTCUSDT", mark_price=101.0, index_price=100.0, funding_rate=1e-4, open_interest_usd=5e6
            )
        )
        clock.t += 10.0
    s = st.instruments[(Exchange.BYBIT, "BTCUSDT")]
    expected = [t0 + 60.0 * k for k in range(6)]  # at 0, 60, ..., 300 s: each on the first update due
    assert [r[0] for r in s.oi_samples] == expected
    assert [r[0] for r in s.anchor_samples] == expected
    assert s.anchor_samples[-1][1:] == (1e-4, 0.01)


def test_a_settlement_repeated_in_every_push_is_stored_once_and_an_older_one_still_merges() -> None:
    """OKX repeats the last settlement in every funding-rate push: the window keeps one record of it
    (and readers' caches stay valid), while an older settlement arriving late is merged in order."""
    st, _ = make_state()
    s = st.instruments[(Exchange.BYBIT, "BTCUSDT")]
    t0 = 1_785_859_200.0
    st.apply_many([FundingSettlement(Exchange.BYBIT, "BTCUSDT", t0, -2e-4, 28800.0)])
    version = s.settlements_version
    for _ in range(3):
        st.apply_many([FundingSettlement(Exchange.BYBIT, "BTCUSDT", t0, -2e-4, 28800.0)])
    assert s.settlement_window() == ((t0, -2e-4),)
    assert s.settlements_version == version
    st.apply_many([FundingSettlement(Exchange.BYBIT, "BTCUSDT", t0 - 28800.0, 1e-4, 28800.0)])
    assert s.settlement_window() == ((t0 - 28800.0, 1e-4), (t0, -2e-4))
    assert s.settlements_version == version + 1


def test_records_keep_each_instruments_values_apart_across_chunks() -> None:
    """More instruments than one chunk of records: every instrument reads back its own values."""
    st = MarketState(clock=Clock())
    n = 700  # chunks of 256 records: three chunks
    for k in range(n):
        st.register(InstrumentInfo(Exchange.OKX, f"C{k}-USDT-SWAP", f"C{k}", "USDT", funding_interval_s=28800))
    for k in range(n):
        st.apply(MarketUpdate(Exchange.OKX, f"C{k}-USDT-SWAP", mark_price=1.0 + k, open_interest_usd=10.0 * k))
    got = [(s.mark_price, s.open_interest_usd, s.index_price, s.funding_rate) for s in st.snapshot()]
    assert got == [(1.0 + k, 10.0 * k, None, None) for k in range(n)]


def test_record_rows_reads_every_instruments_values_in_order() -> None:
    """The bulk read the scrape's views take: each instrument's record, in the order given, with
    None as NaN (the fields by their F_* index)."""
    from array import array

    from exporter.state import F_MARK, F_OI_USD, F_PRICE_AT, F_RATE, RECORD, record_rows

    st = MarketState(clock=Clock())
    n = 300  # more than one chunk of records
    for k in range(n):
        st.register(InstrumentInfo(Exchange.OKX, f"C{k}-USDT-SWAP", f"C{k}", "USDT", funding_interval_s=28800))
    for k in range(n):
        st.apply(MarketUpdate(Exchange.OKX, f"C{k}-USDT-SWAP", mark_price=1.0 + k, open_interest_usd=10.0 * k), 5.0)
    order = st.snapshot()[::-1]
    rows = array("d", record_rows(order))
    assert len(rows) == n * RECORD
    got = [rows[i * RECORD : (i + 1) * RECORD] for i in range(n)]
    assert [(r[F_MARK], r[F_OI_USD], r[F_PRICE_AT]) for r in got] == [(1.0 + k, 10.0 * k, 5.0) for k in range(n)][::-1]
    assert all(r[F_RATE] != r[F_RATE] for r in got)  # never received: NaN
    assert record_rows([]) == b""


def test_an_instrument_state_alone_has_a_record_of_its_own_and_copies_keep_their_values() -> None:
    import copy

    from exporter.state import InstrumentState

    info = InstrumentInfo(Exchange.BYBIT, "ETHUSDT", "ETH", "USDT", funding_interval_s=3600)
    a, b = InstrumentState(info), InstrumentState(info)
    assert (a.mark_price, a.funding_interval_s, a.interval_s, a.price_at, a.funding_extreme) == (
        None,
        None,
        3600,
        0.0,
        False,
    )
    a.mark_price, a.price_at = 5.0, 12.0
    assert (b.mark_price, b.price_at) == (None, 0.0) and a != b
    twin = copy.deepcopy(a)
    assert twin == a
    a.mark_price = None
    assert (a.mark_price, twin.mark_price) == (None, 5.0) and twin != a


def test_funding_events_match_the_limit_applied_to_every_update() -> None:
    """The hot path calls the funding tracker only near its limit: the events are those of a check
    of every update, across interval changes (the limit is per 8 h, the rates per interval)."""
    import random

    limit = 0.001
    st, clock = make_state(funding_event_rate_8h=limit)
    rng = random.Random(4)
    expected, extreme, interval = [], False, 28800.0
    for step in range(2000):
        if step % 250 == 0:
            interval = rng.choice([3600.0, 14400.0, 28800.0])
        per_interval = limit * interval / 28800.0
        # around the limit, now and then exactly at it
        rate = rng.choice([1, -1]) * (per_interval * rng.uniform(0.9, 1.1) if step % 7 else per_interval)
        clock.t += 1.0
        st.apply(MarketUpdate(Exchange.BYBIT, "BTCUSDT", funding_rate=rate, funding_interval_s=interval))
        r8 = rate * 28800.0 / interval
        if abs(r8) >= limit and not extreme:
            expected.append(r8)
        extreme = abs(r8) >= limit
    got = [e.value for e in st.events if e.kind == "funding"]
    assert got == expected[-len(got) :] and len(expected) > 50  # the log keeps the newest events
    assert len(got) == min(len(expected), st.events.maxlen or len(expected))


def test_continuous_funding_is_observed_once_an_hour_however_often_it_updates() -> None:
    st, clock = make_state()
    t0 = clock.t
    for k in range(6 * 30):  # every 2 minutes for six hours
        clock.t = t0 + 120.0 * k
        st.apply(
            MarketUpdate(
                Exchange.DERIBIT,
                "BTC-PERPETUAL",
                event_time=clock.t,
                funding_rate=1e-4 + k * 1e-7,
                funding_rate_8h=1e-4 + k * 1e-7,
            )
        )
    hours = sorted({(t0 + 120.0 * k) // 3600 * 3600 for k in range(6 * 30)})
    s = st.instruments[(Exchange.DERIBIT, "BTC-PERPETUAL")]
    assert [t for t, _ in s.settlement_window()] == hours
    first = {}  # the rate of each hour's first update
    for k in range(6 * 30):
        first.setdefault((t0 + 120.0 * k) // 3600 * 3600, 1e-4 + k * 1e-7)
    assert [r for _, r in s.settlement_window()] == [first[h] for h in hours]


def test_next_funding_steps_store_only_what_the_settlement_tracker_ignores() -> None:
    """The hot path calls the settlement tracker only for a next-funding-time step it could act on:
    settlements, missed settlements and interval changes are those of a state whose tracker sees every
    new next funding time (creeping times, corrections back, rolls at and before settlement, jumps)."""
    import random

    fast, clock = make_state()
    slow, _ = make_state(clock)
    key = (Exchange.BINANCE, "BTCUSDT")
    rng = random.Random(8)
    t = clock.t
    nft = t + 600.0
    steps = (0.001, 0.5, 1.0, 1.000001, -3.0, 10.0, 1000.0, 3539.0, 3540.0, 3600.0, 14400.0, 28800.0, 57600.0, 86400.0)
    for k in range(3000):
        if k % 20 == 0:  # a stream states the interval now and then (20 min: steps of a few intervals)
            interval = rng.choice([1200.0, 3600.0, 14400.0, 28800.0])
            fast.apply(MarketUpdate(*key, funding_interval_s=interval))
            slow.instruments[key].funding_interval_s = interval
        # now before, near or after the stored next funding time (or long after: the stream was away)
        clock.t = t = max(t, nft + rng.choice([-7200.0, -600.0, -6.0, -5.0, -4.0, 0.0, 30.0, 30000.0, 90000.0]))
        nft += rng.choice(steps)
        rate = rng.gauss(1e-4, 5e-5)
        fast.apply(MarketUpdate(*key, event_time=t, funding_rate=rate, next_funding_time=nft))
        s = slow.instruments[key]
        u = MarketUpdate(*key, event_time=t, funding_rate=rate, next_funding_time=nft)
        if s.next_funding_time != nft:  # the tracker on every new next funding time
            slow._next_funding(s, u, nft, s.interval_s, t)
        s.next_funding_time = nft
        s.funding_rate = rate
    a, b = fast.instruments[key], slow.instruments[key]
    assert a.settlement_window() == b.settlement_window() and len(a.settlement_window()) > 50
    assert fast.settlements_missed == slow.settlements_missed and fast.settlements_missed[key] > 100
    assert fast.interval_changes == slow.interval_changes > 10
    assert (a.funding_interval_s, a.next_funding_time) == (b.funding_interval_s, b.next_funding_time)


def test_a_full_update_lets_the_trackers_see_the_values_it_replaces() -> None:
    """An update with every price and funding field (Binance's arrays, Deribit's tickers) is stored in
    one call after the trackers ran: the minute it closes keeps the mark before it, the rollover it
    brings settles the rate before it, and every value and receive time is its own afterwards."""
    st, clock = make_state()
    key = (Exchange.BINANCE, "BTCUSDT")
    t0 = (clock.t // 60.0 + 1) * 60.0  # a minute start ahead
    nft = t0 + 30.0
    clock.t = t0 + 10.0
    st.apply(MarketUpdate(*key, t0 + 10.0, 101.0, 100.5, 0.0002, nft))
    clock.t = nft + 40.0  # the next minute, after the settlement time
    st.apply(MarketUpdate(*key, nft + 40.0, 102.0, 101.5, 0.0003, nft + 28800.0))
    s = st.instruments[key]
    assert list(s.mark_minutes) == [(t0, 101.0)]
    assert s.settlement_window() == ((nft, 0.0002),)
    assert (s.event_time, s.mark_price, s.index_price, s.funding_rate) == (nft + 40.0, 102.0, 101.5, 0.0003)
    assert (s.price_at, s.funding_at, s.next_funding_time) == (clock.t, clock.t, nft + 28800.0)


def counting_sampler(st: MarketState, method: str) -> list[float]:
    """Install a sampler that records the times its ``method`` is called (then does what it does)."""
    from exporter.trackers import Sampler

    calls: list[float] = []
    inner = getattr(Sampler, method)

    def counted(inst: object, now: float) -> None:
        calls.append(now)
        inner(inst, now)

    counting = type("Counting", (Sampler,), {"__slots__": (), method: staticmethod(counted)})
    st._sampler = counting()
    return calls


def test_updates_without_a_premium_leave_the_anchor_sampler_alone_until_one_is_known() -> None:
    """Ticker deltas with a funding rate but no price known yet (no snapshot) take no anchor sample and
    do not call the sampler on every update; the first price makes the sample at once."""
    st, clock = make_state()
    calls = counting_sampler(st, "anchor")
    key = (Exchange.BYBIT, "BTCUSDT")
    t0 = clock.t
    for k in range(600):  # ten a second for a minute
        clock.t = t0 + k * 0.1
        st.apply(MarketUpdate(*key, event_time=clock.t, funding_rate=1e-4 + k * 1e-8, confirms_ticker=True))
    s = st.instruments[key]
    assert len(s.anchor_samples) == 0 and len(calls) == 0
    clock.t += 0.1
    st.apply(MarketUpdate(*key, event_time=clock.t, mark_price=100.2, index_price=100.0, confirms_ticker=True))
    assert [r[0] for r in s.anchor_samples] == [clock.t] and calls == [clock.t]
    assert abs(s.anchor_samples[0][2] - 0.002) < 1e-12  # the premium of that first price


def test_open_interest_without_a_usd_figure_calls_the_sampler_once_a_minute_until_one_is_known() -> None:
    """Open interest in base units only (OKX's pushes before any mark) takes no sample and calls the
    sampler once a minute, not on every update; once a mark gives the USD figure, the first sample
    comes within the minute and the next ones a minute apart."""
    from itertools import pairwise

    st, clock = make_state()
    calls = counting_sampler(st, "open_interest")
    key = (Exchange.BYBIT, "BTCUSDT")
    t0 = clock.t
    for k in range(400):  # three a second for over two minutes
        clock.t = t0 + k / 3.0
        st.apply(MarketUpdate(*key, event_time=clock.t, open_interest_base=1000.0 + k))
    s = st.instruments[key]
    assert len(s.oi_samples) == 0 and s.open_interest_usd is None
    assert len(calls) == 3 and all(59.0 < b - a <= 60.0 for a, b in pairwise(calls))
    clock.t += 0.5
    st.apply(MarketUpdate(*key, event_time=clock.t, mark_price=20.0, open_interest_base=1500.0))
    assert s.open_interest_usd == 1500.0 * 20.0
    before = len(calls)
    while not s.oi_samples:  # an update a second: the first at or after the hint the last call left
        clock.t += 1.0
        st.apply(MarketUpdate(*key, event_time=clock.t, open_interest_base=1600.0))
    assert list(s.oi_samples) == [(clock.t, 1600.0 * 20.0)]
    assert len(calls) == before + 1 and calls[-1] == clock.t and clock.t - calls[-2] < 61.0
    n = len(calls)
    clock.t += 30.0  # within the minute: no sample, no call
    st.apply(MarketUpdate(*key, event_time=clock.t, open_interest_base=1700.0))
    assert len(s.oi_samples) == 1 and len(calls) == n
    clock.t += 30.0
    st.apply(MarketUpdate(*key, event_time=clock.t, open_interest_base=1800.0))
    assert list(s.oi_samples)[-1] == (clock.t, 1800.0 * 20.0) and len(calls) == n + 1
