"""docker/k8s/: valid against Kubernetes' schemas (kubernetes-validate --strict), and what a
clinic relies on: two replicas (active + warm standby), probes, non-root, read-only root,
resources, secrets from a Secret, egress only to Postgres, the homeserver and DNS."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.__main__ import build_parser
from bot.config import SECRET_KEYS, env_var, load_config
from tests.deploy.conftest import DOCKER, tool

K8S = DOCKER / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))


def documents() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            found[doc["kind"]] = doc
    return found


DOCS = documents()
POD = DOCS["Deployment"]["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]


def test_kubernetes_validate_strict() -> None:
    done = subprocess.run(
        [tool("kubernetes-validate"), "--strict", *map(str, MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(MANIFESTS)


def test_every_kind_is_there() -> None:
    assert set(DOCS) == {
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    }


def test_two_replicas_and_why_not_three() -> None:
    assert DOCS["Deployment"]["spec"]["replicas"] == 2
    text = (K8S / "deployment.yaml").read_text("utf-8")
    assert "advisory lock" in text and "A third replica adds nothing" in text
    assert DOCS["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def test_probes_ready_and_health() -> None:
    assert CONTAINER["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert CONTAINER["livenessProbe"]["httpGet"]["path"] == "/health"
    port = CONTAINER["ports"][0]
    assert port["containerPort"] == 8080 and port["name"] == "http"


def test_non_root_read_only_no_capabilities() -> None:
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["runAsUser"] != 0
    ctx = CONTAINER["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["runAsNonRoot"] is True
    assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in CONTAINER["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/data", "/tmp"}


def test_resources_from_the_measured_footprint() -> None:
    resources = CONTAINER["resources"]
    assert set(resources) == {"requests", "limits"}
    mib = {k: int(resources[k]["memory"].removesuffix("Mi")) for k in ("requests", "limits")}
    measured_mib = 63  # VmRSS of the bot process, idle in `chaperone demo`
    assert measured_mib < mib["requests"] <= mib["limits"] <= 8 * measured_mib
    assert "Measured" in (K8S / "deployment.yaml").read_text("utf-8")


def test_command_line_is_the_image_cli_with_the_mounted_config() -> None:
    args = build_parser().parse_args(CONTAINER["args"])
    assert args.func.__name__ == "cmd_run"
    config_mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == "config")
    assert Path(args.config).parent == Path(config_mount["mountPath"])
    assert "command" not in CONTAINER  # the image's ENTRYPOINT ["chaperone"]


def test_secrets_come_from_the_secret_as_files() -> None:
    secret_keys = set(DOCS["Secret"]["stringData"])
    assert set(DOCS["Secret"]["stringData"].values()) == {"CHANGE_ME"}
    mount = next(m for m in CONTAINER["volumeMounts"] if m["name"] == "secrets")
    volume = next(v for v in POD["volumes"] if v["name"] == "secrets")
    assert volume["secret"]["secretName"] == DOCS["Secret"]["metadata"]["name"]
    for item in CONTAINER["env"]:
        assert item["name"].endswith("_FILE") and "value" in item
        directory, _, key = item["value"].rpartition("/")
        assert directory == mount["mountPath"] and key in secret_keys


def test_config_map_loads_with_the_deployment_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(DOCS["ConfigMap"]["data"]["config.yaml"], encoding="utf-8")
    files = {key: tmp_path / key for key in DOCS["Secret"]["stringData"]}
    for key, path in files.items():
        value = f"{key}-q8Zr2LmX5vB1nT7kW4cY9pD3"
        if key.startswith("database"):
            value = f"postgresql://{key.replace('-', '_')}:pw@postgres:5432/chaperone"
        path.write_text(value + "\n", encoding="utf-8")
    env = {
        item["name"]: str(tmp_path / item["value"].rpartition("/")[2]) for item in CONTAINER["env"]
    }
    for key in SECRET_KEYS:
        monkeypatch.delenv(env_var(key), raising=False)
    loaded = load_config(config, env=env)
    assert loaded.http.listen == "0.0.0.0:8080"  # probes come from the kubelet
    assert loaded.database.owner_url.startswith("postgresql://database_owner_url:")
    assert loaded.bot.data_dir == "/data"


def test_network_policy_egress_is_postgres_homeserver_and_dns() -> None:
    policy = DOCS["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ports = sorted(
        (port["port"], port["protocol"]) for rule in policy["egress"] for port in rule["ports"]
    )
    assert ports == [(53, "TCP"), (53, "UDP"), (5432, "TCP"), (8008, "TCP")]
    for rule in policy["egress"]:
        assert rule["to"] and all("ipBlock" not in peer for peer in rule["to"])


def test_service_selects_the_pods() -> None:
    labels = DOCS["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        spec = DOCS[kind]["spec"]
        selector = spec.get("selector") or spec["podSelector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
