"""Feed quality: event lag, clock offset, ping round trip and completeness.

The unit tests hold the arithmetic; the simulator tests inject a clock skew, a frame delay and a
stall on one exchange and read the exporter's series back:
offset = injected skew within 10 ms (loopback RTT plus the 1 ms resolution of the stamps); mean lag
with a skewed clock and no delay = our own transport (< 100 ms), with a delay = that transport plus
the delay within 50 ms; gap = stall minus the 1 s cadence within 1.2 s (pushes come on whole
seconds, so the silence seen is 0-1 s longer).
"""

from __future__ import annotations

import pytest
from test_app_sim import get, running, total

from exporter.feeds.server_time import parse_server_time
from exporter.model import Exchange, FundingSettlement, InstrumentInfo, MarketUpdate, ParseError
from exporter.sink import LAG_BUCKETS, ExchangeClock, StreamHealth
from exporter.state import MarketState

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


# ---- against the simulator ------------------------------------------------------------------------

SKEW_S = 0.4
DELAY_S = 0.25
STALL_S = 3.0


async def test_offset_lag_and_gaps_equal_what_the_simulator_injected() -> None:
    poll = {"poll": {"server_time_seconds": 0.3, "open_interest_seconds": 1.0}}
    async with running(binance=poll, okx=poll) as env:
        await env.control(Exchange.BINANCE, "clock", {"skew_s": SKEW_S, "delay_s": 0.0})
        await env.control(Exchange.OKX, "clock", {"skew_s": -SKEW_S, "delay_s": 0.0})

        def offsets_settled(m: dict[str, list[tuple[dict[str, str], float]]]) -> bool:
            b = get(m, "fr_exchange_clock_offset_seconds", exchange="binance")
            o = get(m, "fr_exchange_clock_offset_seconds", exchange="okx")
            return b is not None and o is not None and abs(b - SKEW_S) < 0.01 and abs(o + SKEW_S) < 0.01

        m0 = await env.wait_metrics(offsets_settled, timeout=15)
        rtt = get(m0, "fr_exchange_rtt_seconds", exchange="binance")
        assert rtt is not None and 0.0 <= rtt < 0.5
        # an exchange with no skew, sampled once (at start-up, under load): 0 within half its round trip
        d_off = get(m0, "fr_exchange_clock_offset_seconds", exchange="deribit")
        d_rtt = get(m0, "fr_exchange_rtt_seconds", exchange="deribit")
        assert d_off is not None and d_rtt is not None and abs(d_off) <= d_rtt / 2 + 0.002

        def lag(m: dict[str, list[tuple[dict[str, str], float]]], ex: str, stream: str) -> tuple[float, float]:
            return (
                total(m, "fr_stream_event_lag_seconds_sum", exchange=ex, stream=stream),
                total(m, "fr_stream_event_lag_seconds_count", exchange=ex, stream=stream),
            )

        async def mean_lag(ex: str, stream: str, frames: int = 4) -> float:
            s0, n0 = lag(await env.scrape(), ex, stream)
            m1 = await env.wait_metrics(lambda m: lag(m, ex, stream)[1] >= n0 + frames, timeout=15)
            s1, n1 = lag(m1, ex, stream)
            return (s1 - s0) / (n1 - n0)

        # skewed clocks, no delay: the skew is corrected away, what remains is our own transport
        # (loopback and the shared event loop: tens of ms); uncorrected it would read -0.4 / +0.4 s
        base_b = await mean_lag("binance", "markPrice")
        base_o = await mean_lag("okx", "public")
        assert -0.01 <= base_b < 0.1
        assert -0.01 <= base_o < 0.1
        # the delay adds itself to the lag (the transport measured just before subtracted)
        await env.control(Exchange.BINANCE, "clock", {"skew_s": SKEW_S, "delay_s": DELAY_S})
        delayed = await mean_lag("binance", "markPrice")
        assert delayed - base_b == pytest.approx(DELAY_S, abs=0.05)
        m1 = await env.scrape()

        # a stall: no frame for STALL_S seconds on the binance connection (it stays open)
        g0 = total(m1, "fr_stream_gap_seconds_total", exchange="binance", stream="markPrice")
        e0 = total(m1, "fr_stream_expected_seconds_total", exchange="binance", stream="markPrice")
        msgs0 = total(m1, "fr_stream_messages_total", exchange="binance")
        await env.control(Exchange.BINANCE, "fault", {"kind": "stall", "seconds": STALL_S})
        m2 = await env.wait_metrics(
            lambda m: (
                total(m, "fr_stream_messages_total", exchange="binance") >= msgs0 + 3
                and total(m, "fr_stream_gap_seconds_total", exchange="binance", stream="markPrice") > g0 + 1.0
            ),
            timeout=20,
        )
        m2 = await env.wait_metrics(
            lambda m: (
                total(m, "fr_stream_messages_total", exchange="binance")
                >= total(m2, "fr_stream_messages_total", exchange="binance") + 2
            ),
            timeout=10,
        )
        g2 = total(m2, "fr_stream_gap_seconds_total", exchange="binance", stream="markPrice")
        e2 = total(m2, "fr_stream_expected_seconds_total", exchange="binance", stream="markPrice")
        assert g2 - g0 == pytest.approx(STALL_S - 1.0, abs=1.2)
        assert e2 - e0 >= STALL_S
        # the other exchanges were not stalled: no gap beyond their cadence
        g_dr = total(m2, "fr_stream_gap_seconds_total", exchange="deribit")
        assert g_dr - total(m1, "fr_stream_gap_seconds_total", exchange="deribit") < 0.5
        # a ping round trip where the protocol has one (websocket pings every 20 s: maybe not yet)
        for _lbl, v in m2.get("fr_stream_ping_rtt_seconds", []):
            assert 0.0 <= v < 1.0


def test_simulator_skew_and_delay_options() -> None:
    from exporter.sim.main import per_exchange_seconds

    assert per_exchange_seconds(["binance=0.4", "okx=-0.2"], "skew") == {"binance": 0.4, "okx": -0.2}
    for bad in ("binance", "kraken=1", "okx=soon", "okx=nan"):
        with pytest.raises(ValueError, match="EXCHANGE=SECONDS"):
            per_exchange_seconds([bad], "skew")
