"""Recording: every raw websocket frame and REST body the exporter receives, to compressed files.

The event loop only adds an item's three references to a bounded queue (a connection calls the
queue's ``deque.extend`` itself: :meth:`Recorder.stream_hook`; REST and meta lines through
:meth:`Recorder.rest_hook` / :meth:`Recorder.meta`; no encoding, no I/O); one writer thread encodes,
compresses, writes and rotates. When the disk is slower than the feeds the queue fills and its oldest
items give way, counted as dropped (``stats.dropped``): the state is updated as always, the recording
just has a hole. Signed account calls are never handed to the
recorder (the REST client records only unsigned calls), and a frame holds no secret: the public
streams carry none.

File format (``docs/recording.md``): one JSON object per line, gzip (``.jsonl.gz``) or zstd
(``.jsonl.zst``), files named ``fr-YYYYmmddTHHMMSSZ-N.jsonl.gz`` after their first receive time:

    {"t": 1700000000.123456, "ex": "binance", "kind": "ws", "src": "markPrice", "raw": true, "data": {"stream":...}}
    {"t": 1700000001.5, "ex": "okx", "kind": "rest", "src": "open_interest", "path": "/api/v5/public/open-interest",
     "q": {"instId": "BTC-USDT-SWAP"}, "data": "{\\"code\\":\\"0\\",...}"}

A websocket frame that parsed (so valid JSON, without line breaks) is written as it is: ``"raw":
true`` and ``data`` holding the frame itself as JSON (pandas gives a dict; ``read_lines`` gives back
its exact bytes). Any other frame, and every REST body, is a JSON string in ``data``.
REST lines carry the request's query in ``q`` (plus ``_sent``, its send time); a failed attempt is a
``rest_error`` line: the failure reason in ``data`` and the HTTP status (if one came) in
``q._status``, never the answer's body. ``kind`` ``meta`` lines describe the recording (``src``
``followed``: the instruments the exporter followed).
``pandas.read_json(path, lines=True)`` reads a file (compression from the suffix).
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import io
import logging
import math
import operator
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat, starmap
from pathlib import Path
from typing import IO, Any, Literal, cast

import orjson

from exporter.config import (
    GZIP_LEVELS,
    RECORDING_GZIP_LEVEL,
    RECORDING_ZSTD_LEVEL,
    ZSTD_LEVELS,
    recording_compression,
)
from exporter.model import Exchange

log = logging.getLogger(__name__)

Compression = Literal["gzip", "zstd"]
SUFFIX: dict[str, str] = {"gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}
NAME_RE = re.compile(r"^fr-(\d{8}T\d{6}Z)-(\d+)\.jsonl\.(gz|zst)$")

# The queue is flat: each item is three entries, (receive time, key, frame) for a websocket frame,
# (receive time, key, (data, path, params)) for the rest; key = (exchange, kind, stream or endpoint),
# one tuple per stream made once by its tap. The loop extends the deque by the three at once (one C
# call, atomic for the writer), so nothing it keeps for the writer is a tracked container: a kept
# tuple a frame made the garbage collector's youngest generation run every 700 frames
# (docs/recording.md, session 7)
WS_JSON = "ws-json"  # internal kind: a websocket frame that parsed, so valid JSON (written unescaped)
RAW_MARK = b'"raw":true,"data":'
JSON_OPEN = (b"{", b"[")  # a frame that parsed and opens so is a JSON object or array: embedded as it is
JSON_OPEN_BYTES = frozenset(b"{[")  # the same as the byte values a frame's first item is
_FIRST = operator.itemgetter(0)
REST_ERROR = "rest_error"  # a failed REST attempt: the reason, the status, never the body
RestHook = Callable[[float, float, str, str, Any, bytes], None]
RestFailureHook = Callable[[float, float, str, str, Any, str, "int | None"], None]
Key = tuple[str, str, str]
Payload = tuple["str | bytes", "str | None", "Mapping[str, Any] | None"]  # a REST, REST error or meta item's
Item = tuple[float, Key, "str | bytes | Payload"]
WIDTH = 3  # queue entries an item
POLL_SECONDS = 0.05  # the writer looks at the queue's length this often (the loop never wakes it)
SMALL_FRAME = 1 << 12  # a frame this small is copied once more into its line (one call); a larger one is not
CHUNK = 1 << 20  # lines are copied into one reused buffer and handed to the compressor this much at a time
BATCH = 512  # the writer takes this many queued items at a time (_drain)
BULK_MIN = 8  # fewer than this: item by item (the batch path's fixed cost is not worth it)
LINE = b'{"t":%b%b%b}\n'  # a frame line: the receive time, the stream's head (RAW_MARK at its end), the frame
LINE_OPEN, LINE_CLOSE = b'{"t":', b"}\n"
LINE_HEAD = b'{"t":%b%b'  # a large frame's line up to the frame
LINE_SEP = LINE_CLOSE + LINE_OPEN


# zstd's own parameters for a level, with a smaller match table where that measured cheaper: on frames
# as the exchanges send them (bench_recording.py --zstd-params: random-walk prices) level 1's 2^14
# entries -> 2^12 cost 15 % less CPU for the same ratio (a stream's frames repeat their layout, so the
# previous one is found all the same); at -3 (the default) 2^13 -> 2^12 and matches of at least 7
# bytes instead of 6 (8 % less on the Binance arrays, ratio 4.00 -> 4.10; 5 % less on the Bybit
# ticker deltas, ratio 5.86 -> 5.54: docs/recording.md "Session 6"); since session 7 -3 keeps a window of
# 2^17 bytes, not 2^19: zstd then no longer takes its fast compressor's external-dictionary variant
# (41 % of its instructions at 2^19 on the ticker lines, none at 2^17: 11 % fewer in all, cachegrind),
# 8 % less compression CPU on both shapes, ratio 5.54 -> 5.22 (tickers) and 4.09 -> 3.93 (arrays)
ZSTD_TUNED: dict[int, dict[str, int]] = {1: {"hash_log": 12}, -3: {"hash_log": 12, "min_match": 7, "window_log": 17}}


def _zstd_compressor(level: int) -> Any:
    zstd = _zstd()
    tuned = ZSTD_TUNED.get(level)
    if tuned is None:
        return zstd.ZstdCompressor(level=level)
    params = zstd.ZstdCompressionParameters.from_level(level, **tuned)
    return zstd.ZstdCompressor(compression_params=params)


def zstd_available() -> bool:
    return importlib.util.find_spec("zstandard") is not None


def _zstd() -> Any:
    return importlib.import_module("zstandard")  # optional dependency: gzip needs none


class _Counting(io.RawIOBase):
    """The file under the compressor: counts the compressed bytes that reach the disk."""

    def __init__(self, f: IO[bytes], on_write: Callable[[int], None]) -> None:
        self.f = f
        self.on_write = on_write

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = self.f.write(b)
        self.on_write(n)
        return n

    def flush(self) -> None:
        if not self.f.closed:
            self.f.flush()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes first
            self.f.close()


@dataclass(slots=True)
class RecordingStats:
    frames_ws: int = 0
    frames_rest: int = 0
    dropped: int = 0  # Recorder.stats: the frames the full queue gave way to, and lines a write lost
    bytes: int = 0
    files_deleted: int = 0
    writer_cpu_s: float = 0.0  # the writer thread's own CPU (encoding, compression, I/O): the bench reads it


class StreamTap:
    """One stream's way into the recorder (:meth:`Recorder.stream_hook`). A FeedConnection appends a
    frame's item itself, ``extend((received_at, ok or bad, frame))``: the queue's bound C method, no
    Python call, no check (the deque's ``maxlen`` bounds it; what it pushed out is counted from the
    totals, :meth:`Recorder.stats`). The connection ``attach``es its StreamHealth, whose ``messages``
    count the frames it handed over (every frame it handles is recorded). Calling the tap does the
    same for a caller without a connection (tests, benchmarks)."""

    __slots__ = ("_recorder", "bad", "calls", "extend", "ok")

    def __init__(self, recorder: Recorder, extend: Callable[[Item], None], ok: Key, bad: Key) -> None:
        self.extend = extend  # the queue's deque.extend
        self.ok = ok  # the key of a frame that parsed (so valid JSON: embedded as it is)
        self.bad = bad  # the key of any other frame
        self.calls = 0  # frames handed over by calling the tap
        self._recorder = recorder

    def __call__(self, received_at: float, frame: str | bytes, json_ok: bool = False) -> None:
        self.extend((received_at, self.ok if json_ok else self.bad, frame))
        self.calls += 1  # after the item: a count read meanwhile is low, never high

    def attach(self, health: Any) -> None:
        """A connection hands this stream's frames over and counts them in ``health.messages``."""
        self._recorder._count_from(health)


class Recorder:
    """A bounded queue and a writer thread that rotates files by time and keeps the directory under
    ``max_bytes`` (oldest files deleted first; the file being written is never deleted).

    The queue is a deque the loop extends (atomic, no lock, no check, no wake-up per frame): the
    writer looks at its length every ``POLL_SECONDS`` and, every ``flush_seconds`` or when the queue
    is an eighth full, takes what is there and hands the lines to the compressor in chunks of about
    1 MiB. A full queue pushes its oldest items out (``maxlen``), counted as dropped. A frame costs
    the loop one C call; the writer and the loop meet a few times a second instead of once a frame
    (bench/bench_recording.py).
    """

    def __init__(
        self,
        directory: Path,
        *,
        rotate_seconds: float = 3600.0,
        max_bytes: int = 1 << 30,
        compression: Compression | Literal["auto"] = "gzip",
        queue_size: int = 100_000,
        flush_seconds: float = 1.0,
        level: int | None = None,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        compression = cast(Compression, recording_compression(compression))  # auto: zstd if installed
        if compression == "zstd" and not zstd_available():
            raise ValueError("recording.compression zstd needs the zstandard package (pip install zstandard)")
        if level is None:  # the configuration's defaults (exporter.config: chosen by bench_recording.py)
            level = RECORDING_ZSTD_LEVEL if compression == "zstd" else RECORDING_GZIP_LEVEL
        lo, hi = ZSTD_LEVELS if compression == "zstd" else GZIP_LEVELS
        if not lo <= level <= hi:
            raise ValueError(f"recording.level {level}: {compression} takes {lo}..{hi}")
        self.directory = Path(directory)
        self.rotate_seconds = rotate_seconds
        self.max_bytes = max_bytes
        self.compression: Compression = compression
        # fast levels: recording must stay a small part of ingest CPU (bench/bench_recording.py);
        # zstd levels 1 and -3 run with a smaller match table (ZSTD_TUNED)
        self.level: int = level
        self.flush_seconds = flush_seconds
        self.poll_seconds = POLL_SECONDS  # how often the writer looks at the queue's length
        self.wall = wall  # flush pacing only (the file names and rotation follow the receive times)
        self.queue_size = queue_size
        # flat: WIDTH entries an item (see Item); the oldest items give way when it is full
        self.q: deque[Any] = deque(maxlen=WIDTH * queue_size)
        self._wake_at = max(1, queue_size // 8)  # the writer drains early at this many queued lines
        self._chunk = min(CHUNK, max(4096, max_bytes // 16))  # the size cap holds within a chunk
        self._wake = threading.Event()
        self._closing = False
        self._writer_done = False  # the writer has exited: what is still queued is dropped
        # the totals the dropped count is derived from (the loop does not count per frame):
        self._puts = 0  # items queued by _put (REST, meta, ws())
        self._taps: list[StreamTap] = []
        # per connection StreamHealth (by identity: two connections of one stream share one), the health
        # and its messages when attached
        self._counted: dict[int, tuple[Any, int]] = {}
        self._taken = 0  # items the writer took off the queue (counted before taking them)
        self._overflow = 0  # the largest count of frames pushed out seen so far (a counter never goes back)
        # encoded lines not yet handed to the compressor: one buffer, allocated once and reused
        self._arr = bytearray(self._chunk)
        self._mv = memoryview(self._arr)
        self._pos = 0  # bytes of the buffer in use
        self._heads: dict[Key, bytes] = {}  # (exchange, WS_JSON, stream) -> a frame line's fixed part
        self._buf_lines = 0  # lines (or parts of a line) in the buffer: counted as dropped if it cannot be written
        self._stats = RecordingStats()  # dropped here: lines a write lost (the writer's own count)
        self._thread: threading.Thread | None = None
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._opened_at = 0.0  # receive time of the current file's first line
        self._rotate_at = -math.inf  # a line received at or after this starts a new file (none open yet)
        self._bytes_at_open = 0
        self._raw: _Counting | None = None
        self._seq = 0

    # ---- the event loop's side: never blocks -------------------------------------------------

    def ws(self, received_at: float, exchange: Exchange | str, stream: str, frame: str | bytes) -> None:
        self._put(received_at, (str(exchange), "ws", stream), frame)

    def _put(self, received_at: float, key: Key, data: str | bytes | Payload) -> None:
        self.q.extend((received_at, key, data))  # atomic: the writer pops from the other end
        self._puts += 1  # after the item: a count read meanwhile is low, never high

    def stream_hook(self, exchange: Exchange | str, stream: str) -> StreamTap:
        """One stream's frames: what a FeedConnection appends (received_at, key, frame) to, the key
        telling a frame that parsed (valid JSON) from one that did not. This runs on the event loop
        for every frame, so it is three references added to the queue by one C call (the writer
        checks that a parsed frame is an object or array before embedding it)."""
        ex = str(exchange)
        tap = StreamTap(self, self.q.extend, (ex, WS_JSON, stream), (ex, "ws", stream))
        self._taps.append(tap)
        return tap

    def _count_from(self, health: Any) -> None:
        self._counted.setdefault(id(health), (health, health.messages))  # counted once, from its first attach

    def handed(self) -> int:
        """Items handed to the recorder so far (frames, REST and meta lines), exact on the event loop."""
        return (
            self._puts
            + sum(t.calls for t in list(self._taps))
            + sum(h.messages - base for h, base in list(self._counted.values()))
        )

    @property
    def stats(self) -> RecordingStats:
        """The counts now. ``dropped``: the items a full queue pushed out (derived from the totals:
        handed over, taken by the writer, still queued; never lower than a value shown before, and
        exact on the event loop's thread, where the metrics read it), and the lines a write lost."""
        handed = self.handed()  # first: a count read later can only make the result lower, not higher
        queued = 0 if self._writer_done else len(self.q) // WIDTH
        overflow = handed - queued - self._taken
        if overflow > self._overflow:
            self._overflow = overflow
        s = self._stats
        return RecordingStats(
            s.frames_ws, s.frames_rest, self._overflow + s.dropped, s.bytes, s.files_deleted, s.writer_cpu_s
        )

    def rest_hook(self, exchange: Exchange) -> RestHook:
        """What a RestClient calls with (sent_at, received_at, endpoint, path, params, body)."""
        ex = str(exchange)

        def hook(sent_at: float, received_at: float, endpoint: str, path: str, params: Any, body: bytes) -> None:
            q = dict(params) if params else {}
            q["_sent"] = sent_at  # the request's send time: replay re-measures the clock offset
            self._put(received_at, (ex, "rest", endpoint), (body, path, q))

        return hook

    def rest_failure_hook(self, exchange: Exchange) -> RestFailureHook:
        """What a RestClient calls on a failed attempt with (sent_at, received_at, endpoint, path, params,
        reason, HTTP status or None): a ``rest_error`` line, the reason in ``data``, no body."""
        ex = str(exchange)

        def hook(
            sent_at: float, received_at: float, endpoint: str, path: str, params: Any, reason: str, status: int | None
        ) -> None:
            q = dict(params) if params else {}
            q["_sent"] = sent_at
            if status is not None:
                q["_status"] = status
            self._put(received_at, (ex, REST_ERROR, endpoint), (reason, path, q))

        return hook

    def meta(self, at: float, exchange: Exchange | str, what: str, value: Any) -> None:
        """A line about the recording itself (``kind`` meta), e.g. the instruments followed."""
        self._put(at, (str(exchange), "meta", what), (orjson.dumps(value).decode(), None, None))

    def snapshot(self) -> dict[str, int]:
        s = self.stats
        return {"frames_ws": s.frames_ws, "frames_rest": s.frames_rest, "dropped": s.dropped, "bytes": s.bytes}

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, close the file. Frames recorded after this are dropped."""
        if self._thread is None:
            return
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("recording: writer stuck; closing without the queued frames")
        self._thread = None

    # ---- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        last_flush = last_drain = self.wall()
        q = self.q
        early = WIDTH * self._wake_at  # a backlog of this many entries is written at once
        poll = min(self.poll_seconds, self.flush_seconds)
        cpu0 = time.thread_time()
        try:
            while True:
                # the loop does not wake the writer (no call a frame): it looks at the queue's length
                if len(q) < early and not self._closing:
                    self._wake.wait(poll)  # set by close()
                    if len(q) < early and not self._closing and self.wall() - last_drain < self.flush_seconds:
                        continue
                closing = self._closing  # read before draining: what was queued before close() is written
                self._drain(len(q))  # what is there now; later lines wait for the next turn
                self._write_chunk()
                last_drain = self.wall()
                if self._file is not None and (closing or last_drain - last_flush >= self.flush_seconds):
                    self._file.flush()
                    last_flush = last_drain
                self._stats.writer_cpu_s = time.thread_time() - cpu0
                if closing:
                    break  # what is queued now stays (Recorder.stats counts it as dropped)
        finally:
            self._writer_done = True
            self._close_file()
            self._stats.writer_cpu_s = time.thread_time() - cpu0

    def _drain(self, n: int) -> None:
        """Write the items of ``n`` queue entries, taken off the queue ``BATCH`` items at a time. A
        batch of small frames that parsed (the usual case on one-instrument streams) is turned into
        lines by C-level calls (:meth:`_bulk`: no Python bytecode per line); any other batch goes
        through :meth:`_each`."""
        popleft = self.q.popleft
        step = WIDTH * BATCH
        while n > 0:
            k = n if n < step else step
            n -= k
            self._taken += k // WIDTH  # before taking them: a dropped count read meanwhile is low, not high
            # popleft called k times in C: no other thread runs meanwhile, so whole items
            self._batch(list(starmap(popleft, repeat((), k))))

    def _batch(self, items: list[Any]) -> None:
        """A batch (flat: WIDTH entries an item) the batch path cannot take (a REST line, a new
        stream, a rotation in it) is halved until it can, or is small enough for the item-by-item
        path: one odd line costs a few C-level passes, not the batch's lines their cheap way."""
        n = len(items) // WIDTH
        done = False if n < BULK_MIN else self._bulk(items)
        if done is False and n >= BULK_MIN:
            half = n // 2 * WIDTH
            self._batch(items[:half])
            self._batch(items[half:])
        elif not done:  # a few items, or only large frames
            self._each(items)

    def _bulk(self, items: list[Any]) -> bool | None:
        """The lines of a batch of websocket frames that parsed, all bytes, ASCII, with no line feed,
        each an object or array, of streams already seen, before the next rotation, built and copied
        into the buffer with C-level calls only (map, join, count: a third of the per-line loop's
        cost on 170-byte frames, bench_recording.py). False, with nothing written, when one item
        does not qualify (the caller halves the batch), None when every frame is large (item by
        item: a large frame is copied once into the buffer, its line is not built)."""
        ts, keys, datas = items[0::3], items[1::3], items[2::3]  # (WIDTH) a REST or meta item has no head
        k = len(ts)
        if max(ts) >= self._rotate_at:
            return False
        # a batch of large frames (all-market arrays) goes item by item: joining such frames would copy
        # megabytes several times (3.9 -> 10.5 us a 30 KB array, bench_recording.py --writer-parts).
        # Its first frame tells (each frame's length cost 27 ns a line, session 7): a large frame among
        # small ones is joined with them, the same bytes (the join's size is bounded below)
        if len(datas[0]) >= SMALL_FRAME:
            return None if min(map(len, datas)) >= SMALL_FRAME else False
        # only a stream's parsed frames have a head (made by its first line, _write): the kind checked too
        heads = self._heads
        key = keys[0]
        if keys.count(key) == k:  # one stream (the usual batch): its head
            head = heads.get(key)
            if head is None:
                return False
            hs: list[bytes] = [head] * k
        else:
            if not all(map(heads.__contains__, set(keys))):
                return False
            hs = list(map(heads.__getitem__, keys))
        try:
            joined = b"".join(datas)  # a str frame (the former hand-over) raises: item by item
            # (bytes.count is a byte-by-byte loop, three times slower than these: memchr, one pass;
            # the first bytes taken by a C-level map, an empty frame raises)
            if (
                len(joined) > self._chunk
                or b"\n" in joined
                or not joined.isascii()
                or not set(map(_FIRST, datas)) <= JSON_OPEN_BYTES
            ):
                return False
        except (TypeError, IndexError):
            return False
        # the receive times in one encoder call (orjson writes each float as dumps(t) would), split at
        # the commas; the batch's lines then in one join of a list filled by slice assignments (the
        # time, the head, the frame, the separator: no object made per line but the time's)
        parts = [LINE_SEP] * (4 * k)
        parts[0::4] = orjson.dumps(ts)[1:-1].split(b",")
        parts[1::4] = hs
        parts[2::4] = datas
        parts[-1] = LINE_CLOSE
        self._add(LINE_OPEN, b"".join(parts))
        self._buf_lines += k - 1  # _add counted one
        self._stats.frames_ws += k
        return True

    def _each(self, items: list[Any]) -> None:
        """Write items one by one. The usual line, a small frame that parsed, is built here in one
        formatting call and copied into the buffer without a method call; the rest go to
        :meth:`_write`."""
        heads = self._heads
        dumps = orjson.dumps
        mv = self._mv
        size = len(mv)
        written = 0
        pos = self._pos  # the buffer's state in locals; stored back before any method uses it
        lines = self._buf_lines
        rotate_at = self._rotate_at
        for t, key, data in zip(items[0::3], items[1::3], items[2::3], strict=True):  # (WIDTH)
            if t < rotate_at and type(data) is bytes:
                rest = heads.get(key)  # only a parsed frame's key has a head
                if rest is not None and data[:1] in JSON_OPEN and b"\n" not in data and data.isascii():
                    if len(data) < SMALL_FRAME:
                        line = LINE % (dumps(t), rest, data)
                        end = pos + len(line)
                        if end <= size:
                            mv[pos:end] = line
                            pos = end
                            lines += 1
                            written += 1
                            continue
                    else:  # a large frame (an all-market array): copied once, into the buffer
                        head = LINE_HEAD % (dumps(t), rest)
                        mid = pos + len(head)
                        end = mid + len(data)
                        if end + 2 <= size:
                            mv[pos:mid] = head
                            mv[mid:end] = data
                            mv[end : end + 2] = LINE_CLOSE
                            pos = end + 2
                            lines += 1
                            written += 1
                            continue
            self._pos, self._buf_lines = pos, lines
            if t >= rotate_at:  # time or size to start a new file (or none open yet)
                try:
                    self._rotate(t)
                except Exception:
                    self._stats.dropped += 1
                    log.exception("recording: cannot open a new file")
                    continue
            try:
                self._write((t, key, data))
            except Exception:  # a full disk must not kill the thread: count and go on
                self._stats.dropped += 1
                log.exception("recording: write failed")
            pos, lines, rotate_at = self._pos, self._buf_lines, self._rotate_at
        self._pos, self._buf_lines = pos, lines
        self._stats.frames_ws += written

    def _write(self, item: Item) -> None:
        t, key, payload = item
        ex, kind, src = key
        path = params = None
        if kind == WS_JSON or kind == "ws":
            data = cast("str | bytes", payload)
        else:  # REST, REST error, meta: (data, path, params)
            data, path, params = cast(Payload, payload)
        if t >= self._rotate_at:
            self._rotate(t)
        if kind == WS_JSON:
            # A frame known to be JSON goes in as it is: no escaping, byte for byte (the costly
            # part of a line otherwise); only one with a line feed in it (whitespace: JSON strings
            # escape theirs) is escaped after all. Lines split on \n only: a \r is JSON whitespace.
            # The connection hands the frame's bytes as received (no UTF-8 decoding on the loop): a
            # line holds them only if they are UTF-8 (JSON text; the decoders check only the fields
            # they read), checked here in the writer thread, ASCII (the usual frame) in one pass.
            raw = data.encode("utf-8") if isinstance(data, str) else data
            kind = "ws"
            if raw[:1] in JSON_OPEN and b"\n" not in raw and (raw.isascii() or _utf8(raw)):
                rest = self._heads.get(key)
                if rest is None:  # the line's fixed part per exchange and stream, encoded once
                    head = orjson.dumps({"ex": ex, "kind": kind, "src": src, "raw": True})
                    rest = self._heads[key] = b"," + head[1:-1] + b',"data":'
                self._add(b'{"t":' + orjson.dumps(t) + rest, raw, b"}\n")
            else:
                self._add(self._escaped(t, ex, kind, src, data, path, params))
        else:
            self._add(self._escaped(t, ex, kind, src, data, path, params))
        if kind == "ws":
            self._stats.frames_ws += 1
        elif kind == "rest" or kind == REST_ERROR:
            self._stats.frames_rest += 1

    def _add(self, *parts: bytes) -> None:
        """Copy a line's parts into the buffer; a full buffer goes to the compressor.

        One reused buffer and one compressor call per ~1 MiB, rather than a call per frame (each
        releases and takes back the GIL: a hand-over with the event loop thread every time) or a
        join (a fresh megabyte each time: its page faults cost as much as compressing it)."""
        mv = self._mv
        pos = self._pos
        size = len(mv)
        for part in parts:
            n = len(part)
            end = pos + n
            if end > size:
                self._pos = pos
                self._write_chunk()
                pos, end = 0, n
                if n > size:  # larger than the buffer: to the compressor as it is
                    self._write_part(part)
                    continue
            mv[pos:end] = part
            pos = end
        self._pos = pos
        self._buf_lines += 1

    def _write_chunk(self) -> None:
        """The buffered lines to the compressor (which releases the GIL while it works)."""
        pos, lines = self._pos, self._buf_lines
        self._pos = self._buf_lines = 0
        if pos:
            self._write_part(self._mv[:pos], lines)

    def _write_part(self, part: bytes | memoryview, lines: int = 1) -> None:
        if self._file is None:
            self._stats.dropped += lines
            return
        try:
            self._file.write(part)
        except Exception:  # a full disk: these lines are lost, counted
            self._stats.dropped += lines
            log.exception("recording: write failed")

    @staticmethod
    def _escaped(
        t: float, ex: str, kind: str, src: str, data: str | bytes, path: str | None, params: Mapping[str, Any] | None
    ) -> bytes:
        doc: dict[str, Any] = {"t": t, "ex": ex, "kind": kind, "src": src}
        if path is not None:
            doc["path"] = path
        if params:
            doc["q"] = params
        if isinstance(data, bytes):
            try:
                doc["data"] = data.decode("utf-8")
            except UnicodeDecodeError:
                import base64

                doc["data"] = base64.b64encode(data).decode("ascii")
                doc["b64"] = True
        else:
            doc["data"] = data
        return orjson.dumps(doc) + b"\n"

    def _count(self, n: int) -> None:
        self._stats.bytes += n
        if self._stats.bytes - self._bytes_at_open > self.max_bytes // 4:
            self._rotate_at = -math.inf  # a file never grows past a quarter of the cap: the cap holds within that

    def _rotate(self, t: float) -> None:
        self._write_chunk()  # the lines before this one belong to the file being closed
        self._close_file()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))
        self._seq += 1
        path = self.directory / f"fr-{stamp}-{self._seq}{SUFFIX[self.compression]}"
        raw = _Counting(open(path, "wb"), self._count)  # noqa: SIM115 (closed in _close_file)
        if self.compression == "zstd":
            self._file = _zstd_compressor(self.level).stream_writer(raw)
        else:
            self._file = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=self.level)  # type: ignore[assignment]
        self._raw = raw
        self._path = path
        self._opened_at = t
        self._rotate_at = t + self.rotate_seconds
        self._bytes_at_open = self._stats.bytes
        self._enforce_cap()

    def _close_file(self) -> None:
        self._write_chunk()
        f, self._file = self._file, None
        if f is not None:
            f.close()
            if self._raw is not None and not self._raw.closed:
                self._raw.close()

    def _enforce_cap(self) -> None:
        """Delete the oldest closed files until the directory is under ``max_bytes``."""
        files = sorted(recording_files(self.directory))
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.max_bytes:
                break
            if p == self._path:
                continue
            size = p.stat().st_size
            p.unlink(missing_ok=True)
            total -= size
            self._stats.files_deleted += 1
            log.info("recording: deleted %s (directory over %d bytes)", p.name, self.max_bytes)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def recording_files(directory: Path) -> list[Path]:
    """The recording's files, oldest first (their names sort by first receive time, then sequence)."""

    def key(p: Path) -> tuple[str, int]:
        m = NAME_RE.match(p.name)
        assert m is not None
        return m.group(1), int(m.group(2))

    return sorted((p for p in Path(directory).iterdir() if NAME_RE.match(p.name)), key=key)


def open_recording(path: Path) -> IO[bytes]:
    if path.name.endswith(".zst"):
        return cast(IO[bytes], _zstd().ZstdDecompressor().stream_reader(open(path, "rb")))
    return cast(IO[bytes], gzip.open(path, "rb"))


def read_lines(directory: Path) -> Iterator[dict[str, Any]]:
    """Every recorded line of every file, in file order (a truncated last file ends quietly)."""
    for path in recording_files(directory):
        with open_recording(path) as f:
            try:
                for line in _lines(f):
                    if line.strip():
                        yield _decode(line)
            except (EOFError, OSError, orjson.JSONDecodeError) as exc:  # cut by a crash mid-write
                log.warning("recording %s: stopped at a damaged part (%s)", path.name, exc)


def _decode(line: bytes) -> dict[str, Any]:
    """One line; a raw JSON frame comes back as its exact bytes in ``data`` (not decoded twice)."""
    i = line.find(RAW_MARK)
    if i > 0 and line.rstrip().endswith(b"}"):
        d: dict[str, Any] = orjson.loads(line[: i - 1] + b"}")
        d["data"] = line[i + len(RAW_MARK) :].rstrip()[:-1]
        return d
    return dict(orjson.loads(line))


def _lines(f: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a decompressing reader, read in large chunks (the zstd reader does not iterate lines)."""
    rest = b""
    while True:
        block = f.read(chunk)
        if not block:
            break
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest
