"""deploy/kubernetes-postgres: the overlay for N replicas against PostgreSQL builds with
`kubectl kustomize` next to the SQLite StatefulSet base (still the default), and what it renders
agrees with itself and with bridge's config schema."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.store.postgres import PostgresStateConfig
from tests.ops._support import DEPLOY, require_tool


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", "kubectl")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    docs = render(DEPLOY / "kubernetes-postgres")
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service",
                             "ServiceAccount"]  # no StatefulSet, no volume claim
    return {d["kind"]: d for d in docs}


def test_the_sqlite_statefulset_stays_the_default() -> None:
    (sts,) = [d for d in render(DEPLOY / "kubernetes") if d["kind"] == "StatefulSet"]
    assert sts["spec"]["replicas"] == 1


def test_n_replicas_with_the_dsn_from_a_secret_and_a_disruption_budget(
        rendered: dict[str, dict[str, Any]]) -> None:
    deployment, pdb = rendered["Deployment"], rendered["PodDisruptionBudget"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["postgres"]["secret"]["secretName"] == "bridge-postgres"
    assert "state" not in mounts and "BRIDGE_STATE__PATH" not in {e["name"]
                                                                   for e in container["env"]}
    state = yaml.safe_load(rendered["ConfigMap"]["data"]["bridge.yaml"])["state"]
    assert state["backend"] == "postgres"
    assert Path(state["dsn_file"]).parent == Path(mounts["postgres"])


def test_the_overlay_config_is_the_base_config_with_a_shared_state(
        rendered: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    overlay = yaml.safe_load(rendered["ConfigMap"]["data"]["bridge.yaml"])
    (base_map,) = [d for d in render(DEPLOY / "kubernetes") if d["kind"] == "ConfigMap"]
    base = yaml.safe_load(base_map["data"]["bridge.yaml"])
    assert {k: v for k, v in overlay.items() if k != "state"} == {
        k: v for k, v in base.items() if k != "state"}  # the two copies have not drifted
    dsn = tmp_path / "dsn"
    dsn.write_text("postgresql://bridge:pw@postgres.example:5432/bridge\n")
    dsn.chmod(0o600)
    state = dict(overlay["state"], dsn_file=str(dsn))
    config = parse_config({"state": state, "sinks": [], "sources": []}, "bridge.yaml")
    assert isinstance(config.state, PostgresStateConfig) and config.state.lease == 15
