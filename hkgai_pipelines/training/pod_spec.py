"""The Kubernetes objects a training stage runs in.

- one node, G GPUs: `training_pod_spec`, the `spec` dict that dagster-k8s's pod builder merges
  with its own container (image, command, Pipes env), running `torchrun --nproc_per_node=G`;
- N nodes x G GPUs: `pytorchjob`, a Kubeflow Training Operator `PyTorchJob` (kubeflow.org/v1)
  with one Master and N-1 Workers built from the same pod spec. The operator gives every pod
  PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT, which torchrun reads as its defaults.

Pure data. Tests validate every pod spec with kubernetes-validate for the target Kubernetes
version; the PyTorchJob's embedded pod templates are validated as pods, its own fields by test
(its CRD schema is not available offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The Kubernetes version every manifest under k8s/ and every generated object is validated
#: against (kubernetes-validate, in the tests); the README's cluster prerequisites follow it.
TARGET_KUBERNETES_VERSION = "1.31.0"


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
    #: More (name, value) environment variables, e.g. a cluster's NCCL settings.
    extra_env: tuple[tuple[str, str], ...] = ()


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
            *({"name": name, "value": value} for name, value in options.extra_env),
        ],
        "envFrom": [{"secretRef": {"name": name}} for name in options.env_from_secrets],
        "volumeMounts": [
            {"name": "hkgai-home", "mountPath": options.home_mount},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    return {
        "serviceAccountName": options.service_account,
        "restartPolicy": "Never",
        "nodeSelector": dict(options.node_selector),
        "tolerations": [dict(t) for t in options.tolerations],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
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
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": options.namespace, "labels": dict(TRAINING_LABELS)}, "spec": spec}


#: Labels on every training pod; the NetworkPolicies in k8s/base select them.
TRAINING_LABELS = {"app.kubernetes.io/part-of": "hkgai", "hkgai/role": "training"}

#: The container name the Kubeflow Training Operator requires in PyTorchJob pods.
PYTORCHJOB_CONTAINER = "pytorch"


def multinode_command(module: str, job_path: str, nodes: int, gpus_per_node: int) -> list[str]:
    """torchrun across nodes; rank, master address and port come from the operator's PET_* env."""
    return ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={gpus_per_node}", "-m", module, "--job", job_path]


def pytorchjob(options: GpuPodOptions, command: list[str], nodes: int, name: str, pipes_env: dict[str, str] | None = None) -> dict:
    """A PyTorchJob of `nodes` pods with `options.gpus` GPUs each. `pipes_env` (the Dagster
    Pipes bootstrap variables) goes to the Master only: rank 0 reports, the workers only train."""
    if nodes < 2:
        raise ValueError("a PyTorchJob is for 2 or more nodes; one node runs as a single pod")

    def replica(count: int, extra_env: dict[str, str]) -> dict:
        spec = training_pod_spec(options)
        container = dict(spec["containers"][0])
        container.update(
            name=PYTORCHJOB_CONTAINER, image=options.image, command=list(command),
            env=container["env"] + [{"name": k, "value": v} for k, v in extra_env.items()],
            ports=[{"name": "pytorchjob-port", "containerPort": 23456}],
        )
        spec["containers"] = [container]
        spec.pop("restartPolicy")  # set per replica below, as the operator expects
        return {
            "replicas": count,
            "restartPolicy": "Never",  # a lost rank fails the job; Dagster's retry resumes it
            "template": {"metadata": {"labels": dict(TRAINING_LABELS)}, "spec": spec},
        }

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": options.namespace, "labels": {"app.kubernetes.io/part-of": "hkgai"}},
        "spec": {
            "nprocPerNode": str(options.gpus),
            # All pods go when the job ends, whatever the outcome; no retry inside the job.
            "runPolicy": {"cleanPodPolicy": "All", "backoffLimit": 0, "ttlSecondsAfterFinished": 3600},
            "pytorchReplicaSpecs": {"Master": replica(1, pipes_env or {}), "Worker": replica(nodes - 1, {})},
        },
    }


EXAMPLE_IMAGE = "ghcr.io/hkgai/hkgai-pipelines:0.1.0"
EXAMPLE_HEADERS = {
    "pod-template.yaml": (
        "# The single-node training pod the K8sTrainingLauncher submits through dagster-k8s (1 GPU shown),\n"
        "# rendered from hkgai_pipelines/training/pod_spec.py by `make k8s-render`; tests keep the two equal\n"
        f"# and validate this file against the Kubernetes {TARGET_KUBERNETES_VERSION.rsplit('.', 1)[0]} schema. The launcher adds the Dagster Pipes\n"
        "# environment; the image, command and GPU count come from its configuration.\n"
    ),
    "pytorchjob-2x8.yaml": (
        "# The multi-node form (2 nodes x 8 GPUs): a Kubeflow Training Operator PyTorchJob, rendered from\n"
        "# hkgai_pipelines/training/pod_spec.py by `make k8s-render`. Needs the training operator (v1 API)\n"
        "# installed. The launcher adds the Pipes environment to the Master (rank 0) only.\n"
    ),
}


def example_objects() -> dict[str, dict]:
    """The objects behind k8s/training/*.yaml (documentation of what the launcher creates)."""
    job = "/mnt/hkgai/lake/models/base_model/current/job.json"
    return {
        "pod-template.yaml": full_pod(GpuPodOptions(image=EXAMPLE_IMAGE), training_command("hkgai_pipelines.training.pretrain", job, 1),
                                      name="hkgai-train-base-model"),
        "pytorchjob-2x8.yaml": pytorchjob(GpuPodOptions(image=EXAMPLE_IMAGE, gpus=8),
                                          multinode_command("hkgai_pipelines.training.pretrain", job, 2, 8), nodes=2, name="hkgai-train-base-model"),
    }


if __name__ == "__main__":
    import sys
    from pathlib import Path

    import yaml

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "k8s/training")
    for file_name, obj in example_objects().items():
        (folder / file_name).write_text(EXAMPLE_HEADERS[file_name] + yaml.safe_dump(obj, sort_keys=False))
        print(f"wrote {folder / file_name}")
