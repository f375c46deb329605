"""Property: the store's own paths for a funding update (``FundingUpdate``, what an OKX funding-rate push
gives) and an open-interest update (``OpenInterestUpdate``, OKX open-interest) leave exactly the state
the general market-update path leaves for the same fields.

Two stores take the same sequence: one the records as parsed (``FundingUpdate``), the other the same
fields as a plain ``MarketUpdate``. Rates that cross the event limit, next funding times that creep,
settle, skip settlements or step back, intervals that change, open interest in coin, USD, both or
neither (with and without a mark to price it), absent fields, prices between them (anchor samples,
mark minutes, open-interest samples) and instruments nobody follows: after every step the instruments'
records and windows, the events, the missed settlements and the counters are equal.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from support.state import assert_same_state

from exporter.model import Exchange, FundingUpdate, InstrumentInfo, MarketUpdate, OpenInterestUpdate
from exporter.state import MarketState

EX = Exchange.OKX
T0 = 1_785_870_000.0
H8 = 28_800.0
FOLLOWED = ("BTC-USDT-SWAP", "ETH-USD-SWAP")
INSTRUMENTS = (*FOLLOWED, "NOT-FOLLOWED-SWAP", "BTC-USDT-260327")  # the last a dated future


def _state() -> MarketState:
    s = MarketState(clock=lambda: T0)
    s.register(InstrumentInfo(EX, FOLLOWED[0], "BTC", "USDT", contract_size=0.01))
    s.register(InstrumentInfo(EX, FOLLOWED[1], "ETH", "USD", inverse=True, funding_interval_s=H8))
    s.set_futures(EX, [InstrumentInfo(EX, "BTC-USDT-260327", "BTC", "USDT", expiry=T0 + 90 * 86400)])
    return s


rates = st.none() | st.sampled_from([0.0, 1e-5, -1e-5, 0.0001, -0.0003, 0.0004999, 0.0005, -0.0006, 0.002, 0.00375])
intervals = st.none() | st.sampled_from([3600.0, 14400.0, H8])
# next funding time: steps from the settlement grid (creeping, settled, skipped, back)
nft_steps = st.none() | st.sampled_from([0.0, 0.4, 30.0, 3600.0, 14400.0, H8, 2 * H8, 3 * H8, -H8])

funding = st.fixed_dictionaries(
    {
        "kind": st.just("funding"),
        "instrument": st.sampled_from(INSTRUMENTS),
        "dt": st.sampled_from([0.0, 0.5, 30.0, 61.0, 600.0, 3600.0, H8]),
        "event_lag": st.none() | st.sampled_from([0.0, 0.2, 5.0, -2.0]),
        "rate": rates,
        "nft_step": nft_steps,
        "interval": intervals,
        "cap": st.none() | st.just(0.00375),
        "floor": st.none() | st.just(-0.00375),
        "premium": st.none() | st.sampled_from([0.0, -0.0009, 0.0012]),
    }
)
open_interest = st.fixed_dictionaries(
    {
        "kind": st.just("open-interest"),
        "instrument": st.sampled_from(INSTRUMENTS),
        "dt": st.sampled_from([0.0, 0.5, 30.0, 61.0, 600.0]),
        "event_lag": st.none() | st.sampled_from([0.0, 0.3, -1.0]),
        "base": st.none() | st.sampled_from([0.0, 644195.0, 12.5]),
        "usd": st.none() | st.sampled_from([0.0, 1.4e6, 3.2e9]),
    }
)
price = st.fixed_dictionaries(
    {
        "kind": st.just("price"),
        "instrument": st.sampled_from(INSTRUMENTS),
        "dt": st.sampled_from([0.0, 1.0, 61.0]),
        "mark": st.none() | st.sampled_from([100.0, 101.5]),
        "index": st.none() | st.sampled_from([100.2, 0.0]),
    }
)


def _records(step: dict[str, Any], now: float, nft: dict[str, float]) -> list[MarketUpdate]:
    inst = step["instrument"]
    lag = step.get("event_lag")
    et = None if lag is None else now - lag
    if step["kind"] == "price":
        return [MarketUpdate(EX, inst, now, step["mark"], step["index"])]
    if step["kind"] == "open-interest":
        return [OpenInterestUpdate(EX, inst, et, open_interest_base=step["base"], open_interest_usd=step["usd"])]
    next_time = None
    if step["nft_step"] is not None:
        next_time = nft[inst] = nft.get(inst, T0 + H8) + step["nft_step"]
    fields: dict[str, Any] = {
        "event_time": et,
        "funding_rate": step["rate"],
        "next_funding_time": next_time,
        "funding_interval_s": step["interval"],
        "funding_cap": step["cap"],
        "funding_floor": step["floor"],
        "premium": step["premium"],
    }
    return [FundingUpdate(EX, inst, **fields)]


def _plain(records: list[MarketUpdate]) -> list[MarketUpdate]:
    return [MarketUpdate(**msgspec.structs.asdict(r)) for r in records]


@settings(max_examples=150, deadline=None)
@given(st.lists(funding | open_interest | price, min_size=1, max_size=40))
def test_the_funding_and_open_interest_paths_leave_the_state_the_general_path_leaves(
    steps: list[dict[str, Any]],
) -> None:
    own, general = _state(), _state()
    changed: list[tuple[str, str]] = []
    own.on_interval_change = lambda ex, inst: changed.append(("own", inst))
    general.on_interval_change = lambda ex, inst: changed.append(("general", inst))
    now = T0
    nft: dict[str, float] = {}
    for step in steps:
        now += step["dt"]
        records = _records(step, now, nft)
        own.apply_many(records, now)
        general.apply_many(_plain(records), now)
        assert_same_state(own, general)
    assert [i for w, i in changed if w == "own"] == [i for w, i in changed if w == "general"]


def test_a_funding_update_reaches_its_instrument_through_apply_and_apply_many() -> None:
    # the funding path is taken (the record's exact type) and stores what the general path stores
    s = _state()
    u = FundingUpdate(EX, FOLLOWED[0], T0, None, None, 0.0001, T0 + H8, H8, 0.00375, -0.00375, None, -0.0009)
    s.apply(u, T0 + 1.0)
    st_ = s.instruments[(EX, FOLLOWED[0])]
    assert (st_.funding_rate, st_.next_funding_time, st_.funding_interval_s) == (0.0001, T0 + H8, H8)
    assert (st_.funding_cap, st_.funding_floor, st_.premium, st_.event_time) == (0.00375, -0.00375, -0.0009, T0)
    assert st_.funding_at == T0 + 1.0
    s.apply_many([msgspec.structs.replace(u, instrument="NOT-FOLLOWED-SWAP")], T0 + 2.0)
    assert s.unknown_instrument_updates == 1


def test_an_open_interest_update_reaches_its_instrument_through_apply_and_apply_many() -> None:
    s = _state()
    s.apply(MarketUpdate(EX, FOLLOWED[0], T0, 2.0), T0)
    s.apply(OpenInterestUpdate(EX, FOLLOWED[0], T0 + 1.0, open_interest_base=3.0), T0 + 1.5)
    st_ = s.instruments[(EX, FOLLOWED[0])]
    # priced with the mark known (2.0 USD): 6 USD
    assert (st_.open_interest_base, st_.open_interest_usd, st_.oi_at, st_.event_time) == (3.0, 6.0, T0 + 1.5, T0 + 1.0)
    s.apply_many([OpenInterestUpdate(EX, "NOT-FOLLOWED-SWAP", T0, open_interest_usd=1.0)], T0 + 2.0)
    assert s.unknown_instrument_updates == 1
