"""The accrual store records each settlement once, also across a reopen (restart)."""

from __future__ import annotations

from pathlib import Path

from exporter.positions.store import AccrualStore


def test_exactly_once_and_persistent(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "acc.sqlite"
    s = AccrualStore(db)
    args = ("p1", "main", "binance", "BTCUSDT", 1_700_000_000.0, 0.0001, 50_000.0, 1.0, 5.0, 1.0)
    assert s.accrue(*args) is True
    assert s.accrue(*args) is False  # same settlement again: ignored
    assert s.accrue("p1", "hedge", "bybit", "BTCUSDT", 1_700_000_000.0, 0.0001, 50_000.0, 1.0, -4.0, 1.0)
    assert s.first_seen("p1", 100.0) == 100.0
    assert s.first_seen("p1", 200.0) == 100.0
    s.close()

    s2 = AccrualStore(db)
    assert s2.accrue(*args) is False
    assert s2.totals() == {"p1": 1.0}
    assert s2.counts() == {"p1": 2}
    assert s2.first_seen("p1", 300.0) == 100.0
    assert s2.last_time("p1", "main") == 1_700_000_000.0
    assert s2.last_time("p2", "main") is None
    s2.forget_first_seen("p1")
    assert s2.first_seen("p1", 400.0) == 400.0
    s2.close()
