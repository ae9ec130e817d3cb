"""`bridge check-config --no-env`: a config validated where its secrets are not (a CI job), as
an operator runs it: the real `bridge` process, with and without the flag."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tests.support.daemon import run_cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "bridge.example.yaml"
EXAMPLE_VARIABLES = ("SCANORBIT_API_KEY", "AETHER365_CONTOSO_TOKEN", "AETHER365_FABRIKAM_TOKEN",
                     "AYLIEA_API_KEY", "SOAR_TOKEN")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CI job: none of the example's secrets, no BRIDGE_ overrides."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BRIDGE_") and k not in EXAMPLE_VARIABLES}
    return {**env, **extra}


async def check(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`bridge check-config ARGS` in a child whose environment is exactly `env`."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env if env is not None else clean_env())
    try:
        return await run_cli("check-config", *args)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def config(tmp_path: Path, **sink: Any) -> dict[str, Any]:
    return {
        "state": {"path": str(tmp_path / "bridge.db")},
        "sources": [{"name": "so", "type": "scanorbit", "api_key": "${SO_KEY}"}],
        "sinks": [{"name": "hook", "type": "webhook", "url": "https://hooks.example.test/in",
                   **sink}],
        "routes": {"sinks": ["hook"]},
    }


async def test_the_example_config_validates_without_its_secrets() -> None:
    code, out, err = await check("--no-env", str(EXAMPLE))
    assert code == 0, err
    assert out.startswith(f"{EXAMPLE}: OK (without the environment: 5 placeholder(s)")
    for place in ("sources[0].api_key: ${SCANORBIT_API_KEY}",
                  "sources[1].tenants[0].api_key: ${AETHER365_CONTOSO_TOKEN}",
                  "sources[1].tenants[1].api_key: ${AETHER365_FABRIKAM_TOKEN}",
                  "sources[2].api_key: ${AYLIEA_API_KEY}", "sinks[1].bearer_token: ${SOAR_TOKEN}"):
        assert f"  placeholder: {place}" in out.splitlines()
    assert "sink soar (webhook)" in out and "source aether365 (aether365)" in out


async def test_without_the_flag_missing_variables_stay_errors() -> None:
    code, out, err = await check(str(EXAMPLE))
    assert code == 2 and out == ""
    assert "sources[0].api_key: environment variable SCANORBIT_API_KEY is not set" in err
    assert "sinks[1].bearer_token: environment variable SOAR_TOKEN is not set" in err


async def test_the_environment_is_not_read_even_when_it_has_the_variables(
        tmp_path: Path) -> None:
    """Offline means offline: a CI runner that happens to hold a variable, or a BRIDGE_
    override, must get the same verdict as one that does not."""
    path = write(tmp_path, config(tmp_path))
    env = clean_env(SO_KEY="sk_live_real_key_0123456789", BRIDGE_LOG__LEVEL="shouting")
    code, out, err = await check("--no-env", str(path), env=env)
    assert code == 0, err
    assert "placeholder: sources[0].api_key: ${SO_KEY}" in out
    assert "sk_live_real_key" not in out
    code, _, err = await check(str(path), env=env)  # the override is read without the flag
    assert code == 2 and "log.level" in err


async def test_a_secret_file_is_not_read(tmp_path: Path) -> None:
    path = write(tmp_path, config(tmp_path, bearer_token_file="/run/credentials/bridge/hook"))
    code, _, err = await check(str(path), env=clean_env(SO_KEY="sk_test_0123456789"))
    assert code == 2 and "bearer_token_file: cannot read /run/credentials/bridge/hook" in err
    code, out, err = await check("--no-env", str(path))
    assert code == 0, err
    assert "placeholder: sinks[0].bearer_token: bearer_token_file" in out.splitlines()[2]


async def test_a_placeholder_takes_the_shape_its_setting_needs(tmp_path: Path) -> None:
    """A Slack-style secret URL and a secret port validate as a URL and a number."""
    data = config(tmp_path)
    data["sinks"][0]["url"] = "${HOOK_URL}"
    data["admin"] = {"port": "${ADMIN_PORT}", "token": "${ADMIN_TOKEN}"}
    code, out, err = await check("--no-env", str(write(tmp_path, data)))
    assert code == 0, err
    assert "placeholder: sinks[0].url: ${HOOK_URL}" in out
    assert "placeholder: admin.port: ${ADMIN_PORT}" in out
    assert "placeholder: admin.token: ${ADMIN_TOKEN}" in out


async def test_a_default_is_used_as_written(tmp_path: Path) -> None:
    data = config(tmp_path)
    data["sinks"][0]["timeout"] = "${HOOK_TIMEOUT:-not-a-number}"
    code, _, err = await check("--no-env", str(write(tmp_path, data)))
    assert code == 2
    assert "sinks[0].timeout: Input should be a valid number" in err
    assert "placeholder" not in err  # the file's own default, not a stand-in, is wrong


async def test_structure_routes_and_matchers_are_still_checked(tmp_path: Path) -> None:
    data = config(tmp_path)
    data["sinks"][0]["protocol"] = "${PROTO}"
    data["routes"]["routes"] = [{"match": {"title": "=~ (unclosed"}},
                                {"match": {"severity": ">= urgent"}}]
    code, out, err = await check("--no-env", str(write(tmp_path, data)))
    assert code == 2 and out == "" and "Traceback" not in err
    assert "routes.routes[0].match.title" in err and "invalid regex" in err
    assert "routes.routes[1].match.severity: severity 'urgent'" in err
    # An unknown key stays an error even when its value is a variable.
    assert "sinks[0].protocol: Extra inputs are not permitted" in err


async def test_routes_naming_unknown_sinks_are_refused(tmp_path: Path) -> None:
    data = config(tmp_path)
    data["routes"]["routes"] = [{"match": {"severity": ">= high"}, "sinks": ["nowhere"]}]
    code, _, err = await check("--no-env", str(write(tmp_path, data)))
    assert code == 2
    assert "routes.routes[0].sinks[0]: unknown sink 'nowhere' (known: hook)" in err


async def test_a_setting_no_placeholder_fits_names_its_variable(tmp_path: Path) -> None:
    data = config(tmp_path)
    data["sinks"][0]["redirects"] = "${REDIRECTS}"  # one of two words: no stand-in can know
    code, _, err = await check("--no-env", str(write(tmp_path, data)))
    assert code == 2
    assert "sinks[0].redirects: Input should be 'refuse' or 'same_origin' (checked with a " \
           "placeholder for ${REDIRECTS})" in err
