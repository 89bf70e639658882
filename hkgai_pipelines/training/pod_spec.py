"""The Kubernetes objects a training stage runs in.

- one node, G GPUs: `training_pod_spec`, the `spec` dict that dagster-k8s's pod builder merges
  with its own container (image, command, Pipes env), running `torchrun --nproc_per_node=G`;
- N nodes x G GPUs: `trainjob`, a Kubeflow Trainer v2 `TrainJob` (trainer.kubeflow.org/v1alpha1)
  on the `hkgai-torch-distributed` ClusterTrainingRuntime (`training_runtime`: the released
  torch-distributed runtime with this project's pod). The Trainer's Torch plugin gives every node
  PET_NNODES, PET_NODE_RANK (the Job completion index), PET_MASTER_ADDR and PET_MASTER_PORT, which
  torchrun reads as its defaults; JobSet runs the nodes as one indexed Job;
- legacy, for clusters still on training-operator v1: `pytorchjob`, a Kubeflow `PyTorchJob`
  (kubeflow.org/v1) with one Master and N-1 Workers built from the same pod spec.

Every training workload (pod, TrainJob, PyTorchJob) carries `kueue.x-k8s.io/queue-name`, so Kueue
admits all of a job's pods or none of them (k8s/cluster holds the ClusterQueue, k8s/base the
LocalQueue).

Pure data. Tests validate every pod spec with kubernetes-validate for the target Kubernetes
version, and the TrainJob, runtime and Kueue objects against the CRD schemas in k8s/crds; the
PyTorchJob's own fields by test (its CRD schema is not kept here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The Kubernetes version every manifest under k8s/ and every generated object is validated
#: against (kubernetes-validate, in the tests); the README's cluster prerequisites follow it.
TARGET_KUBERNETES_VERSION = "1.31.0"

#: Labels on every training pod; the NetworkPolicies in k8s/base select them.
TRAINING_LABELS = {"app.kubernetes.io/part-of": "hkgai", "hkgai/role": "training"}

#: The Kueue LocalQueue training workloads are submitted to (k8s/base/kueue.yaml); Kueue holds a
#: labelled workload until its ClusterQueue has quota for all of its pods.
LOCAL_QUEUE = "hkgai-training"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def queue_labels(queue: str | None) -> dict[str, str]:
    """The labels of a training workload object; `queue` None or "" leaves Kueue out."""
    return {"app.kubernetes.io/part-of": "hkgai", **({QUEUE_LABEL: queue} if queue else {})}


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


def full_pod(options: GpuPodOptions, command: list[str], name: str = "hkgai-train", queue: str | None = LOCAL_QUEUE) -> dict:
    """The whole Pod object as PipesK8sClient would submit it (for validation and review)."""
    spec = training_pod_spec(options)
    spec["containers"][0] = {**spec["containers"][0], "image": options.image, "command": command}
    labels = {**TRAINING_LABELS, **queue_labels(queue)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": options.namespace, "labels": labels}, "spec": spec}


#: The container name the Kubeflow Training Operator requires in PyTorchJob pods.
PYTORCHJOB_CONTAINER = "pytorch"


def multinode_command(module: str, job_path: str, nodes: int, gpus_per_node: int) -> list[str]:
    """torchrun across nodes; rank, master address and port come from the operator's PET_* env."""
    return ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={gpus_per_node}", "-m", module, "--job", job_path]


def pytorchjob(options: GpuPodOptions, command: list[str], nodes: int, name: str, pipes_env: dict[str, str] | None = None,
               queue: str | None = LOCAL_QUEUE) -> dict:
    """Legacy (training-operator v1): a PyTorchJob of `nodes` pods with `options.gpus` GPUs each.
    `pipes_env` (the Dagster Pipes bootstrap variables) goes to the Master only: rank 0 reports,
    the workers only train. Raises ValueError below 2 nodes."""
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
        "metadata": {"name": name, "namespace": options.namespace, "labels": queue_labels(queue)},
        "spec": {
            "nprocPerNode": str(options.gpus),
            # All pods go when the job ends, whatever the outcome; no retry inside the job.
            "runPolicy": {"cleanPodPolicy": "All", "backoffLimit": 0, "ttlSecondsAfterFinished": 3600},
            "pytorchReplicaSpecs": {"Master": replica(1, pipes_env or {}), "Worker": replica(nodes - 1, {})},
        },
    }


TRAINER_GROUP, TRAINER_VERSION = "trainer.kubeflow.org", "v1alpha1"
#: The project's ClusterTrainingRuntime (k8s/cluster/training-runtime.yaml, from `training_runtime`).
RUNTIME_NAME = "hkgai-torch-distributed"
#: The replicated job and container names the Trainer's Torch plugin and the TrainJob's `trainer`
#: field act on (the runtime's pods carry trainer.kubeflow.org/trainjob-ancestor-step: trainer).
TRAINER_NODE = "node"
#: Who owns the TrainJob's runtime patch (a domain-prefixed path, as the Trainer webhook requires).
PATCH_MANAGER = "hkgai.io/training-launcher"
#: Run as `sh -c GUARD pipes-on-node-0 <command>`: the Pipes variables are dropped on every node but
#: node 0, because the runtime has one pod template for all nodes (PET_NODE_RANK is the node index).
NODE0_GUARD = 'if [ "${PET_NODE_RANK:-0}" != 0 ]; then unset %s; fi; exec "$@"'


def training_runtime(options: GpuPodOptions, name: str = RUNTIME_NAME) -> dict:
    """The ClusterTrainingRuntime TrainJobs run on: the released torch-distributed runtime (one
    replicated job `node`, container `node`, Torch ML policy) with this project's pod: security
    context, service account, secrets as env (the TrainJob API has no envFrom), volumes, GPU node
    placement. A failed or lost node fails its Job at once (backoffLimit 0, restartPolicy Never):
    no in-place restart that would rejoin a broken rendezvous; Dagster's retry resumes instead."""
    spec = training_pod_spec(options)
    spec["containers"] = [{**spec["containers"][0], "name": TRAINER_NODE, "image": options.image}]
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {"spec": {"replicatedJobs": [{
                "name": TRAINER_NODE,
                "template": {
                    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                    "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": dict(TRAINING_LABELS)}, "spec": spec}},
                },
            }]}},
        },
    }


def trainjob(options: GpuPodOptions, command: list[str], nodes: int, name: str, pipes_env: dict[str, str] | None = None,
             runtime: str = RUNTIME_NAME, queue: str | None = LOCAL_QUEUE, deadline_s: int | None = None) -> dict:
    """A TrainJob of `nodes` nodes with `options.gpus` GPUs each on the ClusterTrainingRuntime
    `runtime`. The launcher's settings (volumes, mounts, node selector, tolerations) go in as a
    runtime patch, so they win over the runtime's defaults; `pipes_env` reaches node 0 only (see
    NODE0_GUARD). `deadline_s` ends the job on the cluster's side too, should the Dagster run pod
    that watches it die. Raises ValueError below 2 nodes (one node runs as a single pod)."""
    if nodes < 2:
        raise ValueError("a TrainJob is for 2 or more nodes; one node runs as a single pod")
    pod = training_pod_spec(options)
    container = pod["containers"][0]
    env = container["env"] + [{"name": k, "value": v} for k, v in (pipes_env or {}).items()]
    if pipes_env:
        command = ["/bin/sh", "-c", NODE0_GUARD % " ".join(sorted(pipes_env)), "pipes-on-node-0", *command]
    node_patch = {"nodeSelector": pod["nodeSelector"], "tolerations": pod["tolerations"], "volumes": pod["volumes"],
                  "containers": [{"name": TRAINER_NODE, "volumeMounts": container["volumeMounts"]}]}
    job = {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": options.namespace, "labels": queue_labels(queue)},
        "spec": {
            "runtimeRef": {"apiGroup": TRAINER_GROUP, "kind": "ClusterTrainingRuntime", "name": runtime},
            "trainer": {
                "image": options.image, "command": list(command), "env": env,
                "numNodes": nodes, "numProcPerNode": options.gpus, "resourcesPerNode": container["resources"],
            },
            "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
                {"name": TRAINER_NODE, "template": {"spec": {"template": {"spec": node_patch}}}},
            ]}}}}],
        },
    }
    if deadline_s:
        job["spec"]["activeDeadlineSeconds"] = int(deadline_s)
    return job


EXAMPLE_IMAGE = "ghcr.io/hkgai/hkgai-pipelines:0.1.0"
_RENDERED = "rendered from hkgai_pipelines/training/pod_spec.py by `make k8s-render`; tests keep the two equal"
EXAMPLE_HEADERS = {
    "training/pod-template.yaml": (
        "# The single-node training pod the K8sTrainingLauncher submits through dagster-k8s (1 GPU shown),\n"
        f"# {_RENDERED}\n"
        f"# and validate this file against the Kubernetes {TARGET_KUBERNETES_VERSION.rsplit('.', 1)[0]} schema. The launcher adds the Dagster Pipes\n"
        "# environment; the image, command and GPU count come from its configuration.\n"
    ),
    "training/trainjob-2x8.yaml": (
        "# The multi-node form (2 nodes x 8 GPUs): a Kubeflow Trainer v2 TrainJob on the ClusterTrainingRuntime\n"
        "# in k8s/cluster/training-runtime.yaml, queued by Kueue (LocalQueue hkgai-training),\n"
        f"# {_RENDERED}.\n"
        "# The launcher fills in the Dagster Pipes variables (placeholders here); the guard in the command\n"
        "# unsets them on every node but node 0, whose pod log carries the Pipes messages.\n"
    ),
    "training/pytorchjob-2x8.yaml": (
        "# LEGACY multi-node form for clusters still on the Kubeflow training-operator v1 (kubeflow.org/v1,\n"
        "# deprecated): the same 2 x 8 run as a PyTorchJob (K8sTrainingLauncher multinode_api=pytorchjob),\n"
        f"# {_RENDERED}.\n"
        "# The launcher adds the Pipes environment to the Master (rank 0) only.\n"
    ),
    "cluster/training-runtime.yaml": (
        "# The ClusterTrainingRuntime every TrainJob of this project runs on: Kubeflow Trainer's released\n"
        "# torch-distributed runtime (v2.3.0) with this project's pod (restricted security context, secrets,\n"
        "# volumes, GPU nodes, no in-place restarts). Cluster-scoped: applied once per cluster with\n"
        "# `kubectl apply -k k8s/cluster`. Needs no change per namespace: the secrets, claim and service\n"
        "# account it names are resolved in the namespace of each TrainJob,\n"
        f"# {_RENDERED}.\n"
    ),
}


def example_objects() -> dict[str, dict]:
    """The objects behind the rendered files under k8s/ (keyed by path below k8s/)."""
    job = "/mnt/hkgai/lake/models/base_model/current/job.json"
    eight = GpuPodOptions(image=EXAMPLE_IMAGE, gpus=8)
    command = multinode_command("hkgai_pipelines.training.pretrain", job, 2, 8)
    pipes = {"DAGSTER_PIPES_CONTEXT": "<set by the launcher>", "DAGSTER_PIPES_MESSAGES": "<set by the launcher>"}
    return {
        "training/pod-template.yaml": full_pod(GpuPodOptions(image=EXAMPLE_IMAGE), training_command("hkgai_pipelines.training.pretrain", job, 1),
                                               name="hkgai-train-base-model"),
        "training/trainjob-2x8.yaml": trainjob(eight, command, nodes=2, name="hkgai-train-base-model", pipes_env=pipes, deadline_s=6 * 3600),
        "training/pytorchjob-2x8.yaml": pytorchjob(eight, command, nodes=2, name="hkgai-train-base-model"),
        "cluster/training-runtime.yaml": training_runtime(GpuPodOptions(image=EXAMPLE_IMAGE)),
    }


if __name__ == "__main__":
    import sys
    from pathlib import Path

    import yaml

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "k8s")
    for file_name, obj in example_objects().items():
        (folder / file_name).write_text(EXAMPLE_HEADERS[file_name] + yaml.safe_dump(obj, sort_keys=False))
        print(f"wrote {folder / file_name}")
