"""Account endpoints per exchange, through the shared REST client (one rate-limit gate, counted).

One small adapter per exchange (:class:`ExchangeAccount`) holds everything positions need that
differs between exchanges in I/O: the signed account reads, the maintenance tiers (Binance's
brackets need the key, Bybit and OKX publish theirs, Deribit has none), the funding history (the
same endpoint and parser as the market backfill) and contract sizes. Bodies are parsed by the pure
parsers in ``exporter/feeds/*_account.py``, which also declare the exchange's static facts
(``FACTS``: continuous funding, sizes in contracts...); signing is ``rest/signing.py``.

Every request goes through :class:`~exporter.rest.client.RestClient`: it waits at (or fails on) the
exchange's 429/418 gate like market data does, and is counted in ``fr_rest_*`` under the endpoint
labels below. Errors become :class:`AccountError` carrying only a reason label and the exchange's
error *code*, never the request (its query or headers hold the key and signature) nor the
exchange's message text (Bybit's ``error sign!`` message echoes the signed string).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import ClassVar

from exporter.feeds import binance_account, bybit_account, deribit_account, okx_account
from exporter.feeds.account_fields import AccountFacts
from exporter.model import AccountPosition, Exchange, FundingSettlement, ParseError, Tier
from exporter.rest.client import Params, RestError, Signer
from exporter.rest.endpoints import ExchangeRest
from exporter.rest.signing import (
    DEFAULT_RECV_WINDOW_MS,
    ApiKey,
    binance_sign,
    bybit_headers,
    deribit_authorization,
    okx_headers,
)

# endpoint labels (fr_rest_* series)
ACCOUNT_POSITIONS = "account_positions"
ACCOUNT_ADL = "account_adl"
LEVERAGE_BRACKETS = "leverage_brackets"
RISK_TIERS = "risk_tiers"

MAX_PAGES = 20

# RestError reasons -> the documented fr_position_account_read_failures_total reasons
_REASONS = {"rate_limited": "rate_limited", "http_5xx": "http_5xx", "timeout": "timeout", "connection": "connect"}


class AccountError(Exception):
    def __init__(self, exchange: Exchange, reason: str, code: str | None = None) -> None:
        self.exchange = exchange
        self.reason = reason
        self.code = code
        super().__init__(f"{exchange.value} account read failed: {reason}" + (f" (code {code})" if code else ""))


class ExchangeAccount:
    """Base adapter: one exchange's account and risk-facts reads (``key`` None: public reads only)."""

    exchange: ClassVar[Exchange]
    parsers: ModuleType  # the exchange's feeds/*_account module (parsers, FACTS)

    @property
    def facts(self) -> AccountFacts:
        facts: AccountFacts = self.parsers.FACTS
        return facts

    def __init__(
        self,
        api: ExchangeRest,
        key: ApiKey | None = None,
        clock: Callable[[], float] = time.time,
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
    ) -> None:
        self.api = api
        self.key = key
        self.clock = clock
        self.recv_window_ms = recv_window_ms
        self.contract_sizes: dict[str, float] = {}

    # ---- shared plumbing -------------------------------------------------------------------

    def _signer(self) -> Signer:
        raise NotImplementedError

    async def _get(self, endpoint: str, path: str, params: Params | None = None, signed: bool = False) -> bytes:
        """One request through the shared client; the body of a successful answer or AccountError."""
        if signed and self.key is None:
            raise AccountError(self.exchange, "auth")
        try:
            body = await self.api.client.get(endpoint, path, params, sign=self._signer() if signed else None)
        except RestError as exc:
            if exc.reason == "http_4xx":
                raise self._failure(self.parsers.error_code(exc.body) or str(exc.status)) from None
            if exc.reason == "parse":
                raise AccountError(self.exchange, "invalid_response") from None
            raise AccountError(self.exchange, _REASONS.get(exc.reason, "exchange_error")) from None
        code = self.parsers.error_code(body)
        if code is not None:
            raise self._failure(code)
        return body

    def _failure(self, code: str) -> AccountError:
        reason = "auth" if code in self.parsers.AUTH_CODES else "exchange_error"
        return AccountError(self.exchange, reason, code)

    def _parse_failed(self, endpoint: str) -> AccountError:
        self.api.client.count_failure(endpoint, "parse")
        return AccountError(self.exchange, "invalid_response")

    # ---- reads -----------------------------------------------------------------------------

    async def positions(self, contract_size: Callable[[str], float]) -> list[AccountPosition]:
        """Open positions of the account (signed). ``contract_size``: fallback ctVal per instrument."""
        raise NotImplementedError

    async def tiers(self, instrument: str, margin_mode: str) -> list[Tier] | None:
        """Maintenance tiers of the instrument; None: none readable (use configured/defaults)."""
        return None

    async def funding_history(self, instrument: str, start: float, end: float) -> list[FundingSettlement]:
        """Settled funding in [start, end]: the market backfill's endpoint, paging and parser."""
        if not self.facts.has_funding_history:
            return []
        try:
            return await self.api.funding_history(instrument, start, end)
        except RestError as exc:
            reason = "invalid_response" if exc.reason == "parse" else _REASONS.get(exc.reason, "exchange_error")
            raise AccountError(self.exchange, reason) from None

    async def load_contract_sizes(self) -> None:
        """Contract sizes from the public instrument list (only where sizes count contracts)."""


class BinanceAccount(ExchangeAccount):
    exchange = Exchange.BINANCE
    parsers = binance_account

    def _signer(self) -> Signer:
        assert self.key is not None
        key = self.key

        def sign(path: str, query: str) -> tuple[str, dict[str, str]]:
            return binance_sign(query, key, int(self.clock() * 1000), self.recv_window_ms)

        return sign

    async def positions(self, contract_size: Callable[[str], float]) -> list[AccountPosition]:
        risk = await self._get(ACCOUNT_POSITIONS, "/fapi/v2/positionRisk", signed=True)
        adl = await self._get(ACCOUNT_ADL, "/fapi/v1/adlQuantile", signed=True)
        try:
            return binance_account.parse_positions(risk, adl)
        except ParseError:
            raise self._parse_failed(ACCOUNT_POSITIONS) from None

    async def tiers(self, instrument: str, margin_mode: str) -> list[Tier] | None:
        if self.key is None:
            return None
        body = await self._get(LEVERAGE_BRACKETS, "/fapi/v1/leverageBracket", {"symbol": instrument}, signed=True)
        try:
            return binance_account.parse_brackets(body, instrument)
        except ParseError:
            raise self._parse_failed(LEVERAGE_BRACKETS) from None


class BybitAccount(ExchangeAccount):
    exchange = Exchange.BYBIT
    parsers = bybit_account

    def _signer(self) -> Signer:
        assert self.key is not None
        key = self.key

        def sign(path: str, query: str) -> tuple[str, dict[str, str]]:
            return query, bybit_headers(query, key, int(self.clock() * 1000), self.recv_window_ms)

        return sign

    async def positions(self, contract_size: Callable[[str], float]) -> list[AccountPosition]:
        out: list[AccountPosition] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {"category": "linear", "settleCoin": "USDT", "limit": 200, **_cursor(cursor)}
            body = await self._get(ACCOUNT_POSITIONS, "/v5/position/list", params, signed=True)
            try:
                page, cursor = bybit_account.parse_positions(body)
            except ParseError:
                raise self._parse_failed(ACCOUNT_POSITIONS) from None
            out.extend(page)
            if not cursor:
                break
        return out

    async def tiers(self, instrument: str, margin_mode: str) -> list[Tier] | None:
        rows = []
        cursor = ""
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {"category": "linear", "symbol": instrument, **_cursor(cursor)}
            body = await self._get(RISK_TIERS, "/v5/market/risk-limit", params)
            try:
                page, cursor = bybit_account.parse_risk_limits(body, instrument)
            except ParseError:
                raise self._parse_failed(RISK_TIERS) from None
            rows += page
            if not cursor:
                break
        return bybit_account.tiers_from_risk_limits(rows)


class OkxAccount(ExchangeAccount):
    exchange = Exchange.OKX
    parsers = okx_account

    def _signer(self) -> Signer:
        assert self.key is not None
        key = self.key

        def sign(path: str, query: str) -> tuple[str, dict[str, str]]:
            request_path = f"{path}?{query}" if query else path
            return query, okx_headers("GET", request_path, "", key, self.clock())

        return sign

    async def load_contract_sizes(self) -> None:
        if self.contract_sizes:
            return
        try:
            listed = await self.api.instruments()
        except RestError:
            return  # the fallback sizes serve until the list can be read
        self.contract_sizes = {i.instrument: i.contract_size for i in listed}

    async def positions(self, contract_size: Callable[[str], float]) -> list[AccountPosition]:
        body = await self._get(ACCOUNT_POSITIONS, "/api/v5/account/positions", {"instType": "SWAP"}, signed=True)
        await self.load_contract_sizes()  # sizes come in contracts: the real ctVal, once known
        sizes = self.contract_sizes
        try:
            return okx_account.parse_positions(body, lambda inst: sizes.get(inst) or contract_size(inst))
        except ParseError:
            raise self._parse_failed(ACCOUNT_POSITIONS) from None

    async def tiers(self, instrument: str, margin_mode: str) -> list[Tier] | None:
        family = "-".join(instrument.split("-")[:2])
        td = "cross" if margin_mode == "cross" else "isolated"
        params = {"instType": "SWAP", "tdMode": td, "instFamily": family}
        body = await self._get(RISK_TIERS, "/api/v5/public/position-tiers", params)
        try:
            return okx_account.parse_position_tiers(body)
        except ParseError:
            raise self._parse_failed(RISK_TIERS) from None


class DeribitAccount(ExchangeAccount):
    exchange = Exchange.DERIBIT
    parsers = deribit_account

    def _signer(self) -> Signer:
        assert self.key is not None
        key = self.key

        def sign(path: str, query: str) -> tuple[str, dict[str, str]]:
            uri = f"{path}?{query}" if query else path
            return query, deribit_authorization("GET", uri, "", key, int(self.clock() * 1000))

        return sign

    async def positions(self, contract_size: Callable[[str], float]) -> list[AccountPosition]:
        params = {"currency": "any", "kind": "future"}
        body = await self._get(ACCOUNT_POSITIONS, "/api/v2/private/get_positions", params, signed=True)
        try:
            return deribit_account.parse_positions(body)
        except ParseError:
            raise self._parse_failed(ACCOUNT_POSITIONS) from None


def _cursor(cursor: str) -> dict[str, str]:
    return {"cursor": cursor} if cursor else {}


ACCOUNT_CLASSES: dict[Exchange, type[ExchangeAccount]] = {
    Exchange.BINANCE: BinanceAccount,
    Exchange.BYBIT: BybitAccount,
    Exchange.OKX: OkxAccount,
    Exchange.DERIBIT: DeribitAccount,
}

__all__ = ["ACCOUNT_CLASSES", "AccountError", "ExchangeAccount"]
