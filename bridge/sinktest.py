"""`bridge sinks test NAME`: one clearly marked synthetic event through the real sink, as
configured (Grafana's "test contact point"), and what the receiver answered. Nothing touches the
state store: no outbox row, no dead letter, no retry, whatever the outcome.

HTTP sinks (webhook, slack, teams, pagerduty) are driven through their own request builder and
service, so the answer shown is the receiver's status and body as the sink judged it; other
sinks have no answer beyond "the bytes went out" (a syslog stream, a file), which is said so.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.model import Event, json_scalar
from bridge.sinks.base import (
    DeliveryError,
    DestinationUnavailableError,
    PermanentDeliveryError,
    SinkConfig,
    ThrottledError,
)
from bridge.sinks.http.service import judge
from bridge.sinks.http.sink import HttpSink

Verdict = Literal["delivered", "refused", "throttled", "unreachable", "failing"]
TEST_TITLE = "[bridge test] a synthetic event from `bridge sinks test`: safe to ignore"


def test_event(base: Event) -> Event:
    """`base` (defaults, or what `--event` gave) marked beyond doubt as a test: its own id,
    a title that says so, `attributes.bridge_test`, source and vendor `bridge`, kind `test`
    unless given."""
    if not isinstance(base.attributes, Mapping):
        raise ValueError("attributes must be an object")
    title = base.title if base.title.startswith("[bridge test]") else (
        f"[bridge test] {base.title}" if base.title else TEST_TITLE)
    return dataclasses.replace(
        base, id=uuid.uuid4().hex, title=title, kind=base.kind or "test",
        source=base.source or "bridge", vendor=base.vendor or "bridge",
        scope=base.scope or "bridge-test",
        reason=base.reason or "synthetic test event from `bridge sinks test`",
        attributes={**{str(k): json_scalar(v) for k, v in base.attributes.items()},
                    "bridge_test": True})


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    answer: str  # what the receiver said, or where the bytes went

    @property
    def ok(self) -> bool:
        return self.verdict == "delivered"


def _destination(config: SinkConfig) -> str:
    """Where a sink without an answering receiver put the event."""
    settings: dict[str, Any] = config.model_dump()
    if "path" in settings:
        return f"appended to {settings['path']}"
    if "host" in settings and "port" in settings:
        protocol = settings.get("protocol", "the network")
        # RELP is the one syslog transport with an answer: the send returned, so it was rsp 200.
        answer = ("the receiver acknowledged it" if str(protocol).startswith("relp")
                  else "syslog has no answer")
        return f"sent to {settings['host']}:{settings['port']} over {protocol} ({answer})"
    return f"written by the {config.type} sink"


async def send_test(config: SinkConfig, event: Event) -> Outcome:
    """Send `event` through a sink built from `config`, once, and say what came of it."""
    sink = config.build()
    try:
        await sink.open()
        if isinstance(sink, HttpSink):
            response = await sink.service.post(sink.builder.event(event))
            answer = f"HTTP {response.status}: {response.excerpt or '(empty)'}"
            judge(response, sink.builder.describe)
        else:
            await sink.send([event])
            answer = _destination(config)
    except PermanentDeliveryError as exc:
        return Outcome("refused", str(exc))
    except ThrottledError as exc:
        return Outcome("throttled", str(exc))
    except DestinationUnavailableError as exc:
        return Outcome("unreachable", str(exc))
    except DeliveryError as exc:
        return Outcome("failing", str(exc))
    except Exception as exc:  # a template that cannot render, a sink's bug: say so, no trace
        return Outcome("failing", f"{type(exc).__name__}: {exc}")
    finally:
        await sink.close()
    return Outcome("delivered", answer)
