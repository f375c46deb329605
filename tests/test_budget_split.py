"""The split of an exchange's REST budget between its pollers and the backfills (exporter/rest/split.py):
pure arithmetic on the documented weights, the budget's rates and the instrument count."""

from __future__ import annotations

import pytest

from exporter.limits import LIMITS
from exporter.model import Exchange
from exporter.rest.client import RequestBudget
from exporter.rest.endpoints import BinanceRest, OkxRest
from exporter.rest.split import POLLERS_CAP, POLLERS_CAP_AFTER_BACKFILL, ROUND_FIT, PollDemand, describe, split


def _binance(n: int, share: float = 0.5) -> tuple[dict[str, float], list[PollDemand]]:
    budget = RequestBudget(LIMITS[Exchange.BINANCE], share)
    rates = {b.name: budget.rate(b.name) for b in LIMITS[Exchange.BINANCE].buckets}
    cost = LIMITS[Exchange.BINANCE].cost
    paths = BinanceRest.poll_paths
    demands = [
        PollDemand("open_interest", n, 30.0, 300.0, cost(paths["open_interest"])),
        PollDemand("long_short_ratio", n, 300.0, 1800.0, cost(paths["long_short_ratio"])),
    ]
    return rates, demands


def _load(shares: list, bucket: str) -> float:
    return sum(s.guaranteed.get(bucket, 0.0) for s in shares)


def test_a_few_instruments_get_what_their_periods_ask() -> None:
    rates, demands = _binance(40)
    shares = split(rates, demands)
    for s, d in zip(shares, demands, strict=True):
        assert not s.stretched and s.fraction == 1.0
        assert (s.period_s, s.stale_s) == (d.period_s, d.stale_s)
        assert s.guaranteed == {b: 40 * w / d.period_s for b, w in d.weights}
    assert "as configured" in describe("binance", rates, shares)


def test_at_2000_binance_instruments_open_interest_fits_its_limit_and_long_short_follows() -> None:
    rates, demands = _binance(2000)
    oi, ls = split(rates, demands)
    for bucket, rate in rates.items():  # the pollers never hold more than their cap of a bucket
        assert _load([oi, ls], bucket) <= POLLERS_CAP * rate * (1 + 1e-9)
    # open interest is guaranteed what a round needs to fit 0.9 of its 300 s limit: 2,000 requests of
    # weight 1 in 270 s; its limit stays
    assert oi.guaranteed == {"weight": pytest.approx(2000 / (ROUND_FIT * 300.0))}
    assert oi.period_s == pytest.approx(ROUND_FIT * 300.0) and oi.stale_s == 300.0 and oi.stretched
    # long/short would need 83 % of futures_data for its 1,800 s: it gets the pollers' half of it, its round
    # is the requests at that rate and its staleness limit follows the round
    assert ls.guaranteed["futures_data"] == pytest.approx(POLLERS_CAP * rates["futures_data"])
    assert ls.period_s == pytest.approx(2000 / ls.guaranteed["futures_data"]) and ls.period_s > ROUND_FIT * 1800.0
    assert ls.stale_s == pytest.approx(ls.period_s / ROUND_FIT)
    line = describe("binance", rates, [oi, ls])
    assert "a round within 270 s" in line and "follows the round" in line


def test_at_500_the_pollers_get_what_freshness_needs_and_the_backfills_the_rest() -> None:
    """The periods ask more than half the weight bucket (500 open-interest polls every 30 s): each poller
    is guaranteed what fits its staleness limit, far less than it asks; the backfills keep the rest."""
    rates, demands = _binance(500)
    oi, ls = split(rates, demands)
    assert oi.guaranteed["weight"] == pytest.approx(500 / (ROUND_FIT * 300.0))
    assert oi.fraction < 0.15  # of the 16.7 weight/s its 30 s period asks
    assert ls.guaranteed["futures_data"] == pytest.approx(500 / (ROUND_FIT * 1800.0))
    assert (oi.stale_s, ls.stale_s) == (300.0, 1800.0)  # both rounds fit their limits
    assert rates["weight"] - _load([oi, ls], "weight") > 0.85 * rates["weight"]


def test_the_split_scales_with_the_share() -> None:
    """40 instruments at a fiftieth of the default share ask what 2,000 do at the default: the same
    split (tests/test_backfill_schedule.py runs the start-up that way)."""
    big = split(*_binance(2000, 0.5))
    small = split(*_binance(40, 0.01))
    for b, s in zip(big, small, strict=True):
        assert s.fraction == pytest.approx(b.fraction, rel=0.02)
        assert s.period_s == pytest.approx(b.period_s, rel=0.02)


def test_no_instruments_or_a_bucket_to_itself() -> None:
    rates, demands = _binance(0)
    assert all(s.guaranteed == {} and not s.stretched for s in split(rates, demands))
    # OKX: long/short alone in its rubik bucket, cut to the pollers' half of it at 2,000
    budget = RequestBudget(LIMITS[Exchange.OKX], 0.5)
    path = OkxRest.poll_paths["long_short_ratio"]
    (ls,) = split(
        {"rubik": budget.rate("rubik")},
        [PollDemand("long_short_ratio", 2000, 300.0, 1800.0, LIMITS[Exchange.OKX].cost(path))],
    )
    assert ls.guaranteed == {"rubik": pytest.approx(POLLERS_CAP * budget.rate("rubik"))}
    with pytest.raises(KeyError):
        split({}, [PollDemand("x", 1, 1.0, 1.0, (("nowhere", 1.0),))])


def test_once_the_backfills_are_done_a_followed_limit_comes_back() -> None:
    """After the start-up the pollers may have nine tenths of a bucket: long/short at 2,000 Binance
    instruments then fits its 1,800 s limit (83 % of futures_data), which no longer follows the round."""
    rates, demands = _binance(2000)
    during = split(rates, demands)[1]
    oi, ls = split(rates, demands, POLLERS_CAP_AFTER_BACKFILL)
    assert during.stale_s > 1800.0
    assert ls.guaranteed["futures_data"] == pytest.approx(2000 / (ROUND_FIT * 1800.0))
    assert ls.period_s == pytest.approx(ROUND_FIT * 1800.0) and ls.stale_s == 1800.0
    assert oi.period_s == pytest.approx(ROUND_FIT * 300.0)
    for bucket, rate in rates.items():
        assert _load([oi, ls], bucket) <= POLLERS_CAP_AFTER_BACKFILL * rate * (1 + 1e-9)
