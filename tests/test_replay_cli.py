"""`fr-exporter replay DIR` serves /metrics and /api/state of the replayed state; `--openmetrics`
writes the backfill file; bad arguments are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from support import ROOT, free_port, wait_for

from exporter import cli
from exporter.model import Exchange, InstrumentInfo
from exporter.recording import Recorder

T0 = 1_765_541_400.0


def _frame(price: float, e_ms: int) -> str:
    return (
        f'{{"stream":"btcusdt@markPrice@1s","data":{{"e":"markPriceUpdate","E":{e_ms},"s":"BTCUSDT",'
        f'"p":"{price:.2f}","i":"{price:.2f}","P":"{price:.2f}","r":"0.00010000","T":{e_ms + 3_600_000}}}}}'
    )


def _recording(directory: Path) -> None:
    rec = Recorder(directory)
    rec.start()
    rec.meta(T0, Exchange.BINANCE, "followed", [InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT")])
    hook = rec.stream_hook(Exchange.BINANCE, "markPrice")
    for i in range(20):
        hook(T0 + 1 + i, _frame(60_000.0 + i, int((T0 + 1 + i) * 1000)), True)
    rec.close()


def test_replay_serves_the_replayed_state(tmp_path: Path) -> None:
    _recording(tmp_path / "rec")
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "exporter.cli", "replay", str(tmp_path / "rec")),
            *("--as-fast-as-possible", "--web.listen-address", f"127.0.0.1:{port}"),
        ],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def state() -> dict[str, object] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as r:
                    doc = json.loads(r.read())
            except OSError:
                return None
            rows = [i for i in doc["instruments"] if i["instrument"] == "BTCUSDT"]
            return doc if rows and rows[0]["mark_price"] == 60_019.0 else None

        doc = wait_for(state, 30, what="the replayed state on /api/state")
        assert doc["generated_at"] == T0 + 20  # the replay's clock, not the wall clock
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'fr_mark_price{base="BTC",exchange="binance",instrument="BTCUSDT",quote="USDT"} 60019.0' in text
        assert 'fr_stream_messages_total{exchange="binance",stream="markPrice"} 20.0' in text
    finally:
        proc.terminate()
        proc.wait(15)


def test_replay_openmetrics_and_errors(tmp_path: Path, capsys: Any) -> None:
    """In process (the serving test above runs the real command): the backfill file and the errors."""
    _recording(tmp_path / "rec")
    out = tmp_path / "out.om"
    run = ["replay", str(tmp_path / "rec")]
    assert cli.main([*run, "--openmetrics", str(out), "--step", "5s"]) == 0, capsys.readouterr().err
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("fr_mark_price{")]
    # steps at T0 (no price yet), T0+5, ..., T0+20: the price of the last frame received up to each
    assert [ln.rsplit(" ", 2)[1:] for ln in lines] == [
        ["60004.0", f"{T0 + 5:.3f}"],
        ["60009.0", f"{T0 + 10:.3f}"],
        ["60014.0", f"{T0 + 15:.3f}"],
        ["60019.0", f"{T0 + 20:.3f}"],
    ]
    capsys.readouterr()
    assert cli.main([*run, "--step", "0s", "--openmetrics", str(out)]) == 2
    assert "positive duration" in capsys.readouterr().err
    assert cli.main([run[0], str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
