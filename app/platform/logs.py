"""Structured logs: one JSON object per line, for the API and the worker alike.

Standard-library logging with a small JSON formatter (no extra dependency): every record
becomes ``{"time", "level", "logger", "message", ...}`` plus the ``extra={...}`` members the
code passes and the context bound for the current request or job (``request_id``,
``client_id``, ``job_id``). ``configure_logging`` routes uvicorn's and arq's loggers through the
same handler.

Secrets never belong in a log line, and the code never puts one there; as a last line of
defence the formatter also replaces every configured secret (upstream token, API keys, webhook
secrets, the Redis password) by ``[redacted]`` should one ever slip into a message.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from app.config import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra={...}``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_DROPPED = frozenset({"color_message"})  # uvicorn's ANSI-coloured copy of the message
_context: ContextVar[dict[str, Any] | None] = ContextVar("log_context", default=None)

# Loggers of the servers we run inside; their own handlers are replaced by ours.
_FOREIGN = ("uvicorn", "uvicorn.error", "uvicorn.access", "arq", "arq.worker", "arq.jobs")


def bind(**values: Any) -> None:
    """Add members to every line logged from here on in the current request or job."""
    current = _context.get()
    if current is None:
        _context.set({k: v for k, v in values.items() if v is not None})
    else:  # shared (mutable) so that a value bound in a dependency reaches the middleware
        current.update({k: v for k, v in values.items() if v is not None})


def bound(name: str) -> Any:
    current = _context.get()
    return None if current is None else current.get(name)


@contextmanager
def log_context(**values: Any) -> Iterator[dict[str, Any]]:
    """A fresh context for one request or job."""
    fresh = {k: v for k, v in values.items() if v is not None}
    token = _context.set(fresh)
    try:
        yield fresh
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_context.get() or {})
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in _DROPPED and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        text = json.dumps(line, default=str, ensure_ascii=False)
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send every log record of this process, as one JSON line, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _FOREIGN:
        foreign = logging.getLogger(name)
        for old in list(foreign.handlers):
            foreign.removeHandler(old)
        for stale in [f for f in foreign.filters if isinstance(f, _JsonUntilConfigured)]:
            foreign.removeFilter(stale)
        foreign.propagate = True
        foreign.setLevel(logging.NOTSET)
    # The API logs one line per request itself (with request and client ids).
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; URLs can carry signed query strings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def secret_values(settings: Settings) -> list[str]:
    """Every secret of the settings, for the formatter's last-line-of-defence redaction."""
    found: list[str] = []
    if settings.upstream_token is not None:
        found.append(settings.upstream_token.get_secret_value())
    if settings.webhook_secret is not None:
        found.append(settings.webhook_secret.get_secret_value())
    for pair in [*settings.api_keys, *settings.admin_keys, *settings.webhook_secrets]:
        _, _, value = pair.partition(":")
        if value and not value.startswith("sha256:"):
            found.append(value)
            found.append(value.removeprefix("whsec_"))
    redis_password = urlsplit(settings.redis_url).password
    if redis_password:
        found += [redis_password, unquote(redis_password)]
    return found


def configure_for(settings: Settings) -> None:
    configure_logging(settings.log_level, secret_values(settings))


class _JsonUntilConfigured(logging.Filter):
    """Writes a record as a JSON line itself and stops it there (see ``json_from_import``)."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        self.handler.handle(record)
        return False


def json_from_import(settings: Settings, logger_name: str) -> None:
    """JSON lines for ``logger_name`` before ``configure_logging`` runs.

    arq configures its own plain-text logging after importing the worker settings and logs its
    banner before the worker's startup hook can switch to JSON; a filter on the logger (which
    arq's configuration leaves in place) writes those first records as JSON instead. The next
    ``configure_logging`` removes it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secret_values(settings)))
    logging.getLogger(logger_name).addFilter(_JsonUntilConfigured(handler))
