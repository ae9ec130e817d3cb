"""The storm guard on a syslog sink, against a real rsyslogd: a SIEM gets the first
`max_events_per_minute` events as they are and then one summary message in the sink's own
format (a CEF record, or the JSON event), never the summarised events themselves; they stay
listed, whole, beside the dead letters with the summary's id."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from bridge.outbox import SinkWorker
from bridge.store.sqlite import SQLiteStore
from tests.support.rsyslogd import Rsyslogd
from tests.support.sink_contract import commit
from tests.syslog.conftest import Certs, make_config, wait_records
from tests.syslog.events import event

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("payload", ["cef", "json"])
async def test_a_storm_reaches_the_siem_as_its_budget_and_one_summary(
        rsyslog: Rsyslogd, certs: Certs, tmp_path: Path, payload: str) -> None:
    store = SQLiteStore(tmp_path / "bridge.db")
    await store.open()
    try:
        events = [event(key=f"F-{i}", severity=("low", "critical")[i % 2],
                        title=f"storm finding {i}") for i in range(8)]
        await commit(store, events, "siem")
        sink = make_config(rsyslog, certs, "tcp", format=payload, max_events_per_minute=5,
                           summary_interval=0.1).build()
        worker = SinkWorker(sink, store)
        assert await asyncio.wait_for(worker.drain(), 30) == 0
        carried = await store.dead_letters("siem", summarised=True)
        assert [d.event_id for d in carried] == [e.id for e in events[5:]]
        (summary_id,) = {d.summary for d in carried}
        assert summary_id is not None
        hex_id = summary_id.removeprefix("sm-")
        got = await wait_records(rsyslog, "tcp", [e.id for e in events[:5]] + [hex_id])
        (record,) = got[hex_id]
        raw = record["raw"]
        assert "Event storm: 3 events summarised (over 5/minute): 2 critical, 1 low" in raw
        if payload == "cef":
            assert "CEF:0|" in raw and f"externalId={summary_id}" in raw
        else:
            body = orjson.loads(raw[raw.index("{"):])  # after the syslog header
            assert (body["type"], body["kind"], body["id"]) == ("summary", "storm", summary_id)
            assert body["raw"]["event_ids"] == [e.id for e in events[5:]]
        # The summarised events themselves never reached the SIEM (only the summary names
        # them, in the JSON payload).
        arrived = "\n".join(r["raw"] for r in rsyslog.records("tcp") if hex_id not in r["raw"])
        assert not any(e.id in arrived for e in events[5:])
        assert (worker.delivered, worker.summarised, worker.dead) == (5, 3, 0)
    finally:
        await store.close()
