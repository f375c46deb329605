"""Term-structure collector: dated futures, read from :meth:`~exporter.views.MarketViews.futures`.

    # HELP fr_basis_annualized_ratio (F - S) / S x 365 / days to expiry ...
    # TYPE fr_basis_annualized_ratio gauge
    fr_basis_annualized_ratio{base="BTC",exchange="binance",expiry="2026-03-27",
                              instrument="BTCUSDT_260327",quote="USDT"} 0.071

A family without a sample is left out (no contract followed: nothing on the page).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.metrics import catalog as m
from exporter.views import FutureView, MarketViews

log = logging.getLogger(__name__)

_FIELDS: tuple[tuple[m.MetricDef, str], ...] = (
    (m.FUTURE_MARK_PRICE, "mark_price"),
    (m.FUTURE_SETTLE_ESTIMATE, "estimated_settle_price"),
    (m.FUTURE_EXPIRY, "expiry"),
    (m.FUTURE_DAYS, "days_to_expiry"),
    (m.BASIS, "basis_ratio"),
    (m.BASIS_ANNUALIZED, "basis_annualized"),
    (m.IMPLIED_FUNDING, "implied_funding_8h"),
    (m.IMPLIED_MINUS_ACTUAL, "implied_minus_actual_bp"),
)


def labels(v: FutureView) -> list[str]:
    info = v.st.info
    return [info.exchange.value, info.instrument, info.base, info.quote, v.expiry_date]


class TermCollector:
    def __init__(self, views: MarketViews) -> None:
        self.views = views

    def collect(self) -> Iterator[Metric]:
        try:
            futures = self.views.futures()
        except Exception:  # one bad value must not take the whole page down: counted, left out
            log.exception("term structure views failed")
            self.views.errors.count("term")
            return
        if not futures:
            return
        rows = [(labels(v), v) for v in futures]
        for d, field in _FIELDS:
            fam: GaugeMetricFamily = d.gauge()
            for lv, v in rows:
                x = getattr(v, field)
                if x is not None:
                    fam.add_metric(lv, float(x))
            if fam.samples:
                yield fam
