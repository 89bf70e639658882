"""The Kubernetes pod spec a training stage runs in (one pod, G GPUs on one node).

Pure data: `training_pod_spec` returns the `spec` dict that dagster-k8s's PipesK8sClient merges
with its own container (image, command, Pipes env). Tests validate it with kubernetes-validate
for the target Kubernetes version.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuPodOptions:
    image: str
    namespace: str = "hkgai"
    gpus: int = 1
    cpu: str = "8"
    memory: str = "64Gi"
    #: A memory-backed /dev/shm: NCCL and the DataLoader share tensors through it, and the
    #: container default (64 MiB) makes multi-GPU runs crash.
    shm_size: str = "16Gi"
    node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: list[dict] = field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    #: PersistentVolumeClaim with the lake and the checkpoints (HKGAI_HOME), so resume works
    #: across pods.
    checkpoint_claim: str = "hkgai-home"
    home_mount: str = "/mnt/hkgai"
    #: Secrets whose keys become environment variables (MLflow and S3 credentials).
    env_from_secrets: tuple[str, ...] = ("hkgai-mlflow", "hkgai-s3")
    service_account: str = "hkgai-training"


def training_pod_spec(options: GpuPodOptions) -> dict:
    container = {
        "name": "dagster-pipes-execution",  # the container name PipesK8sClient fills in
        "resources": {
            "requests": {"cpu": options.cpu, "memory": options.memory, "nvidia.com/gpu": str(options.gpus)},
            "limits": {"memory": options.memory, "nvidia.com/gpu": str(options.gpus)},
        },
        "env": [
            {"name": "HKGAI_HOME", "value": options.home_mount},
            {"name": "HKGAI_PROFILE", "value": "production"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "NCCL_DEBUG", "value": "WARN"},
        ],
        "envFrom": [{"secretRef": {"name": name}} for name in options.env_from_secrets],
        "volumeMounts": [
            {"name": "hkgai-home", "mountPath": options.home_mount},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False},
    }
    return {
        "serviceAccountName": options.service_account,
        "restartPolicy": "Never",
        "nodeSelector": dict(options.node_selector),
        "tolerations": [dict(t) for t in options.tolerations],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
        "containers": [container],
        "volumes": [
            {"name": "hkgai-home", "persistentVolumeClaim": {"claimName": options.checkpoint_claim}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": options.shm_size}},
        ],
    }


def training_command(module: str, job_path: str, gpus: int) -> list[str]:
    """`python -m module` on CPU or one GPU; torchrun with one process per GPU otherwise."""
    if gpus <= 1:
        return ["python", "-m", module, "--job", job_path]
    return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", module, "--job", job_path]


def full_pod(options: GpuPodOptions, command: list[str], name: str = "hkgai-train") -> dict:
    """The whole Pod object as PipesK8sClient would submit it (for validation and review)."""
    spec = training_pod_spec(options)
    spec["containers"][0] = {**spec["containers"][0], "image": options.image, "command": command}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": options.namespace, "labels": {"app.kubernetes.io/part-of": "hkgai"}}, "spec": spec}
