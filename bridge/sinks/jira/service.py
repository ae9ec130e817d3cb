"""The Jira sink: one ticket per item (or per `group_by` group) that follows the item's life.

- `new` creates the ticket (through the ledger's intent, see ledger.py);
- `changed` comments what changed (and moves the priority with the severity);
- `resolved` moves the ticket into a status of the *done* category (the configured transition,
  or any into that category, found per ticket since workflows differ per project), filling the
  screen's required fields from `resolve_fields`, with the reason as the transition's comment;
- `reopened` moves it back into a *to-do* status and says why; unless a person closed it with
  a resolution of `human_resolutions` (Won't Do…): then the bridge comments, records the item
  as *accepted* (and, with `accepted_silence`, a silence of its `reopened` events, listed with
  the others), and tells Jira nothing more until the item's tracked fields change.

Delivery goes through the kit's `deliver_per_item` (an item's events in order, items at once,
`concurrency` of them); with `group_by`, events of one group also take the group's lock, so two
items joining at once never open two tickets. Errors map onto the sink contract: 429 and 503
are throttling (Retry-After honoured), other 5xx and lost answers are retried by the outbox
worker, 401/403 make the destination unavailable without spending attempts, and a 400 is
dead-lettered with Jira's own `errorMessages`/`errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import structlog

from bridge.durations import parse_duration
from bridge.model import SEVERITY_RANK, Event, EventType, utcnow
from bridge.net import warn_tls_unverified
from bridge.silences import SilenceError, new_silence, parse_matchers
from bridge.sinks.base import (
    DeliveryError,
    DestinationUnavailableError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    Sink,
    ThrottledError,
)
from bridge.sinks.delivery import deliver_per_item
from bridge.sinks.jira.checks import Checks, JiraSetup
from bridge.sinks.jira.client import IssueState, JiraClient, JiraFailure, Transition
from bridge.sinks.jira.config import JiraSinkConfig
from bridge.sinks.jira.ledger import Ledger, Ticket, group_values, identity
from bridge.sinks.jira.render import Renderer
from bridge.store.base import SilenceRecord, Store
from bridge.store.memory import MemoryStore

log = structlog.get_logger(__name__)


@dataclass
class _Held:
    """A ticket's lock and how many deliveries hold or await it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class TicketLost(Exception):
    """The ticket was deleted or moved by a person: handled (recreated or marked gone), and
    nothing more is to be done for this event."""


def delivery_error(failure: JiraFailure) -> DeliveryError:
    """What a Jira answer means for the outbox worker (see bridge/sinks/base.py)."""
    text = f"Jira {failure}"
    status = failure.status
    if status is None:
        return DestinationUnavailableError(text)
    if status in (401, 403):
        return DestinationUnavailableError(f"{text} (check the credentials and the account's "
                                           "permissions)")
    if status == 429 or (status == 503 and failure.retry_after is not None):
        return ThrottledError(text, retry_after=failure.retry_after)
    if status >= 500 or status == 408:
        return RetryableDeliveryError(text, retry_after=failure.retry_after)
    return PermanentDeliveryError(text)


class JiraSink(Sink[JiraSinkConfig]):
    # Opened (its startup checks run) while nothing is queued: /readyz says what is wrong
    # before the first event needs a ticket (bridge/outbox.py).
    checks_at_start: ClassVar[bool] = True

    def __init__(self, config: JiraSinkConfig, store: Store | None = None) -> None:
        super().__init__(config)
        self.store = store
        self.render = Renderer(config)
        self.client: JiraClient | None = None
        self.ledger: Ledger | None = None
        self._setup: JiraSetup | None = None  # what the startup checks found
        # One lock per ticket (item or group): two items of a group never create two tickets.
        self._locks: dict[str, _Held] = {}
        # Intents this process wrote whose create it has not sent, or Jira refused outright:
        # they need no search (after a restart every intent is searched for).
        self._unsent: set[str] = set()
        self._silence_for = (parse_duration(config.accepted_silence)
                             if config.accepted_silence else None)
        if not config.verify_tls:
            warn_tls_unverified(f"sink {config.name}", config.origin)

    def use_store(self, store: Store) -> None:
        """The state store the ledger lives in (the daemon's; bound before `open`)."""
        self.store = store

    # -- startup

    async def open(self) -> None:
        if self.store is None:  # `bridge sinks test`: nothing may be written to the state
            self.store = MemoryStore("jira-test")
            await self.store.open()
        if self.client is None:
            self.client = JiraClient(self.config)
        if self.ledger is None:
            self.ledger = Ledger(self.store, self.name, horizon=self.config.search_horizon)
        if self._setup is None:
            self._setup = await Checks(self.config, self.client).run()

    async def close(self) -> None:
        """The worker closes the sink after every failure; the startup checks are not run
        again for that (they passed for this config), only the connections are new."""
        if self.client is not None:
            self.client.close()
            self.client = None

    # -- delivery

    async def send(self, events: Sequence[Event]) -> None:
        if self._setup is None:  # the worker opens first; a direct caller may not
            await self.open()
        ledger = self._ledger
        first: dict[str, tuple[str, Event]] = {}
        for e in events:
            ref, label = identity(e, self.config.group_by)
            first.setdefault(ref, (label, e))
        await ledger.load(first)
        # The intents of every ticket this batch may create, in one transaction, before any
        # create is sent; the keys Jira answers are written (one transaction) before the
        # batch is reported delivered, whatever happens to it.
        wanted = [self._intent(ref, label, e) for ref, (label, e) in first.items()
                  if await ledger.get(ref) is None and e.type is not EventType.RESOLVED]
        await ledger.intend(wanted)
        self._unsent.update(t.ref for t in wanted)
        try:
            await deliver_per_item(events, self._deliver_one,
                                   concurrency=self.config.concurrency)
        finally:
            await ledger.flush()

    async def _deliver_one(self, event: Event) -> None:
        ref, label = identity(event, self.config.group_by)
        held = self._locks.setdefault(ref, _Held())
        held.users += 1
        try:
            async with held.lock:
                if event.type is EventType.SUMMARY:
                    await self._ensure(event, ref, label)
                elif self.config.group_by is None:
                    await self._item(event, ref, label)
                else:
                    await self._group(event, ref, label)
        except TicketLost:
            pass  # told in the log, and the ledger says what became of it
        except JiraFailure as failure:
            raise delivery_error(failure) from None
        finally:
            held.users -= 1
            if not held.users:  # nobody holds or awaits it: forget it
                del self._locks[ref]

    @property
    def _api(self) -> JiraClient:
        assert self.client is not None, "the sink is not open"
        return self.client

    @property
    def _ledger(self) -> Ledger:
        assert self.ledger is not None, "the sink is not open"
        return self.ledger

    # -- one ticket per item

    async def _item(self, event: Event, ref: str, label: str) -> None:
        ticket = await self._ledger.get(ref)
        if ticket is None and event.type is EventType.RESOLVED:
            return  # never ticketed (a baseline, a silence): nothing to close
        if ticket is None or ticket.state == "intent":
            ticket, created = await self._ensure(event, ref, label, ticket)
            if created:
                return  # the new ticket tells the item as it stands
        if ticket.state == "gone":
            log.info("jira_ticket_gone", sink=self.name, ref=ref, event_id=event.id)
            return
        if ticket.state == "accepted":
            if event.type is EventType.CHANGED:
                await self._reconsider(ticket, event)
            return  # a person's decision: nothing more until the tracked fields change
        assert ticket.key is not None
        if event.type is EventType.NEW:
            return  # a replay: the ticket exists
        if event.type is EventType.CHANGED:
            await self._on_missing(ticket, event, self._api.comment(
                ticket.key, self.render.changed(event)))
            if self.config.update_priority and "severity" in event.changes:
                await self._on_missing(ticket, event, self._api.update(
                    ticket.key, {"priority": {"name": self._priority(event.severity)}}))
        elif event.type is EventType.RESOLVED:
            await self._resolve(ticket, event, self.render.resolved(event))
        elif event.type is EventType.REOPENED:
            await self._reopen(ticket, event, self.render.reopened(event))

    async def _ensure(self, event: Event, ref: str, label: str, ticket: Ticket | None = None,
                      *, values: dict[str, Any] | None = None,
                      items: dict[str, dict[str, Any]] | None = None,
                      summary: str | None = None, description: str | None = None
                      ) -> tuple[Ticket, bool]:
        """The ticket of `ref`: the ledger's, settled from a pending intent, or created now
        (True). An intent this process wrote and whose create it never sent (or Jira
        definitely refused) needs no search: only one whose create may have reached Jira
        does."""
        if ticket is None:
            ticket = await self._ledger.get(ref)
        if ticket is not None and ticket.state != "intent":
            return ticket, False
        if ticket is not None and ref not in self._unsent:
            found = await self._ledger.settle(ticket, self._api.search_label)
            if found is not None:
                log.info("jira_intent_settled", sink=self.name, label=label, key=found.key)
                return found, False
            ticket = None
        if ticket is None:
            [ticket] = await self._ledger.intend([self._intent(ref, label, event)])
        fields = self._fields(event, label, summary, description)
        self._unsent.discard(ref)  # from here on, Jira may have it
        try:
            issue_id, key = await self._api.create(fields)
        except JiraFailure as failure:
            if failure.status == 429:  # throttled before anything was done
                self._unsent.add(ref)
            elif failure.status is not None and 400 <= failure.status < 500 \
                    and failure.status not in (408, 409):
                self._ledger.stage_forget(ticket)  # refused: nothing was created
            raise
        created = self._ledger.created(ticket, key, issue_id, values=values or ticket.values,
                                       items=items or ticket.items)
        log.info("jira_ticket_created", sink=self.name, key=key, label=label,
                 event_id=event.id)
        return created, True

    def _priority(self, severity: str) -> str:
        return self.config.priorities[severity]

    def _fields(self, event: Event, label: str, summary: str | None,
                description: str | None) -> dict[str, Any]:
        assert self._setup is not None, "the sink is not open"
        fields: dict[str, Any] = {
            "project": {"id": self._setup.project_id},
            "issuetype": {"id": self._setup.issue_type_id},
            "summary": summary if summary is not None else self.render.summary(event),
            "description": (description if description is not None
                            else self.render.description(event, label)),
            "labels": [*self.config.labels, label],
            # A baseline summary informs; it must not top anyone's queue at install time.
            "priority": {"name": self._priority(
                "info" if event.type is EventType.SUMMARY else event.severity)},
        }
        for name, value in self.render.custom_values(event).items():
            fields[self._setup.field_ids[name]] = value
        return fields

    async def _on_missing(self, ticket: Ticket, event: Event, call: Any) -> Any:
        """Run a call on the ticket; a ticket a person deleted (404) is recreated if
        configured, else marked gone; either way this event's work is over (`TicketLost`)."""
        try:
            return await call
        except JiraFailure as failure:
            if not failure.missing:
                raise
        await self._lost(ticket, event, "deleted")
        raise TicketLost

    async def _lost(self, ticket: Ticket, event: Event, how: str) -> None:
        log.warning("jira_ticket_missing", sink=self.name, key=ticket.key, how=how,
                    recreate=self.config.recreate_missing)
        if self.config.recreate_missing:
            self._ledger.stage_forget(ticket)
            if event.type is not EventType.RESOLVED:
                await self._ensure(event, ticket.ref, ticket.label, values=ticket.values,
                                   items=ticket.items)
            return
        self._ledger.stage(replace(ticket, state="gone", since=utcnow()))

    async def _state(self, ticket: Ticket, event: Event) -> IssueState:
        """The ticket's status and transitions; a ticket moved to another project (Jira
        answers its old key with the new one) counts as lost, like a deleted one."""
        assert ticket.key is not None
        state: IssueState = await self._on_missing(ticket, event, self._api.state(ticket.key))
        if state is not None and (state.project != self.config.project
                                  or state.key != ticket.key):
            await self._lost(ticket, event, f"moved to {state.key}")
            raise TicketLost
        return state

    async def _resolve(self, ticket: Ticket, event: Event, comment: str) -> None:
        assert ticket.key is not None
        state = await self._state(ticket, event)
        if state.category == "done":
            if not ticket.done:  # closed by a person first: say why it is over anyway
                await self._api.comment(ticket.key, comment)
        else:
            transition = self._pick(state, "done", self.config.resolve_transition)
            await self._api.transition(ticket.key, transition.id,
                                       self._transition_fields(transition), comment)
        self._ledger.stage(replace(ticket, done=True, since=utcnow()))

    async def _reopen(self, ticket: Ticket, event: Event, comment: str, *,
                      overrule: bool = False) -> None:
        """Back to a to-do status; a person's closing resolution is respected (the item
        accepted) unless `overrule` (the item changed since that decision)."""
        assert ticket.key is not None
        state = await self._state(ticket, event)
        if state.category != "done":
            await self._api.comment(ticket.key, comment)  # reopened by a person already
        elif state.resolution in self.config.human_resolutions and not overrule:
            await self._accept(ticket, event, state.resolution)
            return
        else:
            transition = self._pick(state, "new", self.config.reopen_transition)
            await self._api.transition(ticket.key, transition.id, {}, comment)
        self._ledger.stage(replace(ticket, done=False, since=utcnow()))

    def _pick(self, state: IssueState, category: str, name: str | None) -> Transition:
        for t in state.transitions:
            if (name is not None and t.name == name) or (name is None and t.category == category):
                return t
        wanted = f"transition {name!r}" if name else f"a transition into the {category} category"
        offered = ", ".join(f"{t.name} → {t.category}" for t in state.transitions) or "none"
        raise PermanentDeliveryError(f"Jira {state.key} (status {state.status}) offers no "
                                     f"{wanted}; it offers: {offered}")

    def _transition_fields(self, transition: Transition) -> dict[str, Any]:
        """The configured `resolve_fields` this transition's screen takes (those with allowed
        values go by name), and a clear refusal for a required one not configured."""
        out: dict[str, Any] = {}
        for fid, meta in transition.fields.items():
            if fid in self.config.resolve_fields:
                value = self.config.resolve_fields[fid]
                out[fid] = {"name": value} if meta.get("allowedValues") and \
                    isinstance(value, str) else value
            elif meta.get("required"):
                raise PermanentDeliveryError(
                    f"Jira transition {transition.name!r} requires the field {fid!r}: set it "
                    f"in resolve_fields")
        return out

    # -- a person's decision

    async def _accept(self, ticket: Ticket, event: Event, resolution: str) -> None:
        assert ticket.key is not None
        by = await self._api.closed_by(ticket.key)
        await self._api.comment(ticket.key, self.render.accepted(event, resolution, by))
        silence = self._silence(ticket, event, resolution, by)
        await self._ledger.save(replace(ticket, state="accepted", done=True, since=utcnow(),
                                        resolution=resolution,
                                        silence=silence.id if silence else None), silence)
        log.info("jira_item_accepted", sink=self.name, key=ticket.key, resolution=resolution,
                 by=by, silence=silence.id if silence else None)

    def _silence(self, ticket: Ticket, event: Event, resolution: str,
                 by: str) -> SilenceRecord | None:
        """The acceptance as a silence of the item's (or group's) `reopened` events, or None
        (ledger only) when it is off or the group cannot be pinned down: a group value that
        is empty would make a silence of far more than this ticket."""
        if self._silence_for is None:
            return None
        if self.config.group_by is None:
            pinned: dict[str, Any] = {"scope": event.scope, "kind": event.kind, "key": event.key}
        else:
            pinned = dict(ticket.values)
        if not pinned or any(v in (None, "") for v in pinned.values()):
            log.warning("jira_accepted_without_silence", sink=self.name, key=ticket.key,
                        why="a group value is empty")
            return None
        try:
            matchers = parse_matchers({
                **{k: {"op": "eq", "value": v} for k, v in pinned.items()},
                "type": {"op": "eq", "value": EventType.REOPENED.value}})
            return new_silence(matchers, reason=f"Jira {ticket.key} closed as {resolution}",
                               author=by or "jira", duration=None,
                               ends_at=utcnow() + self._silence_for,
                               origin=f"jira:{self.name}")
        except SilenceError as exc:
            log.warning("jira_accepted_without_silence", sink=self.name, key=ticket.key,
                        why=str(exc))
            return None

    async def _reconsider(self, ticket: Ticket, event: Event) -> None:
        """The tracked fields of an accepted item changed: the decision was about what it was,
        so the ticket reopens (saying what changed) and the acceptance ends."""
        assert ticket.key is not None
        resumed = replace(ticket, state="ticket", resolution=None, silence=None)
        await self._reopen(resumed, event,
                           self.render.changed_after_acceptance(event, ticket.resolution or ""),
                           overrule=True)
        if ticket.silence is not None and self.store is not None:
            await self.store.expire_silence(ticket.silence, utcnow())

    # -- one ticket per group

    async def _group(self, event: Event, ref: str, label: str) -> None:
        assert self.config.group_by is not None
        uid = event.item_uid
        row = self._row(event)
        ticket = await self._ledger.get(ref)
        if ticket is None and event.type is EventType.RESOLVED:
            return
        if ticket is None or ticket.state == "intent":
            values = group_values(event, self.config.group_by)
            items = {**(ticket.items if ticket else {}), uid: row}
            ticket, created = await self._ensure(
                event, ref, label, ticket, values=values, items=items,
                summary=self.render.group_summary(values, event),
                description=self.render.group_description(values, items, label, event))
            if created:
                return
        if ticket.state == "gone":
            return
        items = {**ticket.items, uid: row}
        if ticket.state == "accepted":
            if event.type is EventType.CHANGED:
                await self._reconsider(replace(ticket, items=items), event)
            else:
                self._ledger.stage(replace(ticket, items=items))
            return
        assert ticket.key is not None
        was_known = uid in ticket.items and ticket.items[uid].get("state") == row["state"]
        if event.type is EventType.NEW and was_known:
            return  # a replay
        updated = replace(ticket, items=items, since=utcnow())
        active = updated.active_items
        if event.type is EventType.RESOLVED:
            if active == 0:
                await self._describe(updated, event)
                await self._resolve(updated, event, self.render.resolved(
                    event, last_of=len(items)))
                return
            comment = self.render.item_resolved(event, active)
        elif event.type is EventType.CHANGED:
            comment = self.render.item_changed(event)
        elif ticket.done:  # an item returns to (or joins) a group whose ticket is closed
            await self._describe(updated, event)
            await self._reopen(updated, event, self.render.item_joined(event))
            return
        else:
            comment = self.render.item_joined(event)
        await self._on_missing(updated, event, self._api.comment(ticket.key, comment))
        await self._describe(updated, event)
        self._ledger.stage(updated)

    def _intent(self, ref: str, label: str, event: Event) -> Ticket:
        if self.config.group_by is None or event.type is EventType.SUMMARY:
            return Ticket.intent(ref, label)
        return Ticket.intent(ref, label, group_values(event, self.config.group_by),
                             {event.item_uid: self._row(event)})

    def _row(self, event: Event) -> dict[str, Any]:
        """A group item as its ticket's table shows it."""
        return {"title": event.title, "severity": event.severity, "kind": event.kind,
                "key": event.key, "link": self.render.present.link(event),
                "state": "resolved" if event.type is EventType.RESOLVED else "active"}

    async def _describe(self, ticket: Ticket, event: Event) -> None:
        assert ticket.key is not None
        fields: dict[str, Any] = {"description": self.render.group_description(
            ticket.values, ticket.items, ticket.label, event)}
        if self.config.update_priority:
            worst = max((i for i in ticket.items.values() if i.get("state") == "active"),
                        key=lambda i: _rank(i.get("severity")), default=None)
            if worst is not None:
                fields["priority"] = {"name": self._priority(worst["severity"])}
        await self._on_missing(ticket, event, self._api.update(ticket.key, fields))


def _rank(severity: object) -> int:
    return SEVERITY_RANK.get(str(severity), 0)
