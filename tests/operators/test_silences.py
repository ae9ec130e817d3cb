"""Silences (bridge/silences.py), end to end: added through the admin API of a running
`bridge run`, they mute matching events (recorded with the silence id, not delivered) while
`resolved` still goes out; they survive a restart; expired with `bridge silence expire`, the
items they held back that are still active are delivered once, as they stand. The admin API
refuses without its token and never opens on a non-loopback bind without one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bridge.admin import AdminConfig, AdminServer
from bridge.config import parse_config
from bridge.health import Health
from bridge.model import EventType
from bridge.silences import SilenceService, new_silence, parse_matchers
from bridge.store.sqlite import SQLiteStore
from tests.daemon.conftest import random_secret
from tests.support.daemon import DaemonProcess
from tests.support.harness import Harness
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until

from .conftest import Vendor, bridge, operator_config, write_config

SILENCES = "/api/v1/silences"
NOISY = "i-0abc"  # the resources of a known issue


async def api(method: str, url: str, token: str | None = None, body: Any = None
              ) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(
            method, url, headers=headers, json=body) as resp:
        return resp.status, await resp.json()


async def muted_by(path: Path, silence: str) -> list[dict[str, Any]]:
    code, out, err = await bridge("state", "muted", "--silence", silence, "--json",
                                  "--limit", "1000", config=path)
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def silence_body(**extra: Any) -> dict[str, Any]:
    return {"matchers": ["source=scanorbit", f"attributes.resourceId=~{NOISY}.*"],
            "duration": "1h", "reason": "known issue, fix in sprint 12", "author": "ana",
            **extra}


@pytest.mark.slow
async def test_a_silence_across_a_restart_then_its_expiry(
        tmp_path: Path, vendor: Vendor, receiver: Receiver) -> None:
    world, token = vendor.world, random_secret("adm_", 32)
    noisy = [world.add_finding(resourceId=f"{NOISY}{n}", severity="low")["id"] for n in range(2)]
    other = world.add_finding(resourceId="i-0fff1", severity="low")["id"]
    config = operator_config(tmp_path, vendor, interval=1)
    config["sinks"] = [{"name": "hook", "type": "webhook", "url": receiver.url,
                        "backoff_initial": 0.05, "backoff_max": 0.2}]
    config["routes"] = {"sinks": ["hook"]}
    config["admin"] = {"port": 0, "token": token}
    config["silences"] = {"check_interval": 0.2}
    daemon = await DaemonProcess(config, tmp_path).start()
    path = daemon.config_path
    try:
        await receiver.wait_for(lambda r: len(r.received) == 3)
        base = await daemon.admin_url()
        status, created = await api("POST", base + SILENCES, token, silence_body())
        assert status == 201, created
        sid = created["id"]
        assert created["state"] == "active" and created["origin"] == "api"
        assert created["matchers"]["attributes.resourceId"] == {"op": "regex",
                                                                "value": f"{NOISY}.*"}

        world.set_severity(noisy[0], "high")  # changed: muted
        fresh = world.add_finding(resourceId=f"{NOISY}9", severity="critical")["id"]  # new: muted
        world.resolve(noisy[1])  # resolved: still delivered
        world.set_severity(other, "medium")  # not matched: delivered
        await receiver.wait_for(lambda r: {(e.event.key, e.event.type) for e in r.received} >= {
            (noisy[1], EventType.RESOLVED), (other, EventType.CHANGED)})
        await wait_until(lambda: _keys(muted_by(path, sid), {noisy[0], fresh}), 15,
                         "the silenced changes recorded")
        rows = await muted_by(path, sid)
        assert {(r["key"], r["type"], r["reason"]) for r in rows} == {
            (noisy[0], "changed", "silence"), (fresh, "new", "silence")}
        assert {e.event.key for e in receiver.received} == {*noisy, other}  # nothing muted

        assert await daemon.stop() == 0
        daemon = await DaemonProcess(config, tmp_path).start()  # same state file
        mark = daemon.mark()
        world.set_severity(noisy[0], "critical")  # muted again, after the restart
        world.set_severity(other, "high")
        await receiver.wait_for(lambda r: (other, "high") in {
            (e.event.key, e.event.severity) for e in r.received})
        await wait_until(lambda: _count(muted_by(path, sid), noisy[0], 2), 15,
                         "the second change muted too")
        before = len(receiver.received)

        code, out, err = await bridge("silence", "expire", sid, config=path)
        assert code == 0, err
        await daemon.wait_log("silence_settled", since=mark, timeout=20)
        await receiver.wait_for(lambda r: len(r.received) == before + 2)
        told = {e.event.key: e.event for e in receiver.received[before:]}
        assert told[fresh].type is EventType.NEW  # the sinks never heard of it
        assert told[noisy[0]].type is EventType.CHANGED and told[noisy[0]].severity == "critical"
        assert told[noisy[0]].reason == f"silence {sid} ended: 2 event(s) were held back"
        # Once: later sweeps and looks send nothing more.
        await daemon.wait_log("sweep_done", since=daemon.mark())
        await daemon.wait_log("sweep_done", since=daemon.mark())
        assert len(receiver.received) == before + 2
        code, out, _ = await bridge("silence", "list", "--all", "--json", config=path)
        (listed,) = json.loads(out)
        assert listed["state"] == "ended" and listed["settled_at"] is not None
        assert listed["expired_at"] is not None and listed["muted"] == 3
    finally:
        await daemon.kill()


async def _keys(rows: Any, want: set[str]) -> bool:
    return {r["key"] for r in await rows} == want


async def _count(rows: Any, key: str, n: int) -> bool:
    return sum(r["key"] == key for r in await rows) == n


async def test_bridge_once_settles_an_ended_silence(tmp_path: Path, vendor: Vendor) -> None:
    world = vendor.world
    fid = world.add_finding(severity="low")["id"]
    path = write_config(tmp_path, operator_config(tmp_path, vendor))
    assert (await bridge("once", config=path))[0] == 0
    code, out, err = await bridge("silence", "add", "--match", f"key={fid}", "--duration", "2h",
                                  "--reason", "maintenance window", "--json", config=path)
    assert code == 0, err
    sid = json.loads(out)["id"]
    world.set_severity(fid, "high")
    assert (await bridge("once", config=path))[0] == 0
    events = tmp_path / "events.jsonl"
    assert len(events.read_text().splitlines()) == 1  # only the first new
    assert (await bridge("silence", "expire", sid, config=path))[0] == 0
    assert (await bridge("once", config=path))[0] == 0
    last = json.loads(events.read_text().splitlines()[-1])
    assert (last["key"], last["type"], last["severity"]) == (fid, "changed", "high")
    assert (await bridge("once", config=path))[0] == 0
    assert len(events.read_text().splitlines()) == 2  # settled once


async def test_resolved_can_be_silenced_too_and_is_not_renotified(
        tmp_path: Path, vendor: Vendor) -> None:
    world = vendor.world
    gone, stays = world.add_finding()["id"], world.add_finding()["id"]
    raw = operator_config(tmp_path, vendor)
    raw["silences"] = {"deliver_resolved": False}
    async with Harness(parse_config(raw)) as h:
        await h.sweep()
        service = SilenceService(h.store)
        silence = await service.add(new_silence(parse_matchers(["source=scanorbit"]),
                                                reason="quiet", author="ana", duration="1h"))
        world.resolve(gone)
        world.set_severity(stays, "critical")
        result = await h.sweep()
        assert {(m.key, m.type, m.silence_id) for m in result.muted} == {
            (gone, "resolved", silence.id), (stays, "changed", silence.id)}
        assert all(not sinks for _, sinks in result.deliveries)
        await service.expire(silence.id)
        assert h.pipeline is not None and await h.pipeline.settle_silences() == 1
        sent = [d.event for d in await h.store.claim("events", 100)]
        new_ones = [e for e in sent if e.reason.startswith("silence")]
        # The resolved item is not re-notified: only what is still active is.
        assert [(e.key, e.type) for e in new_ones] == [(stays, EventType.CHANGED)]
        assert await h.pipeline.settle_silences() == 0


async def test_an_item_still_under_another_silence_stays_muted(
        tmp_path: Path, vendor: Vendor) -> None:
    world = vendor.world
    fid = world.add_finding(severity="low")["id"]
    async with Harness(parse_config(operator_config(tmp_path, vendor))) as h:
        await h.sweep()
        service = SilenceService(h.store)
        short = await service.add(new_silence(parse_matchers([f"key={fid}"]), reason="a",
                                              author="ana", duration="1h"))
        world.set_severity(fid, "high")
        await h.sweep()
        longer = await service.add(new_silence(parse_matchers({"severity": ">= high"}),
                                               reason="b", author="bo", duration="7d"))
        await service.expire(short.id)
        assert h.pipeline is not None and await h.pipeline.settle_silences() == 1
        assert [d.event.key for d in await h.store.claim("events", 100)] == [fid]  # the new
        (held,) = await h.store.muted(silence_id=longer.id)
        assert (held.key, held.type) == (fid, "changed")


# -- the admin API ------------------------------------------------------------------------------


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[SilenceService]:
    store = SQLiteStore(tmp_path / "bridge.db")
    await store.open()
    yield SilenceService(store)
    await store.close()


async def serving(service: SilenceService, **config: Any) -> AdminServer:
    admin = AdminServer(AdminConfig(port=0, **config), Health(), silences=service)
    await admin.start()
    return admin


async def test_the_api_wants_the_token(service: SilenceService) -> None:
    token = random_secret("adm_", 32)
    admin = await serving(service, token=SecretStr(token))
    base = f"http://127.0.0.1:{admin.port}{SILENCES}"
    try:
        for method in ("GET", "POST"):
            status, body = await api(method, base, None, silence_body())
            assert status == 401 and body["error"] == "unauthorized"
            assert (await api(method, base, "adm_wrong", silence_body()))[0] == 401
        assert (await api("DELETE", base + "/whatever", None))[0] == 401
        assert await service.list() == []  # nothing was added without the token

        status, created = await api("POST", base, token, silence_body())
        assert status == 201 and created["author"] == "ana"
        status, listed = await api("GET", base, token)
        assert status == 200 and [s["id"] for s in listed["silences"]] == [created["id"]]
        status, ended = await api("DELETE", f"{base}/{created['id']}", token)
        assert status == 200 and ended["state"] == "ended" and ended["expired_at"]
        assert (await api("GET", base, token))[1]["silences"] == []
        assert [s["id"] for s in (await api("GET", base + "?ended=true", token))[1]["silences"]
                ] == [created["id"]]
        status, missing = await api("DELETE", f"{base}/nope", token)
        assert status == 404 and missing["error"] == "no such silence"
    finally:
        await admin.stop()


@pytest.mark.parametrize(("body", "why"), [
    ({"matchers": ["source=scanorbit"], "reason": "r", "author": "a"}, "needs an end"),
    (silence_body(matchers=[]), "at least one matcher"),
    (silence_body(matchers={"severity": ">= urgent"}), "severity 'urgent' is not one of"),
    (silence_body(matchers=["nonsense"]), "a matcher is FIELD OP VALUE"),
    (silence_body(matchers={"colour": "red"}), "unknown field 'colour'"),
    (silence_body(reason=" "), "needs a reason"),
    (silence_body(author=""), "needs an author"),
    (silence_body(duration="forever"), "not a duration"),
    (silence_body(duration=None, ends_at="2001-01-01T00:00:00Z"), "would end before"),
    (silence_body(comment="x"), "unknown field(s) comment"),
    ([1, 2], "must be a JSON object"),
])
async def test_the_api_refuses_what_is_not_a_silence(
        service: SilenceService, body: Any, why: str) -> None:
    admin = await serving(service)  # loopback without a token: allowed
    try:
        status, answer = await api("POST", f"http://127.0.0.1:{admin.port}{SILENCES}", None,
                                   body)
    finally:
        await admin.stop()
    assert status == 400 and answer["error"] == "invalid silence"
    assert why in answer["detail"]
    assert await service.list(ended=True) == []


async def test_never_open_without_a_token_on_a_non_loopback_bind(
        service: SilenceService) -> None:
    admin = await serving(service, host="0.0.0.0")
    url = f"http://127.0.0.1:{admin.port}"
    try:
        for method in ("GET", "POST"):
            status, body = await api(method, url + SILENCES, None, silence_body())
            assert status == 403 and "admin.token" in body["detail"]
        assert (await api("DELETE", url + SILENCES + "/x", None))[0] == 403
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as resp:
            assert resp.status == 200  # the rest of the admin server is as it was
    finally:
        await admin.stop()
    assert await service.list() == []
