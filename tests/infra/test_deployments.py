"""Deployment files: Prefect deployments validate against the run configs and have cron schedules."""

from pathlib import Path

import yaml

from schemas.config import AuditConfig, ProtectConfig

INFRA = Path(__file__).resolve().parents[2] / "infra"
CONFIGS = {"flows/audit_flow.py:audit_flow": AuditConfig, "flows/protect_flow.py:protect_flow": ProtectConfig}


def test_prefect_deployments_validate():
    document = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    deployments = document["deployments"]
    assert {deployment["entrypoint"] for deployment in deployments} == set(CONFIGS)
    for deployment in deployments:
        config = CONFIGS[deployment["entrypoint"]].model_validate(deployment["parameters"]["config"])
        assert config.ray.address, deployment["name"]
        assert deployment["schedules"][0]["cron"].count(" ") == 4, deployment["name"]


def test_entrypoints_exist():
    import importlib

    for entrypoint in CONFIGS:
        path, name = entrypoint.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, name))


def test_cluster_manifests_mount_the_key():
    kuberay = yaml.safe_load((INFRA / "kuberay-cluster.yaml").read_text())
    groups = [kuberay["spec"]["headGroupSpec"]] + kuberay["spec"]["workerGroupSpecs"]
    for group in groups:
        container = group["template"]["spec"]["containers"][0]
        assert {"name": "HCR_KEY_FILE", "value": "/etc/hcr/key"} in container["env"]
        assert any(mount["mountPath"] == "/etc/hcr" for mount in container["volumeMounts"])
    assert "HCR_KEY_FILE=/etc/hcr/key" in (INFRA / "Dockerfile").read_text()
