"""The writer's batch path (Recorder._bulk) writes exactly what the item-by-item path writes."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

import exporter.recording as recording
from exporter.model import Exchange
from exporter.recording import Recorder, read_lines, recording_files

T0 = 1_700_000_000.0
BULK_MIN = recording.BULK_MIN
BULK = Recorder._bulk


def _ticker(i: int) -> bytes:
    s = f"B{i % 7:04d}USDT"
    return (
        f'{{"topic":"tickers.{s}","type":"delta","data":{{"symbol":"{s}","markPrice":"{100 + i * 0.01:.2f}"}},'
        f'"cs":{i},"ts":{1_700_000_000_000 + i}}}'
    ).encode()


def _feed(rec: Recorder) -> None:
    """3,000 items as the loop queues them: small parsed frames of three streams, and among them
    everything the batch path must leave to the item-by-item path, in places that split batches."""
    bybit = rec.stream_hook(Exchange.BYBIT, "tickers")
    bybit_liq = rec.stream_hook(Exchange.BYBIT, "liquidation")
    okx = rec.stream_hook(Exchange.OKX, "mark-price")
    rest = rec.rest_hook(Exchange.OKX)
    odd: dict[int, Any] = {
        700: lambda t: bybit(t, _ticker(1).decode(), True),  # str (the former hand-over)
        901: lambda t: bybit(t, '{"note":"caf\u00e9"}'.encode(), True),  # UTF-8, not ASCII
        1100: lambda t: bybit(t, b'{"x":"\xff"}', True),  # not UTF-8: base64
        1300: lambda t: bybit(t, b'{"a":\n1}', True),  # a line feed: escaped
        1500: lambda t: bybit(t, b"<not json>", False),  # did not parse
        1700: lambda t: bybit(t, b"[1,2]" + b" " * 5000, True),  # larger than SMALL_FRAME
        1900: lambda t: rest(t - 0.5, t, "open_interest", "/api/v5/public/open-interest", {"instId": "X"}, b"{}"),
        2100: lambda t: okx(t, b'{"arg":{"channel":"mark-price"}}', True),  # a new stream
        2400: lambda t: bybit_liq(t, b'{"topic":"allLiquidation"}', True),  # and another
    }
    for i in range(3000):
        t = T0 + i * 0.01  # 30 s of receive time: rotation every 10 s falls inside batches
        if i in odd:
            odd[i](t)
        elif 2600 <= i < 2640:  # a run of large frames (all-market arrays): item by item, not halved
            bybit(t, b"[%d]" % i + b" " * 5000, True)
        elif i % 3 == 0 and i > 2100:
            okx(t, b'{"arg":{"channel":"mark-price"},"data":[{"markPx":"%d"}]}' % i, True)
        else:
            bybit(t, _ticker(i), True)


def _record(directory: Path, bulk_min: int, monkeypatch: pytest.MonkeyPatch, compression: str) -> list[int]:
    """Record the items (all queued before the writer starts: it takes full batches); the batch
    sizes the batch path wrote."""
    monkeypatch.setattr(recording, "BULK_MIN", bulk_min)
    done: list[int] = []

    def spy(self: Recorder, items: list[Any]) -> bool | None:
        ok = BULK(self, items)
        if ok is True:
            done.append(len(items))
        return ok

    monkeypatch.setattr(Recorder, "_bulk", spy)
    rec = Recorder(directory, rotate_seconds=10.0, compression=compression, queue_size=10_000)  # type: ignore[arg-type]
    _feed(rec)
    rec.start()
    rec.close()
    assert rec.stats.dropped == 0 and rec.stats.frames_ws == 2999 and rec.stats.frames_rest == 1
    return done


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_the_batch_path_writes_the_same_bytes_as_item_by_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    one = _record(tmp_path / "one", 1 << 30, monkeypatch, compression)  # never batched
    batched = _record(tmp_path / "batched", BULK_MIN, monkeypatch, compression)
    assert one == []
    assert sum(batched) > 2650, sum(batched)  # the odd items and their neighbours go item by item
    files_one, files_batched = recording_files(tmp_path / "one"), recording_files(tmp_path / "batched")
    assert [p.name for p in files_one] == [p.name for p in files_batched] and len(files_one) == 3

    def text(p: Path) -> bytes:
        if compression == "gzip":
            return gzip.decompress(p.read_bytes())
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes())

    for a, b in zip(files_one, files_batched, strict=True):
        assert text(a) == text(b)
    lines = list(read_lines(tmp_path / "batched"))
    assert len(lines) == 3000 and [d["t"] for d in lines] == sorted(d["t"] for d in lines)
    assert lines[5]["data"] == _ticker(5) and lines[5]["src"] == "tickers" and lines[5]["ex"] == "bybit"
    assert lines[2103]["src"] == "mark-price" and lines[2103]["data"].endswith(b'"markPx":"2103"}]}')
