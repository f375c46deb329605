"""REST endpoints per exchange: paths, parameters, pagination.

Bodies are parsed by the exchange's :class:`~exporter.feeds.base.Feed` (bytes in, records out);
this module only knows how to ask and how to page. Only the row count of a page is read here, to
know whether another page exists. A body the parser rejects is counted as a ``parse`` failure on
its endpoint and raised as :class:`RestError` -- nothing is applied from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal, TypeVar

import orjson

from exporter.feeds import dated
from exporter.feeds import history as H
from exporter.feeds.base import Feed, FeedContext
from exporter.feeds.server_time import SERVER_TIME_PATHS, parse_server_time
from exporter.model import (
    Candle,
    Exchange,
    FundingSettlement,
    InstrumentInfo,
    InsuranceFund,
    LongShortRatio,
    MarketUpdate,
    OpenInterestPoint,
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
OPEN_INTEREST_HISTORY = "open_interest_history"
CandleKind = Literal["mark", "index", "premium"]


def candles_endpoint(kind: str) -> str:
    """The fr_rest_* endpoint label of a candle kind: ``mark_candles``, ``index_candles``, ``premium_candles``."""
    return f"{kind}_candles"


def _interval(table: dict[int, str], seconds: int, what: str) -> str:
    try:
        return table[int(seconds)]
    except KeyError:
        raise ValueError(f"{what}: interval {seconds} s is not one of {sorted(table)}") from None


def _window(candles: list[Candle], start: float, end: float) -> list[Candle]:
    """Oldest first, one per open time, open time within [start, end]."""
    by_time = {c.open_time: c for c in candles if start <= c.open_time <= end}
    return [by_time[t] for t in sorted(by_time)]


def _points(points: list[OpenInterestPoint], start: float, end: float) -> list[OpenInterestPoint]:
    by_time = {p.time: p for p in points if start <= p.time <= end}
    return [by_time[t] for t in sorted(by_time)]


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
    # which price histories the exchange publishes (price_candles returns [] for the others)
    candle_kinds: frozenset[str] = frozenset()
    has_open_interest_history = False
    # the per-instrument pollers' request paths (their cost in the budget split, exporter/rest/split.py)
    poll_paths: Mapping[str, str] = {}

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

    async def price_candles(
        self, kind: CandleKind, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]:
        """Candles of the mark, index or premium index with open times in [start, end], oldest first,
        paged as the exchange needs; [] where the exchange does not publish ``kind`` (``candle_kinds``)."""
        return []

    async def open_interest_history(
        self, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[OpenInterestPoint]:
        """USD open interest at ``interval_seconds`` steps within [start, end], oldest first; [] where
        the exchange publishes no history (``has_open_interest_history``)."""
        return []

    async def server_time(self) -> tuple[float, float, float]:
        """(sent, exchange time, received) of one server-time call, on the client's clock: an NTP-style
        sample of the exchange's clock (exporter.sink.ExchangeClock)."""
        body, sent, received = await self.client.get_timed(SERVER_TIME, SERVER_TIME_PATHS[self.exchange])
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
    poll_paths = {OPEN_INTEREST: "/fapi/v1/openInterest", LONG_SHORT_RATIO: "/futures/data/globalLongShortAccountRatio"}

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
        body = await self._fetch(OPEN_INTEREST, self.poll_paths[OPEN_INTEREST], {"symbol": instrument})
        return self._parse(OPEN_INTEREST, lambda: self.feed.parse_open_interest(body, self.ctx), body)

    async def long_short_ratio(self, instrument: str) -> list[LongShortRatio]:
        params: Params = {"symbol": instrument, "period": "5m", "limit": 1}
        body = await self._fetch(LONG_SHORT_RATIO, self.poll_paths[LONG_SHORT_RATIO], params)
        return self._parse(LONG_SHORT_RATIO, lambda: self.feed.parse_long_short_ratio(body, self.ctx), body)

    async def insurance_fund(self, instruments: Sequence[InstrumentInfo]) -> list[InsuranceFund]:
        body = await self._fetch(INSURANCE_FUND, "/fapi/v1/insuranceBalance")
        return self._parse(INSURANCE_FUND, lambda: self.feed.parse_insurance_fund(body, self.ctx), body)

    candle_kinds = frozenset({"mark", "index", "premium"})
    has_open_interest_history = True
    # 499 rows a page: weight 2 ([100, 500) in the documented table), what exporter/limits.py charges
    kline_limit = 499
    oi_history_limit = 500
    KLINE_PATHS = {
        "mark": ("/fapi/v1/markPriceKlines", "symbol"),
        "index": ("/fapi/v1/indexPriceKlines", "pair"),
        "premium": ("/fapi/v1/premiumIndexKlines", "symbol"),
    }
    INTERVALS = {60: "1m", 180: "3m", 300: "5m", 900: "15m", 1800: "30m", 3600: "1h", 7200: "2h",
                 14400: "4h", 21600: "6h", 28800: "8h", 43200: "12h", 86400: "1d"}  # fmt: skip
    OI_PERIODS = {300: "5m", 900: "15m", 1800: "30m", 3600: "1h", 7200: "2h", 14400: "4h",
                  21600: "6h", 43200: "12h", 86400: "1d"}  # fmt: skip
    OI_HISTORY_SPAN_S = 30 * 86400.0  # "latest 1 month only"

    async def price_candles(
        self, kind: CandleKind, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]:
        if kind not in self.candle_kinds:
            return []
        path, key = self.KLINE_PATHS[kind]
        interval = _interval(self.INTERVALS, interval_seconds, "binance klines")
        endpoint = candles_endpoint(kind)
        out: list[Candle] = []
        cursor = _ms(start)
        bounds = self.ctx.time_bounds()
        for _ in range(MAX_PAGES):
            params: Params = {key: instrument, "interval": interval, "startTime": cursor, "endTime": _ms(end),
                              "limit": self.kline_limit}  # fmt: skip
            body = await self._fetch(endpoint, path, params)
            page = self._parse(endpoint, partial(H.binance_klines, body, kind, bounds), body)
            out.extend(page)
            if _rows(body) < self.kline_limit or not page:
                break
            nxt = _ms(page[-1].open_time) + 1
            if nxt <= cursor or nxt > _ms(end):
                break
            cursor = nxt
        return _window(out, start, end)

    async def open_interest_history(
        self, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[OpenInterestPoint]:
        period = _interval(self.OI_PERIODS, interval_seconds, "binance openInterestHist")
        start = max(start, end - self.OI_HISTORY_SPAN_S)
        out: list[OpenInterestPoint] = []
        cursor = _ms(start)
        bounds = self.ctx.time_bounds()
        for _ in range(MAX_PAGES):
            params: Params = {"symbol": instrument, "period": period, "startTime": cursor, "endTime": _ms(end),
                              "limit": self.oi_history_limit}  # fmt: skip
            body = await self._fetch(OPEN_INTEREST_HISTORY, "/futures/data/openInterestHist", params)
            page = self._parse(OPEN_INTEREST_HISTORY, partial(H.binance_open_interest_hist, body, bounds), body)
            out.extend(page)
            if _rows(body) < self.oi_history_limit or not page:
                break
            nxt = _ms(page[-1].time) + 1
            if nxt <= cursor or nxt > _ms(end):
                break
            cursor = nxt
        return _points(out, start, end)


class BybitRest(ExchangeRest):
    exchange = Exchange.BYBIT
    has_long_short_ratio = True
    has_insurance_fund = True
    history_limit = 200
    poll_paths = {LONG_SHORT_RATIO: "/v5/market/account-ratio"}

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
        body = await self._fetch(LONG_SHORT_RATIO, self.poll_paths[LONG_SHORT_RATIO], params)
        return self._parse(LONG_SHORT_RATIO, lambda: self.feed.parse_long_short_ratio(body, self.ctx), body)

    async def insurance_fund(self, instruments: Sequence[InstrumentInfo]) -> list[InsuranceFund]:
        body = await self._fetch(INSURANCE_FUND, "/v5/market/insurance", {"coin": "USDT"})
        return self._parse(INSURANCE_FUND, lambda: self.feed.parse_insurance_fund(body, self.ctx), body)

    candle_kinds = frozenset({"mark", "index", "premium"})
    has_open_interest_history = True
    kline_limit = 200  # the documented page maximum of mark- and index-price klines
    oi_history_limit = 200
    KLINE_PATHS = {
        "mark": "/v5/market/mark-price-kline",
        "index": "/v5/market/index-price-kline",
        "premium": "/v5/market/premium-index-price-kline",
    }
    INTERVALS = {60: "1", 180: "3", 300: "5", 900: "15", 1800: "30", 3600: "60", 7200: "120", 14400: "240",
                 21600: "360", 43200: "720", 86400: "D"}  # fmt: skip
    OI_INTERVALS = {300: "5min", 900: "15min", 1800: "30min", 3600: "1h", 14400: "4h", 86400: "1d"}

    def _category(self, instrument: str) -> str:
        info = self.ctx.instruments.get(instrument)
        return "inverse" if info is not None and info.inverse else "linear"

    async def price_candles(
        self, kind: CandleKind, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]:
        category = self._category(instrument)
        if kind not in self.candle_kinds or (kind == "premium" and category != "linear"):
            return []  # the premium index is published for linear perpetuals only
        interval = _interval(self.INTERVALS, interval_seconds, "bybit kline")
        endpoint = candles_endpoint(kind)
        out: list[Candle] = []
        end_ms = _ms(end)
        bounds = self.ctx.time_bounds()
        for _ in range(MAX_PAGES):
            params: Params = {"category": category, "symbol": instrument, "interval": interval,
                              "start": _ms(start), "end": end_ms, "limit": self.kline_limit}  # fmt: skip
            body = await self._fetch(endpoint, self.KLINE_PATHS[kind], params)
            page = self._parse(endpoint, partial(H.bybit_klines, body, kind, bounds), body)
            out.extend(page)
            # newest first on the wire: page backwards below the oldest row
            if _rows(body, "result", "list") < self.kline_limit or not page:
                break
            oldest = _ms(page[0].open_time)
            if oldest <= _ms(start) or oldest - 1 >= end_ms:
                break
            end_ms = oldest - 1
        return _window(out, start, end)

    async def open_interest_history(
        self, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[OpenInterestPoint]:
        period = _interval(self.OI_INTERVALS, interval_seconds, "bybit open-interest")
        inverse = self._category(instrument) == "inverse"
        # linear open interest is in coin: the marks of the same steps convert it to USD
        marks = (
            []
            if inverse
            else await self.price_candles("mark", instrument, interval_seconds, start - interval_seconds, end)
        )
        out: list[OpenInterestPoint] = []
        cursor = ""
        bounds = self.ctx.time_bounds()
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {"category": "inverse" if inverse else "linear", "symbol": instrument,
                                            "intervalTime": period, "startTime": _ms(start), "endTime": _ms(end),
                                            "limit": self.oi_history_limit}  # fmt: skip
            if cursor:
                params["cursor"] = cursor
            body = await self._fetch(OPEN_INTEREST_HISTORY, "/v5/market/open-interest", params)
            page, cursor = self._parse(
                OPEN_INTEREST_HISTORY, partial(H.bybit_open_interest, body, inverse, marks, bounds), body
            )
            out.extend(page)
            if not cursor or _rows(body, "result", "list") < self.oi_history_limit:
                break
        return _points(out, start, end)


class OkxRest(ExchangeRest):
    exchange = Exchange.OKX
    has_long_short_ratio = True
    has_insurance_fund = True
    history_limit = 100
    poll_paths = {LONG_SHORT_RATIO: "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract"}

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
        body = await self._fetch(LONG_SHORT_RATIO, self.poll_paths[LONG_SHORT_RATIO], params)
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

    candle_kinds = frozenset({"mark", "index", "premium"})
    has_open_interest_history = True
    page_limit = 100  # the documented maximum of every history endpoint used here
    # the recent endpoints hold the latest 1,440 rows; older rows come from the history-* ones
    CANDLE_PATHS = {
        "mark": ("/api/v5/market/mark-price-candles", "/api/v5/market/history-mark-price-candles"),
        "index": ("/api/v5/market/index-candles", "/api/v5/market/history-index-candles"),
    }
    BARS = {60: "1m", 180: "3m", 300: "5m", 900: "15m", 1800: "30m", 3600: "1H", 7200: "2H", 14400: "4H",
            21600: "6Hutc", 43200: "12Hutc", 86400: "1Dutc"}  # fmt: skip
    OI_PERIODS = {300: "5m", 900: "15m", 1800: "30m", 3600: "1H", 7200: "2H", 14400: "4H", 86400: "1Dutc"}

    @staticmethod
    def index_id(instrument: str) -> str:
        """The index of a swap (BTC-USDT-SWAP -> BTC-USDT), as index-candles names it."""
        return instrument.removesuffix("-SWAP")

    async def _backwards(
        self, endpoint: str, path: str, params: dict[str, str | int], parse: Callable[[bytes], list[Any]],
        start: float, end: float, time_of: Callable[[Any], float],
    ) -> tuple[list[Any], bool]:  # fmt: skip
        """Newest-first pages below ``after`` down to ``start``; (rows, whether ``start`` was reached)."""
        out: list[Any] = []
        after = _ms(end) + 1  # `after`: rows strictly earlier than this time
        for _ in range(MAX_PAGES):
            body = await self._fetch(endpoint, path, {**params, "after": after, "limit": self.page_limit})
            page = self._parse(endpoint, partial(parse, body), body)
            out.extend(page)
            if not page:
                return out, False
            oldest = _ms(min(time_of(r) for r in page))
            if oldest <= _ms(start):
                return out, True
            if _rows(body, "data") < self.page_limit or oldest >= after:
                return out, False
            after = oldest
        return out, True

    async def price_candles(
        self, kind: CandleKind, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]:
        if kind not in self.candle_kinds:
            return []
        bounds = self.ctx.time_bounds()
        endpoint = candles_endpoint(kind)
        if kind == "premium":  # samples, bucketed into candles of the asked interval
            rows, _ = await self._backwards(
                endpoint, "/api/v5/public/premium-history", {"instId": instrument},
                lambda b: H.okx_premium_history(b, bounds), start, end, lambda c: c.open_time,
            )  # fmt: skip
            return _window(H.bucket(_window(rows, start, end), interval_seconds), start, end)
        bar = _interval(self.BARS, interval_seconds, "okx candles")
        inst_id = instrument if kind == "mark" else self.index_id(instrument)
        recent, older = self.CANDLE_PATHS[kind]
        out: list[Candle] = []
        for path in (recent, older):
            got, reached = await self._backwards(
                endpoint, path, {"instId": inst_id, "bar": bar},
                lambda b: H.okx_candles(b, kind, bounds), start, end if not out else out[0].open_time - 0.001,
                lambda c: c.open_time,
            )  # fmt: skip
            out = sorted(got + out, key=lambda c: c.open_time)
            if reached:
                break
        return _window(out, start, end)

    async def open_interest_history(
        self, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[OpenInterestPoint]:
        period = _interval(self.OI_PERIODS, interval_seconds, "okx open-interest-history")
        bounds = self.ctx.time_bounds()
        out: list[OpenInterestPoint] = []
        end_ms = _ms(end) + 1  # `end`: rows earlier than this time
        for _ in range(MAX_PAGES):
            params: Params = {"instId": instrument, "period": period, "begin": _ms(start) - 1, "end": end_ms,
                              "limit": self.page_limit}  # fmt: skip
            path = "/api/v5/rubik/stat/contracts/open-interest-history"
            body = await self._fetch(OPEN_INTEREST_HISTORY, path, params)
            page = self._parse(OPEN_INTEREST_HISTORY, partial(H.okx_open_interest_history, body, bounds), body)
            out.extend(page)
            if _rows(body, "data") < self.page_limit or not page:
                break
            oldest = _ms(page[0].time)
            if oldest <= _ms(start) or oldest >= end_ms:
                break
            end_ms = oldest
        return _points(out, start, end)


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

    # Deribit publishes no mark/index/premium history for perpetuals: the trade-price chart stands in
    # for the mark (docs/history.md); there is no public open-interest history.
    candle_kinds = frozenset({"mark"})
    chart_rows = 1000  # candles a request asks for (the maximum is undocumented)
    RESOLUTIONS = {60: "1", 180: "3", 300: "5", 600: "10", 900: "15", 1800: "30", 3600: "60", 7200: "120",
                   10800: "180", 21600: "360", 43200: "720", 86400: "1D"}  # fmt: skip

    async def price_candles(
        self, kind: CandleKind, instrument: str, interval_seconds: int, start: float, end: float
    ) -> list[Candle]:
        if kind not in self.candle_kinds:
            return []
        resolution = _interval(self.RESOLUTIONS, interval_seconds, "deribit chart")
        endpoint = candles_endpoint(kind)
        bounds = self.ctx.time_bounds()
        out: list[Candle] = []
        t = start
        while t <= end:
            t2 = min(end, t + interval_seconds * (self.chart_rows - 1))
            params: Params = {"instrument_name": instrument, "start_timestamp": _ms(t), "end_timestamp": _ms(t2),
                              "resolution": resolution}  # fmt: skip
            body = await self._fetch(endpoint, "/api/v2/public/get_tradingview_chart_data", params)
            out.extend(self._parse(endpoint, partial(H.deribit_chart, body, bounds), body))
            if t2 >= end:
                break
            t = t2 + 0.001
        return _window(out, start, end)


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
