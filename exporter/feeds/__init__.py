"""Exchange feeds: pure protocol modules (one per exchange) and the helpers they share.

``feed_for(Exchange.OKX)`` gives the :class:`~exporter.feeds.base.Feed` of that exchange; ``FEEDS``
maps every exchange to its feed. The helpers below convert wire values strictly: a value that is not
a finite number raises :class:`~exporter.model.ParseError` instead of becoming a wrong number, and
:mod:`exporter.feeds.validate` checks each converted quantity against its domain.
Every feed's ``parse_ws`` is its ``_typed`` method: the typed path with the strict path written in as
its fallback (on :data:`FAST_FAILURES`), one call a frame: a separate dispatch function in front of it
cost a second call, ~4-5 % of a small push.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from exporter.feeds import validate as V
from exporter.model import Exchange, FundingSettlement, ParseError, Record

if TYPE_CHECKING:
    from exporter.feeds.base import Feed, FeedContext

T = TypeVar("T")

# Quotes whose unit is (close enough to) one US dollar: notional in them is reported as USD.
USD_QUOTES = frozenset({"USDT", "USDC", "USD", "BUSD", "FDUSD", "USDE"})


def loads(frame: str | bytes | bytearray | memoryview) -> Any:
    """JSON text -> Python objects; invalid or truncated JSON (and NaN/Infinity literals) -> ParseError."""
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}", V.INVALID_JSON) from None


def num(v: object, key: str) -> float:
    """A required finite number, from a decimal string (Binance/Bybit/OKX) or a JSON number (Deribit)."""
    tv = type(v)
    if tv is str:
        try:
            x = float(v)  # type: ignore[arg-type]
        except ValueError:
            raise ParseError(f"field {key!r}: not a number: {v!r}", V.NOT_A_NUMBER) from None
    elif tv is float or tv is int:  # bool is excluded on purpose: True is not 1.0
        try:
            x = float(v)  # type: ignore[arg-type]
        except OverflowError:
            raise ParseError(f"field {key!r}: number out of range", V.NOT_FINITE) from None
    else:
        raise ParseError(f"field {key!r}: expected a number, got {tv.__name__}", V.BAD_SHAPE)
    if x - x != 0.0:  # NaN and +-inf: inf - inf is NaN, and NaN compares unequal to everything
        raise ParseError(f"field {key!r}: not a finite number: {v!r}", V.NOT_FINITE)
    return x


def explain(row: dict[str, Any], keys: tuple[str, ...], exc: Exception) -> ParseError:
    """The precise error for a row whose fast conversion failed: the first bad field, by name."""
    for k in keys:
        v = row.get(k)
        if v is not None and v != "":
            num(v, k)  # raises the ParseError naming the field
    return ParseError(str(exc), getattr(exc, "reason", V.NOT_A_NUMBER))


def jnum(v: object, key: str) -> float:
    """A required JSON number (Deribit): a string or bool is the wrong type. orjson never yields NaN/inf."""
    tv = type(v)
    if tv is float:
        return v  # type: ignore[return-value]
    if tv is int:
        return float(v)  # type: ignore[arg-type]
    raise ParseError(f"field {key!r}: expected a JSON number, got {tv.__name__} {v!r}", V.BAD_SHAPE)


def opt_num(v: object, key: str) -> float | None:
    """Like :func:`num`, but absent (``None``) or an empty string means "not given" -> None, never 0."""
    if v is None or v == "":
        return None
    return num(v, key)


def ms(v: object, key: str, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> float:
    """Exchange milliseconds (string or integer) -> Unix seconds, within ``bounds``."""
    return V.timestamp(num(v, key) / 1000.0, key, bounds)


def opt_ms(v: object, key: str, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> float | None:
    if v is None or v == "":
        return None
    return V.timestamp(num(v, key) / 1000.0, key, bounds)


def text(v: object, key: str) -> str:
    """A required non-empty string field."""
    if type(v) is not str or not v:
        raise ParseError(f"field {key!r}: expected a non-empty string, got {v!r}", V.BAD_SHAPE)
    return v


def obj(v: object, what: str) -> dict[str, Any]:
    if type(v) is not dict:
        raise ParseError(f"{what}: expected a JSON object, got {type(v).__name__}", V.BAD_SHAPE)
    return v


def arr(v: object, what: str) -> list[Any]:
    if type(v) is not list:
        raise ParseError(f"{what}: expected a JSON array, got {type(v).__name__}", V.BAD_SHAPE)
    return v


# What a parse step may raise on a bad frame: a missing key, a value of the wrong JSON type, a bad number.
PARSE_FAILURES = (ValueError, KeyError, TypeError, AttributeError, IndexError)


# What makes a feed's typed path give up (the same kinds; msgspec errors are ValueErrors): its ``_typed``
# then hands the frame to the strict (orjson) path, which parses it again and either accepts it or raises
# a ParseError naming the problem.
FAST_FAILURES = PARSE_FAILURES


def parse_error(exchange: Exchange, what: str, exc: Exception) -> ParseError:
    """Turn any parse failure into a ParseError that names the exchange and the message kind.

    Parsers wrap their work in ``try/except PARSE_FAILURES`` (free in CPython 3.11 when nothing
    is raised), so a half-parsed frame never gets through and every failure reads the same way.
    """
    if isinstance(exc, KeyError):
        detail, reason = f"missing field {exc}", V.MISSING_FIELD
    elif isinstance(exc, ParseError):
        detail, reason = str(exc), exc.reason
    elif isinstance(exc, ValueError):  # msgspec validation, float("x")
        detail, reason = str(exc), V.NOT_A_NUMBER if "float" in str(exc) else V.BAD_SHAPE
    else:
        detail, reason = f"unexpected shape ({exc})", V.BAD_SHAPE
    return ParseError(f"{exchange.value} {what}: {detail}", reason)


Frame = str | bytes

# What a feed's ``_typed(frame, ctx, strict=False)`` returns for a frame its typed path leaves to the
# strict path: this very list, told apart by identity (tests run the typed path alone: typed_only).
UNTYPED: list[Record] = []


class NotTyped(ValueError):
    """Raised inside a typed path for a frame it does not handle (acks, topics not used): the
    feed's ``_typed`` hands the frame to its strict path."""


def typed_only(feed: Any) -> Callable[[Frame, FeedContext], list[Record] | None]:
    """The typed path of ``feed`` alone, for the tests: None where it leaves the frame to the strict path."""
    typed = feed._typed

    def fast(frame: Frame, ctx: FeedContext) -> list[Record] | None:
        out: list[Record] = typed(frame, ctx, False)
        return None if out is UNTYPED else out

    return fast


ParseWs = Callable[[Frame, "FeedContext"], list[Record]]


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def interval_from_gaps(times: Sequence[float]) -> list[float | None]:
    """Funding interval per settlement from the gap to its neighbour (sorted times, seconds).

    The gap is rounded to whole hours (settlements land on the hour); a lone settlement gets None.
    """
    out: list[float | None] = []
    n = len(times)
    for k in range(n):
        gap = times[k] - times[k - 1] if k > 0 else (times[1] - times[0] if n > 1 else 0.0)
        hours = round(gap / 3600.0)
        out.append(hours * 3600.0 if hours > 0 else None)
    return out


def settlements(
    exchange: Exchange, rows: dict[str, list[tuple[float, float]]], interval_s: float | None = None
) -> list[FundingSettlement]:
    """(time, rate) pairs per instrument -> settlements, oldest first; the interval from the gaps
    between consecutive settlements unless the exchange has a fixed one."""
    out: list[FundingSettlement] = []
    for inst, pairs in rows.items():
        pairs.sort()
        intervals = [interval_s] * len(pairs) if interval_s else interval_from_gaps([t for t, _ in pairs])
        out.extend(FundingSettlement(exchange, inst, t, r, iv) for (t, r), iv in zip(pairs, intervals, strict=True))
    return out


def label(name: str, index: int, total: int) -> str:
    """Stream label for the fr_stream_* series: ``tickers``, or ``tickers-2`` when split."""
    return name if total <= 1 or index == 0 else f"{name}-{index + 1}"


# The feed modules import the helpers above, so they are imported after them.
from exporter.feeds.binance import BinanceFeed  # noqa: E402
from exporter.feeds.bybit import BybitFeed  # noqa: E402
from exporter.feeds.deribit import DeribitFeed  # noqa: E402
from exporter.feeds.okx import OkxFeed  # noqa: E402

FEEDS: dict[Exchange, Feed] = {
    Exchange.BINANCE: BinanceFeed(),
    Exchange.BYBIT: BybitFeed(),
    Exchange.OKX: OkxFeed(),
    Exchange.DERIBIT: DeribitFeed(),
}


def feed_for(exchange: Exchange) -> Feed:
    """The protocol implementation of one exchange."""
    return FEEDS[Exchange(exchange)]


__all__ = [
    "FEEDS",
    "BinanceFeed",
    "BybitFeed",
    "DeribitFeed",
    "OkxFeed",
    "feed_for",
]
