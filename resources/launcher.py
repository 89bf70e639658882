"""Launchers: where the training entry points and the curation engine run, locally or on Kubernetes.

Both implementations take the same (module, job) and return the entry point's reported
materialization: `LocalTrainingLauncher` runs it as a subprocess of this machine (CPU, or a
local GPU through torchrun), `K8sTrainingLauncher` runs the same command in a GPU pod (or a
multi-node Kubeflow Trainer v2 TrainJob; legacy: a PyTorchJob) through
`k8s_pipes.TrainingPipesK8sClient`, dagster-k8s's PipesK8sClient with a wait that cannot hang on
a lost pod. `CurationLauncher` does the same for `cleaned_corpus`'s curation: in the run's
process, or on a KubeRay RayJob (`ray_jobs.RayCurationLauncher`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

import dagster as dg

from hkgai_pipelines.curation.engine import EngineRun, curate_lake, progress_lines
from hkgai_pipelines.params import load_curation_params
from hkgai_pipelines.training.k8s_watch import WatchLimits
from hkgai_pipelines.training.pod_spec import (
    LOCAL_QUEUE, RUNTIME_NAME, TRAINING_LABELS, GpuPodOptions, multinode_command, queue_labels, training_command, training_pod_spec,
)


class TrainingLauncher(dg.ConfigurableResource):
    def launch(self, context: dg.AssetExecutionContext, module: str, job: dict, job_path: Path) -> dg.MaterializeResult:
        raise NotImplementedError


def _write_job(job: dict, job_path: Path) -> None:
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(json.dumps(job, indent=2, ensure_ascii=False), encoding="utf-8")


class LocalTrainingLauncher(TrainingLauncher):
    """Runs `python -m module --job job.json` as a Pipes subprocess on this machine."""

    gpus: int = 0

    def launch(self, context: dg.AssetExecutionContext, module: str, job: dict, job_path: Path) -> dg.MaterializeResult:
        _write_job(job, job_path)
        command = training_command(module, str(job_path), self.gpus)
        # The interpreter of this environment, not PATH's (torchrun is torch.distributed.run).
        command = [sys.executable, *command[1:]] if command[0] == "python" else [sys.executable, "-m", "torch.distributed.run", *command[1:]]
        env = {k: v for k, v in os.environ.items() if k.startswith(("HKGAI_", "HF_", "TRANSFORMERS_", "PATH", "HOME", "OMP_", "MKL_"))}
        env.setdefault("HF_HUB_OFFLINE", "1")
        invocation = dg.PipesSubprocessClient().run(command=command, context=context, env=env)
        return invocation.get_materialize_result()


class K8sTrainingLauncher(TrainingLauncher):
    """Runs the same entry point on Kubernetes: one pod with `gpus` GPUs (`torchrun
    --nproc_per_node`), or with `nodes` > 1 a Kubeflow Trainer v2 TrainJob of `nodes` such
    nodes (`multinode_api="pytorchjob"`: a training-operator v1 PyTorchJob, for clusters not yet
    on Trainer v2). A pod that is deleted, evicted or fails ends the step within `poll_s` (see
    k8s_pipes). Every training workload carries the Kueue label of `queue` ("" for none)."""

    image: str
    namespace: str = "hkgai"
    gpus: int = 1
    nodes: int = 1
    multinode_api: Literal["trainjob", "pytorchjob"] = "trainjob"
    #: The ClusterTrainingRuntime of TrainJobs (k8s/cluster/training-runtime.yaml).
    trainjob_runtime: str = RUNTIME_NAME
    #: The Kueue LocalQueue (k8s/base/kueue.yaml).
    queue: str = LOCAL_QUEUE
    checkpoint_claim: str = "hkgai-home"
    home_mount: str = "/mnt/hkgai"
    node_selector: dict[str, str] = {"nvidia.com/gpu.present": "true"}
    #: Secrets as env of single pods and PyTorchJobs; a TrainJob's come from its runtime (the
    #: TrainJob API has no envFrom).
    env_from_secrets: list[str] = ["hkgai-mlflow", "hkgai-s3"]
    poll_s: float = 10.0
    pending_timeout_s: float = 1800.0
    #: Fail the run when training has not finished in this time.
    run_timeout_s: float = 6 * 3600.0
    #: Kube config: in-cluster when None (the Dagster run pod), else this kubeconfig file.
    kubeconfig_file: str | None = None

    def options(self) -> GpuPodOptions:
        return GpuPodOptions(
            image=self.image, namespace=self.namespace, gpus=self.gpus, checkpoint_claim=self.checkpoint_claim,
            home_mount=self.home_mount, node_selector=dict(self.node_selector), env_from_secrets=tuple(self.env_from_secrets),
        )

    def pod_spec(self) -> dict:
        return training_pod_spec(self.options())

    def limits(self) -> WatchLimits:
        return WatchLimits(poll_s=self.poll_s, pending_timeout_s=self.pending_timeout_s, run_timeout_s=self.run_timeout_s)

    def client(self):
        from hkgai_pipelines.resources.k8s_pipes import TrainingPipesK8sClient

        if self.kubeconfig_file:
            return TrainingPipesK8sClient(load_incluster_config=False, kubeconfig_file=self.kubeconfig_file, poll_interval=self.poll_s)
        return TrainingPipesK8sClient(load_incluster_config=True, poll_interval=self.poll_s)

    def command(self, module: str, job_path: Path) -> list[str]:
        if self.nodes > 1:
            return multinode_command(module, str(job_path), self.nodes, self.gpus)
        return training_command(module, str(job_path), self.gpus)

    def launch(self, context: dg.AssetExecutionContext, module: str, job: dict, job_path: Path) -> dg.MaterializeResult:
        _write_job(job, job_path)  # job_path is on the shared volume every pod mounts
        command = self.command(module, job_path)
        if self.nodes > 1 and self.multinode_api == "trainjob":
            invocation = self.client().run_trainjob(context=context, options=self.options(), command=command, nodes=self.nodes,
                                                    limits=self.limits(), runtime=self.trainjob_runtime, queue=self.queue)
        elif self.nodes > 1:
            invocation = self.client().run_pytorchjob(context=context, options=self.options(), command=command, nodes=self.nodes,
                                                      limits=self.limits(), queue=self.queue)
        else:
            invocation = self.client().run_pod(
                context=context, image=self.image, command=command, namespace=self.namespace, base_pod_spec=self.pod_spec(),
                base_pod_meta={"labels": {**TRAINING_LABELS, **queue_labels(self.queue), "hkgai/stage": module.rsplit(".", 1)[-1]}},
                limits=self.limits(),
            )
        return invocation.get_materialize_result()


class CurationLauncher(dg.ConfigurableResource):
    """Where `cleaned_corpus` runs the curation engine: `LocalCurationLauncher` in the Dagster
    run's process (the local profile), `ray_jobs.RayCurationLauncher` on a KubeRay RayJob of its
    own (production). Either curates the lake's raw partitions of the catalog into `out_dir` (a
    new, unpublished version folder), with a stopped run's part files under `work_dir` and each
    unit's part files under `parts_dir` (incremental), and returns the `EngineRun`; the asset
    then runs the gates and publishes. The caller holds the versions lock throughout."""

    def curate(self, context: dg.AssetExecutionContext, *, lake_dir: Path, sources: list[str], params_file: Path,
               out_dir: Path, work_dir: Path, parts_dir: Path) -> EngineRun:
        raise NotImplementedError


class LocalCurationLauncher(CurationLauncher):
    """The engine in this process: the local executor, or Ray when RAY_ADDRESS names a cluster
    or `workers` is above 1 (`engine.choose_executor`)."""

    workers: int | None = None

    def curate(self, context: dg.AssetExecutionContext, *, lake_dir: Path, sources: list[str], params_file: Path,
               out_dir: Path, work_dir: Path, parts_dir: Path) -> EngineRun:
        return curate_lake(lake_dir, sources, load_curation_params(params_file), out_dir, workers=self.workers,
                           work_dir=work_dir, parts_dir=parts_dir, progress=progress_lines(context.log.info))
