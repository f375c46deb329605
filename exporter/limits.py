"""The exchanges' published per-IP limits, for pacing (rest/client.py) and for the simulator.

One table, two users: the exporter's :class:`~exporter.rest.client.RequestBudget` spends a fraction
of each limit; the simulator (exporter/sim/ratelimit.py) enforces the limits themselves, answering
429 (and Binance's 418 ban after repeated 429s). Sources are in docs/rate-limits.md, tags as in
shared/reference/exchanges.md; values marked UNVERIFIED there are kept on the safe side.

A request costs ``weight`` in each bucket its path belongs to; a bucket holds ``limit`` weight per
``window_s`` seconds per IP.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model import Exchange


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str
    limit: float  # weight per window, per IP
    window_s: float

    @property
    def rate(self) -> float:
        return self.limit / self.window_s


@dataclass(frozen=True, slots=True)
class Cost:
    """Path prefix -> weight per bucket. The first matching prefix wins."""

    prefix: str
    weights: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class ExchangeLimits:
    exchange: Exchange
    buckets: tuple[Bucket, ...]
    costs: tuple[Cost, ...]
    default: tuple[tuple[str, float], ...]  # paths no Cost matches
    ws_opens_per_s: float  # new websocket connections per second per IP
    ban_after_429s: int | None = None  # Binance: requests while rate-limited before a 418 ban
    ban_s: float = 0.0

    def cost(self, path: str) -> tuple[tuple[str, float], ...]:
        for c in self.costs:
            if path.startswith(c.prefix):
                return c.weights
        return self.default

    def bucket(self, name: str) -> Bucket:
        for b in self.buckets:
            if b.name == name:
                return b
        raise KeyError(name)


LIMITS: dict[Exchange, ExchangeLimits] = {
    # [B-DOCS rate_limits.md, B-SDK]: REQUEST_WEIGHT 2400 / min (the 2021 value; read at runtime from
    # exchangeInfo, current value UNVERIFIED); fundingRate and fundingInfo share 500 / 5 min / IP
    # (fundingInfo weight 0); /futures/data/* 1000 / 5 min / IP. 429 then, repeated, 418 (2 min to 3 days).
    # fundingRate and /futures/data/* are also charged weight 1 (their REQUEST_WEIGHT is not documented).
    Exchange.BINANCE: ExchangeLimits(
        Exchange.BINANCE,
        buckets=(Bucket("weight", 2400, 60.0), Bucket("funding", 500, 300.0), Bucket("futures_data", 1000, 300.0)),
        costs=(
            Cost("/fapi/v1/fundingRate", (("weight", 1), ("funding", 1))),
            Cost("/fapi/v1/fundingInfo", (("funding", 1),)),
            Cost("/futures/data/", (("weight", 1), ("futures_data", 1))),
            Cost("/fapi/v1/exchangeInfo", (("weight", 1),)),
            # mark/index/premium klines: weight by `limit` ([100, 500) -> 2); the exporter asks 499 a page
            Cost("/fapi/v1/markPriceKlines", (("weight", 2),)),
            Cost("/fapi/v1/indexPriceKlines", (("weight", 2),)),
            Cost("/fapi/v1/premiumIndexKlines", (("weight", 2),)),
            # signed account reads (positions): positionRisk 5, adlQuantile 5 (exchanges.md 2.6)
            Cost("/fapi/v2/positionRisk", (("weight", 5),)),
            Cost("/fapi/v1/adlQuantile", (("weight", 5),)),
        ),
        default=(("weight", 1),),  # openInterest, insuranceBalance, premiumIndex with symbol: 1
        ws_opens_per_s=1.0,  # not in our sources: one a second is far below any limit seen
        ban_after_429s=3,
        ban_s=120.0,
    ),
    # [Y-DOCS rate-limit.mdx]: 600 requests per 5 s per IP on api.bybit.com; then HTTP 403 for >= 10 min.
    # WS: <= 500 new connections per 5 min per domain [Y-DOCS connect].
    Exchange.BYBIT: ExchangeLimits(
        Exchange.BYBIT,
        buckets=(Bucket("ip", 600, 5.0),),
        costs=(),
        default=(("ip", 1),),
        ws_opens_per_s=500 / 300.0,
    ),
    # [O-DOCS]: limits per endpoint, 2 s windows: funding-rate-history 10, open-interest 20,
    # insurance-fund 10, rubik 5, instruments 20 (IP or IP + instId; taken per IP here, the safe side).
    # WS: 3 connection attempts per second per IP.
    Exchange.OKX: ExchangeLimits(
        Exchange.OKX,
        buckets=(
            Bucket("funding-rate-history", 10, 2.0),
            Bucket("open-interest", 20, 2.0),
            Bucket("insurance-fund", 10, 2.0),
            Bucket("rubik", 5, 2.0),
            Bucket("public", 20, 2.0),
            # history (docs/history.md): candles 20 / 2 s, their history-* twins 10 / 2 s, premium
            # history 20 / 2 s, contract open-interest history 10 / 2 s (IP + instId: taken per IP)
            Bucket("mark-price-candles", 20, 2.0),
            Bucket("index-candles", 20, 2.0),
            Bucket("history-mark-price-candles", 10, 2.0),
            Bucket("history-index-candles", 10, 2.0),
            Bucket("premium-history", 20, 2.0),
            Bucket("open-interest-history", 10, 2.0),
        ),
        costs=(
            Cost("/api/v5/public/funding-rate-history", (("funding-rate-history", 1),)),
            Cost("/api/v5/public/open-interest", (("open-interest", 1),)),
            Cost("/api/v5/public/insurance-fund", (("insurance-fund", 1),)),
            Cost("/api/v5/market/mark-price-candles", (("mark-price-candles", 1),)),
            Cost("/api/v5/market/index-candles", (("index-candles", 1),)),
            Cost("/api/v5/market/history-mark-price-candles", (("history-mark-price-candles", 1),)),
            Cost("/api/v5/market/history-index-candles", (("history-index-candles", 1),)),
            Cost("/api/v5/public/premium-history", (("premium-history", 1),)),
            Cost("/api/v5/rubik/stat/contracts/open-interest-history", (("open-interest-history", 1),)),
            Cost("/api/v5/rubik/", (("rubik", 1),)),
        ),
        default=(("public", 1),),
        ws_opens_per_s=3.0,
    ),
    # [D-DOCS rate-limits]: credit-based leaky bucket per IP for unauthenticated calls; the numbers
    # (500 credits a request, 10 000 credits/s refill, 50 000 max: ~20 requests/s) are from [NT],
    # UNVERIFIED. 32 connections per IP (HTTP and WS together) [D-DOCS connection-management].
    Exchange.DERIBIT: ExchangeLimits(
        Exchange.DERIBIT,
        buckets=(Bucket("credits", 20, 1.0),),
        costs=(),
        default=(("credits", 1),),
        ws_opens_per_s=2.0,
    ),
}
