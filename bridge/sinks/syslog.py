"""Syslog sink for SIEMs: CEF, LEEF or JSON in RFC 5424/3164 messages over UDP, TCP, TLS or
RELP (optionally over TLS).

The three parts: `SyslogSinkConfig`, the pure encoders in `formats` (the payload) and
`syslog_framing` (header and RFC 6587 framing), and a byte transport from `transport`, or the
RELP client from `relp`. Over UDP, TCP and TLS a batch is encoded whole and written in one go; a
connection failure makes the whole batch retryable. Over RELP every message is a transaction the
receiver answers: an event counts as delivered when all its messages were answered 200, and when
the session breaks the ones answered are reported delivered, the others stay in the outbox. An
event that cannot be encoded is rejected alone (after the others were sent) so the worker
dead-letters just that one.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import structlog
from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.grouping import StormGuardSettings
from bridge.model import SEVERITIES, Event
from bridge.net import client_tls_context, warn_tls_unverified
from bridge.sinks.base import (
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Sink,
    SinkConfig,
)
from bridge.sinks.formats.cef import CefConfig
from bridge.sinks.formats.common import Oversize, utf8_size
from bridge.sinks.formats.leef import LeefConfig
from bridge.sinks.formats.payload import PayloadFormat, formatter
from bridge.sinks.relp import RelpClient, RelpSendError, RelpUnavailableError
from bridge.sinks.syslog_framing import (
    DEFAULT_SEVERITY_MAP,
    Framing,
    Rfc,
    SyslogHeaders,
    facility_code,
    framer,
    severity_code,
)
from bridge.sinks.transport import TcpTransport, TransportError, UdpTransport, describe

log = structlog.get_logger(__name__)

# RFC 5426: receivers SHOULD accept 2048-octet datagrams (and MUST 480 over IPv4). Bigger ones
# work on most LANs and on loopback; raise it when you know your path and receiver.
UDP_DEFAULT_MAX = 2048
UDP_LIMIT = 65507  # the largest IPv4 UDP payload
DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514, "relp": 2514}
_TLS_ONLY = ("ca_bundle", "client_cert", "client_key", "client_key_password", "server_name")


class SyslogSinkConfig(SinkConfig, StormGuardSettings):
    """Where and how to send: transport, syslog flavour, payload format and TLS settings."""

    type: Literal["syslog"]
    # A batch is one write; syslog messages are small, so batches can be larger than elsewhere.
    batch_size: int = Field(default=500, ge=1, le=10_000)
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="514, or 6514 for tls")
    protocol: Literal["udp", "tcp", "tls", "relp"] = "tcp"
    # RELP over TLS (protocol: relp only; the TLS settings below then apply).
    tls: bool = False
    # RELP: transactions sent and not yet answered, at most; a broken session can leave at most
    # this many messages stored but unanswered, hence sent again (duplicates, same event ids).
    relp_window: int = Field(default=1024, ge=1, le=65_536)
    # Stream framing (RFC 6587); ignored for UDP (a datagram is a message) and RELP (a frame is).
    framing: Framing = "octet_counting"
    format: PayloadFormat = "cef"
    rfc: Rfc = 5424
    facility: str | int = "local4"
    # Our severity -> syslog severity (name or 0-7); keys left out keep the default.
    severity_map: dict[str, str | int] = Field(default_factory=dict)
    hostname: str | None = Field(default=None, description="default: this host's name")
    app_name: str = Field(default="bridge", pattern=r"^[!-~]{1,48}$")
    procid: str | None = Field(default=None, pattern=r"^[!-~]{1,128}$",
                               description="default: the process id")
    msgid: str | None = Field(default=None, pattern=r"^[!-~]{1,32}$",
                              description="default: the event type")
    structured_data: bool = False  # RFC 5424 only: [sd_id id=".." type=".." ...]
    sd_id: str = Field(default="bridge@32473", pattern=r'^[!-~]{1,32}$')
    cef: CefConfig = Field(default_factory=CefConfig)
    leef: LeefConfig = Field(default_factory=LeefConfig)
    # TLS (RFC 5425, or RELP with `tls: true`). Verification is on unless `verify: false`,
    # which is loudly reported.
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    client_key_password: SecretStr | None = None
    server_name: str | None = Field(default=None, description="default: host")
    verify: bool = True
    # Largest syslog message in bytes: default 2048 on UDP, none on TCP/TLS. A longer event is
    # truncated (longest values first) or split over several messages carrying its id.
    max_message_size: int | None = Field(default=None, ge=480, le=1 << 24)
    oversize: Oversize = "truncate"
    connect_timeout: float = Field(default=10.0, gt=0)
    # TCP/TLS: the longest a write may take; RELP: the longest wait for the next answer.
    write_timeout: float = Field(default=30.0, gt=0)
    connect_grace: float = Field(default=0.2, ge=0)
    # TCP/TLS: what the receiver's TCP has not acknowledged is always kept for a resend after
    # the connection is lost; of what it acknowledged, the newest bytes its socket buffer may
    # still hold unread are kept too, at most `resend_window_bytes` (bridge/sinks/transport.py).
    # `resend_window_seconds` applies only where the kernel cannot report acknowledgements
    # (not Linux): then the newest bytes written within that many seconds are kept.
    resend_window_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    resend_window_seconds: float = Field(default=10.0, ge=0)

    @field_validator("rfc", mode="before")
    @classmethod
    def _rfc(cls, value: object) -> object:
        """`rfc: "5424"` from an environment override is as good as the number."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("facility")
    @classmethod
    def _facility(cls, value: str | int) -> str | int:
        facility_code(value)
        return value

    @field_validator("severity_map")
    @classmethod
    def _severity_map(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        for ours, theirs in value.items():
            if ours not in SEVERITIES:
                raise ValueError(f"unknown severity {ours!r}: use one of {', '.join(SEVERITIES)}")
            severity_code(theirs)
        return value

    @property
    def uses_tls(self) -> bool:
        return self.protocol == "tls" or (self.protocol == "relp" and self.tls)

    @model_validator(mode="after")
    def _consistent(self) -> SyslogSinkConfig:
        if self.tls and self.protocol != "relp":
            raise ValueError("tls applies to protocol: relp only (protocol: tls is TLS already)")
        if "relp_window" in self.model_fields_set and self.protocol != "relp":
            raise ValueError("relp_window applies to protocol: relp only")
        if not self.uses_tls:
            for name in _TLS_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to protocol: tls (or relp with tls) only")
            if not self.verify:
                raise ValueError("verify applies to protocol: tls (or relp with tls) only")
        if (self.client_key is None) != (self.client_cert is None):
            raise ValueError("client_cert and client_key go together")
        if self.protocol == "udp" and (self.max_message_size or 0) > UDP_LIMIT:
            raise ValueError(f"max_message_size over UDP cannot exceed {UDP_LIMIT}")
        if self.structured_data and self.rfc != 5424:
            raise ValueError("structured_data needs rfc: 5424")
        if self.connect_grace >= self.connect_timeout:
            raise ValueError("connect_grace must be shorter than connect_timeout")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.protocol]

    @property
    def effective_max_message_size(self) -> int | None:
        if self.max_message_size is not None:
            return self.max_message_size
        return UDP_DEFAULT_MAX if self.protocol == "udp" else None

    def ssl_context(self) -> ssl.SSLContext:
        """The client context; raises ValueError naming the file that could not be loaded."""
        password = self.client_key_password.get_secret_value() if self.client_key_password else None
        try:
            return client_tls_context(verify=self.verify, ca_bundle=self.ca_bundle,
                                      client_cert=self.client_cert, client_key=self.client_key,
                                      key_password=password)
        except ValueError as exc:
            raise ValueError(f"sink {self.name}: {exc}") from None

    def build(self) -> SyslogSink:
        return SyslogSink(self)


class SyslogSink(Sink[SyslogSinkConfig]):
    def __init__(self, config: SyslogSinkConfig) -> None:
        super().__init__(config)
        cfg = config
        severities = {**DEFAULT_SEVERITY_MAP, **cfg.severity_map}
        self._headers = SyslogHeaders(
            rfc=cfg.rfc,
            facility=facility_code(cfg.facility),
            severity_map={k: severity_code(v) for k, v in severities.items()},
            hostname=cfg.hostname or socket.gethostname(),
            app_name=cfg.app_name,
            procid=cfg.procid or str(os.getpid()),
            msgid=cfg.msgid,
            structured_data=cfg.structured_data,
            sd_id=cfg.sd_id,
            tag=cfg.app_name if cfg.format == "json" else None,
        )
        payload = formatter(cfg.format, cfg.cef, cfg.leef)
        self._encode, self._fit = payload.encode, payload.fit
        self._limit = cfg.effective_max_message_size
        self._stream = cfg.protocol in ("tcp", "tls")  # one byte stream; RELP frames messages
        self._frame_message = framer(self._stream, cfg.framing)
        self._transport: TcpTransport | UdpTransport | RelpClient
        if cfg.protocol == "udp":
            self._transport = UdpTransport(cfg.host, cfg.effective_port)
            return
        ctx = None
        if cfg.uses_tls:
            ctx = cfg.ssl_context()
            self._warn_unverified()
        if cfg.protocol == "relp":
            self._transport = RelpClient(
                cfg.host, cfg.effective_port, ssl_context=ctx, server_hostname=cfg.server_name,
                connect_timeout=cfg.connect_timeout, ack_timeout=cfg.write_timeout,
                window=cfg.relp_window)
            return
        self._transport = TcpTransport(
            cfg.host, cfg.effective_port, ssl_context=ctx, server_hostname=cfg.server_name,
            connect_timeout=cfg.connect_timeout, write_timeout=cfg.write_timeout,
            connect_grace=cfg.connect_grace, resend_window_bytes=cfg.resend_window_bytes,
            resend_window_seconds=cfg.resend_window_seconds,
        )

    @property
    def transport(self) -> TcpTransport | UdpTransport | RelpClient:
        return self._transport

    def _warn_unverified(self) -> None:
        if self.config.uses_tls and not self.config.verify:
            warn_tls_unverified(self.name, self._target)

    @property
    def _target(self) -> str:
        return f"{self.config.host}:{self.config.effective_port}"

    async def open(self) -> None:
        self._warn_unverified()
        try:
            await self._transport.connect()
        except (TransportError, RelpUnavailableError) as exc:
            raise DestinationUnavailableError(str(exc)) from None

    def messages(self, event: Event) -> list[tuple[str, int]]:
        """The syslog messages for one event with their UTF-8 sizes: one, or several when split.

        Raises ValueError (UnicodeEncodeError included) when the event cannot be encoded.
        """
        header = self._headers.header(event)
        text = header + self._encode(event)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))  # utf8_size, inlined
        if self._limit is None or size <= self._limit:
            return [(text, size)]
        room = self._limit - utf8_size(header)
        parts = [header + part for part in self._fit(event, room, self.config.oversize)]
        return [(part, utf8_size(part)) for part in parts]

    def frame(self, events: Sequence[Event]) -> tuple[list[bytes], dict[str, str]]:
        """The bytes to write for a batch (one chunk per message on UDP and RELP, one in all on
        a stream), and the events that could not be encoded, with why: each event's
        `messages`, framed (`syslog_framing.framer`), all of them or, when one cannot be, none."""
        chunks, _, rejected = self._encode_batch(events)
        return chunks, rejected

    def _encode_batch(
        self, events: Sequence[Event]
    ) -> tuple[list[bytes], list[tuple[str, int]], dict[str, str]]:
        """`frame`, and for each encoded event its id and the number of messages up to and
        including its own (RELP acknowledges messages; the outbox, events)."""
        out: list[str] = []
        append = out.append
        ends: list[tuple[str, int]] = []
        rejected: dict[str, str] = {}
        messages, frame = self.messages, self._frame_message
        header, encode, limit = self._headers.header, self._encode, self._limit
        for event in events:
            done = len(out)
            try:
                # `messages`, its common case inlined (one message that fits): this loop runs
                # for every event a syslog sink sends.
                text = header(event) + encode(event)
                size = len(text) if text.isascii() else len(text.encode("utf-8"))
                if limit is None or size <= limit:
                    append(frame(text, size))
                else:
                    for text, size in messages(event):
                        append(frame(text, size))
            except (ValueError, TypeError, RecursionError) as exc:  # UnicodeError is a ValueError
                del out[done:]  # an event goes whole or not at all
                rejected[event.id] = f"{type(exc).__name__}: {exc}"
            else:
                ends.append((event.id, len(out)))
        if not self._stream:
            return [text.encode("utf-8") for text in out], ends, rejected
        return ([("".join(out)).encode("utf-8")] if out else []), ends, rejected

    async def send(self, events: Sequence[Event]) -> None:
        chunks, ends, rejected = self._encode_batch(events)
        if chunks:
            transport = self._transport
            try:
                if isinstance(transport, RelpClient):
                    await self._send_relp(transport, chunks, ends)
                else:
                    await transport.send(chunks)
            except (TransportError, RelpUnavailableError) as exc:
                raise DestinationUnavailableError(str(exc)) from None
        if rejected:
            first = next(iter(rejected.items()))
            raise PermanentDeliveryError(
                f"cannot encode {len(rejected)} event(s) as {self.config.format}; "
                f"first {first[0]}: {first[1]}",
                event_ids=list(rejected),
            )

    @staticmethod
    async def _send_relp(client: RelpClient, messages: list[bytes],
                         ends: list[tuple[str, int]]) -> None:
        """An event is delivered once every one of its messages was answered 200."""
        try:
            await client.send(messages)
        except RelpSendError as exc:
            delivered = [event_id for event_id, end in ends if end <= exc.acknowledged]
            if exc.rejected:  # it answered, with an error: an attempt spent
                raise RetryableDeliveryError(str(exc), delivered=delivered) from None
            raise DestinationUnavailableError(str(exc), delivered=delivered) from None

    async def close(self) -> None:
        try:
            await self._transport.close()
        except Exception as exc:  # close must not raise
            log.debug("syslog_close_failed", sink=self.name, error=describe(exc))
