"""Sharding by base asset: which exporter of S follows which instruments.

Each base asset belongs to exactly one shard, chosen by the hash Prometheus' ``hashmod``
relabelling uses (``model/relabel/relabel.go``: md5 of the value, the last 8 bytes of the digest as
a big-endian unsigned 64-bit integer, modulo S). So a relabel rule with ``action: hashmod`` over a
``base`` label puts a series on the same shard as this module, and the assignment never depends on
anything but the base and S. All instruments of one base, on every exchange, land on one shard:
cross-exchange series (OI-weighted funding, spreads) are computed from complete inputs, and
positions live with their base. Exchange-wide series (insurance funds) come from shard 0 only.

Pure: no I/O, no state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter.model import InstrumentInfo

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def hashmod(value: str, modulus: int) -> int:
    """Prometheus' ``hashmod`` of one label value."""
    if modulus < 1:
        raise ValueError("modulus must be at least 1")
    digest = hashlib.md5(value.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % modulus


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based). The default, 0 of 1, follows everything."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """``"K/S"`` (as given to ``--shard``) -> Shard(K, S)."""
        m = _SPEC.match(spec)
        if m is None:
            raise ValueError(f"shard {spec!r} is not K/S (e.g. 0/3)")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def exchange_wide(self) -> bool:
        """Whether this shard publishes the series that belong to no base (insurance funds)."""
        return self.index == 0

    def owns(self, base: str) -> bool:
        return self.count == 1 or hashmod(base, self.count) == self.index

    def select(self, instruments: Iterable[InstrumentInfo]) -> list[InstrumentInfo]:
        """The instruments of this shard's bases, in the given order."""
        return [i for i in instruments if self.owns(i.base)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True)
class Coverage:
    """What one exchange lists, what was selected from it, and what this shard follows."""

    listed: int  # instruments of the selected kind the exchange lists (0 when the list is unreadable)
    selected: int  # after all_perpetuals / max_instruments, before sharding
    followed: int  # this shard's part of the selection
    left_out: tuple[str, ...] = ()  # listed but cut by max_instruments


def left_out_by_limit(candidates: Sequence[InstrumentInfo], chosen: Sequence[InstrumentInfo]) -> tuple[str, ...]:
    """Instrument ids among ``candidates`` that the selection did not keep."""
    kept = {i.instrument for i in chosen}
    return tuple(i.instrument for i in candidates if i.instrument not in kept)
