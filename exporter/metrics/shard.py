"""Which part of the market this exporter follows: its shard and, per exchange, listed vs followed.

    # TYPE fr_shard_info gauge
    fr_shard_info{count="3",index="1"} 1.0
    # TYPE fr_instruments_listed gauge
    fr_instruments_listed{exchange="binance"} 412.0
    # TYPE fr_instruments_followed gauge
    fr_instruments_followed{exchange="binance"} 137.0

An unsharded exporter is shard 0 of 1, so the ShardOverlap alert also sees an unsharded exporter
running next to shards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import Metric

from exporter.metrics import catalog as m
from exporter.metrics.exposition import Family, LabelSet
from exporter.model import Exchange
from exporter.shard import Coverage, Shard


class ShardCollector:
    def __init__(self, shard: Shard, coverage: Callable[[], Mapping[Exchange, Coverage]]) -> None:
        self.coverage = coverage
        self.s_info = m.SHARD_INFO.spec()
        self.s_listed = m.INSTRUMENTS_LISTED.spec()
        self.s_followed = m.INSTRUMENTS_FOLLOWED.spec()
        self._info = LabelSet([("index", str(shard.index)), ("count", str(shard.count))])
        self._ex = {ex: LabelSet([("exchange", ex.value)]) for ex in Exchange}

    def families(self) -> list[Family]:
        f_info, f_listed, f_followed = self.s_info.family(), self.s_listed.family(), self.s_followed.family()
        f_info.add(self._info, 1.0)
        for ex, cov in sorted(self.coverage().items()):
            f_listed.add(self._ex[ex], cov.listed)
            f_followed.add(self._ex[ex], cov.followed)
        return [f_info, f_listed, f_followed]

    def collect(self) -> Iterable[Metric]:
        for fam in self.families():
            yield fam.to_metric_family()
