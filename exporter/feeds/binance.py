"""Binance USDⓈ-M futures: combined streams on ``/market`` and the public REST bodies.

Reference: exchanges.md §2. Numbers arrive as decimal strings, times in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from exporter.feeds import (
    FAST_FAILURES,
    PARSE_FAILURES,
    UNTYPED,
    USD_QUOTES,
    ParseWs,
    arr,
    chunks,
    explain,
    label,
    loads,
    ms,
    num,
    obj,
    opt_ms,
    opt_num,
    parse_error,
    settlements,
    text,
    typed_only,
)
from exporter.feeds import validate as V
from exporter.feeds.base import ARRAY_FRAMES_KEPT, FeedContext, WsPlan
from exporter.model import (
    Exchange,
    FundingSettlement,
    InstrumentInfo,
    InsuranceFund,
    Liquidation,
    LongShortRatio,
    MarketUpdate,
    ParseError,
    Record,
    Rejected,
    Side,
    SubscriptionError,
    base_of,
)

EX = Exchange.BINANCE
MAX_STREAMS_PER_CONNECTION = 200  # docs now say 1024; older copies say 200, the safe choice
ALL_SYMBOLS_THRESHOLD = 50  # from this many symbols on, one !markPrice@arr@1s beats per-symbol streams
MAX_LIFETIME_S = 23.5 * 3600  # Binance cuts every connection at 24 h: rotate before it does
DEFAULT_INTERVAL_S = 8 * 3600.0  # symbols missing from /fapi/v1/fundingInfo use the default 8 h

_LIQ_SIDE = {"SELL": Side.LONG, "BUY": Side.SHORT}  # order side -> side of the liquidated position
_LONG, _SHORT = Side.LONG, Side.SHORT


class BinanceFeed:
    exchange = EX

    def __init__(self, all_symbols_threshold: int = ALL_SYMBOLS_THRESHOLD, fast: bool = True) -> None:
        self.all_symbols_threshold = all_symbols_threshold
        self.fast = fast  # typed msgspec decoding of mark-price frames; False: the orjson path only (tests)
        self.parse_ws: ParseWs = self._typed if fast else self._parse_ws_strict

    # ---- websocket ----------------------------------------------------------------------------

    def ws_plans(self, ws_base_url: str, instruments: Sequence[InstrumentInfo]) -> list[WsPlan]:
        base = ws_base_url.rstrip("/")
        symbols = [i.instrument for i in instruments]
        if len(symbols) >= self.all_symbols_threshold:
            groups: list[list[str]] = [["!markPrice@arr@1s", "!forceOrder@arr"]]
        else:
            # The liquidation stream rides on the first markPrice connection: it may stay silent for
            # hours, and a connection that also carries 1 s mark prices never looks dead to the watchdog.
            streams = [f"{s.lower()}@markPrice@1s" for s in symbols]
            groups = [list(c) for c in chunks(streams, MAX_STREAMS_PER_CONNECTION - 1)] or [[]]
            groups[0].append("!forceOrder@arr")
        return [
            WsPlan(
                stream=label("markPrice", k, len(groups)),
                url=f"{base}/market/stream?streams={'/'.join(g)}",
                max_lifetime_s=MAX_LIFETIME_S,
                silence_timeout_s=30.0,
                cadence_s=1.0,  # markPrice@1s: every second, changed or not
            )
            for k, g in enumerate(groups)
        ]

    def heartbeat_setup(self) -> tuple[str, ...]:
        return ()  # the server pings with control frames; the websocket library answers them

    def _typed(self, frame: str | bytes, ctx: FeedContext, strict: bool = True) -> list[Record]:
        """``parse_ws``: the typed path for the frequent pushes, with the strict path written in for
        any other frame and any value the typed path does not take (one call a frame, not two)."""
        try:
            decoded = _decode_mark_frame(frame).data
            td = type(decoded)
            # the time bounds once a frame, for every shape (ctx.time_bounds() inline: no call)
            clock = ctx.clock
            if clock is None:
                lo, hi = V.STATIC_BOUNDS
            else:
                now = clock()
                lo, hi = now - _PAST_S, now + _FUTURE_S
            if td is _FastMark:  # one symbol's stream, the most frequent frame: no loop, no list to wrap it
                m: _FastMark = decoded  # type: ignore[assignment]
                instruments = ctx.instruments
                s = m.s
                if instruments and s not in instruments:
                    return []
                if not s or "_" in s:  # empty (named there) or a delivery symbol (its settle price P)
                    return [_mark_fast(m, (lo, hi), _settles(frame).get(s) if s else None)]
                # _mark_fast inline for a perpetual, the most frequent frame of all: the same checks (the mark,
                # index and rate were checked while decoding, the times are here); a value it does not take
                # raises, and the strict path parses the frame again and names it
                index: float | None = m.i
                if index is _ABSENT:
                    index = None
                r = m.r
                rate = r if r.__class__ is float else None  # "": no funding
                # an absent time is NaN (/1000): out of bounds, and not equal to itself
                nft: float | None = m.T / 1000.0
                if not lo <= nft <= hi:  # type: ignore[operator]
                    if nft == nft and nft:  # 0: no next funding time (delivery symbols)
                        raise ParseError("a value out of its domain")
                    nft = None
                et: float | None = m.E / 1000.0
                if not lo <= et <= hi:  # type: ignore[operator]
                    if et == et:
                        raise ParseError("a value out of its domain")
                    et = None
                return [MarketUpdate(EX, s, et, m.p, index, rate, nft)]
            if td is _ForceEvent:
                # :func:`_force_order` on the typed event, the same rules: the sizes and prices were checked
                # while decoding, the rest inline (no call a liquidation). Any doubt raises, and the strict
                # path parses the frame again and names the field.
                ev: _ForceEvent = decoded  # type: ignore[assignment]
                o = ev.o
                sym = o.s
                info = ctx.instruments.get(sym)
                if info is None:
                    if ctx.instruments or not sym:
                        if not sym:
                            raise ParseError("field 'o.s' is empty")
                        return []
                    quote = base_of(EX, sym)[1]
                else:
                    quote = info.quote
                side = _SHORT if o.S == "BUY" else _LONG  # a short's order buys it back
                # the filled quantity at the average price, at the trade time (see _force_order); a zero
                # or absent one fails the comparisons below, and the strict path takes its fallbacks
                qty = o.z
                price = o.ap
                usd = price * qty
                at = o.T / 1000.0
                # a positive average price can still be below the domain; a size times a price above the USD one
                if not (price >= _PMIN and 0.0 < usd <= _UMAX and lo <= at <= hi):
                    raise ParseError("a value out of its domain")
                if quote not in USD_QUOTES:
                    return []  # no USD notional can be given for a coin-quoted symbol
                return [Liquidation(EX, sym, at, side, price, qty, usd)]
            data: list[_FastMarkElement] = decoded  # type: ignore[assignment]
            out: list[Record] = []
            append = out.append
            instruments = ctx.instruments
            tb = (lo, hi)
            settles: dict[str, str | None] | None = None
            for el in data:
                # !markPrice@arr carries every symbol: skip unfollowed ones before converting numbers
                if not instruments or el.s in instruments:
                    settle = None
                    if "_" in el.s:  # a delivery symbol (rare)
                        if settles is None:
                            settles = _settles(frame)
                        settle = settles.get(el.s)
                    try:
                        append(_mark_fast(el, tb, settle))
                    except ParseError as exc:  # one bad symbol of the array: the others keep their update
                        append(Rejected(EX, exc.reason, f"binance {el.s}: {exc}"))
            kept = ctx.array_frames  # the order sent, when a housekeeping step asks for it (FeedContext)
            if kept is not None and len(kept) < ARRAY_FRAMES_KEPT:
                kept.append(out)
            return out
        except FAST_FAILURES:
            pass
        return self._parse_ws_strict(frame, ctx) if strict else UNTYPED

    def _parse_ws_strict(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        msg = loads_or_fail(frame)
        tb = ctx.time_bounds()
        try:
            if type(msg) is dict:
                data = msg.get("data")
                if data is None:
                    if "e" in msg:  # raw payload (ws mode /market/ws/<stream>)
                        return _event(msg, ctx.instruments, tb)
                    return _control(msg)
                if "stream" not in msg:
                    raise ParseError("object with 'data' but no 'stream'")
            else:
                data = msg
            instruments = ctx.instruments
            if type(data) is not list:
                return _event(data, instruments, tb)
            out: list[Record] = []
            append = out.append
            for el in data:
                try:
                    if el["e"] == "markPriceUpdate":
                        s = el["s"]
                        # every symbol is in the array: skip unfollowed ones before converting numbers
                        if not instruments or s in instruments:
                            append(_mark(msgspec.convert(el, _Mark), tb, _settle_of(el)))
                    else:
                        out.extend(_event(el, instruments, tb))
                except PARSE_FAILURES as exc:  # one bad symbol must not cost the others their update
                    sym = el.get("s") if type(el) is dict else None
                    err = parse_error(EX, f"stream array element {sym}", exc)
                    append(Rejected(EX, err.reason, str(err)))
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "stream frame", exc) from None

    # ---- REST ---------------------------------------------------------------------------------

    def parse_instruments(self, body: bytes) -> list[InstrumentInfo]:
        """``GET /fapi/v1/exchangeInfo`` -> the perpetuals that are trading.

        Recorded wire (rest_exchangeinfo_2021-07.json), the fields used of its first symbol::

            {"symbols":[{"symbol":"BTCUSDT","contractType":"PERPETUAL","status":"TRADING",
              "baseAsset":"BTC","quoteAsset":"USDT", ...}, ...], ...}
        """
        try:
            out = []
            for s in arr(obj(loads(body), "exchangeInfo")["symbols"], "symbols"):
                if s["contractType"] != "PERPETUAL" or s.get("status", "TRADING") != "TRADING":
                    continue
                out.append(
                    InstrumentInfo(
                        exchange=EX,
                        instrument=text(s["symbol"], "symbol"),
                        base=text(s["baseAsset"], "baseAsset"),
                        quote=text(s["quoteAsset"], "quoteAsset"),
                        funding_interval_s=DEFAULT_INTERVAL_S,
                    )
                )
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "exchangeInfo", exc) from None

    def parse_funding_info(self, body: bytes) -> list[MarketUpdate]:
        """``GET /fapi/v1/fundingInfo`` -> cap, floor and interval of the symbols Binance adjusted.

        Wire (exchanges.md §2; doc example, no recorded body is kept)::

            [{"symbol":"BLZUSDT","adjustedFundingRateCap":"0.02500000",
              "adjustedFundingRateFloor":"-0.02500000","fundingIntervalHours":8,"disclaimer":false}]
        """
        try:
            out = []
            for row in arr(loads(body), "fundingInfo"):
                hours = opt_num(row.get("fundingIntervalHours"), "fundingIntervalHours")
                cap = opt_num(row.get("adjustedFundingRateCap"), "adjustedFundingRateCap")
                floor = opt_num(row.get("adjustedFundingRateFloor"), "adjustedFundingRateFloor")
                out.append(
                    MarketUpdate(
                        exchange=EX,
                        instrument=text(row["symbol"], "symbol"),
                        funding_cap=V.opt(V.rate, cap, "adjustedFundingRateCap"),
                        funding_floor=V.opt(V.rate, floor, "adjustedFundingRateFloor"),
                        # validated after the multiplication: "1e308" hours is finite, its seconds are not
                        funding_interval_s=V.interval(hours * 3600.0, "fundingIntervalHours") if hours else None,
                    )
                )
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "fundingInfo", exc) from None

    def parse_funding_history(self, body: bytes, ctx: FeedContext) -> list[FundingSettlement]:
        """``GET /fapi/v1/fundingRate`` -> settlements; "Special" (dividend) rates are left out.

        The settlement's ``markPrice`` is kept where given (the funding was charged on it); the
        market backfill and the positions' funding accrual both read history through this parser.
        Wire (exchanges.md §2, doc example; no recorded body is kept)::

            [{"symbol":"BTCUSDT","fundingRate":"-0.03750000","fundingTime":1570608000000,"markPrice":"34287.54619963"}]
        """
        try:
            rows: dict[str, list[tuple[float, float]]] = {}
            marks: dict[tuple[str, float], float] = {}
            tb = ctx.time_bounds()
            for row in arr(loads(body), "fundingRate"):
                if row.get("rateType", "Regular") == "Special":
                    continue
                sym = text(row["symbol"], "symbol")
                t = ms(row["fundingTime"], "fundingTime", tb)
                rate = V.rate(num(row["fundingRate"], "fundingRate"), "fundingRate")
                rows.setdefault(sym, []).append((t, rate))
                mark = V.opt(V.price, opt_num(row.get("markPrice"), "markPrice"), "markPrice")
                if mark is not None:
                    marks[(sym, t)] = mark
            out = settlements(EX, rows)
            if marks:
                out = [msgspec.structs.replace(s, mark_price=marks.get((s.instrument, s.funding_time))) for s in out]
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "fundingRate", exc) from None

    def parse_open_interest(self, body: bytes, ctx: FeedContext) -> list[MarketUpdate]:
        """``GET /fapi/v1/openInterest`` (one object, or a list of them) -> open interest in base coin.

        Recorded wire (rest_openinterest_cmp.jsonl, 2022-06; USDⓈ-M, then COIN-M)::

            {"symbol":"BTCUSDT","openInterest":"84617.188","time":1654336844754}
            {"symbol":"BTCUSD_PERP","pair":"BTCUSD","openInterest":"5827897","contractType":"PERPETUAL","time":1654336819740}
        """
        try:
            msg = loads(body)
            out = []
            tb = ctx.time_bounds()
            for row in msg if type(msg) is list else [msg]:
                sym = text(row["symbol"], "symbol")
                oi = V.holding(num(row["openInterest"], "openInterest"), "openInterest")
                info = ctx.instruments.get(sym)
                t = opt_ms(row.get("time"), "time", tb)
                if info is not None and info.inverse:
                    # COIN-M style body: the count is contracts of a fixed USD value
                    usd = V.usd(oi * info.contract_size, "openInterest")
                    out.append(MarketUpdate(EX, sym, event_time=t, open_interest_usd=usd))
                elif "_" in sym:
                    raise ParseError(f"{sym}: delivery/COIN-M symbol without contract size in the instrument list")
                else:
                    out.append(MarketUpdate(EX, sym, event_time=t, open_interest_base=oi))
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "openInterest", exc) from None

    def parse_long_short_ratio(self, body: bytes, ctx: FeedContext) -> list[LongShortRatio]:
        """``GET /futures/data/globalLongShortAccountRatio`` -> ratios, oldest first."""
        try:
            tb = ctx.time_bounds()
            out = [
                LongShortRatio(
                    EX,
                    text(row["symbol"], "symbol"),
                    ms(row["timestamp"], "timestamp", tb),  # string before 2026-07, integer after
                    V.ratio(num(row["longShortRatio"], "longShortRatio"), "longShortRatio"),
                )
                for row in arr(loads(body), "globalLongShortAccountRatio")
            ]
            out.sort(key=lambda r: r.event_time)
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "globalLongShortAccountRatio", exc) from None

    def parse_insurance_fund(self, body: bytes, ctx: FeedContext) -> list[InsuranceFund]:
        """``GET /fapi/v1/insuranceBalance`` (one pool object or a list of pools) -> USD-like balances.

        A pool is named by its asset and the alphabetically first symbol it covers, which stays the
        same whether the body was asked for one symbol or for all.
        """
        try:
            msg = loads(body)
            out = []
            tb = ctx.time_bounds()
            for group in msg if type(msg) is list else [msg]:
                symbols = arr(group["symbols"], "symbols")
                first = min(symbols) if symbols else "all"
                for a in arr(group["assets"], "assets"):
                    asset = text(a["asset"], "asset")
                    if asset not in USD_QUOTES:
                        continue  # a BNB/BTC balance has no USD value in this body
                    out.append(
                        InsuranceFund(
                            EX,
                            f"{asset}:{first}",
                            ms(a["updateTime"], "updateTime", tb),
                            V.usd(num(a["marginBalance"], "marginBalance"), "marginBalance"),
                        )
                    )
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "insuranceBalance", exc) from None


# ---- helpers ----------------------------------------------------------------------------------


def loads_or_fail(frame: str | bytes) -> Any:
    try:
        return loads(frame)
    except ParseError as exc:
        raise ParseError(f"binance stream frame: {exc}") from None


def _control(msg: dict[str, Any]) -> list[Record]:
    """Frames without data: the SUBSCRIBE ack ``{"result":null,"id":1}`` or an error."""
    err = msg.get("error")
    if err is not None:
        detail = err.get("msg", err) if type(err) is dict else err
        return [SubscriptionError(EX, f"binance error (id {msg.get('id')}): {detail}")]
    if "code" in msg and "msg" in msg:
        return [SubscriptionError(EX, f"binance error {msg['code']}: {msg['msg']}")]
    if "id" in msg:
        return []  # ack of SUBSCRIBE / LIST_SUBSCRIPTIONS
    raise ParseError(f"unknown frame with keys {sorted(msg)[:6]}")


def _event(d: Any, instruments: Mapping[str, InstrumentInfo], tb: tuple[float, float]) -> list[Record]:
    e = d["e"]
    if e == "markPriceUpdate":
        s = d["s"]
        # !markPrice@arr carries every symbol: skip unfollowed ones before converting numbers
        if instruments and s not in instruments:
            return []
        return [_mark(msgspec.convert(d, _Mark), tb, _settle_of(d))]
    if e == "forceOrder":
        liq = _force_order(d["o"], d.get("E"), instruments, tb)
        return [liq] if liq is not None else []
    if type(e) is not str:
        raise ParseError(f"event type {e!r} is not a string")
    return []  # a stream we do not use (ticker, trade...): valid, nothing to record


# ---- mark price -------------------------------------------------------------------------------
# Only the fields used are declared: msgspec skips the rest (P, ap, st...) without building objects
# for them, and a value of the wrong JSON type fails the decoding. The fast path decodes whole frames
# straight into these; the strict path converts each orjson-decoded element, so both end in _mark().


class _Mark(msgspec.Struct, gc=False, tag_field="e", tag="markPriceUpdate"):
    s: str
    p: str
    E: int | None = None
    i: str | None = None  # absent in 2019 captures
    r: str | None = None  # "" for symbols without funding
    T: int | None = None


# The estimated settle price P matters for delivery symbols only (BTCUSDT_260327): a frame holding
# one is decoded a second time for it, so the perpetuals' frames never pay for converting P.
class _Settle(msgspec.Struct, gc=False):
    s: str
    P: str | None = None


class _SettleFrame(msgspec.Struct, gc=False):
    data: _Settle | list[_Settle]


_decode_settle = msgspec.json.Decoder(_SettleFrame).decode


# The typed path decodes with msgspec in lax mode: the mark and index strings become floats while
# decoding (a float() call saved per field). An absent field keeps the default, this very NaN object,
# told apart by identity: a sent "NaN" is a new float and fails the domain checks. What cannot be
# converted ("", "null", a JSON null, true) fails the decoding, and the strict path (string fields)
# parses the frame. The rate stays a string: symbols without funding send "" in every array.
_ABSENT = float("nan")


class _FastMark(msgspec.Struct, gc=False, tag_field="e", tag="markPriceUpdate"):
    """One symbol's stream, the most frequent frame: the mark, the index and the rate are checked
    against their domains while decoding (what is outside fails it, and the strict path names it)."""

    s: str
    p: V.Price
    E: float = _ABSENT
    i: V.Price = _ABSENT  # absent in 2019 captures
    r: V.Rate | Literal[""] = ""  # "" (also the default: absent) for symbols without funding
    T: float = _ABSENT


class _FastMarkElement(msgspec.Struct, gc=False, tag_field="e", tag="markPriceUpdate"):
    """An element of ``!markPrice@arr`` (every symbol of the exchange): values are converted but
    checked only for followed symbols, so one odd value of another symbol (a delisted one's price)
    never sends the whole array to the strict path. The rate stays a string: symbols without
    funding send "" in every array."""

    s: str
    p: float
    E: float = _ABSENT
    i: float = _ABSENT
    r: str | None = None
    T: float = _ABSENT


class _Force(msgspec.Struct, gc=False):
    """The order of a ``forceOrder`` event: only what a filled order's liquidation reads (the filled
    quantity at the average price, the trade time). Absent z, ap, T: 0, "not given": the strict path
    then takes the frame (it falls back to the order's own quantity and price, and the event's time),
    so the typed path never decodes the fallbacks (three floats a liquidation) for what Binance sends."""

    s: str
    S: Literal["BUY", "SELL"]  # decoded to these very strings (no new object); another fails the decoding
    # the domains are checked while decoding (V.Price...): what is outside fails it, and the strict path names it
    ap: V.PriceOr0 = 0.0
    z: V.QtyOr0 = 0.0
    T: float = 0.0


class _ForceEvent(msgspec.Struct, gc=False, tag_field="e", tag="forceOrder"):
    o: _Force


class _MarkFrame(msgspec.Struct, gc=False):
    stream: str
    # the event type "e" tells the two apart while decoding: a liquidation never takes the
    # failed-decoding detour through the strict path
    data: _FastMark | _ForceEvent | list[_FastMarkElement]


_decode_mark_frame = msgspec.json.Decoder(_MarkFrame, strict=False).decode
_MARK_KEYS = ("p", "i", "r")


def _mark(m: _Mark, tb: tuple[float, float], settle: object = None) -> MarketUpdate:
    """One ``markPriceUpdate`` (both paths end here). Recorded wire (ws_markprice_cmp.jsonl, 2021-04)::

        {"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1617308820003,"s":"BTCUSDT",
         "p":"58940.14924532","P":"58905.14663658","i":"58857.26693664","r":"0.00058455","T":1617321600000}}

    Every value is checked against its domain (:mod:`exporter.feeds.validate`); the comparisons
    are false for NaN and the infinities that float() accepts, so they check finiteness too.
    """
    if not m.s:
        raise ParseError("field 's' is empty")
    i = m.i
    r = m.r
    try:
        mark = float(m.p)
        index = float(i) if i else None
        rate = float(r) if r else None
    except ValueError as exc:
        raise explain(msgspec.structs.asdict(m), _MARK_KEYS, exc) from None
    if not V.PRICE_MIN <= mark <= V.PRICE_MAX:
        raise V.out_of_range("p", mark, V.PRICE)
    if index is not None and not V.PRICE_MIN <= index <= V.PRICE_MAX:
        raise V.out_of_range("i", index, V.PRICE)
    if rate is not None and not -V.RATE_MAX <= rate <= V.RATE_MAX:
        raise V.out_of_range("r", rate, V.RATE)
    lo, hi = tb
    t = m.T
    nft = None
    if t:
        nft = t / 1000.0
        if not lo <= nft <= hi:
            raise V.out_of_range("T", nft, V.TIMESTAMP)
    e = m.E
    et = None
    if e is not None:
        et = e / 1000.0
        if not lo <= et <= hi:
            raise V.out_of_range("E", et, V.TIMESTAMP)
    u = MarketUpdate(EX, m.s, et, mark, index, rate, nft)
    if settle is not None and settle != "":  # a delivery contract: its estimated settle price (term structure)
        u.settle_price_estimate = _settle_estimate(settle)
    return u


def _settle_of(el: Any) -> object:
    """P of an orjson-decoded delivery symbol's element (strict path); None for a perpetual."""
    return el.get("P") if "_" in el["s"] else None


# bound once: a module global is one dict lookup, ``V.PRICE_MIN`` two
_PMIN, _PMAX, _RMAX = V.PRICE_MIN, V.PRICE_MAX, V.RATE_MAX
_PAST_S, _FUTURE_S = V.PAST_S, V.FUTURE_S
_QMAX, _UMAX = V.QTY_MAX, V.USD_MAX


def _settles(frame: str | bytes) -> dict[str, str | None]:
    """P of every delivery symbol in the frame, from a second, narrow decoding (rare)."""
    d = _decode_settle(frame).data
    return {x.s: x.P for x in (d if isinstance(d, list) else [d])}


def _mark_fast(m: _FastMark | _FastMarkElement, tb: tuple[float, float], settle: object = None) -> MarketUpdate:
    """:func:`_mark` on the typed path's floats: the same checks, the same errors."""
    s = m.s
    if not s:
        raise ParseError("field 's' is empty")
    a = _ABSENT
    mark = m.p
    if not _PMIN <= mark <= _PMAX:
        raise V.out_of_range("p", mark, V.PRICE)
    index: float | None = m.i
    if index is a:
        index = None
    elif not _PMIN <= index <= _PMAX:  # type: ignore[operator]
        raise V.out_of_range("i", index, V.PRICE)  # type: ignore[arg-type]
    r = m.r
    rate = None
    if r.__class__ is float:  # a single stream's rate, checked while decoding (0.0 included)
        rate = r  # type: ignore[assignment]
    elif r:
        try:
            rate = float(r)
        except ValueError:
            raise ParseError(f"field 'r': not a number: {r!r}", V.NOT_A_NUMBER) from None
        if not -_RMAX <= rate <= _RMAX:
            raise V.out_of_range("r", rate, V.RATE)
    lo, hi = tb
    t = m.T
    nft = None
    if t is not a and t:
        nft = t / 1000.0
        if not lo <= nft <= hi:
            raise V.out_of_range("T", nft, V.TIMESTAMP)
    e = m.E
    et = None
    if e is not a:
        et = e / 1000.0
        if not lo <= et <= hi:
            raise V.out_of_range("E", et, V.TIMESTAMP)
    u = MarketUpdate(EX, s, et, mark, index, rate, nft)
    if settle is not None and settle != "":  # a delivery contract: its estimated settle price (term structure)
        u.settle_price_estimate = _settle_estimate(settle)
    return u


def _force_order(
    o: dict[str, Any], event_ms: Any, instruments: Mapping[str, InstrumentInfo], tb: tuple[float, float]
) -> Liquidation | None:
    """One ``forceOrder`` event's order. Recorded wire (ws_forceorder_tardis.jsonl, 2020-03)::

    {"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1584059031426,"o":{"s":"BTCUSDT",
     "S":"BUY","o":"LIMIT","f":"IOC","q":"0.014","p":"4793.91","ap":"4706.04","X":"FILLED",
     "l":"0.015","z":"0.014","T":1584059031421}}}
    """
    sym = text(o["s"], "o.s")
    if instruments and sym not in instruments:
        return None
    side = _LIQ_SIDE.get(o["S"])
    if side is None:
        raise ParseError(f"field 'o.S': unknown order side {o['S']!r}")
    # Filled accumulated quantity at the average price is what was actually liquidated;
    # the order's own quantity and limit price are the fallback for older/partial shapes.
    qty = opt_num(o.get("z"), "o.z")
    if not qty:
        qty = num(o["q"], "o.q")
    price = opt_num(o.get("ap"), "o.ap")
    if not price:
        price = num(o["p"], "o.p")
    V.qty(qty, "o.q")
    V.price(price, "o.p")
    info = instruments.get(sym)
    quote = info.quote if info is not None else base_of(EX, sym)[1]
    if quote not in USD_QUOTES:
        return None  # no USD notional can be given for a coin-quoted symbol
    t = o.get("T") or event_ms
    return Liquidation(EX, sym, ms(t, "o.T", tb), side, price, qty, V.usd(price * qty, "o.q"))


def _settle_estimate(settle: object) -> float:
    """A delivery contract's estimated settle price (``P``, sent in its last hour), checked as a price."""
    if type(settle) is not str:
        raise ParseError(f"field 'P': expected a string, got {settle!r}")
    try:
        est = float(settle)
    except ValueError:
        raise ParseError(f"field 'P': not a number: {settle!r}") from None
    if not V.PRICE_MIN <= est <= V.PRICE_MAX:
        raise V.out_of_range("P", est, V.PRICE)
    return est


_fast = typed_only(BinanceFeed())  # the typed path alone, for the tests
