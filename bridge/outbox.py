"""Sink workers: drain one sink's outbox queue, in commit order, isolated from every other sink.

The worker owns the delivery policy so no sink re-implements it: exponential backoff with full
jitter (or the receiver's `Retry-After`), a bounded number of attempts, dead letters for
content the receiver rejects. Delivery is head-of-line: while a batch is failing nothing behind
it is sent, which preserves per-item order (a `resolved` never overtakes its `new`).

A sink that can send digests and has grouping or the storm guard turned on (bridge/grouping.py)
is driven through a `Grouper` instead: rows are claimed ahead and held in memory until their
group is due, and each event is acknowledged once the message carrying it was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Literal

import structlog

from bridge import metrics
from bridge.grouping import (
    DigestSink,
    Grouper,
    GroupingSettings,
    Message,
    StormGuardSettings,
    StormSummary,
    send_summary,
)
from bridge.health import SinkState, SinkVerdict
from bridge.net import backoff_delay
from bridge.routing import RouteConfig, grouping_rules
from bridge.secrets import redact
from bridge.sinks.base import (
    DeliveryError,
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Sink,
    SinkConfig,
    ThrottledError,
)
from bridge.store.base import Delivery, Store, UndecodableDeliveries

log = structlog.get_logger(__name__)

StatusCallback = Callable[[str, SinkVerdict], None]
MAX_RETRY_AFTER = 3600.0
# Batches a worker may send while earlier ones' acknowledgements are still on their way (see
# `SinkWorker._acknowledge`): what a crash can make it send again. A file sink during a first
# sweep of 300,000 findings had 130,000 events written by the sweep's last commit with 4,
# 243,000-246,000 with 8 (the sweep 11.3-11.8 s instead of 12.8-13.2 s).
ACK_WINDOW_BATCHES = 8
# What kind of trouble a retryable failure is: it decides whether attempts are spent and how
# long to wait (see `SinkWorker._retryable`).
Trouble = Literal["throttled", "unreachable", "failing"]  # the SinkStates that are trouble


def trouble_of(exc: RetryableDeliveryError) -> Trouble:
    if isinstance(exc, DestinationUnavailableError):
        return "unreachable"
    return "throttled" if isinstance(exc, ThrottledError) else "failing"


class SinkWorker:
    """One per sink. `wake()` after a commit; `run()` until `stop` is set."""

    idle_poll = 5.0

    def __init__(self, sink: Sink[SinkConfig], store: Store, on_status: StatusCallback | None = None,
                 routes: RouteConfig | None = None) -> None:
        self.sink = sink
        self.store = store
        self.config = sink.config
        use_store = getattr(sink, "use_store", None)
        if callable(use_store):  # a sink keeping references of its own there (Jira's tickets)
            use_store(store)
        self._wake = asyncio.Event()
        self._on_status = on_status
        self._opened = False
        self._failures = 0
        self._isolate = 0  # after an unattributed permanent error: send this many one by one
        self._next: asyncio.Future[list[Delivery]] | None = None  # the prefetched batch
        # The acknowledgement in flight, and the deliveries it confirms; and the deliveries
        # accepted since, acknowledged together once it is done (see `_acknowledge`).
        # Only their seqs: a stored body can be a few KB, and a window holds thousands.
        self._acking: tuple[asyncio.Future[None], list[int]] | None = None
        self._to_ack: list[int] = []
        self._ack_window = ACK_WINDOW_BATCHES * self.config.batch_size
        # Outcomes the receiver already decided that the store could not record yet (a full
        # disk, an I/O error): written again before anything else, never answered by a resend.
        self._unacked: list[int] = []
        # seqs, event ids, why, and the storm summary that carried them (None: refused)
        self._unburied: list[tuple[list[int], list[str], str, str | None]] = []
        self.delivered = 0
        self.dead = 0
        self.summarised = 0
        self.grouper: Grouper | None = None
        self._flushing = False  # draining: groups do not wait (see `drain`)
        # `routes`: the route tree, whose routes may set grouping for the events they send.
        # Digests need a `DigestSink`; the storm guard alone works with any sink.
        rules = (grouping_rules(routes, self.name, self.config) if routes is not None
                 and isinstance(sink, DigestSink)
                 and isinstance(self.config, GroupingSettings) else None)
        if isinstance(self.config, StormGuardSettings) and (self.config.grouping
                                                             or rules is not None):
            self.grouper = Grouper(self.config, rules)
        # Stored bodies as they are, when the sink takes them and no grouper reads the events.
        self._stored_json = sink.sends_stored_json and self.grouper is None

    @property
    def name(self) -> str:
        return self.sink.name

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; an in-flight batch always finishes (or fails) first."""
        with structlog.contextvars.bound_contextvars(sink=self.name):
            try:
                while not stop.is_set():
                    if not await self._step():
                        await self._check_at_start()
                        await self._sleep(stop, self._idle_wait(), wakeable=True)
                    elif self._failures:
                        await self._sleep(stop, self._retry_delay, wakeable=False)
            finally:  # also when cancelled after the grace period
                await self._close()

    async def _check_at_start(self) -> None:
        """A sink with startup checks (`checks_at_start`: Jira's sign-in, project, priorities)
        is opened while its queue is empty, so /readyz names a failing check before anything
        is queued; it is tried again at every idle look until it passes."""
        if self._opened or not getattr(self.sink, "checks_at_start", False):
            return
        try:
            await self.sink.open()
        except DeliveryError as exc:
            trouble = trouble_of(exc) if isinstance(exc, RetryableDeliveryError) else "failing"
            self._retry_delay = self.idle_poll
            log.error("sink_check_failed", error=str(exc))
            self._report(trouble, str(exc))
            return
        self._opened = True
        self._report("ok")

    async def drain(self, stop: asyncio.Event | None = None) -> int:
        """Deliver until the queue is empty, retrying with backoff; returns what is left
        if `stop` is set first (used by `bridge once`). Digest groups and a storm summary go
        as soon as everything queued is claimed, without waiting out their intervals."""
        stop = stop or asyncio.Event()
        with structlog.contextvars.bound_contextvars(sink=self.name):
            while not stop.is_set():
                if not await self._step():
                    if self.grouper is None or not self.grouper.pending:
                        break
                    # Everything queued is claimed and nothing else will be committed while
                    # draining (`bridge once`): waiting for company would only wait. Groups
                    # and the storm summary go now.
                    self._flushing = True
                elif self._failures:
                    await self._sleep(stop, self._retry_delay, wakeable=False)
            await self._close()
        stats = {s.sink: s.depth for s in await self.store.queue_stats()}
        return stats.get(self.name, 0)

    async def _step(self) -> bool:
        """`step`, except that a failing store (a full disk, an I/O error) does not end the
        worker: it is logged, reported and retried with backoff, like a failing receiver. A
        batch that was not delivered stays queued; one the receiver accepted (or rejected) but
        whose outcome could not be written is kept in memory and only its outcome is written
        again, so an outage of the store does not resend it over and over."""
        try:
            return await self.step()
        except Exception as exc:
            await self._drop_prefetch()
            self._failures += 1
            self._retry_delay = backoff_delay(self._failures - 1, self.config.backoff_initial,
                                              self.config.backoff_max)
            error = f"state store: {type(exc).__name__}: {exc}"
            log.error("sink_store_failed", error=error, attempt=self._failures,
                      retry_in=round(self._retry_delay, 3))
            self._report("failing", error)
            return True

    def _idle_wait(self) -> float:
        """How long nothing is to be done: until the next group is due, at most `idle_poll`."""
        due = self.grouper.next_due(time.monotonic()) if self.grouper is not None else None
        return self.idle_poll if due is None else min(self.idle_poll, due)

    async def step(self) -> bool:
        """Try one batch. False when the queue was empty.

        While a batch is being sent, the next one is already being claimed (rows after this
        batch's last seq), so the store and the receiver work at the same time. A failed batch
        discards that prefetch: nothing behind a failing batch is sent before it.
        """
        if self.grouper is not None:
            return await self._grouped_step(self.grouper)
        await self._record_outcomes()
        batch = await self._claim()
        if not batch:
            self._isolate = 0
            await self._settled()
            return False
        if not self._isolate:
            self._next = asyncio.ensure_future(
                self.store.claim(self.name, self.config.batch_size, after=batch[-1].seq,
                                 decode=not self._stored_json))
        # Every line about this batch names its events, so an operator can follow one event
        # from its sweep to the receiver (or to the dead letters). Earlier batches'
        # acknowledgements may still be on their way (`_acknowledge`).
        with structlog.contextvars.bound_contextvars(event_ids=[d.event_id for d in batch]):
            try:
                if not self._opened:
                    await self.sink.open()
                    self._opened = True
                if self._stored_json:
                    await self.sink.send_stored([d.body for d in batch])
                else:
                    await self.sink.send([d.event for d in batch])
            except RetryableDeliveryError as exc:
                if exc.delivered:  # the receiver has these already: never send them again
                    accepted = set(exc.delivered)
                    await self._acknowledge([d for d in batch if d.event_id in accepted])
                    batch = [d for d in batch if d.event_id not in accepted]
                    self._failures = 0  # deliveries went through: this is a new trouble
                await self._retryable(batch, str(exc), exc.retry_after, trouble_of(exc))
            except PermanentDeliveryError as exc:
                await self._permanent(batch, exc)
            except DeliveryError as exc:
                await self._retryable(batch, str(exc), None, "failing")
            except Exception as exc:  # a bug in a sink must not kill its worker or lose events
                log.exception("sink_crashed", error=f"{type(exc).__name__}: {exc}")
                await self._retryable(batch, f"internal error: {type(exc).__name__}: {exc}", None,
                                      "failing")
            else:
                await self._delivered(batch)
        return True

    # -- digests and the storm guard (bridge/grouping.py) -----------------------------------

    async def _grouped_step(self, grouper: Grouper) -> bool:
        """Claim rows ahead into the grouper, then send what it plans: a due storm summary, or
        the due single events (one `send`) and digests. False when nothing was claimed and
        nothing is due (the caller waits until the next group is due, or a wake)."""
        await self._record_outcomes()
        await self._settled()
        claimed = False
        if grouper.room:
            rows = await self._claim_after(grouper.cursor, min(grouper.room,
                                                               self.config.batch_size))
            was_idle = not grouper.pending
            grouper.add(rows, time.monotonic())
            claimed = bool(rows)
            if claimed and was_idle:  # once per wait, not per claim: says events are held
                due = grouper.next_due(time.monotonic())
                log.info("digests_waiting", events=grouper.pending,
                         due_in=None if due is None else round(due, 3))
        plan = grouper.plan(time.monotonic(), flush=self._flushing)
        if plan.engaged:
            metrics.STORM_GUARD_ENGAGED.labels(self.name).inc()
            log.warning("storm_guard_engaged", limit_per_minute=self.config_grouping.
                        max_events_per_minute, set_aside=grouper.storm_pending,
                        summary_in=round(grouper.next_due(time.monotonic()) or 0.0, 3))
        if plan.empty:
            if not claimed:
                await self._settled()
            return claimed
        if not self._opened:
            try:
                await self.sink.open()
                self._opened = True
            except Exception as exc:
                await self._retryable([], f"open failed: {type(exc).__name__}: {exc}", None,
                                      "unreachable")
                return True
        if plan.summary:
            await self._send_summary(grouper, plan.summary)
            return True
        for message in plan.messages:
            if not await self._send_message(grouper, message):
                break  # the rest waits: nothing is sent past a failing message
        return True

    async def _claim_after(self, after: int, limit: int) -> list[Delivery]:
        while True:
            try:
                return await self.store.claim(self.name, limit, after=after)
            except UndecodableDeliveries as exc:  # never sendable: out of the way, then go on
                await self._bury([seq for seq, _ in exc.rows], [eid for _, eid in exc.rows],
                                 f"undecodable event: {exc.error}")

    async def _send_message(self, grouper: Grouper, message: Message) -> bool:
        """Send one planned message; True when every event of it was accepted or refused."""
        rows = message.rows
        with structlog.contextvars.bound_contextvars(event_ids=[d.event_id for d in rows]):
            try:
                if message.digest is None:
                    await self.sink.send([d.event for d in rows])
                else:  # only a digest sink's grouper forms digests
                    assert isinstance(self.sink, DigestSink)
                    await self.sink.send_digest(message.digest)
            except RetryableDeliveryError as exc:
                if exc.delivered and message.digest is None:
                    accepted = set(exc.delivered)
                    done = [d for d in rows if d.event_id in accepted]
                    grouper.delivered(done, time.monotonic())
                    await self._acknowledge(done)
                    rows = [d for d in rows if d.event_id not in accepted]
                    self._failures = 0
                await self._grouped_retry(grouper, rows, str(exc), exc.retry_after,
                                          trouble_of(exc))
                return False
            except PermanentDeliveryError as exc:
                named = set(exc.event_ids or ()) if message.digest is None else set()
                bad = [d for d in rows if not named or d.event_id in named]
                refused = {d.seq for d in bad}
                good = [d for d in rows if d.seq not in refused]
                grouper.forget(refused)
                grouper.delivered(good, time.monotonic())
                self._unacked.extend(d.seq for d in good)  # accepted: written with the burial
                what = "digest refused" if message.digest is not None else "rejected"
                await self._bury([d.seq for d in bad], [d.event_id for d in bad],
                                 f"{what}: {exc}")
                self._failures = 0
                return True
            except DeliveryError as exc:
                await self._grouped_retry(grouper, rows, str(exc), None, "failing")
                return False
            except Exception as exc:  # a bug in a sink must not kill its worker or lose events
                log.exception("sink_crashed", error=f"{type(exc).__name__}: {exc}")
                await self._grouped_retry(grouper, rows,
                                          f"internal error: {type(exc).__name__}: {exc}", None,
                                          "failing")
                return False
        grouper.delivered(rows, time.monotonic())
        if message.digest is not None:
            metrics.DIGESTS.labels(self.name).inc()
        await self._delivered(rows)
        return True

    @property
    def config_grouping(self) -> StormGuardSettings:
        assert isinstance(self.config, StormGuardSettings)
        return self.config

    async def _send_summary(self, grouper: Grouper, rows: list[Delivery]) -> None:
        limit = self.config_grouping.max_events_per_minute or 0
        summary = StormSummary(self.name, tuple(d.event for d in rows), limit,
                               self.config_grouping.summary_top)
        try:
            await send_summary(self.sink, summary)
        except RetryableDeliveryError as exc:
            await self._grouped_retry(grouper, rows, str(exc), exc.retry_after, trouble_of(exc))
            return
        except PermanentDeliveryError as exc:
            grouper.summarised()
            await self._bury([d.seq for d in rows], [d.event_id for d in rows],
                             f"storm summary refused: {exc}")
            self._failures = 0
            return
        except Exception as exc:
            log.exception("sink_crashed", error=f"{type(exc).__name__}: {exc}")
            await self._grouped_retry(grouper, rows, f"internal error: {type(exc).__name__}: "
                                      f"{exc}", None, "failing")
            return
        grouper.summarised()
        metrics.STORM_SUMMARIES.labels(self.name).inc()
        log.warning("storm_summarised", events=len(rows), summary_id=summary.id,
                    limit_per_minute=limit, by_severity=summary.by_severity,
                    by_source=summary.by_source)
        await self._bury([d.seq for d in rows], [d.event_id for d in rows],
                         f"summarised: storm guard ({limit} events/minute) sent them in "
                         f"summary {summary.id} of {len(rows)} events", summary=summary.id)
        if self._failures:
            log.info("sink_recovered", after_failures=self._failures)
        self._failures = 0
        self._report("ok")

    async def _grouped_retry(self, grouper: Grouper, rows: Sequence[Delivery], error: str,
                             retry_after: float | None, trouble: Trouble) -> None:
        """`_retryable`, and the grouper learns what the store now holds: the spent attempt,
        and the rows that ran out of attempts (dead-lettered)."""
        if await self._retryable(rows, error, retry_after, trouble):
            grouper.spent(rows)
            grouper.forget(d.seq for d in rows if d.attempts + 1 >= self.config.max_attempts)

    async def _claim(self) -> list[Delivery]:
        while True:
            try:
                if self._next is not None:
                    prefetched, self._next = self._next, None
                    return await prefetched
                await self._settled()  # a claim from the head must not see rows being acknowledged
                limit = 1 if self._isolate else self.config.batch_size
                return await self.store.claim(self.name, limit, decode=not self._stored_json)
            except UndecodableDeliveries as exc:  # never sendable: out of the way, then go on
                await self._bury([seq for seq, _ in exc.rows], [eid for _, eid in exc.rows],
                                 f"undecodable event: {exc.error}")

    async def _settled(self) -> None:
        """Wait until every delivery accepted so far is acknowledged on disk; a store failure
        surfaces here, and the deliveries not acknowledged wait in memory for
        `_record_outcomes` (never sent again)."""
        while self._acking is not None or self._to_ack:
            if self._acking is None:
                self._start_ack()
            await self._ack_done()

    def _start_ack(self) -> None:
        done, self._to_ack = self._to_ack, []
        self._acking = (asyncio.ensure_future(self.store.ack(self.name, done)), done)

    async def _ack_done(self) -> None:
        """Wait for the acknowledgement in flight (see `_settled`)."""
        assert self._acking is not None
        (acking, done), self._acking = self._acking, None
        try:
            await acking
        except BaseException:
            self._unacked += done + self._to_ack
            self._to_ack = []
            raise
        self._count_delivered(len(done))

    def _count_delivered(self, count: int) -> None:
        self.delivered += count
        metrics.child(metrics.DELIVERIES, self.name, "ok").inc(count)

    async def _record_outcomes(self) -> None:
        """Write the outcomes a failing store could not take: those rows were already
        delivered (or refused) and must leave the queue before anything is claimed again.
        Raises while the store still fails; the worker backs off and comes back here."""
        if self._unacked:
            await self.store.ack(self.name, self._unacked)
            self._count_delivered(len(self._unacked))
            self._unacked = []
        while self._unburied:
            await self._write_burial(*self._unburied[0])
            self._unburied.pop(0)

    async def _drop_prefetch(self) -> None:
        """Forget the prefetched batch (its rows stay queued and are claimed again)."""
        if self._next is not None:
            prefetched, self._next = self._next, None
            with contextlib.suppress(Exception):
                await prefetched

    async def _acknowledge(self, done: Sequence[Delivery]) -> None:
        """Start forgetting delivered rows, without waiting for an earlier acknowledgement
        still on its way: those rows join the next one.

        An acknowledgement is a write, and the store's writer may be busy with a sweep's
        chunk for a while (a first sweep's chunks of 5,000 items each take 0.1-0.2 s).
        Waiting for it before each next batch held a file sink to about one batch per chunk:
        26,000 of a 100,000-finding first sweep's events were in the file when its last chunk
        committed (85,000 now), the rest took another 0.9 s. The worker now goes on sending
        while up to `ACK_WINDOW_BATCHES` batches wait to be acknowledged, then waits for all
        of them. Order is kept: claims go on after the last row sent, a claim from the head of the
        queue waits for every acknowledgement first (`_claim`), and rows whose acknowledgement
        fails are acknowledged again before anything is claimed (`_record_outcomes`), never
        sent again. What a crash can send again grows from the batches in flight to the window."""
        self._to_ack += [d.seq for d in done]
        if self._acking is not None and self._acking[0].done():
            await self._ack_done()
        if self._acking is None:
            self._start_ack()
        elif len(self._acking[1]) + len(self._to_ack) >= self._ack_window:
            await self._settled()

    async def _delivered(self, batch: Sequence[Delivery]) -> None:
        await self._acknowledge(batch)
        if self._failures:
            log.info("sink_recovered", after_failures=self._failures)
        self._failures = 0
        self._isolate = max(0, self._isolate - len(batch))
        self._report("ok")

    async def _retryable(self, batch: Sequence[Delivery], error: str, retry_after: float | None,
                         trouble: Trouble) -> bool:
        """Back off and retry the batch. Only a receiver that is failing (and only while
        `count_failures` is on) spends attempts towards the dead letters: a throttled or an
        unreachable one will take the events later, however long that takes. True when an
        attempt was spent (the rows' attempts went up, the exhausted ones were buried)."""
        await self._drop_prefetch()
        self._failures += 1
        metrics.DELIVERIES.labels(self.name, "retry").inc(len(batch))
        await self._reset()
        spent = trouble == "failing" and self.config.count_failures
        if spent:
            await self._spend_attempt(batch, error)
        self._retry_delay = self._delay(trouble, retry_after)
        log.warning("delivery_failed", error=error, events=len(batch), attempt=self._failures,
                    trouble=trouble, retry_in=round(self._retry_delay, 3))
        self._report(trouble, error)
        return spent

    def _delay(self, trouble: Trouble, retry_after: float | None) -> float:
        """The receiver's `Retry-After` when it gave one; otherwise backoff with full jitter,
        capped at `probe_interval` for an unreachable destination, so that delivery resumes
        within seconds of its return whatever trouble came before."""
        cfg = self.config
        if retry_after is not None:  # bounded: a hostile receiver must not park us for a year
            return min(max(0.0, retry_after), MAX_RETRY_AFTER)
        delay = backoff_delay(self._failures - 1, cfg.backoff_initial, cfg.backoff_max)
        return min(delay, cfg.probe_interval) if trouble == "unreachable" else delay

    async def _spend_attempt(self, batch: Sequence[Delivery], error: str) -> None:
        exhausted = [d for d in batch if d.attempts + 1 >= self.config.max_attempts]
        retry = [d.seq for d in batch if d.attempts + 1 < self.config.max_attempts]
        if len(batch) > 1 and any(d.attempts + 2 >= self.config.max_attempts for d in batch):
            # The next attempt is the last: make it one by one, so that events which can be
            # delivered are not buried for a batch-mate's fault.
            self._isolate = len(batch)
        if retry:
            await self.store.record_failure(self.name, retry, redact(error))
        if exhausted:
            await self._bury([d.seq for d in exhausted], [d.event_id for d in exhausted],
                             f"gave up after {self.config.max_attempts} attempts: {error}")

    async def _permanent(self, batch: Sequence[Delivery], exc: PermanentDeliveryError) -> None:
        await self._drop_prefetch()
        if exc.event_ids is None and len(batch) > 1:
            # We don't know which event the receiver refused: find it one by one.
            self._isolate = len(batch)
            log.warning("delivery_rejected_isolating", error=str(exc), events=len(batch))
            return
        rejected = set(exc.event_ids) if exc.event_ids is not None else {batch[0].event_id}
        bad = [d for d in batch if d.event_id in rejected]
        good = [d for d in batch if d.event_id not in rejected]
        self._unacked.extend(d.seq for d in good)  # accepted: written with the burial, never sent again
        await self._bury([d.seq for d in bad], [d.event_id for d in bad], f"rejected: {exc}")
        if good:
            self._isolate = max(0, self._isolate - len(good))
            self._report("ok")
        self._failures = 0

    async def _bury(self, seqs: Sequence[int], event_ids: Sequence[str], error: str, *,
                    summary: str | None = None) -> None:
        """Dead-letter these rows (or record that the storm `summary` carried them); if the
        store cannot take it now, it is written again (by `_record_outcomes`) before anything
        else is claimed, and never resent meanwhile."""
        self._unburied.append((list(seqs), list(event_ids), error, summary))
        await self._record_outcomes()

    async def _write_burial(self, seqs: Sequence[int], event_ids: Sequence[str], error: str,
                            summary: str | None) -> None:
        # Receivers echo requests (headers included) in error bodies: never store a secret.
        await self.store.bury(self.name, seqs, redact(error), summary=summary)
        if summary is not None:  # accepted in a summary: listed apart, not a dead letter
            self.summarised += len(seqs)
            metrics.EVENTS_SUMMARISED.labels(self.name).inc(len(seqs))
            metrics.DELIVERIES.labels(self.name, "summarised").inc(len(seqs))
            return
        self.dead += len(seqs)
        metrics.DEAD_LETTERS.labels(self.name).inc(len(seqs))
        metrics.DELIVERIES.labels(self.name, "dead").inc(len(seqs))
        log.error("dead_lettered", events=len(seqs), event_ids=list(event_ids), error=error)

    def _report(self, state: SinkState, error: str | None = None) -> None:
        """Tell health how the destination is doing and, in trouble, when we try again."""
        if self._on_status is not None:
            retry_at = None if state == "ok" else time.time() + self._retry_delay
            self._on_status(self.name, SinkVerdict(state, error, retry_at))

    async def _reset(self) -> None:
        """After a failure, reconnect on the next attempt rather than trust a broken session."""
        await self._close()

    async def _close(self) -> None:
        await self._drop_prefetch()
        # One last try to record outcomes; what still cannot be written is sent again after a
        # restart (at most the acknowledgement window, see `_acknowledge`).
        with contextlib.suppress(Exception):
            await self._settled()
        with contextlib.suppress(Exception):
            await self._record_outcomes()
        if self._opened:
            self._opened = False
            with contextlib.suppress(Exception):
                await self.sink.close()

    _retry_delay: float = 0.0

    async def _sleep(self, stop: asyncio.Event, seconds: float, *, wakeable: bool) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            self._wake.clear()
