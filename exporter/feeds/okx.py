"""OKX v5 SWAP: funding-rate, mark-price, index-tickers, open-interest, liquidation-orders; REST bodies.

Reference: exchanges.md §4. Numbers arrive as decimal strings, times in milliseconds, sizes in
contracts (``ctVal`` coin per contract for linear swaps, USD per contract for inverse ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import orjson

from exporter.feeds import (
    FAST_FAILURES,
    PARSE_FAILURES,
    arr,
    chunks,
    explain,
    label,
    loads,
    ms,
    not_finite,
    num,
    obj,
    opt_num,
    parse_error,
    settlements,
    text,
)
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
                )
            )
        return plans

    def heartbeat_setup(self) -> tuple[str, ...]:
        return ()

    def parse_ws(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        if frame == "pong" or frame == b"pong":
            return []
        if self.fast:
            try:
                out = self._fast(frame, ctx.instruments)
            except FAST_FAILURES:
                out = None  # not the usual shape: the strict path decides (and names the problem)
            if out is not None:
                return out
        return self._parse_ws_strict(frame, ctx)

    def _fast(self, frame: str | bytes, instruments: Mapping[str, InstrumentInfo]) -> list[Record] | None:
        """The four per-instrument channels, decoded straight into typed rows."""
        push = _decode_price_push(frame)
        channel = push.arg.channel
        out: list[Record] = []
        if channel == "mark-price":
            for r in push.data:
                inst = r.instId
                if not instruments or inst in instruments:
                    px = r.markPx
                    ts = r.ts
                    if px is None or ts is None or not inst:
                        return None
                    x, t = float(px), float(ts) / 1000.0
                    if x - x or t - t:  # NaN/inf: let the strict path name the field
                        return None
                    out.append(MarketUpdate(EX, inst, t, x))
            return out
        if channel == "index-tickers":
            mapping = self._index_map(instruments)
            for r in push.data:
                px = r.idxPx
                ts = r.ts
                if px is None or ts is None or not r.instId:
                    return None
                targets = mapping.get(r.instId, ()) if instruments else (f"{r.instId}-SWAP",)
                if targets:
                    x, t = float(px), float(ts) / 1000.0
                    if x - x or t - t:
                        return None
                    for inst in targets:
                        out.append(MarketUpdate(EX, inst, t, None, x))  # positional: index_price
            return out
        if channel == "open-interest":
            for r in push.data:
                if not instruments or r.instId in instruments:
                    out.append(_open_interest(r, instruments))
            return out
        if channel == "funding-rate":
            for r in push.data:
                if not instruments or r.instId in instruments:
                    _funding(r, out)
            return out
        return None

    def _parse_ws_strict(self, frame: str | bytes, ctx: FeedContext) -> list[Record]:
        try:
            msg = loads(frame)
            arg = msg.get("arg")
            data = msg.get("data")
            if data is None:
                return _event(msg)
            channel = arg["channel"]
            rows = arr(data, "data")
            instruments = ctx.instruments
            if channel == "mark-price":  # the most frequent push: up to 5/s per instrument
                out_m: list[Record] = []
                for r in rows:
                    inst = r["instId"]
                    if not instruments or inst in instruments:
                        out_m.append(_mark(r, inst))
                return out_m
            if channel == "funding-rate":
                out: list[Record] = []
                for r in rows:
                    if not instruments or r["instId"] in instruments:
                        _funding(msgspec.convert(r, _PriceRow), out)
                return out
            if channel == "index-tickers":
                return self._index(rows, instruments)
            if channel == "open-interest":
                return [
                    _open_interest(msgspec.convert(r, _PriceRow), instruments)
                    for r in rows
                    if not instruments or r["instId"] in instruments
                ]
            if channel == "liquidation-orders":
                return _liquidations(rows, instruments)
            if type(channel) is not str:
                raise ParseError(f"channel {channel!r} is not a string")
            return []  # a channel we do not use (tickers...)
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "stream frame", exc) from None

    def _index(self, rows: list[Any], instruments: Mapping[str, InstrumentInfo]) -> list[Record]:
        out: list[Record] = []
        mapping = self._index_map(instruments)
        for r in rows:
            idx = text(r["instId"], "instId")
            targets = mapping.get(idx, ()) if instruments else (f"{idx}-SWAP",)
            if not targets:
                continue
            px, t = _price_ts(r, "idxPx")
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
        """``GET /api/v5/public/instruments?instType=SWAP`` -> live swaps with their contract size."""
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
                if ct_val <= 0:
                    raise ParseError(f"{inst}: ctVal {ct_val} is not positive")
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
        """``GET /api/v5/public/funding-rate-history`` -> settlements at the realised rate, oldest first."""
        try:
            rows: dict[str, list[tuple[float, float]]] = {}
            for r in _data(body, "funding-rate-history"):
                rate = opt_num(r.get("realizedRate"), "realizedRate")  # what was actually charged
                if rate is None:
                    rate = num(r["fundingRate"], "fundingRate")
                t = ms(r["fundingTime"], "fundingTime")
                rows.setdefault(text(r["instId"], "instId"), []).append((t, rate))
            return settlements(EX, rows)
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "funding-rate-history", exc) from None

    def parse_open_interest(self, body: bytes, ctx: FeedContext) -> list[MarketUpdate]:
        """``GET /api/v5/public/open-interest?instType=SWAP`` -> open interest per swap."""
        try:
            return [
                _open_interest(msgspec.convert(r, _PriceRow), ctx.instruments)
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
            for row in rows:
                if type(row) is dict:  # some rubik endpoints answer objects instead of arrays
                    t, ratio = row["ts"], row.get("longShortAcctRatio", row.get("ratio"))
                else:
                    t, ratio = row[0], row[1]
                out.append(LongShortRatio(EX, instrument, ms(t, "ts"), num(ratio, "ratio")))
            out.sort(key=lambda r: r.event_time)
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "long-short-account-ratio", exc) from None

    def parse_insurance_fund(self, body: bytes, ctx: FeedContext) -> list[InsuranceFund]:
        """``GET /api/v5/public/insurance-fund?instType=SWAP&instFamily=`` -> ``total`` (USD) per family."""
        try:
            out = []
            for r in _data(body, "insurance-fund"):
                details = arr(r.get("details") or [], "details")
                times = [ms(d["ts"], "ts") for d in details if d.get("ts")]
                if not times:
                    continue  # no dated balance row: nothing to report
                pool = r.get("instFamily") or r.get("uly") or r.get("instType") or "all"
                out.append(InsuranceFund(EX, str(pool), max(times), num(r["total"], "total")))
            return out
        except PARSE_FAILURES as exc:
            raise parse_error(EX, "insurance-fund", exc) from None


# ---- helpers ----------------------------------------------------------------------------------


def _data(body: bytes, what: str) -> list[Any]:
    msg = obj(loads(body), what)
    code = msg.get("code")
    if code != "0" and code != 0:
        raise ParseError(f"code {code!r}: {msg.get('msg')!r}")
    return arr(msg["data"], "data")


def _event(msg: dict[str, Any]) -> list[Record]:
    """``{"event":"subscribe"|"error"|"notice"|...}`` frames."""
    event = msg.get("event")
    if event is None:
        raise ParseError(f"frame without data or event, keys {sorted(msg)[:6]}")
    if event == "error":
        return [SubscriptionError(EX, f"okx error {msg.get('code')}: {msg.get('msg')}")]
    return []  # subscribe/unsubscribe acks, notice (reconnect comes from the server closing)


# Price pushes as typed rows: only the fields used are declared, and a value that is not a string
# (OKX sends every number as a string) fails the decoding, so the strict path runs.


class _Arg(msgspec.Struct, gc=False):
    channel: str


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


class _PricePush(msgspec.Struct, gc=False):
    arg: _Arg
    data: list[_PriceRow]


_decode_price_push = msgspec.json.Decoder(_PricePush).decode


def _price_ts(r: dict[str, Any], key: str) -> tuple[float, float]:
    """(price, Unix seconds) of a row; decimal strings take the fast float() path."""
    px = r[key]
    ts = r["ts"]
    try:
        x = float(px) if type(px) is str else num(px, key)
        t = (float(ts) if type(ts) is str else num(ts, "ts")) / 1000.0
    except ValueError as exc:
        raise explain(r, (key, "ts"), exc) from None
    if x - x:
        raise not_finite(key, px)
    if t - t:
        raise not_finite("ts", ts)
    return x, t


def _mark(r: dict[str, Any], inst: Any) -> MarketUpdate:
    if type(inst) is not str or not inst:
        raise ParseError(f"field 'instId': bad instrument {inst!r}")
    px, t = _price_ts(r, "markPx")
    return MarketUpdate(EX, inst, t, px)


def _funding(r: _PriceRow, out: list[Record]) -> None:
    inst = r.instId
    if not inst:
        raise ParseError("field 'instId' is empty")
    # fundingTime is the settlement the current rate applies to; nextFundingTime the one after.
    t_set = opt_num(r.fundingTime, "fundingTime")
    t_next = opt_num(r.nextFundingTime, "nextFundingTime")
    t_prev = opt_num(r.prevFundingTime, "prevFundingTime")
    interval = None
    if t_set is not None and t_next is not None and t_next > t_set:
        interval = (t_next - t_set) / 1000.0
    elif t_set is not None and t_prev is not None and t_set > t_prev:
        interval = (t_set - t_prev) / 1000.0
    ts = opt_num(r.ts, "ts")
    out.append(
        MarketUpdate(
            EX,
            inst,
            event_time=ts / 1000.0 if ts is not None else None,
            funding_rate=opt_num(r.fundingRate, "fundingRate"),  # absent in some 2021 pushes: unknown, not 0
            next_funding_time=t_set / 1000.0 if t_set is not None else None,
            funding_interval_s=interval,
            funding_cap=opt_num(r.maxFundingRate, "maxFundingRate"),
            funding_floor=opt_num(r.minFundingRate, "minFundingRate"),
            premium=opt_num(r.premium, "premium"),
        )
    )
    # Once settled, settFundingRate is what was charged at the previous settlement.
    sett = opt_num(r.settFundingRate, "settFundingRate")
    if sett is not None and r.settState == "settled" and t_prev is not None:
        out.append(FundingSettlement(EX, inst, t_prev / 1000.0, sett, interval))


def _open_interest(r: _PriceRow, instruments: Mapping[str, InstrumentInfo]) -> MarketUpdate:
    inst = r.instId
    if not inst:
        raise ParseError("field 'instId' is empty")
    if r.oi is None:
        raise ParseError("missing field 'oi'")
    oi = num(r.oi, "oi")  # contracts
    coin = opt_num(r.oiCcy, "oiCcy")
    usd = opt_num(r.oiUsd, "oiUsd")  # only in pushes since 2023
    info = instruments.get(inst)
    if info is not None and info.inverse:
        if usd is None:
            usd = oi * info.contract_size  # inverse contracts are worth a fixed number of USD
    elif coin is None:
        if info is None:
            raise ParseError(f"{inst}: oi in contracts without oiCcy, and ctVal unknown")
        coin = oi * info.contract_size
    ts = r.ts
    return MarketUpdate(EX, inst, ms(ts, "ts") if ts else None, open_interest_base=coin, open_interest_usd=usd)


def _liquidations(rows: list[Any], instruments: Mapping[str, InstrumentInfo]) -> list[Record]:
    out: list[Record] = []
    for r in rows:
        inst = text(r["instId"], "instId")
        info = instruments.get(inst)
        if info is None:
            continue  # not followed, or contract size unknown: sz cannot be turned into coin
        for d in arr(r["details"], "details"):
            side = _POS_SIDE.get(d.get("posSide", "net"))
            if side is None:
                side = _NET_SIDE.get(d["side"])
                if side is None:
                    raise ParseError(f"unknown side {d['side']!r} / posSide {d.get('posSide')!r}")
            contracts = num(d["sz"], "sz")
            price = num(d["bkPx"], "bkPx")  # bankruptcy price
            if contracts <= 0 or price <= 0:
                raise ParseError(f"non-positive sz {contracts} or bkPx {price}")
            if info.inverse:
                usd = contracts * info.contract_size
                qty = usd / price
            else:
                qty = contracts * info.contract_size
                usd = qty * price
            out.append(Liquidation(EX, inst, ms(d["ts"], "ts"), side, price, qty, usd))
    return out
