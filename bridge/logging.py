"""Structured logs for a daemon that runs for months: JSON lines, and no secret in any of them.

structlog runs on top of stdlib logging so that per-logger levels (`log.levels`) apply to our own
loggers and to third-party ones (aiohttp, apscheduler) alike, and so that both kinds of record
leave through one `ProcessorFormatter` whose last step before rendering is `redact_processor`.
Nothing can be added to a line after redaction, which is what makes the guarantee hold.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from pydantic import Field
from structlog.typing import EventDict, Processor, WrappedLogger

from bridge.components import StrictModel
from bridge.secrets import REDACTED, redact

__all__ = ["LogConfig", "configure_logging", "redact_processor"]


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    # Per-logger levels, e.g. {"bridge.http": "debug"}.
    levels: dict[str, Literal["debug", "info", "warning", "error"]] = Field(default_factory=dict)

# Keys whose values are credentials whatever they look like (`headers={"Authorization": …}`).
# Matched on the last word of the key so that `tokens` (a rate-limiter count) or `api_key_file`
# (a path) are kept, while `client_secret`, `x-api-key` and `access_token` are masked.
_SECRET_KEY = re.compile(
    r"(?:^|[_\-.])(?:authorization|api[_\-]?key|token|password|passwd|secret|cookie)$",
    re.IGNORECASE,
)
_MAX_DEPTH = 8
_LEADING_KEYS = ("timestamp", "level", "logger", "event")

# Third-party loggers that are chatty at INFO on every sweep; `log.levels` overrides these.
_DEFAULT_LEVELS: Mapping[str, str] = {"apscheduler": "warning", "aiohttp.access": "warning"}

_format_exception = structlog.processors.ExceptionRenderer()

_handler: logging.Handler | None = None
_leveled: set[str] = set()


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def _scrub(value: Any, depth: int = 0) -> Any:
    """Redact every string reachable from `value`; objects are stringified first, because the
    renderer would call `repr()` on them later and that text would escape redaction."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"))
    if depth >= _MAX_DEPTH:
        return redact(_text(value))
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if _is_secret_key(k) and v is not None else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    return redact(_text(value))


def _text(value: object) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the log line
        return object.__repr__(value)


def redact_processor(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Render `exc_info` into text, then redact known secrets and secret shapes in every value
    and mask every value whose key names a credential. Keep it last before the renderer."""
    if event_dict.get("exc_info"):
        event_dict = _format_exception(logger, method, event_dict)
    else:
        event_dict.pop("exc_info", None)
    out: EventDict = {}
    for key in _LEADING_KEYS:  # a human scanning JSON lines reads these first
        if key in event_dict:
            out[key] = None
    for key, value in event_dict.items():
        if _is_secret_key(key) and value is not None:
            out[key] = REDACTED
        else:
            out[key] = _scrub(value)
    return out


class _Handler(logging.StreamHandler[TextIO]):
    """A stream handler whose own failures (a stdlib call with bad %-args, a closed stream) are
    reported in one redacted line, not by stdlib's default dump of the record's raw args."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        with contextlib.suppress(Exception):
            self.stream.write(redact(f"logging error in {record.name} at {record.pathname}:"
                                     f"{record.lineno}: {type(exc).__name__}: {exc}") + "\n")
            self.flush()


def _shared_processors() -> list[Processor]:
    """Steps both structlog and foreign (stdlib) records go through before formatting."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(config: LogConfig, *, stream: TextIO | None = None) -> None:
    """(Re)configure structlog and stdlib logging; safe to call again on SIGHUP reload."""
    global _handler
    out = sys.stderr if stream is None else stream
    json_lines = config.format == "json" or (config.format == "auto" and not _isatty(out))
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=_isatty(out))
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_processor,  # last before the renderer: nothing added after it escapes
            renderer,
        ],
    )
    handler = _Handler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    root.setLevel(config.level.upper())

    levels = {**_DEFAULT_LEVELS, **config.levels}
    for name in _leveled - set(levels):
        logging.getLogger(name).setLevel(logging.NOTSET)  # a level dropped on reload
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level.upper())
    _leveled.clear()
    _leveled.update(levels)
    logging.captureWarnings(True)  # warnings become records, and records are redacted

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before configuration (or under structlog's
        # capture_logs in tests) must still pick up the current, redacting chain.
        cache_logger_on_first_use=False,
    )


def _isatty(stream: TextIO) -> bool:
    """Closed or fake streams count as machines reading, so they get JSON."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
