"""The fast renderer against prometheus_client's own encoders, promtool, and content negotiation."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_om
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from support import needs_tool

from exporter.config import Config
from exporter.metrics import build_registry
from exporter.metrics.exposition import (
    EMPTY_LABELS,
    LabelSet,
    Spec,
    accepts_gzip,
    format_value,
    maybe_gzip,
    render,
    wants_openmetrics,
)
from exporter.model import EIGHT_HOURS, Exchange, InstrumentInfo, InsuranceFund, Liquidation, MarketUpdate, Side
from exporter.server import start_server
from exporter.state import MarketState

T0 = 1_700_000_000.0
NASTY = 'we"ird\\inst\nrument ünï'  # quote, backslash, newline and non-ASCII in one label value


class OtherCollector:
    """Families of every type, with values the formatter must get right."""

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily("x_values", 'Special values; HELP with "quotes", \\ and\nnewline.', labels=["k"])
        for k, v in (  # NaN and the infinities are never rendered: see test_non_finite_samples_are_left_out
            ("big", 1234567.0),
            ("huge", 1e22),
            ("tiny", 1.5e-12),
            ("neg", -2.5e7),
            ("int", 3),
            ("zero", 0.0),
            ("million", 1e6),
            ("esc", 1.0),
        ):
            g.add_metric([NASTY if k == "esc" else k], v)
        yield g
        c = CounterMetricFamily("x_events", "Events.", labels=["side"])
        c.add_metric(["long"], 4)
        yield c
        h = HistogramMetricFamily("x_latency_seconds", "Latency.", labels=["path"])
        h.add_metric(["/m"], buckets=[("0.1", 2.0), ("1.0", 5.0), ("+Inf", 6.0)], sum_value=3.5)
        yield h
        s = SummaryMetricFamily("x_size_bytes", "Sizes.", count_value=3, sum_value=12.0)
        yield s
        i = InfoMetricFamily("x_build", "Build.", value={"version": "1.2", "rev": 'a"b'})
        yield i
        yield GaugeMetricFamily("x_no_labels", "A plain gauge.", value=7.25)


def rich_state() -> MarketState:
    state = MarketState(clock=lambda: T0)
    for ex, inst, base, quote, interval in (
        (Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", EIGHT_HOURS),
        (Exchange.BYBIT, NASTY, 'BT"C', "USDT", 3600.0),
        (Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT", EIGHT_HOURS),
        (Exchange.DERIBIT, "BTC-PERPETUAL", "BTC", "USD", EIGHT_HOURS),
    ):
        st = state.register(InstrumentInfo(ex, inst, base, quote, funding_interval_s=interval, funding_cap=0.003))
        state.add_settlements(st, [(T0 - i * interval, 1e-4 * ((i * 7) % 5 - 1)) for i in range(1, 80)])
        state.apply(
            MarketUpdate(
                ex,
                inst,
                mark_price=50_000.5,
                index_price=49_990.25,
                funding_rate=3e-4,
                next_funding_time=T0 + 1800,
                open_interest_usd=1.23456789e9,
            )
        )
        state.apply(Liquidation(ex, inst, T0, Side.SHORT, 50_000.0, 0.5, 25_000.0))
    state.apply(InsuranceFund(Exchange.BINANCE, 'pool "a"', T0, 5.5e8))
    h = state.stream(Exchange.BINANCE, "markPrice")
    h.connected, h.last_message_at, h.last_parsed_at, h.messages = True, T0 - 1, T0 - 1, 99
    state.rest_endpoint(Exchange.OKX, "openInterest").failures["http_5xx"] = 2
    return state


def registry():
    # no process_* here: CPU seconds move between the two renders these tests compare
    return build_registry(Config(), rich_state(), extra_collectors=[OtherCollector()], process=False)


def normalise(families) -> list[tuple]:
    out = []
    for f in families:
        samples = sorted(
            (s.name, tuple(sorted(s.labels.items())), "nan" if math.isnan(s.value) else s.value) for s in f.samples
        )
        out.append((f.name, f.type, f.documentation, samples))
    return out


def test_text_is_identical_to_generate_latest() -> None:
    reg = registry()
    ours = reg.render()
    assert ours == generate_latest(reg)
    assert b'instrument="we\\"ird\\\\inst\\nrument \xc3\xbcn\xc3\xaf"' in ours


def test_text_parses_to_the_same_families_as_generate_latest() -> None:
    reg = registry()
    ours = normalise(parse_text(reg.render().decode()))
    theirs = normalise(parse_text(generate_latest(reg).decode()))
    assert ours == theirs
    names = {f[0] for f in ours}
    assert {"fr_funding_rate", "fr_edge_bp", "fr_liquidations", "fr_up", "x_values", "x_latency_seconds"} <= names
    nasty = [s for f in ours if f[0] == "fr_mark_price" for s in f[3] if dict(s[1])["instrument"] == NASTY]
    assert nasty and nasty[0][2] == 50_000.5


def test_openmetrics_is_identical_and_parses_the_same() -> None:
    reg = registry()
    ours = reg.render(openmetrics=True)
    assert ours == generate_latest_om(reg)
    text = ours.decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE fr_liquidations counter\n" in text and "fr_liquidations_total{" in text
    assert "# TYPE fr_liquidations_total" not in text
    assert normalise(parse_om(text)) == normalise(parse_om(generate_latest_om(reg).decode()))


def test_format_value_matches_the_go_style() -> None:
    cases = {
        math.inf: "+Inf",
        -math.inf: "-Inf",
        0.0001: "0.0001",
        1234567.0: "1.234567e+06",
        1e6: "1e+06",
        999999.5: "999999.5",
        -2.5e7: "-25000000.0",
        1e22: "1e+22",
        3: "3.0",
        1.5e-12: "1.5e-12",
    }
    for v, s in cases.items():
        assert format_value(v) == s, v
    assert format_value(math.nan) == "NaN"


def test_label_set_escaping_and_order() -> None:
    ls = LabelSet([("quote", "USDT"), ("base", 'a"b'), ("instrument", "x\\y\nz")])
    assert ls.names == ("base", "instrument", "quote")
    assert ls.text == '{base="a\\"b",instrument="x\\\\y\\nz",quote="USDT"}'
    assert ls.with_(side="long").text.endswith(',side="long"}')
    assert EMPTY_LABELS.text == ""


def test_spec_rejects_counter_without_total() -> None:
    with pytest.raises(ValueError):
        Spec("fr_things", "counter", "x")


def test_render_of_plain_collectors_without_fast_path() -> None:
    out = render([OtherCollector()]).decode()
    assert "# TYPE x_build_info gauge" in out and "# TYPE x_events_total counter" in out
    assert 'x_latency_seconds_bucket{le="+Inf",path="/m"} 6.0' in out


def test_negotiation() -> None:
    prom = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    assert wants_openmetrics(prom)
    assert wants_openmetrics("application/openmetrics-text")
    assert not wants_openmetrics("application/openmetrics-text;q=0")
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics(None)
    assert accepts_gzip("gzip, deflate") and accepts_gzip("br;q=1, gzip;q=0.5")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("identity") and not accepts_gzip(None)
    body, enc = maybe_gzip(b"x" * 1000, "gzip")
    assert enc == "gzip" and len(body) < 100
    assert maybe_gzip(b"abc", None) == (b"abc", None)


# The contract fixes fr_edge_bp / fr_*_pct with their unit in the name; promtool's unit lint may flag
# those (a non-base unit), and only those may be waived - every other finding fails the test.
EXEMPT_SUFFIXES = ("_bp", "_pct")


@needs_tool("promtool", package="prometheus")
def test_promtool_check_metrics_on_a_real_scrape() -> None:
    cfg = Config(listen_address="127.0.0.1:0")
    state = rich_state()
    handle = start_server(cfg, state, build_registry(cfg, state))
    try:
        body = httpx.get(handle.url + "/metrics").content
    finally:
        handle.stop()
    assert b"fr_funding_zscore{" in body and b"fr_edge_bp{" in body
    proc = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
    problems = [ln for ln in (proc.stdout + proc.stderr).decode().splitlines() if ln.strip()]
    real = [p for p in problems if not p.split()[0].endswith(EXEMPT_SUFFIXES)]
    assert not real, problems
    assert proc.returncode == 0 or problems, proc


class BrokenCollector:
    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("x_half", "Emitted before the failure.", value=1.0)
        raise RuntimeError("position store unreachable")


def test_a_failing_collector_leaves_only_its_own_series_out(caplog: pytest.LogCaptureFixture) -> None:
    reg = build_registry(Config(), rich_state(), extra_collectors=[BrokenCollector(), OtherCollector()])
    body = reg.render().decode()
    assert "fr_funding_rate{" in body and "x_values{" in body
    assert "x_half" not in body  # nothing half-rendered
    assert any("BrokenCollector" in r.getMessage() for r in caplog.records)


class NonFiniteCollector:
    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily("x_odd", "Odd values.", labels=["k"])
        for k, v in (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("ok", 2.5)):
            g.add_metric([k], v)
        yield g


def test_non_finite_samples_are_left_out_and_counted() -> None:
    """No NaN or +-Inf sample is ever rendered, on the fast path or the generic one; each is counted."""
    state = rich_state()
    st = state.instruments[(Exchange.BINANCE, "BTCUSDT")]
    st.liq_long_usd = math.inf  # a counter gone wrong (state written around the checks)
    reg = build_registry(Config(), state, extra_collectors=[NonFiniteCollector()])
    for om in (False, True):
        text = reg.render(openmetrics=om).decode()
        samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        assert not [ln for ln in samples if ln.rsplit(" ", 1)[1] in ("NaN", "+Inf", "-Inf")]
        assert 'x_odd{k="ok"} 2.5' in text
        lbl = 'base="BTC",exchange="binance",instrument="BTCUSDT",quote="USDT"'
        assert f'fr_liquidated_notional_usd_total{{{lbl},side="short"}} 25000.0' in text
    text = reg.render().decode()
    assert 'fr_render_errors_total{collector="nonfinite"} 6.0' in text  # 3 per render, two renders before
    assert 'fr_render_errors_total{collector="market"} 3.0' in text


def test_the_label_columns_follow_the_instrument_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """The market collector keeps its label sets and their texts per kind in view order, rebuilt (and
    the texts copied side by side) when the instrument list changes: every render stays equal to
    prometheus_client's rendering of the same families, which builds its lines from the label values."""
    reg = registry()
    state = reg.views.state
    assert reg.render() == generate_latest(reg)
    eth = '{base="ETH",exchange="binance",instrument="ETHUSDT",quote="USDT"}'
    state.register(InstrumentInfo(Exchange.BINANCE, "ETHUSDT", "ETH", "USDT", funding_interval_s=EIGHT_HOURS))
    state.apply(
        MarketUpdate(
            Exchange.BINANCE,
            "ETHUSDT",
            mark_price=2_000.5,
            index_price=1_999.5,
            funding_rate=1e-4,
            next_funding_time=T0 + 1800,
        )
    )
    added = reg.render()
    assert added == generate_latest(reg)
    assert f"fr_mark_price{eth} 2000.5\n".encode() in added
    # one instrument's view fails: only its series go, and they come back with it
    real = reg.views.cache.settlement_stats

    def failing(key: Any, *args: Any) -> Any:
        if key[1] == "ETHUSDT":
            raise ZeroDivisionError("boom")
        return real(key, *args)

    monkeypatch.setattr(reg.views.cache, "settlement_stats", failing)
    # a settlement changes its window: its statistics are computed again (a scrape asks the cache
    # only for windows that changed), and fail (one settlement: no z-score before or after)
    state.add_settlements(state.instruments[(Exchange.BINANCE, "ETHUSDT")], [(T0 - 3600.0, 1e-4)])
    without = reg.render()
    assert b'instrument="ETHUSDT"' not in without.split(b"fr_funding_settlements_missed_total")[0]
    assert f"fr_mark_price{eth.replace('ETH', 'BTC')}".encode() in without
    monkeypatch.undo()
    back = reg.render()  # fr_render_errors_total counted the failure: the rest as before
    assert back == generate_latest(reg)
    assert f"fr_mark_price{eth} 2000.5\n".encode() in back
    assert [ln for ln in back.splitlines() if b"render_errors" not in ln] == [
        ln for ln in added.splitlines() if b"render_errors" not in ln
    ]
    # its static facts change (another base): the next render shows the new label, never the old one
    state.register(InstrumentInfo(Exchange.BINANCE, "ETHUSDT", "ETH2", "USDT", funding_interval_s=EIGHT_HOURS))
    relabelled = reg.render()
    assert relabelled == generate_latest(reg)
    assert b'base="ETH2",exchange="binance",instrument="ETHUSDT"' in relabelled
    assert eth.encode() not in relabelled
