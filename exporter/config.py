"""Configuration: a YAML file validated by pydantic, overridden by environment variables.

Environment overrides use the prefix ``FR_`` and ``__`` between levels, values parsed as YAML
scalars: ``FR_EXCHANGES__BINANCE__ENABLED=false``, ``FR_LISTEN_ADDRESS=127.0.0.1:9466``.
Secrets are never in this file's values: only the *names* of environment variables or files that
hold them (``api_key_env``, ``api_key_file``), read by :func:`read_secret` when needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.logs import LEVELS
from exporter.model import Exchange
from exporter.redact import register_secret


class _Model(BaseModel):
    # allow_inf_nan=False: YAML reads 1e309 as infinity, and .nan/.inf are YAML floats too
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


def check_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    """``value`` must be an absolute URL with one of ``schemes`` and a host (None passes)."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ValueError(f"{value!r} is not a {' or '.join(schemes)} URL")
    if not parts.hostname or " " in value:
        raise ValueError(f"{value!r} is not a URL with a host")
    del port
    return value


# ---------------------------------------------------------------------------------------------
# Market data


class Fees(_Model):
    """Trading fees per side, in basis points of notional; negative = a rebate (maker programmes)."""

    maker_bp: float = Field(2.0, ge=-100.0, le=100.0)
    taker_bp: float = Field(5.0, ge=-100.0, le=100.0)


class StaleLimits(_Model):
    """How old a value may be before its series leaves /metrics (seconds)."""

    stream_seconds: float = Field(30.0, gt=0)  # no websocket message for this long -> fr_up 0
    price_seconds: float = Field(30.0, gt=0)
    funding_seconds: float = Field(120.0, gt=0)
    open_interest_seconds: float = Field(300.0, gt=0)
    long_short_ratio_seconds: float = Field(1800.0, gt=0)
    insurance_fund_seconds: float = Field(7200.0, gt=0)


class PollIntervals(_Model):
    """REST polling periods (seconds) for what has no stream."""

    open_interest_seconds: float = Field(30.0, gt=0)
    long_short_ratio_seconds: float = Field(300.0, gt=0)
    insurance_fund_seconds: float = Field(1800.0, gt=0)
    instruments_seconds: float = Field(3600.0, gt=0)
    server_time_seconds: float = Field(60.0, gt=0)  # clock offset and RTT (fr_exchange_clock_offset_seconds)


DEFAULT_INSTRUMENTS: dict[Exchange, list[str]] = {
    Exchange.BINANCE: ["BTCUSDT", "ETHUSDT"],
    Exchange.BYBIT: ["BTCUSDT", "ETHUSDT"],
    Exchange.OKX: ["BTC-USDT-SWAP", "ETH-USDT-SWAP"],
    Exchange.DERIBIT: ["BTC-PERPETUAL", "ETH-PERPETUAL"],
}

LIVE_URLS: dict[Exchange, tuple[str, str]] = {
    # (websocket base, REST base); feed modules append the protocol's own paths.
    Exchange.BINANCE: ("wss://fstream.binance.com", "https://fapi.binance.com"),
    Exchange.BYBIT: ("wss://stream.bybit.com", "https://api.bybit.com"),
    Exchange.OKX: ("wss://ws.okx.com:8443", "https://www.okx.com"),
    Exchange.DERIBIT: ("wss://www.deribit.com", "https://www.deribit.com"),
}


class Credentials(_Model):
    """Where a read-only API key lives. Values are env-var names or file paths, never the key."""

    api_key_env: str | None = None
    api_secret_env: str | None = None
    passphrase_env: str | None = None  # OKX
    api_key_file: Path | None = None
    api_secret_file: Path | None = None
    passphrase_file: Path | None = None

    def configured(self) -> bool:
        return any((self.api_key_env, self.api_secret_env, self.api_key_file, self.api_secret_file))


class FuturesConfig(_Model):
    """Dated (delivery) futures followed for the term structure (docs/term-structure.md)."""

    enabled: bool = True
    bases: list[str] = Field(default_factory=lambda: ["BTC", "ETH"])
    nearest: int = Field(4, ge=1, le=50)  # expiries per base, quote and margin type, nearest first ...
    all_expiries: bool = False  # ... or every listed expiry of the bases


class ExchangeConfig(_Model):
    enabled: bool = True
    instruments: list[str] | None = None  # None -> DEFAULT_INSTRUMENTS
    all_perpetuals: bool = False  # follow every USDT perpetual the exchange lists ...
    max_instruments: int = Field(500, ge=1, le=5000)  # ... up to this many
    ws_url: str | None = None  # None -> LIVE_URLS
    rest_url: str | None = None
    stale: StaleLimits = Field(default_factory=StaleLimits)
    poll: PollIntervals = Field(default_factory=PollIntervals)
    fees: Fees = Field(default_factory=Fees)
    futures: FuturesConfig = Field(default_factory=FuturesConfig)
    backfill: bool = True  # load funding history at start so the z-score is valid at once
    credentials: Credentials = Field(default_factory=Credentials)
    # Maintenance-margin tiers when the exchange publishes none we can read:
    # [[notional_cap_usd, mmr], ...] or [[notional_cap_usd, mmr, max_leverage], ...], ascending caps
    maintenance_tiers: list[tuple[float, float] | tuple[float, float, float]] | None = None

    @field_validator("ws_url")
    @classmethod
    def _ws_url(cls, v: str | None) -> str | None:
        return check_url(v, ("ws", "wss"))

    @field_validator("rest_url")
    @classmethod
    def _rest_url(cls, v: str | None) -> str | None:
        return check_url(v, ("http", "https"))

    @field_validator("maintenance_tiers")
    @classmethod
    def _tiers(
        cls, v: list[tuple[float, float] | tuple[float, float, float]] | None
    ) -> list[tuple[float, float] | tuple[float, float, float]] | None:
        last = 0.0
        for i, tier in enumerate(v or ()):
            cap, mmr = tier[0], tier[1]
            if not cap > last:
                raise ValueError(f"tier {i}: notional cap {cap} must be positive and above the previous tier's")
            if not 0.0 <= mmr < 1.0:
                raise ValueError(f"tier {i}: maintenance margin rate {mmr} must be in [0, 1)")
            if len(tier) == 3 and not tier[2] >= 1.0:  # type: ignore[misc]
                raise ValueError(f"tier {i}: max leverage {tier[2]} must be at least 1")  # type: ignore[misc]
            last = cap
        return v


MAX_ZSCORE_WINDOW_SECONDS = 366 * 86400.0


class AnalyticsConfig(_Model):
    # 30 days of settlements; at most a year (the settlement buffer is sized from it: 1 h funding
    # over a year is 8,784 rows, ~210 KB per instrument)
    zscore_window_seconds: float = Field(30 * 86400.0, gt=0)
    zscore_min_observations: int = Field(10, ge=3)
    holding_period_hours: float = Field(7 * 24.0, gt=0)  # fees amortised over this holding period
    fee_kind: Literal["maker", "taker"] = "taker"
    # exchange points (or any per-volume reward) valued in bp of traded notional per side: income,
    # so it lowers the effective fee in fr_edge_bp and the fees in fr_net_apy_pct
    points_bp: float = Field(0.0, ge=0.0, le=100.0)
    anchor_window_seconds: float = Field(6 * 3600.0, gt=0)  # funding-vs-premium regression window
    spread_top_n: int = Field(10, ge=1)
    # Threshold crossings reported as events in /api/state (the sidecar reacts at once to them)
    funding_event_rate_8h: float = Field(0.0005, gt=0)  # |rate| per 8 h-equivalent
    liquidation_event_usd_per_minute: float = Field(5_000_000.0, gt=0)

    @field_validator("zscore_window_seconds")
    @classmethod
    def _zscore_window_bounded(cls, v: float) -> float:
        if v > MAX_ZSCORE_WINDOW_SECONDS:
            raise ValueError(
                f"{v:g} s ({v / 86400:.0f} days) is longer than the supported "
                f"{MAX_ZSCORE_WINDOW_SECONDS / 86400:.0f} days "
                "(the settlement window is kept in memory per instrument); choose a shorter window"
            )
        return v


class ShardConfig(_Model):
    """This exporter is shard ``index`` of ``count``; each base asset goes to one shard (docs/scaling.md).

    Every shard must be given the same ``count`` and the same exchange settings (instrument lists,
    ``all_perpetuals``, ``max_instruments``): the selection is made from the full listing first,
    then split, so the union of the shards is what one exporter would follow.
    """

    index: int = Field(0, ge=0)
    count: int = Field(1, ge=1, le=256)

    @model_validator(mode="after")
    def _index_below_count(self) -> ShardConfig:
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} must be below the shard count {self.count}")
        return self


class RestBudgetConfig(_Model):
    """How much of each exchange's published per-IP limits this deployment uses (docs/rate-limits.md).

    Every REST request waits for its share; connection opens are spaced the same way. Shards on one
    egress IP split the share between them (the default, safe); shards with their own egress IPs
    can each use all of it (``split_between_shards: false``).
    """

    fraction: float = Field(0.5, gt=0, le=1)  # of each published limit, for all exporters on one IP together
    split_between_shards: bool = True


class TlsConfig(_Model):
    cert_file: Path
    key_file: Path


# ---------------------------------------------------------------------------------------------
# Positions (issue 3)


class HedgeLeg(_Model):
    kind: Literal["spot", "perp"]
    exchange: Exchange | None = None  # for a perp hedge
    instrument: str | None = None
    size: float = Field(gt=0)  # base coin, the opposite side of the main leg
    entry_price: float = Field(gt=0)
    fees_paid_usd: float = 0.0  # negative: a maker rebate received


class PositionConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    exchange: Exchange
    instrument: str
    side: Literal["long", "short"]
    size: float = Field(gt=0)  # base coin
    entry_price: float = Field(gt=0)
    margin_mode: Literal["isolated", "cross"] = "isolated"
    leverage: float | None = Field(None, gt=0)
    isolated_margin_usd: float | None = Field(None, gt=0)
    wallet_balance_usd: float | None = Field(None, gt=0)  # cross margin
    opened_at: datetime | None = None
    fees_paid_usd: float = 0.0  # negative: a maker rebate received
    borrow_apr: float = Field(0.0, ge=0)  # fraction per year on locked capital
    gas_usd: float = Field(0.0, ge=0)  # gas and bridge costs
    locked_capital_usd: float | None = Field(None, gt=0)
    hedge: HedgeLeg | None = None

    @model_validator(mode="after")
    def _margin_given(self) -> PositionConfig:
        if self.margin_mode == "isolated" and self.leverage is None and self.isolated_margin_usd is None:
            raise ValueError("isolated position needs leverage or isolated_margin_usd")
        if self.margin_mode == "cross" and self.wallet_balance_usd is None:
            raise ValueError("cross position needs wallet_balance_usd")
        return self


class PositionsConfig(_Model):
    from_accounts: bool = False  # read positions with the exchanges' read-only keys
    poll_seconds: float = Field(15.0, gt=0)
    db_path: Path = Path("var/positions.sqlite")  # funding accruals, exactly once per settlement
    hit_horizons_hours: list[float] = Field(default_factory=lambda: [1.0, 8.0])
    shocks_pct: list[float] = Field(default_factory=lambda: [-15.0, -10.0, -5.0, 5.0, 10.0, 15.0])
    # marks sampled this often for the hit probability's realised volatility; 20 returns are needed
    vol_sample_seconds: float = Field(10.0, gt=0)
    # historical stress (docs/positions.md): the worst mark move over each window in the trailing
    # period of 1-minute closes, and the parametric moves at these confidences
    stress_windows_seconds: list[int] = Field(default_factory=lambda: [300], min_length=1)
    stress_period_days: float = Field(30.0, gt=0, le=365)
    stress_confidences: list[float] = Field(default_factory=lambda: [0.99, 0.999], min_length=1)
    # the first positions views wait this long for the start-up kline backfills (then they go on)
    stress_backfill_wait_seconds: float = Field(10.0, ge=0)

    @field_validator("stress_windows_seconds")
    @classmethod
    def _whole_minutes(cls, v: list[int]) -> list[int]:
        bad = [w for w in v if w < 60 or w % 60]
        if bad:
            raise ValueError(f"stress windows are whole minutes of 1-minute closes (60, 300, ...): {bad}")
        return sorted(set(v))

    @field_validator("stress_confidences")
    @classmethod
    def _confidences(cls, v: list[float]) -> list[float]:
        bad = [c for c in v if not 0.5 < c < 1.0]
        if bad:
            raise ValueError(f"stress confidences are in (0.5, 1), e.g. 0.99: {bad}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _windows_in_period(self) -> PositionsConfig:
        if max(self.stress_windows_seconds) >= self.stress_period_days * 86400.0:
            raise ValueError("a stress window must be shorter than stress_period_days")
        return self


# ---------------------------------------------------------------------------------------------
# AI sidecar (issue 5)


class ModelConfig(_Model):
    name: str = Field(min_length=1)  # label value of model=
    base_url: str  # OpenAI-compatible, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key_env: str | None = None
    api_key_file: Path | None = None
    timeout_seconds: float = Field(30.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    max_tokens: int = Field(800, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    price_prompt_per_million_usd: float = Field(0.0, ge=0)
    price_completion_per_million_usd: float = Field(0.0, ge=0)
    backoff_seconds: float = Field(1.0, ge=0)  # first retry delay on 429/5xx without Retry-After; doubles
    max_backoff_seconds: float = Field(60.0, ge=0)  # a longer Retry-After blocks the model until then
    max_concurrency: int = Field(4, ge=1, le=64)  # calls in flight at once (one per base asset at most)
    horizons_hours: list[PositiveFloat] | None = Field(None, min_length=1)  # None: the sidecar's horizons

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return check_url(v, ("http", "https")) or v


class SlackConfig(_Model):
    webhook_url_env: str | None = None
    webhook_url_file: Path | None = None
    bot_token_env: str | None = None
    bot_token_file: Path | None = None
    channel: str | None = None
    api_base_url: str | None = None  # tests point this at a local fake Slack
    cooldown_seconds: float = Field(60.0, ge=0)
    max_text_chars: int = Field(1500, ge=100)

    @field_validator("api_base_url")
    @classmethod
    def _api_base_url(cls, v: str | None) -> str | None:
        return check_url(v, ("http", "https"))


class ExporterClientConfig(_Model):
    """How the sidecar authenticates to an exporter that has a web config (basic auth, TLS)."""

    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None  # to verify the exporter's certificate (default: system CAs)
    cert_file: Path | None = None  # client certificate, for an exporter that requires mTLS
    key_file: Path | None = None


class SidecarConfig(_Model):
    exporter_url: str = "http://127.0.0.1:9466"
    exporter_client: ExporterClientConfig = Field(default_factory=ExporterClientConfig)
    listen_address: str = "0.0.0.0:9467"
    web_config_file: Path | None = None  # exporter-toolkit web config of the sidecar's own /metrics
    interval_seconds: float = Field(300.0, gt=0)
    event_poll_seconds: float = Field(5.0, gt=0)  # how often /api/state is checked for threshold events
    bases: list[str] | None = None  # None: every base the exporter reports
    horizon_hours: float = Field(8.0, gt=0)
    # several horizons side by side (label horizon="15m", "4h", ...); None: [horizon_hours]
    horizons_hours: list[float] | None = None
    baseline_horizons_hours: list[float] | None = None  # the baseline's own; None: the sidecar's horizons
    event_threshold_usd: float = Field(10_000_000.0, gt=0)  # liquidated notional that counts as "event"
    baseline: bool = True  # run the local baseline model (always, when no model is configured)
    models: list[ModelConfig] = Field(default_factory=list)
    db_path: Path = Path("var/predictions.sqlite")
    slack: SlackConfig = Field(default_factory=SlackConfig)
    # Baseline model (docs/sidecar.md): volatility and liquidation-flow memories, cascade distance
    vol_half_life_seconds: float = Field(3600.0, gt=0)
    flow_half_life_seconds: float = Field(900.0, gt=0)
    # The baseline's constants: fitted by `fr-exporter fit-baseline` on exporter/sidecar/data (docs/sidecar.md)
    cascade_distance_ratio: float = Field(0.239466, gt=0, lt=1)  # move that starts a cascade in a calm market
    default_vol_per_sqrt_hour: float = Field(0.006, gt=0)  # until enough mark prices are recorded
    observation_max_gap_seconds: float = Field(600.0, gt=0)  # a longer read gap cannot be placed in time
    flow_persistence_seconds: float = Field(7079.78, gt=0)  # fitted: how long observed flow keeps going
    flow_scale: float = Field(0.0, ge=0)  # fitted: expected flow within the horizon per unit of observed flow
    stress_weight: float = Field(0.6, ge=0)  # fitted
    distance_decay: float = Field(1.0, ge=0)  # fitted
    background_rate_per_hour: float = Field(0.0630957, ge=0)  # fitted: events/hour the market state does not explain
    # Recalibration and skill (docs/sidecar.md)
    calibration_min_scored: int = Field(100, ge=10)  # scored predictions per model x base x horizon
    calibration_max_history: int = Field(5000, ge=100)  # most recent scored predictions used to fit
    alert_probability: float = Field(0.7, gt=0, lt=1)  # precision/recall/F1 threshold (= AiRiskHigh's)
    skill_window_seconds: float = Field(7 * 86400.0, gt=0)  # the rolling window of the skill series
    skill_min_scored: int = Field(30, ge=1)  # fewer scored predictions: skill series absent

    def horizons(self) -> list[float]:
        return sorted(set(self.horizons_hours or [self.horizon_hours]))

    def horizons_for(self, model: ModelConfig | None) -> list[float]:
        """A model's horizons (None: the baseline's)."""
        own = self.baseline_horizons_hours if model is None else model.horizons_hours
        return sorted(set(own)) if own else self.horizons()

    @field_validator("listen_address")
    @classmethod
    def _sidecar_address(cls, v: str) -> str:
        parse_listen_address(v)
        return v

    @field_validator("exporter_url")
    @classmethod
    def _exporter_url(cls, v: str) -> str:
        return check_url(v, ("http", "https")) or v

    @field_validator("horizons_hours", "baseline_horizons_hours")
    @classmethod
    def _positive_horizons(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not h > 0 for h in v)):
            raise ValueError("horizons must be a non-empty list of positive hours")
        return v

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list[ModelConfig]) -> list[ModelConfig]:
        # the name is the model= label: two models with one name would overwrite each other's series
        names = [m.name for m in v]
        if len(set(names)) != len(names) or "baseline" in names:
            raise ValueError("model names must be unique and not 'baseline'")
        return v


# ---------------------------------------------------------------------------------------------


# recording.level: the ranges zstd and gzip take (zstd: ZSTD_minCLevel()..ZSTD_maxCLevel(); a negative
# level is faster and writes larger files), and the defaults, chosen by bench/bench_recording.py
# --levels on frames as the exchanges send them (docs/recording.md "Which zstd level")
ZSTD_LEVELS = (-131072, 22)
GZIP_LEVELS = (0, 9)
RECORDING_ZSTD_LEVEL = -3
RECORDING_GZIP_LEVEL = 1


def recording_compression(compression: str) -> str:
    """``auto`` resolved: zstd when the zstandard package is installed (a third of gzip's CPU), else gzip."""
    if compression == "auto":
        import importlib.util

        return "zstd" if importlib.util.find_spec("zstandard") is not None else "gzip"
    return compression


class RecordingConfig(_Model):
    """Raw frame recording (off unless ``dir`` is set): docs/recording.md."""

    dir: Path | None = None
    rotate_seconds: float = Field(3600.0, gt=0)  # a new file this often (by receive time)
    max_bytes: int = Field(1 << 30, gt=0)  # oldest files deleted beyond this many bytes in dir
    # auto: zstd when the zstandard package is installed (a third of gzip's CPU), else gzip
    compression: Literal["auto", "gzip", "zstd"] = "auto"
    queue_size: int = Field(100_000, gt=0)  # frames waiting for the writer; beyond: the oldest dropped, counted
    # compression level; unset: RECORDING_ZSTD_LEVEL (-3) with zstd, RECORDING_GZIP_LEVEL (1) with gzip,
    # filled in at validation (docs/recording.md: CPU and disk of each level)
    level: int | None = None

    @model_validator(mode="after")
    def _level(self) -> RecordingConfig:
        compression = recording_compression(self.compression)
        if self.level is None:
            self.level = RECORDING_ZSTD_LEVEL if compression == "zstd" else RECORDING_GZIP_LEVEL
            return self
        lo, hi = ZSTD_LEVELS if compression == "zstd" else GZIP_LEVELS
        if not lo <= self.level <= hi:
            hint = " (negative levels: faster, larger files)" if compression == "zstd" else ""
            raise ValueError(f"recording.level {self.level}: {compression} takes {lo}..{hi}{hint}")
        return self


class Config(_Model):
    listen_address: str = "0.0.0.0:9466"
    # exporter-toolkit web config (TLS, mTLS, basic auth): docs in exporter/web.py, README "Security"
    web_config_file: Path | None = None
    telemetry_path: str = Field("/metrics", pattern=r"^/[^?#\s]*$")
    tls: TlsConfig | None = None  # older, TLS only; web_config_file replaces it
    # any case, and Prometheus' `warn`, as the --log.level flag (exporter.logs.LEVELS)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    exchanges: dict[Exchange, ExchangeConfig] = Field(default_factory=lambda: {ex: ExchangeConfig() for ex in Exchange})
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig)
    positions: list[PositionConfig] = Field(default_factory=list)
    position_settings: PositionsConfig = Field(default_factory=PositionsConfig)
    sidecar: SidecarConfig = Field(default_factory=SidecarConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    rest_budget: RestBudgetConfig = Field(default_factory=RestBudgetConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    # Positions that failed validation: skipped, reported by the position service; the rest runs.
    _position_issues: list[PositionIssue] = PrivateAttr(default_factory=list)
    # Where each setting was read (YAML path -> line) and from which file, for later checks' messages.
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr("<defaults>")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, v: object) -> object:
        return LEVELS.get(v.strip().lower(), v) if isinstance(v, str) else v

    @property
    def position_issues(self) -> list[PositionIssue]:
        return self._position_issues

    @field_validator("exchanges")
    @classmethod
    def _all_exchanges(cls, v: dict[Exchange, ExchangeConfig]) -> dict[Exchange, ExchangeConfig]:
        # An exchange left out of the file keeps its defaults; disable one with `enabled: false`.
        return {ex: v.get(ex) or ExchangeConfig() for ex in Exchange}

    @field_validator("listen_address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_listen_address(v)
        return v

    def enabled_exchanges(self) -> dict[Exchange, ExchangeConfig]:
        return {ex: c for ex, c in self.exchanges.items() if c.enabled}

    def instruments_for(self, exchange: Exchange) -> list[str]:
        c = self.exchanges.get(exchange)
        if c is None or c.instruments is None:
            return list(DEFAULT_INSTRUMENTS[exchange])
        return list(c.instruments)

    def urls_for(self, exchange: Exchange) -> tuple[str, str]:
        ws, rest = LIVE_URLS[exchange]
        c = self.exchanges.get(exchange)
        if c is not None:
            ws = c.ws_url or ws
            rest = c.rest_url or rest
        return ws.rstrip("/"), rest.rstrip("/")


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port`` or ``:port`` (Prometheus style) -> (host, port). Port 0: any free port (tests)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen address {value!r} is not host:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


@dataclass(frozen=True, slots=True)
class PositionIssue:
    """One invalid entry of ``positions:``: skipped at start, the rest of the exporter keeps running."""

    index: int
    name: str
    field: str  # e.g. "size"
    message: str  # names the file, line and field


class ConfigError(Exception):
    """A configuration that cannot be used. The message names the field and, if known, the line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # merge keys (<<) first: an override through a merge is not a duplicate
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)  # type: ignore[arg-type]


def _line_index(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each YAML path (keys and list indexes) to its 1-based line number."""
    index: dict[tuple[str | int, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                index[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    if root is not None:
        walk(root, ())
    return index


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("FR_"):
            continue
        path = [p.lower() for p in name[3:].split("__") if p]
        if not path or path[0] not in Config.model_fields:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _env_names(environ: dict[str, str]) -> dict[tuple[str, ...], str]:
    """Config path -> the FR_* variable that set it, so an error names the variable, not a line."""
    out: dict[tuple[str, ...], str] = {}
    for name in environ:
        if name.startswith("FR_"):
            path = tuple(p.lower() for p in name[3:].split("__") if p)
            if path and path[0] in Config.model_fields:
                out[path] = name
    return out


def format_validation_error(
    err: ValidationError,
    lines: dict[tuple[str | int, ...], int],
    source: str,
    env: dict[tuple[str, ...], str] | None = None,
) -> str:
    parts = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        dotted = ".".join(str(x) for x in loc) or "(top level)"
        var = next(
            (env[loc[:n]] for n in range(len(loc), 0, -1) if env and loc[:n] in env),  # type: ignore[index]
            None,
        )
        if var is not None:
            parts.append(f"environment variable {var}: {dotted}: {e['msg']}")
            continue
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        where = f"{source}:{line}" if line else source
        parts.append(f"{where}: {dotted}: {e['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(parts)


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load, merge environment overrides, validate. Raises ConfigError with field and line."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    lines: dict[tuple[str | int, ...], int] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            line = Path(path).read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x})") from None
        try:
            loaded = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}:1: the configuration must be a mapping, not {type(loaded).__name__}")
        data = loaded
        lines = _line_index(text)
    data = _merge(data, _env_overrides(environ))
    data, issues = _split_invalid_positions(data, lines, source)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, lines, source, _env_names(environ))) from None
    config._position_issues = issues
    config._lines = lines
    config._source = source
    return config


def runtime_problems(config: Config, environ: dict[str, str] | None = None) -> list[str]:
    """What ``load_config`` cannot see but a start would trip on, each naming the field and line:
    secrets (environment variables that are unset, files that cannot be read) and TLS files.

    Run by ``check-config``; not at load, since the exporter and the sidecar share one file but
    each has only its own secrets in its environment.
    """
    env = os.environ if environ is None else environ
    lines, source = config._lines, config._source
    out: list[str] = []

    def where(path: tuple[str | int, ...]) -> str:
        for n in range(len(path), -1, -1):
            if path[:n] in lines:
                return f"{source}:{lines[path[:n]]}"
        return source

    def need_file(path: tuple[str | int, ...], file: Path | None, what: str) -> None:
        if file is None:
            return
        try:
            with Path(file).open("rb"):
                pass
        except OSError as exc:
            out.append(f"{where(path)}: {'.'.join(map(str, path))}: cannot read {what} {file}: {exc.strerror}")

    def need_env(path: tuple[str | int, ...], name: str | None) -> None:
        if name and not (env.get(name) or "").strip():
            out.append(f"{where(path)}: {'.'.join(map(str, path))}: environment variable {name} is not set")

    if config.tls is not None:
        need_file(("tls", "cert_file"), config.tls.cert_file, "the TLS certificate")
        need_file(("tls", "key_file"), config.tls.key_file, "the TLS key")
    for ex, ec in config.exchanges.items():
        if not ec.enabled:
            continue
        c = ec.credentials
        base: tuple[str | int, ...] = ("exchanges", ex.value, "credentials")
        for key in ("api_key", "api_secret", "passphrase"):
            file = getattr(c, f"{key}_file")
            if file is not None:  # the file wins over the variable (read_secret)
                need_file((*base, f"{key}_file"), file, "the secret file")
            else:
                need_env((*base, f"{key}_env"), getattr(c, f"{key}_env"))
    sc = config.sidecar
    for i, m in enumerate(sc.models):
        if m.api_key_file is not None:
            need_file(("sidecar", "models", i, "api_key_file"), m.api_key_file, "the secret file")
        else:
            need_env(("sidecar", "models", i, "api_key_env"), m.api_key_env)
    for key in ("webhook_url", "bot_token"):
        file = getattr(sc.slack, f"{key}_file")
        if file is not None:
            need_file(("sidecar", "slack", f"{key}_file"), file, "the secret file")
        else:
            need_env(("sidecar", "slack", f"{key}_env"), getattr(sc.slack, f"{key}_env"))
    return out


def _split_invalid_positions(
    data: dict[str, Any], lines: dict[tuple[str | int, ...], int], source: str
) -> tuple[dict[str, Any], list[PositionIssue]]:
    """Validate each position alone, so one bad position is reported and skipped, not fatal."""
    raw = data.get("positions")
    if not isinstance(raw, list):
        return data, []
    good: list[Any] = []
    issues: list[PositionIssue] = []
    for i, item in enumerate(raw):
        try:
            PositionConfig.model_validate(item)
        except ValidationError as exc:
            name = str(item.get("name", f"#{i}")) if isinstance(item, dict) else f"#{i}"
            for err in exc.errors():
                field = ".".join(str(x) for x in err["loc"]) or "(position)"
                line = lines.get(("positions", i, *err["loc"])) or lines.get(("positions", i))
                where = f"{source}:{line}" if line else source
                issues.append(PositionIssue(i, name, field, f"{where}: positions.{i}.{field}: {err['msg']}"))
            continue
        good.append(item)
    return {**data, "positions": good}, issues


def read_secret(env_name: str | None, file_path: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """A secret from an environment variable or a file (file wins). Never log the result."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    value: str | None = None
    if file_path is not None:
        try:
            value = Path(file_path).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {file_path}: {exc.strerror}") from exc
    elif env_name:
        raw = env.get(env_name)
        value = raw.strip() if raw else None
    register_secret(value)  # from now on it is redacted from every log line
    return value
