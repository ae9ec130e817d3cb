"""Paths and external-tool handling shared by the deploy tests."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def installed_by_project(package: str) -> bool:
    """True when README.md's install commands (apt-get/pip) or the `test` extra name it."""
    name = re.escape(package)
    readme = REPO / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8").replace("\\\n", " ")  # join continued lines
        pattern = rf"(apt-get|apt|pip)\s+install[^\n]*(?<![\w.-]){name}(?![\w.-])"
        if re.search(pattern, text):
            return True
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project.get("optional-dependencies", {}).get("test", [])
    return any(re.match(rf"{name}(?![\w.-])", req, re.IGNORECASE) for req in extra)


def require_tool(tool: str, package: str) -> str:
    """Path of `tool`, or skip outside CI. Under CI=true a missing tool is a failure: the
    project installs `package` (Debian or PyPI) or the machine image ships it (kubectl), so
    its absence there is a broken setup, not a choice."""
    # pip puts a package's programs next to the interpreter (the venv's bin), which the
    # README's `.venv/bin/python -m pytest` does not put on PATH.
    found = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if found:
        return found
    if os.environ.get("CI") == "true":
        how = "the project installs" if installed_by_project(package) else "the machine image ships"
        pytest.fail(f"{tool} is missing although {how} {package}")
    pytest.skip(f"{tool} not installed (package {package})")
