"""`bridge check-config --no-env` reads no secret file of the HTTP presets: a CI job has the
config, not `/run/credentials`. The webhook's `signing_secret_files` (a list, one `whsec_`
secret per file) and PagerDuty's `routing_key_file` (a 32-character key) get placeholders of
the shape their settings check, as a `${VAR}` would; without the flag the files are read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import ConfigError, parse_config, parse_config_offline
from tests.support.daemon import run_cli

SINKS: list[dict[str, Any]] = [
    {"name": "hook", "type": "webhook", "url": "https://hooks.example.test/in",
     "signing_secret_files": ["/run/credentials/bridge/whsec-new"]},
    {"name": "pd", "type": "pagerduty", "routing_key_file": "/run/credentials/bridge/pd"}]


def write(tmp_path: Path, sinks: list[dict[str, Any]]) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump({
        "state": {"path": str(tmp_path / "bridge.db")}, "sources": [], "sinks": sinks,
        "routes": {"sinks": [s["name"] for s in sinks]}}, sort_keys=False))
    return path


async def test_signing_secret_files_and_a_routing_key_file_are_not_read(
        tmp_path: Path) -> None:
    # Were they read, each would fail: one is missing, one holds no whsec_ secret, and the
    # routing key file is missing too.
    wrong = tmp_path / "not-a-secret"
    wrong.write_text("this is not a whsec_ secret\n")
    wrong.chmod(0o600)
    path = write(tmp_path, [
        {"name": "hook", "type": "webhook", "url": "https://hooks.example.test/in",
         "signing_secrets": ["whsec_" + "B" * 43 + "="],
         "signing_secret_files": ["/run/credentials/bridge/whsec-new", str(wrong)]},
        {"name": "pd", "type": "pagerduty", "routing_key_file": "/run/credentials/bridge/pd"}])
    code, out, err = await run_cli("check-config", "--no-env", str(path))
    assert code == 0, err
    lines = out.splitlines()
    assert "OK (without the environment: 3 placeholder(s)" in lines[0]
    assert {"  placeholder: sinks[0].signing_secrets[1]: signing_secret_files",
            "  placeholder: sinks[0].signing_secrets[2]: signing_secret_files",
            "  placeholder: sinks[1].routing_key: routing_key_file"} <= set(lines)
    # The inline secret is the config's own and is checked as written, not replaced.
    assert not any("signing_secrets[0]" in line for line in lines)


def test_without_the_flag_the_files_are_read_and_their_faults_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": [], "sinks": SINKS, "routes": {"sinks": ["hook", "pd"]}})
    problems = "\n".join(info.value.problems)
    assert "signing_secret_files[0]: cannot read /run/credentials/bridge/whsec-new" in problems
    assert "routing_key_file: cannot read /run/credentials/bridge/pd" in problems


def test_an_inline_secret_that_is_wrong_is_still_refused_offline() -> None:
    """Placeholders stand in for files, not for what the config itself says."""
    hook = {**SINKS[0], "signing_secrets": ["not-a-whsec-secret"]}
    with pytest.raises(ConfigError) as info:
        parse_config_offline({"sources": [], "sinks": [hook], "routes": {"sinks": ["hook"]}})
    assert [p.split(":")[0] for p in info.value.problems] == ["sinks[0].signing_secrets[0]"]
