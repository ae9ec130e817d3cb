"""`bridge once --dry-run`: sweep, diff and route for real, then say per sink what would be
sent, and write nothing: no state, no outbox, no cursors, no sink.

Silences that have ended are shown with what their settlement would send (as `bridge once`
does it). The run works on a private copy of the state (SQLite's online backup from a read-only
connection, into a temporary directory), so the real code paths run unchanged, a first sweep
shows its baseline, silences apply as they would, and the state file stays byte for byte as it
was. A state file that does not exist yet is not created; a running daemon may keep writing its
own (the copy is a consistent snapshot). The sources do make their requests: that is the point.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bridge.config import BridgeConfig
from bridge.daemon import once_exit_code
from bridge.health import Health
from bridge.model import Event, utcnow
from bridge.pipeline import Pipeline
from bridge.secrets import redact
from bridge.silences import Settlement, load_muting, settlement
from bridge.sinks.file import describe
from bridge.store.base import Muted, StateConfig, Store, StoreError
from bridge.store.memory import MemoryStateConfig, MemoryStore
from bridge.store.sqlite import SQLiteStateConfig, SQLiteStore, store_error
from bridge.sweep import Routed, SweepResult
from bridge.textsafe import printable


def copy_sqlite(src: Path, dest: Path) -> None:
    """A consistent copy of the state file `src` without writing anything next to it.

    With a `-wal` or `-shm` beside it (a daemon has it open, or did not close it) the copy reads
    through them in read-only mode, which uses those files as they are; otherwise the file is
    opened as immutable, so that not even those side files are created."""
    live = any(src.with_name(src.name + suffix).exists() for suffix in ("-wal", "-shm"))
    uri = src.resolve().as_uri() + ("?mode=ro" if live else "?immutable=1")
    try:
        source = sqlite3.connect(uri, uri=True)
        try:
            target = sqlite3.connect(dest)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise store_error(f"cannot read state file {src} for a dry run: {exc}", exc) from None


async def private_state(config: StateConfig, workdir: Path) -> Store:
    """A store holding a copy of the configured state (not opened yet), in `workdir`."""
    if isinstance(config, SQLiteStateConfig):
        copy = workdir / "bridge.db"
        if config.path.exists():
            await asyncio.to_thread(copy_sqlite, config.path, copy)
        return SQLiteStore(copy, busy_timeout=config.busy_timeout)
    if isinstance(config, MemoryStateConfig):
        return MemoryStore("dry run")  # nothing is kept between runs anyway
    raise StoreError(f"a dry run cannot copy the state of {config.describe()}")


@dataclass
class SinkPlan:
    """What one sink would be sent by this run, and what it would not, by reason."""

    name: str
    type: str
    events: list[Event] = field(default_factory=list)
    muted: Counter[str] = field(default_factory=Counter)
    queued: int = 0  # already waiting in its outbox from earlier runs

    def by_type(self) -> dict[str, int]:
        return dict(Counter(e.type.value for e in self.events))


async def _settlements(store: Store, pipeline: Pipeline) -> list[Settlement]:
    """What the silences that have ended would re-notify (`bridge once` settles them)."""
    muting = await load_muting(store, pipeline.config.silences)
    now = utcnow()
    return [await settlement(store, s, pipeline.dispatch.sinks, muting, now)
            for s in muting.silences if s.state(now) == "ended"]


def plan(config: BridgeConfig, results: Sequence[SweepResult | None], queued: dict[str, int],
         settlements: Sequence[Settlement] = ()) -> list[SinkPlan]:
    plans = {s.name: SinkPlan(s.name, s.type, queued=queued.get(s.name, 0))
             for s in config.sinks}
    parts: list[tuple[Sequence[Routed], Sequence[Muted]]] = [
        (r.deliveries, r.muted) for r in results if r is not None]
    parts += [(s.deliveries, s.muted) for s in settlements]
    for deliveries, muted in parts:
        for event, sinks in deliveries:
            for sink in sinks:
                plans[sink].events.append(event)
        for m in muted:
            plans[m.sink].muted[m.reason if m.silence_id is None
                                else f"{m.reason} {m.silence_id}"] += 1
    return list(plans.values())


async def dry_run(config: BridgeConfig, *, show: int = 10, as_json: bool = False,
                  out: TextIO) -> int:
    """Sweep every scope against a copy of the state, print the plan; `once`'s exit codes
    (bridge.daemon.once_exit_code), nothing being delivered."""
    with tempfile.TemporaryDirectory(prefix="bridge-dry-run-") as workdir:
        store = await private_state(config.state, Path(workdir))
        await store.open()
        try:
            queued = {q.sink: q.depth for q in await store.queue_stats()}
            pipeline = Pipeline.build(config, store, Health())
            pipeline.keep_events = True
            try:
                results = await pipeline.sweep_all_once()
                settlements = await _settlements(store, pipeline)
            finally:
                await pipeline.stop(0)
        finally:
            await store.close()
    plans = plan(config, results, queued, settlements)
    if as_json:
        out.write(redact(json.dumps(_json(results, plans), default=str, indent=2)) + "\n")
    else:
        _text(results, plans, show, out)
    return once_exit_code(results, undelivered=False)


def _sweep(result: SweepResult) -> dict[str, Any]:
    r = result.record
    return {"scope": r.scope, "source": r.source, "outcome": r.outcome, "seen": r.items_seen,
            "events": r.events, "requests": r.requests, "baseline": result.baseline,
            "notes": list(r.notes), "error": r.error}


def _json(results: Sequence[SweepResult | None], plans: list[SinkPlan]) -> dict[str, Any]:
    return {
        "dry_run": True,
        "sweeps": [_sweep(r) for r in results if r is not None],
        "sinks": {p.name: {"type": p.type, "count": len(p.events), "by_type": p.by_type(),
                           "muted": dict(p.muted), "queued": p.queued,
                           "events": [e.to_dict() for e in p.events]} for p in plans},
    }


def _text(results: Sequence[SweepResult | None], plans: list[SinkPlan], show: int,
          out: TextIO) -> None:
    def say(line: str) -> None:
        out.write(printable(redact(line)) + "\n")

    say("dry run: nothing was written or sent (state, outbox and cursors are as they were)")
    for result in results:
        if result is None:
            say("a sweep could not run (see the log)")
            continue
        s = _sweep(result)
        why = f": {s['error'] or '; '.join(s['notes'])}" if s["error"] or s["notes"] else ""
        say(f"{s['scope']}: {s['outcome']}, {s['seen']} seen, {s['events']} events"
            + (", first sweep (baseline)" if s["baseline"] else "") + why)
    for p in plans:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(p.by_type().items()))
        muted = "; ".join(f"{n} muted ({why})" for why, n in sorted(p.muted.items()))
        say(f"sink {p.name} ({p.type}): {len(p.events)} event(s) would be sent"
            + (f" ({kinds})" if kinds else "") + (f"; {muted}" if muted else "")
            + (f"; {p.queued} already queued from earlier runs" if p.queued else ""))
        for event in p.events[:show]:
            say(f"  {describe(event)}")
        if len(p.events) > show:
            say(f"  … and {len(p.events) - show} more (--json lists them all)")
