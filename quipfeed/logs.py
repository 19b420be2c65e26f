"""Structured logs: one JSON object per line on stderr, with whatever `extra=` a call passed,
and the current turn's `request_id` (see `inference.request_id`) whenever one is set."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# The password in a URL's user info (redis://:pw@host, http://user:pw@host), wherever a message,
# an `extra` value or a traceback quotes one: a log line keeps the user and host, never it.
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s/@:\"']*:)[^\s/@\"']+@")


def redact(text: str) -> str:
    """`text` with every URL's password replaced by `***`."""
    return _URL_PASSWORD.sub(r"\1***@", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time of the record, not at configure time
    (a test runner or a daemoniser may swap it, and the old stream may be closed)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(level: str = "INFO") -> None:
    # Every layer's records carry the turn's id, whichever package logged them. Imported here:
    # the `inference` package pulls in the OpenAI client, seconds a short command need not pay.
    from inference.request_id import install_log_records

    install_log_records()
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "sentence_transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
