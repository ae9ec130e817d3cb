"""The repository's promises to a newcomer: the examples validate, the demo config is the one
the demo runs, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_validates() -> None:
    env = {"SCANORBIT_API_KEY": "sk_live_fake", "SOAR_TOKEN": "fake-token",
           "AETHER365_CONTOSO_TOKEN": "ae_live_fake", "AETHER365_FABRIKAM_TOKEN": "ae_live_fake2",
           "AYLIEA_API_KEY": "ayliea_pk_fake"}
    config = load_config(ROOT / "config" / "bridge.example.yaml", env=env)
    assert {s.name for s in config.sinks} >= {"siem", "soar", "archive"}
    assert config.sources and config.routes.routes


def test_example_config_holds_no_literal_secrets() -> None:
    text = (ROOT / "config" / "bridge.example.yaml").read_text()
    for line in text.splitlines():
        if re.search(r"^\s*(api_key|bearer_token|token|password|secret)\s*:", line):
            assert "${" in line, line


def test_config_demo_is_the_packaged_demo() -> None:
    assert (ROOT / "config" / "demo.yaml").read_bytes() == (ROOT / "bridge" / "demo.yaml").read_bytes()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command.strip() in [line.strip() for line in ci]
