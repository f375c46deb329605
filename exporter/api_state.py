"""The /api/state document (schema in docs/ARCHITECTURE.md), read by the AI sidecar.

Built from the same :class:`~exporter.views.InstrumentView` objects as /metrics, so a value
that has left /metrics for being stale is ``null`` here, never the old number. Nothing from the
configuration is copied in, so no credential (or the name of where one lives) can leak.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from exporter import __version__
from exporter.config import Config
from exporter.state import MarketState
from exporter.views import (
    LIQ_FLOW_WINDOW_SECONDS,
    InstrumentView,
    MarketViews,
    ages,
    exchange_up,
    futures_by_exchange,
    liquidation_totals,
    liquidations_since,
    oi_change_1h,
)

log = logging.getLogger(__name__)

ExtraApi = Callable[[], Any]


def instrument_row(v: InstrumentView, now: float) -> dict[str, Any]:
    info = v.st.info
    return {
        "exchange": info.exchange.value,
        "instrument": info.instrument,
        "base": info.base,
        "quote": info.quote,
        "stale": v.stale,
        "mark_price": v.mark_price,
        "index_price": v.index_price,
        "premium_ratio": v.premium_ratio,
        "funding_rate": v.funding_rate,
        "funding_interval_seconds": v.funding_interval_s,
        "funding_rate_8h": v.funding_rate_8h,
        "funding_rate_annualized": v.funding_rate_annualized,
        "next_funding_timestamp": v.next_funding_timestamp,
        "funding_zscore": v.zscore,
        "open_interest_usd": v.open_interest_usd,
        "open_interest_change_1h_ratio": oi_change_1h(v.st, v.open_interest_usd, now),
        "open_interest_change_ratio": {"1h": v.oi_change_1h, "4h": v.oi_change_4h},
        "price_volatility_ratio": {"1h": v.volatility_1h, "4h": v.volatility_4h},
        "long_short_ratio": v.long_short_ratio,
        "liquidations": liquidation_totals(v.st),
        "liquidations_1h": liquidations_since(v.st, now - LIQ_FLOW_WINDOW_SECONDS),
        "ages_seconds": ages(v.st, now),
    }


def _finite_or_none(x: Any) -> Any:
    """A non-finite float in a row becomes null (orjson would write null too, but silently)."""
    if type(x) is float and x - x != 0.0:
        return None
    if type(x) is dict:
        return {k: _finite_or_none(v) for k, v in x.items()}
    return x


def _rows(views: MarketViews, rows: list[InstrumentView], now: float) -> list[dict[str, Any]]:
    """One row per instrument; a row that cannot be built is left out (counted), never a 500."""
    out = []
    for v in rows:
        try:
            out.append({k: _finite_or_none(x) for k, x in instrument_row(v, now).items()})
        except Exception:
            views.errors.count("api_state")
            log.warning("/api/state: row of %s %s failed", v.st.info.exchange, v.st.info.instrument, exc_info=True)
    return out


def _futures(views: MarketViews, perps: list[InstrumentView], now: float) -> dict[str, Any]:
    """Dated futures per exchange (term structure); a failure leaves the block empty (counted)."""
    try:
        block = futures_by_exchange(views.futures(now, perps=perps), now)
    except Exception:
        views.errors.count("api_state")
        log.warning("/api/state: the futures block failed", exc_info=True)
        return {}
    return {ex: [{k: _finite_or_none(x) for k, x in row.items()} for row in rows] for ex, rows in block.items()}


def exchanges_block(config: Config, state: MarketState, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    streams = sorted(list(state.streams.items()))
    for ex in sorted(set(state.exchanges)):
        out[ex.value] = {
            "up": exchange_up(config, state, ex, now),
            "streams": [
                {
                    "stream": name,
                    "connected": h.connected,
                    "last_message_age_seconds": now - h.last_message_at if h.last_message_at > 0.0 else None,
                    "last_parsed_age_seconds": now - h.last_parsed_at if h.last_parsed_at > 0.0 else None,
                    "messages": h.messages,
                    "reconnects": h.reconnects,
                    "parse_errors": h.parse_errors,
                }
                for (sex, name), h in streams
                if sex == ex
            ],
        }
    return out


def build_state_document(
    config: Config, state: MarketState, views: MarketViews, extra_api: ExtraApi | None = None
) -> dict[str, Any]:
    """The whole /api/state document. ``extra_api()`` (positions...) is merged at the top level."""
    now = state.clock()
    rows = views.views(now)
    doc: dict[str, Any] = {
        "generated_at": now,
        "version": __version__,
        "exchanges": exchanges_block(config, state, now),
        "instruments": _rows(views, rows, now),
        "futures": _futures(views, rows, now),
        "positions": [],
        "events": [
            {
                "seq": e.seq,
                "at": e.at,
                "base": e.base,
                "kind": e.kind,
                "exchange": e.exchange,
                "instrument": e.instrument,
                "value": e.value,
            }
            for e in tuple(state.events)
        ],
    }
    if extra_api is not None:
        try:
            extra = extra_api()
        except Exception:
            # A failing extra source must not take the market data down with it.
            log.exception("extra /api/state source failed")
            extra = None
        if isinstance(extra, dict):
            for k, val in extra.items():
                if k not in ("generated_at", "version", "exchanges", "instruments"):
                    doc[k] = val
        elif isinstance(extra, list):
            doc["positions"] = extra
    return doc
