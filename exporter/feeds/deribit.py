"""Deribit perpetuals over JSON-RPC: ``ticker.{inst}.100ms``, ``trades.{inst}.100ms``; REST bodies.

Reference: exchanges.md §5. Numbers are JSON floats, times in milliseconds. Funding is continuous:
``funding_8h`` is exported as the rate of an 8 h interval. Inverse perpetuals (``BTC-PERPETUAL``)
count amounts and open interest in USD; linear ``*_USDC-PERPETUAL`` in coin.
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
    NotTyped,
    ParseWs,
    arr,
    chunks,
    jnum,
    label,
    loads,
    ms,
    obj,
    parse_error,
    settlements,
    text,
    typed_only,
)
from exporter.feeds import validate as V
from exporter.feeds.base import FeedContext, WsPlan
from exporter.model import (
    EIGHT_HOURS,
    Exchange,
    FundingSettlement,
    HeartbeatRequest,
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

EX = Exchange.DERIBIT
INSTRUMENTS_PER_CONNECTION = 250  # 32 connections per IP in all: keep few, but not one huge one
CHANNELS_PER_SUBSCRIBE = 200  # subscribe calls cost credits each; fewer, larger calls are cheaper
HEARTBEAT_INTERVAL_S = 15  # public/set_heartbeat accepts >= 10 s
HEARTBEAT_REQUEST_ID = 1
TEST_REPLY_ID = 2
SUBSCRIBE_ID_BASE = 100

# public/test is how a client answers the server's test_request (exchanges.md §5.1)
TEST_REPLY = orjson.dumps({"jsonrpc": "2.0", "id": TEST_REPLY_ID, "method": "public/test", "params": {}}).decode()


def is_inverse(instrument: str, instruments: Mapping[str, InstrumentInfo]) -> bool:
    """``BTC-PERPETUAL`` is inverse (USD amounts); ``BTC_USDC-PERPETUAL`` is linear (coin amounts)."""
    info = instruments.get(instrument)
    if info is not None:
        return info.inverse
    return "_" not in instrument.split("-")[0]


# Side of the liquidated position, by liquidation flag and the taker's direction (exchanges.md §5.3):
# "T": the taker was liquidated, so a taker sell closes a long; "M": the maker was, on the other side.
_LIQUIDATED: dict[tuple[str, str], tuple[Side, ...]] = {
    ("T", "sell"): (Side.LONG,),
    ("T", "buy"): (Side.SHORT,),
    ("M", "buy"): (Side.LONG,),
    ("M", "sell"): (Side.SHORT,),
    ("MT", "sell"): (Side.LONG, Side.SHORT),
    ("MT", "buy"): (Side.SHORT, Side.LONG),
}
# The same by flag, then direction (typed path): two lookups of the decoded strings, no key tuple built
_LIQUIDATED_BY_FLAG: dict[str, dict[str, tuple[Side, ...]]] = {}
for (_flag, _direction), _sides in _LIQUIDATED.items():
    _LIQUIDATED_BY_FLAG.setdefault(_flag, {})[_direction] = _sides


class DeribitFeed:
    exchange = EX

    def __init__(self, fast: bool = True) -> None:
        self.fast = fast  # typed msgspec decoding of notifications; False: the orjson path only (tests)
        self.parse_ws: ParseWs = self._typed if fast else self._parse_ws_strict

    # ---- websocket ----------------------------------------------------------------------------

    def ws_plans(self, ws_base_url: str, instruments: Sequence[InstrumentInfo]) -> list[WsPlan]:
        url = ws_base_url.rstrip("/") + "/ws/api/v2"
        groups = [list(g) for g in chunks(list(instruments), INSTRUMENTS_PER_CONNECTION)] or [[]]
        plans = []
        for k, group in enumerate(groups):
            # trades (liquidations) share the connection with the 100 ms ticker: never silent for long
            channels = [c for i in group for c in (f"ticker.{i.instrument}.100ms", f"trades.{i.instrument}.100ms")]
            subscribe = tuple(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": SUBSCRIBE_ID_BASE + n,
                        "method": "public/subscribe",
                        "params": {"channels": list(c)},
                    }
                ).decode()
                for n, c in enumerate(chunks(channels, CHANNELS_PER_SUBSCRIBE))
            )
            plans.append(
                WsPlan(
                    stream=label("public", k, len(groups)),
                    url=url,
                    subscribe=subscribe,
                    ping_frame=None,  # the server-driven heartbeat replaces pings
                    silence_timeout_s=HEARTBEAT_INTERVAL_S * 3.0,
                    cadence_s=1.0,  # ticker.100ms: every 100 ms on a change; a live mark moves within 1 s
                )
            )
        return plans

    def heartbeat_setup(self) -> tuple[str, ...]:
        return (
            orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": HEARTBEAT_REQUEST_ID,
                    "method": "public/set_heartbeat",
                    "params": {"interval": HEARTBEAT_INTERVAL_S},
                }
            ).decode(),
        )

    def _typed(self, frame: str | bytes, ctx: FeedContext, strict: bool = True) -> list[Record]:
        """``parse_ws``: the typed path for the frequent pushes, with the strict path written in for
        any other frame and any value the typed path does not take (one call a frame, not two)."""
        try:
            p = _decode_notification(frame).params  # a subscription's (method checked while decoding)
            channel = p.channel
            data = p.data
            if type(data) is _Ticker:
                if not channel.startswith("ticker."):
                    raise NotTyped
                return _ticker(data, ctx, ctx.time_bounds())
            if not channel.startswith("trades."):
                raise NotTyped
            out: list[Record] = []
            instruments = ctx.instruments
            bounds: tuple[float, float] | None = None
            for t in data:  # type: ignore[union-attr]
                if t.liquidation is None:
                    continue
                # :func:`_trade` on a typed trade, the same rules inline (no call a trade); any doubt raises
                # and the strict path parses the frame again (rejecting the bad trade alone)
                inst = t.instrument_name
                info = instruments.get(inst)
                if info is None:
                    if instruments or not inst:
                        if not inst:
                            raise ParseError("field 'instrument_name' is empty")
                        continue
                    inverse = is_inverse(inst, instruments)
                else:
                    inverse = info.inverse
                sides = _LIQUIDATED_BY_FLAG[t.liquidation][t.direction]
                price = t.price
                amount = t.amount
                if inverse:
                    qty, usd = amount / price, amount  # amount counts USD
                else:
                    qty, usd = amount, amount * price
                when = t.timestamp / 1000.0
                if bounds is None:  # ctx.time_bounds() inline, once a frame
                    clock = ctx.clock
                    if clock is None:
                        bounds = V.STATIC_BOUNDS
                    else:
                        now = clock()
                        bounds = (now - _PAST_S, now + _FUTURE_S)
                if not (0.0 < qty <= _QMAX and usd <= _UMAX and bounds[0] <= when <= bounds[1]):
                    raise ParseError("a value out of its domain")
                for side in sides:
                    out.append(Liquidation(EX, inst, when, side, price, qty, usd))
            return out
        except FAST_FAILURES:
            pass
        return self._parse_ws_strict(frame, ctx) if strict else UNTYPED

    def _parse_ws_strict(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        try:
            msg = loads(frame)
            method = msg.get("method")
            if method == "subscription":
                params = msg["params"]
                channel = params["channel"]
                if channel.startswith("ticker."):
                    t = msgspec.convert(obj(params["data"], "data"), _Ticker)
                    return _ticker(t, ctx, ctx.time_bounds())
                if channel.startswith("trades."):
                    return _trades(arr(params["data"], "data"), ctx.instruments, ctx.time_bounds())
                return []  # a channel we do not use
            if method == "heartbeat":
                if msg["params"]["type"] == "test_request":
                    return [HeartbeatRequest(EX, TEST_REPLY)]
                return []
            if method is not None:
                raise ParseError(f"unknown method {method!r}")
            err = msg.get("error")
            if err is not None:
                return [SubscriptionError(EX, f"deribit error (id {msg.get('id')}): {_error_text(err)}")]
            if "result" in msg:
                return []  # answer to subscribe / set_heartbeat / test
            raise ParseError(f"frame without method, result or error, keys {sorted(msg)[:6]}")
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "stream frame", exc) from None

    # ---- REST ---------------------------------------------------------------------------------

    def parse_instruments(self, body: bytes) -> list[InstrumentInfo]:
        """``public/get_instruments`` -> perpetuals; contract_size is USD for inverse ones.

        Recorded wire (rest_get_instruments_btc_perpetual_2021-07_excerpt.json), the fields used::

            {"jsonrpc":"2.0","result":[{"instrument_name":"BTC-PERPETUAL","settlement_period":"perpetual",
              "is_active":true,"kind":"future","base_currency":"BTC","quote_currency":"USD",
              "contract_size":10.0, ...}], ...}
        """
        try:
            out = []
            for s in arr(_result(body, "get_instruments"), "result"):
                if s.get("settlement_period") != "perpetual" or s.get("is_active") is False:
                    continue
                inst = text(s["instrument_name"], "instrument_name")
                kind = s.get("instrument_type")  # "reversed" | "linear" in newer bodies
                inverse = kind == "reversed" if kind else "_" not in inst.split("-")[0]
                out.append(
                    InstrumentInfo(
                        exchange=EX,
                        instrument=inst,
                        base=text(s["base_currency"], "base_currency"),
                        quote=text(s["quote_currency"], "quote_currency"),
                        contract_size=V.qty(jnum(s["contract_size"], "contract_size"), "contract_size"),
                        inverse=inverse,
                        funding_interval_s=EIGHT_HOURS,  # continuous, exported as 8 h-equivalent
                    )
                )
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "get_instruments", exc) from None

    def parse_funding_history(
        self, body: bytes, ctx: FeedContext, instrument: str | None = None
    ) -> list[FundingSettlement]:
        """``public/get_funding_rate_history`` -> one 8 h-equivalent observation (interest_8h) an hour.

        The body does not name the instrument: pass ``instrument``, or a one-instrument context.
        """
        try:
            rows = arr(_result(body, "get_funding_rate_history"), "result")
            if instrument is None:
                if len(ctx.instruments) != 1:
                    raise ParseError("the body names no instrument: pass instrument= or a one-instrument context")
                instrument = next(iter(ctx.instruments))
            tb = ctx.time_bounds()
            pairs = [
                (ms(r["timestamp"], "timestamp", tb), V.rate(jnum(r["interest_8h"], "interest_8h"), "interest_8h"))
                for r in rows
            ]
            return settlements(EX, {instrument: pairs}, EIGHT_HOURS)
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "get_funding_rate_history", exc) from None

    def parse_open_interest(self, body: bytes, ctx: FeedContext) -> list[MarketUpdate]:
        """``public/get_book_summary_by_currency`` -> open interest of the perpetuals in it.

        Recorded wire (rest_book_summary_by_currency_cmp.jsonl, 2022-06)::

            {"jsonrpc":"2.0","result":[{"volume_usd":223275080.0,"volume_notional":223275080.0,"volume":7539.21,
             "quote_currency":"USD","price_change":-0.369,"open_interest":560105870,"mid_price":29700.75,
             "mark_price":29700.53,"low":29266.5,"last":29698.0,"instrument_name":"BTC-PERPETUAL","high":29934.0,
             "funding_8h":2.14e-06,"estimated_delivery_price":29695.49,"current_funding":0.0,
             "creation_timestamp":1654340303741,"bid_price":29700.5,"base_currency":"BTC","ask_price":29701.0}],
             "usIn":1654340303741682,"usOut":1654340303741855,"usDiff":173,"testnet":false}
        """
        try:
            out = []
            tb = ctx.time_bounds()
            for r in arr(_result(body, "get_book_summary_by_currency"), "result"):
                inst = text(r["instrument_name"], "instrument_name")
                if not inst.endswith("-PERPETUAL") or (ctx.instruments and inst not in ctx.instruments):
                    continue
                oi = jnum(r["open_interest"], "open_interest")
                t = r.get("creation_timestamp")
                event_time = ms(t, "creation_timestamp", tb) if t is not None else None
                if is_inverse(inst, ctx.instruments):
                    out.append(MarketUpdate(EX, inst, event_time, open_interest_usd=V.usd(oi, "open_interest")))
                else:
                    V.holding(oi, "open_interest")
                    mark_raw = r.get("mark_price")
                    mark = None if mark_raw is None else V.price(jnum(mark_raw, "mark_price"), "mark_price")
                    usd = V.usd(oi * mark, "open_interest") if mark is not None else None
                    out.append(MarketUpdate(EX, inst, event_time, open_interest_base=oi, open_interest_usd=usd))
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "get_book_summary_by_currency", exc) from None

    def parse_long_short_ratio(self, body: bytes, ctx: FeedContext) -> list[LongShortRatio]:
        return []  # Deribit publishes no long/short ratio

    def parse_insurance_fund(self, body: bytes, ctx: FeedContext) -> list[InsuranceFund]:
        return []  # no API for the insurance fund balance (web page only)


# ---- helpers ----------------------------------------------------------------------------------


def _error_text(err: Any) -> str:
    if type(err) is dict:
        data = err.get("data")
        return f"{err.get('code')} {err.get('message')}" + (f" {data}" if data else "")
    return str(err)


def _result(body: bytes, what: str) -> Any:
    msg = obj(loads(body), what)
    err = msg.get("error")
    if err is not None:
        raise ParseError(f"error {_error_text(err)}", V.BAD_SHAPE)
    return msg["result"]


# ---- typed decoding ---------------------------------------------------------------------------
# Only the fields used are declared, so msgspec skips the rest without building objects for them, and
# types are enforced (a string or bool where a number belongs fails; JSON has no NaN/inf and msgspec
# refuses numbers out of range). The fast path decodes frames straight into these; anything it does
# not expect makes it fail or return None, and the strict path (orjson, then msgspec.convert for the
# ticker) runs and names the problem.


# Fields in the order Deribit sends them (the recorded frames'): msgspec tries the field after the
# last one matched first. kw_only: required and optional fields may mix.
class _Ticker(msgspec.Struct, gc=False, kw_only=True):
    timestamp: int
    index_price: float | None = None
    instrument_name: str
    open_interest: float | None = None
    mark_price: float
    funding_8h: float | None = None


# bound once: a module global is one dict lookup, ``V.PRICE_MIN`` two
_PMIN, _PMAX, _QMAX, _UMAX = V.PRICE_MIN, V.PRICE_MAX, V.QTY_MAX, V.USD_MAX
_PAST_S, _FUTURE_S = V.PAST_S, V.FUTURE_S


def _ticker(t: _Ticker, ctx: FeedContext, tb: tuple[float, float]) -> list[Record]:
    """A decoded ticker -> its update ([] for an instrument not followed). Both paths end here.

    Recorded wire (ws_ticker_trades_2025_nautilus.jsonl, 2025-12)::

        {"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.BTC-PERPETUAL.100ms",
         "data":{"timestamp":1765541474086,"state":"open","stats":{"high":93612.0,"low":89277.5,
         "price_change":2.3275,"volume":11897.27640428,"volume_usd":1092371540.0,"volume_notional":1092371540.0},
         "index_price":92263.55,"instrument_name":"BTC-PERPETUAL","last_price":92283.5,"settlement_price":92464.66,
         "min_price":90897.5,"max_price":93666.5,"open_interest":1132329370.0,"mark_price":92281.78,
         "interest_value":0.0028213400122472977,"best_ask_price":92284.0,"best_bid_price":92283.5,
         "estimated_delivery_price":92263.55,"best_ask_amount":186520.0,"best_bid_amount":117660.0,
         "current_funding":0.0,"funding_8h":1.742e-05}}}

    JSON has no NaN, but 1e308 is a valid number: every value is checked against its domain.
    """
    inst = t.instrument_name
    if not inst:
        raise ParseError("field 'instrument_name' is empty")
    # A followed instrument is found in the sink's handles when it gave them (FeedContext.handles, the
    # one lookup of the update: the store writes through the handle), else in the instruments; the
    # inverse ones among them (FeedContext.inverse): no read of the instrument's facts, a cache miss an
    # update at thousands of instruments
    handles = ctx.handles
    handle = None
    if handles is not None:
        try:  # a subscript (no method call); an id without a handle is the rare case
            handle = handles[inst]
        except KeyError:
            pass
    if handle is not None:  # followed (the handles hold followed ids only)
        inverse = inst in ctx.inverse
    else:
        instruments = ctx.instruments
        if instruments:
            if inst not in instruments:
                return []
            inverse = inst in ctx.inverse
        else:
            inverse = is_inverse(inst, instruments)
    rate = t.funding_8h  # perpetuals only; already the 8 h-equivalent rate
    oi = t.open_interest
    x = t.mark_price
    if not V.PRICE_MIN <= x <= V.PRICE_MAX:
        raise V.out_of_range("mark_price", x, V.PRICE)
    index = t.index_price
    if index is not None and not V.PRICE_MIN <= index <= V.PRICE_MAX:
        raise V.out_of_range("index_price", index, V.PRICE)
    if rate is not None and not -V.RATE_MAX <= rate <= V.RATE_MAX:
        raise V.out_of_range("funding_8h", rate, V.RATE)
    if oi is not None and not 0.0 <= oi <= (V.USD_MAX if inverse else V.QTY_MAX):
        raise V.out_of_range("open_interest", oi, V.USD if inverse else V.QTY)
    et = t.timestamp / 1000.0
    if not tb[0] <= et <= tb[1]:
        raise V.out_of_range("timestamp", et, V.TIMESTAMP)
    # positional arguments (fastest): the field order is pinned by a test (tests/test_feeds_deribit.py)
    return [
        MarketUpdate(
            EX,
            inst,
            et,
            t.mark_price,
            t.index_price,
            rate,
            None,  # continuous funding: no settlement time
            EIGHT_HOURS if rate is not None else None,
            None,
            None,
            rate,
            None,
            None if oi is None or inverse else oi,  # linear *_USDC-PERPETUAL: coin
            oi if inverse else None,  # inverse perpetuals count open interest in USD
            False,
            None,
            False,
            handle,
        )
    ]


class _Trade(msgspec.Struct, gc=False, kw_only=True):
    """One trade, the fields a liquidation needs (JSON numbers; a string fails the decoding), in the
    order Deribit sends them."""

    timestamp: int
    price: V.Price  # checked while decoding, as the amount (V.Qty): outside fails, the strict path names it
    # decoded to these very strings (no new object a trade); another value fails the decoding
    liquidation: Literal["M", "T", "MT"] | None = None
    instrument_name: str
    direction: Literal["buy", "sell"]
    amount: V.Qty


# One decoding of the whole notification: a ticker is an object, a trade batch an array (told apart
# while decoding). A batch's trades decode into a few fields each, about what searching the frame for
# a liquidation flag cost, and a batch that holds one is not decoded twice.
class _Params(msgspec.Struct, gc=False):
    channel: str
    data: _Ticker | list[_Trade]


class _Notification(msgspec.Struct, gc=False):
    # the very string (no new object a frame); another method (an RPC answer, a heartbeat) fails the
    # decoding, and the strict path takes the frame
    method: Literal["subscription"]
    params: _Params


_decode_notification = msgspec.json.Decoder(_Notification).decode


def _trades(rows: list[Any], instruments: Mapping[str, InstrumentInfo], tb: tuple[float, float]) -> list[Record]:
    """Trades -> the liquidations among them. Recorded wire (ws_perpetual_ticker_trades_tardis.jsonl, 2020-03)::

    {"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-PERPETUAL.raw",
     "data":[{"trade_seq":40781986,"trade_id":"66460463","timestamp":1584058044032,"tick_direction":3,
     "price":4469.5,"liquidation":"T","instrument_name":"BTC-PERPETUAL","index_price":4805.41,
     "direction":"sell","amount":1120}]}}
    """
    out: list[Record] = []
    for t in rows:
        try:
            _trade(t, instruments, tb, out)
        except PARSE_FAILURES as exc:  # one bad trade: the other liquidations of the batch count
            err = parse_error(EX, "trade", exc)
            out.append(Rejected(EX, err.reason, str(err)))
    return out


def _trade(t: Any, instruments: Mapping[str, InstrumentInfo], tb: tuple[float, float], out: list[Record]) -> None:
    flag = t.get("liquidation")
    if flag is None:
        return
    inst = text(t["instrument_name"], "instrument_name")
    if instruments and inst not in instruments:
        return
    sides = _LIQUIDATED.get((flag, t["direction"]))
    if sides is None:
        raise ParseError(f"unknown liquidation {flag!r} / direction {t['direction']!r}")
    price = V.price(jnum(t["price"], "price"), "price")
    amount = jnum(t["amount"], "amount")
    if is_inverse(inst, instruments):
        qty, usd = amount / price, amount  # amount counts USD
    else:
        qty, usd = amount, amount * price
    V.qty(qty, "amount")
    V.usd(usd, "amount")
    when = ms(t["timestamp"], "timestamp", tb)
    out.extend(Liquidation(EX, inst, when, side, price, qty, usd) for side in sides)


_fast = typed_only(DeribitFeed())  # the typed path alone, for the tests
