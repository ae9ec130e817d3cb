"""Paths and external-tool handling shared by the deploy tests."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def _readme_installs(package: str) -> bool:
    readme = REPO / "README.md"
    if not readme.exists():
        return False
    name = re.escape(package)
    pattern = re.compile(rf"(apt-get|apt|pip)\s+install[^\n]*(?<![\w.-]){name}(?![\w.-])")
    text = readme.read_text(encoding="utf-8").replace("\\\n", " ")  # join continued lines
    return pattern.search(text) is not None


def require_tool(tool: str, package: str) -> str:
    """Path of `tool`, or skip. Under CI it is a failure instead when README.md installs
    `package` (Debian or PyPI), because then its absence is a broken setup, not a choice."""
    found = shutil.which(tool)
    if found:
        return found
    if os.environ.get("CI") == "true" and _readme_installs(package):
        pytest.fail(f"{tool} is missing although README.md installs {package}")
    pytest.skip(f"{tool} not installed (package {package})")
