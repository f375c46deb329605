"""SQLite store: predictions, observed liquidation flow and mark prices per base asset.

It survives restarts, so predictions made before a restart are still scored after it, the
baseline keeps its volatility history, and the liquidation counters keep being differenced.

Liquidation flow: /api/state carries cumulative counters per (exchange, instrument, side) since the
exporter started. Each read is differenced against the previous one; a counter that went *down*
means the exporter restarted, and its new value is what was liquidated since. A counter seen for
the first time, or after a gap longer than ``max_gap_seconds``, sets the baseline only: that
flow cannot be placed in time. Each read stores one ``flows`` row per base (zero included), so
the rows also record which time ranges were observed.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from exporter.sidecar.features import BaseSnapshot
from exporter.sidecar.schema import RiskAnswer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL, base TEXT NOT NULL, made_at REAL NOT NULL, horizon_hours REAL NOT NULL,
    probability REAL NOT NULL, confidence REAL NOT NULL, risk_level TEXT NOT NULL, answer TEXT NOT NULL,
    outcome INTEGER, liquidated_usd REAL, scored_at REAL,
    calibrated REAL,  -- the calibrated probability published at the time (NULL: no calibration yet)
    features TEXT     -- the baseline's inputs (JSON), for fr-exporter fit-baseline
);
CREATE INDEX IF NOT EXISTS predictions_open ON predictions (outcome, made_at);
CREATE TABLE IF NOT EXISTS counters (
    exchange TEXT NOT NULL, instrument TEXT NOT NULL, side TEXT NOT NULL, notional_usd REAL NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (exchange, instrument, side)
);
CREATE TABLE IF NOT EXISTS flows (base TEXT NOT NULL, at REAL NOT NULL, liquidated_usd REAL NOT NULL);
CREATE INDEX IF NOT EXISTS flows_base_at ON flows (base, at);
CREATE TABLE IF NOT EXISTS prices (base TEXT NOT NULL, at REAL NOT NULL, price REAL NOT NULL);
CREATE INDEX IF NOT EXISTS prices_base_at ON prices (base, at);
"""


# columns added after the first release: (name, declaration) added to an older database on open
_MIGRATIONS = (("calibrated", "REAL"), ("features", "TEXT"))


@dataclass(frozen=True, slots=True)
class ScoredPrediction:
    model: str
    base: str
    made_at: float
    probability: float
    outcome: bool
    horizon_hours: float = 0.0
    calibrated: float | None = None


class Store:
    def __init__(self, path: Path | str, max_gap_seconds: float = 600.0) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path))
        # WAL + NORMAL: one read every few seconds need not fsync each commit; a crash loses at most the last few.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(predictions)")}
        with self._db:
            for name, decl in _MIGRATIONS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE predictions ADD COLUMN {name} {decl}")
        self.max_gap_seconds = max_gap_seconds

    def close(self) -> None:
        self._db.close()

    # -- observations -------------------------------------------------------------------------

    def record_state(self, snaps: Mapping[str, BaseSnapshot], at: float) -> dict[str, float]:
        """Difference the cumulative liquidation counters; store flow and price per base. -> flow per base."""
        flows: dict[str, float] = {}
        with self._db:
            prev = {
                (ex, ins, side): (n, t)
                for ex, ins, side, n, t in self._db.execute(
                    "SELECT exchange, instrument, side, notional_usd, at FROM counters"
                )
            }
            for base, snap in snaps.items():
                total = 0.0
                for row in snap.rows:
                    for side, value in (("long", row.liq_total_long_usd), ("short", row.liq_total_short_usd)):
                        key = (row.exchange, row.instrument, side)
                        total += self._delta(prev.get(key), value, at)
                        self._db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?, ?, ?, ?)", (*key, value, at))
                flows[base] = total
                self._db.execute("INSERT INTO flows VALUES (?, ?, ?)", (base, at, total))
                price = snap.price()
                if price is not None:
                    self._db.execute("INSERT INTO prices VALUES (?, ?, ?)", (base, at, price))
        return flows

    def _delta(self, prev: tuple[float, float] | None, value: float, at: float) -> float:
        if prev is None:
            return 0.0
        old, old_at = prev
        if at - old_at > self.max_gap_seconds:
            return 0.0
        if value < old:
            return value  # the exporter restarted: its counter began again at zero
        return value - old

    def liquidated_between(self, base: str, start: float, end: float) -> float:
        """Liquidated notional observed in (start, end] for a base."""
        (total,) = self._db.execute(
            "SELECT COALESCE(SUM(liquidated_usd), 0) FROM flows WHERE base = ? AND at > ? AND at <= ?",
            (base, start, end),
        ).fetchone()
        return float(total)

    def decayed_flow(self, base: str, now: float, half_life_seconds: float) -> float:
        """Exponentially decayed sum of recent liquidation flow (USD, weight 1/2 per half-life of age)."""
        rows = self._db.execute(
            "SELECT at, liquidated_usd FROM flows WHERE base = ? AND at > ? AND liquidated_usd > 0",
            (base, now - 10 * half_life_seconds),
        ).fetchall()
        k = math.log(2) / half_life_seconds
        return float(sum(usd * math.exp(-k * max(0.0, now - at)) for at, usd in rows))

    def prices(self, base: str, since: float) -> list[tuple[float, float]]:
        return [
            (float(a), float(p))
            for a, p in self._db.execute(
                "SELECT at, price FROM prices WHERE base = ? AND at >= ? ORDER BY at", (base, since)
            )
        ]

    def last_observation_at(self, base: str) -> float | None:
        (at,) = self._db.execute("SELECT MAX(at) FROM flows WHERE base = ?", (base,)).fetchone()
        return None if at is None else float(at)

    def prune(self, before: float) -> None:
        with self._db:
            self._db.execute("DELETE FROM prices WHERE at < ?", (before,))
            self._db.execute(
                "DELETE FROM flows WHERE at < ? AND at < (SELECT COALESCE(MIN(made_at), ?) FROM predictions"
                " WHERE outcome IS NULL)",
                (before, before),
            )

    # -- predictions --------------------------------------------------------------------------

    def add_prediction(
        self,
        model: str,
        base: str,
        made_at: float,
        horizon_hours: float,
        answer: RiskAnswer,
        calibrated: float | None = None,
        features: str | None = None,
    ) -> int:
        with self._db:
            cur = self._db.execute(
                "INSERT INTO predictions (model, base, made_at, horizon_hours, probability, confidence, risk_level,"
                " answer, calibrated, features) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    base,
                    made_at,
                    horizon_hours,
                    answer.liquidation_probability,
                    answer.confidence,
                    answer.risk_level.value,
                    answer.to_json(),
                    calibrated,
                    features,
                ),
            )
        return int(cur.lastrowid or 0)

    def score_due(self, now: float, threshold_usd: float) -> int:
        """Give an outcome to every prediction whose horizon has passed and was observed to its end."""
        due = self._db.execute(
            "SELECT id, base, made_at, horizon_hours FROM predictions"
            " WHERE outcome IS NULL AND made_at + horizon_hours * 3600 <= ?",
            (now,),
        ).fetchall()
        scored = 0
        with self._db:
            for pid, base, made_at, horizon in due:
                end = made_at + horizon * 3600.0
                last = self.last_observation_at(base)
                if last is None or last < end:
                    continue  # not yet observed to the end of its horizon
                liquidated = self.liquidated_between(base, made_at, end)
                self._db.execute(
                    "UPDATE predictions SET outcome = ?, liquidated_usd = ?, scored_at = ? WHERE id = ?",
                    (int(liquidated >= threshold_usd), liquidated, now, pid),
                )
                scored += 1
        return scored

    def scored(
        self, model: str | None = None, base: str | None = None, horizon_hours: float | None = None, limit: int = 0
    ) -> list[ScoredPrediction]:
        """Scored predictions, oldest first (``limit``: only the most recent ones)."""
        sql = (
            "SELECT model, base, made_at, probability, outcome, horizon_hours, calibrated FROM predictions"
            " WHERE outcome IS NOT NULL"
        )
        args: list[object] = []
        for column, value in (("model", model), ("base", base), ("horizon_hours", horizon_hours)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        sql += " ORDER BY made_at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit > 0 else "")
        rows = [
            ScoredPrediction(
                model=m,
                base=b,
                made_at=float(t),
                probability=float(p),
                outcome=bool(o),
                horizon_hours=float(h),
                calibrated=None if c is None else float(c),
            )
            for m, b, t, p, o, h, c in self._db.execute(sql, args)
        ]
        rows.reverse()
        return rows

    def groups(self) -> list[tuple[str, str, float]]:
        """Every (model, base, horizon_hours) with predictions."""
        return [
            (m, b, float(h))
            for m, b, h in self._db.execute(
                "SELECT DISTINCT model, base, horizon_hours FROM predictions ORDER BY model, base, horizon_hours"
            )
        ]

    def pending_count(self, model: str, base: str, horizon_hours: float) -> int:
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM predictions WHERE outcome IS NULL AND model = ? AND base = ? AND horizon_hours = ?",
            (model, base, horizon_hours),
        ).fetchone()
        return int(n)

    def baseline_samples(self, model: str = "baseline") -> list[tuple[str, float, str]]:
        """(base, made_at, features JSON) of the predictions that stored their inputs."""
        return [
            (b, float(t), f)
            for b, t, f in self._db.execute(
                "SELECT base, made_at, features FROM predictions WHERE model = ? AND features IS NOT NULL"
                " ORDER BY made_at",
                (model,),
            )
        ]

    def flows(self, base: str) -> list[tuple[float, float]]:
        """(time, liquidated USD since the previous read) of every read, oldest first."""
        return [
            (float(a), float(u))
            for a, u in self._db.execute("SELECT at, liquidated_usd FROM flows WHERE base = ? ORDER BY at", (base,))
        ]

    def models(self) -> list[str]:
        return [m for (m,) in self._db.execute("SELECT DISTINCT model FROM predictions ORDER BY model")]

    def prediction_count(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM predictions").fetchone()
        return int(n)

    def predictions(self, model: str | None = None) -> Iterable[tuple[str, str, float, float, int | None]]:
        """(model, base, made_at, probability, outcome) in insertion order."""
        sql = "SELECT model, base, made_at, probability, outcome FROM predictions"
        if model is None:
            return list(self._db.execute(sql + " ORDER BY id"))
        return list(self._db.execute(sql + " WHERE model = ? ORDER BY id", (model,)))
