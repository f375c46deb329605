"""REST endpoints per exchange: paths, parameters, pagination.

Bodies are parsed by the exchange's :class:`~exporter.feeds.base.Feed` (bytes in, records out);
this module only knows how to ask and how to page. Only the row count of a page is read here, to
know whether another page exists. A body the parser rejects is counted as a ``parse`` failure on
its endpoint and raised as :class:`RestError` -- nothing is applied from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import orjson

from exporter.feeds import dated
from exporter.feeds.base import Feed, FeedContext
from exporter.feeds.server_time import SERVER_TIME_PATHS, parse_server_time
from exporter.model import (
    Exchange,
    FundingSettlement,
    InstrumentInfo,
    InsuranceFund,
    LongShortRatio,
    MarketUpdate,
)
from exporter.rest.client import Params, RestClient, RestError

log = logging.getLogger(__name__)

T = TypeVar("T")

# endpoint labels (fr_rest_* series)
INSTRUMENTS = "instruments"
FUNDING_HISTORY = "funding_history"
FUNDING_INFO = "funding_info"
OPEN_INTEREST = "open_interest"
LONG_SHORT_RATIO = "long_short_ratio"
INSURANCE_FUND = "insurance_fund"
FUTURES = "futures_instruments"  # dated futures' list (term structure)
SERVER_TIME = "server_time"

MAX_PAGES = 200  # a runaway paginator (server ignoring our cursor) stops here


def _ms(t: float) -> int:
    return int(t * 1000)


def _rows(body: bytes, *path: str) -> int:
    """Number of rows in the list at ``path`` of a JSON body (0 when absent or not a list)."""
    try:
        node: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    for key in path:
        if not isinstance(node, dict):
            return 0
        node = node.get(key)
    return len(node) if isinstance(node, list) else 0


class ExchangeRest:
    """Base: the endpoints every exchange shares the shape of. Subclasses set paths and paging."""

    exchange: Exchange
    polls_open_interest = False  # True where open interest has no stream (Binance)
    has_long_short_ratio = False
    has_insurance_fund = False
    has_funding_info = False

    def __init__(self, client: RestClient, feed: Feed, ctx: FeedContext) -> None:
        self.client = client
        self.feed = feed
        self.ctx = ctx

    # ---- helpers -----------------------------------------------------------------------------

    async def _fetch(self, endpoint: str, path: str, params: Params | None = None) -> bytes:
        return await self.client.get(endpoint, path, params)

    def _parse(self, endpoint: str, parse: Callable[[], T], body: bytes) -> T:
        try:
            return parse()
        except Exception as exc:  # ParseError, or a parser surprised by the body
            self.client.count_failure(endpoint, "parse")
            excerpt = body[:160].decode("utf-8", "replace")
            log.warning("%s %s: unexpected body (%s): %s", self.exchange, endpoint, exc, excerpt)
            raise RestError("parse", f"{self.exchange} {endpoint}: {exc}") from exc

    # ---- endpoints ---------------------------------------------------------------------------

    async def instruments(self) -> list[InstrumentInfo]:
        raise NotImplementedError

    async def futures(self) -> list[InstrumentInfo]:
        """The dated futures the exchange lists (``expiry`` set), parsed by exporter.feeds.dated."""
        return []

    async def funding_history(self, instrument: str, start: float, end: float) -> list[FundingSettlement]:
        raise NotImplementedError

    async def funding_info(self) -> list[MarketUpdate]:
        return []

    async def open_interest(self, instrument: str) -> list[MarketUpdate]:
        return []

    async def long_short_ratio(self, instrument: str) -> list[LongShortRatio]:
        return []

    async def insurance_fund(self, instruments: Sequence[InstrumentInfo]) -> list[InsuranceFund]:
        return []

    async def server_time(self) -> tuple[float, float, float]:
        """(sent, exchange time, received) of one server-time call, on the client's clock: an NTP-style
        sample of the exchange's clock (exporter.sink.ExchangeClock)."""
        clock = self.client.clock
        sent = clock()
        body = await self._fetch(SERVER_TIME, SERVER_TIME_PATHS[self.exchange])
        received = clock()
        server = self._parse(SERVER_TIME, lambda: parse_server_time(self.exchange, body), body)
        return sent, server, received

    def _history(self, body: bytes) -> list[FundingSettlement]:
        return self._parse(FUNDING_HISTORY, lambda: self.feed.parse_funding_history(body, self.ctx), body)


class BinanceRest(ExchangeRest):
    exchange = Exchange.BINANCE
    polls_open_interest = True
    has_long_short_ratio = True
    has_insurance_fund = True
    has_funding_info = True
    history_limit = 1000

    async def instruments(self) -> list[InstrumentInfo]:
        body = await self._fetch(INSTRUMENTS, "/fapi/v1/exchangeInfo")
        return self._parse(INSTRUMENTS, lambda: self.feed.parse_instruments(body), body)

    async def futures(self) -> list[InstrumentInfo]:
        body = await self._fetch(FUTURES, "/fapi/v1/exchangeInfo")
        return self._parse(FUTURES, lambda: dated.parse_binance(body), body)

    async def funding_history(self, instrument: str, start: float, end: float) -> list[FundingSettlement]:
        # ascending pages: move startTime past the last row until a short page
        out: list[FundingSettlement] = []
        cursor = _ms(start)
        for _ in range(MAX_PAGES):
            params: Params = {
                "symbol": instrument,
                "startTime": cursor,
                "endTime": _ms(end),
                "limit": self.history_limit,
            }
            body = await self._fetch(FUNDING_HISTORY, "/fapi/v1/fundingRate", params)
            page = self._history(body)
            out.extend(page)
            if _rows(body) < self.history_limit or not page:
                break
            nxt = _ms(max(s.funding_time for s in page)) + 1
            if nxt <= cursor:
                break
            cursor = nxt
        return out

    async def funding_info(self) -> list[MarketUpdate]:
        body = await self._fetch(FUNDING_INFO, "/fapi/v1/fundingInfo")
        parse = getattr(self.feed, "parse_funding_info", None)
        if parse is None:
            return []
        return self._parse(FUNDING_INFO, lambda: list(parse(body)), body)

    async def open_interest(self, instrument: str) -> list[MarketUpdate]:
        body = await self._fetch(OPEN_INTEREST, "/fapi/v1/openInterest", {"symbol": instrument})
        return self._parse(OPEN_INTEREST, lambda: self.feed.parse_open_interest(body, self.ctx), body)

    async def long_short_ratio(self, instrument: str) -> list[LongShortRatio]:
        params: Params = {"symbol": instrument, "period": "5m", "limit": 1}
        body = await self._fetch(LONG_SHORT_RATIO, "/futures/data/globalLongShortAccountRatio", params)
        return self._parse(LONG_SHORT_RATIO, lambda: self.feed.parse_long_short_ratio(body, self.ctx), body)

    async def insurance_fund(self, instruments: Sequence[InstrumentInfo]) -> list[InsuranceFund]:
        body = await self._fetch(INSURANCE_FUND, "/fapi/v1/insuranceBalance")
        return self._parse(INSURANCE_FUND, lambda: self.feed.parse_insurance_fund(body, self.ctx), body)


class BybitRest(ExchangeRest):
    exchange = Exchange.BYBIT
    has_long_short_ratio = True
    has_insurance_fund = True
    history_limit = 200

    async def instruments(self) -> list[InstrumentInfo]:
        out: list[InstrumentInfo] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {"category": "linear", "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            body = await self._fetch(INSTRUMENTS, "/v5/market/instruments-info", params)
            out.extend(self._parse(INSTRUMENTS, partial(self.feed.parse_instruments, body), body))
            cursor = _bybit_cursor(body)
            if not cursor:
                break
        return out

    async def futures(self) -> list[InstrumentInfo]:
        out: list[InstrumentInfo] = []
        for category in ("linear", "inverse"):
            cursor = ""
            for _ in range(MAX_PAGES):
                params: dict[str, str | int] = {"category": category, "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                body = await self._fetch(FUTURES, "/v5/market/instruments-info", params)
                out.extend(self._parse(FUTURES, partial(dated.parse_bybit, body), body))
                cursor = _bybit_cursor(body)
                if not cursor:
                    break
        return out

    async def funding_history(self, instrument: str, start: float, end: float) -> list[FundingSettlement]:
        # newest first; page backwards by moving endTime below the oldest row
        out: list[FundingSettlement] = []
        end_ms = _ms(end)
        for _ in range(MAX_PAGES):
            params: Params = {
                "category": "linear",
                "symbol": instrument,
                "startTime": _ms(start),
                "endTime": end_ms,
                "limit": self.history_limit,
            }
            body = await self._fetch(FUNDING_HISTORY, "/v5/market/funding/history", params)
            page = self._history(body)
            out.extend(page)
            if _rows(body, "result", "list") < self.history_limit or not page:
                break
            oldest = _ms(min(s.funding_time for s in page))
            if oldest <= _ms(start) or oldest - 1 >= end_ms:
                break
            end_ms = oldest - 1
        return out

    async def long_short_ratio(self, instrument: str) -> list[LongShortRatio]:
        params: Params = {"category": "linear", "symbol": instrument, "period": "5min", "limit": 1}
        body = await self._fetch(LONG_SHORT_RATIO, "/v5/market/account-ratio", params)
        return self._parse(LONG_SHORT_RATIO, lambda: self.feed.parse_long_short_ratio(body, self.ctx), body)

    async def insurance_fund(self, instruments: Sequence[InstrumentInfo]) -> list[InsuranceFund]:
        body = await self._fetch(INSURANCE_FUND, "/v5/market/insurance", {"coin": "USDT"})
        return self._parse(INSURANCE_FUND, lambda: self.feed.parse_insurance_fund(body, self.ctx), body)


class OkxRest(ExchangeRest):
    exchange = Exchange.OKX
    has_long_short_ratio = True
    has_insurance_fund = True
    history_limit = 100

    async def instruments(self) -> list[InstrumentInfo]:
        body = await self._fetch(INSTRUMENTS, "/api/v5/public/instruments", {"instType": "SWAP"})
        return self._parse(INSTRUMENTS, lambda: self.feed.parse_instruments(body), body)

    async def futures(self) -> list[InstrumentInfo]:
        body = await self._fetch(FUTURES, "/api/v5/public/instruments", {"instType": "FUTURES"})
        return self._parse(FUTURES, lambda: dated.parse_okx(body), body)

    async def funding_history(self, instrument: str, start: float, end: float) -> list[FundingSettlement]:
        # newest first; `after` = rows older than this fundingTime
        out: list[FundingSettlement] = []
        after: int | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {"instId": instrument, "limit": self.history_limit}
            if after is not None:
                params["after"] = after
            body = await self._fetch(FUNDING_HISTORY, "/api/v5/public/funding-rate-history", params)
            page = self._history(body)
            out.extend(s for s in page if start <= s.funding_time <= end)
            if _rows(body, "data") < self.history_limit or not page:
                break
            oldest = _ms(min(s.funding_time for s in page))
            if oldest <= _ms(start) or (after is not None and oldest >= after):
                break
            after = oldest
        return out

    async def long_short_ratio(self, instrument: str) -> list[LongShortRatio]:
        params: Params = {"instId": instrument, "period": "5m", "limit": 1}
        path = "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract"
        body = await self._fetch(LONG_SHORT_RATIO, path, params)
        parse: Any = self.feed.parse_long_short_ratio  # the body does not name the instrument
        return self._parse(LONG_SHORT_RATIO, lambda: parse(body, self.ctx, instrument=instrument), body)

    async def insurance_fund(self, instruments: Sequence[InstrumentInfo]) -> list[InsuranceFund]:
        # one pool per instrument family (BTC-USDT); a family that fails does not hide the others
        out: list[InsuranceFund] = []
        families = sorted({f"{i.base}-{i.quote}" for i in instruments})
        errors: list[RestError] = []
        for fam in families:
            params: Params = {"instType": "SWAP", "instFamily": fam, "limit": 1}
            try:
                body = await self._fetch(INSURANCE_FUND, "/api/v5/public/insurance-fund", params)
                rows = self._parse(INSURANCE_FUND, partial(self.feed.parse_insurance_fund, body, self.ctx), body)
                out.extend(rows)
            except RestError as exc:
                errors.append(exc)
        if errors and not out:
            raise errors[0]
        return out


class DeribitRest(ExchangeRest):
    exchange = Exchange.DERIBIT
    history_chunk_s = 5 * 86400.0  # hourly rows: 120 per request (max rows per call is undocumented)

    async def instruments(self) -> list[InstrumentInfo]:
        params = {"currency": "any", "kind": "future"}
        body = await self._fetch(INSTRUMENTS, "/api/v2/public/get_instruments", params)
        return self._parse(INSTRUMENTS, lambda: self.feed.parse_instruments(body), body)

    async def futures(self) -> list[InstrumentInfo]:
        params = {"currency": "any", "kind": "future"}
        body = await self._fetch(FUTURES, "/api/v2/public/get_instruments", params)
        return self._parse(FUTURES, lambda: dated.parse_deribit(body), body)

    async def funding_history(self, instrument: str, start: float, end: float) -> list[FundingSettlement]:
        out: list[FundingSettlement] = []
        # the body does not name the instrument, so the parser is told which one it is
        parse: Any = self.feed.parse_funding_history
        t = start
        while t < end:
            t2 = min(end, t + self.history_chunk_s)
            params: Params = {"instrument_name": instrument, "start_timestamp": _ms(t), "end_timestamp": _ms(t2)}
            body = await self._fetch(FUNDING_HISTORY, "/api/v2/public/get_funding_rate_history", params)
            out.extend(self._parse(FUNDING_HISTORY, partial(parse, body, self.ctx, instrument=instrument), body))
            t = t2
        return out


def _bybit_cursor(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        cur = data.get("result", {}).get("nextPageCursor") if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return cur if isinstance(cur, str) else ""


REST_CLASSES: dict[Exchange, type[ExchangeRest]] = {
    Exchange.BINANCE: BinanceRest,
    Exchange.BYBIT: BybitRest,
    Exchange.OKX: OkxRest,
    Exchange.DERIBIT: DeribitRest,
}


def rest_api_for(exchange: Exchange, client: RestClient, feed: Feed, ctx: FeedContext) -> ExchangeRest:
    return REST_CLASSES[exchange](client, feed, ctx)
