"""Domain checks for parsed quantities, shared by the four feed modules.

A value that converts to a finite number can still be absurd: ``"fundingIntervalHour":"1e308"``
becomes an infinite interval once multiplied, an index of ``1e-320`` makes the premium infinite.
Every quantity a parser produces passes one of these checks *after* conversion; a value outside
its domain raises :class:`~exporter.model.ParseError` with a ``reason`` naming the domain, so the
frame is counted and dropped and the previous good value stays.

The bounds are generous on purpose (a wrong bound would drop real data): they only have to keep
out what cannot be a market value. A chained comparison is false for NaN, so each check also
rejects NaN and the infinities at no extra cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import msgspec

from exporter.model import ParseError

# Prices in quote currency: no perpetual trades above a billion, none below 1e-12 (1000SHIB-style
# contracts exist because the raw coin price is ~1e-5).
PRICE_MIN = 1e-12
PRICE_MAX = 1e9
# Quantities in base coin (open interest, liquidation size): the largest supplies are ~1e15.
QTY_MAX = 1e16
# USD amounts (open interest, notional, insurance balance): ten trillion.
USD_MAX = 1e13
# Funding rate, cap, floor and premium: fraction per interval; real caps are a few per cent.
RATE_MAX = 1.0
# Funding interval in seconds: exchanges use 1, 2, 4 or 8 hours; anything in [1 min, 1 day] is accepted.
INTERVAL_MIN = 60.0
INTERVAL_MAX = 86400.0
# Long/short account ratio.
RATIO_MAX = 1e6
# Timestamps (Unix seconds) without a clock: after 2014-05 (before any of these perpetuals) and
# before 2100. With a clock (FeedContext.clock): within [now - PAST_S, now + FUTURE_S].
TS_MIN = 1.4e9
TS_MAX = 4.1e9
PAST_S = 5 * 366 * 86400.0  # funding history backfills reach back weeks, never years
FUTURE_S = 2 * 86400.0  # the next settlement is at most a day away; event times are "now"

# ParseError.reason values (bounded: they are label values of fr_parse_errors_by_reason_total).
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
BAD_SHAPE = "bad_shape"
NOT_A_NUMBER = "not_a_number"
NOT_FINITE = "not_finite"
PRICE = "price_out_of_range"
QTY = "size_out_of_range"
USD = "usd_out_of_range"
RATE = "rate_out_of_range"
INTERVAL = "interval_out_of_range"
RATIO = "ratio_out_of_range"
TIMESTAMP = "timestamp_out_of_range"
PARSER_BUG = "parser_error"
REASONS = (
    INVALID_JSON,
    MISSING_FIELD,
    BAD_SHAPE,
    NOT_A_NUMBER,
    NOT_FINITE,
    PRICE,
    QTY,
    USD,
    RATE,
    INTERVAL,
    RATIO,
    TIMESTAMP,
    PARSER_BUG,
)

STATIC_BOUNDS = (TS_MIN, TS_MAX)

# The same domains as msgspec constraints, for the typed fast paths: a decimal string outside its
# domain fails the decoding itself (NaN and the infinities too: the comparisons are false), and the
# strict path parses the frame again and names the field. No Python comparison is left for them.
Price = Annotated[float, msgspec.Meta(ge=PRICE_MIN, le=PRICE_MAX)]
PriceOr0 = Annotated[float, msgspec.Meta(ge=0.0, le=PRICE_MAX)]  # 0 = "not given" (an unfilled average)
Qty = Annotated[float, msgspec.Meta(gt=0.0, le=QTY_MAX)]
QtyOr0 = Annotated[float, msgspec.Meta(ge=0.0, le=QTY_MAX)]
Rate = Annotated[float, msgspec.Meta(ge=-RATE_MAX, le=RATE_MAX)]
Holding = Annotated[float, msgspec.Meta(ge=0.0, le=QTY_MAX)]  # open interest: zero is real
Usd = Annotated[float, msgspec.Meta(ge=0.0, le=USD_MAX)]


def out_of_range(key: str, x: float, reason: str) -> ParseError:
    if x != x:  # NaN has no place on any scale; an infinity (1e308 hours -> seconds) is out of range
        return ParseError(f"field {key!r}: not a finite number: {x!r}", NOT_FINITE)
    return ParseError(f"field {key!r}: {x!r} is outside its domain ({reason})", reason)


def price(x: float, key: str) -> float:
    if not PRICE_MIN <= x <= PRICE_MAX:
        raise out_of_range(key, x, PRICE)
    return x


def qty(x: float, key: str) -> float:
    """A strictly positive quantity in base coin (a liquidation's size)."""
    if not 0.0 < x <= QTY_MAX:
        raise out_of_range(key, x, QTY)
    return x


def holding(x: float, key: str) -> float:
    """Open interest in base coin or contracts: zero is real (a new listing), negative is not."""
    if not 0.0 <= x <= QTY_MAX:
        raise out_of_range(key, x, QTY)
    return x


def usd(x: float, key: str) -> float:
    """A USD amount that may be zero (open interest, insurance balance)."""
    if not 0.0 <= x <= USD_MAX:
        raise out_of_range(key, x, USD)
    return x


def rate(x: float, key: str) -> float:
    if not -RATE_MAX <= x <= RATE_MAX:
        raise out_of_range(key, x, RATE)
    return x


def interval(x: float, key: str) -> float:
    """A funding interval in seconds (after conversion from hours or minutes)."""
    if not INTERVAL_MIN <= x <= INTERVAL_MAX:
        raise out_of_range(key, x, INTERVAL)
    return x


def ratio(x: float, key: str) -> float:
    if not 0.0 < x <= RATIO_MAX:
        raise out_of_range(key, x, RATIO)
    return x


def timestamp(t: float, key: str, bounds: tuple[float, float] = STATIC_BOUNDS) -> float:
    """Unix seconds within ``bounds`` (see :meth:`FeedContext.time_bounds`)."""
    if not bounds[0] <= t <= bounds[1]:
        raise out_of_range(key, t, TIMESTAMP)
    return t


def opt(check: Callable[[float, str], float], x: float | None, key: str) -> float | None:
    """``check(x, key)`` for a value that may be absent (None stays None)."""
    if x is None:
        return None
    return check(x, key)
