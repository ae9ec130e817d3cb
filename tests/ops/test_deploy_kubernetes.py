"""deploy/kubernetes: a kustomize base whose pieces agree with each other, with the image and
with bridge's config schema; rendered with `kubectl kustomize` where kubectl exists."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from bridge.admin import AdminConfig, AdminServer
from bridge.config import parse_config
from bridge.health import Health
from bridge.plugins import SINK_GROUP, SOURCE_GROUP, sink_types, source_types

from ._support import DEPLOY, require_tool

K8S = DEPLOY / "kubernetes"
OPTIONAL = {"secret.example.yaml", "servicemonitor.yaml"}


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]


def only(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in load(name) if d["kind"] == kind]
    assert len(found) == 1, f"{name}: expected one {kind}"
    return found[0]


@pytest.fixture(scope="module")
def sts() -> dict[str, Any]:
    return only("statefulset.yaml", "StatefulSet")


@pytest.fixture(scope="module")
def container(sts: dict[str, Any]) -> dict[str, Any]:
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return dict(c)


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    return only("secret.example.yaml", "Secret")


@pytest.fixture(scope="module")
def configmap() -> dict[str, Any]:
    return only("configmap.yaml", "ConfigMap")


@pytest.fixture(scope="module")
def bridge_yaml(configmap: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(configmap["data"]["bridge.yaml"])
    return data


def mount(container: dict[str, Any], volume: str) -> dict[str, Any]:
    (m,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    return dict(m)


def test_every_manifest_parses_and_kustomization_lists_them() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    resources = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert resources == files - OPTIONAL, "every manifest but the optional ones is in the base"
    kinds = set()
    for name in files:
        for doc in load(name):
            assert doc["apiVersion"] and doc["metadata"]["name"], name
            kinds.add(doc["kind"])
    assert kinds == {"ServiceAccount", "ConfigMap", "Service", "StatefulSet", "Secret",
                     "ServiceMonitor"}


def test_single_replica_on_a_volume(sts: dict[str, Any], container: dict[str, Any],
                                    bridge_yaml: dict[str, Any]) -> None:
    spec = sts["spec"]
    assert spec["replicas"] == 1
    assert spec["serviceName"] == only("service.yaml", "Service")["metadata"]["name"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    state_dir = PurePosixPath(bridge_yaml["state"]["path"]).parent
    assert mount(container, claim["metadata"]["name"])["mountPath"] == str(state_dir)
    env = {e["name"]: e for e in container["env"]}
    assert env["BRIDGE_STATE__PATH"]["value"] == bridge_yaml["state"]["path"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert only("service.yaml", "Service")["spec"]["selector"].items() <= labels.items()


def test_security_context(sts: dict[str, Any], container: dict[str, Any]) -> None:
    pod = sts["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001  # the image's USER
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    csc = container["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["runAsNonRoot"] is True
    assert csc["capabilities"]["drop"] == ["ALL"] and "add" not in csc["capabilities"]
    tmp = [v for v in pod["volumes"] if v["name"] == mount(container, "tmp")["name"]]
    assert mount(container, "tmp")["mountPath"] == "/tmp" and "emptyDir" in tmp[0]


def test_probes_hit_the_admin_endpoints(container: dict[str, Any],
                                        bridge_yaml: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == bridge_yaml["admin"]["port"] == 9108
    for probe in ("livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] == "admin", probe
    command = " ".join(container["readinessProbe"]["exec"]["command"])
    assert "http://127.0.0.1:9108/readyz" in command and "ADMIN_TOKEN" in command


def test_resources(container: dict[str, Any]) -> None:
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), bound


def test_admin_exposed_only_with_a_token(container: dict[str, Any], secret: dict[str, Any],
                                         bridge_yaml: dict[str, Any]) -> None:
    admin = bridge_yaml["admin"]
    assert admin["host"] == "0.0.0.0" and admin["token"] == "${ADMIN_TOKEN}"
    ref = {e["name"]: e for e in container["env"]}["ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]


def test_config_and_secret_files_line_up(sts: dict[str, Any], container: dict[str, Any],
                                         configmap: dict[str, Any], secret: dict[str, Any],
                                         bridge_yaml: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    config_mount = mount(container, "config")
    assert "subPath" not in config_mount  # subPath mounts never see ConfigMap updates
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    args = container["args"]
    config_path = PurePosixPath(args[args.index("--config") + 1])
    assert str(config_path.parent) == config_mount["mountPath"]
    assert config_path.name in configmap["data"]

    secrets_dir = mount(container, "secrets")["mountPath"]
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
    file_refs = [
        value for entry in bridge_yaml["sources"] + bridge_yaml["sinks"]
        for key, value in entry.items() if key.endswith("_file")
    ]
    assert file_refs
    for path in file_refs:
        assert PurePosixPath(path).parent == PurePosixPath(secrets_dir), path
        assert PurePosixPath(path).name in secret["stringData"], path


def test_servicemonitor_matches_the_service() -> None:
    monitor = only("servicemonitor.yaml", "ServiceMonitor")
    service = only("service.yaml", "Service")
    labels = {**service["metadata"].get("labels", {}), **{
        k: v for entry in yaml.safe_load((K8S / "kustomization.yaml").read_text())["labels"]
        for k, v in entry["pairs"].items()}}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    creds = endpoint["authorization"]["credentials"]
    assert creds == {"name": "bridge-secrets", "key": "admin-token"}


def _prune_sinks(route: dict[str, Any], keep: set[str]) -> None:
    if route.get("sinks") is not None:
        route["sinks"] = [s for s in route["sinks"] if s in keep]
    for child in route.get("routes", []):
        _prune_sinks(child, keep)


def test_configmap_config_passes_parse_config(tmp_path: Path, secret: dict[str, Any],
                                              configmap: dict[str, Any]) -> None:
    """The shipped bridge.yaml validates. Components whose type is declared as an entry point
    but whose module does not exist yet are left out (and named), so this runs on what loads."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for key in secret["stringData"]:
        (secrets_dir / key).write_text(f"fake-{key}-{uuid.uuid4().hex}\n")
    text = configmap["data"]["bridge.yaml"].replace("/etc/bridge/secrets/", f"{secrets_dir}/")
    data = yaml.safe_load(text)
    left_out: list[str] = []
    for field, group, known in (("sources", SOURCE_GROUP, source_types()),
                                ("sinks", SINK_GROUP, sink_types())):
        declared = {ep.name for ep in entry_points(group=group)}
        kept = []
        for entry in data[field]:
            if entry["type"] in known:
                kept.append(entry)
            else:
                assert entry["type"] in declared, f"{field}: unknown type {entry['type']!r}"
                left_out.append(f"{field}:{entry['type']}")
        data[field] = kept
    _prune_sinks(data["routes"], {s["name"] for s in data["sinks"]})
    assert data["sources"] and data["sinks"], f"nothing left to validate ({left_out})"

    token = "tok-" + uuid.uuid4().hex
    config = parse_config(data, "deploy/kubernetes/configmap.yaml", env={"ADMIN_TOKEN": token})
    assert config.admin.host == "0.0.0.0" and config.admin.port == 9108
    assert config.admin.token is not None and config.admin.token.get_secret_value() == token
    assert str(config.state.path) == "/var/lib/bridge/bridge.db"
    assert config.log.format == "json"


async def test_readiness_probe_command_works(container: dict[str, Any]) -> None:
    """Run the exec readiness probe against a real admin server with a token."""
    token = "tok-" + uuid.uuid4().hex
    health = Health()
    admin = AdminServer(AdminConfig(port=0, token=SecretStr(token)), health)
    await admin.start()
    command = container["readinessProbe"]["exec"]["command"]
    assert command[0] == "python"
    probe = [sys.executable, *command[1:-1],
             command[-1].replace("127.0.0.1:9108", f"127.0.0.1:{admin.port}")]

    async def run(env_token: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            *probe, env={"ADMIN_TOKEN": env_token},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return await asyncio.wait_for(proc.wait(), timeout=20)

    try:
        assert await run(token) != 0  # 503: store not open, config not loaded
        health.store_opened(True)
        health.config_loaded("/etc/bridge/config/bridge.yaml")
        assert await run(token) == 0
        assert await run("wrong-token") != 0
    finally:
        await admin.stop()


def test_kubectl_kustomize_renders() -> None:
    kubectl = require_tool("kubectl", "kubectl")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Service", "ServiceAccount",
                                               "StatefulSet"]
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "bridge"
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert sts["spec"]["selector"]["matchLabels"]["app.kubernetes.io/part-of"] == "bridge"
    assert sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bridge"
