"""Side by side with cryptofeed 2.4 on the same real frames (issue 10): cost per frame, per frame kind.

For every frame kind both handle, one process measures, interleaved (repeats alternate between the
three variants, so each sees the same noisy machine), medians of CPU time per frame:

- ``ours``: the exporter's path for one frame: ``feed.parse_ws`` (strict validation included) then
  ``MarketState.apply_many``, with the context's clock and ``received_at`` as the connection passes
  them, after ``gc.freeze()`` as the exporter does once started;
- ``cf no-op``: cryptofeed's exchange class ``message_handler`` (its JSON decoding with Decimal,
  symbol normalisation, its typed objects) with no-op async callbacks on the data types the
  exporter publishes (funding, open interest, index, liquidations);
- ``cf gauge``: the same with callbacks that set labelled ``prometheus_client`` Gauges, what a
  cryptofeed user writes to export (funding: rate and mark; open interest; index; liquidation notional).

The handlers are coroutines that never suspend (their callbacks are async and do not await I/O):
each is driven with ``send(None)``, so no event-loop overhead is counted on either side.

Frames are the recorded ones in ``/work/shared/samples`` (``../shared/samples`` from the repo). Kinds
cryptofeed 2.4.1 does not handle are listed with the reason (Bybit ``allLiquidation``: it routes only
the deprecated ``liquidation.`` topic; OKX ``mark-price``: ignored; OKX ``index-tickers``: matched as
``tickers`` and fails on the missing bid/ask; OKX ``liquidation-orders``: REST polling only).

cryptofeed is not a dependency of the project: ``make bench-cryptofeed`` runs this in its own
environment (``.venv-bench``, git-ignored) with cryptofeed 2.4.x installed there. Without cryptofeed
it prints our figures only and says so.

Run: ``make bench-cryptofeed`` or ``.venv-bench/bin/python bench/bench_cryptofeed.py [--runs 9] [--batch-ms 40]
[--only okx,...] [--split]`` (``--split``: ours' parse alone and store alone beside the whole, same batches).
Prints figures; not a test. Goals (issue 10): ours <= 0.5x cf no-op and <= 1/3 of cf gauge, every kind.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.model import Exchange, InstrumentInfo, ParseError, Record, Rejected
from exporter.state import MarketState

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES_CANDIDATES = (
    os.environ.get("FR_SAMPLES", ""),
    os.path.join(HERE, "..", "..", "shared", "samples"),
    "/work/shared/samples",
)
DUMMIES = 500  # other instruments followed on the exchange: dict sizes as in a real deployment


def samples_dir() -> str:
    for d in SAMPLES_CANDIDATES:
        if d and os.path.isdir(d):
            return d
    raise SystemExit("no samples directory: set FR_SAMPLES to the shared samples (…/shared/samples)")


def line(path: str, n: int) -> bytes:
    """Line ``n`` (1-based) of a sample file, re-serialised compactly (a .json file: its one body)."""
    with open(os.path.join(samples_dir(), path), "rb") as f:
        raw = f.read()
    if path.endswith(".json"):
        return orjson.dumps(orjson.loads(raw))
    return raw.splitlines()[n - 1].strip()


@dataclass
class Kind:
    name: str
    exchange: Exchange
    frame: bytes
    infos: list[InstrumentInfo]
    now: float  # the receive time (and the parser's clock): the sample's own time plus a second
    cf_class: str | None  # cryptofeed exchange class, None: cryptofeed does not handle this kind
    cf_symbols: dict[str, str] = field(default_factory=dict)  # exchange symbol -> cryptofeed's normalised one
    cf_note: str = ""
    cf_setup: Callable[[Any], None] | None = None  # state a live cryptofeed feed would have (Bybit's snapshot)


def _info(ex: Exchange, inst: str, base: str, quote: str, **kw: Any) -> InstrumentInfo:
    return InstrumentInfo(ex, inst, base, quote, **kw)


def kinds() -> list[Kind]:
    B, Y, OK, D = Exchange.BINANCE, Exchange.BYBIT, Exchange.OKX, Exchange.DERIBIT
    bybit_snapshot = orjson.loads(line("bybit/ws_tickers_v5_tardis.jsonl", 1))

    def bybit_delta_setup(cf: Any) -> None:  # a delta applies on top of the symbol's snapshot
        cf.tickers["BTC-USD-PERP"] = dict(bybit_snapshot["data"])

    okx_xperp = "BTC-USD_UM_XPERP-310404"
    return [
        Kind(
            "binance markPrice",
            B,
            line("binance/ws_markprice_cmp.jsonl", 1),
            [_info(B, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0)],
            1617308821.0,
            "BinanceFutures",
            {"BTCUSDT": "BTC-USDT-PERP"},
        ),
        Kind(
            "binance forceOrder",
            B,
            line("binance/ws_forceorder_tardis.jsonl", 1),
            [_info(B, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0)],
            1584059032.0,
            "BinanceFutures",
            {"BTCUSDT": "BTC-USDT-PERP"},
        ),
        Kind(
            "bybit tickers snapshot",
            Y,
            line("bybit/ws_tickers_v5_tardis.jsonl", 5),
            [_info(Y, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0)],
            1680673822.0,
            "Bybit",
            {"BTCUSDT": "BTC-USDT-PERP"},
        ),
        Kind(
            "bybit tickers delta",
            Y,
            line("bybit/ws_tickers_v5_tardis.jsonl", 2),
            [_info(Y, "BTCUSD", "BTC", "USD", inverse=True, funding_interval_s=28800.0)],
            1680673823.0,
            "Bybit",
            {"BTCUSD": "BTC-USD-PERP"},
            cf_setup=bybit_delta_setup,
        ),
        Kind(
            "bybit liquidation (old topic)",
            Y,
            line("bybit/ws_liquidation_v5_tardis.jsonl", 1),
            [_info(Y, "GALAUSDT", "GALA", "USDT", funding_interval_s=28800.0)],
            1673251092.0,
            "Bybit",
            {"GALAUSDT": "GALA-USDT-PERP"},
        ),
        Kind(
            "bybit allLiquidation",
            Y,
            line("bybit/ws_liquidation_v5_tardis.jsonl", 3),
            [_info(Y, "PIPPINUSDT", "PIPPIN", "USDT", funding_interval_s=28800.0)],
            1740480208.0,
            None,
            cf_note="cryptofeed 2.4.1 routes only the deprecated 'liquidation.' topic",
        ),
        Kind(
            "okx funding-rate (2026 shape)",
            OK,
            line("okx/ws_funding_rate_index_2026_tardis.jsonl", 2),
            [_info(OK, okx_xperp, "BTC", "USD", contract_size=100.0, inverse=True)],
            1785870856.0,
            "OKX",
            {okx_xperp: "BTC-USD-XPERP"},
        ),
        Kind(
            "okx open-interest",
            OK,
            line("okx/ws_public_v5_swap_tardis.jsonl", 5),
            [_info(OK, "WNCG-USDT-SWAP", "WNCG", "USDT", contract_size=1.0)],
            1640131259.0,
            "OKX",
            {"WNCG-USDT-SWAP": "WNCG-USDT-PERP"},
        ),
        Kind(
            "okx mark-price",
            OK,
            line("okx/ws_public_v5_swap_tardis.jsonl", 4),
            [_info(OK, "WNCG-USDT-SWAP", "WNCG", "USDT", contract_size=1.0)],
            1640131260.0,
            None,
            cf_note="cryptofeed 2.4.1 has no mark-price channel (the frame is ignored)",
        ),
        Kind(
            "okx liquidation-orders",
            OK,
            line("okx/ws_liquidation_orders_tardis.jsonl", 1),
            [_info(OK, "XRP-USD-230929", "XRP", "USD", contract_size=10.0, inverse=True)],
            1680173248.0,
            None,
            cf_note="cryptofeed 2.4.1 polls OKX liquidations over REST: no stream handler",
        ),
        Kind(
            "deribit ticker",
            D,
            line("deribit/ws_ticker_trades_2025_nautilus.jsonl", 1),
            [_info(D, "BTC-PERPETUAL", "BTC", "USD", contract_size=10.0, inverse=True, funding_interval_s=28800.0)],
            1765541475.0,
            "Deribit",
            {"BTC-PERPETUAL": "BTC-USD-PERP"},
        ),
        Kind(
            "deribit trades (liquidation)",
            D,
            line("deribit/ws_perpetual_ticker_trades_tardis.jsonl", 4),
            [_info(D, "BTC-PERPETUAL", "BTC", "USD", contract_size=10.0, inverse=True, funding_interval_s=28800.0)],
            1584058045.0,
            "Deribit",
            {"BTC-PERPETUAL": "BTC-USD-PERP"},
        ),
        Kind(
            "deribit trades (none liquidated)",
            D,
            line("deribit/ws_ticker_trades_2025_nautilus.jsonl", 2),
            [_info(D, "BTC-PERPETUAL", "BTC", "USD", contract_size=10.0, inverse=True, funding_interval_s=28800.0)],
            1765531357.0,
            "Deribit",
            {"BTC-PERPETUAL": "BTC-USD-PERP"},
        ),
    ]


# ---- ours -------------------------------------------------------------------------------------


def dummies(ex: Exchange) -> list[InstrumentInfo]:
    if ex is Exchange.OKX:
        return [_info(ex, f"C{n:03d}-USDT-SWAP", f"C{n:03d}", "USDT", contract_size=0.01) for n in range(DUMMIES)]
    if ex is Exchange.DERIBIT:
        return [_info(ex, f"C{n:03d}_USDC-PERPETUAL", f"C{n:03d}", "USDC") for n in range(DUMMIES)]
    return [_info(ex, f"C{n:03d}USDT", f"C{n:03d}", "USDT", funding_interval_s=28800.0) for n in range(DUMMIES)]


def ours(k: Kind, split: bool = False) -> dict[str, Callable[[int], None]]:
    """{"ours": n frames through parse_ws + apply_many, as FeedConnection hands them over}; with
    ``split`` also "parse" (parse_ws alone) and "store" (apply_many of the records a frame gives once
    the state has seen it: what every push after the first costs the store)."""
    state = MarketState(clock=lambda: k.now)
    infos = [*dummies(k.exchange), *k.infos]
    for info in infos:
        state.register(info)
    now = k.now
    # as the exporter builds it (app.py): one sink, so a settlement already passed on is not repeated
    ctx = FeedContext(k.exchange, {i.instrument: i for i in infos}, clock=lambda: now, settled={})
    bind = getattr(state, "bind", None)  # the state's handles, as the exporter's (app._bind)
    if bind is not None:
        bind(ctx)
    parse = feed_for(k.exchange).parse_ws
    apply_many = state.apply_many
    frame = k.frame
    recs = parse(frame, ctx)
    bad = [r for r in recs if isinstance(r, Rejected)]
    # a kind must produce records (the non-liquidation trades frame is allowed to be empty)
    if bad or state.unknown_instrument_updates or (not recs and "none liquidated" not in k.name):
        raise SystemExit(f"{k.name}: our parser gave {recs!r}: the benchmark's frame or instruments are wrong")
    apply_many(recs, now)  # the first frame reaches the store, as in the exporter
    steady = parse(frame, ctx)  # what every later frame gives (OKX: no repeated settlement)

    # The exporter's liquidation windows hold a minute (the base's flow) to an hour (the instrument's)
    # and the records leave them as the clock moves; with the receive time fixed here nothing would ever
    # leave, and every record of the run would stay alive (150 MB, each batch on fresh memory). What the
    # previous batch added leaves at the start of the next one, inside the timing: a liquidation's cost
    # includes its leaving, as in the exporter.
    held = [state.instruments[(k.exchange, i.instrument)] for i in k.infos]

    def release() -> None:
        for st in held:
            st.liq_recent.clear()
            flow = st.liq_flow
            if flow is not None:
                flow.entries.clear()
                flow.total = 0.0

    def run(n: int) -> None:
        release()
        for _ in range(n):
            apply_many(parse(frame, ctx), now)

    out: dict[str, Callable[[int], None]] = {"ours": run}
    if split:

        def parse_only(n: int) -> None:
            for _ in range(n):
                parse(frame, ctx)

        def store_only(n: int) -> None:
            release()
            for _ in range(n):
                apply_many(steady, now)

        out["parse"] = parse_only
        out["store"] = store_only
    return out


def records_of(k: Kind) -> list[Record]:
    infos = [*dummies(k.exchange), *k.infos]
    try:
        return feed_for(k.exchange).parse_ws(k.frame, FeedContext(k.exchange, {i.instrument: i for i in infos}))
    except ParseError as exc:
        raise SystemExit(f"{k.name}: {exc}") from None


# ---- cryptofeed -------------------------------------------------------------------------------


class _Conn:
    """What a cryptofeed handler reads of its connection (Bybit: the address and subscription)."""

    def __init__(self, address: str, subscription: dict[str, set[str]]) -> None:
        self.address = address
        self.subscription = subscription
        self.uuid = "bench"


def _drive(coro: Coroutine[Any, Any, None]) -> None:
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("a cryptofeed handler suspended: it is not a pure message handler here")


def cryptofeed_variants(k: Kind) -> dict[str, Callable[[int], None]]:
    """{"cf no-op": run, "cf gauge": run} for this kind (cryptofeed imported here only)."""
    from cryptofeed import exchanges as cfx
    from cryptofeed.defines import FUNDING, INDEX, LIQUIDATIONS, OPEN_INTEREST
    from cryptofeed.symbols import Symbols
    from prometheus_client import CollectorRegistry, Gauge

    cls = getattr(cfx, k.cf_class or "")
    mapping = {std: exch for exch, std in k.cf_symbols.items()}
    for n in range(DUMMIES):  # the same number of other symbols as our state follows
        mapping[f"C{n:03d}-USDT-PERP"] = dummies(k.exchange)[n].instrument
    Symbols.set(cls.id, mapping, {})
    reg = CollectorRegistry()
    rate_g = Gauge("cf_funding_rate", "rate", ["exchange", "symbol"], registry=reg)
    mark_g = Gauge("cf_mark_price", "mark", ["exchange", "symbol"], registry=reg)
    oi_g = Gauge("cf_open_interest", "oi", ["exchange", "symbol"], registry=reg)
    index_g = Gauge("cf_index_price", "index", ["exchange", "symbol"], registry=reg)
    liq_g = Gauge("cf_liquidation_notional", "liq", ["exchange", "symbol", "side"], registry=reg)

    async def noop(obj: Any, receipt_timestamp: float) -> None:
        return None

    async def on_funding(f: Any, receipt_timestamp: float) -> None:
        if f.rate is not None:
            rate_g.labels(f.exchange, f.symbol).set(float(f.rate))
        if f.mark_price is not None:
            mark_g.labels(f.exchange, f.symbol).set(float(f.mark_price))

    async def on_oi(o: Any, receipt_timestamp: float) -> None:
        oi_g.labels(o.exchange, o.symbol).set(float(o.open_interest))

    async def on_index(i: Any, receipt_timestamp: float) -> None:
        index_g.labels(i.exchange, i.symbol).set(float(i.price))

    async def on_liq(q: Any, receipt_timestamp: float) -> None:
        liq_g.labels(q.exchange, q.symbol, q.side).set(float(q.quantity * q.price))

    out: dict[str, Callable[[int], None]] = {}
    for name, cbs in (
        ("cf no-op", {FUNDING: noop, OPEN_INTEREST: noop, INDEX: noop, LIQUIDATIONS: noop}),
        ("cf gauge", {FUNDING: on_funding, OPEN_INTEREST: on_oi, INDEX: on_index, LIQUIDATIONS: on_liq}),
    ):
        feed = cls(callbacks=dict(cbs))
        syms = set(k.cf_symbols)
        conn = _Conn(
            "wss://stream.bybit.com/v5/public/linear",
            {"funding": syms, "open_interest": syms, "index": syms},
        )
        # what the feed's subscribe() resets before the first message (its private __reset)
        if k.cf_class == "Deribit":
            feed._Deribit__reset()
        elif k.cf_class == "Bybit":
            feed._Bybit__reset(conn)
        if k.cf_setup is not None:
            k.cf_setup(feed)
        handler = feed.message_handler
        text = k.frame.decode()  # cryptofeed's handlers take the frame as str
        now = k.now
        _drive(handler(text, conn, now))  # fails here, not in the timing, if the frame does not fit

        def run(n: int, handler: Any = handler, text: str = text, conn: _Conn = conn, now: float = now) -> None:
            for _ in range(n):
                coro = handler(text, conn, now)
                try:
                    coro.send(None)
                except StopIteration:
                    pass

        out[name] = run
    return out


# ---- measurement ------------------------------------------------------------------------------


def calibrate(fn: Callable[[int], None], batch_s: float) -> int:
    """Frames per batch so that one batch takes about ``batch_s`` of CPU time."""
    n = 50
    while True:
        t = time.process_time()
        fn(n)
        dt = time.process_time() - t
        if dt >= batch_s / 4 or n >= 10_000_000:
            return max(50, int(n * batch_s / max(dt, 1e-9)))
        n *= 4


def measure(variants: dict[str, Callable[[int], None]], runs: int, batch_s: float) -> dict[str, float]:
    """Median CPU microseconds per frame of each variant, batches interleaved and rotated."""
    sizes = {name: calibrate(fn, batch_s) for name, fn in variants.items()}
    per: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    clock = time.process_time
    for r in range(runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            n = sizes[name]
            t = clock()
            variants[name](n)
            per[name].append((clock() - t) / n * 1e6)
    return {name: statistics.median(v) for name, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="interleaved batches per variant (median printed)")
    ap.add_argument("--batch-ms", type=float, default=40.0, help="CPU time of one batch")
    ap.add_argument("--only", default="", help="comma-separated substrings of kind names to run")
    ap.add_argument(
        "--split", action="store_true", help="also ours' parse alone and store alone (interleaved with the rest)"
    )
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _v

    from bench_scrape import machine

    try:
        cf_version: str | None = _v("cryptofeed")
    except PackageNotFoundError:
        cf_version = None

    print(machine())
    print(
        f"cryptofeed {cf_version or 'NOT INSTALLED (make bench-cryptofeed installs it in .venv-bench)'}, "
        f"prometheus_client {_v('prometheus_client')}, orjson {_v('orjson')}, msgspec {_v('msgspec')}; "
        f"CPU us/frame, median of {args.runs} interleaved batches of ~{args.batch_ms:.0f} ms, "
        "gc.freeze() as the exporter"
    )
    ks = kinds()
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        ks = [k for k in ks if any(w in k.name for w in wanted)]
    prepared = []
    for k in ks:
        records_of(k)
        variants = ours(k, args.split)
        if k.cf_class is not None and cf_version is not None:
            variants.update(cryptofeed_variants(k))
        prepared.append((k, variants))
    gc.collect()
    gc.freeze()  # as Exporter.start does: the long-lived objects leave the collector's generations
    print(
        f"{'frame kind':<33} {'ours':>7} {'cf no-op':>9} {'cf gauge':>9} {'ours/no-op':>11} {'ours/gauge':>11}  goals"
    )
    worst_noop = worst_gauge = 0.0
    for k, variants in prepared:
        res = measure(variants, args.runs, args.batch_ms / 1000.0)
        o = res["ours"]
        parts = f"  [parse {res['parse']:.2f}, store {res['store']:.2f}]" if args.split else ""
        if "cf no-op" not in res:
            note = k.cf_note if k.cf_class is None else "cryptofeed not installed"
            print(f"{k.name:<33} {o:>7.2f} {'-':>9} {'-':>9} {'-':>11} {'-':>11}  ({note}){parts}")
            continue
        rn, rg = o / res["cf no-op"], o / res["cf gauge"]
        worst_noop, worst_gauge = max(worst_noop, rn), max(worst_gauge, rg)
        ok = "met" if rn <= 0.5 and rg <= 1 / 3 else "NOT met"
        cf = f"{res['cf no-op']:>9.2f} {res['cf gauge']:>9.2f}"
        print(f"{k.name:<33} {o:>7.2f} {cf} {rn:>10.2f}x {rg:>10.2f}x  {ok}{parts}")
    if worst_noop:
        print(
            f"worst: ours/no-op {worst_noop:.2f}x (goal <= 0.50: {'met' if worst_noop <= 0.5 else 'NOT met'}), "
            f"ours/gauge {worst_gauge:.2f}x (goal <= 0.33: {'met' if worst_gauge <= 1 / 3 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
