"""Golden expositions: a fixed, hand-built state rendered to text and compared with the committed files.

A renamed series, a changed label, HELP or value formatting shows up here as a diff, without the
end-to-end stack. When a change is intended, regenerate the files and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest -q -p no:cacheprovider tests/test_golden.py

The exporter's exposition is kept in both formats (text 0.0.4, and OpenMetrics, which Prometheus
asks for). The text files go through ``promtool check metrics`` and are held to the metric catalog: every
family exposed is declared there with the same type, labels and HELP, and every declared family
is exposed by one of the two golden states (so the golden files cover the whole catalog).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_om
from support import needs_tool

from exporter import __version__
from exporter.build import build_labels
from exporter.clock import VirtualClock
from exporter.config import Config
from exporter.metrics import build_registry, catalog
from exporter.metrics.budget import BudgetCollector
from exporter.metrics.positions import PositionCollector, PositionView, StressView
from exporter.metrics.shard import ShardCollector
from exporter.model import (
    Exchange,
    FundingSettlement,
    HistoryBackfill,
    InstrumentInfo,
    InsuranceFund,
    Liquidation,
    LongShortRatio,
    MarketUpdate,
    Side,
)
from exporter.positions.view import HistoricalStressView, ParametricStressView
from exporter.rest.split import PollDemand, PollShare
from exporter.shard import Coverage, Shard
from exporter.sidecar.metrics import AiMetrics, make_registry
from exporter.sidecar.schema import Action, RiskAnswer, RiskLevel
from exporter.sidecar.scoring import calibration_table, scores
from exporter.state import MarketState

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
T0 = 1_700_000_000.0
MINUTES = 20  # of one-a-minute updates before T0: enough samples for the anchor regression

# exchange, instrument, base, quote, funding interval, cap, floor, mark price
INSTRUMENTS: tuple[tuple[Exchange, str, str, str, float, float | None, float | None, float], ...] = (
    (Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", 28800.0, 0.003, -0.003, 37_000.0),
    (Exchange.BYBIT, "ETHUSDT", "ETH", "USDT", 3600.0, None, None, 2_000.0),
    (Exchange.OKX, "BTC-USDT-SWAP", "BTC", "USDT", 14400.0, 0.0075, -0.0075, 37_010.0),
    (Exchange.DERIBIT, "ETH-PERPETUAL", "ETH", "USD", 28800.0, None, None, 2_001.0),
)


def golden_state() -> MarketState:
    """Four exchanges, one instrument each, with every market, cross and health series present."""
    clock = VirtualClock(T0 - MINUTES * 60.0)
    state = MarketState(clock=clock.time)
    for n, (ex, inst, base, quote, interval, cap, floor, _) in enumerate(INSTRUMENTS):
        info = InstrumentInfo(ex, inst, base, quote, funding_interval_s=interval, funding_cap=cap, funding_floor=floor)
        state.register(info)
        # 30 settled rates, not all equal, so the z-score, momentum and acceleration exist. Deribit
        # (continuous): hourly observations of its 8 h-equivalent rate, as the feed records them.
        step = 3600.0 if ex is Exchange.DERIBIT else interval
        for i in range(30, 0, -1):
            rate = 1e-4 * (1 + ((i * 3 + n) % 7) - 2 * (n % 2))
            state.apply(FundingSettlement(ex, inst, T0 - MINUTES * 60.0 - i * step, rate, interval))
    for minute in range(MINUTES + 1):
        for n, (ex, inst, _, _, interval, _, _, mark) in enumerate(INSTRUMENTS):
            wiggle = ((minute * 5 + n) % 9) - 4  # -4 .. 4: spread in the premium and the rate
            state.apply(
                MarketUpdate(
                    ex,
                    inst,
                    event_time=clock.time(),
                    mark_price=mark + wiggle * 2.5,
                    index_price=mark - 3.0,
                    funding_rate=(1.5e-4 + wiggle * 1e-5) * (-1 if n == 1 else 1),
                    next_funding_time=None if ex is Exchange.DERIBIT else T0 + interval / 2,
                    open_interest_usd=1.5e9 / (n + 1) + minute * 1e5,
                )
            )
        if minute < MINUTES:
            clock.advance(60.0)
    assert clock.time() == T0
    # the factor signals' past, as the start-up backfill brings it: 1-minute mark closes before the
    # live minutes above and 5-minute open interest over the 4 h window
    first_live = (T0 - MINUTES * 60.0) // 60.0 * 60.0
    for n, (ex, inst, _, _, _, _, _, mark) in enumerate(INSTRUMENTS):
        closes = tuple((first_live - 60.0 * k, mark * (1 + 0.002 * math.sin(k + n))) for k in range(240, 0, -1))
        oi = tuple((T0 - 300.0 * k, 1.5e9 / (n + 1) * (1 - 0.0004 * k)) for k in range(52, 4, -1))
        state.apply(HistoryBackfill(ex, inst, closes, oi))
    state.apply(LongShortRatio(Exchange.BINANCE, "BTCUSDT", T0, 1.85))
    state.apply(LongShortRatio(Exchange.BYBIT, "ETHUSDT", T0, 0.92))
    state.apply(LongShortRatio(Exchange.BYBIT, "DOGEUSDT", T0, 1.1))  # not followed: counted, ignored
    state.apply(FundingSettlement(Exchange.OKX, "SOL-USDT-SWAP", T0, 1e-4, 28800.0))  # not followed either
    for ex, inst, side, price, qty in (
        (Exchange.BINANCE, "BTCUSDT", Side.LONG, 36_900.0, 0.5),
        (Exchange.BINANCE, "BTCUSDT", Side.LONG, 36_880.0, 1.25),
        (Exchange.BYBIT, "ETHUSDT", Side.SHORT, 2_010.0, 40.0),
        (Exchange.OKX, "BTC-USDT-SWAP", Side.SHORT, 37_100.0, 0.1),
        (Exchange.DERIBIT, "ETH-PERPETUAL", Side.LONG, 1_990.0, 3.0),
    ):
        state.apply(Liquidation(ex, inst, T0 - 5.0, side, price, qty, price * qty))
    # dated futures (term structure): a quarterly, and a contract under one day to expiry (no
    # annualised figures then); Deribit's index comes with its ticker, Binance's from the perpetual
    state.set_futures(
        Exchange.BINANCE,
        [
            InstrumentInfo(Exchange.BINANCE, "BTCUSDT_231229", "BTC", "USDT", expiry=1703836800.0),
            # half an hour before its delivery: Binance's estimated settle price is published
            InstrumentInfo(Exchange.BINANCE, "BTCUSDT_231114", "BTC", "USDT", expiry=T0 + 1800.0),
        ],
    )
    state.set_futures(
        Exchange.DERIBIT,
        [InstrumentInfo(Exchange.DERIBIT, "ETH-15NOV23", "ETH", "USD", 1.0, True, expiry=1700035200.0)],
    )
    state.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT_231229", T0, 37_350.0))
    state.apply(MarketUpdate(Exchange.BINANCE, "BTCUSDT_231114", T0, 37_001.5, settle_price_estimate=36_998.25))
    state.apply(MarketUpdate(Exchange.DERIBIT, "ETH-15NOV23", T0, 2_000.5, 1_998.0))
    state.apply(InsuranceFund(Exchange.BINANCE, "USDT", T0, 1.234e9))
    state.apply(InsuranceFund(Exchange.OKX, "BTC-USDT", T0, 5.5e8))
    for ex, stream, connected, age, msgs, rec, perr, suberr in (
        (Exchange.BINANCE, "markPrice", True, 0.5, 120_345, 1, 0, 0),
        (Exchange.BINANCE, "forceOrder", True, 3.0, 87, 1, 2, 0),
        (Exchange.BYBIT, "linear", True, 0.2, 54_321, 0, 0, 1),
        (Exchange.OKX, "public", True, 1.0, 9_876, 2, 0, 0),
        (Exchange.DERIBIT, "public", False, 95.0, 4_321, 7, 1, 0),
    ):
        h = state.stream(ex, stream)
        h.connected, h.last_message_at = connected, T0 - age
        h.last_parsed_at = T0 - age - (perr * 10.0)  # the unparsable frames came last
        h.messages, h.reconnects, h.parse_errors, h.subscription_errors = msgs, rec, perr, suberr
        if perr:
            h.parse_error_reasons.update(
                {"invalid_json": perr - 1, "price_out_of_range": 1} if perr > 1 else {"not_finite": 1}
            )
        h.resyncs = 1 if ex is Exchange.BYBIT else 0
        h.short_sessions = rec // 2
    # feed quality: started an hour ago, first frame 10 s ago (3598 s beyond the 1 s cadence), three lags
    h = state.stream(Exchange.BINANCE, "markPrice")
    h.cadence_s = 1.0
    h.expect_from(T0 - 3600.0)
    h.spoke(T0 - 10.0)
    for lag in (0.004, 0.03, 1.5):
        h.observe_lag(lag)
    h.ping_rtt_s = 0.012
    state.exchange_clock(Exchange.BINANCE).sample(T0 - 0.02, T0 - 0.0125, T0)  # offset -2.5 ms, rtt 20 ms
    state.settlements_missed[(Exchange.OKX, "BTC-USDT-SWAP")] = 1
    for ex, endpoint, requests, failures, ok_age in (
        (Exchange.BINANCE, "openInterest", 240, {"rate_limited": 3}, 30.0),
        (Exchange.BYBIT, "fundingHistory", 12, {}, 600.0),
        (Exchange.OKX, "openInterest", 80, {"http_5xx": 2, "timeout": 1}, 45.0),
        (Exchange.DERIBIT, "instruments", 1, {"timeout": 1}, 0.0),  # never succeeded
    ):
        r = state.rest_endpoint(ex, endpoint)
        r.requests = requests
        r.failures.update(failures)
        r.last_success_at = T0 - ok_age if ok_age else 0.0
    return state


class GoldenPositions:
    """Two positions (one configured, one read from an account) and the position health counters."""

    def views(self) -> Sequence[PositionView]:
        stress = (StressView(-10.0, 820.5, True), StressView(10.0, -120.0, False))
        return [
            PositionView(
                position="carry-btc",
                exchange="binance",
                instrument="BTCUSDT",
                side="short",
                source="config",
                size=0.5,
                entry_price=36_500.0,
                mark_price=37_000.0,
                notional_usd=18_500.0,
                liq_exchange=None,
                liq_computed=44_250.5,
                liq_gap_pct=19.595,
                hit_probability={"1h": 0.0001, "8h": 0.0125},
                funding_pnl_usd=-3.5,
                funding_received_usd=12.25,
                funding_paid_usd=15.75,
                settlements=9,
                apy_realized_pct=-2.5,
                apy_projected_pct=11.0,
                locked_capital_usd=9_250.0,
                stress=stress,
                equity_usd=1_000.0,
                maintenance_margin_usd=92.5,
                margin_buffer_ratio=0.9075,
                basis_pnl_usd=-250.0,
                total_pnl_usd=-260.5,
                historical_stress=(HistoricalStressView("5m", 0.0412, True),),
                parametric_stress=(
                    ParametricStressView("5m", "0.99", "normal", 0.0061, True),
                    ParametricStressView("5m", "0.999", "student_t", 0.0137, True),
                ),
            ),
            PositionView(
                position="eth-account",
                exchange="bybit",
                instrument="ETHUSDT",
                side="long",
                source="account",
                size=4.0,
                entry_price=1_950.0,
                mark_price=2_000.0,
                notional_usd=8_000.0,
                liq_exchange=1_710.0,
                liq_computed=1_705.25,
                liq_gap_pct=14.5,
                hit_probability={"1h": 0.002, "8h": 0.04},
                adl_rank=2.0,
                adl_raw=3.0,
                funding_pnl_usd=6.0,
                funding_received_usd=6.0,
                settlements=4,
                apy_projected_pct=7.25,
                locked_capital_usd=None,
            ),
        ]

    def health(self) -> tuple[Mapping[str, int], Mapping[str, int], Mapping[tuple[str, str], int]]:
        return {"leverage": 1}, {"bybit": 12}, {("bybit", "rate_limited"): 1}


def exporter_text(openmetrics: bool = False) -> str:
    state = golden_state()
    # process_* (CPU, memory) differ on every render: not what the golden file is about
    coverage = {Exchange.BINANCE: Coverage(listed=412, selected=300, followed=97, left_out=("XYZUSDT",))}
    shard = ShardCollector(Shard(1, 3), lambda: coverage)
    # a poller cut to half the weight bucket: a round of 250 s instead of 30 s
    oi = PollDemand("open_interest", 2000, 30.0, 300.0, (("weight", 1.0),))
    split = {Exchange.BINANCE: ([PollShare(oi, {"weight": 8.0}, 0.12, 250.0, 300.0)], {"weight": 16.0})}
    budget = BudgetCollector(lambda: split)
    reg = build_registry(
        Config(),
        state,
        extra_collectors=[shard, budget, PositionCollector(GoldenPositions())],
        process=False,
        recording=lambda: {"frames_ws": 1000, "frames_rest": 12, "dropped": 3, "bytes": 65536},
    )
    reg.views.errors.count("market", 2)  # two instrument views that failed at earlier scrapes
    body = reg.render(openmetrics=openmetrics)
    reference = generate_latest_om(reg) if openmetrics else generate_latest(reg)
    assert body == reference, "the fast renderer differs from prometheus_client"
    # the build labels change with every release, commit and Python: neither are they
    b = build_labels()
    return (
        body.decode()
        .replace(f'version="{__version__}"', 'version="VERSION"')
        .replace(f'revision="{b["revision"]}"', 'revision="REVISION"')
        .replace(f'python_version="{b["python_version"]}"', 'python_version="PYTHON"')
    )


def sidecar_text() -> str:
    ai = AiMetrics()
    for model in ("baseline", "gpt-4o-mini"):
        ai.register_model(model)
    for model, base, p, level in (
        ("baseline", "BTC", 0.07, RiskLevel.LOW),
        ("baseline", "ETH", 0.31, RiskLevel.MEDIUM),
        ("gpt-4o-mini", "BTC", 0.72, RiskLevel.HIGH),
    ):
        answer = RiskAnswer(
            liquidation_probability=p,
            risk_level=level,
            time_horizon_hours=8.0,
            confidence=0.6,
            action=Action.HOLD,
            reasoning="golden",
            estimated_liquidation_volume_usd=2.5e7,
            key_factors=["funding"],
        )
        ai.publish(model, base, 8.0, answer, at=T0 - 60.0, calibrated=0.05 if model == "baseline" else None)
    ai.attempt("baseline", 0.004, None)
    for duration, reason in ((1.2, None), (30.5, "timeout"), (0.8, "schema"), (2.0, None)):
        ai.attempt("gpt-4o-mini", duration, reason)
    ai.failure("gpt-4o-mini", "invalid_json")
    ai.usage("gpt-4o-mini", 5_400, 610, 0.00118)
    ai.truncated("gpt-4o-mini", "reasoning")
    ai.skill_min_scored = 30
    probs = [0.05] * 30 + [0.4] * 8 + [0.8] * 2
    outcomes = [False] * 29 + [True] + [False] * 6 + [True] * 2 + [True, False]
    for window in ("all", "rolling"):
        ai.scores[("baseline", "8h", window, "raw")] = scores(probs, outcomes, 0.7)
        ai.scores[("baseline", "8h", window, "calibrated")] = scores(probs[:12], outcomes[:12], 0.7)  # too few
    ai.scored_total[("baseline", "8h")] = 40
    ai.scored_total[("gpt-4o-mini", "8h")] = 0
    ai.reliability[("baseline", "8h", "raw")] = calibration_table(probs, outcomes)
    ai.calibrated_on[("baseline", "BTC", "8h")] = 40
    ai.state_reads.update(ok=1_234, error=2)
    ai.slack.update(sent=3, dropped=1)
    return generate_latest(make_registry(ai, process=False)).decode()  # no process_*: they move


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with UPDATE_GOLDEN=1 to write it"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        import difflib

        diff = "".join(
            difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(path), "rendered", n=1)
        )
        pytest.fail(f"exposition differs from {path} (UPDATE_GOLDEN=1 to accept):\n{diff[:6000]}")


def test_exporter_exposition_matches_the_golden_file() -> None:
    _check_golden("exposition.txt", exporter_text())


def test_exporter_openmetrics_exposition_matches_the_golden_file() -> None:
    """What Prometheus actually asks for (counters named without _total in HELP/TYPE, # EOF)."""
    _check_golden("exposition.openmetrics.txt", exporter_text(openmetrics=True))


def test_sidecar_exposition_matches_the_golden_file() -> None:
    _check_golden("sidecar.txt", sidecar_text())


def test_the_golden_state_is_stable() -> None:
    """Rendering twice gives the same text (no wall clock, no ordering of sets leaks in)."""
    assert exporter_text() == exporter_text()
    assert sidecar_text() == sidecar_text()


# ---- the golden texts against the catalog ------------------------------------------------------


def families_of(text: str) -> dict[str, dict[str, object]]:
    """family name -> {type, help, label names of each sample} from a text-format exposition."""
    out: dict[str, dict[str, object]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            current = name
            out[name] = {"help": help_text, "labels": set(), "samples": 0}
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            out[name]["type"] = kind
        elif line and not line.startswith("#"):
            labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', line.split("{", 1)[1])) if "{" in line else ()
            out[current]["labels"].add(frozenset(labels) - {"le"})  # type: ignore[union-attr]
            out[current]["samples"] += 1  # type: ignore[operator]
    return out


def _help_pattern(m: catalog.MetricDef) -> re.Pattern[str]:
    """The catalog's HELP with its placeholders as wildcards (the collectors fill them from config)."""
    parts = re.split(r"\{[a-z_]+\}", m.help)
    escaped = (re.escape(p).replace(r"\\", r"\\\\") for p in parts)  # HELP escapes backslashes
    return re.compile("^" + "(.+?)".join(escaped) + "$")


@pytest.mark.parametrize("render", [exporter_text, sidecar_text], ids=["exporter", "sidecar"])
def test_every_exposed_family_is_declared_in_the_catalog(render) -> None:  # type: ignore[no-untyped-def]
    fams = families_of(render())
    assert len(fams) > 15
    for name, fam in fams.items():
        m = catalog.FAMILIES.get(name)
        assert m is not None, f"{name} is exposed but not declared in exporter/metrics/catalog.py"
        assert fam["type"] == m.kind, name
        assert fam["labels"] == {frozenset(m.labels)}, f"{name}: labels {fam['labels']} != catalog {m.labels}"
        assert _help_pattern(m).match(str(fam["help"])), f"{name}: HELP differs from the catalog"
        assert fam["samples"], f"{name}: the golden state should give every family a sample"


def test_the_golden_files_cover_the_whole_catalog() -> None:
    exposed = set(families_of(exporter_text())) | set(families_of(sidecar_text()))
    missing = sorted(set(catalog.FAMILIES) - exposed)
    assert not missing, f"declared but absent from both golden expositions: {missing}"


# ---- promtool ----------------------------------------------------------------------------------

# The contract fixes fr_edge_bp / fr_*_pct with their unit in the name; promtool's unit lint may flag
# those (a non-base unit), and only those may be waived - every other finding fails the test.
# Issue 11 fixes fr_future_days_to_expiry (days, as the desks count them) the same way.
EXEMPT_SUFFIXES = ("_bp", "_pct", "_days_to_expiry")
# A deprecated alias keeps its old (counter-style) name for one release beside the renamed family:
# promtool's "_total on a non-counter" finding on it is the very reason for the rename.
DEPRECATED_ALIASES = {m.name for m in catalog.FAMILIES.values() if m.deprecated_by}


@needs_tool("promtool", package="prometheus")
@pytest.mark.parametrize("name", ["exposition.txt", "sidecar.txt"])
def test_promtool_check_metrics_accepts_the_golden_file(name: str) -> None:
    body = (GOLDEN / name).read_bytes()
    assert b"# TYPE fr_" in body
    proc = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
    problems = [ln for ln in (proc.stdout + proc.stderr).decode().splitlines() if ln.strip()]
    real = [
        p
        for p in problems
        if not p.split()[0].endswith(EXEMPT_SUFFIXES) and not (p.split()[0] in DEPRECATED_ALIASES and "_total" in p)
    ]
    assert not real, problems
    assert proc.returncode == 0 or problems, proc


def test_the_demo_status_line_reads_the_golden_exposition(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's one-line status finds its series by their catalog names in a real exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    from exporter import demo

    texts = {"exporter": exporter_text(), "sidecar": sidecar_text()}

    def samples(url: str) -> list[tuple[str, dict[str, str], float]]:
        fams = text_string_to_metric_families(texts[url])
        return [(s.name, s.labels, s.value) for fam in fams for s in fam.samples]

    monkeypatch.setattr(demo, "_samples", samples)
    line = demo._status("exporter", "sidecar")
    assert line.startswith("up binance=yes bybit=yes deribit=NO okx=yes | BTC funding bp/8h bin +1.2 okx +2.8 |")
    assert "liquidated $0.2M" in line and "liq gap carry-btc 19.6% eth-account 14.5%" in line
    assert line.endswith("AI risk BTC 8h 0.07 ETH 8h 0.31")  # the raw probabilities (not the calibrated 0.05)
