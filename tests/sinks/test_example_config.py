"""The example config documents the webhook options and the Slack, Teams and PagerDuty presets
as commented sections (they need secrets a newcomer does not have). Commented text is not
validated by loading the file, so this test uncomments them and validates them: the
documentation cannot drift from what the config accepts."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import yaml

from bridge.config import parse_config
from bridge.sinks.jira import JiraSinkConfig
from bridge.sinks.pagerduty import PagerDutySinkConfig
from bridge.sinks.slack import SlackSinkConfig
from bridge.sinks.teams import TeamsSinkConfig
from bridge.sinks.webhook import WebhookSinkConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "bridge.example.yaml"
WHSEC = "whsec_" + base64.b64encode(bytes(range(32))).decode()
ENV = {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/abcdefghijkl",
       "TEAMS_WORKFLOW_URL": "https://x.logic.azure.com/workflows/1?sig=abcdefghijklmnopqrst",
       "PAGERDUTY_ROUTING_KEY": "R" + "0" * 31, "SOAR_TOKEN": "soar-token-0123456789",
       "SOAR_PASSWORD": "soar-password-0123", "SOAR_API_KEY": "soar-api-key-0123",
       "SOAR_WEBHOOK_SECRET": WHSEC, "SOAR_WEBHOOK_SECRET_OLD": WHSEC,
       "JIRA_API_TOKEN": "jira-api-token-0123456789"}


def commented_sinks(text: str) -> list[dict[str, Any]]:
    """Every commented `  # - name: …` sink block, uncommented and parsed."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("  # - name:"):
            blocks.append([])
        elif not (blocks and line.startswith("  #   ")):
            if blocks and blocks[-1] and blocks[-1][-1] != "":
                blocks[-1].append("")  # the block ended
            continue
        if blocks[-1] and blocks[-1][-1] == "":
            continue
        blocks[-1].append("  " + line[4:])
    return [yaml.safe_load("\n".join(block))[0] for block in blocks]


def soar_options(text: str) -> dict[str, Any]:
    """The commented options inside the active `soar` webhook, uncommented (the file-based
    alternatives left out: those files do not exist here)."""
    section = text.split("  - name: soar\n", 1)[1].split("\n\n", 1)[0]
    lines = [ln[:4] + ln[6:] for ln in section.splitlines()
             if re.match(r"^    # ([a-z_]+: |                 )", ln)]
    options = yaml.safe_load("\n".join(lines))
    return {k: v for k, v in options.items() if not k.endswith("_files")
            and k not in ("client_cert", "ca_bundle")}


def expand(node: Any) -> Any:
    if isinstance(node, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: ENV[m.group(1)], node)
    if isinstance(node, dict):
        return {k: expand(v) for k, v in node.items()}
    if isinstance(node, list):
        return [expand(v) for v in node]
    return node


def test_the_commented_presets_validate() -> None:
    sinks = commented_sinks(EXAMPLE.read_text())
    assert [s["type"] for s in sinks] == ["slack", "teams", "pagerduty", "jira"]
    config = parse_config({"sinks": sinks}, env=ENV)
    slack, teams, pagerduty, jira = config.sinks
    assert isinstance(slack, SlackSinkConfig) and slack.group_by == ["source", "severity"]
    assert isinstance(teams, TeamsSinkConfig) and teams.max_events_per_minute == 60
    assert isinstance(pagerduty, PagerDutySinkConfig)
    assert pagerduty.max_events_per_minute is None
    assert isinstance(jira, JiraSinkConfig) and jira.project == "SEC"


def test_the_commented_webhook_options_validate() -> None:
    options = soar_options(EXAMPLE.read_text())
    assert {"signing_secrets", "body_template", "headers", "content_type"} <= set(options)
    config = parse_config(expand({"sinks": [{
        "name": "soar", "type": "webhook", "url": "https://soar.example.internal/hooks/bridge",
        **options}]}))
    (hook,) = config.sinks
    assert isinstance(hook, WebhookSinkConfig) and len(hook.signing_secrets) == 2


def test_check_config_offline_stands_in_for_signing_secrets_and_routing_keys() -> None:
    """`bridge check-config --no-env` puts a placeholder where `${VAR}` stands; the webhook's
    whsec_ secrets and PagerDuty's 32-character key have a shape, and a placeholder of it."""
    from bridge.config import parse_config_offline

    checked = parse_config_offline({"sinks": [
        {"name": "hook", "type": "webhook", "url": "https://h.example/in",
         "signing_secrets": ["${WHSEC_NEW}", "${WHSEC_OLD}"]},
        {"name": "pd", "type": "pagerduty", "routing_key": "${PD_KEY}"},
        {"name": "chat", "type": "slack", "webhook_url": "${SLACK_URL}"}]})
    assert set(checked.placeholders) == {
        "sinks[0].signing_secrets[0]: ${WHSEC_NEW}", "sinks[0].signing_secrets[1]: ${WHSEC_OLD}",
        "sinks[1].routing_key: ${PD_KEY}", "sinks[2].webhook_url: ${SLACK_URL}"}
