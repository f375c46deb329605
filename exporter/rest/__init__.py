"""REST access to the exchanges: a counting httpx client and per-exchange endpoints."""

from exporter.rest.client import FAILURE_REASONS, RestClient, RestError, RestPolicy, parse_retry_after
from exporter.rest.endpoints import ExchangeRest, rest_api_for

__all__ = [
    "FAILURE_REASONS",
    "ExchangeRest",
    "RestClient",
    "RestError",
    "RestPolicy",
    "parse_retry_after",
    "rest_api_for",
]
