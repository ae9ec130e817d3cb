"""The Jira sink (`type: jira`): config.py (settings), client.py (the `jira` package, off the
event loop, no retries of its own), checks.py (startup checks), ledger.py (item/group → ticket
and create intents in the state store), render.py (summaries, descriptions and comments in wiki
markup), service.py (the life cycle)."""

from bridge.sinks.jira.config import JiraSinkConfig

__all__ = ["JiraSinkConfig"]
