"""One typed settings object, read from `HKGAI_*` environment variables.

`HKGAI_PROFILE` picks the profile: `local` (the default; SQLite, files and an embedded
vector store under `HKGAI_HOME`, no server to start) or `production` (MLflow server,
S3-backed DVC remote, Weaviate, Kubernetes launchers). Every path the local profile uses is
derived from `HKGAI_HOME` so one variable moves the whole installation.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Profile = Literal["local", "production"]


class HkgaiSettings(BaseSettings):
    """Where everything lives. Fields map to `HKGAI_<FIELD>` environment variables."""

    model_config = SettingsConfigDict(env_prefix="HKGAI_", extra="ignore")

    profile: Profile = Field("local", description="`local` (embedded) or `production`.")
    home: Path = Field(Path(".hkgai"), description="Root of every local artifact.")
    config_dir: Path = Field(PROJECT_ROOT / "configs", description="Presets and sources.yaml.")
    params_file: Path = Field(PROJECT_ROOT / "params.yaml", description="Pipeline thresholds.")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server; local default sqlite:///$HKGAI_HOME/mlflow.db."
    )
    mlflow_registry_uri: str | None = Field(None, description="Defaults to the tracking URI.")
    mlflow_experiment: str = Field("hkgai-v1", description="Experiment every run is logged to.")
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000", description="Base URL used for run links in asset metadata."
    )
    preset: str = Field("cpu-demo", description="Model preset in configs/presets/.")
    local_gpus: int = Field(0, description="GPUs for local training (0 = CPU; >1 uses torchrun).")
    k8s_namespace: str = Field("hkgai", description="Namespace of the training pods (production).")
    k8s_gpus: int = Field(1, description="GPUs per training pod (production).")
    k8s_nodes: int = Field(1, description="Training nodes; above 1 a multi-node job of that many pods (production).")
    k8s_multinode_api: Literal["trainjob", "pytorchjob"] = Field(
        "trainjob", description="Multi-node jobs as Kubeflow Trainer v2 TrainJobs, or (legacy, training-operator v1) PyTorchJobs."
    )
    k8s_trainjob_runtime: str = Field("hkgai-torch-distributed", description="ClusterTrainingRuntime of TrainJobs (k8s/cluster).")
    k8s_queue: str = Field("hkgai-training", description="Kueue LocalQueue of training workloads; empty for no Kueue label.")
    weaviate_url: str | None = Field(None, description="Weaviate endpoint (production vector store).")
    embedder_kind: str = Field("use", description="`use` (packaged multilingual USE v3) or `sentence_transformers`.")
    embedder_model_dir: str | None = Field(None, description="sentence-transformers model directory.")
    guard_model_dir: str | None = Field(
        None, description="Hugging Face guard model directory (sequence classifier or Qwen3Guard-Gen) the guardrail uses "
        "after its rules; unset: the packaged logistic classifier."
    )
    dvc_remote: str | None = Field(
        None, description="DVC remote URL; local default $HKGAI_HOME/dvc-remote, s3://... in production."
    )
    serve_url: str | None = Field(
        None, description="A running `hkgai serve` (e.g. http://127.0.0.1:8000) that `hkgai ask` sends questions to; "
                          "unset: `hkgai ask` loads the model itself."
    )
    serve_timeout_s: float = Field(120.0, gt=0, description="The longest `hkgai ask` waits for the served answer.")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads torch answers with in `hkgai ask` and `hkgai serve`; unset: torch's default "
                                "(one per core). 1 suits a small model or a busy machine, where threads wait on each other."
    )

    @model_validator(mode="after")
    def _production_needs_servers(self) -> "HkgaiSettings":
        if self.profile == "production":
            missing = [
                name
                for name, value in (
                    ("HKGAI_MLFLOW_TRACKING_URI", self.mlflow_tracking_uri),
                    ("HKGAI_DVC_REMOTE", self.dvc_remote),
                    ("HKGAI_WEAVIATE_URL", self.weaviate_url),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"profile 'production' needs {', '.join(missing)} to be set"
                )
        return self

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def dagster_home(self) -> Path:
        return self.home_dir / "dagster"

    @property
    def lake_dir(self) -> Path:
        return self.home_dir / "lake"

    @property
    def vectors_dir(self) -> Path:
        return self.home_dir / "vectors"

    @property
    def mlartifacts_dir(self) -> Path:
        return self.home_dir / "mlartifacts"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        return self.mlflow_registry_uri or self.tracking_uri

    @property
    def dvc_remote_url(self) -> str:
        return self.dvc_remote or str(self.home_dir / "dvc-remote")

    @property
    def sources_file(self) -> Path:
        return self.config_dir / "sources.yaml"


def get_settings() -> HkgaiSettings:
    """Read the environment now (never at import time, so tests can change it)."""
    return HkgaiSettings()
