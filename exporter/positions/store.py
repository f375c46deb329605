"""SQLite store of funding accruals: exactly one row per (position, leg, settlement time).

The primary key makes a repeated settlement (seen again after a reconnect, a REST backfill or an
exporter restart) a no-op, so ``fr_funding_pnl_usd`` never double counts. Continuous
funding (Deribit) is stored as consecutive periods; the end of the last period is the start of the
next one, read back from the table after a restart.

Used from the event-loop thread only; readers elsewhere get the cached totals.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS accruals (
    position     TEXT NOT NULL,
    leg          TEXT NOT NULL,          -- 'main' or 'hedge'
    exchange     TEXT NOT NULL,
    instrument   TEXT NOT NULL,
    funding_time REAL NOT NULL,          -- settlement time; continuous: end of the period
    period_start REAL,                   -- continuous only
    rate         REAL NOT NULL,
    price        REAL NOT NULL,
    size         REAL NOT NULL,
    amount_usd   REAL NOT NULL,
    recorded_at  REAL NOT NULL,
    PRIMARY KEY (position, leg, funding_time)
);
CREATE TABLE IF NOT EXISTS first_seen (
    position TEXT PRIMARY KEY,
    at       REAL NOT NULL
);
"""


class AccrualStore:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def accrue(
        self,
        position: str,
        leg: str,
        exchange: str,
        instrument: str,
        funding_time: float,
        rate: float,
        price: float,
        size: float,
        amount_usd: float,
        recorded_at: float,
        period_start: float | None = None,
    ) -> bool:
        """Record one accrual; False (and nothing changes) if this settlement was already recorded."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO accruals VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                position,
                leg,
                exchange,
                instrument,
                funding_time,
                period_start,
                rate,
                price,
                size,
                amount_usd,
                recorded_at,
            ),
        )
        return cur.rowcount == 1

    def has(self, position: str, leg: str, funding_time: float) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM accruals WHERE position=? AND leg=? AND funding_time=?", (position, leg, funding_time)
        ).fetchone()
        return row is not None

    def last_time(self, position: str, leg: str) -> float | None:
        row = self._db.execute(
            "SELECT MAX(funding_time) FROM accruals WHERE position=? AND leg=?", (position, leg)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def totals(self) -> dict[str, float]:
        return {p: float(v) for p, v in self._db.execute("SELECT position, SUM(amount_usd) FROM accruals GROUP BY 1")}

    def keys(self, position: str, leg: str) -> set[float]:
        """Settlement times already recorded for one leg."""
        return {
            float(t)
            for (t,) in self._db.execute(
                "SELECT funding_time FROM accruals WHERE position=? AND leg=?", (position, leg)
            )
        }

    def aggregates(self) -> dict[str, tuple[float, float, float, int]]:
        """position -> (net, received, paid as a positive number, number of accruals)."""
        q = (
            "SELECT position, SUM(amount_usd), SUM(MAX(amount_usd, 0)), -SUM(MIN(amount_usd, 0)), COUNT(*) "
            "FROM accruals GROUP BY 1"
        )
        return {str(p): (float(a), float(r), float(d), int(n)) for p, a, r, d, n in self._db.execute(q)}

    def net_since(self, position: str, after: float) -> float:
        """Net funding (USD) of the accruals after ``after`` (settlement / period end), all legs."""
        row = self._db.execute(
            "SELECT SUM(amount_usd) FROM accruals WHERE position=? AND funding_time>?", (position, after)
        ).fetchone()
        return 0.0 if row is None or row[0] is None else float(row[0])

    def counts(self) -> dict[str, int]:
        return {p: int(n) for p, n in self._db.execute("SELECT position, COUNT(*) FROM accruals GROUP BY 1")}

    def rows(self, position: str) -> list[tuple[str, float, float, float]]:
        """(leg, funding_time, rate, amount_usd), oldest first."""
        return [
            (str(leg), float(t), float(r), float(a))
            for leg, t, r, a in self._db.execute(
                "SELECT leg, funding_time, rate, amount_usd FROM accruals WHERE position=? ORDER BY funding_time",
                (position,),
            )
        ]

    def first_seen(self, position: str, now: float) -> float:
        """When the position was first seen (persisted, so a restart does not move it)."""
        self._db.execute("INSERT OR IGNORE INTO first_seen VALUES (?, ?)", (position, now))
        row = self._db.execute("SELECT at FROM first_seen WHERE position=?", (position,)).fetchone()
        return float(row[0])

    def forget_first_seen(self, position: str) -> None:
        """A closed account position: a later one with the same name is a new position."""
        self._db.execute("DELETE FROM first_seen WHERE position=?", (position,))
