"""Local sinks: a file of one event per line (for shippers like Filebeat/Vector, and the demo)
and stdout.

The file holds JSON lines by default, the JSON format's own encoding (`encode_json`), or CEF or
LEEF records (`format: cef | leef`, with `cef:`/`leef:` settings as for the syslog sink): none
of them has a raw control or line-breaking character, so one line per event for any reader.
Stdout writes JSON lines or, in its "text" form, one readable line per event with such
characters made visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

from pydantic import Field

from bridge.grouping import StormGuardSettings
from bridge.model import Event
from bridge.sinks.base import DestinationUnavailableError, Sink, SinkConfig
from bridge.sinks.formats.cef import CefConfig
from bridge.sinks.formats.json import encode_json, stored_json_lines
from bridge.sinks.formats.leef import LeefConfig
from bridge.sinks.formats.payload import PayloadFormat, formatter
from bridge.textsafe import printable


class FileSinkConfig(SinkConfig, StormGuardSettings):
    type: Literal["file"]
    path: Path
    # "batch": fsync after every batch, so an acknowledged event is on disk; "never": leave it
    # to the OS (faster, may lose the tail on power loss, never on a process crash).
    fsync: Literal["batch", "never"] = "batch"
    # Events per write (and fsync): a batch costs one fsync and one acknowledgement whatever
    # its size, so a file takes a first sweep's backlog in batches of 1,000, not 100.
    batch_size: int = Field(default=1_000, ge=1, le=10_000)
    # One record per line: JSON lines, or CEF/LEEF as a SIEM's file collector reads them.
    format: PayloadFormat = "json"
    cef: CefConfig = Field(default_factory=CefConfig)
    leef: LeefConfig = Field(default_factory=LeefConfig)

    def build(self) -> FileSink:
        return FileSink(self)


class FileSink(Sink[FileSinkConfig]):
    def __init__(self, config: FileSinkConfig) -> None:
        super().__init__(config)
        self._fd: int | None = None
        self._encode = formatter(config.format, config.cef, config.leef).encode
        # A JSON line is `encode_json`: the stored JSON with unsafe characters escaped.
        self.sends_stored_json = config.format == "json"

    async def open(self) -> None:
        try:
            self.config.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.config.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DestinationUnavailableError(f"cannot open {self.config.path}: {exc.strerror}") from None
        try:
            await asyncio.to_thread(_drop_partial_line, fd)
        except OSError as exc:
            os.close(fd)
            raise DestinationUnavailableError(f"cannot repair {self.config.path}: {exc.strerror}") from None
        self._fd = fd

    async def send(self, events: Sequence[Event]) -> None:
        encode = self._encode
        await self._append("".join(encode(e) + "\n" for e in events).encode())

    async def send_stored(self, bodies: Sequence[str]) -> None:
        if not self.sends_stored_json:
            await super().send_stored(bodies)
            return
        await self._append(stored_json_lines(bodies).encode())

    async def _append(self, data: bytes) -> None:
        if self._fd is None:
            await self.open()
        assert self._fd is not None
        fd, sync = self._fd, self.config.fsync == "batch"

        def write() -> None:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if sync:
                    os.fsync(fd)
            except OSError:
                # A full disk takes part of a batch: take it back, so that the retry appends
                # whole lines (a reader must never see half an event glued to the next one).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            raise DestinationUnavailableError(f"cannot write {self.config.path}: {exc.strerror}") from None

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _drop_partial_line(fd: int, chunk: int = 65536) -> None:
    """Cut a last line that has no newline: what a batch cut short (a full disk, a crash
    between two writes) left behind. It was never acknowledged, so it is sent again whole."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    pos = end
    while pos > 0:
        start = max(0, pos - chunk)
        newline = os.pread(fd, pos - start, start).rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        pos = start
    os.ftruncate(fd, 0)


class StdoutSinkConfig(SinkConfig):
    type: Literal["stdout"]
    # "text": one readable line per event (the demo); "json": JSON lines (pipelines).
    format: Literal["text", "json"] = "text"

    def build(self) -> StdoutSink:
        return StdoutSink(self)


def describe(event: Event) -> str:
    """One readable line: what happened to which item, and why. Vendor text is made
    `printable`: a title must not clear the screen, retitle the window, write the clipboard or
    start a line of its own that reads like another event."""
    where = f"{event.source}/{event.tenant}" if event.tenant else event.source
    line = f"{event.type.value.upper():9} {event.severity:8} {where} {event.kind} {event.title}"
    if event.changes:
        line += " (" + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in event.changes.items()) + ")"
    elif event.type.value in ("resolved", "reopened"):
        line += f" ({event.reason})"
    return printable(line)


class StdoutSink(Sink[StdoutSinkConfig]):
    def __init__(self, config: StdoutSinkConfig, stream: TextIO | None = None) -> None:
        super().__init__(config)
        self._stream = stream
        self.sends_stored_json = config.format == "json"

    async def send(self, events: Sequence[Event]) -> None:
        render = encode_json if self.config.format == "json" else describe
        self._write("".join(render(e) + "\n" for e in events))

    async def send_stored(self, bodies: Sequence[str]) -> None:
        if not self.sends_stored_json:
            await super().send_stored(bodies)
            return
        self._write(stored_json_lines(bodies))

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(text)
        stream.flush()
