"""Comparing two market states in tests whose stores took different paths to the same updates."""

from __future__ import annotations

from exporter.state import MarketState


def assert_same_state(a: MarketState, b: MarketState) -> None:
    """Every instrument's values, windows and trackers, the events, the counters and the futures."""
    assert a.instruments.keys() == b.instruments.keys()
    for key, st_a in a.instruments.items():
        assert st_a == b.instruments[key], key
    assert list(a.events) == list(b.events)
    assert a.settlements_missed == b.settlements_missed
    assert (a.interval_changes, a.unknown_instrument_updates, a.rejected_records) == (
        b.interval_changes,
        b.unknown_instrument_updates,
        b.rejected_records,
    )
    assert a.futures == b.futures  # dataclasses: compared field by field
