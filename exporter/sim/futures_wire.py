"""The simulated dated futures on the wire: instrument-list rows and stream frames per exchange.

Shapes as documented (docs/term-structure.md): Binance ``exchangeInfo`` delivery symbols and
``markPriceUpdate`` with ``r`` "" and ``T`` 0 (``P``: the estimated settle price, the index in the
last hour); Bybit ``instruments-info`` ``LinearFutures`` (category linear) and ``InverseFutures``
(category inverse) rows and ``tickers`` snapshots with ``deliveryTime``/``basis``/``basisRate`` (on
``/v5/public/linear`` and ``/v5/public/inverse``; REST ``tickers`` of the inverse category); OKX
``FUTURES`` instruments and ``mark-price`` pushes; Deribit ``get_instruments`` rows with a dated
``settlement_period`` and ``ticker`` notifications.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from exporter.model import Exchange
from exporter.sim.curve import DatedFuture
from exporter.sim.server import dumps, fmt, ms

if TYPE_CHECKING:
    from exporter.sim.market import MarketModel
    from exporter.sim.server import ExchangeServer

D = 2  # price decimals on the wire


def futures_of(market: MarketModel, exchange: Exchange) -> dict[str, DatedFuture]:
    curve = getattr(market, "curve", None)
    return curve.futures.get(exchange, {}) if curve is not None else {}


def _ordered(market: MarketModel, exchange: Exchange) -> list[DatedFuture]:
    return sorted(futures_of(market, exchange).values(), key=lambda f: (f.base, f.expiry))


# ---- REST rows -------------------------------------------------------------------------------


def binance_symbols(market: MarketModel) -> list[dict[str, Any]]:
    out = []
    rank: dict[str, int] = {}
    for f in _ordered(market, Exchange.BINANCE):
        n = rank[f.base] = rank.get(f.base, -1) + 1
        out.append(
            {
                "symbol": f.symbol,
                "pair": f"{f.base}USDT",
                "contractType": "CURRENT_QUARTER" if n == 0 else "NEXT_QUARTER",
                "deliveryDate": ms(f.expiry),
                "onboardDate": ms(f.listed_at),
                "status": "TRADING",
                "baseAsset": f.base,
                "quoteAsset": f.quote,
                "marginAsset": f.quote,
                "pricePrecision": D,
                "quantityPrecision": 3,
                "underlyingType": "COIN",
            }
        )
    return out


def bybit_rows(market: MarketModel, inverse: bool = False) -> list[dict[str, Any]]:
    """The dated futures of one instruments-info category: linear (USDT) or inverse (USD, coin-settled)."""
    return [
        {
            "symbol": f.symbol,
            "contractType": "InverseFutures" if f.inverse else "LinearFutures",
            "status": "Trading",
            "baseCoin": f.base,
            "quoteCoin": f.quote,
            "settleCoin": f.base if f.inverse else f.quote,
            "launchTime": str(ms(f.listed_at)),
            "deliveryTime": str(ms(f.expiry)),
            "deliveryFeeRate": "0.0005",
            "priceScale": str(D),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": "0.50", "maxPrice": "1999999.00", "tickSize": "0.50"},
            "lotSizeFilter": {"maxOrderQty": "100000000", "minOrderQty": "1", "qtyStep": "1"}
            if f.inverse
            else {"maxOrderQty": "500.000", "minOrderQty": "0.001", "qtyStep": "0.001"},
            "unifiedMarginTrade": True,
            "fundingInterval": 0,
            "copyTrading": "none",
            "upperFundingRate": "",
            "lowerFundingRate": "",
            "isPreListing": False,
            "preListingInfo": None,
        }
        for f in _ordered(market, Exchange.BYBIT)
        if f.inverse is inverse
    ]


def bybit_rest_ticker(f: DatedFuture, now: float) -> dict[str, str]:
    """A dated future in ``GET /v5/market/tickers`` (``deliveryTime`` in ms there; ISO on the stream)."""
    data: dict[str, str] = dict(bybit_ticker(f, now)["data"])
    data["deliveryTime"] = str(ms(f.expiry))
    return data


def okx_rows(market: MarketModel) -> list[dict[str, Any]]:
    out = []
    for f in _ordered(market, Exchange.OKX):
        fam = f"{f.base}-{f.quote}"
        out.append(
            {
                "instType": "FUTURES",
                "instId": f.symbol,
                "instFamily": fam,
                "uly": fam,
                "ctType": "inverse" if f.inverse else "linear",
                "ctVal": fmt(f.contract_size, 0),
                "ctValCcy": f.quote if f.inverse else f.base,
                "settleCcy": f.base if f.inverse else f.quote,
                "expTime": str(ms(f.expiry)),
                "listTime": str(ms(f.listed_at)),
                "alias": "quarter",
                "state": "live",
                "tickSz": "0.1",
                "lotSz": "1",
            }
        )
    return out


def deribit_rows(market: MarketModel, currency: str) -> list[dict[str, Any]]:
    cur = currency.upper()
    return [
        {
            "kind": "future",
            "instrument_name": f.symbol,
            "settlement_period": "month" if f.expiry - f.listed_at < 100 * 86400 else "quarter",
            "expiration_timestamp": ms(f.expiry),
            "creation_timestamp": ms(f.listed_at),
            "instrument_type": "reversed" if f.inverse else "linear",
            "base_currency": f.base,
            "quote_currency": f.quote,
            "counter_currency": f.quote,
            "settlement_currency": f.base,
            "contract_size": f.contract_size,
            "is_active": True,
            "state": "open",
            "tick_size": 2.5,
            "min_trade_amount": f.contract_size,
        }
        for f in _ordered(market, Exchange.DERIBIT)
        if cur in ("ANY", f.base)
    ]


# ---- stream frames --------------------------------------------------------------------------


def binance_mark(f: DatedFuture, now: float) -> dict[str, Any]:
    last_hour = f.expiry - now <= 3600.0
    return {
        "e": "markPriceUpdate",
        "E": ms(now),
        "s": f.symbol,
        "p": fmt(f.mark, 8),
        "P": fmt(f.index if last_hour else f.mark, 8),  # estimated settle price: meaningful in the last hour
        "i": fmt(f.index, 8),
        "r": "",
        "T": 0,
    }


def bybit_ticker(f: DatedFuture, now: float) -> dict[str, Any]:
    basis = f.mark - f.index
    return {
        "topic": f"tickers.{f.symbol}",
        "type": "snapshot",
        "ts": ms(now),
        "cs": int(now * 10),
        "data": {
            "symbol": f.symbol,
            "markPrice": fmt(f.mark, D),
            "indexPrice": fmt(f.index, D),
            "fundingRate": "",
            "nextFundingTime": "0",
            "deliveryTime": datetime.fromtimestamp(f.expiry, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "basis": fmt(basis, D),
            "basisRate": fmt(basis / f.index if f.index else 0.0, 8),
            "predictedDeliveryPrice": fmt(f.index, D) if f.expiry - now <= 1800.0 else "",
            "deliveryFeeRate": "0.0005",
        },
    }


def okx_mark(f: DatedFuture, now: float) -> dict[str, Any]:
    return {
        "arg": {"channel": "mark-price", "instId": f.symbol},
        "data": [{"instType": "FUTURES", "instId": f.symbol, "markPx": fmt(f.mark, 1), "ts": str(ms(now))}],
    }


def deribit_ticker(f: DatedFuture, now: float) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {
            "channel": f"ticker.{f.symbol}.100ms",
            "data": {
                "timestamp": ms(now),
                "state": "open",
                "instrument_name": f.symbol,
                "mark_price": round(f.mark, 2),
                "index_price": round(f.index, 2),
                "estimated_delivery_price": round(f.index, 2),
                "last_price": round(f.mark, 1),
                "open_interest": 1_000_000.0,
                "stats": {"volume": 100.0},
            },
        },
    }


def publish(server: ExchangeServer, now: float) -> None:
    """Once a market second: every subscribed dated future's frame on its exchange's stream."""
    sec = math.floor(now)
    if getattr(server, "_futures_sec", None) == sec or not server.publishing():
        return
    server._futures_sec = sec  # type: ignore[attr-defined]
    ex = server.exchange
    for f in futures_of(server.market, ex).values():
        if ex is Exchange.BINANCE:
            payload = orjson.dumps(binance_mark(f, now))
            server._push(f"{f.symbol.lower()}@markPrice@1s", payload)  # type: ignore[attr-defined]
        elif ex is Exchange.BYBIT:
            server.broadcast(f"tickers.{f.symbol}", dumps(bybit_ticker(f, now)))
        elif ex is Exchange.OKX:
            server.broadcast(f"mark-price:{f.symbol}", dumps(okx_mark(f, now)))
        else:
            server.broadcast(f"ticker.{f.symbol}.100ms", dumps(deribit_ticker(f, now)))
