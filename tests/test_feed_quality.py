"""Feed quality: event lag, clock offset, ping round trip and completeness.

The unit tests hold the arithmetic; the simulator test injects a clock skew, a frame delay and a
stall on one exchange and reads the exporter's series back, on a VirtualClock shared by the
simulator and the exporter (our own transport takes no time on it): offset = injected skew, mean lag
with a skewed clock and no delay = 0, with a delay = the delay, each within 2 ms (the stamps are
whole milliseconds); gap = the silence seen minus the 1 s cadence exactly, the silence being the
stall plus at most a cadence (pushes come on whole seconds).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_app_sim import get, total
from test_replay import TICK, Live, live_exporter

from exporter.feeds.server_time import parse_server_time
from exporter.model import Exchange, FundingSettlement, InstrumentInfo, MarketUpdate, ParseError
from exporter.sink import LAG_BUCKETS, ExchangeClock, StreamHealth
from exporter.state import MarketState

pytestmark = pytest.mark.slow(seconds=4)  # the file: a live simulator run with injected lag and gaps

# ---- arithmetic ---------------------------------------------------------------------------------


def test_lag_buckets_span_1ms_to_10s_and_observations_land_in_the_right_bucket() -> None:
    assert LAG_BUCKETS[0] == 0.001 and LAG_BUCKETS[-1] == 10.0
    h = StreamHealth(Exchange.BINANCE, "markPrice")
    for lag in (-0.002, 0.001, 0.0011, 0.3, 11.0):
        h.observe_lag(lag)
    assert h.lag_counts[0] == 2  # a negative lag (clock noise) and exactly 1 ms: le="0.001"
    assert h.lag_counts[1] == 1  # 1.1 ms: le="0.0025"
    assert h.lag_counts[LAG_BUCKETS.index(0.5)] == 1
    assert h.lag_counts[-1] == 1  # beyond 10 s: only +Inf
    assert h.lag_count == 5 and h.lag_sum == pytest.approx(-0.002 + 0.001 + 0.0011 + 0.3 + 11.0)


def test_completeness_counts_silence_beyond_the_cadence_and_only_grows() -> None:
    h = StreamHealth(Exchange.BINANCE, "markPrice", cadence_s=1.0)
    h.expect_from(100.0)
    for t in (101.0, 102.0, 103.0, 110.0, 111.0):  # one 7 s silence: 6 s beyond the cadence
        h.spoke(t)
    assert (h.expected_s, h.gap_s) == (11.0, 6.0)
    # an ongoing silence shows at read time, and the next frame accounts for exactly that
    assert h.completeness(114.5) == (14.5, 8.5)
    h.spoke(115.0)
    assert h.completeness(115.0) == (15.0, 9.0)
    assert h.completeness(115.5) == (15.5, 9.0)


def test_exchange_clock_takes_the_offset_of_the_lowest_round_trip() -> None:
    c = ExchangeClock(Exchange.OKX)
    c.sample(sent=100.0, server=100.55, received=100.1)  # rtt 100 ms, offset +0.5
    c.sample(sent=200.0, server=200.31, received=200.02)  # rtt 20 ms, offset +0.3: the better one
    c.sample(sent=300.0, server=301.0, received=300.5)  # rtt 500 ms (queued somewhere): ignored
    assert c.offset_s == pytest.approx(0.3)
    assert c.rtt_s == pytest.approx(0.5)  # the last round trip is what is shown
    assert c.samples == 3


@pytest.mark.parametrize(
    ("exchange", "body"),
    [
        (Exchange.BINANCE, b'{"serverTime": 1700000000123}'),
        (Exchange.BYBIT, b'{"retCode":0,"result":{"timeSecond":"1700000000","timeNano":"1700000000123000000"}}'),
        (Exchange.OKX, b'{"code":"0","data":[{"ts":"1700000000123"}],"msg":""}'),
        (Exchange.DERIBIT, b'{"jsonrpc":"2.0","result":1700000000123}'),
    ],
)
def test_server_time_bodies(exchange: Exchange, body: bytes) -> None:
    assert parse_server_time(exchange, body) == pytest.approx(1700000000.123)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "invalid_json"),
        (b'{"serverTime": "soon"}', "not_a_number"),
        (b'{"time": 1}', "missing_field"),
        (b'{"serverTime": 12}', "timestamp_out_of_range"),
    ],
)
def test_bad_server_time_is_a_parse_error(body: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_server_time(Exchange.BINANCE, body)
    assert err.value.reason == reason


def test_settlements_that_passed_unseen_are_counted_unless_the_history_has_them() -> None:
    now = [1_700_000_000.0]
    state = MarketState(clock=lambda: now[0])
    info = InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=3600.0)
    state.register(info)
    t0 = 1_700_003_600.0
    state.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_rate=1e-4, next_funding_time=t0))
    # the stream is away for three settlements; the history shows only the middle one
    state.apply(FundingSettlement(Exchange.BINANCE, "BTCUSDT", t0 + 3600.0, 2e-4))
    now[0] = t0 + 3 * 3600.0 + 10.0
    state.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_rate=1e-4, next_funding_time=t0 + 4 * 3600.0))
    # t0 is inferred from the stream (the rate in force), t0+1h from the history, t0+2h and t0+3h missed
    assert state.settlements_missed == {(Exchange.BINANCE, "BTCUSDT"): 2}
    # the next one seen normally adds nothing
    now[0] = t0 + 4 * 3600.0 + 5.0
    state.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT", funding_rate=1e-4, next_funding_time=t0 + 5 * 3600.0))
    assert state.settlements_missed == {(Exchange.BINANCE, "BTCUSDT"): 2}


def test_the_missed_settlement_counter_lines_follow_the_counts_and_the_instruments() -> None:
    """fr_funding_settlements_missed_total has a line per instrument, from 0; its lines are kept from
    one scrape to the next while the counts and the instruments stay the same: a new count, a new
    instrument and a count of 1e6 and more (Go's exponent form) each show in the next scrape."""
    from prometheus_client import generate_latest

    from exporter.config import Config
    from exporter.metrics import build_registry

    state = MarketState(clock=lambda: 1_700_000_000.0)
    for sym in ("BTCUSDT", "ETHUSDT"):
        state.register(InstrumentInfo(Exchange.BINANCE, sym, sym[:3], "USDT", funding_interval_s=3600.0))
    reg = build_registry(Config(), state, process=False)
    name = b"fr_funding_settlements_missed_total"

    def lines() -> list[bytes]:
        body = reg.render()
        assert body == generate_latest(reg)
        return [ln for ln in body.splitlines() if ln.startswith(name + b"{")]

    zero = lines()
    assert zero == [
        name + b'{exchange="binance",instrument="BTCUSDT"} 0.0',
        name + b'{exchange="binance",instrument="ETHUSDT"} 0.0',
    ]
    assert lines() == zero
    state.settlements_missed[(Exchange.BINANCE, "ETHUSDT")] = 2
    assert lines()[1] == name + b'{exchange="binance",instrument="ETHUSDT"} 2.0'
    state.register(InstrumentInfo(Exchange.BINANCE, "ADAUSDT", "ADA", "USDT", funding_interval_s=3600.0))
    assert lines()[0] == name + b'{exchange="binance",instrument="ADAUSDT"} 0.0'
    state.settlements_missed[(Exchange.BINANCE, "BTCUSDT")] = 1_500_000
    assert lines()[1] == name + b'{exchange="binance",instrument="BTCUSDT"} 1.5e+06'


# ---- against the simulator ------------------------------------------------------------------------

SKEW_S = 0.4
DELAY_S = 0.25
STALL_S = 3.0
STAMP_S = 0.002  # the stamps are whole milliseconds (server time and event times): 1 ms each way

Metrics = dict[str, list[tuple[dict[str, str], float]]]


def scrape(live: Live) -> Metrics:
    out: Metrics = {}
    for fam in text_string_to_metric_families(live.exporter.registry.render().decode()):
        for smp in fam.samples:
            out.setdefault(smp.name, []).append((dict(smp.labels), float(smp.value)))
    return out


def lag(m: Metrics, ex: str, stream: str) -> tuple[float, float]:
    return (
        total(m, "fr_stream_event_lag_seconds_sum", exchange=ex, stream=stream),
        total(m, "fr_stream_event_lag_seconds_count", exchange=ex, stream=stream),
    )


async def mean_lag(live: Live, ex: str, stream: str, ticks: int = 8) -> float:
    s0, n0 = lag(scrape(live), ex, stream)
    for _ in range(ticks):
        await live.tick()
    s1, n1 = lag(scrape(live), ex, stream)
    assert n1 > n0, (ex, stream)
    return (s1 - s0) / (n1 - n0)


async def test_offset_lag_and_gaps_equal_what_the_simulator_injected() -> None:
    """The simulator and the exporter share a VirtualClock moved tick by tick, every frame read before
    the next tick: our own transport takes no time, so what is measured is what was injected, to the
    stamps' millisecond (STAMP_S)."""
    poll = {"poll": {"server_time_seconds": 0.5, "open_interest_seconds": 1.0}}

    async def skew(sim: Any, http: httpx.AsyncClient) -> None:
        for ex, s in ((Exchange.BINANCE, SKEW_S), (Exchange.OKX, -SKEW_S)):
            r = await http.post(sim.urls(ex)[1] + "/_sim/clock", json={"skew_s": s, "delay_s": 0.0})
            assert r.status_code == 200, r.text

    async with live_exporter(setup=skew, binance=poll, okx=poll) as live:
        for _ in range(4):
            await live.tick()
        m0 = scrape(live)
        b_off = get(m0, "fr_exchange_clock_offset_seconds", exchange="binance")
        o_off = get(m0, "fr_exchange_clock_offset_seconds", exchange="okx")
        d_off = get(m0, "fr_exchange_clock_offset_seconds", exchange="deribit")
        assert b_off == pytest.approx(SKEW_S, abs=STAMP_S)
        assert o_off == pytest.approx(-SKEW_S, abs=STAMP_S)
        assert d_off == pytest.approx(0.0, abs=STAMP_S)
        rtt = get(m0, "fr_exchange_rtt_seconds", exchange="binance")
        assert rtt is not None and 0.0 <= rtt <= TICK  # answered within the tick it was asked in

        # skewed clocks, no delay: the skew is corrected away (uncorrected it would read -0.4 / +0.4 s)
        assert await mean_lag(live, "binance", "markPrice") == pytest.approx(0.0, abs=STAMP_S)
        assert await mean_lag(live, "okx", "public") == pytest.approx(0.0, abs=STAMP_S)
        # a delay is the lag
        r = await live.http.post(
            live.sim.urls(Exchange.BINANCE)[1] + "/_sim/clock", json={"skew_s": SKEW_S, "delay_s": DELAY_S}
        )
        assert r.status_code == 200, r.text
        assert await mean_lag(live, "binance", "markPrice") == pytest.approx(DELAY_S, abs=STAMP_S)

        # a stall: no frame for STALL_S seconds on the binance connection (it stays open)
        h = live.exporter.state.streams[(Exchange.BINANCE, "markPrice")]
        m1 = scrape(live)
        g0 = total(m1, "fr_stream_gap_seconds_total", exchange="binance", stream="markPrice")
        e0 = total(m1, "fr_stream_expected_seconds_total", exchange="binance", stream="markPrice")
        gd0 = total(m1, "fr_stream_gap_seconds_total", exchange="deribit")
        last_before = h.last_parsed_at
        binance = live.sim.urls(Exchange.BINANCE)[1]
        r = await live.http.post(binance + "/_sim/fault", json={"kind": "stall", "seconds": 600})
        assert r.status_code == 200, r.text
        for _ in range(round(STALL_S / TICK)):
            await live.tick()
        assert h.last_parsed_at == last_before, "the stalled exchange still spoke"
        r = await live.http.post(binance + "/_sim/fault", json={"kind": "stall", "seconds": 0})  # over
        assert r.status_code == 200, r.text
        while h.last_parsed_at == last_before:  # the next push (on a whole second)
            await live.tick()
        silence = h.last_parsed_at - last_before
        for _ in range(4):
            await live.tick()
        m2 = scrape(live)
        g2 = total(m2, "fr_stream_gap_seconds_total", exchange="binance", stream="markPrice")
        e2 = total(m2, "fr_stream_expected_seconds_total", exchange="binance", stream="markPrice")
        # the silence seen is the stall plus at most one cadence (pushes come on whole seconds) ...
        assert STALL_S <= silence <= STALL_S + 1.0 + TICK
        # ... and the gap is the silence beyond the 1 s cadence, exactly
        assert g2 - g0 == pytest.approx(silence - 1.0, abs=1e-9)
        assert e2 - e0 >= STALL_S
        # the other exchanges were not stalled: no gap beyond their cadence
        assert total(m2, "fr_stream_gap_seconds_total", exchange="deribit") - gd0 < 0.5
        # a ping round trip where the protocol has one (websocket pings every 20 s: maybe not yet)
        for _lbl, v in m2.get("fr_stream_ping_rtt_seconds", []):
            assert 0.0 <= v < 1.0


def test_simulator_skew_and_delay_options() -> None:
    from exporter.sim.main import per_exchange_seconds

    assert per_exchange_seconds(["binance=0.4", "okx=-0.2"], "skew") == {"binance": 0.4, "okx": -0.2}
    for bad in ("binance", "kraken=1", "okx=soon", "okx=nan"):
        with pytest.raises(ValueError, match="EXCHANGE=SECONDS"):
            per_exchange_seconds([bad], "skew")
