"""Logs are JSON lines with the fields operators filter on, and never carry a secret."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from bridge.logging import LogConfig, configure_logging, redact_processor
from bridge.plugins import sink_types, source_types
from bridge.secrets import REDACTED, redact, remember

# A configured secret of no recognizable shape: only `remember()` can catch it.
SECRET = remember("cfg-" + secrets.token_hex(12))

SHAPES = {
    "scanorbit": "sk_live_" + "a1B2c3D4e5F6g7H8",
    "aether365": "ae_live_" + "Zz9_yY8-xX7wW6vV",
    "ayliea": "ayliea_pk_" + "Qq1Ww2Ee3Rr4Tt5",
    "webhook": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def setup(stream: io.StringIO, **kwargs: Any) -> structlog.stdlib.BoundLogger:
    # As in the daemon, the components are discovered (the config is parsed) before anything
    # is logged: discovery registers each component's key shapes for redaction.
    source_types(), sink_types()
    configure_logging(LogConfig(format=kwargs.pop("format", "json"), **kwargs), stream=stream)
    logger: structlog.stdlib.BoundLogger = structlog.get_logger("bridge.sources.test")
    return logger


class Leaky:
    """An object whose text contains the secret: renderers would repr() it."""

    def __repr__(self) -> str:
        return f"Leaky(key={SECRET})"

    __str__ = __repr__


def _raise_and_log(log: Any) -> None:
    try:
        raise RuntimeError(f"vendor said no to key {SECRET}")
    except RuntimeError:
        log.exception("sweep_failed")


def _chained(log: Any) -> None:
    try:
        try:
            raise ValueError(f"inner {SECRET}")
        except ValueError as inner:
            raise RuntimeError("outer, no secret here") from inner
    except RuntimeError:
        log.error("sweep_failed", exc_info=True)


def _exc_outside_handler(log: Any) -> None:
    try:
        raise KeyError(SECRET)
    except KeyError as exc:
        caught = exc
    log.warning("late_report", exc_info=caught)


def _stdlib_exception(_: Any) -> None:
    try:
        raise ConnectionError(f"https://api.example/?key={SECRET}")
    except ConnectionError:
        logging.getLogger("apscheduler.executors.default").exception("Job raised an exception")


def _warning(_: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated key {SECRET}", UserWarning, stacklevel=1)


def _contextvars(log: Any) -> None:
    with structlog.contextvars.bound_contextvars(source=SECRET):
        log.info("bound")


# Every way a secret can reach a log line; each must come out redacted.
PATHS: dict[str, Callable[[Any], None]] = {
    "message": lambda log: log.info(f"calling with {SECRET}"),
    "positional_args": lambda log: log.info("calling with %s", SECRET),
    "kwarg": lambda log: log.info("request", detail=f"key={SECRET}"),
    "nested_dict": lambda log: log.info("request", req={"params": {"q": [1, {"k": SECRET}]}}),
    "tuple_value": lambda log: log.info("request", args=("x", SECRET)),
    "bytes_value": lambda log: log.info("response", body=f"echo {SECRET}".encode()),
    "object_repr": lambda log: log.info("state", obj=Leaky()),
    "exception_as_value": lambda log: log.warning("failed", error=ValueError(f"bad {SECRET}")),
    "secret_key_name": lambda log: log.info("headers", headers={"X-API-Key": "plain-value-1"}),
    "log_exception": _raise_and_log,
    "chained_exception": _chained,
    "exc_info_object": _exc_outside_handler,
    "stdlib_args": lambda _: logging.getLogger("aiohttp.client").warning("GET failed: %s", SECRET),
    "stdlib_extra": lambda _: logging.getLogger("aiohttp.client").warning(
        "GET failed", extra={"url": f"https://x/?k={SECRET}"}),
    "stdlib_exception": _stdlib_exception,
    "python_warning": _warning,
    "contextvars": _contextvars,
    "authorization_header_text": lambda log: log.info(f"sent Authorization: Bearer {SECRET}"),
    **{f"shape_{name}": (lambda v: lambda log: log.info(f"token {v} in text"))(value)
       for name, value in SHAPES.items()},
}


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_no_secret_escapes(log_stream: io.StringIO, path: str, fmt: str) -> None:
    log = setup(log_stream, format=fmt)
    PATHS[path](log)
    out = log_stream.getvalue()
    assert out.strip(), "nothing was logged"
    assert SECRET not in out
    assert "plain-value-1" not in out
    for value in SHAPES.values():
        assert value not in out
    assert REDACTED in out
    if fmt == "json":
        assert lines(log_stream)  # every line is valid JSON


def test_json_fields_and_context(log_stream: io.StringIO) -> None:
    log = setup(log_stream)
    with structlog.contextvars.bound_contextvars(source="so-prod", sweep_id="sw-1"):
        log.info("sweep_done", items=3)
    with structlog.contextvars.bound_contextvars(sink="siem", event_id="ev-9"):
        logging.getLogger("aiohttp.client").warning("slow")
    first, second = lines(log_stream)
    assert list(first)[:4] == ["timestamp", "level", "logger", "event"]
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert first | {"timestamp": None} == {
        "timestamp": None, "level": "info", "logger": "bridge.sources.test",
        "event": "sweep_done", "source": "so-prod", "sweep_id": "sw-1", "items": 3,
    }
    assert second["logger"] == "aiohttp.client" and second["level"] == "warning"
    assert second["sink"] == "siem" and second["event_id"] == "ev-9"


def test_per_logger_levels(log_stream: io.StringIO) -> None:
    configure_logging(
        LogConfig(format="json", level="info", levels={"bridge.http": "debug", "noisy": "error"}),
        stream=log_stream,
    )
    structlog.get_logger("bridge.http").debug("shown")
    structlog.get_logger("bridge.store").debug("hidden")
    structlog.get_logger("bridge.store").info("shown_too")
    logging.getLogger("noisy.child").warning("hidden_stdlib")
    logging.getLogger("noisy.child").error("shown_stdlib")
    logging.getLogger("apscheduler.scheduler").info("hidden_by_default")
    assert [line["event"] for line in lines(log_stream)] == ["shown", "shown_too", "shown_stdlib"]


def test_reconfigure_is_idempotent(log_stream: io.StringIO) -> None:
    configure_logging(LogConfig(format="json", levels={"bridge.http": "debug"}), stream=log_stream)
    second = io.StringIO()
    configure_logging(LogConfig(format="json", level="warning"), stream=second)
    structlog.get_logger("bridge.http").debug("dropped level is gone")
    structlog.get_logger("bridge.x").warning("once")
    assert [line["event"] for line in lines(second)] == ["once"]
    assert log_stream.getvalue() == ""  # the old handler was replaced, not stacked
    assert logging.getLogger("bridge.http").level == logging.NOTSET


def test_auto_format_follows_tty(log_stream: io.StringIO) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    configure_logging(LogConfig(format="auto"), stream=log_stream)
    structlog.get_logger("bridge.x").info("machine")
    assert lines(log_stream)[0]["event"] == "machine"

    tty = Tty()
    configure_logging(LogConfig(format="auto"), stream=tty)
    structlog.get_logger("bridge.x").info("human")
    text = tty.getvalue()
    assert "human" in text and not text.lstrip().startswith("{")


def test_redaction_is_last_before_renderer(log_stream: io.StringIO) -> None:
    configure_logging(LogConfig(format="json"), stream=log_stream)
    handler = next(h for h in logging.getLogger().handlers
                   if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter))
    assert isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
    assert handler.formatter.processors[-2] is redact_processor


def test_redact_processor_directly() -> None:
    event = {
        "event": f"x {SECRET}",
        "Authorization": "Bearer abc",
        "api_key": "k",
        "client_secret": "s",
        "x-api-key": "k2",
        "password": None,
        "tokens": 3.5,
        "api_key_file": "/run/credentials/key",
        "nested": {"TOKEN": "t", "list": [SECRET, 1, None]},
    }
    out = redact_processor(None, "info", event)
    assert out == {
        "event": f"x {REDACTED}",
        "Authorization": REDACTED,
        "api_key": REDACTED,
        "client_secret": REDACTED,
        "x-api-key": REDACTED,
        "password": None,
        "tokens": 3.5,
        "api_key_file": "/run/credentials/key",
        "nested": {"TOKEN": REDACTED, "list": [REDACTED, 1, None]},
    }


def test_broken_stdlib_call_does_not_dump_args(log_stream: io.StringIO,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    setup(log_stream)
    handler = next(h for h in logging.getLogger().handlers
                   if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter))
    # Straight to our handler: pytest's own capture handler re-raises such errors.
    record = logging.getLogger("aiohttp.client").makeRecord(
        "aiohttp.client", logging.WARNING, __file__, 1, "two %s %s but one arg", (SECRET,), None)
    handler.handle(record)
    out = log_stream.getvalue() + "".join(capsys.readouterr())
    assert "logging error in aiohttp.client" in out
    assert SECRET not in out


def test_each_component_declares_its_own_key_shapes() -> None:
    """secrets.py knows no vendor: the shapes come from the discovered components."""
    by_type = {**source_types(), **sink_types()}
    for name, value in SHAPES.items():
        assert any(re.fullmatch(p, value) for p in by_type[name].secret_patterns), name
        assert redact(f"pasted {value} here") == f"pasted {REDACTED} here"
