"""The AI sidecar on a replay: a simulator cascade is recorded through the exporter, then
``fr-exporter replay DIR --sidecar CONFIG --as-fast-as-possible`` runs the baseline model on the
replay's clock and ``fr-exporter evaluate`` prints the scores.

On the replay's clock means: the sidecar's loops wake at their own deadlines in recorded time (the
poll every 0.5 s, the schedule every 1 s, from the recording's first instant), so every prediction
is made at a multiple of 0.5 s after the first line (to float precision), and it is scored from the
liquidations the replayed /api/state showed within its horizon.
"""

from __future__ import annotations

import asyncio
import io
import math
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import free_port
from test_replay import TICK, live_recording

from exporter import cli
from exporter.model import Exchange
from exporter.recording import read_lines

pytestmark = pytest.mark.slow(seconds=6)  # the file: a cascade recorded live, then replayed with the sidecar

POLL_S = 0.5
SCHEDULE_S = 1.0
HORIZON_H = 0.005  # 18 s: the recording holds calm windows and windows over the crash
THRESHOLD_USD = 1_000_000.0


def sidecar_config(path: Path, db: Path) -> None:
    sidecar: dict[str, Any] = {
        "exporter_url": "http://127.0.0.1:9",  # unused: the replay answers /api/state in process
        "listen_address": f"127.0.0.1:{free_port()}",
        "db_path": str(db),
        "interval_seconds": SCHEDULE_S,
        "event_poll_seconds": POLL_S,
        "horizon_hours": HORIZON_H,
        "bases": ["BTC"],
        "event_threshold_usd": THRESHOLD_USD,
        # the baseline's memories on the simulator's seconds-long time scale (as tests/test_sidecar_sim.py)
        "vol_half_life_seconds": 8.0,
        "flow_half_life_seconds": 4.0,
        "cascade_distance_ratio": 0.05,
        "distance_decay": 0.5,
        "stress_weight": 0.4,
        "flow_scale": 1.0,
        "flow_persistence_seconds": 4.0 / math.log(2),
        "background_rate_per_hour": 0.0,
    }
    path.write_text(yaml.safe_dump({"sidecar": sidecar}))


async def record_cascade(directory: Path) -> dict[str, Any]:
    """20 s calm, a cascade, 41 s after: the exporter's configuration (the replay uses the same). Over a
    minute whatever the start took: the exporter may serve before the harness moved the clock at all
    (then 40 s after gave predictions spread over exactly 60 s, and the spread below is > 60 s)."""
    async with live_recording(directory) as live:
        for _ in range(round(20 / TICK)):
            await live.tick()
        for ex in Exchange:
            r = await live.http.post(live.sim.urls(ex)[1] + "/_sim/scenario", json={"name": "cascade", "seconds": 3.0})
            assert r.status_code == 200, r.text
        for _ in range(round(41 / TICK)):
            await live.tick()
        return live.exporter.config.model_dump(mode="json", exclude_unset=True)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


async def test_the_baseline_is_scored_on_a_replayed_cascade_on_the_replays_clock(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    exporter_cfg = tmp_path / "exporter.yaml"
    exporter_cfg.write_text(yaml.safe_dump(await record_cascade(rec)))
    times = [float(d["t"]) for d in read_lines(rec)]
    first, last = min(times), max(times)
    db = tmp_path / "replay.sqlite"
    cfg = tmp_path / "sidecar.yaml"
    sidecar_config(cfg, db)

    code, out = await asyncio.to_thread(
        run_cli, "replay", str(rec), "--config", str(exporter_cfg), "--sidecar", str(cfg), "--as-fast-as-possible"
    )
    assert code == 0, out
    assert str(db) in out and "fr-exporter evaluate" in out

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT made_at, horizon_hours, outcome, liquidated_usd FROM predictions").fetchall()
        (end_seen,) = conn.execute("SELECT MAX(at) FROM flows WHERE base = 'BTC'").fetchone()
    assert len(rows) > 50, len(rows)  # one a second over a minute and more of recorded time
    made = [float(r[0]) for r in rows]
    assert all(first <= t <= last for t in made), (first, last, made[:3])
    # made at the sidecar's own deadlines in recorded time: multiples of the poll period from the start
    steps = [(t - first) / POLL_S for t in made]
    assert all(abs(s - round(s)) < 1e-6 for s in steps), steps[:10]
    assert max(made) - min(made) > 60.0  # spread over the recording, not bunched at its end
    # scored: every prediction whose horizon ended by the last observation, from what was observed
    due = [r for r in rows if float(r[0]) + HORIZON_H * 3600.0 <= end_seen]
    scored = [r for r in rows if r[2] is not None]
    assert len(scored) == len(due) > 20
    outcomes = {int(r[2]) for r in scored}
    assert outcomes == {0, 1}, "the windows over the crash and the calm ones both scored"
    assert all((r[3] >= THRESHOLD_USD) == bool(r[2]) for r in scored)

    code, report = await asyncio.to_thread(run_cli, "evaluate", "--config", str(cfg))
    assert code == 0
    assert f"model baseline, horizon {HORIZON_H:g}h: {len(scored)} scored" in report, report
    assert "brier" in report


def test_sidecar_replay_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: Any) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    cfg = tmp_path / "sidecar.yaml"
    sidecar_config(cfg, tmp_path / "db.sqlite")
    code = cli.main(["replay", str(rec), "--sidecar", str(cfg), "--openmetrics", str(tmp_path / "o.om")])
    assert code == 2 and "one at a time" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["replay", str(rec), "--sidecar", str(tmp_path / "absent.yaml")])
    assert exited.value.code == 2 and "absent.yaml" in capsys.readouterr().err
    assert not (tmp_path / "db.sqlite").exists()
