"""`bridge` command line. Errors an operator can fix print one clear message and exit non-zero,
never a traceback: 2 for a bad config or usage, 1 for a state or delivery problem, and (from
`bridge once`) 3 for a run that delivered everything but swept only part of a scope."""

from __future__ import annotations

# First, before the heavy imports below: a SIGHUP or SIGTERM during the second they take is
# held, not fatal (bridge/startup_signals.py).
from bridge import startup_signals  # isort: split

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from bridge.baseline import BASELINE_CURSOR
from bridge.config import (
    BridgeConfig,
    ConfigError,
    load_config,
    load_config_offline,
    plaintext_urls,
)
from bridge.durations import parse_moment, parse_time
from bridge.grouping import GroupingSettings
from bridge.logging import configure_logging
from bridge.model import SEVERITIES, Event, EventType, normalize_severity, utcnow
from bridge.routing import Matcher, check_matcher, grouped_sinks, match_value, route
from bridge.secrets import redact
from bridge.store.base import Store, StoreError, SweepRecord, maintenance
from bridge.store.display import item_rows
from bridge.templates import SAMPLES, check_all, templates_of
from bridge.textsafe import printable
from bridge.version import __version__

T = TypeVar("T")
DEFAULT_CONFIG = Path("/etc/bridge/bridge.yaml")
ONCE_EXIT_CODES = """exit codes:
  0  every scope swept completely (or had nothing new) and every event delivered
  1  a sweep failed, or events were left undelivered or dead-lettered; or
     `bridge run` replicas share the PostgreSQL state and nothing was done
  2  a bad config or bad usage
  3  everything delivered, but a sweep was incomplete (a vendor error mid-pagination,
     a list that drifted): partial coverage, nothing was resolved from it
A failure (1) wins over an incomplete sweep (3) when both happened."""


def _config(args: argparse.Namespace) -> BridgeConfig:
    config = load_config(args.config)
    configure_logging(config.log)
    return config


async def _with_store(config: BridgeConfig, fn: Callable[[Store], Awaitable[T]]) -> T:
    from bridge.daemon import open_store

    store = open_store(config)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.daemon import Daemon

    config = _config(args)
    return asyncio.run(Daemon(config, config_path=Path(args.config), grace=args.grace).run())


def _progress(args: argparse.Namespace) -> contextlib.AbstractAsyncContextManager[Any]:
    """A live line per scope on a terminal, periodic log lines elsewhere (bridge/progress.py)."""
    from bridge import progress

    if args.no_progress:
        return contextlib.nullcontext()
    return progress.reporting(sys.stderr, interval=args.progress_interval)


def cmd_once(args: argparse.Namespace) -> int:
    from bridge.daemon import Daemon
    from bridge.dryrun import dry_run

    config = _config(args)

    async def go() -> int:
        async with _progress(args):
            if args.dry_run:
                return await dry_run(config, show=args.show, as_json=args.json, out=sys.stdout)
            return await Daemon(config, config_path=Path(args.config)).once(args.deliver_timeout)

    return asyncio.run(go())


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    async def go() -> int:
        async with _progress(args):
            return await run_demo(state_dir=args.state_dir, duration=args.duration,
                                  interval=args.interval)

    return asyncio.run(go())


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.no_env:
        offline = load_config_offline(args.file or args.config)
        config = offline.config
        print(f"{args.file or args.config}: OK (without the environment: "
              f"{len(offline.placeholders)} placeholder(s) for secrets)")
        for place in offline.placeholders:
            print(f"  placeholder: {place}")
    else:
        config = load_config(args.file or args.config)
        print(f"{args.file or args.config}: OK")
    print(f"  state: {config.state.describe()}")
    for s in config.sources:
        print(f"  source {s.name} ({s.type}): every {s.interval:g}s, "
              f"resolve after {s.resolve_after_misses} misses")
    template_problems: list[str] = []
    for i, k in enumerate(config.sinks):
        print(f"  sink {k.name} ({k.type}): batch {k.batch_size}, "
              f"max {k.max_attempts} attempts")
        # Loading rendered every template already; this says so, and renders them again
        # against each sample event kind so the listing is what was checked.
        templates = templates_of(k)
        if templates:
            problems = check_all({f"sinks[{i}].{name}": src for name, src in templates.items()})
            template_problems += problems
            print(f"    templates {', '.join(templates)}: "
                  f"{'FAILED' if problems else 'rendered'} for a sample "
                  f"{'/'.join(e.type.value for e in SAMPLES)} event")
    print(f"  routes: default sinks {config.routes.sinks or []}, "
          f"{len(config.routes.routes)} top-level routes")
    for sink in config.sinks:  # route grouping makes digests, which only some sinks send
        if sink.name in grouped_sinks(config.routes) and not isinstance(sink, GroupingSettings):
            print(f"warning: routes set grouping (group_by…) for sink {sink.name} ({sink.type}), "
                  "which sends no digests: each event goes as itself")
    for component, path, host in plaintext_urls(config):  # a warning: the config still runs
        print(f"warning: {component} ({path}): plain http:// to {host}: credentials and "
              "findings would cross the network unencrypted; use https://")
    for problem in template_problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if template_problems else 0


def _sample_event(text: str) -> Event:
    data: dict[str, Any] = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("--event must be a JSON object")
    return Event(
        id=str(data.get("id", "sample")),
        type=EventType(data.get("type", "new")),
        source=str(data.get("source", "")),
        vendor=str(data.get("vendor", data.get("source", ""))),
        scope=str(data.get("scope", data.get("source", ""))),
        tenant=str(data.get("tenant", "")),
        kind=str(data.get("kind", "")),
        key=str(data.get("key", "sample")),
        title=str(data.get("title", "")),
        severity=normalize_severity(data.get("severity", "medium")),
        vendor_severity=str(data.get("vendor_severity", "")),
        status=str(data.get("status", "")),
        reason=str(data.get("reason", "")),
        counter=int(data.get("counter", 1)),
        occurred_at=utcnow(),
        attributes=data.get("attributes", {}),
    )


def cmd_routes_test(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        event = _sample_event(args.event)
    except (ValueError, TypeError) as exc:
        print(f"--event: {exc}", file=sys.stderr)
        return 2
    decision = route(config.routes, event, explain=True)
    for step in decision.steps:
        print(f"{'MATCH' if step.matched else 'skip ':5}  {step.path}: {step.why}")
    print(f"chosen: {', '.join(decision.routes)}")
    print(f"sinks: {', '.join(decision.sinks) or '(none: event would be dropped)'}")
    for sink in config.sinks:  # digests a route sets (bridge/grouping.py), as the sink applies
        grouping = decision.groupings.get(sink.name)
        if grouping is not None and isinstance(sink, GroupingSettings):
            rule = sink.rule(grouping)
            by = "off" if rule.group_by is None else f"[{', '.join(rule.group_by)}]"
            print(f"grouping at {sink.name}: route {rule.route}, group_by {by}, group_wait "
                  f"{rule.group_wait:g}s, group_interval {rule.group_interval:g}s, max_batch "
                  f"{rule.max_batch}")
    return 0


def _print_rows(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    """Redacted: stored errors and notes quote what vendors and receivers said, and some of
    them echo credentials back (the config loaded first remembered every secret). The text form
    is also made `printable`: those same strings, and titles, are written by vendors and
    receivers, and raw they could drive the operator's terminal or forge rows (JSON output
    escapes every control character already)."""
    clean = [{k: redact(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    if as_json:
        print(json.dumps(clean, indent=2, default=str))
        return
    for row in clean:
        print(printable("  ".join(f"{k}={v}" for k, v in row.items())))


class UsageError(Exception):
    """Bad command-line input: printed as it is, exit 2."""


def _severities(text: str) -> set[str]:
    """`--severity high`, `'>= high'` or `high,critical`: the severities it stands for, in the
    routes' matcher syntax."""
    words = [w.strip() for w in text.split(",")] if "," in text else None
    try:
        matcher = Matcher.model_validate(words if words is not None else text)
        check_matcher("severity", matcher)
    except (ValidationError, ValueError) as exc:
        raise UsageError(f"--severity {text!r}: {_first_error(exc)}") from None
    return {s for s in SEVERITIES if match_value(matcher, "severity", s)}


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return str(exc)


async def _source_scopes(config: BridgeConfig, store: Store, source: str) -> list[str]:
    """The scopes of `source`: as configured, and as the sweep log remembers them (a tenant
    since removed from the config still has state)."""
    from bridge.pipeline import configured_scopes

    configured = await configured_scopes(config)
    logged = await store.swept_scopes()
    known = {*configured.values(), *logged.values()}
    if source not in known:
        raise UsageError(f"--source {source!r}: no such source (known: "
                         f"{', '.join(sorted(known)) or 'none'})")
    return sorted({scope for scope, name in [*configured.items(), *logged.items()]
                   if name == source})


async def _state_items(args: argparse.Namespace, config: BridgeConfig, store: Store) -> None:
    try:
        since = parse_moment(args.since, utcnow()) if args.since else None
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    records = await store.list_items(
        args.scope, args.state, args.limit,
        scopes=await _source_scopes(config, store, args.source) if args.source else None,
        kinds=[k for arg in args.kind for k in arg.split(",")] if args.kind else None,
        since=since, severities=_severities(args.severity) if args.severity else None)
    _print_rows(item_rows(records), args.json)


def _sweep_row(r: SweepRecord) -> dict[str, Any]:
    return {"id": r.id, "scope": r.scope, "started": r.started_at.isoformat(timespec="seconds"),
            "outcome": r.outcome, "seen": r.items_seen, "events": r.events,
            "requests": r.requests, "notes": "; ".join(r.notes), "error": r.error or ""}


async def _state_sweeps(args: argparse.Namespace, config: BridgeConfig, store: Store) -> None:
    """Per scope: the last complete sweep, and why the sweeps since then were not complete
    (`--history`: every record, newest first)."""
    if args.history:
        _print_rows([_sweep_row(r) for r in await store.sweeps(args.scope, args.limit)],
                    args.json)
        return
    from bridge.pipeline import configured_scopes
    from bridge.sweep import baseline_state

    owners = {**await store.swept_scopes(), **await configured_scopes(config)}
    scopes = [s for s in sorted(owners) if (args.scope is None or s == args.scope)
              and (args.source is None or owners[s] == args.source)]
    summaries: list[dict[str, Any]] = []
    for scope in scopes:
        recent = await store.sweeps(scope, args.limit)
        complete = await store.sweeps(scope, 1, outcomes=["complete"])
        since = [r for r in recent if not complete or (r.id or 0) > (complete[0].id or 0)]
        cursor = await store.load_cursor(scope)
        baseline = await baseline_state(store, scope, cursor)
        summaries.append({
            "scope": scope, "source": owners[scope],
            "baseline": (f"done {cursor[BASELINE_CURSOR]}" if BASELINE_CURSOR in cursor
                         else "pending" if baseline == "pending" else "done"),
            "last_complete": _sweep_row(complete[0]) if complete else None,
            "latest": _sweep_row(recent[0]) if recent else None,
            "not_complete_since": [_sweep_row(r) for r in since
                                   if r.outcome in ("incomplete", "failed")],
        })
    if args.json:
        print(redact(json.dumps(summaries, indent=2)))
        return
    for summary in summaries:
        last, latest = summary["last_complete"], summary["latest"]
        line = (f"{summary['scope']}  source={summary['source']}  "
                f"baseline: {summary['baseline']}  last complete: "
                + (f"{last['started']} (#{last['id']}, {last['seen']} seen, {last['events']} "
                   "events)" if last else "never")
                + (f"  latest: {latest['outcome']} at {latest['started']}" if latest
                   else "  never swept"))
        print(printable(redact(line)))
        for r in summary["not_complete_since"]:
            why = r["error"] or r["notes"] or "(no notes)"
            print(printable(redact(f"  #{r['id']} {r['started']} {r['outcome']}: {why}")))


async def _state_summarised(args: argparse.Namespace, store: Store) -> None:
    """Events a storm summary carried instead of sending them one by one (bridge/grouping.py):
    kept whole beside the dead letters, `bridge dlq replay --kind summarised` sends them."""
    rows = [{"seq": d.seq, "sink": d.sink, "summary": d.summary or "",
             "at": d.failed_at.isoformat(timespec="seconds"),
             "occurred": d.event.occurred_at.isoformat(timespec="seconds") if d.event else "",
             "scope": d.event.scope if d.event else "", "type": d.event.type.value if d.event
             else "?", "severity": d.event.severity if d.event else "",
             "title": d.event.title if d.event else "(undecodable)", "event": d.event_id}
            for d in await store.dead_letters(args.sink, -1 if args.summary else args.limit,
                                              summarised=True)
            if args.summary is None or d.summary == args.summary]
    _print_rows(rows[:args.limit] if args.limit >= 0 else rows, args.json)


async def _state_muted(args: argparse.Namespace, store: Store) -> None:
    """Events sinks were not sent, and why: a first-sweep baseline or a silence."""
    rows = [{"occurred": m.occurred_at.isoformat(timespec="seconds"), "sink": m.sink,
             "reason": m.reason, "silence": m.silence_id or "", "scope": m.scope,
             "type": m.type, "kind": m.kind, "key": m.key, "severity": m.severity,
             "title": m.title, "event": m.event_id}
            for m in await store.muted(args.scope, silence_id=args.silence, limit=args.limit)]
    _print_rows(rows, args.json)


def cmd_state(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.what in ("migrate", "leases"):  # PostgreSQL: moving there, replicas sharing it
        from bridge.store.postgres.commands import SpecError, state_command

        try:
            return asyncio.run(state_command(args.what, config, args.from_store,
                                             args.to_store, as_json=args.json))
        except SpecError as exc:
            raise UsageError(f"state {args.what}: {exc}") from None

    async def go(store: Store) -> int:
        if args.what == "items":
            await _state_items(args, config, store)
        elif args.what == "sweeps":
            await _state_sweeps(args, config, store)
        elif args.what == "muted":
            await _state_muted(args, store)
        elif args.what == "summarised":
            await _state_summarised(args, store)
        elif args.what == "check":
            problems = await maintenance(store).check()
            for p in problems:
                print(p)
            print("state OK" if not problems else f"{len(problems)} problem(s)")
            return 1 if problems else 0
        elif args.what == "backup":
            if not args.dest:
                raise UsageError("state backup: --dest FILE is required")
            await maintenance(store).backup(Path(args.dest))
            print(f"backup written to {args.dest}")
        return 0

    return asyncio.run(_with_store(config, go))


def cmd_silence(args: argparse.Namespace) -> int:
    """Silences live in the state store: a running daemon sees them at its next sweep."""
    from bridge.silences import (
        SilenceError,
        SilenceService,
        default_author,
        new_silence,
        parse_matchers,
    )

    config = _config(args)
    if config.state.backend == "memory":
        raise UsageError("the memory state backend keeps nothing between runs: a silence "
                         "added here would be gone; use the admin API of the running daemon")
    try:
        record = new_silence(
            parse_matchers(args.match), reason=args.reason,
            author=args.author or default_author(), duration=args.duration,
            ends_at=parse_time(args.until) if args.until else None,
            starts_at=parse_time(args.starts) if args.starts else None,
        ) if args.silence_command == "add" else None
    except (SilenceError, ValueError) as exc:
        raise UsageError(str(exc)) from None

    async def go(store: Store) -> int:
        service = SilenceService(store)
        if record is not None:
            silence = await service.add(record)
            shown = [silence]
        elif args.silence_command == "expire":
            try:
                shown = [await service.expire(args.id)]
            except SilenceError as exc:
                raise UsageError(str(exc)) from None
        else:
            shown = await service.list(ended=args.all)
        now = utcnow()
        rows = [{**s.to_dict(now), "muted": len(await store.muted(silence_id=s.id, limit=-1))}
                for s in shown]
        if args.json:
            print(redact(json.dumps(rows if args.silence_command == "list" else rows[0],
                                    indent=2)))
            return 0
        for s, row in zip(shown, rows, strict=True):
            print(printable(redact(
                f"{s.id}  {row['state']}  {s.record.starts_at.isoformat(timespec='seconds')} "
                f"→ {s.record.ends_at.isoformat(timespec='seconds')}  by {s.record.author}  "
                f"muted {row['muted']}  {'; '.join(s.describe())}  reason: {s.record.reason}")))
        if args.silence_command == "expire":
            print("expired: the items it held back that are still active are delivered once, "
                  "as they stand, by the running daemon (or the next `bridge once`)")
        return 0

    return asyncio.run(_with_store(config, go))


def cmd_sinks_test(args: argparse.Namespace) -> int:
    """One synthetic event through the real sink; the state store is never opened."""
    from bridge.sinktest import send_test, test_event

    config = _config(args)
    known = [s.name for s in config.sinks]
    if args.name not in known:
        raise UsageError(f"no sink named {args.name!r} (known: {', '.join(known) or 'none'})")
    sink = config.sink(args.name)
    try:
        event = test_event(_sample_event(args.event or "{}"))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--event: {exc}") from None
    print(printable(f"sink {sink.name} ({sink.type}): sending one test event, id {event.id}: "
                    f"{event.title}"), flush=True)
    outcome = asyncio.run(send_test(sink, event))
    print(printable(redact(f"{outcome.verdict}: {outcome.answer}")))
    return 0 if outcome.ok else 1


def cmd_dlq(args: argparse.Namespace) -> int:
    config = _config(args)

    async def go(store: Store) -> int:
        # Dead letters, and the events storm summaries carried (`summary` names the summary).
        kind = args.kind or ("dead" if args.what == "replay" and not args.seq else "all")
        summarised = {"dead": False, "summarised": True, "all": None}[kind]
        if args.what == "list":
            rows = [
                {"seq": d.seq, "sink": d.sink, "event": d.event_id,
                 "type": d.event.type.value if d.event else "?",
                 "title": d.event.title if d.event else "(undecodable)",
                 "attempts": d.attempts, "summary": d.summary or "", "error": d.error}
                for d in await store.dead_letters(args.sink, args.limit, summarised=summarised)
            ]
            _print_rows(rows, args.json)
        else:
            n = await store.replay(args.sink, args.seq or None, summarised=summarised)
            what = {"dead": "dead letter(s)", "summarised": "summarised event(s)",
                    "all": "dead letter(s) and summarised event(s)"}[kind]
            print(f"replayed {n} {what}; a running daemon delivers them shortly")
        return 0

    return asyncio.run(_with_store(config, go))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bridge", description=__doc__)
    p.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="YAML config file")
        return sp

    def with_progress(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--no-progress", action="store_true",
                        help="no live progress line per scope (on a terminal) or periodic "
                        "sweep_progress log lines (elsewhere)")
        sp.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                        help="off a terminal: a sweep_progress log line this often (default 10)")

    run = with_config(sub.add_parser("run", help="run the daemon"))
    run.add_argument("--grace", type=float, default=20.0, help="seconds to finish work on SIGTERM")
    run.set_defaults(fn=cmd_run)

    once = with_config(sub.add_parser(
        "once", help="sweep every source once, deliver, exit",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ONCE_EXIT_CODES))
    once.add_argument("--deliver-timeout", type=float, default=60.0)
    once.add_argument("--dry-run", action="store_true",
                      help="sweep, diff and route for real, print per sink what would be sent; "
                      "write nothing (state, outbox, cursors) and send nothing")
    once.add_argument("--show", type=int, default=10,
                      help="dry run: events shown per sink (default 10)")
    once.add_argument("--json", action="store_true", help="dry run: every event, as JSON")
    with_progress(once)
    once.set_defaults(fn=cmd_once)

    demo = sub.add_parser("demo", help="run against bundled simulators with local sinks")
    demo.add_argument("--state-dir", type=Path, default=None, help="default: a temporary dir")
    demo.add_argument("--duration", type=float, default=None, help="seconds; default: until Ctrl-C")
    demo.add_argument("--interval", type=float, default=5.0, help="seconds between sweeps")
    with_progress(demo)
    demo.set_defaults(fn=cmd_demo)

    check = with_config(sub.add_parser("check-config", help="validate a config file"))
    check.add_argument("file", nargs="?", help="config file (or --config)")
    check.add_argument("--no-env", action="store_true",
                       help="validate without the environment (CI): placeholders for every "
                       "${VAR} and secret *_file, BRIDGE_* overrides ignored")
    check.set_defaults(fn=cmd_check_config)

    routes = sub.add_parser("routes", help="route tree tools")
    rsub = routes.add_subparsers(dest="routes_command", required=True)
    rtest = with_config(rsub.add_parser("test", help="show which routes and sinks match an event"))
    rtest.add_argument("--event", required=True,
                       help='JSON, e.g. \'{"type":"new","source":"scanorbit","severity":"high"}\'')
    rtest.set_defaults(fn=cmd_routes_test)

    state = with_config(sub.add_parser(
        "state", help="inspect the state store",
        description="items: stored items, the most recently changed first. sweeps: per scope, "
        "the last complete sweep and why the sweeps since were not complete. muted: events "
        "sinks were not sent (a first-sweep baseline, a silence), newest first. summarised: "
        "events a sink's storm guard sent in a summary instead of one by one. migrate: copy "
        "the whole state between stores (--from sqlite:PATH --to postgres, or back). leases: "
        "which replica owns each source scope and sink (PostgreSQL)."))
    state.add_argument("what", choices=["items", "sweeps", "muted", "summarised", "check",
                                        "backup", "migrate", "leases"])
    state.add_argument("--from", dest="from_store", metavar="STORE",
                       help="migrate: copy from sqlite:PATH or postgres (the config's state:)")
    state.add_argument("--to", dest="to_store", metavar="STORE",
                       help="migrate: into this empty store, sqlite:PATH or postgres")
    state.add_argument("--sink", help="summarised: only this sink's")
    state.add_argument("--summary", metavar="ID",
                       help="summarised: only what this storm summary carried (sm-…)")
    state.add_argument("--scope")
    state.add_argument("--source", help="only the scopes of this source")
    state.add_argument("--state", choices=["active", "resolved"])
    state.add_argument("--kind", action="append", help="items of this kind (repeat, or a,b)")
    state.add_argument("--since", help="items changed since an ISO time or an age (24h, 7d)")
    state.add_argument("--severity",
                       help="items last seen with this severity: high, '>= high', high,critical")
    state.add_argument("--history", action="store_true",
                       help="sweeps: every record, newest first")
    state.add_argument("--silence", help="muted: only what this silence muted")
    state.add_argument("--limit", type=int, default=50)
    state.add_argument("--dest", help="backup: destination file")
    state.add_argument("--json", action="store_true")
    state.set_defaults(fn=cmd_state)

    silence = sub.add_parser("silence", help="mute matching events for a while")
    ssub = silence.add_subparsers(dest="silence_command", required=True)
    sadd = with_config(ssub.add_parser(
        "add", help="mute events matching every --match until the silence ends",
        description="Matchers use the routes' syntax: FIELD=VALUE, FIELD!=VALUE, FIELD=~REGEX, "
        "FIELD!~REGEX, severity>=high; fields as in routes (source, kind, tenant, severity, "
        "attributes.NAME, ...). A silence needs an end. Muted events are recorded with the "
        "silence's id (bridge state muted --silence ID); resolved events are still delivered "
        "unless silences.deliver_resolved is false; when it ends, the items it held back that "
        "are still active are delivered once, as they stand."))
    sadd.add_argument("--match", action="append", required=True, metavar="FIELD OP VALUE")
    end = sadd.add_mutually_exclusive_group(required=True)
    end.add_argument("--duration", help="e.g. 2h, 7d, 4w")
    end.add_argument("--until", help="an ISO time (UTC unless it says otherwise)")
    sadd.add_argument("--starts", help="an ISO time; default: now")
    sadd.add_argument("--reason", required=True, help="why: the audit trail keeps it")
    sadd.add_argument("--author", help="who (default: the user running the command)")
    sadd.add_argument("--json", action="store_true")
    slist = with_config(ssub.add_parser("list", help="silences active or to come"))
    slist.add_argument("--all", action="store_true", help="ended ones too")
    slist.add_argument("--json", action="store_true")
    sexpire = with_config(ssub.add_parser("expire", help="end a silence now"))
    sexpire.add_argument("id")
    sexpire.add_argument("--json", action="store_true")
    silence.set_defaults(fn=cmd_silence)

    sinks = sub.add_parser("sinks", help="sink tools")
    ksub = sinks.add_subparsers(dest="sinks_command", required=True)
    ktest = with_config(ksub.add_parser(
        "test", help="send one clearly marked test event through a sink, show the answer",
        description="Builds the sink as configured, sends one synthetic event (title "
        "'[bridge test] …', attributes.bridge_test true) and prints what the receiver answered. "
        "Nothing is written to the state: no outbox row, no retry, no dead letter. Exit 0 when "
        "the receiver accepted it, 1 otherwise."))
    ktest.add_argument("name", help="the sink's name")
    ktest.add_argument("--event", help='fields to set, as JSON: \'{"severity":"critical"}\'')
    ktest.set_defaults(fn=cmd_sinks_test)

    dlq = with_config(sub.add_parser("dlq", help="dead letters"))
    dlq.add_argument("what", choices=["list", "replay"])
    dlq.add_argument("--sink")
    dlq.add_argument("--seq", type=int, nargs="*", help="replay only these")
    dlq.add_argument("--kind", choices=["dead", "summarised", "all"],
                     help="dead letters, events storm summaries carried, or both (default: "
                     "both for list and for replay --seq; dead letters for a plain replay)")
    dlq.add_argument("--limit", type=int, default=100)
    dlq.add_argument("--json", action="store_true")
    dlq.set_defaults(fn=cmd_dlq)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.fn is not cmd_run:  # the daemon takes held signals over; other commands get them
        startup_signals.release()
    try:
        code: int = args.fn(args)
        return code
    except ConfigError as exc:  # redacted: a problem may quote a value from the file
        print(redact(str(exc)), file=sys.stderr)
        return 2
    except UsageError as exc:
        print(printable(redact(f"bridge: {exc}")), file=sys.stderr)
        return 2
    except StoreError as exc:
        print(redact(f"bridge: state store: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
