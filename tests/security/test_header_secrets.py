"""Secrets in a webhook's `headers:` (issue 15, point 8). `Authorization: "Splunk ${HEC_TOKEN}"`
is not a `SecretStr` field, so nothing registered the token for redaction, and a receiver that
quotes the request's headers in its error answer put it into the `dead_lettered` log line, the
dead-letter table, `bridge dlq list --json` and `/readyz`. Every value that came from `${…}`
is now a secret wherever it sits in the config."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.daemon._http import get
from tests.daemon.conftest import random_secret
from tests.security._daemon import daemon_config, running, scanorbit
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(90)


def state_files(config: dict[str, Any]) -> bytes:
    """Every byte of the state store (the database and its write-ahead log)."""
    db = Path(config["state"]["path"])
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


@pytest.mark.parametrize("status", [400, 500])
async def test_a_header_secret_echoed_by_the_receiver_is_redacted_everywhere(
        tmp_path: Path, status: int) -> None:
    """400: rejected at once. 500: retried (the sink unhealthy in /readyz with the receiver's
    answer as its error), then dead-lettered."""
    hec_token = str(uuid.uuid4())  # the shape of a Splunk HEC token: no known secret prefix
    admin_token = random_secret("adm_", 32)
    env = {"HEC_TOKEN": hec_token, "ADMIN_TOKEN": admin_token}
    receiver = await Receiver(mode=status, echo_auth=True).start()
    try:
        async with scanorbit() as vendor:
            vendor.world.add_finding()
            config = daemon_config(tmp_path, vendor)
            config["admin"]["token"] = "${ADMIN_TOKEN}"
            config["sinks"] = [{"name": "hook", "type": "webhook", "url": receiver.url,
                                "headers": {"Authorization": "Splunk ${HEC_TOKEN}"},
                                "max_attempts": 2, "backoff_initial": 0.05,
                                "backoff_max": 0.1}]
            config["routes"] = {"sinks": ["hook"]}
            async with running(DaemonProcess(config, tmp_path, env=env)) as daemon:
                dead = await daemon.wait_log("dead_lettered")
                _, readyz = await get(f"{await daemon.admin_url()}/readyz", admin_token)
                assert await daemon.stop() == 0
    finally:
        await receiver.stop()
    # The receiver really was sent the token, and really quoted it back.
    assert receiver.attempts and receiver.attempts[0].authorization == f"Splunk {hec_token}"

    config_path = str(daemon.config_path)
    listings = []
    for args in (("dlq", "list", "--json"), ("dlq", "list")):
        code, out, err = await run_cli(*args, "--config", config_path, env=env)
        assert code == 0, err
        listings.append(out + err)
    (row,) = json.loads(listings[0])

    places = {"log": daemon.logs(), "dead_lettered": dead["error"], "dlq list --json": row["error"],
              "dlq list": listings[1], "/readyz": json.dumps(readyz),
              "state store": state_files(config).decode("utf-8", "replace")}
    assert {name for name, text in places.items() if hec_token in text} == set()
    # Redaction happened (rather than the quote going missing): the echo is there, masked.
    for name in ("dead_lettered", "dlq list --json", "dlq list"):
        assert f"{status}" in places[name] and "Splunk ***" in places[name], (name, places[name])
    if status == 500:
        assert "Splunk ***" in readyz["sinks"]["hook"]["error"], readyz
