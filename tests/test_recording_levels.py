"""recording.level: the default chosen by bench_recording.py, the ranges checked in the configuration,
and a replay that reads files written at any level."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter.app import Exporter
from exporter.config import RECORDING_GZIP_LEVEL, RECORDING_ZSTD_LEVEL, Config, RecordingConfig
from exporter.model import Exchange, InstrumentInfo
from exporter.recording import Recorder, read_lines, recording_files
from exporter.replay import Replay

T0 = 1_700_000_000.0
INFO = InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT", funding_interval_s=28800.0)


def _frame(i: int) -> bytes:
    e = int((T0 + i) * 1000)
    return (
        f'{{"stream":"!markPrice@arr@1s","data":[{{"e":"markPriceUpdate","E":{e},"s":"BTCUSDT",'
        f'"p":"{60000 + i * 1.25:.8f}","P":"60000.00000000","i":"60001.00000000","r":"0.00010000",'
        f'"T":{e + 3_600_000}}}]}}'
    ).encode()


def test_the_default_level_is_the_chosen_one_and_a_set_level_overrides_it(tmp_path: Path) -> None:
    assert RECORDING_ZSTD_LEVEL == -3 and RECORDING_GZIP_LEVEL == 1  # docs/recording.md "Which zstd level"
    zstd = Config.model_validate({"recording": {"dir": str(tmp_path), "compression": "zstd"}})
    assert zstd.recording.level == -3
    recorder = Exporter(zstd).recorder
    assert recorder is not None and (recorder.compression, recorder.level) == ("zstd", -3)
    auto = Config.model_validate({"recording": {"dir": str(tmp_path)}})  # zstandard is installed for the tests
    assert (auto.recording.compression, auto.recording.level) == ("auto", -3)
    assert RecordingConfig(dir=tmp_path, compression="gzip").level == 1
    assert RecordingConfig(dir=tmp_path, compression="zstd", level=1).level == 1
    assert Recorder(tmp_path, compression="zstd").level == -3 and Recorder(tmp_path, compression="gzip").level == 1


@pytest.mark.parametrize(
    ("compression", "level", "message"),
    [
        ("zstd", 23, r"recording\.level 23: zstd takes -131072\.\.22 \(negative levels: faster, larger files\)"),
        ("zstd", -131073, r"recording\.level -131073: zstd takes -131072\.\.22"),
        ("auto", 99, r"recording\.level 99: zstd takes -131072\.\.22"),
        ("gzip", -3, r"recording\.level -3: gzip takes 0\.\.9"),
        ("gzip", 10, r"recording\.level 10: gzip takes 0\.\.9"),
    ],
)
def test_a_level_out_of_range_is_a_clear_configuration_error(
    tmp_path: Path, compression: str, level: int, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Config.model_validate({"recording": {"dir": str(tmp_path), "compression": compression, "level": level}})
    with pytest.raises(ValueError, match=message.split(r" \(")[0]):
        Recorder(tmp_path, compression="zstd" if compression == "auto" else compression, level=level)  # type: ignore[arg-type]


# zstd: its extremes, the fast (negative) levels, the usual ones and a slow one (20-22 write the same
# format with a 64-128 MiB window, inside the reader's default limit, but need about 1 GB to write);
# gzip: all of them
LEVELS = [("zstd", lv) for lv in (-131072, -50, -5, -3, -1, 1, 3, 9, 19)] + [("gzip", lv) for lv in range(10)]


@pytest.mark.parametrize(("compression", "level"), LEVELS)
def test_replay_reads_a_recording_of_every_level(tmp_path: Path, compression: str, level: int) -> None:
    rec = Recorder(tmp_path, compression=compression, level=level)  # type: ignore[arg-type]
    rec.start()
    rec.meta(T0 - 1.0, Exchange.BINANCE, "followed", [INFO])
    hook = rec.stream_hook(Exchange.BINANCE, "markPrice")
    for i in range(40):  # a batch of small frames (the writer's batch path) and single ones
        hook(T0 + i, _frame(i), True)
    rec.close()
    (path,) = recording_files(tmp_path)
    assert path.name.endswith(".jsonl.zst" if compression == "zstd" else ".jsonl.gz")
    assert [d["data"] for d in read_lines(tmp_path)][1:] == [_frame(i) for i in range(40)]
    replay = Replay(Config(), tmp_path)
    stats = asyncio.run(replay.run())
    assert stats.frames == 40
    st = replay.state.instruments[(Exchange.BINANCE, "BTCUSDT")]
    assert st.mark_price == pytest.approx(60000 + 39 * 1.25)
