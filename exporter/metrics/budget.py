"""How each exchange's REST budget is split between its pollers and the rest (docs/rate-limits.md).

# TYPE fr_rest_poll_period_seconds gauge
fr_rest_poll_period_seconds{exchange="binance",poller="open_interest"} 245.0
# TYPE fr_rest_poll_budget_ratio gauge
fr_rest_poll_budget_ratio{bucket="weight",exchange="binance",poller="open_interest"} 0.458
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client.core import Metric

from exporter.metrics import catalog as m
from exporter.metrics.exposition import Family, LabelSet
from exporter.model import Exchange
from exporter.rest.split import PollShare

# per exchange: its pollers' shares and the budget's rate per bucket (weight per second)
Splits = Mapping[Exchange, tuple[Sequence[PollShare], Mapping[str, float]]]


class BudgetCollector:
    def __init__(self, splits: Callable[[], Splits]) -> None:
        self.splits = splits
        self.s_period = m.POLL_PERIOD.spec()
        self.s_share = m.POLL_BUDGET_SHARE.spec()

    def families(self) -> list[Family]:
        f_period, f_share = self.s_period.family(), self.s_share.family()
        for ex, (shares, rates) in sorted(self.splits().items()):
            for s in shares:
                poller = s.demand.poller
                f_period.add(LabelSet([("exchange", ex.value), ("poller", poller)]), s.period_s)
                for bucket, r in sorted(s.guaranteed.items()):
                    labels = LabelSet([("exchange", ex.value), ("poller", poller), ("bucket", bucket)])
                    f_share.add(labels, r / rates[bucket])
        return [f_period, f_share]

    def collect(self) -> Iterable[Metric]:
        for fam in self.families():
            yield fam.to_metric_family()
