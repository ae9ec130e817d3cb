"""The config loader under fuzzing: random YAML documents, valid configs with random damage,
and random bytes. Whatever comes in, the answer is a config or a `ConfigError` naming what is
wrong — never another exception — and `bridge check-config` says so with exit code 2 and no
traceback."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import cli
from bridge.config import BridgeConfig, ConfigError, load_config, parse_config

KEYS = ["state", "log", "admin", "sources", "sinks", "routes", "path", "backend", "level",
        "format", "levels", "enabled", "host", "port", "token", "token_file", "name", "type",
        "base_url", "api_key", "api_key_file", "interval", "jitter", "resolve_after_misses",
        "tracked_fields", "http", "timeout", "verify_tls", "tenants", "url", "bearer_token",
        "batch_size", "max_attempts", "match", "match_re", "severity", "continue", "routes",
        "protocol", "framing", "cef", "leef", "fields", "cs", "delimiter", "rfc", "facility"]
TYPES = ["scanorbit", "aether365", "ayliea", "file", "stdout", "webhook", "syslog", "jira", ""]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([*TYPES, "${UNSET_VAR}", "${UNSET_VAR:-fallback}", "${", "https://x.test",
                     ">= high", "critical", "[", "0x1F", "-1", "1e400", "\x00", "é中😀"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-3, 3), st.none())
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)

VALID: dict[str, Any] = {
    "state": {"path": "state/bridge.db"},
    "log": {"level": "info", "format": "json"},
    "admin": {"host": "127.0.0.1", "port": 9108},
    "sources": [
        {"name": "so", "type": "scanorbit", "api_key": "sk_live_fuzz0123456789", "interval": 60,
         "http": {"timeout": 10}},
        {"name": "ay", "type": "ayliea", "api_key": "ayliea_pk_fuzz0123456789"},
        {"name": "ae", "type": "aether365",
         "tenants": [{"name": "contoso", "api_key": "ae_live_fuzz0123456789"}]},
    ],
    "sinks": [
        {"name": "events", "type": "file", "path": "events.jsonl"},
        {"name": "hook", "type": "webhook", "url": "https://hooks.example.test/x"},
        {"name": "siem", "type": "syslog", "host": "siem.example.test", "format": "cef"},
    ],
    "routes": {"sinks": ["events"], "routes": [
        {"match": {"severity": ">= high"}, "sinks": ["hook", "siem"], "continue": True}]},
}


@st.composite
def damaged(draw: st.DrawFn) -> Any:
    """A valid config with a few random edits: a value replaced, a key dropped or invented."""
    doc: Any = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(draw(st.integers(1, 4))):
        node, path = doc, []
        while isinstance(node, dict | list) and node and draw(st.integers(0, 3)):
            key = draw(st.sampled_from(sorted(node, key=str) if isinstance(node, dict)
                                       else list(range(len(node)))))
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "drop", "invent"]))
        if action == "replace":
            parent[path[-1]] = draw(documents)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(documents)
    return doc


def check(doc: Any) -> BridgeConfig | None:
    try:
        return parse_config(doc, "<fuzz>", env={})
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert str(exc).startswith("<fuzz>: invalid configuration")
        return None


def test_the_base_config_is_valid() -> None:
    assert check(VALID) is not None


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(documents)
def test_random_documents_give_a_config_or_a_config_error(doc: Any) -> None:
    check(doc)


@FUZZ
@given(damaged())
def test_damaged_configs_give_a_config_or_a_config_error(doc: Any) -> None:
    check(doc)


def run_check_config(text: str | bytes) -> tuple[int, str]:
    """`bridge check-config FILE` in this process: exit code and everything it printed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bridge.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(["check-config", str(path)])
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
    return code, out.getvalue() + err.getvalue()


@FUZZ
@given(st.one_of(damaged(), documents).map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
def test_check_config_exits_2_with_a_message_and_never_a_traceback(text: str) -> None:
    code, output = run_check_config(text)
    assert code in (0, 2), output
    assert "Traceback" not in output
    if code == 2:
        assert "invalid configuration" in output or "YAML syntax" in output, output


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.lists(st.sampled_from(["a:", " b", "- c", ": ", "{", "}", "[", "]", "&x",
                                           "*x", "!!python/object:os.system", "\t", "\n",
                                           "'", '"', "%YAML 1.2", "---", "...", "? "]),
                          max_size=12).map("".join)))
def test_any_bytes_give_a_config_or_a_config_error(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bridge.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        with contextlib.suppress(ConfigError):
            load_config(path, env={})
    code, output = run_check_config(text)
    assert code in (0, 2) and "Traceback" not in output, output


def test_the_real_command_line_on_damaged_files(tmp_path: Path) -> None:
    """A few damaged files through `python -m bridge check-config`, as an operator runs it."""
    samples = [VALID | {"sources": [{"name": "so", "type": "scanorbit", "interval": "often"}]},
               {"sinks": [{"type": "nope"}], "routes": {"sinks": ["missing"]}},
               [1, 2, 3], "just a string"]
    texts = [yaml.safe_dump(s) for s in samples] + ["a: [unclosed\n", "\x00\xff binary",
                                                   "sources: !!python/object:os.system x\n"]
    for n, text in enumerate(texts):
        path = tmp_path / f"bad{n}.yaml"
        path.write_text(text, errors="surrogateescape")
        result = subprocess.run([sys.executable, "-m", "bridge", "check-config", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (text, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        assert result.stderr.startswith(f"{path}: invalid configuration"), result.stderr
