"""Hostile or careless configs against the real command line and the real daemon (issue 15,
point 10). Each case once ended in a traceback, a stalled daemon, a runaway process or a
silent acceptance; now each is a config error that names the place (or, for plain http://,
a warning naming the component), and the daemon keeps running whatever SIGHUP brings."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.security._daemon import Vendor, daemon_config, running, scanorbit
from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.timeout(120)

MEMORY_LIMIT = 1 << 30  # the alias bomb once took more than this; a config check needs far less
# 9 anchors, each a list of 9 references to the one before: ~400 bytes asking for 9**9 values.
ALIAS_BOMB = "".join(
    [f"a0: &a0 [{','.join(['lol'] * 9)}]\n"]
    + [f"a{n}: &a{n} [{','.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 9)]
)


async def bridge(*args: str, env: dict[str, str] | None = None,
                 timeout: float = 20.0) -> tuple[int, str]:
    """`python -m bridge ARGS` under a 1 GiB address-space limit, killed after `timeout`:
    (exit code, stdout + stderr). The limit keeps a regression (an alias bomb expanded, a
    secret file read without bound) from eating the machine instead of failing the test.
    It runs in the directory of the last argument (the config file), as an operator would,
    not in the repository, whose `bridge/` would shadow the installed package."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, **(env or {})},
        preexec_fn=limit_memory, cwd=Path(args[-1]).parent)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"bridge {' '.join(args)} still running after {timeout}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def write(path: Path, config: dict[str, Any], extra: str = "") -> Path:
    path.write_text(yaml.safe_dump(config) + extra)
    return path


def refused(code: int, output: str, *expected: str) -> None:
    """Exit 2, each expected text in the output, and no traceback."""
    assert code == 2, output
    assert "Traceback" not in output, output
    for text in expected:
        assert text in output, output


@pytest.fixture
async def vendor() -> AsyncIterator[Vendor]:
    async with scanorbit() as running_vendor:
        yield running_vendor


# -- YAML: alias bombs, cycles, depth ------------------------------------------------------------


async def test_an_alias_bomb_is_refused_in_moments(tmp_path: Path, vendor: Vendor) -> None:
    assert len(ALIAS_BOMB) < 450
    path = write(tmp_path / "bomb.yaml", daemon_config(tmp_path, vendor), ALIAS_BOMB)
    started = time.monotonic()
    for command in ("check-config", "run"):
        code, output = await bridge(command, "--config", str(path))
        refused(code, output, f"{path}: invalid configuration",
                "aliases expand this document to more than 100000 values")
    assert time.monotonic() - started < 15


async def test_a_self_referencing_alias_and_absurd_nesting_are_config_errors(
        tmp_path: Path, vendor: Vendor) -> None:
    config = daemon_config(tmp_path, vendor)
    cycle = write(tmp_path / "cycle.yaml", config, "loop: &loop [1, *loop]\n")
    refused(*await bridge("check-config", str(cycle)), "line ",
            "an alias refers to a node that contains it")
    deep = write(tmp_path / "deep.yaml", config, "deep: " + "[" * 5000 + "]" * 5000 + "\n")
    refused(*await bridge("check-config", str(deep)), "nested more than 64 levels")
    shallow = write(tmp_path / "shallow.yaml", config, "deep: " + "[" * 60 + "]" * 60 + "\n")
    refused(*await bridge("check-config", str(shallow)), "deep: Extra inputs are not permitted")


async def healthz_seconds(base: str) -> float:
    """Seconds for one `/healthz` answered 200 on a fresh connection."""
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
            http.get(f"{base}/healthz") as resp:
        assert resp.status == 200, await resp.text()
    return time.monotonic() - started


async def test_sighup_with_an_alias_bomb_is_rejected_and_the_daemon_runs_on(
        tmp_path: Path, vendor: Vendor) -> None:
    config = daemon_config(tmp_path, vendor)
    async with running(DaemonProcess(config, tmp_path)) as daemon:
        base = await daemon.admin_url()
        mark = daemon.mark()
        write(daemon.config_path, config, ALIAS_BOMB)
        daemon.signal(signal.SIGHUP)
        line = await daemon.wait_log("reload_rejected", timeout=10, since=mark)
        assert any("aliases expand this document" in p for p in line["problems"]), line
        assert await healthz_seconds(base) < 1
        assert await daemon.stop() == 0


async def test_a_reload_is_parsed_off_the_event_loop(tmp_path: Path, vendor: Vendor) -> None:
    """A valid but slow file (6 MB of comment take PyYAML about two seconds): /healthz answers
    all the while. Parsed on the loop, it stalled every probe for the whole parse."""
    config = daemon_config(tmp_path, vendor)
    async with running(DaemonProcess(config, tmp_path)) as daemon:
        base = await daemon.admin_url()
        mark = daemon.mark()
        config["sources"][0]["interval"] = 1800
        daemon.config_path.write_text("# " + "x" * 6_000_000 + "\n" + yaml.safe_dump(config))
        daemon.signal(signal.SIGHUP)
        probes: list[float] = []
        deadline = time.monotonic() + 30
        while not any(ln.get("event") == "config_reloaded" for ln in daemon.log_lines(mark)):
            assert time.monotonic() < deadline, f"no config_reloaded within 30 s: {probes}"
            probes.append(await asyncio.wait_for(healthz_seconds(base), 5))
        assert len(probes) >= 3, probes  # probes really ran while the file was parsed
        assert max(probes) < 1.0, probes
        assert await daemon.stop() == 0


# -- secret files --------------------------------------------------------------------------------


def with_key_file(tmp_path: Path, vendor: Vendor, key_file: str | Path) -> Path:
    config = daemon_config(tmp_path, vendor)
    del config["sources"][0]["api_key"]
    config["sources"][0]["api_key_file"] = str(key_file)
    return write(tmp_path / "bridge.yaml", config)


async def test_a_secret_file_that_never_ends_is_a_config_error(
        tmp_path: Path, vendor: Vendor) -> None:
    """`api_key_file: /dev/zero` read until a MemoryError traceback."""
    refused(*await bridge("check-config", str(with_key_file(tmp_path, vendor, "/dev/zero"))),
            "sources[0]: api_key_file: /dev/zero ")
    big = tmp_path / "huge.key"
    big.write_bytes(b"k" * (1 << 20))
    big.chmod(0o600)
    refused(*await bridge("check-config", str(with_key_file(tmp_path, vendor, big))),
            f"sources[0]: api_key_file: {big} is larger than 64 KiB")


async def test_a_world_writable_secret_file_is_refused(tmp_path: Path, vendor: Vendor) -> None:
    key_file = tmp_path / "so.key"
    key_file.write_text(vendor.key + "\n")
    key_file.chmod(0o666)
    path = with_key_file(tmp_path, vendor, key_file)
    refused(*await bridge("check-config", str(path)),
            f"sources[0]: api_key_file: {key_file} is writable by every user (mode 0666)")
    key_file.chmod(0o640)
    code, output = await bridge("check-config", str(path))
    assert code == 0, output


# -- the admin token -----------------------------------------------------------------------------


async def test_a_short_admin_token_is_a_config_error(tmp_path: Path, vendor: Vendor) -> None:
    config = daemon_config(tmp_path, vendor)
    config["admin"]["token"] = "x"
    refused(*await bridge("check-config", str(write(tmp_path / "a.yaml", config))),
            "admin.token: too short: at least 16 characters")
    config["admin"]["token"] = "${ADMIN_TOKEN}"
    path = write(tmp_path / "b.yaml", config)
    refused(*await bridge("run", "--config", str(path), env={"ADMIN_TOKEN": "short-token"}),
            "admin.token: too short")
    code, output = await bridge("check-config", str(path), env={"ADMIN_TOKEN": "a" * 16})
    assert code == 0, output


# -- stray newlines in keys ----------------------------------------------------------------------


async def test_a_key_with_a_trailing_newline_still_sweeps(tmp_path: Path, vendor: Vendor) -> None:
    """The Kubernetes Secret made with `echo key | base64`: the variable ends in a newline,
    which no header can carry. It crashed every sweep with a traceback; now it is stripped."""
    vendor.world.add_finding()
    config = daemon_config(tmp_path, vendor, api_key="${SO_KEY}")
    env = {"SO_KEY": vendor.key + "\n"}
    async with running(DaemonProcess(config, tmp_path, env=env)) as daemon:
        line = await daemon.wait_log("sweep_done")
        assert line["outcome"] == "complete" and line["events"] == 1, line
        assert await daemon.stop() == 0
    assert "Traceback" not in daemon.logs()


async def test_a_line_break_inside_a_key_is_a_config_error_naming_it(
        tmp_path: Path, vendor: Vendor) -> None:
    config = daemon_config(tmp_path, vendor, api_key="${SO_KEY}")
    path = write(tmp_path / "env.yaml", config)
    refused(*await bridge("check-config", str(path), env={"SO_KEY": "sk_live_a\nsk_live_b"}),
            "sources[0].api_key: environment variable SO_KEY contains a line break")
    config["sources"][0]["api_key"] = vendor.key + "\n"  # a literal, as YAML `|` blocks give
    refused(*await bridge("check-config", str(write(tmp_path / "literal.yaml", config))),
            "sources[0].api_key: the secret has surrounding whitespace")


# -- plain http:// -------------------------------------------------------------------------------


async def test_plain_http_urls_are_warned_about_naming_the_component(
        tmp_path: Path, vendor: Vendor) -> None:
    """Off-host http:// (the vendor key or webhook token would cross the network in clear)
    is a warning in `check-config` and at startup; loopback URLs, like this test's
    simulator, are not."""
    config = daemon_config(tmp_path, vendor)
    config["sinks"].append({"name": "hook", "type": "webhook",
                            "url": "http://192.0.2.10:8080/hook"})  # TEST-NET: never reached
    config["routes"] = {"sinks": ["events"]}
    path = write(tmp_path / "bridge.yaml", config)
    code, output = await bridge("check-config", str(path))
    assert code == 0, output
    warnings = [ln for ln in output.splitlines() if ln.startswith("warning:")]
    assert warnings == ["warning: hook (sinks[1].url): plain http:// to 192.0.2.10: credentials "
                        "and findings would cross the network unencrypted; use https://"]

    config["sources"][0]["base_url"] = vendor.url.replace("127.0.0.1", "localhost")
    remote = dict(config["sources"][0], name="remote", base_url="http://vendor.example.test/api")
    config["sources"].append(remote)
    code, output = await bridge("check-config", str(write(tmp_path / "two.yaml", config)))
    assert code == 0, output
    assert "warning: remote (sources[1].base_url): plain http:// to vendor.example.test" in output

    async with running(DaemonProcess(json.loads(json.dumps(config)), tmp_path)) as daemon:
        await daemon.wait_log("daemon_started")
        loud = [ln for ln in daemon.log_lines() if ln.get("event") == "plaintext_http"]
        assert sorted((ln["component"], ln["setting"], ln["level"]) for ln in loud) == [
            ("hook", "sinks[1].url", "warning"), ("remote", "sources[1].base_url", "warning")]
        assert await daemon.stop() == 0
