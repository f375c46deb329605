"""Term structure: a dated future's basis against the index, annualised, and the funding it implies.

Pure formulas (no state, no clock). Definitions, as carry desks quote them (simple, not compounded):

- days to expiry ``d = (expiry - now) / 86400``
- basis ``b = (F - S) / S``: F the future's mark price, S the exchange's index price of the base
- annualised basis ``b x 365 / d``
- implied funding per 8 h: the constant per-8 h rate ``r`` that, paid from now until expiry, adds up
  to the basis: ``r x (expiry - now) / 28800 = b``, so ``r = b x 28800 / (expiry - now) = b / (3 d)``
- implied minus actual, basis points: ``(r - perpetual funding per 8 h) x 1e4``

Under :data:`MIN_DAYS_TO_EXPIRY` (one day) the annualised figures are not given (``None``): a few
basis points of noise divided by hours would read as hundreds of percent a year. The basis itself
(and the mark, expiry and days) is still given until the delivery.
"""

from __future__ import annotations

from exporter.model import EIGHT_HOURS

DAY = 86400.0
MIN_DAYS_TO_EXPIRY = 1.0
SETTLE_WINDOW_SECONDS = 3600.0  # Binance's estimated settle price "only useful in the last hour"


def days_to_expiry(expiry: float, now: float) -> float:
    return (expiry - now) / DAY


def basis_ratio(future: float, index: float) -> float | None:
    """(F - S) / S; None without a positive index."""
    if not index or index <= 0.0:
        return None
    return (future - index) / index


def annualized_basis(basis: float, days: float) -> float | None:
    """basis x 365 / days; None under one day to expiry."""
    if days < MIN_DAYS_TO_EXPIRY:
        return None
    return basis * 365.0 / days


def implied_funding_8h(basis: float, days: float) -> float | None:
    """The per-8 h funding rate that, paid until expiry, equals the basis; None under one day."""
    if days < MIN_DAYS_TO_EXPIRY:
        return None
    return basis * EIGHT_HOURS / (days * DAY)


def implied_minus_actual_bp(implied_8h: float, actual_8h: float) -> float:
    return (implied_8h - actual_8h) * 1e4
