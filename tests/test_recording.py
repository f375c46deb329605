"""Recording: the line format (pandas reads it), rotation, the size cap, no secrets, and a slow
disk that drops and counts frames without holding up the state."""

from __future__ import annotations

import base64
import gzip
import threading
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pandas as pd  # type: ignore[import-untyped]
import pytest

from exporter.app import Exporter
from exporter.config import Config, RecordingConfig
from exporter.feeds.base import FeedContext, WsPlan
from exporter.feeds.binance import BinanceFeed
from exporter.feeds.connection import FeedConnection
from exporter.model import Exchange, InstrumentInfo
from exporter.recording import Recorder, read_lines, recording_files
from exporter.rest.client import RestClient
from exporter.state import MarketState


def _frame(i: int, price: float = 100.0) -> str:
    e, t = 1_700_000_000_000 + i, 1_700_003_600_000
    return (
        f'{{"stream":"btcusdt@markPrice@1s","data":{{"e":"markPriceUpdate","E":{e},"s":"BTCUSDT",'
        f'"p":"{price:.2f}","i":"{price:.2f}","P":"{price:.2f}","r":"0.00010000","T":{t}}}}}'
    )


def test_lines_are_json_that_pandas_reads_and_files_rotate_by_receive_time(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, rotate_seconds=10.0)
    rec.start()
    for i in range(30):  # 30 s of receive time: three files
        rec.ws(1_700_000_000.0 + i, Exchange.BINANCE, "markPrice", _frame(i))
    rec.rest_hook(Exchange.OKX)(
        1_700_000_029.4, 1_700_000_029.5, "open_interest", "/api/v5/public/open-interest", {"instId": "X"}, b"{}"
    )
    rec.close()
    files = recording_files(tmp_path)
    assert len(files) == 3 and all(p.name.endswith(".jsonl.gz") for p in files)
    frames = pd.concat([pd.read_json(p, lines=True, compression="gzip") for p in files], ignore_index=True)
    assert len(frames) == 31
    assert list(frames["kind"]).count("ws") == 30
    assert frames["t"].iloc[0] == pytest.approx(1_700_000_000.0)
    assert frames["data"].iloc[5] == _frame(5)  # the raw frame, byte for byte
    last = frames.iloc[-1]
    assert (last["ex"], last["src"], last["path"], last["q"]) == (
        "okx",
        "open_interest",
        "/api/v5/public/open-interest",
        {"instId": "X", "_sent": 1_700_000_029.4},
    )
    assert rec.snapshot()["frames_ws"] == 30 and rec.snapshot()["frames_rest"] == 1
    assert rec.snapshot()["bytes"] == sum(p.stat().st_size for p in files)
    assert [d["t"] for d in read_lines(tmp_path)] == sorted(frames["t"])


def test_frames_that_parsed_are_embedded_unescaped_and_come_back_byte_for_byte(tmp_path: Path) -> None:
    import orjson

    rec = Recorder(tmp_path)
    rec.start()
    hook = rec.stream_hook(Exchange.BINANCE, "markPrice")
    hook(1_700_000_000.0, _frame(1), True)  # parsed: JSON, written as it is
    hook(1_700_000_001.0, '{"a":\n1}', True)  # a line break inside: escaped after all
    hook(1_700_000_002.0, '{"garbage": \x00<<not json', False)  # did not parse: escaped
    hook(1_700_000_003.0, '{"b":\r2}', True)  # a carriage return is JSON whitespace: as it is
    rec.close()
    (path,) = recording_files(tmp_path)
    raw_lines = gzip.decompress(path.read_bytes()).split(b"\n")
    assert raw_lines[0].endswith(b',"raw":true,"data":' + _frame(1).encode() + b"}")
    df = pd.read_json(path, lines=True)
    assert df["data"].iloc[0] == orjson.loads(_frame(1))  # pandas sees the frame as an object
    assert list(df["data"].iloc[1:3]) == ['{"a":\n1}', '{"garbage": \x00<<not json']
    assert df["data"].iloc[3] == {"b": 2} and raw_lines[3].endswith(b'"data":{"b":\r2}}')
    got = [d["data"] for d in read_lines(tmp_path)]
    assert got == [_frame(1).encode(), '{"a":\n1}', '{"garbage": \x00<<not json', b'{"b":\r2}']


def test_frame_bytes_that_are_not_utf8_are_not_embedded_as_json(tmp_path: Path) -> None:
    # The connection hands the bytes received, undecoded, and a typed decoder reads only its fields:
    # a frame may parse with a byte that is not UTF-8 in a field it skipped. Embedded, the line would
    # not be JSON text; it is kept as base64 instead, and comes back byte for byte.
    bad = b'{"e":"markPriceUpdate","x":"\xff\xfe"}'
    good = '{"note":"caf\u00e9"}'.encode()  # non-ASCII UTF-8: embedded as it is
    rec = Recorder(tmp_path)
    rec.start()
    hook = rec.stream_hook(Exchange.BINANCE, "markPrice")
    hook(1_700_000_000.0, bad, True)
    hook(1_700_000_001.0, good, True)
    rec.close()
    (path,) = recording_files(tmp_path)
    raw_lines = gzip.decompress(path.read_bytes()).split(b"\n")
    assert raw_lines[1].endswith(b',"raw":true,"data":' + good + b"}")
    df = pd.read_json(path, lines=True)  # every line is JSON text
    assert bool(df["b64"].iloc[0]) and df["data"].iloc[1] == {"note": "caf\u00e9"}
    first, second = read_lines(tmp_path)
    assert first["b64"] is True and base64.b64decode(first["data"]) == bad
    assert second["data"] == good and "b64" not in second


def test_the_oldest_files_are_deleted_beyond_the_cap(tmp_path: Path) -> None:
    import random

    rng = random.Random(1)
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(4000))  # compresses badly
    rec = Recorder(tmp_path, rotate_seconds=1.0, max_bytes=40_000)
    rec.start()
    for i in range(60):
        rec.ws(1_700_000_000.0 + i, Exchange.BYBIT, "tickers", noise[i:] + noise[:i])
    rec.close()
    files = recording_files(tmp_path)
    on_disk = sum(p.stat().st_size for p in files)
    assert on_disk <= 40_000 + 40_000 // 4 + 4096  # the cap, plus at most the file being written
    assert rec.stats.files_deleted > 0
    kept = [d["t"] for d in read_lines(tmp_path)]
    assert kept == sorted(kept) and kept[-1] == 1_700_000_059.0  # the newest survive


class _BlockedRecorder(Recorder):
    """A disk that does not move until released: the writer holds the first frame."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.release = threading.Event()
        self.writing = threading.Event()

    def _write(self, item: Any) -> None:
        self.writing.set()
        self.release.wait(30)
        super()._write(item)


async def test_a_slow_disk_drops_and_counts_frames_but_the_state_is_updated_at_once(tmp_path: Path) -> None:
    state = MarketState(clock=lambda: 1_700_000_000.5)
    info = InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT")
    state.register(info)
    ctx = FeedContext(Exchange.BINANCE, {"BTCUSDT": info})
    conn = FeedConnection(BinanceFeed(), WsPlan("markPrice", "ws://127.0.0.1:1"), ctx, state)
    rec = _BlockedRecorder(tmp_path, queue_size=5)
    rec.start()
    conn.recorder = rec.stream_hook(Exchange.BINANCE, "markPrice")
    rec.ws(1.0, Exchange.BINANCE, "markPrice", _frame(0))
    assert rec.writing.wait(10)  # the writer is stuck on its first frame; the queue is empty again
    st = state.instruments[(Exchange.BINANCE, "BTCUSDT")]
    for i in range(1, 51):
        price = 100.0 + i
        await conn._handle(None, _frame(i, price), 1_700_000_000.0 + i)  # type: ignore[arg-type]
        # the frame's value is in the state as soon as the frame was handled, recorder or not
        assert st.mark_price == pytest.approx(price)
    assert rec.stats.dropped == 50 - 5  # five waited in the queue; the rest were dropped and counted
    rec.release.set()
    rec.close()
    assert rec.stats.frames_ws == 1 + 5
    assert len(list(read_lines(tmp_path))) == 6


def test_a_full_queue_gives_way_to_the_newest_items_and_counts_each_one_pushed_out(tmp_path: Path) -> None:
    """The loop never checks the queue's length: a full queue pushes its oldest items out, whole (a
    REST line among frames too), and the dropped count says how many, from the totals."""
    rec = Recorder(tmp_path, queue_size=4)  # not started yet: the writer takes nothing
    hook = rec.stream_hook(Exchange.BINANCE, "markPrice")
    rest = rec.rest_hook(Exchange.BINANCE)
    t0 = 1_700_000_000.0
    hook(t0, _frame(0).encode(), True)
    rest(t0 + 0.5, t0 + 1.0, "premium_index", "/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"}, b"{}")
    for i in range(2, 7):
        hook(t0 + i, _frame(i).encode(), True)
    assert rec.handed() == 7
    assert rec.stats.dropped == 3  # seven items into room for four: frame 0, the REST line, frame 2
    rec.start()
    rec.close()
    lines = list(read_lines(tmp_path))
    assert [d["t"] for d in lines] == [t0 + i for i in range(3, 7)] and {d["kind"] for d in lines} == {"ws"}
    assert lines[0]["data"] == _frame(3).encode()
    s = rec.stats
    assert (s.frames_ws, s.frames_rest, s.dropped) == (4, 0, 3)
    hook(t0 + 7, _frame(7).encode(), True)  # after close: handed over, never written, counted
    assert rec.stats.dropped == 4 and rec.snapshot()["dropped"] == 4


def _took_more(rec: Recorder, written: int) -> bool:
    return rec.stats.frames_ws > written


def test_while_the_writer_works_the_dropped_count_only_grows_and_ends_exact(tmp_path: Path) -> None:
    """Bursts into a small queue with the writer draining beside them (it takes items while the count
    is read): the count never goes back, and at the end every frame is either written or counted as
    dropped, none twice."""
    from support import wait_for

    rec = Recorder(tmp_path, queue_size=64, flush_seconds=0.005)
    rec.start()
    hook = rec.stream_hook(Exchange.BINANCE, "markPrice")
    frame = _frame(0).encode()
    seen = [0]
    n = 0
    for _ in range(30):
        written = rec.stats.frames_ws
        for _ in range(200):  # a burst: more than the queue holds
            hook(1_700_000_000.0 + n * 1e-3, frame, True)
            n += 1
            if n % 7 == 0:
                seen.append(rec.stats.dropped)
        wait_for(partial(_took_more, rec, written), 20.0, 0.002, "the writer to take some")
        seen.append(rec.stats.dropped)
    assert seen == sorted(seen) and seen[-1] > 0  # a counter: never lower than a value shown before
    rec.close()
    s = rec.stats
    assert s.frames_ws + s.dropped == n and s.dropped >= seen[-1] and s.frames_ws >= 30
    assert sum(1 for _ in read_lines(tmp_path)) == s.frames_ws


async def test_two_connections_of_one_stream_count_their_frames_once(tmp_path: Path) -> None:
    """A connection hands its frames to the queue itself and counts them once, in its stream's
    health; two connections sharing that health (a replaced plan) are not counted twice."""
    state = MarketState(clock=lambda: 1_700_000_000.5)
    info = InstrumentInfo(Exchange.BINANCE, "BTCUSDT", "BTC", "USDT")
    state.register(info)
    ctx = FeedContext(Exchange.BINANCE, {"BTCUSDT": info})
    rec = Recorder(tmp_path, queue_size=100)
    conns = [FeedConnection(BinanceFeed(), WsPlan("markPrice", "ws://127.0.0.1:1"), ctx, state) for _ in range(2)]
    assert conns[0].health is conns[1].health
    for c in conns:
        c.recorder = rec.stream_hook(Exchange.BINANCE, "markPrice")
    for i in range(6):
        await conns[i % 2].handle_frame(_frame(i).encode(), 1_700_000_000.0 + i)
    assert rec.handed() == 6 and rec.stats.dropped == 0
    rec.start()
    rec.close()
    assert [d["t"] for d in read_lines(tmp_path)] == [1_700_000_000.0 + i for i in range(6)]
    assert rec.stats.frames_ws == 6 and rec.stats.dropped == 0


async def test_signed_calls_are_never_recorded(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"ok": true}')

    state = MarketState()
    client = RestClient(Exchange.BYBIT, "http://127.0.0.1:1", state, transport=httpx.MockTransport(handler))
    rec = Recorder(tmp_path)
    rec.start()
    client.recorder = rec.rest_hook(Exchange.BYBIT)
    await client.get("open_interest", "/v5/market/open-interest", {"symbol": "BTCUSDT"})
    secret_key = "sEcReT-kEy-123"

    def sign(path: str, query: str) -> tuple[str, dict[str, str]]:
        return query + "&sign=abc", {"X-BAPI-API-KEY": secret_key}

    await client.get("positions", "/v5/position/list", {"category": "linear"}, sign=sign)
    await client.aclose()
    rec.close()
    lines = list(read_lines(tmp_path))
    assert [d["src"] for d in lines] == ["open_interest"]
    for p in recording_files(tmp_path):
        raw = gzip.decompress(p.read_bytes())
        assert secret_key.encode() not in raw and b"position" not in raw


@pytest.mark.parametrize("level", [None, 1, -5])  # None: the default (-3); 1 with the smaller match table
def test_zstd_files_read_the_same(tmp_path: Path, level: int | None) -> None:
    rec = Recorder(tmp_path, compression="zstd", level=level)
    rec.start()
    big = _frame(0).replace('"s":"BTCUSDT"', '"s":"BTCUSDT","x":"' + "y" * (1 << 21) + '"')  # > the buffer
    for i in range(3):
        rec.ws(1_700_000_000.0 + i, Exchange.BINANCE, "markPrice", _frame(i))
    rec.stream_hook(Exchange.BINANCE, "markPrice")(1_700_000_003.0, big.encode(), True)
    rec.close()
    (path,) = recording_files(tmp_path)
    assert path.name.endswith(".jsonl.zst")
    frames = pd.read_json(path, lines=True, compression="zstd")
    assert list(frames["data"][:3]) == [_frame(i) for i in range(3)]
    assert frames["data"][3]["data"]["x"] == "y" * (1 << 21)
    assert [d["data"] for d in read_lines(tmp_path)] == [_frame(i) for i in range(3)] + [big.encode()]


def test_a_level_gzip_does_not_have_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"gzip takes 0\.\.9"):
        Recorder(tmp_path, compression="gzip", level=-5)
    with pytest.raises(ValueError, match=r"gzip takes 0\.\.9"):
        RecordingConfig(dir=tmp_path, compression="gzip", level=12)


def test_the_configured_level_reaches_the_recorder(tmp_path: Path) -> None:
    config = Config.model_validate({"recording": {"dir": str(tmp_path), "compression": "zstd", "level": -3}})
    recorder = Exporter(config).recorder
    assert recorder is not None and (recorder.compression, recorder.level) == ("zstd", -3)
    gz = Config.model_validate({"recording": {"dir": str(tmp_path), "compression": "gzip", "level": 6}})
    assert Exporter(gz).recorder.level == 6  # type: ignore[union-attr]


async def test_failed_calls_are_recorded_without_body_and_replay_counts_them_as_live(tmp_path: Path) -> None:
    """A 503, a 429 and a 400 (whose body echoes the query) are lines with reason and status, no body; a
    failed signed call is not recorded; the replay's fr_rest_* counts equal the live client's."""
    from exporter.config import Config
    from exporter.replay import Replay

    answers = [
        httpx.Response(503, content=b"busy"),
        httpx.Response(429, content=b"slow down", headers={"Retry-After": "0"}),
        httpx.Response(200, content=b'{"retCode":0,"result":{"list":[]}}'),
        httpx.Response(400, content=b'{"retMsg":"bad symbol echo-me-not"}'),
        httpx.Response(401, content=b'{"retMsg":"sign echo-me-not"}'),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    async def no_wait(seconds: float) -> None:
        return None

    state = MarketState()
    client = RestClient(
        Exchange.BYBIT, "http://127.0.0.1:1", state, transport=httpx.MockTransport(handler), sleep=no_wait
    )
    rec = Recorder(tmp_path)
    rec.start()
    client.recorder = rec.rest_hook(Exchange.BYBIT)
    client.failure_recorder = rec.rest_failure_hook(Exchange.BYBIT)
    await client.get("long_short_ratio", "/v5/market/account-ratio", {"symbol": "BTCUSDT"})  # 503, 429, 200
    with pytest.raises(Exception, match="400"):
        await client.get("long_short_ratio", "/v5/market/account-ratio", {"symbol": "NOPE"})

    def sign(path: str, query: str) -> tuple[str, dict[str, str]]:
        return query + "&sign=abc", {"X-BAPI-API-KEY": "k"}

    with pytest.raises(Exception, match="401"):
        await client.get("positions", "/v5/position/list", {"category": "linear"}, sign=sign)
    await client.aclose()
    rec.close()

    lines = list(read_lines(tmp_path))
    errors = [(d["data"], d["q"].get("_status")) for d in lines if d["kind"] == "rest_error"]
    assert errors == [("http_5xx", 503), ("rate_limited", 429), ("http_4xx", 400)]
    for p in recording_files(tmp_path):
        raw = gzip.decompress(p.read_bytes())
        assert b"echo-me-not" not in raw and b"busy" not in raw and b"position" not in raw
    live = state.rest_endpoint(Exchange.BYBIT, "long_short_ratio")
    replay = Replay(Config(), tmp_path)
    stats = await replay.run()
    assert stats.rest_failures == 3 and stats.errors == 0
    replayed = replay.state.rest_endpoint(Exchange.BYBIT, "long_short_ratio")
    assert replayed.failures == live.failures == {"http_5xx": 1, "rate_limited": 1, "http_4xx": 1}
    assert replayed.requests == live.requests == 4


def test_a_burst_wakes_the_writer_before_its_flush_period(tmp_path: Path) -> None:
    """The loop does not wake the writer per frame: it sleeps a flush period (here a minute), unless an
    eighth of the queue is waiting; then it writes at once, in order, and close() writes the rest."""
    from support import wait_for

    rec = Recorder(tmp_path, queue_size=80, flush_seconds=60.0)
    rec.start()
    hook = rec.stream_hook(Exchange.BINANCE, "markPrice")
    for i in range(9):
        hook(1_700_000_000.0 + i, _frame(i), True)
    assert rec.stats.frames_ws == 0  # below the mark: queued for the next period
    hook(1_700_000_009.0, _frame(9), True)  # the tenth: an eighth of 80
    wait_for(lambda: rec.stats.frames_ws == 10, 20.0, what="the writer woken by the burst")
    hook(1_700_000_010.0, _frame(10), True)
    rec.close()
    assert rec.stats.frames_ws == 11 and rec.stats.dropped == 0
    assert [d["t"] for d in read_lines(tmp_path)] == [1_700_000_000.0 + i for i in range(11)]


async def test_damaged_lines_are_counted_and_skipped_by_the_replay(tmp_path: Path) -> None:
    """Lines a hand or a bug damaged (unknown exchange, a list for one, a number for a stream, an
    unknown failure reason) are counted as errors; the good lines around them apply."""
    from exporter.config import Config
    from exporter.replay import Replay

    t = 1_700_000_000.0
    lines = [
        {
            "t": t,
            "ex": "binance",
            "kind": "meta",
            "src": "followed",
            "data": '[{"exchange":"binance","instrument":"BTCUSDT","base":"BTC","quote":"USDT"}]',
        },
        {"t": t + 1, "ex": "kraken", "kind": "ws", "src": "markPrice", "data": _frame(1)},
        {"t": t + 2, "ex": ["binance"], "kind": "ws", "src": "markPrice", "data": _frame(2)},
        {"t": t + 3, "ex": "binance", "kind": "ws", "src": 7, "data": _frame(3)},
        {"t": t + 4, "ex": "binance", "kind": "rest_error", "src": "open_interest", "data": "gremlins"},
        {"t": t + 5, "ex": "binance", "kind": "ws", "src": "markPrice", "data": _frame(5, 105.0)},
    ]
    import orjson

    (tmp_path / "fr-20231114T221320Z-1.jsonl.gz").write_bytes(
        gzip.compress(b"".join(orjson.dumps(d) + b"\n" for d in lines))
    )
    replay = Replay(Config(), tmp_path)
    stats = await replay.run()
    assert stats.lines == 6 and stats.errors == 3  # kraken, the list, the unknown reason
    st = replay.state.instruments[(Exchange.BINANCE, "BTCUSDT")]
    assert st.mark_price == pytest.approx(105.0)  # the good frames applied, the "7" stream too
    assert replay.state.stream(Exchange.BINANCE, "7").messages == 1
