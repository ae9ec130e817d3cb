"""The chaos harness catches real bugs: short chaos runs against a daemon with one bug injected
(through a `sitecustomize` module in the child process only) must be judged as failing, each
by the check meant for that kind of bug. A harness that passes a broken daemon proves nothing.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.support.chaos import ChaosSettings, run_chaos

pytestmark = pytest.mark.slow  # long scenario runs: scheduled first (tests/conftest.py)

SITECUSTOMIZE = textwrap.dedent('''
    import os

    mutant = os.environ.get("BRIDGE_MUTANT")
    if mutant == "resolve_on_incomplete":
        # Every part of every sweep counts as complete: pages lost to faults look like fixes.
        import bridge.diff as diff

        def every_kind_complete(kinds):
            return {kind: True for kind in kinds}

        finish, absentees = diff.Differ.finish, diff.Differ.absentees
        diff.Differ.finish = lambda self, kinds, snaps: finish(self, every_kind_complete(kinds), snaps)
        diff.Differ.absentees = lambda self, kinds: absentees(self, every_kind_complete(kinds))
    elif mutant == "ack_before_send":
        # At-most-once delivery: the outbox row goes before the receiver has the event.
        import bridge.outbox as outbox

        step = outbox.SinkWorker.step

        async def acked_first(self):
            batch = await self.store.claim(self.name, self.config.batch_size)
            if batch:
                await self.store.ack(self.name, [d.seq for d in batch])
                try:
                    await self.sink.open()
                    await self.sink.send([d.event for d in batch])
                except Exception:
                    pass
                return True
            return await step(self)

        outbox.SinkWorker.step = acked_first
''')


def mutant_env(tmp_path: Path, mutant: str) -> dict[str, str]:
    folder = tmp_path / "mutant"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BRIDGE_MUTANT": mutant}


@pytest.mark.timeout(300)
async def test_a_daemon_that_resolves_from_incomplete_sweeps_is_caught(tmp_path: Path) -> None:
    settings = ChaosSettings(seed=31, epochs=10, crashes=0, fault_probability=1.0,
                             outage_probability=0.0, revoke_probability=0.0, syslog=False,
                             settle_probability=0.4, aether_outage_probability=0.6,
                             time_budget=120.0, daemon_env=mutant_env(tmp_path, "resolve_on_incomplete"))
    report = await run_chaos(settings, tmp_path / "run", None)
    print(report.summary())
    assert report.verdict.false_resolved > 0, report.summary()
    assert not report.ok


@pytest.mark.timeout(300)
async def test_a_daemon_that_acknowledges_before_sending_is_caught(tmp_path: Path) -> None:
    settings = ChaosSettings(seed=32, epochs=10, crashes=8, fault_probability=0.3,
                             outage_probability=1.0, revoke_probability=0.0, syslog=False,
                             aether365=False, time_budget=120.0,
                             daemon_env=mutant_env(tmp_path, "ack_before_send"))
    report = await run_chaos(settings, tmp_path / "run", None)
    print(report.summary())
    assert report.verdict.lost > 0, report.summary()
    assert not report.ok
