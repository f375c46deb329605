"""OKX v5 SWAP: funding-rate, mark-price, index-tickers, open-interest, liquidation-orders; REST bodies.

Reference: exchanges.md §4. Numbers arrive as decimal strings, times in milliseconds, sizes in
contracts (``ctVal`` coin per contract for linear swaps, USD per contract for inverse ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec
import orjson

from exporter.feeds import (
    FAST_FAILURES,
    PARSE_FAILURES,
    UNTYPED,
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
    FundingUpdate,
    InstrumentInfo,
    InsuranceFund,
    Liquidation,
    LongShortRatio,
    MarketUpdate,
    OpenInterestUpdate,
    ParseError,
    Record,
    Rejected,
    Side,
    SubscriptionError,
    base_of,
)

EX = Exchange.OKX
INSTRUMENTS_PER_CONNECTION = 100  # mark-price alone pushes up to 5/s per instrument
ARGS_PER_SUBSCRIBE = 100  # well under the 64 KB request limit, few of the 480 ops/hour
PING = "ping"

_POS_SIDE = {"long": Side.LONG, "short": Side.SHORT}
_NET_SIDE = {"sell": Side.LONG, "buy": Side.SHORT}  # net mode: a sell order closes a long


def index_of(inst_id: str) -> str:
    """``BTC-USDT-SWAP`` -> ``BTC-USDT`` (the id of its index in ``index-tickers``)."""
    parts = inst_id.split("-")
    return "-".join(parts[:2])


class OkxFeed:
    exchange = EX

    def __init__(self, fast: bool = True) -> None:
        self.fast = fast  # typed msgspec decoding of price pushes; False: the orjson path only (tests)
        self.parse_ws: ParseWs = self._typed if fast else self._parse_ws_strict
        # per instrument mapping (one per connection, perhaps): index id -> the swaps it prices; rebuilt
        # when the mapping's size changes. The mapping is kept referenced, so its id cannot be reused.
        self._index_cache: dict[int, tuple[Mapping[str, InstrumentInfo], int, dict[str, list[str]]]] = {}

    # ---- websocket ----------------------------------------------------------------------------

    def ws_plans(self, ws_base_url: str, instruments: Sequence[InstrumentInfo]) -> list[WsPlan]:
        url = ws_base_url.rstrip("/") + "/ws/v5/public"
        groups = [list(g) for g in chunks(list(instruments), INSTRUMENTS_PER_CONNECTION)] or [[]]
        plans = []
        for k, group in enumerate(groups):
            args: list[dict[str, str]] = []
            indexes: list[str] = []
            for i in group:
                inst = i.instrument
                args.append({"channel": "funding-rate", "instId": inst})
                args.append({"channel": "mark-price", "instId": inst})
                args.append({"channel": "open-interest", "instId": inst})
                idx = f"{i.base}-{i.quote}" if i.base and i.quote else index_of(inst)
                if idx not in indexes:
                    indexes.append(idx)
            args.extend({"channel": "index-tickers", "instId": idx} for idx in indexes)
            if k == 0:
                # One subscription covers every swap; it shares the connection with mark prices
                # (pushed at least every 10 s), so a quiet liquidation feed never looks dead.
                args.append({"channel": "liquidation-orders", "instType": "SWAP"})
            plans.append(
                WsPlan(
                    stream=label("public", k, len(groups)),
                    url=url,
                    subscribe=tuple(
                        orjson.dumps({"op": "subscribe", "args": list(c)}).decode()
                        for c in chunks(args, ARGS_PER_SUBSCRIBE)
                    ),
                    ping_frame=PING,  # OKX drops a connection after 30 s without traffic
                    ping_interval_s=20.0,
                    silence_timeout_s=30.0,
                    cadence_s=10.0,  # mark-price: every 200 ms on a change, every 10 s at least
                )
            )
        return plans

    def heartbeat_setup(self) -> tuple[str, ...]:
        return ()

    def _typed(self, frame: str | bytes, ctx: FeedContext, strict: bool = True) -> list[Record]:
        """``parse_ws``: the four per-instrument channels, decoded straight into typed rows with the
        decimal strings already converted (see :class:`_FastRow`); any other frame, and a value the
        typed path does not take (outside its domain, NaN and infinities included: the comparisons
        are false), goes to the strict path, which names the field. The fallback is written into the typed
        path itself: one call a push, not two (~5 % of an OKX push)."""
        try:
            # The channel's first letter, where OKX writes it (``{"arg":{"channel":"m...``), picks a
            # decoder of that channel's fields alone (~0.05 us less a push than one of every channel's;
            # its ``arg`` still decoded and checked); any other layout, or a str frame (a one-letter str
            # equals no int), takes the decoder of every channel. A too short frame raises: the strict
            # path takes it ("pong").
            c = frame[19]
            if c == 109:  # m: the most frequent push
                push = _decode_mark_push(frame)
            elif c == 102:  # f
                push = _decode_funding_rate_push(frame)
            elif c == 111:  # o
                push = _decode_open_interest_push(frame)
            elif c == 105:  # i
                push = _decode_index_push(frame)
            elif c == 108:  # l: liquidation-orders (its own rows; rare next to the others: a call)
                return _liquidation_push(frame, ctx)
            else:
                push = _decode_fast_push(frame)
            channel = push.arg.channel
            instruments = ctx.instruments
            # the time bounds once a push, for every channel (ctx.time_bounds() inline: no call)
            clock = ctx.clock
            if clock is None:
                lo, hi = V.STATIC_BOUNDS
            else:
                now = clock()
                lo, hi = now - _PAST_S, now + _FUTURE_S
            out: list[Record] = []
            if channel == "mark-price":
                handles = ctx.handles
                for r in push.data:
                    inst = r.instId
                    # a followed instrument found in the sink's handles when it gave them (the one lookup
                    # of the update: the store writes through the handle, FeedContext.handles), else in
                    # the instruments
                    handle = None
                    if handles is not None:
                        try:  # a subscript (no method call); an id without a handle is the rare case
                            handle = handles[inst]
                        except KeyError:
                            pass
                    if handle is not None or not instruments or inst in instruments:
                        x = r.markPx
                        t = r.ts / 1000.0
                        if x is _ABSENT or not inst or not lo <= t <= hi:  # the price was checked while decoding
                            raise _Invalid  # an absent ts is NaN (/1000): out of bounds too
                        out.append(MarketUpdate(EX, inst, t, x, handle=handle))
                return out
            if channel == "funding-rate":
                settled = ctx.settled
                if settled is not None:
                    # The usual push repeats a funding period whose settlement this stream has passed on
                    # (the memory holds its funding time): the row is decoded without the previous
                    # settlement's fields (prevFundingTime, settFundingRate, settState: ~5 % of the push),
                    # which this push would not pass on, and its times are checked in one chained
                    # comparison (present, in order, within the bounds; an absent one is NaN: false).
                    for r in push.data:
                        inst = r.instId
                        t_set = r.fundingTime
                        # The memory holds followed instruments only (FeedContext drops the others when
                        # the instruments change): the usual row is found by this one lookup, not also
                        # in the instruments (another dict entry and key string: cache misses at 8,000)
                        try:
                            if settled[inst] != t_set:
                                break  # a new funding period: its settlement to pass on
                        except KeyError:
                            if inst not in instruments and instruments:
                                continue  # not followed: skipped
                            break  # the instrument's first push
                        t_set /= 1000.0
                        t_next = r.nextFundingTime / 1000.0
                        et = r.ts / 1000.0
                        # (the instrument id is not empty: the memory holds none that is)
                        if not (lo <= t_set < t_next <= hi and lo <= et <= hi):
                            break  # an unusual row: the general checks
                        interval = t_next - t_set
                        if not _IMIN <= interval <= _IMAX:
                            raise _Invalid
                        # The rates were checked while decoding (V.Rate); an absent one is None (unknown, not
                        # 0). Positional (fastest): the field order is pinned by a test (test_feeds_deribit.py)
                        out.append(
                            FundingUpdate(
                                EX,
                                inst,
                                et,
                                None,
                                None,
                                r.fundingRate,
                                t_set,
                                interval,
                                r.maxFundingRate,
                                r.minFundingRate,
                                None,
                                r.premium,
                            )
                        )
                    else:
                        return out
                # A new funding period (once a period per instrument), an unusual row, or no memory: the
                # frame decoded again with every funding field (its channel is known: ``arg`` not read).
                return _funding_rows(_decode_funding_push(frame).data, instruments, settled, lo, hi)
            if channel == "open-interest":
                a = _ABSENT
                inverse = ctx.inverse  # the inverse ids: the instrument's facts are read only when needed
                for r in push.data:
                    inst = r.instId
                    if inst not in instruments and instruments:
                        continue
                    # :func:`_open_interest` on a typed row, the checks inline (no call a row); what it
                    # does not take raises, and the strict path names it
                    oi = r.oi  # the three sizes were checked while decoding
                    coin: float | None = r.oiCcy
                    usd: float | None = r.oiUsd  # None when absent
                    et = r.ts / 1000.0  # NaN when absent: no time
                    # the usual row (its coin given, a time, a linear swap) in one test; else the cases below
                    usual = coin is not a and oi is not a and inst and lo <= et <= hi  # type: ignore[operator]
                    if usual and inst not in inverse:
                        out.append(
                            OpenInterestUpdate(
                                EX, inst, et, None, None, None, None, None, None, None, None, None, coin, usd
                            )
                        )
                        continue
                    if not inst or oi is a:
                        raise _Invalid
                    if coin is a:
                        coin = None
                    info = instruments.get(inst)
                    if info is not None and info.inverse:
                        if usd is None:
                            usd = oi * info.contract_size  # inverse contracts are worth a fixed number of USD
                            if not usd <= _UMAX:
                                raise _Invalid
                    elif coin is None:
                        if info is None:
                            raise _Invalid
                        coin = oi * info.contract_size
                        if not coin <= _QMAX:
                            raise _Invalid
                    if not lo <= et <= hi:  # type: ignore[operator]
                        if et == et:
                            raise _Invalid
                        et = None
                    # positional (fastest): the field order is pinned by a test (tests/test_feeds_deribit.py)
                    out.append(
                        OpenInterestUpdate(
                            EX, inst, et, None, None, None, None, None, None, None, None, None, coin, usd
                        )
                    )
                return out
            if channel == "index-tickers":
                mapping = self._index_map(instruments)
                for r in push.data:
                    x = r.idxPx
                    if x is _ABSENT or not r.instId:
                        raise _Invalid
                    targets = mapping.get(r.instId, ()) if instruments else (f"{r.instId}-SWAP",)
                    if targets:
                        t = r.ts / 1000.0
                        if not lo <= t <= hi:  # the price was checked while decoding
                            raise _Invalid
                        for inst in targets:
                            out.append(MarketUpdate(EX, inst, t, None, x))  # positional: index_price
                return out
        except FAST_FAILURES:
            pass
        return self._parse_ws_strict(frame, ctx) if strict else UNTYPED

    def _parse_ws_strict(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        if frame == "pong" or frame == b"pong":  # the reply to our ping (the typed path fails on it)
            return []
        try:
            msg = loads(frame)
            arg = msg.get("arg")
            data = msg.get("data")
            if data is None:
                return _event(msg)
            channel = arg["channel"]
            rows = arr(data, "data")
            instruments = ctx.instruments
            tb = ctx.time_bounds()
            if channel == "mark-price":  # the most frequent push: up to 5/s per instrument
                out_m: list[Record] = []
                for r in rows:
                    inst = r["instId"]
                    if not instruments or inst in instruments:
                        out_m.append(_mark(r, inst, tb))
                return out_m
            if channel == "funding-rate":
                out: list[Record] = []
                for r in rows:
                    if not instruments or r["instId"] in instruments:
                        _funding(msgspec.convert(r, _PriceRow), out, tb)
                return out
            if channel == "index-tickers":
                return self._index(rows, instruments, tb)
            if channel == "open-interest":
                return [
                    _open_interest(msgspec.convert(r, _PriceRow), instruments, tb)
                    for r in rows
                    if not instruments or r["instId"] in instruments
                ]
            if channel == "liquidation-orders":
                return _liquidations(rows, instruments, tb)
            if type(channel) is not str:
                raise ParseError(f"channel {channel!r} is not a string")
            return []  # a channel we do not use (tickers...)
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "stream frame", exc) from None

    def _index(
        self, rows: list[Any], instruments: Mapping[str, InstrumentInfo], tb: tuple[float, float]
    ) -> list[Record]:
        """``index-tickers`` rows -> the index price of every swap on that index. Recorded wire
        (ws_public_v5_swap_tardis.jsonl, 2021-12)::

            {"arg":{"channel":"index-tickers","instId":"WNCG-USDT"},"data":[{"instId":"WNCG-USDT",
             "idxPx":"2.1675","open24h":"2.1599","high24h":"2.2499","low24h":"2.1524","sodUtc0":"2.1658",
             "sodUtc8":"2.1641","ts":"1640131290649"}]}
        """
        out: list[Record] = []
        mapping = self._index_map(instruments)
        for r in rows:
            idx = text(r["instId"], "instId")
            targets = mapping.get(idx, ()) if instruments else (f"{idx}-SWAP",)
            if not targets:
                continue
            px, t = _price_ts(r, "idxPx", tb)
            out.extend(MarketUpdate(EX, inst, t, index_price=px) for inst in targets)
        return out

    def _index_map(self, instruments: Mapping[str, InstrumentInfo]) -> dict[str, list[str]]:
        cached = self._index_cache.get(id(instruments))
        if cached is not None and cached[0] is instruments and cached[1] == len(instruments):
            return cached[2]
        mapping: dict[str, list[str]] = {}
        for inst, info in instruments.items():
            if not inst.endswith("-SWAP"):
                continue
            idx = f"{info.base}-{info.quote}" if info.base and info.quote else index_of(inst)
            mapping.setdefault(idx, []).append(inst)
        if len(self._index_cache) >= 64:  # bounded: contexts are few and long-lived
            self._index_cache.clear()
        self._index_cache[id(instruments)] = (instruments, len(instruments), mapping)
        return mapping

    # ---- REST ---------------------------------------------------------------------------------

    def parse_instruments(self, body: bytes) -> list[InstrumentInfo]:
        """``GET /api/v5/public/instruments?instType=SWAP`` -> live swaps with their contract size.

        Recorded wire (rest_instruments_swap_2022-05_excerpt.json, one row of four, trimmed to the
        fields used)::

            {"code":"0","data":[{"ctType":"linear","ctVal":"0.01","ctValCcy":"BTC",
             "instId":"BTC-USDT-SWAP","instType":"SWAP","state":"live","uly":"BTC-USDT"}],"msg":""}
        """
        try:
            out = []
            for s in _data(body, "instruments"):
                if s.get("instType", "SWAP") != "SWAP" or s.get("state", "live") != "live":
                    continue
                inst = text(s["instId"], "instId")
                family = s.get("instFamily") or s.get("uly") or index_of(inst)
                base, _, quote = family.partition("-")
                inverse = s.get("ctType") == "inverse"
                ct_val = num(s["ctVal"], "ctVal")
                if not 0.0 < ct_val <= V.QTY_MAX:
                    raise ParseError(f"{inst}: ctVal {ct_val} is not positive", V.QTY)
                out.append(
                    InstrumentInfo(
                        exchange=EX,
                        instrument=inst,
                        base=base,
                        quote=quote or base_of(EX, inst)[1],
                        contract_size=ct_val,
                        inverse=inverse,
                    )
                )
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "instruments", exc) from None

    def parse_funding_history(self, body: bytes, ctx: FeedContext) -> list[FundingSettlement]:
        """``GET /api/v5/public/funding-rate-history`` -> settlements at the realised rate, oldest first.

        Recorded wire (rest_funding_rate_history_nautilus.json, 2024-01, first row of two)::

            {"code":"0","msg":"","data":[{"instType":"SWAP","instId":"BTC-USDT-SWAP",
             "fundingRate":"0.0001515032","realizedRate":"0.00015","fundingTime":"1704067200000"}]}
        """
        try:
            rows: dict[str, list[tuple[float, float]]] = {}
            tb = ctx.time_bounds()
            for r in _data(body, "funding-rate-history"):
                rate = opt_num(r.get("realizedRate"), "realizedRate")  # what was actually charged
                if rate is None:
                    rate = num(r["fundingRate"], "fundingRate")
                t = ms(r["fundingTime"], "fundingTime", tb)
                rows.setdefault(text(r["instId"], "instId"), []).append((t, V.rate(rate, "realizedRate")))
            return settlements(EX, rows)
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "funding-rate-history", exc) from None

    def parse_open_interest(self, body: bytes, ctx: FeedContext) -> list[MarketUpdate]:
        """``GET /api/v5/public/open-interest?instType=SWAP`` -> open interest per swap.

        Recorded wire (rest_open_interest_cmp.jsonl, 2022-06, first row of two)::

            {"code":"0","data":[{"instId":"BTC-USD-SWAP","instType":"SWAP","oi":"4092973",
             "oiCcy":"13840.048827662696883","ts":"1654348683853"}],"msg":""}
        """
        try:
            tb = ctx.time_bounds()
            return [
                _open_interest(msgspec.convert(r, _PriceRow), ctx.instruments, tb)
                for r in _data(body, "open-interest")
                if not ctx.instruments or r["instId"] in ctx.instruments
            ]
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "open-interest", exc) from None

    def parse_long_short_ratio(
        self, body: bytes, ctx: FeedContext, instrument: str | None = None
    ) -> list[LongShortRatio]:
        """``GET /api/v5/rubik/stat/contracts/long-short-account-ratio-contract?instId=`` -> ratios.

        The body is ``[[ts, ratio], ...]`` without the instrument: pass ``instrument``, or a context
        holding exactly the one instrument that was asked for.
        """
        try:
            rows = _data(body, "long-short-account-ratio-contract")
            if instrument is None:
                if len(ctx.instruments) != 1:
                    raise ParseError("the body names no instrument: pass instrument= or a one-instrument context")
                instrument = next(iter(ctx.instruments))
            out = []
            tb = ctx.time_bounds()
            for row in rows:
                if type(row) is dict:  # some rubik endpoints answer objects instead of arrays
                    t, ratio = row["ts"], row.get("longShortAcctRatio", row.get("ratio"))
                else:
                    t, ratio = row[0], row[1]
                out.append(LongShortRatio(EX, instrument, ms(t, "ts", tb), V.ratio(num(ratio, "ratio"), "ratio")))
            out.sort(key=lambda r: r.event_time)
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "long-short-account-ratio", exc) from None

    def parse_insurance_fund(self, body: bytes, ctx: FeedContext) -> list[InsuranceFund]:
        """``GET /api/v5/public/insurance-fund?instType=SWAP&instFamily=`` -> ``total`` (USD) per family."""
        try:
            out = []
            tb = ctx.time_bounds()
            for r in _data(body, "insurance-fund"):
                details = arr(r.get("details") or [], "details")
                times = [ms(d["ts"], "ts", tb) for d in details if d.get("ts")]
                if not times:
                    continue  # no dated balance row: nothing to report
                pool = r.get("instFamily") or r.get("uly") or r.get("instType") or "all"
                out.append(InsuranceFund(EX, str(pool), max(times), V.usd(num(r["total"], "total"), "total")))
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "insurance-fund", exc) from None


# ---- helpers ----------------------------------------------------------------------------------


def _data(body: bytes, what: str) -> list[Any]:
    msg = obj(loads(body), what)
    code = msg.get("code")
    if code != "0" and code != 0:
        raise ParseError(f"code {code!r}: {msg.get('msg')!r}", V.BAD_SHAPE)
    return arr(msg["data"], "data")


def _event(msg: dict[str, Any]) -> list[Record]:
    """``{"event":"subscribe"|"error"|"notice"|...}`` frames."""
    event = msg.get("event")
    if event is None:
        raise ParseError(f"frame without data or event, keys {sorted(msg)[:6]}")
    if event == "error":
        return [SubscriptionError(EX, f"okx error {msg.get('code')}: {msg.get('msg')}")]
    return []  # subscribe/unsubscribe acks, notice (reconnect comes from the server closing)


# The strict path's rows (orjson-decoded pushes and REST bodies converted field by field): only the
# fields used are declared, every one a string as OKX sends them; the helpers convert and check them.


class _Arg(msgspec.Struct, gc=False):
    # the typed path's channels, decoded to these very strings (no new object a push); another channel
    # fails the decoding and takes the strict path (liquidation-orders, acks' args)
    channel: Literal["mark-price", "index-tickers", "open-interest", "funding-rate"]


class _PriceRow(msgspec.Struct, gc=False):
    instId: str
    ts: str | None = None
    markPx: str | None = None  # mark-price
    idxPx: str | None = None  # index-tickers
    oi: str | None = None  # open-interest
    oiCcy: str | None = None
    oiUsd: str | None = None
    fundingRate: str | None = None  # funding-rate
    fundingTime: str | None = None
    nextFundingTime: str | None = None
    prevFundingTime: str | None = None
    maxFundingRate: str | None = None
    minFundingRate: str | None = None
    premium: str | None = None
    settFundingRate: str | None = None
    settState: str | None = None


# The typed path's rows: msgspec converts the decimal strings to floats while decoding (lax mode),
# which saves a float() call per field. An absent field keeps the default, this very NaN object, and
# is told apart by identity: a sent "NaN" is a new float, fails the domain checks, and the strict path
# names it. The values a record takes as they are (the rates, oiUsd) default to None instead, what the
# record holds for "not in this message" (no test a field): the type still has no None, so a sent null
# fails as before. A type that cannot be converted ("" , "null", a JSON null, true) fails the
# decoding, and the strict path (string rows) handles the frame.
_ABSENT = float("nan")
# bound once: a module global is one dict lookup, ``V.RATE_MAX`` two
_RMAX, _IMIN, _IMAX = V.RATE_MAX, V.INTERVAL_MIN, V.INTERVAL_MAX
_QMAX, _UMAX = V.QTY_MAX, V.USD_MAX
_PAST_S, _FUTURE_S = V.PAST_S, V.FUTURE_S


# Fields in alphabetical order, the order of the recorded mark-price, open-interest and funding-rate
# rows: msgspec tries the field after the last one matched first (funding rows decode ~5 % faster).
# kw_only: the required instId may sit among the optional fields.
class _FastRow(msgspec.Struct, gc=False, kw_only=True):
    # prices, sizes and rates are checked against their domains while decoding (V.Price...): what is
    # outside (NaN and the infinities too) fails it, and the strict path names the field
    fundingRate: V.Rate = None  # type: ignore[assignment]  # passed on as is
    fundingTime: float = _ABSENT
    idxPx: V.Price = _ABSENT
    instId: str
    markPx: V.Price = _ABSENT
    maxFundingRate: V.Rate = None  # type: ignore[assignment]  # passed on as is
    minFundingRate: V.Rate = None  # type: ignore[assignment]  # passed on as is
    nextFundingTime: float = _ABSENT
    oi: V.Holding = _ABSENT
    oiCcy: V.Holding = _ABSENT
    oiUsd: V.Usd = None  # type: ignore[assignment]  # passed on as is
    premium: V.Rate = None  # type: ignore[assignment]  # passed on as is
    ts: float = _ABSENT
    # not the previous settlement's fields (prevFundingTime, settFundingRate, settState): a funding push
    # that needs them is decoded again as a _FundingPush (once a funding period per instrument)


class _FastPush(msgspec.Struct, gc=False):
    arg: _Arg
    data: list[_FastRow]


_decode_fast_push = msgspec.json.Decoder(_FastPush, strict=False).decode


def _channel_decoder(channel: str, fields: tuple[str, ...]) -> Callable[[str | bytes], Any]:
    """A decoder of one channel's pushes: its ``arg`` checked as :class:`_Arg` checks it (this channel
    only), its rows with these fields of :class:`_FastRow` (the very types, domains and defaults)
    alone: fewer fields to match a key against and to fill in."""
    known = {f.name: f for f in msgspec.structs.fields(_FastRow)}
    spec = [(n, known[n].type) if known[n].required else (n, known[n].type, known[n].default) for n in fields]
    name = channel.title().replace("-", "")
    row = msgspec.defstruct(f"_{name}Row", spec, kw_only=True, gc=False)
    arg = msgspec.defstruct(f"_{name}Arg", [("channel", Literal[channel])], gc=False)
    push = msgspec.defstruct(f"_{name}Push", [("arg", arg), ("data", list[row])], gc=False)  # type: ignore[valid-type]
    return msgspec.json.Decoder(push, strict=False).decode


_decode_mark_push = _channel_decoder("mark-price", ("instId", "markPx", "ts"))
_decode_index_push = _channel_decoder("index-tickers", ("idxPx", "instId", "ts"))
_decode_open_interest_push = _channel_decoder("open-interest", ("instId", "oi", "oiCcy", "oiUsd", "ts"))
_decode_funding_rate_push = _channel_decoder(
    "funding-rate",
    ("fundingRate", "fundingTime", "instId", "maxFundingRate", "minFundingRate", "nextFundingTime", "premium", "ts"),
)


class _FundingRow(msgspec.Struct, gc=False, kw_only=True):
    """Every funding field of a funding-rate row (:class:`_FastRow`'s types and defaults)."""

    fundingRate: V.Rate = None  # type: ignore[assignment]  # passed on as is
    fundingTime: float = _ABSENT
    instId: str
    maxFundingRate: V.Rate = None  # type: ignore[assignment]  # passed on as is
    minFundingRate: V.Rate = None  # type: ignore[assignment]  # passed on as is
    nextFundingTime: float = _ABSENT
    premium: V.Rate = None  # type: ignore[assignment]  # passed on as is
    prevFundingTime: float = _ABSENT
    settFundingRate: V.Rate = None  # type: ignore[assignment]  # passed on as is
    settState: str | None = None
    ts: float = _ABSENT


class _FundingPush(msgspec.Struct, gc=False):
    data: list[_FundingRow]  # no ``arg``: decoded once the general decoding has read the channel


_decode_funding_push = msgspec.json.Decoder(_FundingPush, strict=False).decode


def _price_ts(r: dict[str, Any], key: str, tb: tuple[float, float]) -> tuple[float, float]:
    """(price, Unix seconds) of a row; decimal strings take the fast float() path."""
    px = r[key]
    ts = r["ts"]
    try:
        x = float(px) if type(px) is str else num(px, key)
        t = (float(ts) if type(ts) is str else num(ts, "ts")) / 1000.0
    except ValueError as exc:
        raise explain(r, (key, "ts"), exc) from None
    return V.price(x, key), V.timestamp(t, "ts", tb)


def _mark(r: dict[str, Any], inst: Any, tb: tuple[float, float]) -> MarketUpdate:
    """One ``mark-price`` row. Recorded wire (ws_public_v5_swap_tardis.jsonl, 2021-12)::

    {"arg":{"channel":"mark-price","instId":"WNCG-USDT-SWAP"},"data":[{"instId":"WNCG-USDT-SWAP",
     "instType":"SWAP","markPx":"2.1729","ts":"1640131259180"}]}
    """
    if type(inst) is not str or not inst:
        raise ParseError(f"field 'instId': bad instrument {inst!r}")
    px, t = _price_ts(r, "markPx", tb)
    return MarketUpdate(EX, inst, t, px)


def _funding(r: _PriceRow, out: list[Record], tb: tuple[float, float]) -> None:
    """One ``funding-rate`` row -> the current rate (and the settled one, once settled).

    Recorded wire (ws_funding_rate_index_2026_tardis.jsonl, 2026-08; an X-Perp, same schema as SWAP)::

        {"arg":{"channel":"funding-rate","instId":"BTC-USD_UM_XPERP-310404"},"data":[{"formulaType":"withRate",
         "fundingRate":"-0.0004270396398519","fundingTime":"1785888000000","impactValue":"10000.0000000000000000",
         "instId":"BTC-USD_UM_XPERP-310404","instType":"FUTURES","interestRate":"0.0001000000000000",
         "maxFundingRate":"0.00375","method":"current_period","minFundingRate":"-0.00375","nextFundingRate":"",
         "nextFundingTime":"1785916800000","premium":"-0.0008949500017283","prevFundingTime":"1785859200000",
         "settFundingRate":"-0.0001996513270201","settState":"settled","ts":"1785870855692"}]}
    """
    inst = r.instId
    if not inst:
        raise ParseError("field 'instId' is empty")
    # fundingTime is the settlement the current rate applies to; nextFundingTime the one after.
    # settlement times: milliseconds, each within the time bounds (validated after the division)
    t_set = opt_num(r.fundingTime, "fundingTime")
    t_next = opt_num(r.nextFundingTime, "nextFundingTime")
    t_prev = opt_num(r.prevFundingTime, "prevFundingTime")
    if t_set is not None:
        t_set = V.timestamp(t_set / 1000.0, "fundingTime", tb)
    if t_next is not None:
        t_next = V.timestamp(t_next / 1000.0, "nextFundingTime", tb)
    if t_prev is not None:
        t_prev = V.timestamp(t_prev / 1000.0, "prevFundingTime", tb)
    interval = None
    if t_set is not None and t_next is not None and t_next > t_set:
        interval = V.interval(t_next - t_set, "nextFundingTime")
    elif t_set is not None and t_prev is not None and t_set > t_prev:
        interval = V.interval(t_set - t_prev, "prevFundingTime")
    ts = opt_num(r.ts, "ts")
    out.append(
        FundingUpdate(
            EX,
            inst,
            event_time=V.timestamp(ts / 1000.0, "ts", tb) if ts is not None else None,
            # absent in some 2021 pushes: unknown, not 0
            funding_rate=V.opt(V.rate, opt_num(r.fundingRate, "fundingRate"), "fundingRate"),
            next_funding_time=t_set,
            funding_interval_s=interval,
            funding_cap=V.opt(V.rate, opt_num(r.maxFundingRate, "maxFundingRate"), "maxFundingRate"),
            funding_floor=V.opt(V.rate, opt_num(r.minFundingRate, "minFundingRate"), "minFundingRate"),
            premium=V.opt(V.rate, opt_num(r.premium, "premium"), "premium"),
        )
    )
    # Once settled, settFundingRate is what was charged at the previous settlement.
    sett = V.opt(V.rate, opt_num(r.settFundingRate, "settFundingRate"), "settFundingRate")
    if sett is not None and r.settState == "settled" and t_prev is not None:
        out.append(FundingSettlement(EX, inst, t_prev, sett, interval))


class _Invalid(ValueError):
    """A value the typed path does not take: the strict path parses the frame again and names it."""


def _funding_fast(r: _FundingRow, out: list[Record], tb: tuple[float, float]) -> None:
    """:func:`_funding` on a typed row, the domain checks inline, each value once; any value it does
    not take raises, and the strict path names it. An absent field is the _ABSENT object (identity);
    NaN and the infinities fail the chained comparisons."""
    inst = r.instId
    if not inst:
        raise _Invalid
    lo, hi = tb
    a = _ABSENT  # the rates were checked while decoding; the times are checked here against the clock
    v = r.fundingTime
    t_set = None
    if v is not a:
        t_set = v / 1000.0
        if not lo <= t_set <= hi:
            raise _Invalid
    v = r.nextFundingTime
    t_next = None
    if v is not a:
        t_next = v / 1000.0
        if not lo <= t_next <= hi:
            raise _Invalid
    v = r.prevFundingTime
    t_prev = None
    if v is not a:
        t_prev = v / 1000.0
        if not lo <= t_prev <= hi:
            raise _Invalid
    v = r.ts
    et = None
    if v is not a:
        et = v / 1000.0
        if not lo <= et <= hi:
            raise _Invalid
    rate = r.fundingRate  # the rates: None when absent
    cap = r.maxFundingRate
    floor = r.minFundingRate
    premium = r.premium
    sett = r.settFundingRate
    interval = None
    if t_set is not None and t_next is not None and t_next > t_set:
        interval = t_next - t_set
    elif t_set is not None and t_prev is not None and t_set > t_prev:
        interval = t_set - t_prev
    if interval is not None and not _IMIN <= interval <= _IMAX:
        raise _Invalid
    # positional (fastest): the field order is pinned by a test (tests/test_feeds_deribit.py)
    out.append(FundingUpdate(EX, inst, et, None, None, rate, t_set, interval, cap, floor, None, premium))
    if sett is not None and t_prev is not None and r.settState == "settled":
        out.append(FundingSettlement(EX, inst, t_prev, sett, interval))


def _funding_rows(
    rows: list[_FundingRow],
    instruments: Mapping[str, InstrumentInfo],
    settled: dict[str, float] | None,
    lo: float,
    hi: float,
) -> list[Record]:
    """A funding push's rows with every funding field (:class:`_FundingRow`): the current rate, and the
    previous settlement unless ``settled`` (the stream's memory) holds the row's funding time, i.e.
    the stream has passed it on. A settlement passed on is remembered by the funding time it precedes
    once the whole frame is taken (a later row that raises sends the frame to the strict path, which
    passes every settlement on)."""
    out: list[Record] = []
    fresh: list[tuple[str, float]] | None = None
    for r in rows:
        inst = r.instId
        if inst not in instruments and instruments:
            continue
        # The usual row, checked in one chained comparison: the three settlement times and the event
        # time present (an absent one is NaN: every comparison false), in their order and within the
        # bounds. Anything else takes _funding_fast, the general case (which passes every settlement on).
        t_set = r.fundingTime / 1000.0
        t_next = r.nextFundingTime / 1000.0
        t_prev = r.prevFundingTime / 1000.0
        et = r.ts / 1000.0
        if not (lo <= t_prev < t_set < t_next <= hi and lo <= et <= hi and inst):
            _funding_fast(r, out, (lo, hi))
            continue
        interval = t_next - t_set
        if not _IMIN <= interval <= _IMAX:
            raise _Invalid
        # the rates were checked while decoding (V.Rate), None when absent
        out.append(
            FundingUpdate(
                EX,
                inst,
                et,
                None,
                None,
                r.fundingRate,
                t_set,
                interval,
                r.maxFundingRate,
                r.minFundingRate,
                None,
                r.premium,
            )
        )
        if settled is not None and settled.get(inst) == r.fundingTime:
            continue  # passed on already (a row the usual path did not take)
        sett = r.settFundingRate
        if sett is not None and r.settState == "settled":
            out.append(FundingSettlement(EX, inst, t_prev, sett, interval))
            if settled is not None:
                if fresh is None:
                    fresh = []
                fresh.append((inst, r.fundingTime))
    if fresh is not None:
        # The memory's keys are the instruments' own id strings (the store's lookup compares with the same
        # ones) and its times one object per funding time (the instruments that settle together share it):
        # a repeat's lookup reads no string and no float of its own (two cache misses a push at thousands)
        for inst, t in fresh:
            info = instruments.get(inst)
            if info is not None and info.instrument == inst:
                inst = info.instrument
            if len(_TIMES) > _TIMES_KEPT:
                _TIMES.clear()
            settled[inst] = _TIMES.setdefault(t, t)  # type: ignore[index]
    return out


# funding time (ms) -> one float object for it, for the settlement memories (see _funding_rows); a few
# distinct times are current at once (one per interval length), so a small table, emptied when it grows
_TIMES: dict[float, float] = {}
_TIMES_KEPT = 64


def _open_interest(
    r: _PriceRow, instruments: Mapping[str, InstrumentInfo], tb: tuple[float, float]
) -> OpenInterestUpdate:
    """One ``open-interest`` row (stream push or REST body). Recorded wire (ws_public_v5_swap_tardis.jsonl)::

    {"arg":{"channel":"open-interest","instId":"WNCG-USDT-SWAP"},"data":[{"instId":"WNCG-USDT-SWAP",
     "instType":"SWAP","oi":"644195","oiCcy":"644195","ts":"1640131258756"}]}
    """
    inst = r.instId
    if not inst:
        raise ParseError("field 'instId' is empty")
    if r.oi is None:
        raise ParseError("missing field 'oi'", V.MISSING_FIELD)
    oi = V.holding(num(r.oi, "oi"), "oi")  # contracts
    coin = V.opt(V.holding, opt_num(r.oiCcy, "oiCcy"), "oiCcy")
    usd = V.opt(V.usd, opt_num(r.oiUsd, "oiUsd"), "oiUsd")  # only in pushes since 2023
    info = instruments.get(inst)
    if info is not None and info.inverse:
        if usd is None:
            usd = V.usd(oi * info.contract_size, "oi")  # inverse contracts are worth a fixed number of USD
    elif coin is None:
        if info is None:
            raise ParseError(f"{inst}: oi in contracts without oiCcy, and ctVal unknown")
        coin = V.holding(oi * info.contract_size, "oi")
    ts = r.ts
    return OpenInterestUpdate(
        EX, inst, ms(ts, "ts", tb) if ts else None, open_interest_base=coin, open_interest_usd=usd
    )


def _liquidations(rows: list[Any], instruments: Mapping[str, InstrumentInfo], tb: tuple[float, float]) -> list[Record]:
    """``liquidation-orders`` rows. Recorded wire (ws_liquidation_orders_tardis.jsonl, 2023-03, FUTURES;
    SWAP rows have the same schema)::

        {"arg":{"channel":"liquidation-orders","instType":"FUTURES"},"data":[{"details":[{"bkLoss":"0",
         "bkPx":"0.55205","ccy":"","posSide":"short","side":"buy","sz":"39","ts":"1680173247614"}],
         "instFamily":"XRP-USD","instId":"XRP-USD-230929","instType":"FUTURES","uly":"XRP-USD"}]}
    """
    out: list[Record] = []
    for r in rows:
        inst = text(r["instId"], "instId")
        info = instruments.get(inst)
        if info is None:
            continue  # not followed, or contract size unknown: sz cannot be turned into coin
        for d in arr(r["details"], "details"):
            try:
                _liquidation(d, inst, info, tb, out)
            except PARSE_FAILURES as exc:  # one bad detail: the rest of the batch counts
                err = parse_error(EX, "liquidation", exc)
                out.append(Rejected(EX, err.reason, str(err)))
    return out


def _liquidation(d: Any, inst: str, info: InstrumentInfo, tb: tuple[float, float], out: list[Record]) -> None:
    side = _POS_SIDE.get(d.get("posSide", "net"))
    if side is None:
        side = _NET_SIDE.get(d["side"])
        if side is None:
            raise ParseError(f"unknown side {d['side']!r} / posSide {d.get('posSide')!r}")
    contracts = V.qty(num(d["sz"], "sz"), "sz")
    price = V.price(num(d["bkPx"], "bkPx"), "bkPx")  # bankruptcy price
    if info.inverse:
        usd = contracts * info.contract_size
        qty = usd / price
    else:
        qty = contracts * info.contract_size
        usd = qty * price
    out.append(Liquidation(EX, inst, ms(d["ts"], "ts", tb), side, price, V.qty(qty, "sz"), V.usd(usd, "sz")))


# liquidation-orders on the typed path: the detail's fields in OKX's (alphabetical) order, the size and
# the bankruptcy price checked while decoding; the sides decode as these very strings and another value
# fails the decoding (the strict path then names it). kw_only: the required fields sit among optional ones.
class _LiqDetail(msgspec.Struct, gc=False, kw_only=True):
    bkPx: V.Price
    posSide: Literal["long", "short", "net"] = "net"
    side: Literal["buy", "sell"] | None = None
    sz: V.Qty
    ts: float


class _LiqRow(msgspec.Struct, gc=False):
    details: list[_LiqDetail]
    instId: str


class _LiqArg(msgspec.Struct, gc=False):
    channel: Literal["liquidation-orders"]


class _LiqPush(msgspec.Struct, gc=False):
    arg: _LiqArg
    data: list[_LiqRow]


_decode_liq_push = msgspec.json.Decoder(_LiqPush, strict=False).decode


def _liquidation_push(frame: str | bytes, ctx: FeedContext) -> list[Record]:
    """:func:`_liquidations` on typed rows, the same rules (an unfollowed instrument's rows are skipped:
    no contract size). Any doubt raises, and the strict path parses the push again, rejecting a bad
    detail alone."""
    push = _decode_liq_push(frame)
    instruments = ctx.instruments
    lo, hi = ctx.time_bounds()
    out: list[Record] = []
    for r in push.data:
        inst = r.instId
        info = instruments.get(inst)
        if info is None:
            if not inst:
                raise _Invalid  # the strict path names the empty id
            continue
        cs = info.contract_size
        for d in r.details:
            ps = d.posSide
            side = _NET_SIDE[d.side] if ps == "net" else _POS_SIDE[ps]  # type: ignore[index]  # None: KeyError
            price = d.bkPx
            if info.inverse:
                usd = d.sz * cs
                qty = usd / price
            else:
                qty = d.sz * cs
                usd = qty * price
            at = d.ts / 1000.0  # NaN (absent) is refused: the field is required
            if not (0.0 < qty <= _QMAX and 0.0 <= usd <= _UMAX and lo <= at <= hi):
                raise _Invalid
            out.append(Liquidation(EX, inst, at, side, price, qty, usd))
    return out


_fast = typed_only(OkxFeed())  # the typed path alone, for the tests
