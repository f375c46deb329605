"""Window (exporter.state) against a plain list of records: every public read after every step of
random appends, extends, replaces, clears, count and span trims; the storage object the anchor
columns keep (window_storage) stays while records are only appended and cut, and changes on replace
and clear; a reader thread sees only runs of consecutive records while the event loop appends."""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from exporter.state import Window, window_ends, window_storage

Record = tuple[float, ...]

_steps = st.lists(st.sampled_from((0.0, 0.0, 0.5, 1.0, 1.0, 3.0, 60.0, 500.0)), min_size=1, max_size=6)


class WindowAgainstList(RuleBasedStateMachine):
    """The reference: the records appended, cut to the newest ``maxlen`` and to those no older than
    the newest time less ``span`` (times never decrease, as the store's windows)."""

    @initialize(
        width=st.integers(2, 3),
        maxlen=st.integers(1, 12),
        span=st.one_of(st.none(), st.sampled_from((0.0, 2.0, 5.0, 40.0, 1e9))),
    )
    def start(self, width: int, maxlen: int, span: float | None) -> None:
        self.width, self.maxlen, self.span = width, maxlen, span
        self.win = Window(width, maxlen, span)
        self.ref: list[Record] = []
        self.t = 0.0
        self.k = 0.0  # a value per record, so records differ
        self.storage = window_storage([self.win])[0]

    def _records(self, steps: list[float]) -> list[Record]:
        out = []
        for dt in steps:
            self.t += dt
            self.k += 1.0
            out.append((self.t, self.k, -self.k)[: self.width])
        return out

    def _trim(self) -> None:
        if self.ref:
            newest = self.ref[-1][0]
            if self.span is not None:
                self.ref = [r for r in self.ref if r[0] >= newest - self.span]
            self.ref = self.ref[-self.maxlen :]

    def _same_storage(self, same: bool) -> None:
        now = window_storage([self.win])[0]
        assert (now is self.storage) is same
        self.storage = now

    @rule(dt=st.sampled_from((0.0, 0.5, 1.0, 3.0, 60.0, 500.0)))
    def append(self, dt: float) -> None:
        (rec,) = self._records([dt])
        self.win.append(rec)
        self.ref.append(rec)
        self._trim()
        self._same_storage(True)

    @rule(steps=_steps)
    def extend(self, steps: list[float]) -> None:
        recs = self._records(steps)
        self.win.extend(iter(recs))  # any iterable, read once
        self.ref += recs
        self._trim()
        self._same_storage(True)

    @rule(keep=st.integers(0, 14), steps=st.lists(st.sampled_from((0.0, 1.0, 2.0)), max_size=14))
    def replace(self, keep: int, steps: list[float]) -> None:
        """A backfill: older records in front of some of the live ones."""
        live = self.ref[-keep:] if keep else []
        t0 = live[0][0] if live else self.t
        past = []
        for i, dt in enumerate(steps):
            t0 -= dt
            past.append((t0, 1000.0 + i, 2000.0 + i)[: self.width])
        self.ref = sorted(past) + live
        self.win.replace(list(self.ref))
        self._trim()
        self._same_storage(False)

    @rule()
    def clear(self) -> None:
        self.win.clear()
        self.ref = []
        self._same_storage(False)

    @invariant()
    def reads_equal_the_reference(self) -> None:
        win, ref, w = self.win, self.ref, self.width
        flat = [x for r in ref for x in r]
        n = len(ref)
        assert len(win) == n and bool(win) is (n > 0)
        assert list(win.raw()) == flat
        assert list(win) == ref
        assert win.last_time() == (ref[-1][0] if ref else None)
        for i in range(-n - 2, n + 2):
            if -n <= i < n:
                assert win[i] == ref[i]
            else:
                try:
                    win[i]
                except IndexError:
                    pass
                else:
                    raise AssertionError(f"index {i} of {n} records should be out of range")
        twin = Window(w, self.maxlen, self.span)
        twin.replace(ref)
        assert win == twin
        other = Window(w, self.maxlen + 1, self.span)
        other.replace(ref)
        assert win != other
        inf = -math.inf
        assert window_ends([win]) == [(n, ref[0][0], ref[-1][0]) if n else (0, inf, inf)]
        assert window_ends([win], first=False) == [(n, ref[-1][0]) if n else (0, inf)]
        assert list(window_storage([win])[0]) == flat


WindowAgainstList.TestCase.settings = settings(
    max_examples=int(os.environ.get("WINDOW_EXAMPLES", 150)), stateful_step_count=60, deadline=None
)
TestWindowAgainstList = WindowAgainstList.TestCase


def test_a_reader_thread_sees_runs_of_consecutive_records() -> None:
    """The scrape reads while the event loop appends: each read (raw, iteration) is a run of
    consecutive records of the sequence appended, at most ``maxlen`` of them (each a copy in one C call)."""
    win = Window(2, 50, 30.0)
    total = 20_000
    done = threading.Event()
    bad: list[str] = []

    def read() -> None:
        while not done.is_set():
            raw = win.raw()
            ts = list(raw[0::2])
            if raw and (len(ts) > 50 or raw[1::2] != raw[0::2] or any(b - a != 1.0 for a, b in itertools.pairwise(ts))):
                bad.append(f"raw {ts[:3]}..{ts[-3:]}")
            recs = list(win)
            if recs and (len(recs) > 50 or recs[-1][0] - recs[0][0] != len(recs) - 1):
                bad.append(f"iteration {recs[:2]}..{recs[-2:]}")

    reader = threading.Thread(target=read)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, inside the appends
    reader.start()
    try:
        for t in range(total):
            win.append((float(t), float(t)))
    finally:
        done.set()
        reader.join(timeout=60)
        sys.setswitchinterval(interval)
    assert not reader.is_alive()
    assert not bad, bad[:5]
    assert list(win) == [(float(t), float(t)) for t in range(total - 31, total)]
