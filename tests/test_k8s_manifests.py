"""Every manifest under k8s/ validates against the target Kubernetes schema, and the training
pod template is exactly what the launcher's code renders."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hkgai_pipelines.training.pod_spec import GpuPodOptions, full_pod, training_command

K8S = Path(__file__).resolve().parent.parent / "k8s"
K8S_VERSION = "1.31.0"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name not in ("values.yaml", "kustomization.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(K8S)) for p in MANIFESTS])
def test_manifest_validates(path):
    for document in yaml.safe_load_all(path.read_text()):
        if document:
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_pod_template_matches_the_launcher_code():
    rendered = full_pod(
        GpuPodOptions(image="ghcr.io/hkgai/hkgai-pipelines:0.1.0"),
        training_command("hkgai_pipelines.training.pretrain", "/mnt/hkgai/lake/models/base_model/current/job.json", 1),
        name="hkgai-train-base-model",
    )
    assert yaml.safe_load((K8S / "training" / "pod-template.yaml").read_text()) == rendered
