"""Config loading: every error names its YAML path; `${VAR}` expansion; secret files;
`BRIDGE_…` overrides; and the `check-config` / `routes test` commands as an operator runs them."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import (
    MAX_CONFIG_VALUES,
    ConfigError,
    load_config,
    parse_config,
    plaintext_urls,
)
from bridge.net import is_loopback
from bridge.secrets import redact
from bridge.store.memory import MemoryStateConfig, MemoryStore
from bridge.store.sqlite import SQLiteStateConfig, SQLiteStore


def valid(tmp_path: Path) -> dict[str, Any]:
    return {
        "state": {"path": str(tmp_path / "state" / "bridge.db")},
        "log": {"level": "info", "format": "json"},
        "admin": {"enabled": False},
        "sources": [
            {"type": "scanorbit", "name": "so-prod", "api_key": "sk_test_prod_key",
             "interval": 120, "resolve_after_misses": 3},
            {"type": "scanorbit", "name": "so-dev", "api_key": "sk_test_dev_key",
             "tenant": "dev"},
        ],
        "sinks": [
            {"type": "file", "name": "events", "path": str(tmp_path / "events.jsonl")},
            {"type": "stdout", "name": "console", "format": "json"},
            {"type": "webhook", "name": "hook", "url": "https://hooks.example.test/in",
             "max_attempts": 5, "batch_size": 20},
        ],
        "routes": {
            "sinks": ["events"],
            "routes": [
                {"name": "urgent", "match": {"severity": ">= high"}, "sinks": ["hook"],
                 "continue": True},
                {"name": "dev", "match": {"tenant": "dev"}, "sinks": ["console"]},
            ],
        },
    }


def problems_of(data: Any, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data, **kw)
    return err.value.problems


@pytest.fixture(autouse=True)
def _no_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


def test_valid_config_parses(tmp_path: Path) -> None:
    config = parse_config(valid(tmp_path))
    assert [s.name for s in config.sources] == ["so-prod", "so-dev"]
    assert config.sources[0].interval == 120
    assert config.sources[0].api_key.get_secret_value() == "sk_test_prod_key"  # type: ignore[attr-defined]
    assert "sk_test_prod_key" not in repr(config)
    assert config.sink("hook").max_attempts == 5
    assert config.state.path == tmp_path / "state" / "bridge.db"
    assert config.log.format == "json"


def test_empty_file_is_all_defaults() -> None:
    config = parse_config(None)
    assert config.sources == [] and config.sinks == []
    assert config.routes.sinks is None


# -- path-named errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(sourcez=[]), "sourcez: Extra inputs are not permitted"),
        (lambda d: d["sources"][0].update(intervall=60),
         "sources[0].intervall: Extra inputs are not permitted"),
        (lambda d: d["sources"][1].update(interval="often"), "sources[1].interval: "),
        (lambda d: d["sources"][0].update(interval=0.5), "sources[0].interval: "),
        (lambda d: d["sources"][0].pop("api_key"), "sources[0].api_key: Field required"),
        (lambda d: d["sources"][0]["http"].update(retries=3) if "http" in d["sources"][0]
         else d["sources"][0].update(http={"retries": 3}),
         "sources[0].http.retries: Extra inputs are not permitted"),
        (lambda d: d["sinks"][2].update(url="ftp://x"), "sinks[2].url: "),
        (lambda d: d["sinks"][0].update(fsync="always"), "sinks[0].fsync: "),
        (lambda d: d["sinks"][1].update(name="has space"), "sinks[1].name: "),
        (lambda d: d["state"].update(backend="cassandra"), "state.backend: "),
        (lambda d: d["admin"].update(port=70000), "admin.port: "),
        (lambda d: d["routes"].update(sink=["events"]), "routes.sink: Extra inputs"),
    ],
)
def test_errors_name_the_yaml_path(tmp_path: Path, mutate: Any, expected: str) -> None:
    data = valid(tmp_path)
    mutate(data)
    found = problems_of(data)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_unknown_source_type_lists_known_types(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][1]["type"] = "scanorbyt"
    (msg,) = problems_of(data)
    assert msg.startswith("sources[1].type: unknown source type 'scanorbyt'")
    assert "known: " in msg and "scanorbit" in msg.split("known: ")[1]


def test_unknown_sink_type_lists_known_types(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sinks"][0]["type"] = "fil"
    (msg,) = problems_of(data)
    assert msg.startswith("sinks[0].type: unknown sink type 'fil'")
    known = msg.split("known: ")[1].split(", ")
    assert {"file", "stdout", "webhook"} <= set(known)


def test_missing_type_is_named(tmp_path: Path) -> None:
    data = valid(tmp_path)
    del data["sinks"][1]["type"]
    (msg,) = problems_of(data)
    assert msg.startswith("sinks[1].type: required")


def test_duplicate_names(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][1]["name"] = "so-prod"
    data["sinks"][2]["name"] = "events"
    data["routes"] = {"sinks": ["events"]}
    assert problems_of(data) == [
        "sources[1].name: duplicate name 'so-prod'",
        "sinks[2].name: duplicate name 'events'",
    ]


def test_route_referencing_unknown_sink_is_its_only_problem(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["routes"]["routes"][1]["sinks"] = ["consol"]
    assert problems_of(data) == [
        "routes.routes[1].sinks[0]: unknown sink 'consol' (known: console, events, hook)"
    ]


def test_several_unknown_sinks_each_named(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["routes"]["sinks"] = ["nope"]
    data["routes"]["routes"][0]["routes"] = [{"sinks": ["events", "gone"]}]
    found = problems_of(data)
    assert [p.split(":")[0] for p in found] == ["routes.sinks[0]",
                                                "routes.routes[0].routes[0].sinks[1]"]


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][0]["intervall"] = 1
    data["sinks"][0]["pth"] = "x"
    found = problems_of(data)
    assert {p.split(":")[0] for p in found} == {"sources[0].intervall", "sinks[0].pth"}


def test_root_must_be_a_mapping() -> None:
    assert problems_of(["sources"]) == ["<root>: expected a mapping of settings"]


def test_config_error_text_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text("sourcez: []\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}: invalid configuration")
    assert "  sourcez: Extra inputs are not permitted" in text


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text("state:\n  path: x\nsinks: [\n  {name: a\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    (msg,) = err.value.problems
    assert msg.startswith("line 5, column 1: YAML syntax: "), msg


def test_yaml_indentation_error_line(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text("state:\n  path: x\n backend: sqlite\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems[0].startswith("line 3, column 2: YAML syntax:")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "missing.yaml")
    assert err.value.problems == ["<file>: cannot read: No such file or directory"]


# -- ${VAR} expansion --------------------------------------------------------------------------


def test_env_references_are_expanded(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][0]["api_key"] = "${SO_KEY}"
    data["sinks"][2]["url"] = "https://${HOOK_HOST:-hooks.default.test}:${HOOK_PORT:-443}/in"
    data["sinks"][2]["headers"] = {"X-Env": "env=${DEPLOY}"}
    config = parse_config(data, env={"SO_KEY": "from-env", "HOOK_PORT": "8443", "DEPLOY": "prd"})
    assert config.sources[0].api_key.get_secret_value() == "from-env"  # type: ignore[attr-defined]
    hook = config.sink("hook")
    assert hook.url == "https://hooks.default.test:8443/in"  # type: ignore[attr-defined]
    assert hook.headers == {"X-Env": "env=prd"}  # type: ignore[attr-defined]


def test_empty_default_is_allowed(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][0]["tenant"] = "${TENANT:-}"
    assert parse_config(data, env={}).sources[0].tenant == ""


def test_missing_variable_names_its_path(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][1]["api_key"] = "${SO_DEV_KEY}"
    data["sinks"][2]["url"] = "https://${HOOK_HOST}/x"
    assert problems_of(data, env={}) == [
        "sources[1].api_key: environment variable SO_DEV_KEY is not set",
        "sinks[2].url: environment variable HOOK_HOST is not set",
    ]


def test_expansion_reads_the_process_environment_by_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORE_TEST_SO_KEY", "process-env-key")
    path = tmp_path / "bridge.yaml"
    data = valid(tmp_path)
    data["sources"][0]["api_key"] = "${CORE_TEST_SO_KEY}"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert config.sources[0].api_key.get_secret_value() == "process-env-key"  # type: ignore[attr-defined]


def test_values_from_the_environment_are_secrets_wherever_they_sit(tmp_path: Path) -> None:
    """A `headers:` value is a plain string: only its `${…}` origin says it holds a secret."""
    data = valid(tmp_path)
    data["sinks"][2]["headers"] = {"Authorization": "Splunk ${CORE_HEC_TOKEN}",
                                   "X-Region": "${CORE_REGION}", "X-Env": "${CORE_UNSET:-defaulted}"}
    token = "core-hec-" + os.urandom(8).hex()
    config = parse_config(data, env={"CORE_HEC_TOKEN": token, "CORE_REGION": "eu-1"})
    assert config.sink("hook").headers["Authorization"] == f"Splunk {token}"  # type: ignore[attr-defined]
    assert redact(f"receiver said: Splunk {token}") == "receiver said: Splunk ***"
    # Short values are ports, levels and regions, and a default is written in the file itself.
    assert redact("eu-1 defaulted") == "eu-1 defaulted"


def test_environment_values_are_stripped_and_line_breaks_refused(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][0]["api_key"] = "${CORE_KEY}"
    config = parse_config(data, env={"CORE_KEY": "  sk_core_key_123\n"})
    assert config.sources[0].api_key.get_secret_value() == "sk_core_key_123"  # type: ignore[attr-defined]
    assert problems_of(data, env={"CORE_KEY": "sk_core\r\nX-Injected: 1"}) == [
        "sources[0].api_key: environment variable CORE_KEY contains a line break or another "
        "control character"]


@pytest.mark.parametrize("override", [{"BRIDGE_ADMIN__TOKEN": "x"},
                                      {"BRIDGE_ADMIN__TOKEN": "0123456789abcde"}])
def test_a_short_admin_token_from_anywhere_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: dict[str, str]) -> None:
    for name, value in override.items():
        monkeypatch.setenv(name, value)
    (msg,) = problems_of(valid(tmp_path))
    assert msg.startswith("admin.token: too short: at least 16 characters"), msg


def test_admin_connection_bounds(tmp_path: Path) -> None:
    admin = parse_config(valid(tmp_path)).admin
    assert (admin.max_connections, admin.header_timeout, admin.idle_timeout) == (64, 5.0, 5.0)
    data = valid(tmp_path)
    data["admin"].update(max_connections=0, idle_timeout=0, header_timeout=-1)
    assert sorted(p.split(":")[0] for p in problems_of(data)) == [
        "admin.header_timeout", "admin.idle_timeout", "admin.max_connections"]


# -- YAML bounds -------------------------------------------------------------------------------


def load_text(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    return err.value.problems


def test_shared_anchors_are_fine(tmp_path: Path) -> None:
    """Aliases as people use them: one block reused a few times."""
    data = valid(tmp_path)
    text = yaml.safe_dump({k: v for k, v in data.items() if k != "sources"}, sort_keys=False)
    text += ("sources:\n"
             "  - {type: scanorbit, name: a, api_key: sk_a_0123456789, http: &http {timeout: 5}}\n"
             "  - {type: scanorbit, name: b, api_key: sk_b_0123456789, http: *http}\n")
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    config = load_config(path, env={})
    assert [s.http.timeout for s in config.sources] == [5, 5]  # type: ignore[attr-defined]


def test_a_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    """`<<:` merges copy mappings while the document is built: bounded before that."""
    lines = ["m0: &m0 {k: v}"] + [f"m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}, *m{n - 1}, "
                                  f"*m{n - 1}], k{n}: v}}" for n in range(1, 14)]
    (msg,) = load_text(tmp_path, "\n".join(lines) + "\n")
    assert msg.startswith("line ") and f"more than {MAX_CONFIG_VALUES} values" in msg, msg


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    (msg,) = load_text(tmp_path, "state: {}\nx: &x {y: *x}\n")
    assert msg == "line 2, column 4: an alias refers to a node that contains it"


# -- secret files ------------------------------------------------------------------------------


def test_api_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "so.key"
    secret.write_text("sk_from_file_123\n")
    data = valid(tmp_path)
    del data["sources"][0]["api_key"]
    data["sources"][0]["api_key_file"] = str(secret)
    config = parse_config(data)
    assert config.sources[0].api_key.get_secret_value() == "sk_from_file_123"  # type: ignore[attr-defined]


def test_secret_file_path_may_come_from_env(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-abc")
    data = valid(tmp_path)
    data["sinks"][2]["bearer_token_file"] = "${CREDS}/token"
    config = parse_config(data, env={"CREDS": str(tmp_path)})
    assert config.sink("hook").bearer_token.get_secret_value() == "tok-abc"  # type: ignore[attr-defined]


def test_api_key_and_api_key_file_both_set_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "so.key"
    secret.write_text("x")
    data = valid(tmp_path)
    data["sources"][0]["api_key_file"] = str(secret)
    (msg,) = problems_of(data)
    assert msg.startswith("sources[0]: ")
    assert "set either api_key or api_key_file, not both" in msg


@pytest.mark.parametrize(("content", "why"), [
    (b"", "is empty"), (b" \n\t\n", "is empty"), (b"\xff\xfekey", "is not UTF-8 text"),
    (b"key-one\nkey-two\n", "has a line break or another control character inside"),
])
def test_unusable_secret_files_are_config_errors(tmp_path: Path, content: bytes, why: str) -> None:
    secret = tmp_path / "so.key"
    secret.write_bytes(content)
    data = valid(tmp_path)
    del data["sources"][0]["api_key"]
    data["sources"][0]["api_key_file"] = str(secret)
    assert problems_of(data) == [f"sources[0]: api_key_file: {secret} {why}" + (
        " the secret (one secret per file)" if "inside" in why else "")]


def test_a_named_pipe_without_a_writer_does_not_hang(tmp_path: Path) -> None:
    pipe = tmp_path / "so.key"
    os.mkfifo(pipe, 0o600)
    data = valid(tmp_path)
    del data["sources"][0]["api_key"]
    data["sources"][0]["api_key_file"] = str(pipe)
    assert problems_of(data) == [f"sources[0]: api_key_file: {pipe} is empty"]


def test_unreadable_secret_file(tmp_path: Path) -> None:
    data = valid(tmp_path)
    del data["sources"][0]["api_key"]
    data["sources"][0]["api_key_file"] = str(tmp_path / "absent.key")
    (msg,) = problems_of(data)
    assert msg.startswith("sources[0]: api_key_file: cannot read ")
    assert "absent.key" in msg


# -- BRIDGE_ environment overrides -------------------------------------------------------------


def test_environment_overrides_win_over_the_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_STATE__PATH", str(tmp_path / "elsewhere.db"))
    monkeypatch.setenv("BRIDGE_LOG__LEVEL", "debug")
    monkeypatch.setenv("BRIDGE_ADMIN__PORT", "9999")
    config = parse_config(valid(tmp_path))
    assert config.state.path == tmp_path / "elsewhere.db"
    assert config.log.level == "debug"
    assert config.log.format == "json"  # what the env did not mention stays from the file
    assert config.admin.port == 9999
    assert config.admin.enabled is False


def test_invalid_environment_override_names_the_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_LOG__LEVEL", "loud")
    (msg,) = problems_of(valid(tmp_path))
    assert msg.startswith("log.level: ")


def test_parse_does_not_mutate_its_input(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][0]["api_key"] = "${K:-v}"
    before = copy.deepcopy(data)
    parse_config(data, env={})
    assert data == before


# -- plain http:// ----------------------------------------------------------------------------


def test_plaintext_urls_leaving_the_host_are_listed(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][0]["base_url"] = "http://vendor.example.test/api"
    data["sources"][1]["base_url"] = "http://[::1]:8080/api"
    data["sinks"][2]["url"] = "http://localhost:9000/in"
    data["sinks"].append({"type": "webhook", "name": "splunk", "url": "http://10.0.0.5:8088/"})
    assert plaintext_urls(parse_config(data)) == [
        ("so-prod", "sources[0].base_url", "vendor.example.test"),
        ("splunk", "sinks[3].url", "10.0.0.5"),
    ]
    assert plaintext_urls(parse_config(valid(tmp_path))) == []


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("", False), ("10.0.0.5", False),
    ("localhost.example.test", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- the commands ------------------------------------------------------------------------------


def bridge_cmd() -> list[str]:
    script = Path(sys.executable).with_name("bridge")
    if script.exists():
        return [str(script)]
    found = shutil.which("bridge")
    return [found] if found else [sys.executable, "-m", "bridge.cli"]


def run_bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run([*bridge_cmd(), *args], capture_output=True, text=True, timeout=30,
                          env=env, cwd=cwd, check=False)


def write(tmp_path: Path, data: Any, name: str = "bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_check_config_ok_prints_a_summary(tmp_path: Path) -> None:
    path = write(tmp_path, valid(tmp_path))
    proc = run_bridge("check-config", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{path}: OK" in out
    assert "source so-prod (scanorbit): every 120s, resolve after 3 misses" in out
    assert "sink hook (webhook): batch 20, max 5 attempts" in out
    assert "sink events (file)" in out and "sink console (stdout)" in out
    assert "2 top-level routes" in out
    assert "sk_test_prod_key" not in out


def test_check_config_error_exits_2_with_path_and_no_traceback(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["sources"][0]["intervall"] = 60
    data["routes"]["routes"][1]["match"]["severity"] = "hgh"
    path = write(tmp_path, data)
    proc = run_bridge("check-config", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "sources[0].intervall: Extra inputs are not permitted" in proc.stderr
    assert "routes.routes[1].match.severity: severity 'hgh'" in proc.stderr
    assert str(path) in proc.stderr
    assert proc.stdout == ""


def test_check_config_with_config_option_and_yaml_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("sources:\n  - name: x\n   type: scanorbit\n")
    proc = run_bridge("check-config", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "line 3, column 4: YAML syntax" in proc.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    proc = run_bridge("check-config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_routes_test_shows_matches_and_sinks(tmp_path: Path) -> None:
    path = write(tmp_path, valid(tmp_path))
    sample = {"type": "new", "source": "so-dev", "severity": "critical", "tenant": "dev",
              "kind": "finding", "title": "x"}
    proc = run_bridge("routes", "test", "--config", str(path), "--event", json.dumps(sample),
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "MATCH  routes: matches everything" in lines
    assert "MATCH  routes.routes[0] (urgent): severity gte 'high'" in lines
    assert "MATCH  routes.routes[1] (dev): tenant eq 'dev'" in lines
    assert "chosen: routes.routes[0] (urgent), routes.routes[1] (dev)" in lines
    assert lines[-1] == "sinks: hook, console"


def test_routes_test_explains_a_miss(tmp_path: Path) -> None:
    path = write(tmp_path, valid(tmp_path))
    proc = run_bridge("routes", "test", "--config", str(path), "--event",
                      '{"severity": "low", "tenant": "prod"}', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("skip   routes.routes[0] (urgent): severity gte 'high' but severity is 'low'"
            in proc.stdout)
    assert "skip   routes.routes[1] (dev): tenant eq 'dev' but tenant is 'prod'" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "sinks: events"


def test_routes_test_bad_event_json(tmp_path: Path) -> None:
    path = write(tmp_path, valid(tmp_path))
    proc = run_bridge("routes", "test", "--config", str(path), "--event", "{nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("--event: ")
    assert "Traceback" not in proc.stderr


# -- the state backend -------------------------------------------------------------------------


def test_state_defaults_to_sqlite_and_names_its_backend(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data.pop("state")
    config = parse_config(data)
    assert isinstance(config.state, SQLiteStateConfig)
    assert config.state.path == Path("state/bridge.db") and config.state.busy_timeout == 5.0
    assert isinstance(config.state.build(), SQLiteStore)


def test_each_backend_has_its_own_settings(tmp_path: Path) -> None:
    data = valid(tmp_path)
    data["state"] = {"backend": "memory"}
    config = parse_config(data)
    assert isinstance(config.state, MemoryStateConfig)
    assert isinstance(config.state.build(), MemoryStore)
    data["state"] = {"backend": "memory", "path": "x.db"}  # a setting of another backend
    (problem,) = problems_of(data)
    assert problem.startswith("state.memory.path: Extra inputs are not permitted"), problem
    data["state"] = {"backend": "cassandra"}
    assert problems_of(data) == [
        "state.backend: unknown state backend 'cassandra' (known: sqlite, memory, postgres)"]
