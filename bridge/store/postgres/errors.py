"""What an asyncpg or PostgreSQL error says about the store, in the split every store uses
(bridge/store/base.py): trouble that passes (the server restarting or unreachable, a timeout, a
lock or serialisation conflict, a full disk) is `StoreUnavailableError`; damage the server
reports, or a schema that is not ours, is `StoreCorruptError`; anything else (a constraint, a
value the column refuses) refused that one statement and is a bare `StoreError`."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from bridge.store.base import StoreCorruptError, StoreError, StoreUnavailableError

# SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html): connection
# exceptions, insufficient resources, program limits, operator intervention (shutdown, "the
# database system is starting up"), system errors (I/O); and single codes of the same kind.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "54", "57", "58"})
_UNAVAILABLE_CODES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "55006",  # object_in_use
    "25006",  # read_only_sql_transaction: a standby, before or during a failover
})
_CORRUPT_CLASSES = frozenset({"XX"})  # internal_error, data_corrupted, index_corrupted
_CORRUPT_CODES = frozenset({
    "42P01",  # undefined_table: our tables are gone, or this is not our schema
    "42703",  # undefined_column: a schema we do not understand
})


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means "the server cannot serve right now" (and nothing is damaged)."""
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError
                  | asyncpg.InternalClientError | ConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        code = str(getattr(exc, "sqlstate", "") or "")
        return code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_CODES
    return False


def store_error(message: str, exc: BaseException) -> StoreError:
    """`message` as the kind of StoreError that `exc` means."""
    if is_unavailable(exc):
        return StoreUnavailableError(message)
    if isinstance(exc, asyncpg.PostgresError):
        code = str(getattr(exc, "sqlstate", "") or "")
        if code[:2] in _CORRUPT_CLASSES or code in _CORRUPT_CODES:
            return StoreCorruptError(message)
    return StoreError(message)


# What `store_error` translates: every failure a call into asyncpg can raise.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
    asyncio.TimeoutError)


class OneLineDriverWarnings(logging.Filter):
    """asyncpg's pool logs its attempts to reopen connections while the server is away with a
    whole traceback each time; the daemon's log keeps one line per event, so the exception
    becomes the end of the message (`sweep_not_committed` and `sink_store_failed` already say
    what it means for the work)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_driver_tracebacks() -> None:
    """Install `OneLineDriverWarnings` on asyncpg's pool logger (once)."""
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OneLineDriverWarnings) for f in pool_log.filters):
        pool_log.addFilter(OneLineDriverWarnings())
