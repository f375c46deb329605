"""Bybit v5 linear: ``tickers.{symbol}`` (snapshot + delta), ``allLiquidation.{symbol}``, REST bodies.

Reference: exchanges.md §3. Numbers arrive as decimal strings, times in milliseconds. A ticker delta
carries only the fields that changed, so every absent field stays None ("unchanged"), never 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import orjson

from exporter.feeds import (
    FAST_FAILURES,
    PARSE_FAILURES,
    UNTYPED,
    USD_QUOTES,
    NotTyped,
    ParseWs,
    arr,
    chunks,
    explain,
    label,
    loads,
    ms,
    num,
    obj,
    opt_num,
    parse_error,
    settlements,
    text,
    typed_only,
)
from exporter.feeds import validate as V
from exporter.feeds.base import FeedContext, WsPlan
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
)

EX = Exchange.BYBIT
ARGS_PER_SUBSCRIBE = 10  # tardis batches 10; futures have no documented per-request limit
MAX_ARGS_CHARS = 20_000  # "args" may not exceed 21,000 characters per public connection
PING = '{"op":"ping"}'

_POSITION_SIDE = {"Buy": Side.LONG, "Sell": Side.SHORT}  # S is the liquidated *position* side
_LONG, _SHORT = Side.LONG, Side.SHORT


def is_inverse(symbol: str, instruments: Mapping[str, InstrumentInfo]) -> bool:
    """Inverse contracts (BTCUSD, BTCUSDU23) count size in USD; linear (BTCUSDT, BTCPERP) in coin."""
    info = instruments.get(symbol)
    if info is not None:
        return info.inverse
    return "USD" in symbol and "USDT" not in symbol and "USDC" not in symbol and not symbol.endswith("PERP")


class BybitFeed:
    exchange = EX

    def __init__(self, fast: bool = True) -> None:
        self.fast = fast  # typed msgspec decoding of ticker pushes; False: the orjson path only (tests)
        self.parse_ws: ParseWs = self._typed if fast else self._parse_ws_strict

    # ---- websocket ----------------------------------------------------------------------------

    def ws_plans(self, ws_base_url: str, instruments: Sequence[InstrumentInfo]) -> list[WsPlan]:
        url = ws_base_url.rstrip("/") + "/v5/public/linear"
        # Liquidations share the connection with the 100 ms tickers, so a quiet liquidation topic
        # never trips the silence watchdog.
        conns: list[list[str]] = [[]]
        size = 0
        for i in instruments:
            pair = [f"tickers.{i.instrument}", f"allLiquidation.{i.instrument}"]
            n = sum(len(a) + 3 for a in pair)  # quotes and comma in the JSON array
            if size + n > MAX_ARGS_CHARS and conns[-1]:
                conns.append([])
                size = 0
            conns[-1].extend(pair)
            size += n
        return [
            WsPlan(
                stream=label("tickers", k, len(conns)),
                url=url,
                subscribe=tuple(
                    orjson.dumps({"op": "subscribe", "args": list(c)}).decode()
                    for c in chunks(args, ARGS_PER_SUBSCRIBE)
                ),
                ping_frame=PING,
                ping_interval_s=20.0,
                silence_timeout_s=30.0,
                resync=_resync_frames([a for a in args if a.startswith("tickers.")]),
                cadence_s=1.0,  # tickers push every 100 ms on a change; a live mark moves within 1 s
            )
            for k, args in enumerate(conns)
        ]

    def heartbeat_setup(self) -> tuple[str, ...]:
        return ()

    def _typed(self, frame: str | bytes, ctx: FeedContext, strict: bool = True) -> list[Record]:
        """``parse_ws``: the typed path for the frequent pushes (tickers, liquidations), with the
        strict path written in for any other frame and any value the typed path does not take
        (one call a frame, not two)."""
        try:
            data: _OldLiq | _FastTicker | None = None
            if frame[2] == _D:  # b'{"d': the deprecated liquidation message naming its data first (a ticker: its topic)
                try:
                    om = _decode_old_liq_message(frame)
                except ValueError:  # another shape that starts so: the general decoding below
                    pass
                else:
                    # its topic (``in``: a third of startswith's cost; "allLiquidation." differs)
                    if "liquidation." not in om.topic:
                        raise NotTyped
                    data = om.data
            if data is None:  # the general decoding (the deprecated liquidation in another key order too)
                m = _decode_ticker_message(frame)
                topic = m.topic
                decoded = m.data
                if isinstance(decoded, list):
                    if not topic.startswith("allLiquidation."):
                        raise NotTyped
                    instruments = ctx.instruments
                    tb = ctx.time_bounds()
                    out: list[Record] = []
                    for d in decoded:
                        liq = _liquidation_fast(d.s, d.S, d.v, d.p, d.T, instruments, tb)
                        if liq is not None:
                            out.append(liq)
                    return out
                if decoded.side is None:  # only the deprecated liquidation.{symbol} object has a side
                    if not topic.startswith("tickers."):
                        raise NotTyped  # acks, topics we do not use: the strict path
                    tb = ctx.time_bounds()
                    ts = m.ts
                    et = None
                    if ts is not _ABSENT:
                        et = ts / 1000.0
                        if not tb[0] <= et <= tb[1]:
                            raise V.out_of_range("ts", et, V.TIMESTAMP)
                    return _ticker_fast(decoded, et, m.type == "snapshot", ctx, tb)
                if "liquidation." not in topic:  # the deprecated liquidation.{symbol} object (see above)
                    raise NotTyped
                data = decoded
            # _liquidation_fast inline for a followed symbol and a clock (no call a liquidation): size and
            # price were checked while decoding (an absent one is NaN and fails the comparisons below)
            sym = data.symbol
            info = ctx.instruments.get(sym)
            clock = ctx.clock
            if info is None or clock is None:
                liq = _liquidation_fast(
                    sym,
                    data.side,  # type: ignore[arg-type]
                    data.size,
                    data.price,
                    data.updatedTime,
                    ctx.instruments,
                    ctx.time_bounds(),
                )
                return [liq] if liq is not None else []
            v = data.size
            p = data.price
            at = data.updatedTime / 1000.0
            now = clock()  # ctx.time_bounds() inline
            if info.inverse:  # size counts USD contracts
                qty = v / p
                if not (0.0 < qty <= _QMAX and v <= _UMAX and now - _PAST_S <= at <= now + _FUTURE_S):
                    raise ParseError("a value out of its domain")
                return [Liquidation(EX, sym, at, _LONG if data.side == "Buy" else _SHORT, p, qty, v)]
            usd = v * p  # the size (V.Qty) was checked while decoding
            if not (usd <= _UMAX and now - _PAST_S <= at <= now + _FUTURE_S):
                raise ParseError("a value out of its domain")
            # S is the liquidated position's side
            return [Liquidation(EX, sym, at, _LONG if data.side == "Buy" else _SHORT, p, v, usd)]
        except FAST_FAILURES:
            pass
        return self._parse_ws_strict(frame, ctx) if strict else UNTYPED

    def _parse_ws_strict(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        try:
            msg = loads(frame)
            topic = msg.get("topic")
            if topic is None:
                return _control(msg)
            tb = ctx.time_bounds()
            if topic.startswith("tickers."):
                t = msgspec.convert(obj(msg["data"], "data"), _Ticker)
                ts = msg.get("ts")
                et = None if ts is None else V.timestamp(num(ts, "ts") / 1000.0, "ts", tb)
                return _ticker(t, et, msg.get("type") == "snapshot", ctx.instruments, tb)
            if topic.startswith("allLiquidation."):
                out: list[Record] = []
                for d in arr(msg["data"], "data"):
                    try:
                        liq = _liquidation(d["s"], d["S"], d["v"], d["p"], d["T"], ctx.instruments, tb)
                    except PARSE_FAILURES as exc:  # one bad liquidation: the rest of the batch counts
                        err = parse_error(EX, "liquidation", exc)
                        out.append(Rejected(EX, err.reason, str(err)))
                        continue
                    if liq is not None:
                        out.append(liq)
                return out
            if topic.startswith("liquidation."):  # deprecated 2025-02: one object per message
                d = obj(msg["data"], "data")
                liq = _liquidation(d["symbol"], d["side"], d["size"], d["price"], d["updatedTime"], ctx.instruments, tb)
                return [liq] if liq is not None else []
            if type(topic) is not str:
                raise ParseError(f"topic {topic!r} is not a string")
            return []  # a topic we do not use
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "stream frame", exc) from None

    # ---- REST ---------------------------------------------------------------------------------

    def parse_instruments(self, body: bytes) -> list[InstrumentInfo]:
        """``GET /v5/market/instruments-info?category=linear`` -> trading perpetuals.

        No recorded body is kept; the fields used (exchanges.md §3.6): ``symbol, contractType, status,
        baseCoin, quoteCoin, fundingInterval`` (minutes), ``upperFundingRate, lowerFundingRate``.
        """
        try:
            out = []
            for s in arr(_result(body, "instruments-info")["list"], "list"):
                kind = s.get("contractType")
                if kind not in ("LinearPerpetual", "InversePerpetual") or s.get("status", "Trading") != "Trading":
                    continue
                minutes = opt_num(s.get("fundingInterval"), "fundingInterval")  # minutes, not hours
                upper = opt_num(s.get("upperFundingRate"), "upperFundingRate")
                lower = opt_num(s.get("lowerFundingRate"), "lowerFundingRate")
                out.append(
                    InstrumentInfo(
                        exchange=EX,
                        instrument=text(s["symbol"], "symbol"),
                        base=text(s["baseCoin"], "baseCoin"),
                        quote=text(s["quoteCoin"], "quoteCoin"),
                        inverse=kind == "InversePerpetual",
                        funding_interval_s=V.interval(minutes * 60.0, "fundingInterval") if minutes else None,
                        funding_cap=V.opt(V.rate, upper, "upperFundingRate"),
                        funding_floor=V.opt(V.rate, lower, "lowerFundingRate"),
                    )
                )
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "instruments-info", exc) from None

    def parse_funding_history(self, body: bytes, ctx: FeedContext) -> list[FundingSettlement]:
        """``GET /v5/market/funding/history`` (newest first on the wire) -> settlements, oldest first.

        Recorded wire (rest_funding_history_nautilus.json, 2024-03)::

            {"retCode":0,"retMsg":"OK","result":{"category":"linear","list":[{"symbol":"BTCUSDT",
             "fundingRate":"0.0001","fundingRateTimestamp":"1709884800000"},{"symbol":"BTCUSDT",
             "fundingRate":"0.00015","fundingRateTimestamp":"1709856000000"}]},"time":1709891679050}
        """
        try:
            rows: dict[str, list[tuple[float, float]]] = {}
            tb = ctx.time_bounds()
            for row in arr(_result(body, "funding/history")["list"], "list"):
                t = ms(row["fundingRateTimestamp"], "fundingRateTimestamp", tb)
                r = V.rate(num(row["fundingRate"], "fundingRate"), "fundingRate")
                rows.setdefault(text(row["symbol"], "symbol"), []).append((t, r))
            return settlements(EX, rows)
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "funding/history", exc) from None

    def parse_open_interest(self, body: bytes, ctx: FeedContext) -> list[MarketUpdate]:
        """``GET /v5/market/open-interest`` -> the newest open interest of the symbol.

        ``openInterest`` is the sum of both sides since 2023-11; the single-side value is used
        where Bybit gives it, else half the sum, so it compares with Binance/OKX.
        """
        try:
            res = _result(body, "open-interest")
            sym = text(res["symbol"], "symbol")
            rows = arr(res["list"], "list")
            if not rows:
                return []
            newest = max(rows, key=lambda r: num(r["timestamp"], "timestamp"))
            oi = opt_num(newest.get("singleOpenInterest"), "singleOpenInterest")
            if oi is None:
                oi = num(newest["openInterest"], "openInterest") / 2.0  # "the sum of both sides"
            t = ms(newest["timestamp"], "timestamp", ctx.time_bounds())
            if is_inverse(sym, ctx.instruments):
                return [MarketUpdate(EX, sym, event_time=t, open_interest_usd=V.usd(oi, "openInterest"))]
            return [MarketUpdate(EX, sym, event_time=t, open_interest_base=V.holding(oi, "openInterest"))]
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "open-interest", exc) from None

    def parse_long_short_ratio(self, body: bytes, ctx: FeedContext) -> list[LongShortRatio]:
        """``GET /v5/market/account-ratio`` -> buyRatio / sellRatio, oldest first."""
        try:
            out = []
            tb = ctx.time_bounds()
            for row in arr(_result(body, "account-ratio")["list"], "list"):
                buy = num(row["buyRatio"], "buyRatio")
                sell = num(row["sellRatio"], "sellRatio")
                if sell <= 0:
                    continue  # no short accounts: the ratio is undefined, not infinite
                t = ms(row["timestamp"], "timestamp", tb)
                out.append(LongShortRatio(EX, text(row["symbol"], "symbol"), t, V.ratio(buy / sell, "buyRatio")))
            out.sort(key=lambda r: r.event_time)
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "account-ratio", exc) from None

    def parse_insurance_fund(self, body: bytes, ctx: FeedContext) -> list[InsuranceFund]:
        """``GET /v5/market/insurance`` -> one balance per pool.

        An isolated pool (one symbol) is named ``USDT:BTCUSDT``; a shared pool (many symbols) by its
        coin, with its first symbol appended only if a coin has several shared pools.
        """
        try:
            res = _result(body, "insurance")
            t = ms(res["updatedTime"], "updatedTime", ctx.time_bounds())
            pools: list[tuple[str, list[str], float]] = []
            for row in arr(res["list"], "list"):
                coin = text(row["coin"], "coin")
                symbols = [s for s in str(row.get("symbols") or "").split(",") if s]
                value = opt_num(row.get("value"), "value")  # USD value of the balance
                if value is None:
                    if coin not in USD_QUOTES:
                        continue
                    value = num(row["balance"], "balance")
                pools.append((coin, symbols, V.usd(value, "value")))
            shared_per_coin: dict[str, int] = {}
            for coin, symbols, _ in pools:
                if len(symbols) != 1:
                    shared_per_coin[coin] = shared_per_coin.get(coin, 0) + 1
            out = []
            for coin, symbols, value in pools:
                if len(symbols) == 1:
                    name = f"{coin}:{symbols[0]}"
                elif shared_per_coin[coin] > 1 and symbols:
                    name = f"{coin}:{symbols[0]}+"
                else:
                    name = coin
                out.append(InsuranceFund(EX, name, t, value))
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "insurance", exc) from None


# ---- helpers ----------------------------------------------------------------------------------


def _resync_frames(ticker_topics: list[str]) -> tuple[str, ...]:
    """Unsubscribe then subscribe the ticker topics: Bybit answers a subscription with a snapshot
    (subscribing a topic twice is refused as "already subscribed", hence the unsubscribe)."""
    out: list[str] = []
    for c in chunks(ticker_topics, ARGS_PER_SUBSCRIBE):
        out.append(orjson.dumps({"op": "unsubscribe", "args": list(c)}).decode())
        out.append(orjson.dumps({"op": "subscribe", "args": list(c)}).decode())
    return tuple(out)


def _result(body: bytes, what: str) -> dict[str, Any]:
    msg = obj(loads(body), what)
    code = msg.get("retCode")
    if code != 0:
        raise ParseError(f"retCode {code!r}: {msg.get('retMsg')!r}", V.BAD_SHAPE)
    return obj(msg["result"], "result")


def _control(msg: dict[str, Any]) -> list[Record]:
    """Acks and pongs: ``{"success":true,"ret_msg":"pong","op":"ping",...}``."""
    op = msg.get("op")
    if op is None:
        raise ParseError(f"frame without topic or op, keys {sorted(msg)[:6]}")
    if msg.get("success") is False:
        return [SubscriptionError(EX, f"bybit {op} refused: {msg.get('ret_msg')}")]
    return []


# ---- tickers ----------------------------------------------------------------------------------
# Only the fields used are declared: msgspec skips the rest without building objects for them, and a
# value that is not a string (Bybit sends every number as a string) fails the decoding.


class _Ticker(msgspec.Struct, gc=False):
    symbol: str
    markPrice: str | None = None
    indexPrice: str | None = None
    fundingRate: str | None = None
    nextFundingTime: str | None = None
    fundingIntervalHour: str | None = None
    fundingCap: str | None = None
    openInterest: str | None = None
    openInterestValue: str | None = None
    singleOpenInterest: str | None = None
    singleOpenInterestValue: str | None = None


class _Liq(msgspec.Struct, gc=False):
    """One ``allLiquidation`` row (typed path: the decimal strings become floats while decoding)."""

    T: float
    s: str
    S: str
    v: float
    p: float


# The typed path's ticker: msgspec converts the decimal strings to floats while decoding (lax mode),
# a float() call saved per field. An absent field keeps the default, this very NaN object, told apart
# by identity: a sent "NaN" is a new float and fails the domain checks. What cannot be converted ("",
# "null", a JSON null, true; dated futures send "" funding) fails the decoding: the strict path then
# parses the frame (string fields) and either accepts it or names the field.
_ABSENT = float("nan")
# bound once: a module global is one dict lookup, ``V.PRICE_MIN`` two
_PMIN, _PMAX, _QMAX, _UMAX = V.PRICE_MIN, V.PRICE_MAX, V.QTY_MAX, V.USD_MAX
_PAST_S, _FUTURE_S = V.PAST_S, V.FUTURE_S


class _FastTicker(msgspec.Struct, gc=False, kw_only=True):
    # The deprecated liquidation.{symbol} object decodes here too (one decoding for it), its fields
    # first in the order Bybit sends them (msgspec tries the field after the last one matched first;
    # a ticker's symbol is found three fields later). Its size and price are checked while decoding
    # (V.Qty, V.Price: what is outside fails, the strict path names it).
    price: V.Price = _ABSENT
    side: Literal["Buy", "Sell"] | None = None  # these very strings (no new object); another fails
    size: V.Qty = _ABSENT
    symbol: str
    updatedTime: float = _ABSENT
    markPrice: float = _ABSENT
    indexPrice: float = _ABSENT
    fundingRate: float = _ABSENT
    nextFundingTime: float = _ABSENT
    fundingIntervalHour: float = _ABSENT
    fundingCap: float = _ABSENT
    openInterest: float = _ABSENT
    openInterestValue: float = _ABSENT
    singleOpenInterest: float = _ABSENT
    singleOpenInterestValue: float = _ABSENT


class _TickerMessage(msgspec.Struct, gc=False):
    topic: str
    # a ticker is an object, an allLiquidation batch an array: told apart while decoding
    data: _FastTicker | list[_Liq]
    ts: float = _ABSENT
    type: Literal["snapshot", "delta"] | None = None  # these very strings: no new object a frame


_decode_ticker_message = msgspec.json.Decoder(_TickerMessage, strict=False).decode


class _OldLiq(msgspec.Struct, gc=False):
    """The deprecated ``liquidation.{symbol}`` object alone, its fields in Bybit's order (checked as
    in :class:`_FastTicker`): five fields to decode, not the ticker's fifteen."""

    price: V.Price
    side: Literal["Buy", "Sell"]
    size: V.Qty
    symbol: str
    updatedTime: float


class _OldLiqMessage(msgspec.Struct, gc=False):
    data: _OldLiq
    topic: str


_decode_old_liq_message = msgspec.json.Decoder(_OldLiqMessage, strict=False).decode
_D = ord("d")
_TICKER_KEYS = tuple(f for f in _Ticker.__struct_fields__ if f != "symbol")


def _ticker_fast(
    t: _FastTicker, event_time: float | None, snapshot: bool, ctx: FeedContext, tb: tuple[float, float]
) -> list[Record]:
    """:func:`_ticker` on a typed ticker, the same rules inline; any value it does not take raises,
    and the strict path names it. The inverse ids among the instruments (FeedContext.inverse) are
    told without reading the instrument's facts, a cache miss at thousands; a followed symbol is found
    in the sink's handles when it gave them (FeedContext.handles: the one lookup of the update)."""
    sym = t.symbol
    if not sym:
        raise ParseError("field 'symbol' is empty")
    handles = ctx.handles
    handle = None
    if handles is not None:
        try:  # a subscript (no method call); a symbol without a handle is the rare case
            handle = handles[sym]
        except KeyError:
            pass
    if handle is not None:  # followed (the handles hold followed ids only)
        inverse = sym in ctx.inverse
    else:
        instruments = ctx.instruments
        if sym in instruments:
            inverse = sym in ctx.inverse
        elif instruments:
            return []  # not followed
        else:
            inverse = is_inverse(sym, instruments)
    a = _ABSENT
    u = MarketUpdate(EX, sym, event_time, confirms_ticker=True, snapshot=snapshot, handle=handle)
    x = t.markPrice
    if x is not a:
        if not V.PRICE_MIN <= x <= V.PRICE_MAX:
            raise ParseError("markPrice")
        u.mark_price = x
    x = t.indexPrice
    if x is not a:
        if not V.PRICE_MIN <= x <= V.PRICE_MAX:
            raise ParseError("indexPrice")
        u.index_price = x
    x = t.fundingRate
    if x is not a:
        if not -V.RATE_MAX <= x <= V.RATE_MAX:
            raise ParseError("fundingRate")
        u.funding_rate = x
    x = t.nextFundingTime
    if x is not a and x != 0.0:  # "0": no next settlement
        x /= 1000.0
        if not tb[0] <= x <= tb[1]:
            raise ParseError("nextFundingTime")
        u.next_funding_time = x
    x = t.fundingIntervalHour
    if x is not a:
        x *= 3600.0
        if not V.INTERVAL_MIN <= x <= V.INTERVAL_MAX:
            raise ParseError("fundingIntervalHour")
        u.funding_interval_s = x
    x = t.fundingCap
    if x is not a:
        if not -V.RATE_MAX <= x <= V.RATE_MAX:
            raise ParseError("fundingCap")
        u.funding_cap = x
        u.funding_floor = -x  # one symmetric limit
    # the single-side open interest wins where given, else the both-sides one is halved, field by
    # field (see _ticker)
    oi = t.singleOpenInterest
    if oi is a:
        oi = t.openInterest
        if oi is not a:
            oi *= 0.5
    value = t.singleOpenInterestValue
    if value is a:
        value = t.openInterestValue
        if value is not a:
            value *= 0.5
    if oi is not a:
        if inverse:
            if not 0.0 <= oi <= V.USD_MAX:  # inverse: size counts USD contracts
                raise ParseError("openInterest")
            u.open_interest_usd = oi
        else:
            if not 0.0 <= oi <= V.QTY_MAX:
                raise ParseError("openInterest")
            u.open_interest_base = oi
    if value is not a:
        if inverse:
            if not 0.0 <= value <= V.QTY_MAX:  # inverse: the "value" is in coin
                raise ParseError("openInterestValue")
            u.open_interest_base = value
        else:
            if not 0.0 <= value <= V.USD_MAX:
                raise ParseError("openInterestValue")
            u.open_interest_usd = value
    return [u]


def _ticker(
    t: _Ticker,
    event_time: float | None,
    snapshot: bool,
    instruments: Mapping[str, InstrumentInfo],
    tb: tuple[float, float],
) -> list[Record]:
    """One snapshot or delta -> the fields present (absent = unchanged = None). Both paths end here.

    Recorded wire (ws_tickers_v5_tardis.jsonl, 2023-04; a snapshot, then a delta of the same symbol)::

        {"topic":"tickers.BTCUSD","type":"snapshot","data":{"symbol":"BTCUSD","tickDirection":"MinusTick",
         "price24hPcnt":"0.023362","lastPrice":"28560.00","prevPrice24h":"27908.00","highPrice24h":"28815.00",
         "lowPrice24h":"27862.50","prevPrice1h":"28500.50","markPrice":"28560.00","indexPrice":"28566.94",
         "openInterest":"449736676","openInterestValue":"15747.08","turnover24h":"23389.1894",
         "volume24h":"661543991","nextFundingTime":"1680681600000","fundingRate":"0.0001",
         "bid1Price":"28560.00","bid1Size":"340549","ask1Price":"28560.50","ask1Size":"70817"},
         "cs":20856433578,"ts":1680673822577}
        {"topic":"tickers.BTCUSD","type":"delta","data":{"symbol":"BTCUSD","price24hPcnt":"0.023362",
         "openInterest":"449736674","fundingRate":"0.0001","bid1Price":"28560.00","bid1Size":"340549",
         "ask1Price":"28560.50","ask1Size":"70817"},"cs":20856433603,"ts":1680673822776}

    Each value is checked against its domain after conversion (:mod:`exporter.feeds.validate`);
    the chained comparisons are false for the NaN and infinities float() accepts.
    """
    sym = t.symbol
    if not sym:
        raise ParseError("field 'symbol' is empty")
    info = instruments.get(sym)
    if info is not None:
        inverse = info.inverse
    elif instruments:
        return []  # not followed
    else:
        inverse = is_inverse(sym, instruments)
    u = MarketUpdate(EX, sym, event_time, confirms_ticker=True, snapshot=snapshot)
    try:
        v = t.markPrice
        if v is not None:
            x = float(v)
            if not V.PRICE_MIN <= x <= V.PRICE_MAX:
                raise V.out_of_range("markPrice", x, V.PRICE)
            u.mark_price = x
        v = t.indexPrice
        if v is not None:
            x = float(v)
            if not V.PRICE_MIN <= x <= V.PRICE_MAX:
                raise V.out_of_range("indexPrice", x, V.PRICE)
            u.index_price = x
        v = t.fundingRate
        if v:  # dated futures carry "" (no funding)
            x = float(v)
            if not -V.RATE_MAX <= x <= V.RATE_MAX:
                raise V.out_of_range("fundingRate", x, V.RATE)
            u.funding_rate = x
        v = t.nextFundingTime
        if v and v != "0":
            u.next_funding_time = V.timestamp(num(v, "nextFundingTime") / 1000.0, "nextFundingTime", tb)
        v = t.fundingIntervalHour
        if v:
            # validated after the multiplication: "1e308" hours is finite, its seconds are not
            u.funding_interval_s = V.interval(num(v, "fundingIntervalHour") * 3600.0, "fundingIntervalHour")
        v = t.fundingCap
        if v:
            cap = V.rate(num(v, "fundingCap"), "fundingCap")
            u.funding_cap = cap
            u.funding_floor = -cap  # one symmetric limit
        # openInterest is "Open interest size (both sides)" (exchanges.md §3.2, §6.4): the single-side
        # value wins where given, else the both-sides one is halved -- field by field, since a delta
        # may carry a both-sides field without its single-side twin (never mix the two conventions).
        oi, oi_key, oi_half = t.singleOpenInterest, "singleOpenInterest", False
        if oi is None and t.openInterest is not None:
            oi, oi_key, oi_half = t.openInterest, "openInterest", True
        value, value_key, value_half = t.singleOpenInterestValue, "singleOpenInterestValue", False
        if value is None and t.openInterestValue is not None:
            value, value_key, value_half = t.openInterestValue, "openInterestValue", True
        if oi:
            x = float(oi)
            if oi_half:
                x *= 0.5
            if inverse:
                u.open_interest_usd = V.usd(x, oi_key)  # inverse: size counts USD contracts
            else:
                u.open_interest_base = V.holding(x, oi_key)
        if value:
            x = float(value)
            if value_half:
                x *= 0.5
            if inverse:
                u.open_interest_base = V.holding(x, value_key)  # inverse: the "value" is in coin
            else:
                u.open_interest_usd = V.usd(x, value_key)
    except ParseError:
        raise
    except ValueError as exc:
        raise explain(msgspec.structs.asdict(t), _TICKER_KEYS, exc) from None
    return [u]


def _liquidation_fast(
    sym: str,
    side: str,
    v: float,
    p: float,
    t: float,
    instruments: Mapping[str, InstrumentInfo],
    tb: tuple[float, float],
) -> Liquidation | None:
    """:func:`_liquidation` on typed fields, the same rules inline. Any doubt raises (one bad row
    fails the typed path): the strict path parses the frame again, rejecting that row alone."""
    info = instruments.get(sym)
    if info is None:
        if instruments or not sym:
            if not sym:
                raise ParseError("field 'symbol' is empty")
            return None
        inverse = is_inverse(sym, instruments)
    else:
        inverse = info.inverse
    pos = _POSITION_SIDE[side]  # KeyError on an unknown side
    at = t / 1000.0
    if not _PMIN <= p <= _PMAX:  # before dividing by it
        raise ParseError("price out of its domain")
    if inverse:  # size counts USD contracts
        qty, usd = v / p, v
    else:
        qty, usd = v, v * p
    if not (0.0 < qty <= _QMAX and 0.0 <= usd <= _UMAX and tb[0] <= at <= tb[1]):
        raise ParseError("a value out of its domain")
    return Liquidation(EX, sym, at, pos, p, qty, usd)


def _liquidation(
    sym: Any,
    side: Any,
    size: Any,
    price: Any,
    t: Any,
    instruments: Mapping[str, InstrumentInfo],
    tb: tuple[float, float],
) -> Liquidation | None:
    """One liquidation. Recorded wire (ws_liquidation_v5_tardis.jsonl, 2025-02, ``allLiquidation``)::

    {"topic":"allLiquidation.PIPPINUSDT","type":"snapshot","ts":1740480207578,
     "data":[{"T":1740480207110,"s":"PIPPINUSDT","S":"Sell","v":"2846","p":"0.02456"}]}
    """
    sym = text(sym, "symbol")
    if instruments and sym not in instruments:
        return None
    pos = _POSITION_SIDE.get(side)
    if pos is None:
        raise ParseError(f"field 'S': unknown position side {side!r}")
    v = num(size, "v")
    p = V.price(num(price, "p"), "p")  # bankruptcy price
    if is_inverse(sym, instruments):  # size counts USD contracts
        return Liquidation(EX, sym, ms(t, "T", tb), pos, p, V.qty(v / p, "v"), V.usd(v, "v"))
    return Liquidation(EX, sym, ms(t, "T", tb), pos, p, V.qty(v, "v"), V.usd(v * p, "v"))


_fast = typed_only(BybitFeed())  # the typed path alone, for the tests
