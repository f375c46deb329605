"""Logging set-up for every command: level, format (``logfmt`` or ``json``), secrets redacted.

``--log.level`` takes debug|info|warn|error in any case (Prometheus' spelling, ``warn``, and
Python's, ``warning``); ``--log.format`` logfmt (the default, as Prometheus' own binaries) or json.
"""

from __future__ import annotations

import argparse
import logging
import time

import orjson

from exporter.redact import RedactingFilter

LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING", "error": "ERROR"}
FORMATS = ("logfmt", "json")
_NAMES = {"WARNING": "warn"}


def log_level(value: str) -> str:
    """argparse type: a level name in any case -> logging's name."""
    level = LEVELS.get(value.strip().lower())
    if level is None:
        raise argparse.ArgumentTypeError(f"invalid level {value!r} (choose from debug, info, warn, error)")
    return level


def _ts(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _logfmt_value(v: str) -> str:
    if v and not any(c in v for c in ' "=\\\n\t'):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            msg = f"{msg}\n{record.exc_text}"
        level = _NAMES.get(record.levelname, record.levelname.lower())
        return f"ts={_ts(record)} level={level} logger={record.name} msg={_logfmt_value(msg)}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _ts(record),
            "level": _NAMES.get(record.levelname, record.levelname.lower()),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return orjson.dumps(doc).decode()


def setup(level: str = "INFO", fmt: str = "logfmt") -> None:
    """Configure the root logger once (stderr), with the redacting filter on its handler."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(RedactingFilter())
    handler.fr_exporter = True  # type: ignore[attr-defined]  # ours: replaced by a second setup()
    for h in list(root.handlers):
        if getattr(h, "fr_exporter", False):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
    if level != "DEBUG":
        # httpx logs every request at INFO: pollers would drown the log
        logging.getLogger("httpx").setLevel(logging.WARNING)
