"""Keep secrets out of logs: every secret read through config.read_secret is registered here and
replaced by ``***`` in any log record, whatever logger or format produced it."""

from __future__ import annotations

import logging
import threading

_secrets: set[str] = set()
_lock = threading.Lock()

MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words


def register_secret(value: str | None) -> None:
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for s in tuple(_secrets):
        if s in text:
            text = text.replace(s, "***")
    return text


class RedactingFilter(logging.Filter):
    """Renders the message once, redacted, so arguments can't smuggle a secret past it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            try:
                msg = record.getMessage()
            except Exception:  # a broken format string must not kill logging
                msg = str(record.msg)
            record.msg = redact(msg)
            record.args = None
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


def install(level: str = "INFO") -> None:
    """Configure root logging with the redacting filter on every handler."""
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if level != "DEBUG":
        # httpx logs every request at INFO: pollers would drown the log
        logging.getLogger("httpx").setLevel(logging.WARNING)
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
