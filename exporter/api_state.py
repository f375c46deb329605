"""The /api/state document (schema in docs/ARCHITECTURE.md), read by the AI sidecar.

Built from the same :class:`~exporter.metrics.market.InstrumentView` objects as /metrics, so a value
that has left /metrics for being stale is ``null`` here, never the old number. Nothing from the
configuration is copied in, so no credential (or the name of where one lives) can leak.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from exporter import __version__
from exporter.config import Config
from exporter.metrics.health import exchange_up
from exporter.metrics.market import InstrumentView, MarketAnalytics, liquidations_since, oi_change_1h
from exporter.model import Side
from exporter.state import LIQ_FLOW_WINDOW_SECONDS, InstrumentState, MarketState

log = logging.getLogger(__name__)

ExtraApi = Callable[[], Any]


def _liq_totals(v: InstrumentView) -> dict[str, dict[str, float]]:
    st = v.st
    count, notional = dict(st.liq_count), dict(st.liq_notional_usd)
    return {
        "long": {"count": count.get(Side.LONG, 0), "notional_usd": notional.get(Side.LONG, 0.0)},
        "short": {"count": count.get(Side.SHORT, 0), "notional_usd": notional.get(Side.SHORT, 0.0)},
    }


def ages(st: InstrumentState, now: float) -> dict[str, float | None]:
    """Seconds since each group of values was received (None: never), stale or not."""
    return {
        "price": now - st.price_at if st.price_at else None,
        "funding": now - st.funding_at if st.funding_at else None,
        "open_interest": now - st.oi_at if st.oi_at else None,
        "long_short_ratio": now - st.ratio_at if st.ratio_at else None,
    }


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
        "long_short_ratio": v.long_short_ratio,
        "liquidations": _liq_totals(v),
        "liquidations_1h": liquidations_since(v.st, now - LIQ_FLOW_WINDOW_SECONDS),
        "ages_seconds": ages(v.st, now),
    }


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
    config: Config, state: MarketState, analytics: MarketAnalytics, extra_api: ExtraApi | None = None
) -> dict[str, Any]:
    """The whole /api/state document. ``extra_api()`` (positions...) is merged at the top level."""
    now = state.clock()
    views = analytics.views(now)
    doc: dict[str, Any] = {
        "generated_at": now,
        "version": __version__,
        "exchanges": exchanges_block(config, state, now),
        "instruments": [instrument_row(v, now) for v in views],
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
