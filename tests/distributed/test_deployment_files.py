"""The deployment files carry the configuration the CI cluster runs with (fast: no service).

``cluster.cluster_env`` names every key the CI cluster's processes get; ``infra/compose.yaml``
(CeleryExecutor) and ``infra/helm/values.yaml`` (official chart, KubernetesExecutor) must carry
each of them, secrets by reference only. We cannot run Docker or Kubernetes here: this proves
the keys, the distributed test proves the shape."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from .cluster import CI_ONLY, SECRET_KEYS, ClusterSecrets, Endpoints, cluster_env
from .services import Postgres, S3Server

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "compose.yaml"
VALUES = REPO / "infra" / "helm" / "values.yaml"
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
)

# Keys the official chart sets itself, from these values (None: from its own services).
CHART_SETS: Mapping[str, tuple[str, ...] | None] = {
    "AIRFLOW__CORE__EXECUTOR": ("executor",),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": ("data", "metadataSecretName"),
    "AIRFLOW__CORE__FERNET_KEY": ("fernetKeySecretName",),
    "AIRFLOW__API_AUTH__JWT_SECRET": ("jwtSecretName",),
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": None,  # its api-server Service's /execution/
}


def deployment_keys() -> dict[str, str]:
    """What the CI cluster sets, less the CI-only keys; endpoints are placeholders here."""
    endpoints = Endpoints(
        Postgres(5432, "airflow", "not-a-secret", "airflow"),
        "redis://127.0.0.1:6379/0",
        8080,
        Path("/config/recycle.toml"),
        Path("/data"),
        S3Server("http://127.0.0.1:9000"),
        "s3://bucket/prefix",
    )
    env = cluster_env(endpoints, ClusterSecrets("fernet", "jwt"))
    return {k: v for k, v in env.items() if k not in CI_ONLY}


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return _load(VALUES)


def test_the_ci_keys_include_the_pipeline_and_the_executor() -> None:
    keys = deployment_keys()
    assert {"RECYCLE_CONFIG", "RECYCLE_DATA_DIR", "RECYCLE_STORAGE", "AIRFLOW__CORE__EXECUTOR"} <= keys.keys()
    assert keys.keys() >= SECRET_KEYS, "a secret key is not set by the CI cluster any more"


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_every_airflow_service_in_compose_carries_every_key(compose: dict[str, Any], service: str) -> None:
    env = compose["services"][service]["environment"]
    missing = sorted(deployment_keys().keys() - env.keys())
    assert not missing, (
        f"infra/compose.yaml: {service} lacks {missing} (tests/distributed/cluster.py sets them)"
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_compose_refers_to_secrets_and_writes_none_out(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for key in SECRET_KEYS & env.keys():
            assert "${" in str(env[key]), f"infra/compose.yaml: {name} spells out {key}; refer to a variable"


def test_the_platform_server_in_compose_has_the_pipeline_keys(compose: dict[str, Any]) -> None:
    env = compose["services"]["recycle-server"]["environment"]
    wanted = {k for k in deployment_keys() if k.startswith(("RECYCLE_", "AWS_"))}
    missing = sorted(wanted - env.keys())
    assert not missing, f"infra/compose.yaml: recycle-server lacks {missing}"
    assert compose["services"]["recycle-server"]["command"][:2] == ["recycle", "serve"]


def test_compose_has_the_whole_stack_and_two_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "minio", "recycle-server", *AIRFLOW_SERVICES} <= services.keys()
    assert services["airflow-worker"]["deploy"]["replicas"] == 2
    assert services["airflow-worker"]["command"][:2] == ["celery", "worker"]


def test_the_helm_values_carry_every_key(values: dict[str, Any]) -> None:
    assert values["executor"] == "KubernetesExecutor"
    env = {e["name"]: e.get("value") for e in values["env"]}
    secret_env = {s["envName"] for s in values.get("secret", [])}
    missing = []
    for key in deployment_keys():
        if key in CHART_SETS:
            path = CHART_SETS[key]
            if path is not None and _at(values, path) in (None, ""):
                missing.append(f"{key} (chart value {'.'.join(path)})")
        elif key.startswith("AIRFLOW__CELERY__"):
            continue  # the KubernetesExecutor has no broker and no result backend
        elif key.startswith("AIRFLOW__"):
            section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
            if key not in env and _at(values, ("config", section, option)) is None:
                missing.append(key)
        elif key not in env and key not in secret_env:
            missing.append(key)
    assert not missing, f"infra/helm/values.yaml lacks {missing}"


def test_the_helm_values_keep_secrets_in_kubernetes_secrets(values: dict[str, Any]) -> None:
    named = {e["name"] for e in values["env"]}
    assert not (named & SECRET_KEYS), "a secret is a plain env value in values.yaml"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= {s["envName"] for s in values["secret"]}


def test_the_data_directory_is_the_shared_volume(compose: dict[str, Any], values: dict[str, Any]) -> None:
    data_dir = compose["services"]["airflow-worker"]["environment"]["RECYCLE_DATA_DIR"]
    for name in (*AIRFLOW_SERVICES, "recycle-server"):
        mounts = compose["services"][name]["volumes"]
        assert f"recycle-data:{data_dir}" in mounts, f"infra/compose.yaml: {name} does not mount {data_dir}"
    helm_dir = next(e["value"] for e in values["env"] if e["name"] == "RECYCLE_DATA_DIR")
    mount = next(m for m in values["volumeMounts"] if m["name"] == "recycle-data")
    claim = next(v for v in values["volumes"] if v["name"] == "recycle-data")
    assert mount["mountPath"] == helm_dir and claim["persistentVolumeClaim"]["claimName"]


def _at(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc
