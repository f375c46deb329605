"""Read-only API keys of the exchanges, from env vars or files (never logged, never exported)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from exporter.config import Config, read_secret
from exporter.feeds.account_facts import facts_for
from exporter.model import Exchange
from exporter.redact import register_secret
from exporter.rest.signing import ApiKey

log = logging.getLogger("exporter.positions")


def read_keys(config: Config, environ: Mapping[str, str] | None = None) -> dict[Exchange, ApiKey]:
    """The usable keys of the enabled exchanges; an unreadable or incomplete one is logged and left out."""
    keys: dict[Exchange, ApiKey] = {}
    env = dict(environ) if environ is not None else None
    for ex, ec in config.enabled_exchanges().items():
        c = ec.credentials
        if not c.configured():
            continue
        try:
            key = read_secret(c.api_key_env, c.api_key_file, env)
            secret = read_secret(c.api_secret_env, c.api_secret_file, env)
            passphrase = read_secret(c.passphrase_env, c.passphrase_file, env)
        except Exception as exc:  # ConfigError names the file, never its content
            log.error("%s: credentials unreadable: %s", ex.value, exc)
            continue
        _register_secrets(key, secret, passphrase)
        if not key or not secret:
            log.error("%s: credentials configured but the key or secret is empty", ex.value)
            continue
        if facts_for(ex).needs_passphrase and not passphrase:
            log.error("%s: credentials need a passphrase", ex.value)
            continue
        keys[ex] = ApiKey(key, secret, passphrase)
    return keys


def _register_secrets(*values: str | None) -> None:
    for v in values:
        register_secret(v)
