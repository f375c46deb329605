"""Exchange price and open-interest history (REST): pure parsers, bytes in, typed records out.

Mark-price, index-price and premium-index candles (:class:`~exporter.model.Candle`) and open-interest
history (:class:`~exporter.model.OpenInterestPoint`) of the four exchanges. Used for the backfill of
the factor signals (OI change, realised volatility), the historical stress of positions and the
anchor regression. Each parser checks every value as :mod:`exporter.feeds.validate` does (prices in
the price domain, a premium in the rate domain, USD amounts, timestamps within ``bounds``) and raises
:class:`~exporter.model.ParseError` for a body it cannot trust; the REST layer counts it. Candles come
back oldest first whatever order the exchange sends. Sources of every shape: docs/history.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from exporter.feeds import PARSE_FAILURES, arr, jnum, loads, ms, num, obj, parse_error, text
from exporter.feeds import validate as V
from exporter.model import Candle, Exchange, OpenInterestPoint, ParseError

CandleKind = Literal["mark", "index", "premium"]
KINDS: tuple[CandleKind, ...] = ("mark", "index", "premium")


def _value(kind: str, x: float, key: str) -> float:
    """A candle value in its domain: a premium is a fraction (rate domain), the others prices."""
    return V.rate(x, key) if kind == "premium" else V.price(x, key)


def _candle(kind: str, t: float, o: float, h: float, lo: float, c: float) -> Candle:
    # Each value in its domain; the order low <= open, close <= high is not required: Bybit's own
    # documented premium-index rows break it (open below low), so a check would drop real data.
    o, h, lo, c = (_value(kind, x, k) for x, k in ((o, "open"), (h, "high"), (lo, "low"), (c, "close")))
    return Candle(t, o, h, lo, c)


def _sorted(candles: list[Candle]) -> list[Candle]:
    """Oldest first, one candle per open time (a page boundary can repeat a row)."""
    by_time = {c.open_time: c for c in candles}
    return [by_time[t] for t in sorted(by_time)]


# ---- Binance ------------------------------------------------------------------------------------


def binance_klines(body: bytes, kind: str, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> list[Candle]:
    """``GET /fapi/v1/markPriceKlines`` / ``indexPriceKlines`` / ``premiumIndexKlines`` -> candles.

    Documented wire (rows of 12: open time, open, high, low, close, ignore, close time, ignore,
    count of basic data, ignore x3), e.g. the premium-index example of the documentation::

        [[1691603820000,"-0.00042931","-0.00023641","-0.00059406","-0.00043659","0",1691603879999,"0",12,"0","0","0"]]

    and an index-price row (5 m)::

        [1616340600000,"57366.98431599","57429.73139441","57284.92735200","57284.92735200","0",1616340899999,"0",300,"0","0","0"]
    """
    try:
        out = []
        for row in arr(loads(body), "klines"):
            r = arr(row, "kline")
            t = ms(r[0], "openTime", bounds)
            out.append(_candle(kind, t, num(r[1], "open"), num(r[2], "high"), num(r[3], "low"), num(r[4], "close")))
        return _sorted(out)
    except PARSE_FAILURES as exc:
        raise parse_error(Exchange.BINANCE, f"{kind} klines", exc) from None


def binance_open_interest_hist(body: bytes, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> list[OpenInterestPoint]:
    """``GET /futures/data/openInterestHist`` -> USD open interest (``sumOpenInterestValue``), oldest first.

    Documented wire (``timestamp`` a string before SDK 13.0.0, an integer after: both accepted)::

        [{"symbol":"BTCUSDT","sumOpenInterest":"34085.00000000","sumOpenInterestValue":"1927265695.27131325","timestamp":1616438700000}]
    """
    try:
        pts = {}
        for row in arr(loads(body), "openInterestHist"):
            r = obj(row, "openInterestHist row")
            t = ms(r["timestamp"], "timestamp", bounds)
            pts[t] = V.usd(num(r["sumOpenInterestValue"], "sumOpenInterestValue"), "sumOpenInterestValue")
        return [OpenInterestPoint(t, pts[t]) for t in sorted(pts)]
    except PARSE_FAILURES as exc:
        raise parse_error(Exchange.BINANCE, "openInterestHist", exc) from None


# ---- Bybit --------------------------------------------------------------------------------------


def _bybit_result(body: bytes, what: str) -> dict[str, Any]:
    msg = obj(loads(body), what)
    code = msg.get("retCode")
    if code != 0:
        raise ParseError(f"retCode {code!r}: {msg.get('retMsg')!r}", V.BAD_SHAPE)
    return obj(msg["result"], f"{what} result")


def bybit_klines(body: bytes, kind: str, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> list[Candle]:
    """``GET /v5/market/mark-price-kline`` / ``index-price-kline`` / ``premium-index-price-kline`` -> candles.

    Documented wire (``list`` newest first; rows of start time, open, high, low, close)::

        {"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSDT","category":"linear",
         "list":[["1670608800000","17164.16","17164.16","17121.5","17131.64"]]},"retExtInfo":{},"time":1672026361839}
    """
    try:
        res = _bybit_result(body, f"{kind} kline")
        out = []
        for row in arr(res["list"], "list"):
            r = arr(row, "kline")
            t = ms(r[0], "startTime", bounds)
            out.append(_candle(kind, t, num(r[1], "open"), num(r[2], "high"), num(r[3], "low"), num(r[4], "close")))
        return _sorted(out)
    except PARSE_FAILURES as exc:
        raise parse_error(Exchange.BYBIT, f"{kind} kline", exc) from None


def bybit_open_interest(
    body: bytes,
    inverse: bool,
    marks: Sequence[Candle] = (),
    bounds: tuple[float, float] = V.STATIC_BOUNDS,
) -> tuple[list[OpenInterestPoint], str]:
    """``GET /v5/market/open-interest`` (with ``intervalTime``) -> (USD points oldest first, next cursor).

    ``openInterest`` is the sum of both sides (since 2023-11): the single side is ``singleOpenInterest``
    where given (2026-06), else half of it. In base coin for linear contracts, USD for inverse ones; a
    linear point is converted with the mark at its time (the close of the latest candle opened before
    it, else the open of the one opening then): a point no mark covers is left out, never guessed.
    Documented wire (inverse example: USD)::

        {"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSD","category":"inverse","list":[
         {"openInterest":"461134384.00000000","timestamp":"1669571400000"},
         {"openInterest":"461134292.00000000","timestamp":"1669571100000"}],"nextPageCursor":""},
         "retExtInfo":{},"time":1672053548579}
    """
    try:
        res = _bybit_result(body, "open-interest")
        ordered = sorted(marks, key=lambda c: c.open_time)
        pts: dict[float, float] = {}
        for row in arr(res["list"], "list"):
            r = obj(row, "open-interest row")
            t = ms(r["timestamp"], "timestamp", bounds)
            # the single side where Bybit gives it, else half "the sum of both sides" (as the feed does)
            single = r.get("singleOpenInterest")
            raw = (
                num(single, "singleOpenInterest")
                if single not in (None, "")
                else num(r["openInterest"], "openInterest") / 2
            )
            oi = V.holding(raw, "openInterest")
            if inverse:
                pts[t] = V.usd(oi, "openInterest")
                continue
            price = _price_at(ordered, t)
            if price is not None:
                pts[t] = V.usd(oi * price, "openInterest")
        cursor = res.get("nextPageCursor")
        return [OpenInterestPoint(t, pts[t]) for t in sorted(pts)], cursor if isinstance(cursor, str) else ""
    except PARSE_FAILURES as exc:
        raise parse_error(Exchange.BYBIT, "open-interest", exc) from None


def _price_at(candles: Sequence[Candle], t: float) -> float | None:
    """The mark at time ``t`` from candles sorted by open time (see :func:`bybit_open_interest`): the
    close of the latest candle that opened before ``t``, else the open of the one opening at ``t``."""
    best: float | None = None
    for c in candles:
        if c.open_time < t:
            best = c.close
        elif c.open_time == t and best is None:
            return c.open
        else:
            break
    return best


# ---- OKX ----------------------------------------------------------------------------------------


def _okx_data(body: bytes, what: str) -> list[Any]:
    msg = obj(loads(body), what)
    code = msg.get("code")
    if code != "0":
        raise ParseError(f"code {code!r}: {msg.get('msg')!r}", V.BAD_SHAPE)
    return arr(msg["data"], f"{what} data")


def okx_candles(body: bytes, kind: str, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> list[Candle]:
    """``GET /api/v5/market/mark-price-candles`` / ``index-candles`` -> candles (newest first on the wire).

    Documented shape: rows ``[ts, o, h, l, c, confirm]`` (``confirm`` "0" while the candle is open)::

        {"code":"0","msg":"","data":[["1597026383085","3.721","3.743","3.677","3.708","1"]]}
    """
    try:
        out = []
        for row in _okx_data(body, f"{kind} candles"):
            r = arr(row, "candle")
            t = ms(r[0], "ts", bounds)
            out.append(_candle(kind, t, num(r[1], "o"), num(r[2], "h"), num(r[3], "l"), num(r[4], "c")))
        return _sorted(out)
    except PARSE_FAILURES as exc:
        raise parse_error(Exchange.OKX, f"{kind} candles", exc) from None


def okx_premium_history(body: bytes, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> list[Candle]:
    """``GET /api/v5/public/premium-history`` -> one flat candle per sample (open = high = low = close).

    OKX publishes premium *samples*, not candles; the REST layer buckets them into candles of the
    asked interval. Documented wire::

        {"code":"0","data":[{"instId":"BTC-USDT-SWAP","premium":"0.0000578896878167","ts":"1713925924000"}],"msg":""}
    """
    try:
        out = []
        for row in _okx_data(body, "premium-history"):
            r = obj(row, "premium-history row")
            text(r["instId"], "instId")
            t = ms(r["ts"], "ts", bounds)
            p = num(r["premium"], "premium")
            out.append(_candle("premium", t, p, p, p, p))
        return _sorted(out)
    except PARSE_FAILURES as exc:
        raise parse_error(Exchange.OKX, "premium-history", exc) from None


def okx_open_interest_history(body: bytes, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> list[OpenInterestPoint]:
    """``GET /api/v5/rubik/stat/contracts/open-interest-history`` -> USD points (``oiUsd``), oldest first.

    Documented shape: rows ``[ts, oi (contracts), oiCcy (coin), oiUsd]``, newest first, e.g.::

        {"code":"0","msg":"","data":[["1701417600000","731377.57500501","7313.7757500501","310251236.12"]]}
    """
    try:
        pts = {}
        for row in _okx_data(body, "open-interest-history"):
            r = arr(row, "open-interest-history row")
            t = ms(r[0], "ts", bounds)
            pts[t] = V.usd(num(r[3], "oiUsd"), "oiUsd")
        return [OpenInterestPoint(t, pts[t]) for t in sorted(pts)]
    except PARSE_FAILURES as exc:
        raise parse_error(Exchange.OKX, "open-interest-history", exc) from None


# ---- Deribit ------------------------------------------------------------------------------------


def deribit_chart(body: bytes, bounds: tuple[float, float] = V.STATIC_BOUNDS) -> list[Candle]:
    """``GET /api/v2/public/get_tradingview_chart_data`` -> candles of the instrument's *trade* price.

    Deribit publishes no mark-price history for perpetuals (``public/get_mark_price_history`` covers
    a subset of options only), so these stand in for the mark (docs/history.md says so). Documented
    shape (parallel arrays; ``status`` "ok" or "no_data")::

        {"jsonrpc":"2.0","id":1,"result":{"status":"ok","ticks":[1554373800000,1554375600000],
         "open":[4963.42,4986.29],"high":[5014.42,4994.99],"low":[4728.94,4957.25],
         "close":[4986.29,4963.42],"volume":[19.0,20.1],"cost":[94330.0,100000.0]}}
    """
    try:
        msg = obj(loads(body), "get_tradingview_chart_data")
        if "error" in msg:
            raise ParseError(f"error {msg['error']!r}", V.BAD_SHAPE)
        res = obj(msg["result"], "result")
        if res.get("status") == "no_data":
            return []
        cols = [arr(res[k], k) for k in ("ticks", "open", "high", "low", "close")]
        if len({len(c) for c in cols}) != 1:
            raise ParseError("ticks/open/high/low/close of different lengths", V.BAD_SHAPE)
        out = []
        for t, o, h, lo, c in zip(*cols, strict=True):
            tt = V.timestamp(jnum(t, "ticks") / 1000.0, "ticks", bounds)
            out.append(_candle("mark", tt, jnum(o, "open"), jnum(h, "high"), jnum(lo, "low"), jnum(c, "close")))
        return _sorted(out)
    except PARSE_FAILURES as exc:
        raise parse_error(Exchange.DERIBIT, "tradingview chart", exc) from None


def bucket(candles: Sequence[Candle], interval_s: float) -> list[Candle]:
    """Candles (or flat samples) merged into candles of ``interval_s`` aligned on the epoch:
    first open, highest high, lowest low, last close of each bucket. Input oldest first."""
    out: list[Candle] = []
    cur: list[float] | None = None
    for c in candles:
        t = c.open_time // interval_s * interval_s
        if cur is not None and cur[0] == t:
            cur[2] = max(cur[2], c.high)
            cur[3] = min(cur[3], c.low)
            cur[4] = c.close
            continue
        if cur is not None:
            out.append(Candle(*cur))
        cur = [t, c.open, c.high, c.low, c.close]
    if cur is not None:
        out.append(Candle(*cur))
    return out
