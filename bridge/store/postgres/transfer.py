"""`bridge state migrate`: copy the whole state from one store to another (SQLite to
PostgreSQL when one machine becomes several replicas, and back), through the `Store` interface
only, so any pair of backends works.

What a user keeps: every item with its state, counters and snapshots (so the first sweep on
the new store diffs against them instead of announcing every finding again), each scope's
sweep log and cursor (so a scope whose baseline is done stays done), the outbox per sink in
its order with its attempts (nothing pending is lost), dead letters with their errors and
attempts, muted events, silences and the sinks' own references. Sequence numbers and sweep
ids are the new store's own; a muted event's `recorded_at` and a dead letter's `failed_at`
become the time of the copy (no interface writes them).

The target must be empty: copying twice would queue every pending delivery twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from bridge.diff import ItemWrite
from bridge.model import Event
from bridge.store.base import ItemRecord, Store, StoreError, SweepCommit

ALL = -1  # "no limit" to every listing of the interface
CHUNK = 2_000  # items (or deliveries) per transaction in the target


@dataclass
class Copied:
    """What was copied, for the command's summary (and what a test compares)."""

    items: int = 0
    scopes: int = 0
    sweeps: int = 0
    pending: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    muted: int = 0
    silences: int = 0
    sink_refs: int = 0
    skipped_dead: int = 0  # dead letters whose event cannot be decoded: nothing to copy

    def lines(self) -> list[str]:
        out = [f"items: {self.items} in {self.scopes} scope(s), sweep records: {self.sweeps}",
               "pending deliveries: " + (", ".join(f"{k} {v}" for k, v in
                                                   sorted(self.pending.items())) or "none"),
               "dead letters: " + (", ".join(f"{k} {v}" for k, v in sorted(self.dead.items()))
                                   or "none"),
               f"muted events: {self.muted}, silences: {self.silences}, "
               f"sink references: {self.sink_refs}"]
        if self.skipped_dead:
            out.append(f"not copied: {self.skipped_dead} dead letter(s) whose event cannot be "
                       "decoded (see `bridge dlq list` on the source)")
        return out


async def is_empty(store: Store) -> bool:
    return not (await store.list_items(limit=1) or await store.sweeps(limit=1)
                or await store.queue_stats() or await store.silences())


def _write(r: ItemRecord) -> ItemWrite:
    return ItemWrite(r.kind, r.key, r.state, r.counter, r.misses, r.first_seen, r.changed_at,
                     r.tracked, r.snapshot, r.resolved_at)


async def copy_state(source: Store, target: Store, sinks: Collection[str],
                     progress: Callable[[str], None] = lambda _: None) -> Copied:
    """Copy everything from `source` into the empty `target` (both open). `sinks`: the
    configured sink names, whose references are copied along with those of every sink that
    has deliveries queued."""
    if not await is_empty(target):
        raise StoreError("the target store holds state already; migrate only into an empty "
                         "one (a second copy would queue every pending delivery twice)")
    done = Copied()

    by_scope: dict[str, list[ItemRecord]] = defaultdict(list)
    for record in await source.list_items(limit=ALL):
        by_scope[record.scope].append(record)
    for scope, records in sorted(by_scope.items()):
        for i in range(0, len(records), CHUNK):
            await target.commit_chunk(scope, [_write(r) for r in records[i:i + CHUNK]], [])
        done.items += len(records)
    done.scopes = len(by_scope)
    progress(f"items: {done.items}")

    # Each scope's sweep log, oldest first; its cursor goes with the latest record.
    for scope in sorted(await source.swept_scopes()):
        log = list(reversed(await source.sweeps(scope, ALL)))
        cursor = await source.load_cursor(scope)
        for n, swept in enumerate(log):
            last = n == len(log) - 1
            await target.commit_sweep(SweepCommit(record=swept, cursor=cursor if last else {}))
        done.sweeps += len(log)
    progress(f"sweep records: {done.sweeps}")

    stats = await source.queue_stats()
    last_seq: dict[str, int] = {}  # per sink: the highest sequence number the copy has drawn
    for sink in sorted(s.sink for s in stats if s.depth):
        rows = await source.claim(sink, ALL)
        for i in range(0, len(rows), CHUNK):
            await target.commit_chunk(f"outbox of {sink}", [],
                                      [(d.event, [sink]) for d in rows[i:i + CHUNK]])
        copied = await target.claim(sink, ALL)
        # The attempts they have spent already: one call per attempt, for every row with more.
        for spent in range(1, max((d.attempts for d in rows), default=0) + 1):
            await target.record_failure(sink, [new.seq for old, new in zip(rows, copied, strict=True)
                                               if old.attempts >= spent],
                                        "attempt made before the migration")
        last_seq[sink] = copied[-1].seq if copied else 0
        done.pending[sink] = len(rows)
    progress("pending deliveries: " + str(sum(done.pending.values())))

    for letter in await source.dead_letters(limit=ALL, summarised=None):
        if letter.event is None:
            done.skipped_dead += 1
            continue
        last_seq[letter.sink] = await _bury_copy(target, letter.sink, letter.event,
                                                 letter.attempts, letter.error,
                                                 last_seq.get(letter.sink, 0), letter.summary)
        done.dead[letter.sink] = done.dead.get(letter.sink, 0) + 1

    muted = list(reversed(await source.muted(limit=ALL)))  # oldest first, as recorded
    for i in range(0, len(muted), CHUNK):
        await target.commit_chunk("muted events", [], [], muted[i:i + CHUNK])
    done.muted = len(muted)

    silences = await source.silences()
    for silence in reversed(silences):
        await target.add_silence(silence)
    done.silences = len(silences)

    for sink in sorted({*sinks, *(s.sink for s in stats)}):
        refs = await source.sink_refs(sink, limit=ALL)
        if refs:
            await target.put_sink_refs(refs)
        done.sink_refs += len(refs)
    return done


async def _bury_copy(target: Store, sink: str, event: Event, attempts: int, error: str,
                     after: int, summary: str | None) -> int:
    """A dead letter in the target: queued after `after` (the sink's last copied row), its
    attempts spent, then buried with its error (burying counts the last attempt). Returns its
    sequence number."""
    await target.commit_chunk(f"dead letters of {sink}", [], [(event, [sink])])
    (row,) = await target.claim(sink, 1, after=after)
    for _ in range(max(0, attempts - 1)):
        await target.record_failure(sink, [row.seq], error)
    await target.bury(sink, [row.seq], error, summary=summary)
    return row.seq
