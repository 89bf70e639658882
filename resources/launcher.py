"""TrainingLauncher: run a training entry point under Dagster Pipes, locally or on Kubernetes.

Both implementations take the same (module, job) and return the entry point's reported
materialization: `LocalTrainingLauncher` runs it as a subprocess of this machine (CPU, or a
local GPU through torchrun), `K8sTrainingLauncher` runs the same command in a GPU pod through
dagster-k8s's PipesK8sClient with the pod spec from `training.pod_spec`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import dagster as dg

from hkgai_pipelines.training.pod_spec import GpuPodOptions, training_command, training_pod_spec


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
    """Runs the same command in a GPU pod through dagster-k8s PipesK8sClient."""

    image: str
    namespace: str = "hkgai"
    gpus: int = 1
    checkpoint_claim: str = "hkgai-home"
    home_mount: str = "/mnt/hkgai"
    node_selector: dict[str, str] = {"nvidia.com/gpu.present": "true"}
    env_from_secrets: list[str] = ["hkgai-mlflow", "hkgai-s3"]
    #: Fail the run when the pod has not finished in this time (a deleted pod never finishes).
    pod_wait_timeout_s: float = 6 * 3600

    def options(self) -> GpuPodOptions:
        return GpuPodOptions(
            image=self.image, namespace=self.namespace, gpus=self.gpus, checkpoint_claim=self.checkpoint_claim,
            home_mount=self.home_mount, node_selector=dict(self.node_selector), env_from_secrets=tuple(self.env_from_secrets),
        )

    def pod_spec(self) -> dict:
        return training_pod_spec(self.options())

    def launch(self, context: dg.AssetExecutionContext, module: str, job: dict, job_path: Path) -> dg.MaterializeResult:
        from dagster_k8s import PipesK8sClient

        _write_job(job, job_path)  # job_path is on the shared volume the pod mounts
        invocation = PipesK8sClient().run(
            context=context,
            image=self.image,
            command=training_command(module, str(job_path), self.gpus),
            namespace=self.namespace,
            base_pod_spec=self.pod_spec(),
            base_pod_meta={"labels": {"app.kubernetes.io/part-of": "hkgai", "hkgai/stage": module.rsplit(".", 1)[-1]}},
            pod_wait_timeout=self.pod_wait_timeout_s,
        )
        return invocation.get_materialize_result()
