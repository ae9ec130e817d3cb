"""The embedded demo runs all three vendors against their simulators."""

from __future__ import annotations

import yaml

from bridge.config import parse_config
from bridge.demo import _tenant_keys, demo_yaml
from bridge.sim.demo import seed_demo_worlds


def test_demo_config_has_every_vendor_and_both_aether365_tenants() -> None:
    worlds = seed_demo_worlds()
    env = {"BRIDGE_DEMO_STATE_DIR": "/tmp/demo", "BRIDGE_DEMO_SCANORBIT_URL": "http://sim",
           "BRIDGE_DEMO_SCANORBIT_KEY": worlds.scanorbit_key,
           "BRIDGE_DEMO_AETHER365_URL": "http://sim", "BRIDGE_DEMO_AYLIEA_URL": "http://sim",
           "BRIDGE_DEMO_AYLIEA_KEY": worlds.ayliea_key, **_tenant_keys(worlds)}
    config = parse_config(yaml.safe_load(demo_yaml()), "demo.yaml", env)
    assert [s.type for s in config.sources] == ["scanorbit", "aether365", "ayliea"]
    aether = config.sources[1]
    keys = {t.name: t.api_key.get_secret_value() for t in aether.tenants}  # type: ignore[attr-defined]
    assert set(keys.values()) == set(worlds.aether365_tokens)
    assert set(keys) == {"contoso", "fabrikam"}
