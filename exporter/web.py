"""What the exporter's and the sidecar's HTTP servers share: the web configuration, TLS, basic auth,
and the /metrics content negotiation (text 0.0.4, OpenMetrics, gzip, ``?name[]=``).

``--web.config.file`` takes exporter-toolkit's YAML (the file node_exporter reads)::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # mTLS; needs client_ca_file
      client_ca_file: clients-ca.crt
      min_version: TLS12
    http_server_config:
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt hash: htpasswd -nbB, or
                  # python -c 'import bcrypt; print(bcrypt.hashpw(b"PASSWORD", bcrypt.gensalt()).decode())'

Relative paths are relative to the web config file. Both servers are thin adapters over this
module: each reads a request, asks :class:`WebSecurity` and :func:`metrics_response`, writes.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import os
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from exporter.config import ConfigError, _line_index, format_validation_error
from exporter.metrics.exposition import accepts_gzip, content_type, render, wants_openmetrics

# ---- configuration (exporter-toolkit's names) -------------------------------------------------

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class _Strict(BaseModel):
    # An unknown key is an error, not silently ignored: a misspelt security setting must not pass.
    model_config = ConfigDict(extra="forbid")


class TlsServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuthType = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"

    @model_validator(mode="after")
    def _ca_when_verifying(self) -> TlsServerConfig:
        if (
            self.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
            and not self.client_ca_file
        ):
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version is above max_version")
        return self


class HttpServerConfig(_Strict):
    http2: bool = True  # accepted for compatibility; these servers speak HTTP/1.1
    headers: dict[str, str] = Field(default_factory=dict)


class WebConfig(_Strict):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, v: dict[str, str]) -> dict[str, str]:
        for user, hashed in v.items():
            if ":" in user:
                raise ValueError(f"user name {user!r} contains ':'")
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
                raise ValueError(f"the password of {user!r} is not a bcrypt hash (e.g. htpasswd -nbB USER PASSWORD)")
        return v


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate a web config file; relative file paths become relative to it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read web config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the web config must be a mapping")
    try:
        web = WebConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, _line_index(text), str(path))) from None
    tls = web.tls_server_config
    if tls is not None:
        base = path.parent
        tls.cert_file = base / tls.cert_file
        tls.key_file = base / tls.key_file
        if tls.client_ca_file is not None:
            tls.client_ca_file = base / tls.client_ca_file
    return web


def _check_file(kind: str, p: Path) -> None:
    if not p.is_file() or not os.access(p, os.R_OK):
        why = "no such file" if not p.exists() else "not a readable file"
        raise ConfigError(f"cannot read {kind} {p}: {why}")


def server_ssl_context(tls: TlsServerConfig) -> ssl.SSLContext:
    """The server's TLS context; a missing or unusable file is a ConfigError naming it."""
    _check_file("TLS certificate file (cert_file)", tls.cert_file)
    _check_file("TLS key file (key_file)", tls.key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot use TLS certificate {tls.cert_file} with key {tls.key_file}: {exc}") from None
    if tls.client_ca_file is not None:
        _check_file("client CA file (client_ca_file)", tls.client_ca_file)
        try:
            ctx.load_verify_locations(cafile=str(tls.client_ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot use client CA file {tls.client_ca_file}: {exc}") from None
    # Python cannot ask for a certificate without verifying it against a CA, so the two "any
    # certificate" modes verify when a CA is given and otherwise ask for none.
    if tls.client_auth_type in ("RequireAndVerifyClientCert", "RequireAnyClientCert") and tls.client_ca_file:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif tls.client_auth_type in ("VerifyClientCertIfGiven", "RequestClientCert") and tls.client_ca_file:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    elif tls.client_auth_type == "RequireAnyClientCert":
        raise ConfigError("client_auth_type RequireAnyClientCert needs client_ca_file here")
    return ctx


@dataclass
class WebSecurity:
    """TLS context and basic-auth check of one server. ``WebSecurity()`` is plain HTTP, no auth."""

    config: WebConfig = field(default_factory=WebConfig)
    ssl_context: ssl.SSLContext | None = None
    source: str | None = None  # the web config file, for the start-up line
    _ok: set[bytes] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_file(cls, path: str | Path | None) -> WebSecurity:
        if path is None:
            return cls()
        web = load_web_config(path)
        ctx = server_ssl_context(web.tls_server_config) if web.tls_server_config is not None else None
        return cls(web, ctx, str(path))

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def auth_required(self) -> bool:
        return bool(self.config.basic_auth_users)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.config.http_server_config.headers)

    def describe(self) -> str:
        parts = [self.scheme.upper()]
        tls = self.config.tls_server_config
        if tls is not None and self.ssl_context is not None and self.ssl_context.verify_mode == ssl.CERT_REQUIRED:
            parts.append("client certificates required")
        if self.auth_required:
            parts.append(f"basic auth ({len(self.config.basic_auth_users)} user(s))")
        return ", ".join(parts)

    def authorized(self, authorization: str | None) -> bool:
        """True when no users are configured, or the Basic credentials match a bcrypt hash."""
        users = self.config.basic_auth_users
        if not users:
            return True
        if not authorization or authorization[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = users.get(user)
        if not sep or hashed is None:
            # A check against a configured hash (same cost) so an unknown user name answers as
            # slowly as a wrong password: the timing does not tell which user names exist.
            bcrypt.checkpw(password.encode(), next(iter(users.values())).encode())
            return False
        # bcrypt costs ~50-250 ms by design; Prometheus sends the same credentials every scrape, so
        # a verified (user, password, hash) is remembered by digest (never the password itself).
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed.encode()))).digest()
        with self._lock:
            if any(hmac.compare_digest(key, k) for k in self._ok):
                return True
        if not bcrypt.checkpw(password.encode(), hashed.encode()):
            return False
        with self._lock:
            if len(self._ok) < 1024:
                self._ok.add(key)
        return True


UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Basic realm="fr-exporter", charset="UTF-8"'}


# ---- /metrics ---------------------------------------------------------------------------------


def requested_names(query: str) -> set[str] | None:
    """``?name[]=a&name[]=b`` -> {"a", "b"}: only these families (by sample name), as prometheus_client."""
    names = urllib.parse.parse_qs(query).get("name[]")
    return set(names) if names else None


@dataclass(frozen=True, slots=True)
class Payload:
    body: bytes
    headers: dict[str, str]


def metrics_response(
    source: Any, accept: str | None, accept_encoding: str | None, query: str = "", head: bool = False
) -> Payload:
    """The /metrics answer for either server: text 0.0.4 or OpenMetrics by Accept, gzip by
    Accept-Encoding, families filtered by ``name[]``.

    ``source`` is a registry with a fast ``render(openmetrics, names)`` (the exporter's) or any
    prometheus_client registry (the sidecar's), rendered by the same encoder.
    """
    om = wants_openmetrics(accept)
    names = requested_names(query)
    fast = getattr(source, "render", None)
    body = bytes(fast(om, names)) if fast is not None else render([source], om, names)
    headers = {"Content-Type": content_type(om)}
    if accepts_gzip(accept_encoding):
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Payload(body, headers)
