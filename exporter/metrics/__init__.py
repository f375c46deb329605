"""Collectors over a state snapshot, their registry, and the fast exposition.

``build_registry`` returns an :class:`ExporterRegistry`: a normal prometheus_client
``CollectorRegistry`` (``generate_latest(registry)`` works, other modules ``register()`` their own
collectors on it) that also remembers its collectors in order so :meth:`ExporterRegistry.render`
can take the fast path for ours and the generic one for the others.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, disable_created_metrics
from prometheus_client.core import Metric

from exporter.config import Config
from exporter.metrics.exposition import render
from exporter.metrics.feed import FeedQualityCollector, RecordingStats
from exporter.metrics.health import HealthCollector
from exporter.metrics.market import CrossCollector, MarketCollector
from exporter.metrics.term import TermCollector
from exporter.state import MarketState
from exporter.views import MarketViews, RenderErrors

__all__ = ["ExporterRegistry", "build_registry"]


_gc_lock = threading.Lock()
_gc_renders = 0  # renders in progress (the /metrics and /api/state threads may overlap)
_gc_was_enabled = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a render runs, back on (if it was) after the last one.

    A render allocates ~100,000 short-lived, acyclic objects per 2,000 instruments (tuples, lists,
    strings) that reference counting frees; each 700 allocations started a young collection, and
    promotions full ones. Off, the steady render's CPU at 8,000 instruments went 457-470 -> 388-391 ms
    and the first (warm-up) render's 1.34-1.42 -> 0.96-1.02 s (bench state, gc.freeze() as the
    exporter). Collection is only deferred: the next allocation after the render runs it if due."""
    global _gc_renders, _gc_was_enabled
    with _gc_lock:
        if _gc_renders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_renders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_renders -= 1
            if _gc_renders == 0 and _gc_was_enabled:
                gc.enable()


class ExporterRegistry(CollectorRegistry):
    """A CollectorRegistry that knows its collectors in registration order and renders fast."""

    def __init__(self, views: MarketViews) -> None:
        # auto_describe off: registration must not run a scrape.
        super().__init__(auto_describe=False)
        self.views = views
        self._ordered: list[Any] = []
        self._order_lock = threading.Lock()

    def register(self, collector: Any) -> None:
        super().register(collector)
        with self._order_lock:
            self._ordered.append(collector)

    def unregister(self, collector: Any) -> None:
        super().unregister(collector)
        with self._order_lock:
            self._ordered = [c for c in self._ordered if c is not collector]

    def collectors(self) -> list[Any]:
        with self._order_lock:
            return list(self._ordered)

    def collect(self) -> Iterator[Metric]:
        with self.views.scrape():
            yield from super().collect()

    def render(self, openmetrics: bool = False, names: set[str] | None = None) -> bytes:
        """The whole registry (or the families named in ``names``) in the text format 0.0.4, or OpenMetrics 1.0.0."""
        with collector_paused(), self.views.scrape():
            return render(self.collectors(), openmetrics, names, self.views.errors)


def build_registry(
    config: Config,
    state: MarketState,
    extra_collectors: Iterable[Any] = (),
    *,
    process: bool = True,
    recording: RecordingStats | None = None,
) -> ExporterRegistry:
    """Our own registry (never the global one) with the market, cross-exchange and health collectors,
    and (``process``) this process's process_* series."""
    disable_created_metrics()  # no *_created series: they would double the counters' cardinality
    errors = RenderErrors()  # shared: views, cross-exchange figures, renderer -> fr_render_errors_total
    views = MarketViews(config, state, errors)
    reg = ExporterRegistry(views)
    reg.register(MarketCollector(views))
    reg.register(CrossCollector(views))
    reg.register(TermCollector(views))
    reg.register(HealthCollector(config, state, render_errors=errors))
    reg.register(FeedQualityCollector(state, recording))
    # process_* (resident memory, CPU, open fds): the "Exporter health" dashboard's memory panel
    if process:
        ProcessCollector(registry=reg)
    for c in extra_collectors:
        reg.register(c)
    return reg
