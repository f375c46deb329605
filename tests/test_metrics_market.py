"""Market, cross-exchange and health collectors: staleness, fr_up, read-only scrapes."""

from __future__ import annotations

import copy
import gc
import platform
import threading
from collections.abc import Iterable

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from support.clock import ManualClock as Clock

from exporter import __version__
from exporter.build import git_revision
from exporter.config import Config
from exporter.metrics import build_registry
from exporter.model import (
    EIGHT_HOURS,
    Exchange,
    InstrumentInfo,
    InsuranceFund,
    Liquidation,
    LongShortRatio,
    MarketUpdate,
    Side,
)
from exporter.state import MarketState

pytestmark = pytest.mark.slow(seconds=4)  # the file: scrapes concurrent with writes

T0 = 1_700_000_000.0
BTC = {"exchange": "binance", "instrument": "BTCUSDT", "base": "BTC", "quote": "USDT"}


def populated() -> tuple[Clock, MarketState]:
    clock = Clock()
    state = MarketState(clock=clock)
    st = state.register(
        InstrumentInfo(
            Exchange.BINANCE,
            "BTCUSDT",
            "BTC",
            "USDT",
            funding_interval_s=EIGHT_HOURS,
            funding_cap=0.003,
            funding_floor=-0.003,
        )
    )
    state.add_settlements(st, [(T0 - i * EIGHT_HOURS, 1e-4 + 1e-5 * (i % 4)) for i in range(1, 60)])
    state.apply(
        MarketUpdate(
            Exchange.BINANCE,
            "BTCUSDT",
            mark_price=50_050.0,
            index_price=50_000.0,
            funding_rate=2e-4,
            next_funding_time=T0 + 3600,
            open_interest_usd=2e9,
        )
    )
    state.apply(LongShortRatio(Exchange.BINANCE, "BTCUSDT", T0, 1.3))
    state.apply(InsuranceFund(Exchange.BINANCE, "USDT", T0, 1e9))
    h = state.stream(Exchange.BINANCE, "markPrice")
    h.connected, h.last_message_at, h.last_parsed_at, h.messages = True, T0, T0, 10
    state.register_exchange(Exchange.OKX)
    return clock, state


def value(reg, name: str, labels: dict[str, str] | None = None) -> float | None:
    return reg.get_sample_value(name, labels if labels is not None else BTC)


def test_fresh_values_are_exported() -> None:
    _, state = populated()
    reg = build_registry(Config(), state)
    assert value(reg, "fr_funding_rate") == 2e-4
    assert value(reg, "fr_mark_price") == 50_050.0
    assert value(reg, "fr_index_price") == 50_000.0
    assert value(reg, "fr_premium_ratio") == pytest.approx(0.001)
    assert value(reg, "fr_open_interest_usd") == 2e9
    assert value(reg, "fr_long_short_account_ratio") == 1.3
    assert value(reg, "fr_next_funding_timestamp_seconds") == T0 + 3600
    assert value(reg, "fr_funding_cap_ratio") == 0.003
    assert value(reg, "fr_funding_floor_ratio") == -0.003
    assert value(reg, "fr_funding_zscore") is not None
    assert value(reg, "fr_edge_bp", {**BTC, "side": "short"}) is not None
    assert value(reg, "fr_insurance_fund_balance_usd", {"exchange": "binance", "pool": "USDT"}) == 1e9
    build = {"version": __version__, "revision": git_revision(), "python_version": platform.python_version()}
    assert value(reg, "fr_build_info", build) == 1.0


def test_stale_values_disappear_with_their_derived_values() -> None:
    clock, state = populated()
    cfg = Config()
    reg = build_registry(cfg, state)
    clock.t = T0 + 31  # price limit 30 s
    assert value(reg, "fr_mark_price") is None
    assert value(reg, "fr_index_price") is None
    assert value(reg, "fr_premium_ratio") is None
    assert value(reg, "fr_funding_rate") == 2e-4  # funding limit is 120 s
    clock.t = T0 + 121
    for name in (
        "fr_funding_rate",
        "fr_funding_rate_annualized_ratio",
        "fr_funding_zscore",
        "fr_funding_momentum",
        "fr_funding_acceleration",
        "fr_next_funding_timestamp_seconds",
    ):
        assert value(reg, name) is None, name
    assert value(reg, "fr_edge_bp", {**BTC, "side": "short"}) is None
    assert value(reg, "fr_oi_weighted_funding_rate", {"base": "BTC"}) is None
    assert value(reg, "fr_open_interest_usd") == 2e9  # OI limit 300 s
    # Instrument facts stay; counters stay.
    assert value(reg, "fr_funding_interval_seconds") == EIGHT_HOURS
    assert value(reg, "fr_liquidations_total", {**BTC, "side": "long"}) == 0.0
    clock.t = T0 + 301
    assert value(reg, "fr_open_interest_usd") is None
    assert value(reg, "fr_long_short_account_ratio") == 1.3  # 1800 s
    clock.t = T0 + 1801
    assert value(reg, "fr_long_short_account_ratio") is None
    clock.t = T0 + 7201
    assert value(reg, "fr_insurance_fund_balance_usd", {"exchange": "binance", "pool": "USDT"}) is None
    # A fresh update brings them back.
    state.apply(
        MarketUpdate(
            Exchange.BINANCE,
            "BTCUSDT",
            mark_price=1.0,
            index_price=1.0,
            funding_rate=1e-4,
            next_funding_time=clock.t + 3600,
        )
    )
    assert value(reg, "fr_mark_price") == 1.0 and value(reg, "fr_funding_rate") == 1e-4


def test_stale_limits_are_per_exchange() -> None:
    clock, state = populated()
    cfg = Config.model_validate({"exchanges": {"binance": {"stale": {"price_seconds": 5}}}})
    reg = build_registry(cfg, state)
    clock.t = T0 + 6
    assert value(reg, "fr_mark_price") is None


def test_fr_up_follows_connection_and_freshness_and_is_always_present() -> None:
    clock, state = populated()
    reg = build_registry(Config(), state)
    assert value(reg, "fr_up", {"exchange": "binance"}) == 1.0
    assert value(reg, "fr_up", {"exchange": "okx"}) == 0.0  # configured, no stream at all
    clock.t = T0 + 31  # stream_seconds 30
    assert value(reg, "fr_up", {"exchange": "binance"}) == 0.0
    h0 = state.stream(Exchange.BINANCE, "markPrice")
    h0.last_message_at = h0.last_parsed_at = clock.t
    assert value(reg, "fr_up", {"exchange": "binance"}) == 1.0
    state.stream(Exchange.BINANCE, "markPrice").connected = False
    assert value(reg, "fr_up", {"exchange": "binance"}) == 0.0
    # One fresh connected stream is enough.
    h = state.stream(Exchange.BINANCE, "forceOrder")
    h.connected, h.last_message_at, h.last_parsed_at = True, clock.t, clock.t
    assert value(reg, "fr_up", {"exchange": "binance"}) == 1.0
    assert value(reg, "fr_stream_connected", {"exchange": "binance", "stream": "markPrice"}) == 0.0
    assert (
        value(reg, "fr_stream_last_message_timestamp_seconds", {"exchange": "binance", "stream": "forceOrder"})
        == clock.t
    )


def test_health_counters() -> None:
    _, state = populated()
    h = state.stream(Exchange.BINANCE, "markPrice")
    h.reconnects, h.parse_errors = 2, 3
    r = state.rest_endpoint(Exchange.BINANCE, "openInterest")
    r.requests, r.failures["rate_limited"], r.last_success_at = 7, 1, T0
    reg = build_registry(Config(), state)
    lb = {"exchange": "binance", "stream": "markPrice"}
    assert value(reg, "fr_stream_messages_total", lb) == 10
    assert value(reg, "fr_stream_reconnects_total", lb) == 2
    assert value(reg, "fr_parse_errors_total", lb) == 3
    ep = {"exchange": "binance", "endpoint": "openInterest"}
    assert value(reg, "fr_rest_requests_total", ep) == 7
    assert value(reg, "fr_rest_request_failures_total", {**ep, "reason": "rate_limited"}) == 1
    assert value(reg, "fr_rest_last_success_timestamp_seconds", ep) == T0


def test_stream_and_rest_endpoint_of_the_same_name_keep_their_own_label_names() -> None:
    """The health collector caches label sets; a stream and an endpoint both called "public" on one
    exchange must still give {exchange, stream} and {exchange, endpoint}, not one of them twice."""
    _, state = populated()
    h = state.stream(Exchange.OKX, "public")
    h.connected, h.last_message_at, h.last_parsed_at, h.messages = True, T0, T0, 4
    state.rest_endpoint(Exchange.OKX, "public").requests = 9
    reg = build_registry(Config(), state)
    assert value(reg, "fr_stream_messages_total", {"exchange": "okx", "stream": "public"}) == 4
    assert value(reg, "fr_rest_requests_total", {"exchange": "okx", "endpoint": "public"}) == 9


def test_liquidation_counters_start_at_zero_and_count_per_side() -> None:
    _, state = populated()
    reg = build_registry(Config(), state)
    assert value(reg, "fr_liquidations_total", {**BTC, "side": "short"}) == 0.0
    state.apply(Liquidation(Exchange.BINANCE, "BTCUSDT", T0, Side.LONG, 50_000.0, 2.0, 100_000.0))
    state.apply(Liquidation(Exchange.BINANCE, "BTCUSDT", T0, Side.LONG, 50_000.0, 1.0, 50_000.0))
    assert value(reg, "fr_liquidations_total", {**BTC, "side": "long"}) == 2.0
    assert value(reg, "fr_liquidated_notional_usd_total", {**BTC, "side": "long"}) == 150_000.0
    assert value(reg, "fr_liquidations_total", {**BTC, "side": "short"}) == 0.0


def test_scrapes_never_mutate_state() -> None:
    clock, state = populated()
    state.apply(Liquidation(Exchange.BINANCE, "BTCUSDT", T0, Side.SHORT, 50_000.0, 1.0, 50_000.0))
    for t in range(0, 120, 7):
        clock.t = T0 + t
        state.apply(
            MarketUpdate(
                Exchange.BINANCE, "BTCUSDT", mark_price=50_000.0 + t, index_price=50_000.0, funding_rate=1e-4 + t * 1e-7
            )
        )
    before = copy.deepcopy(
        (
            state.instruments,
            state.streams,
            state.rest,
            state.insurance,
            state.exchanges,
            list(state.events),
            state.unknown_instrument_updates,
        )
    )
    reg = build_registry(Config(), state)
    for t in (0, 50, 500, 5000):
        clock.t = T0 + 120 + t
        reg.render()
        reg.render(openmetrics=True)
        generate_latest(reg)
    after = (
        state.instruments,
        state.streams,
        state.rest,
        state.insurance,
        state.exchanges,
        list(state.events),
        state.unknown_instrument_updates,
    )
    assert after == before


def test_no_created_series_and_help_on_every_family() -> None:
    _, state = populated()
    reg = build_registry(Config(), state)
    families = list(reg.collect())
    assert families
    for mf in families:
        assert mf.documentation.strip(), mf.name
        for s in mf.samples:
            assert not s.name.endswith("_created"), s.name
            assert s.timestamp is None


class PositionsCollector:
    """Stand-in for another team's collector registered on the same registry."""

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily("fr_liq_gap_pct", "Distance to liquidation, percent of mark.", labels=["position"])
        g.add_metric(["carry-btc"], 42.5)
        yield g


def test_extra_collectors_are_rendered() -> None:
    _, state = populated()
    reg = build_registry(Config(), state, extra_collectors=[PositionsCollector()])
    assert value(reg, "fr_liq_gap_pct", {"position": "carry-btc"}) == 42.5
    assert b'fr_liq_gap_pct{position="carry-btc"} 42.5\n' in reg.render()
    late = PositionsCollector()
    reg2 = build_registry(Config(), state)
    reg2.register(late)
    assert b"fr_liq_gap_pct" in reg2.render()
    reg2.unregister(late)
    assert b"fr_liq_gap_pct" not in reg2.render()


def test_unknown_interval_hides_only_interval_derived_values() -> None:
    clock = Clock()
    state = MarketState(clock=clock)
    state.register(InstrumentInfo(Exchange.OKX, "ETH-USDT-SWAP", "ETH", "USDT"))
    state.apply(MarketUpdate(Exchange.OKX, "ETH-USDT-SWAP", funding_rate=1e-4))
    reg = build_registry(Config(), state)
    lb = {"exchange": "okx", "instrument": "ETH-USDT-SWAP", "base": "ETH", "quote": "USDT"}
    assert value(reg, "fr_funding_rate", lb) == 1e-4
    assert value(reg, "fr_funding_interval_seconds", lb) is None
    assert value(reg, "fr_funding_rate_annualized_ratio", lb) is None


def test_concurrent_scrapes_while_state_is_written() -> None:
    """Scrapes run in server threads while the event loop writes: no error, every output parses."""
    _, state = populated()
    reg = build_registry(Config(), state)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            inst = f"X{i % 300}USDT"
            if (Exchange.BYBIT, inst) not in state.instruments:
                st = state.register(
                    InstrumentInfo(Exchange.BYBIT, inst, f"X{i % 300}", "USDT", funding_interval_s=3600.0)
                )
            else:
                st = state.instruments[(Exchange.BYBIT, inst)]
            state.apply(
                MarketUpdate(
                    Exchange.BYBIT,
                    inst,
                    mark_price=1.0 + i,
                    index_price=1.0,
                    funding_rate=1e-5 * i,
                    open_interest_usd=1e6,
                )
            )
            state.add_settlements(st, [(T0 - 3600.0 * (i % 50), 1e-5 * (i % 7))])
            state.apply(Liquidation(Exchange.BYBIT, inst, T0, Side.LONG, 1.0, 1.0, 1.0))

    def scraper() -> None:
        try:
            for k in range(6):  # 4 threads x 6 renders, each against a state being written
                body = reg.render(openmetrics=bool(k % 2)).decode()
                if not k % 2:
                    assert list(text_string_to_metric_families(body))
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    w = threading.Thread(target=writer)
    w.start()
    scrapers = [threading.Thread(target=scraper) for _ in range(4)]
    for t in scrapers:
        t.start()
    for t in scrapers:
        t.join(60)
    stop.set()
    w.join(10)
    assert not errors, errors
    assert value(reg, "fr_funding_rate") == 2e-4


def test_cross_label_sets_are_reused_at_any_market_size_and_dropped_with_their_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fr_funding_spread_bp's label sets are built once per (base, pair of exchanges), also when a
    scrape uses more than 10,000 of them (8,000 instruments: a fixed-size cache was cleared and
    rebuilt every scrape), and those of a base that left the market are dropped."""
    from exporter.analytics.cross import FundingColumns, FundingPoint
    from exporter.metrics.market import CrossCollector
    from exporter.views import MarketViews, RenderErrors

    views = MarketViews(Config(), MarketState(clock=Clock(T0)), RenderErrors())
    exchanges = ("binance", "bybit", "okx", "deribit")

    def market(bases: range) -> list[FundingPoint]:
        return [
            FundingPoint(f"B{b}", ex, f"B{b}-{ex}", 1e-4 * (k + 1) + 1e-6 * b, 1e6, 2.0)
            for b in bases
            for k, ex in enumerate(exchanges)
        ]

    points = market(range(2000))
    monkeypatch.setattr(views, "funding_columns", lambda _views: FundingColumns.from_points(points))
    collector = CrossCollector(views)
    first = collector.families([])
    spreads = first[1].labels
    assert len(spreads) > 10_000  # every pair of four exchanges, both ways, per base
    again = collector.families([])
    assert all(a is b for a, b in zip(again[1].labels, spreads, strict=True))
    points = market(range(2000, 2010))  # the market changed: 2,000 bases left
    collector.families([])
    collector.families([])
    assert len(collector._labels) < 200


class _GcProbe:
    """A collector that records whether the cyclic collector runs while the registry renders it,
    and can hold its render open until told to finish."""

    def __init__(self) -> None:
        self.seen: list[bool] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def collect(self) -> Iterable[Metric]:
        self.seen.append(gc.isenabled())
        self.entered.set()
        assert self.release.wait(30)
        yield GaugeMetricFamily("probe_value", "probe", value=1.0)


def test_the_garbage_collector_pauses_for_a_render_and_comes_back_after_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clock, state = populated()
    reg = build_registry(Config(), state, process=False)
    probe = _GcProbe()
    reg.register(probe)
    assert gc.isenabled()
    reg.render()
    assert probe.seen == [False] and gc.isenabled()
    # two renders overlapping (the /metrics and /api/state threads): on again only after both
    probe.release.clear()
    slow = threading.Thread(target=reg.render)
    slow.start()
    assert probe.entered.wait(30)
    other = build_registry(Config(), state, process=False)
    other.render()
    assert not gc.isenabled()  # the first render is still running
    probe.release.set()
    slow.join(30)
    assert gc.isenabled()
    # a render that fails does not leave the collector off; one turned off before stays off
    import exporter.metrics as metrics

    def broken(*_args: object) -> bytes:
        raise RuntimeError("renderer failed")

    with monkeypatch.context() as mp:
        mp.setattr(metrics, "render", broken)
        with pytest.raises(RuntimeError):
            reg.render()
    assert gc.isenabled()
    gc.disable()
    try:
        reg.render()
        assert not gc.isenabled()
    finally:
        gc.enable()
