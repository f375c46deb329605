"""Typed records shared by every layer.

Parsers turn exchange frames into these records; the state store applies them; analytics and
collectors read state. Nothing here knows about sockets, HTTP or Prometheus.

Conventions: prices in quote currency, times in Unix seconds (float), rates as the fraction the
exchange delivers per funding interval, sizes in base coin, notionals in USD. ``None`` always means
"not in this message" (a Bybit delta leaves the field unchanged), never zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import msgspec


class Exchange(StrEnum):
    BINANCE = "binance"
    BYBIT = "bybit"
    OKX = "okx"
    DERIBIT = "deribit"


EXCHANGES: tuple[Exchange, ...] = tuple(Exchange)

EIGHT_HOURS = 8 * 3600.0
SECONDS_PER_YEAR = 365.0 * 24 * 3600


class Side(StrEnum):
    """Side of a *position* (a liquidation's side is the side of the liquidated position)."""

    LONG = "long"
    SHORT = "short"


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    """Static facts about one perpetual (or dated future: ``expiry`` set), from the exchange's
    instrument list or configuration."""

    exchange: Exchange
    instrument: str  # the exchange's own id: BTCUSDT, BTC-USDT-SWAP, BTC-PERPETUAL
    base: str  # BTC
    quote: str  # USDT, USDC, USD
    contract_size: float = 1.0  # base coin per contract (OKX ctVal); inverse: USD per contract
    inverse: bool = False  # contract value fixed in USD (Deribit BTC-PERPETUAL, OKX BTC-USD-SWAP)
    funding_interval_s: float | None = None  # None: unknown yet; Deribit continuous -> 28800
    funding_cap: float | None = None  # per interval, fraction
    funding_floor: float | None = None
    # Dated (delivery) futures only: Unix seconds of the delivery; None for a perpetual.
    expiry: float | None = None


# The two records built per frame on the hot paths are msgspec Structs: their __init__ is C (a third of
# a slots dataclass's, which runs Python code per field), reads are slot reads, equality and repr the
# same. gc=False: they hold only numbers, strings and enums (and the sink's opaque handle, which refers
# to no record), never a cycle. Not frozen: a frozen
# __init__ costs more, and a parser sets a rare field after building the record.
class MarketUpdate(msgspec.Struct, gc=False):
    """Mark/index/funding/open-interest fields of one instrument at one moment.

    Every field except the key is optional: only the fields present in the frame are set.
    """

    exchange: Exchange
    instrument: str
    event_time: float | None = None  # exchange timestamp, Unix seconds
    mark_price: float | None = None
    index_price: float | None = None
    funding_rate: float | None = None  # current/predicted rate for the next settlement
    next_funding_time: float | None = None  # Unix seconds
    funding_interval_s: float | None = None
    funding_cap: float | None = None
    funding_floor: float | None = None
    funding_rate_8h: float | None = None  # Deribit's funding_8h (8 h-equivalent, continuous)
    premium: float | None = None  # exchange-published premium index, if any
    open_interest_base: float | None = None  # base coin
    open_interest_usd: float | None = None  # USD notional
    # True when the message is a snapshot or delta of a whole ticker (Bybit): fields it leaves out
    # are unchanged *and still current*, so every value already known is fresh as of this message.
    confirms_ticker: bool = False
    # Dated futures: the exchange's estimated delivery price (Binance ``P``; meaningful in the last hour)
    settle_price_estimate: float | None = None
    # True for a snapshot of a snapshot+delta stream (Bybit "type":"snapshot"): a fresh baseline
    # after which the deltas of the same session may confirm the fields they leave out.
    snapshot: bool = False
    # Opaque to everyone but the sink that gave it (FeedContext.handles, MarketState.bind): where the
    # sink keeps this instrument, so that it skips its own lookup. None: the sink looks the id up.
    handle: object = None


class FundingUpdate(MarketUpdate, gc=False):
    """A :class:`MarketUpdate` of the funding fields alone (an OKX ``funding-rate`` push): event time,
    rate, next funding time, interval, cap, floor, premium. The store applies it on a path that reads
    only these (``MarketState.apply_many``); every other field must stay None/False (the parsers that
    build it set none: ``tests/test_state_paths.py`` checks the paths agree)."""


class OpenInterestUpdate(MarketUpdate, gc=False):
    """A :class:`MarketUpdate` of the open interest alone (an OKX ``open-interest`` push or REST row):
    event time, open interest in base coin and/or USD. The store applies it on a path that reads only
    these; every other field must stay None/False (``tests/test_state_paths.py``)."""


class Liquidation(msgspec.Struct, gc=False):  # a Struct like MarketUpdate: one is built per liquidation
    exchange: Exchange
    instrument: str
    event_time: float
    side: Side  # side of the liquidated position
    price: float
    quantity_base: float
    notional_usd: float


class FundingSettlement(msgspec.Struct, gc=False):  # a Struct like MarketUpdate: OKX sends one in every funding push
    """A settled (historical) funding rate, from REST history or a settlement push."""

    exchange: Exchange
    instrument: str
    funding_time: float  # Unix seconds of the settlement
    rate: float  # fraction per that instrument's interval
    interval_s: float | None = None
    mark_price: float | None = None  # mark at the settlement, where the exchange gives it (Binance)


@dataclass(frozen=True, slots=True)
class Candle:
    """One candle of an exchange's price history (mark, index or premium index), from REST.

    ``open_time`` in Unix seconds; prices in quote currency (a premium-index candle holds the
    premium as a fraction). Exchange and instrument are the caller's: the bodies do not all name them.
    """

    open_time: float
    open: float
    high: float
    low: float
    close: float


@dataclass(frozen=True, slots=True)
class OpenInterestPoint:
    """Open interest of one instrument at one time of the exchange's open-interest history (REST)."""

    time: float  # Unix seconds
    open_interest_usd: float


@dataclass(frozen=True, slots=True)
class LongShortRatio:
    exchange: Exchange
    instrument: str
    event_time: float
    ratio: float  # long accounts / short accounts


@dataclass(frozen=True, slots=True)
class InsuranceFund:
    exchange: Exchange
    pool: str  # e.g. "USDT", or the exchange's pool id
    event_time: float
    balance_usd: float


@dataclass(frozen=True, slots=True)
class Tier:
    """One maintenance-margin tier.

    ``floor``/``cap`` bound the tier's size: USD notional (Binance, Bybit, Deribit) or contracts
    (OKX). ``deduction`` is Binance ``cum`` / Bybit ``mmDeduction`` (USD), so that
    ``MM = size_value x mmr - deduction``.
    """

    floor: float
    cap: float
    mmr: float
    max_leverage: float | None = None
    deduction: float = 0.0


@dataclass(frozen=True, slots=True)
class AccountPosition:
    """One open position as an exchange account reports it (signed, read-only read).

    ``size`` is in base coin (OKX contracts already multiplied by ``contract_size``); inverse
    (Deribit ``BTC-PERPETUAL``) sizes are in coin too. ``liquidation_price``: the exchange's own
    figure; 0 for a long no price liquidates, None when unknown or none for a short.
    """

    exchange: Exchange
    instrument: str
    side: Side
    size: float
    entry_price: float
    margin_mode: str  # "isolated" | "cross"
    margin_usd: float | None  # isolated margin; None in cross (the wallet is not read)
    leverage: float | None
    liquidation_price: float | None
    adl_raw: float | None  # the exchange's own ADL indicator (scale differs per exchange)
    mark_price: float | None
    opened_at: float | None = None  # Unix seconds of the current opening, when the exchange says
    contract_size: float = 1.0  # OKX ctVal used for ``size``
    inverse: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """The server asks for a reply (Deribit ``test_request``). The connection layer answers."""

    exchange: Exchange
    reply: str  # the exact text frame to send back


@dataclass(frozen=True, slots=True)
class SubscriptionError:
    """The exchange refused a subscription (bad symbol...). Counted, logged; not retried blindly."""

    exchange: Exchange
    message: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """One element of a many-element frame (Binance ``!markPrice@arr``, a batch of trades or
    liquidations) that failed its checks: the others are kept; the connection counts this one
    as a parse error with ``reason`` (see :class:`ParseError`)."""

    exchange: Exchange
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class AnchorBackfill:
    """The anchor regression's samples for the past of one instrument, rebuilt from the exchange's
    candles at start (:mod:`exporter.analytics.anchor`): (time, funding per 8 h, premium), oldest first."""

    exchange: Exchange
    instrument: str
    samples: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True, slots=True)
class HistoryBackfill:
    """The past of one instrument's factor signals, read from the exchange's history at start:
    1-minute mark closes as (minute open time, close) and open interest as (time, USD), oldest first.
    Merged behind what the live stream has already brought (exporter.trackers.Sampler.backfill_history)."""

    exchange: Exchange
    instrument: str
    mark_closes: tuple[tuple[float, float], ...] = ()
    open_interest: tuple[tuple[float, float], ...] = ()


Record = (
    MarketUpdate  # FundingUpdate and OpenInterestUpdate too (subclasses)
    | Liquidation
    | FundingSettlement
    | LongShortRatio
    | InsuranceFund
    | HeartbeatRequest
    | SubscriptionError
    | Rejected
    | AnchorBackfill
    | HistoryBackfill
)


class ParseError(ValueError):
    """A frame that cannot be turned into records. The caller counts it (by ``reason``, one of
    ``exporter.feeds.validate.REASONS``) and changes nothing."""

    def __init__(self, message: str, reason: str = "bad_shape") -> None:
        super().__init__(message)
        self.reason = reason


def base_of(exchange: Exchange, instrument: str) -> tuple[str, str]:
    """Best-effort (base, quote) from an instrument id when no instrument list is known.

    >>> base_of(Exchange.BINANCE, "ETHUSDT")
    ('ETH', 'USDT')
    >>> base_of(Exchange.OKX, "BTC-USDT-SWAP")
    ('BTC', 'USDT')
    >>> base_of(Exchange.DERIBIT, "ETH_USDC-PERPETUAL")
    ('ETH', 'USDC')
    """
    if exchange is Exchange.OKX:
        parts = instrument.split("-")
        return parts[0], parts[1] if len(parts) > 1 else "USD"
    if exchange is Exchange.DERIBIT:
        head = instrument.split("-")[0]
        if "_" in head:
            b, q = head.split("_", 1)
            return b, q
        return head, "USD"
    for quote in ("USDT", "USDC", "BUSD", "USD"):
        if instrument.endswith(quote) and len(instrument) > len(quote):
            return instrument[: -len(quote)], quote
    return instrument, "USDT"
