"""Property: any JSON value in any field of any real sample message goes through parse -> apply ->
render without an exception escaping, without a non-finite sample on /metrics, and without changing
any other instrument's series.

Every field of every recorded message in ../shared/samples (WS frames and REST bodies, nested
fields included) is a candidate; hypothesis picks a message, a field and a value (absurd numbers,
numeric strings, wrong types, containers). A parser may refuse the message with a ParseError (the
connection counts it); anything else escaping is a bug.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.api_state import build_state_document
from exporter.config import Config
from exporter.feeds import feed_for
from exporter.feeds.base import FeedContext
from exporter.metrics import build_registry
from exporter.model import Exchange, InstrumentInfo, MarketUpdate, ParseError, Record, base_of
from exporter.state import MarketState

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"
B = Exchange.BINANCE
T0 = 1_765_541_480.0  # after the newest sample
OTHER = "SENTINEL-OTHER-PERP"  # one instrument per exchange that no message names

Parse = Callable[[bytes, FeedContext], list[Any]]


def _parsers(ex: Exchange, name: str) -> Parse | None:
    feed = feed_for(ex)
    if name.startswith("ws_"):
        return lambda b, ctx: feed.parse_ws(b, ctx)
    if "openinterest" in name or "open_interest" in name or "book_summary" in name:
        return lambda b, ctx: feed.parse_open_interest(b, ctx)
    if "funding" in name:
        return lambda b, ctx: feed.parse_funding_history(b, ctx)
    if "instruments" in name or "exchangeinfo" in name:
        return lambda b, ctx: feed.parse_instruments(b)
    return None


def _samples() -> list[tuple[Exchange, str, Any]]:
    out: list[tuple[Exchange, str, Any]] = []
    if not SHARED.is_dir():
        return out
    for path in sorted(SHARED.glob("*/*.json*")):
        ex = Exchange(path.parent.name)
        if "polled" in path.name:  # a tardis pseudo-stream wrapper, not an exchange message
            continue
        if _parsers(ex, path.name) is None:
            continue
        text = path.read_text(encoding="utf-8")
        lines = [ln for ln in text.splitlines() if ln.strip()] if path.suffix == ".jsonl" else [text]
        out.extend((ex, path.name, orjson.loads(ln)) for ln in lines)
    return out


SAMPLES = _samples()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field and element, containers included (a whole object replaced is a case too)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):  # the first elements stand for the rest
            out.extend(_paths(v, (*prefix, i)))
    return out


# (exchange, file, message, its field paths): each message equally likely, then one of its fields
MESSAGES = [(ex, name, msg, _paths(msg)) for ex, name, msg in SAMPLES]
CASES = [(ex, name, msg, path) for ex, name, msg, paths in MESSAGES for path in paths]

NUMBERS = st.sampled_from(
    [0, -1, 1, 10**30, -(10**30), 2**63, 1e308, -1e308, 1e-320, 5e-324, -0.0, 0.5, 1e15, 1e-9, 3.0e9]
)
NUMERIC_TEXT = st.sampled_from(
    ["0", "-1", "1e308", "-1e308", "1e309", "1e-320", "nan", "NaN", "inf", "-inf", "Infinity", "", " ", "0x10",
     "1_000", "9" * 400, "0.0001", "28800", "1e400", "-0", "1,5", "null"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    NUMERIC_TEXT,
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
# Most wire fields are numbers or numeric strings: absurd ones of those come first.
VALUES = st.one_of(
    NUMERIC_TEXT,
    NUMBERS,
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=3),
)


def _set(msg: Any, path: tuple[Any, ...], value: Any) -> Any:
    m = copy.deepcopy(msg)
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return m


def _state() -> MarketState:
    state = MarketState(clock=lambda: T0)
    for ex in Exchange:
        state.register(InstrumentInfo(ex, OTHER, "BTC", "USDT", funding_interval_s=28800.0))
        state.apply(
            MarketUpdate(ex, OTHER, mark_price=100.0, index_price=99.5, funding_rate=1e-4, next_funding_time=T0 + 600,
                         open_interest_usd=1e9),
            T0 - 1.0,
        )  # fmt: skip
    return state


def _register(state: MarketState, ex: Exchange, records: list[Any]) -> None:
    for r in records:
        inst = getattr(r, "instrument", None)
        if isinstance(inst, str) and inst and (ex, inst) not in state.instruments:
            base, quote = base_of(ex, inst)
            state.register(InstrumentInfo(ex, inst, base, quote, funding_interval_s=28800.0))


def _others(text: str) -> list[str]:
    return sorted(ln for ln in text.splitlines() if f'instrument="{OTHER}"' in ln)


def _check_finite(text: str) -> None:
    for line in text.splitlines():
        if line and not line.startswith("#"):
            value = line.rsplit(" ", 1)[1]
            assert math.isfinite(float(value)), line


def _run(ex: Exchange, name: str, msg: Any) -> None:
    parse = _parsers(ex, name)
    assert parse is not None
    state = _state()
    # the unmodified message names the instruments: follow them, so mutations reach the state
    ctx = FeedContext(ex)
    try:
        _register(state, ex, parse(orjson.dumps(SAMPLES_BY_NAME[(ex, name)][0]), ctx))
    except ParseError:
        pass
    reg = build_registry(Config(), state)
    before = _others(reg.render().decode())
    assert before, "the sentinel instruments are rendered"
    try:
        # json, not orjson: integers beyond 64 bits are part of the fuzz
        records: list[Record] = parse(json.dumps(msg, allow_nan=False).encode(), ctx)
    except ParseError:
        records = []
    state.apply_many([r for r in records if not isinstance(r, InstrumentInfo)], T0)
    for om in (False, True):
        text = reg.render(openmetrics=om).decode()
        _check_finite(text)
    after = _others(reg.render().decode())
    assert after == before, "another instrument's series changed"
    doc = build_state_document(Config(), state, reg.views)
    orjson.dumps(doc)  # serialisable; orjson refuses nothing finite, and NaN would become null silently
    for row in doc["instruments"]:
        for k, v in row.items():
            assert not (isinstance(v, float) and not math.isfinite(v)), (k, v)


SAMPLES_BY_NAME: dict[tuple[Exchange, str], list[Any]] = {}
for _ex, _name, _msg in SAMPLES:
    SAMPLES_BY_NAME.setdefault((_ex, _name), []).append(_msg)


@pytest.mark.e2e  # a 1000-example fuzz campaign (~15 CPU s): with the other campaigns, in `make test`
@pytest.mark.skipif(not CASES, reason="../shared/samples is absent")
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    case=st.sampled_from(MESSAGES or [(B, "", None, [()])]).flatmap(
        lambda m: st.tuples(st.just(m[:2]), st.sampled_from(m[3]), st.just(m[2]))
    ),
    value=VALUES,
)
def test_any_value_in_any_field_of_any_sample(case: Any, value: Any) -> None:
    (ex, name), path, msg = case
    _run(ex, name, _set(msg, path, value))


def test_every_sample_is_covered() -> None:
    """Every recorded message kind of every exchange takes part (the fuzz is not silently empty)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/samples is absent")
    assert {ex for ex, _, _ in SAMPLES} == set(Exchange)
    assert len(CASES) > 500


@pytest.mark.parametrize(("ex", "name"), sorted({(ex, name) for ex, name, _ in SAMPLES}))
def test_each_unmodified_sample_passes_the_same_checks(ex: Exchange, name: str) -> None:
    for msg in SAMPLES_BY_NAME[(ex, name)]:
        _run(ex, name, msg)
