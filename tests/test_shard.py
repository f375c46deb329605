"""Sharding by base asset: Prometheus' hashmod, the selection, and the union of S shards.

The union test runs the exporter's own wiring (instrument selection from the listing, backfill,
pollers, position service, registry) on a fixed clock for 1 and S shards, feeding every shard the
same stream records, and compares the rendered /metrics series for series and value for value.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import free_port, needs_tool, wait_for

from exporter.app import Exporter
from exporter.config import Config, ConfigError, load_config
from exporter.model import (
    Exchange,
    FundingSettlement,
    InstrumentInfo,
    InsuranceFund,
    Liquidation,
    LongShortRatio,
    MarketUpdate,
    Side,
)
from exporter.shard import Shard, hashmod
from exporter.state import MarketState

pytestmark = pytest.mark.slow(seconds=10)  # the file: exporters of several shards against one simulator

NOW = 1_750_000_000.0
BASES = [f"C{i:02d}" for i in range(40)] + ["BTC", "ETH", "SOL", "1000PEPE"]


# ---- hashmod ---------------------------------------------------------------------------------------


def test_hashmod_spreads_bases_and_is_stable() -> None:
    for s in (1, 2, 3, 4, 7):
        shards = Counter(hashmod(b, s) for b in BASES)
        assert set(shards) <= set(range(s))
        assert len(shards) == s  # 44 bases reach every shard
    assert all(hashmod(b, 1) == 0 for b in BASES)
    # the digest's last 8 bytes, big-endian: a different slice or byte order would move bases
    b = "BTC"
    d = hashlib.md5(b.encode()).digest()
    assert hashmod(b, 2**64 - 1) == int.from_bytes(d[8:], "big") % (2**64 - 1)
    assert hashmod(b, 2**64 - 1) != int.from_bytes(d[:8], "big") % (2**64 - 1)


def test_shard_spec_parsing_and_bounds() -> None:
    assert Shard.parse("2/7") == Shard(2, 7)
    assert Shard.parse(" 0 / 1 ") == Shard()
    for bad in ("7/7", "1", "a/b", "-1/3", "0/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)
    with pytest.raises(ConfigError, match="shard"):
        load_config(None, {"FR_SHARD__INDEX": "3", "FR_SHARD__COUNT": "3"})
    cfg = load_config(None, {"FR_SHARD__INDEX": "1", "FR_SHARD__COUNT": "3"})
    assert (cfg.shard.index, cfg.shard.count) == (1, 3)


def test_cli_shard_flag_overrides_the_config_and_rejects_a_bad_spec() -> None:
    root = Path(__file__).resolve().parent.parent
    bad = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "run", "--config", "config/demo.yaml", "--shard", "3/3"],
        capture_output=True, text=True, timeout=60, cwd=root, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert [ln for ln in bad.stderr.splitlines() if ln.strip()] == [
        "fr-exporter: --shard: shard 3/3: need 0 <= index < count"
    ]
    from exporter.cli import build_parser

    args = build_parser().parse_args(["run", "--shard", "1/4"])
    assert args.shard == "1/4"


prometheus = shutil.which("prometheus")


@needs_tool("prometheus", package="prometheus")
def test_hashmod_matches_prometheus_relabelling(tmp_path: Path) -> None:
    """The real Prometheus assigns every base to the same shard as exporter.shard.hashmod."""
    targets = [{"targets": [f"127.0.0.1:{i + 1}"], "labels": {"base": b}} for i, b in enumerate(BASES)]
    (tmp_path / "targets.yml").write_text(yaml.safe_dump(targets))
    relabel = [
        {"source_labels": ["base"], "modulus": s, "target_label": f"shard_of_{s}", "action": "hashmod"}
        for s in (2, 3, 7)
    ]
    config = {
        "global": {"scrape_interval": "1h"},
        "scrape_configs": [
            {
                "job_name": "bases",
                "file_sd_configs": [{"files": [str(tmp_path / "targets.yml")]}],
                "relabel_configs": relabel,
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            str(prometheus),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import json
        import urllib.request

        def targets_up() -> list[dict[str, Any]] | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2) as r:
                got = json.load(r)["data"]["activeTargets"]
            return got if len(got) == len(BASES) else None

        got = wait_for(targets_up, timeout=30, what="prometheus targets")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    for t in got:
        labels = t["labels"]
        for s in (2, 3, 7):
            assert int(labels[f"shard_of_{s}"]) == hashmod(labels["base"], s), labels


# ---- union of shards -----------------------------------------------------------------------------


def _listing() -> dict[Exchange, list[InstrumentInfo]]:
    out: dict[Exchange, list[InstrumentInfo]] = {ex: [] for ex in Exchange}
    for i, b in enumerate(BASES):
        out[Exchange.BINANCE].append(InstrumentInfo(Exchange.BINANCE, f"{b}USDT", b, "USDT", funding_interval_s=28800))
        if i % 2 == 0:
            out[Exchange.BINANCE].append(InstrumentInfo(Exchange.BINANCE, f"{b}USDC", b, "USDC"))  # not USDT
        if i % 3 != 1:
            out[Exchange.BYBIT].append(InstrumentInfo(Exchange.BYBIT, f"{b}USDT", b, "USDT", funding_interval_s=14400))
        if i % 4 != 3:
            out[Exchange.OKX].append(
                InstrumentInfo(Exchange.OKX, f"{b}-USDT-SWAP", b, "USDT", contract_size=0.01, funding_interval_s=28800)
            )
        if b in ("BTC", "ETH", "SOL") or i % 9 == 0:
            out[Exchange.DERIBIT].append(
                InstrumentInfo(Exchange.DERIBIT, f"{b}-PERPETUAL", b, "USD", inverse=True, funding_interval_s=28800)
            )
    return out


class _StubRest:
    """The REST side of one exchange, answering from fixed data (no network)."""

    def __init__(self, ex: Exchange, listed: list[InstrumentInfo]) -> None:
        self.ex = ex
        self.listed = listed
        self.polls_open_interest = ex is Exchange.BINANCE
        self.has_long_short_ratio = ex in (Exchange.BINANCE, Exchange.BYBIT)
        self.has_insurance_fund = ex in (Exchange.BINANCE, Exchange.OKX)
        self.has_funding_info = False
        self.candle_kinds: frozenset[str] = frozenset()  # no price history: the anchor window fills live
        self.poll_paths: dict[str, str] = {}  # its polls never reach a request budget: nothing to split

    def _k(self, instrument: str) -> int:
        return sum(map(ord, instrument))

    async def instruments(self) -> list[InstrumentInfo]:
        return list(self.listed)

    async def funding_history(self, instrument: str, start: float, end: float) -> list[FundingSettlement]:
        k = self._k(instrument)
        return [
            FundingSettlement(self.ex, instrument, NOW - 28800 * (n + 1), ((k * 7 + n * 13) % 23 - 11) * 1e-5)
            for n in range(30)
        ]

    async def open_interest(self, instrument: str) -> list[MarketUpdate]:
        return [MarketUpdate(self.ex, instrument, event_time=NOW, open_interest_base=1000.0 + self._k(instrument))]

    async def long_short_ratio(self, instrument: str) -> list[LongShortRatio]:
        return [LongShortRatio(self.ex, instrument, NOW, 0.5 + self._k(instrument) % 17 / 10)]

    async def insurance_fund(self, instruments: Sequence[InstrumentInfo]) -> list[InsuranceFund]:
        return [InsuranceFund(self.ex, "USDT", NOW, 1e9 + self._k(self.ex.value))]


def _stream_records(listing: dict[Exchange, list[InstrumentInfo]]) -> list[Any]:
    """What the websockets would deliver: prices, funding, open interest, liquidations."""
    recs: list[Any] = []
    for ex, infos in listing.items():
        for n, info in enumerate(infos):
            price = 10.0 + (n * 37) % 1000
            recs.append(
                MarketUpdate(
                    ex,
                    info.instrument,
                    event_time=NOW - 1,
                    mark_price=price,
                    index_price=price * (1 - 1e-4 * ((n % 5) - 2)),
                    funding_rate=((n * 11) % 19 - 9) * 1e-4,
                    funding_rate_8h=((n * 11) % 19 - 9) * 1e-4 if ex is Exchange.DERIBIT else None,
                    next_funding_time=NOW + 3600 if ex is not Exchange.DERIBIT else None,
                    open_interest_base=None if ex is Exchange.BINANCE else 5000.0 + n,
                )
            )
            if n % 3 == 0:
                side = Side.LONG if n % 2 else Side.SHORT
                recs.append(Liquidation(ex, info.instrument, NOW - 2, side, price, 1.5, 1.5 * price))
    return recs


# Per-process series: every shard has its own (connections, requests, build, shard identity).
PER_PROCESS = {
    "fr_up",
    "fr_stream_connected",
    "fr_stream_last_message_timestamp_seconds",
    "fr_stream_messages",
    "fr_stream_reconnects",
    "fr_parse_errors",
    "fr_stream_subscription_errors",
    "fr_rest_requests",
    "fr_rest_request_failures",
    "fr_rest_last_success_timestamp_seconds",
    "fr_unknown_instrument_updates",
    "fr_build",
    "fr_build_info",
    "fr_shard",
    "fr_shard_info",
    "fr_instruments_listed",
    "fr_instruments_followed",
    "fr_position_config_errors",
    "fr_position_account_reads",
    "fr_position_account_read_failures",
}


def _config(tmp_path: Path, index: int, count: int) -> Config:
    ex = {
        e.value: {
            "instruments": [],
            "all_perpetuals": True,
            "max_instruments": 35,  # cuts Binance and OKX: the cut is made before sharding
            "backfill": True,
        }
        for e in Exchange
    }
    positions = [
        {"name": f"carry-{b.lower()}", "exchange": "binance", "instrument": f"{b}USDT", "side": "short", "size": 2.0,
         "entry_price": 100.0, "leverage": 3.0}
        for b in ("BTC", "ETH", "SOL", "C01", "C05", "C08")
    ]  # fmt: skip
    data = {
        "exchanges": ex,
        "shard": {"index": index, "count": count},
        "positions": positions,
        "position_settings": {"db_path": str(tmp_path / f"pos-{index}-of-{count}.sqlite")},
    }
    return Config.model_validate(data)


async def _run_shard(tmp_path: Path, index: int, count: int) -> tuple[dict[tuple[Any, ...], float], Exporter, str]:
    listing = _listing()
    config = _config(tmp_path, index, count)
    state = MarketState(clock=lambda: NOW, settlement_span_seconds=31 * 86400.0)
    exporter = Exporter(config, state=state)
    for ex, cfg in config.enabled_exchanges().items():
        state.register_exchange(ex)
        rt = exporter._runtime(ex, cfg)
        rt.rest = _StubRest(ex, listing[ex])  # type: ignore[assignment]
        exporter.runtimes[ex] = rt
        await exporter._load_instruments(rt)
        await exporter._backfill(rt)
        for poller in exporter.pollers(rt):
            await poller.job()
        await rt.client.aclose()
    state.apply_many(_stream_records(listing), received_at=NOW - 1)
    registry = exporter._build_registry()
    assert exporter.positions is not None
    exporter.positions.tick()
    text = registry.render().decode()
    series: dict[tuple[Any, ...], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if fam.name in PER_PROCESS or not fam.name.startswith("fr_"):  # process_*: per process too
                continue
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in series, f"{key} twice in one exposition"
            series[key] = s.value
    exporter.positions.store.close()
    return series, exporter, text


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_union_of_shards_equals_one_exporter(tmp_path: Path, count: int) -> None:
    whole, one, _ = asyncio.run(_run_shard(tmp_path / "whole", 0, 1))
    families = {name for name, _ in whole}
    # the comparison covers the market, cross-exchange, insurance and position series
    for must in ("fr_funding_rate", "fr_funding_zscore", "fr_oi_weighted_funding_rate", "fr_funding_spread_bp",
                 "fr_insurance_fund_balance_usd", "fr_liquidations_total", "fr_long_short_account_ratio",
                 "fr_liq_gap_pct", "fr_position_size"):  # fmt: skip
        assert must in families, must
    union: dict[tuple[Any, ...], float] = {}
    followed: Counter[Exchange] = Counter()
    for k in range(count):
        part, exp, text = asyncio.run(_run_shard(tmp_path / f"s{k}", k, count))
        assert f'fr_shard_info{{count="{count}",index="{k}"}} 1.0' in text
        twice = set(part) & set(union)
        assert not twice, f"shard {k}/{count} repeats {sorted(twice)[:3]}"
        union.update(part)
        for ex, cov in exp.coverage.items():
            followed[ex] += cov.followed
            assert cov.selected == one.coverage[ex].selected and cov.listed == one.coverage[ex].listed
        # every instrument of a base on all exchanges is in one shard: bases never split
        bases = {st.info.base for st in exp.state.instruments.values()}
        assert all(Shard(k, count).owns(b) for b in bases)
        # exchange-wide series only from shard 0
        has_insurance = any(name == "fr_insurance_fund_balance_usd" for name, _ in part)
        assert has_insurance == (k == 0)
    assert set(union) == set(whole)
    assert union == whole
    assert followed == Counter({ex: cov.followed for ex, cov in one.coverage.items()})


def test_max_instruments_cut_is_published_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="exporter.app")
    _, exp, text = asyncio.run(_run_shard(tmp_path, 0, 1))
    listing = _listing()
    usdt = [i for i in listing[Exchange.BINANCE] if i.quote == "USDT"]
    assert f'fr_instruments_listed{{exchange="binance"}} {float(len(usdt))}' in text
    assert 'fr_instruments_followed{exchange="binance"} 35.0' in text
    cut = [
        r.getMessage() for r in caplog.records if "binance" in r.getMessage() and "max_instruments" in r.getMessage()
    ]
    assert len(cut) == 1
    assert all(i.instrument in cut[0] for i in usdt[35:])
    # a refresh of the list does not log the same cut again
    rt = exp.runtimes[Exchange.BINANCE]
    rt.rest = _StubRest(Exchange.BINANCE, listing[Exchange.BINANCE])  # type: ignore[assignment]
    asyncio.run(exp._load_instruments(rt))
    again = [r for r in caplog.records if "binance" in r.getMessage() and "max_instruments" in r.getMessage()]
    assert len(again) == 1
