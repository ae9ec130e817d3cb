"""`bridge check-config`, as an operator runs it (the real `bridge` process): every template
in the sinks is compiled and rendered against a sample new/changed/resolved/reopened event, so
a typo fails here, naming its YAML path, instead of at the first delivery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.daemon import run_cli

SLACK_URL = "https://hooks.slack.com/services/T0/B0/abcdefghijklmnop"


def write(tmp_path: Path, sinks: list[dict[str, Any]]) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump({"state": {"path": str(tmp_path / "bridge.db")},
                                    "sinks": sinks,
                                    "routes": {"sinks": [s["name"] for s in sinks]}}))
    return path


async def test_check_config_lists_the_templates_it_rendered(tmp_path: Path) -> None:
    path = write(tmp_path, [
        {"name": "soar", "type": "webhook", "url": "https://soar.example/in",
         "body_template": '{"t": {{ title | tojson }}, "k": {{ type | tojson }}}'},
        {"name": "chat", "type": "slack", "webhook_url": SLACK_URL,
         "console_links": {"scanorbit": "https://c.example/f/{{ key | urlencode }}",
                           "ayliea": "https://a.example/{{ attributes.id | default('') }}"}},
        {"name": "plain", "type": "webhook", "url": "https://plain.example/in"}])
    code, out, err = await run_cli("check-config", str(path))
    assert code == 0, err
    lines = out.splitlines()
    assert ("    templates body_template: rendered for a sample "
            "new/changed/resolved/reopened event") in lines
    assert ("    templates console_links.ayliea, console_links.scanorbit: rendered for a "
            "sample new/changed/resolved/reopened event") in lines
    assert sum("templates" in line for line in lines) == 2  # `plain` has none
    assert SLACK_URL not in out + err


async def test_a_template_typo_fails_check_config_naming_its_place(tmp_path: Path) -> None:
    path = write(tmp_path, [{"name": "chat", "type": "slack", "webhook_url": SLACK_URL,
                             "console_links": {"scanorbit": "https://c/{{ item_uidd }}"}}])
    code, out, err = await run_cli("check-config", str(path))
    assert code == 2 and out == ""
    assert "sinks[0].console_links" in err and "'item_uidd' is undefined" in err
    assert "new/changed/resolved/reopened" in err
    assert SLACK_URL not in err
