"""Positions from the configuration file, checked against what the exporter knows.

Pydantic has already checked types and signs; here the checks that need more context: is the
instrument one the exporter follows, does the leverage fit the maintenance tier. A failed check
skips that one position (the rest of the exporter keeps running) and yields a
:class:`PositionConfigError` naming the field.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.analytics.risk import tier_for
from exporter.config import Config, PositionConfig
from exporter.feeds.account_facts import facts_for
from exporter.model import Exchange, Side, Tier
from exporter.positions.model import Hedge, Position

log = logging.getLogger("exporter.positions")


@dataclass(frozen=True, slots=True)
class PositionConfigError:
    index: int
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"positions[{self.index}] {self.name!r}: {self.field}: {self.message}"


def to_position(pc: PositionConfig, contract_size: float = 1.0) -> Position:
    side = Side(pc.side)
    margin: float | None
    if pc.margin_mode == "cross":
        margin = pc.wallet_balance_usd
    elif pc.isolated_margin_usd is not None:
        margin = pc.isolated_margin_usd
    else:
        margin = pc.size * pc.entry_price / pc.leverage if pc.leverage else None
    hedge = None
    if pc.hedge is not None:
        h = pc.hedge
        hedge = Hedge(
            kind=h.kind,
            side=Side.SHORT if side is Side.LONG else Side.LONG,
            size=h.size,
            entry_price=h.entry_price,
            fees_usd=h.fees_paid_usd,
            exchange=h.exchange,
            instrument=h.instrument,
        )
    return Position(
        name=pc.name,
        exchange=pc.exchange,
        instrument=pc.instrument,
        side=side,
        size=pc.size,
        entry_price=pc.entry_price,
        margin_mode=pc.margin_mode,
        margin_usd=margin,
        leverage=pc.leverage,
        opened_at=_unix_utc(pc.opened_at) if pc.opened_at is not None else None,
        fees_usd=pc.fees_paid_usd,
        borrow_apr=pc.borrow_apr,
        gas_usd=pc.gas_usd,
        locked_capital_usd=pc.locked_capital_usd,
        hedge=hedge,
        source="config",
        inverse=pc.exchange is Exchange.DERIBIT and "_" not in pc.instrument.split("-")[0],
        contract_size=contract_size,
    )


def _unix_utc(t: datetime) -> float:
    """A time without a zone is UTC (as everywhere in the exporter), not the host's local time."""
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()


def effective_leverage(p: Position) -> float | None:
    if p.leverage is not None:
        return p.leverage
    if p.margin_mode == "isolated" and p.margin_usd:
        return p.size * p.entry_price / p.margin_usd
    return None


def tier_value(p: Position) -> float:
    """What the exchange's tiers are keyed on: contracts (OKX) or USD notional at entry."""
    return p.size / p.contract_size if facts_for(p.exchange).sizes_in_contracts else p.size * p.entry_price


def check_leverage(p: Position, tiers: Sequence[Tier]) -> str | None:
    lev = effective_leverage(p)
    if lev is None or not tiers:
        return None
    t = tier_for(tiers, tier_value(p))
    if t.max_leverage is not None and lev > t.max_leverage + 1e-9:
        return f"{lev:g}x is above the maximum leverage {t.max_leverage:g}x of the maintenance tier for this size"
    return None


def load_positions(
    config: Config,
    known_instruments: Callable[[Exchange], set[str] | None],
    tiers_for: Callable[[Position], Sequence[Tier]],
    contract_size_for: Callable[[Exchange, str], float],
    items: Iterable[PositionConfig] | None = None,
) -> tuple[list[Position], list[PositionConfigError]]:
    """Check and convert every configured position. ``known_instruments`` returns None when the
    exchange follows all perpetuals and the list is not loaded yet (checked later)."""
    good: list[Position] = []
    errors: list[PositionConfigError] = []
    names: set[str] = set()
    for i, pc in enumerate(config.positions if items is None else items):

        def err(field: str, msg: str, i: int = i, pc: PositionConfig = pc) -> None:
            errors.append(PositionConfigError(i, pc.name, field, msg))

        if pc.name in names:
            err("name", "duplicate position name")
            continue
        ex_cfg = config.exchanges.get(pc.exchange)
        if ex_cfg is None or not ex_cfg.enabled:
            err("exchange", f"exchange {pc.exchange.value} is not enabled")
            continue
        if pc.size <= 0:
            err("size", f"must be greater than 0, got {pc.size:g}")
            continue
        if pc.entry_price <= 0:
            err("entry_price", f"must be greater than 0, got {pc.entry_price:g}")
            continue
        known = known_instruments(pc.exchange)
        if known is not None and pc.instrument not in known:
            err("instrument", f"unknown instrument {pc.instrument!r} on {pc.exchange.value}")
            continue
        if pc.hedge is not None and pc.hedge.kind == "perp":
            if pc.hedge.exchange is None or not pc.hedge.instrument:
                err("hedge.instrument", "a perp hedge needs exchange and instrument")
                continue
            hk = known_instruments(pc.hedge.exchange)
            if hk is not None and pc.hedge.instrument not in hk:
                err("hedge.instrument", f"unknown instrument {pc.hedge.instrument!r} on {pc.hedge.exchange.value}")
                continue
        p = to_position(pc, contract_size_for(pc.exchange, pc.instrument))
        if p.margin_usd is None:
            err("leverage", "isolated position needs leverage or isolated_margin_usd")
            continue
        problem = check_leverage(p, tiers_for(p))
        if problem:
            err("leverage", problem)
            continue
        names.add(pc.name)
        good.append(p)
    return good, errors


def recheck(
    config: Config, positions: Iterable[Position], problem: Callable[[Position], tuple[str, str] | None]
) -> tuple[list[Position], list[PositionConfigError]]:
    """Check configured positions again once more is known (published tiers, the instrument list):
    the ones with a ``problem`` (field, message) become errors, the others are kept."""
    keep: list[Position] = []
    errors: list[PositionConfigError] = []
    for p in positions:
        found = problem(p)
        if found is None:
            keep.append(p)
            continue
        idx = next((i for i, pc in enumerate(config.positions) if pc.name == p.name), -1)
        errors.append(PositionConfigError(idx, p.name, *found))
    return keep, errors


def unknown_instrument(config: Config, listed: set[str], p: Position) -> tuple[str, str] | None:
    """For an exchange following all perpetuals, whose list arrived after the positions were loaded."""
    ec = config.exchanges.get(p.exchange)
    if ec is None or not ec.all_perpetuals or not listed:
        return None
    if p.instrument in listed | set(config.instruments_for(p.exchange)):
        return None
    return "instrument", f"unknown instrument {p.instrument!r} on {p.exchange.value}"


class ConfiguredPositions:
    """The configured positions that passed their checks, and the errors of the ones skipped
    (counted by field in ``fr_position_config_errors_total``, logged with index and name)."""

    def __init__(
        self,
        config: Config,
        listed: Callable[[Exchange], set[str]],
        tiers_for: Callable[[Position], Sequence[Tier]],
        contract_size_for: Callable[[Exchange, str], float],
    ) -> None:
        self.config = config
        self.listed = listed
        self.errors: list[PositionConfigError] = []
        self.by_field: Counter[str] = Counter()
        good, errors = load_positions(config, self._known, tiers_for, contract_size_for)
        # Entries that failed validation when the file was loaded (negative size...) were left out.
        for issue in config.position_issues:
            self._error(PositionConfigError(issue.index, issue.name, issue.field, issue.message))
        for e in errors:
            self._error(e)
        self.positions = good
        follow_all = {ex for ex, ec in config.exchanges.items() if ec.all_perpetuals}
        self._unchecked_listing = any(p.exchange in follow_all for p in good)

    def _known(self, ex: Exchange) -> set[str] | None:
        listed = self.listed(ex)
        ec = self.config.exchanges.get(ex)
        if ec is not None and ec.all_perpetuals and not listed:
            return None  # the instrument list is loaded later; checked then
        return listed | set(self.config.instruments_for(ex))

    def _error(self, e: PositionConfigError) -> None:
        self.errors.append(e)
        self.by_field[e.field] += 1
        log.error("position skipped: %s", e)

    def recheck(self, problem: Callable[[Position], tuple[str, str] | None]) -> None:
        self.positions, errors = recheck(self.config, self.positions, problem)
        for e in errors:
            self._error(e)

    def recheck_leverage(self, tiers_for: Callable[[Position], Sequence[Tier]]) -> None:
        """Published tiers arrived: a configured leverage above the real tier maximum is an error too."""
        self.recheck(lambda p: ("leverage", m) if (m := check_leverage(p, tiers_for(p))) else None)

    def recheck_instruments(self) -> None:
        """Exchanges following all perpetuals: configured instruments checked once the list is loaded."""
        if self._unchecked_listing:
            self.recheck(lambda p: unknown_instrument(self.config, self.listed(p.exchange), p))
