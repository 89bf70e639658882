"""Dagster resources, and `resources_for(profile)` that wires them for `local` or `production`.

Each resource is a typed `ConfigurableResource`; the local profile points them at files under
`HKGAI_HOME` (after `platform.open_home` made a moved home's stored locations its own), the
production profile at servers whose addresses and credentials come from
environment variables through `dg.EnvVar` (never from code).
"""

from __future__ import annotations

import dagster as dg

from hkgai_pipelines.platform import open_home
from hkgai_pipelines.resources.launcher import (
    CurationLauncher,
    K8sTrainingLauncher,
    LocalCurationLauncher,
    LocalTrainingLauncher,
    TrainingLauncher,
)
from hkgai_pipelines.resources.lake import DataLakeResource, DvcResource, PipelineConfigResource
from hkgai_pipelines.resources.mlflow import MlflowResource
from hkgai_pipelines.resources.ray_jobs import RayCurationLauncher, ray_curation_launcher
from hkgai_pipelines.resources.rag import (
    EmbeddedVectorStoreResource,
    EmbedderResource,
    VectorStoreResource,
    WeaviateVectorStoreResource,
)
from hkgai_pipelines.settings import HkgaiSettings, get_settings

__all__ = [
    "CurationLauncher",
    "DataLakeResource",
    "DvcResource",
    "EmbeddedVectorStoreResource",
    "EmbedderResource",
    "K8sTrainingLauncher",
    "LocalCurationLauncher",
    "LocalTrainingLauncher",
    "TrainingLauncher",
    "MlflowResource",
    "PipelineConfigResource",
    "RayCurationLauncher",
    "VectorStoreResource",
    "WeaviateVectorStoreResource",
    "resources_for",
]


def resources_for(profile: str | None = None, settings: HkgaiSettings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or get_settings()
    profile = profile or settings.profile
    config = PipelineConfigResource(config_dir=str(settings.config_dir), params_file=str(settings.params_file), preset=settings.preset)
    lake = DataLakeResource(root=str(settings.lake_dir))
    if profile == "local":
        # Every process that loads the definitions (webserver, daemon, run worker, the dagster
        # CLI) opens the home first: a moved or copied home gets its stored locations rewritten
        # before anything writes through them.
        open_home(settings)
        return {
            "pipeline_config": config,
            "lake": lake,
            "dvc": DvcResource(repo_dir=str(settings.lake_dir), remote_url=settings.dvc_remote_url),
            "mlflow": MlflowResource(
                tracking_uri=settings.tracking_uri,
                registry_uri=settings.registry_uri,
                experiment_name=settings.mlflow_experiment,
                artifact_location=settings.mlartifacts_dir.as_uri(),
                ui_url=settings.mlflow_ui_url,
            ),
            "training_launcher": LocalTrainingLauncher(gpus=settings.local_gpus),
            "curation": LocalCurationLauncher(),
            "embedder": EmbedderResource(kind="use"),
            "vector_store": EmbeddedVectorStoreResource(path=str(settings.vectors_dir)),
        }
    if profile == "production":
        # The lake is HKGAI_HOME on a shared volume mounted into every run pod; versions
        # go to the S3 DVC remote and models to the MLflow server (S3 artifact store).
        return {
            "pipeline_config": config,
            "lake": lake,
            "dvc": DvcResource(repo_dir=str(settings.lake_dir), remote_url=dg.EnvVar("HKGAI_DVC_REMOTE")),
            "mlflow": MlflowResource(
                tracking_uri=dg.EnvVar("HKGAI_MLFLOW_TRACKING_URI"),
                registry_uri=settings.mlflow_registry_uri,
                experiment_name=settings.mlflow_experiment,
                ui_url=settings.mlflow_ui_url,
            ),
            "training_launcher": K8sTrainingLauncher(
                image=dg.EnvVar("HKGAI_TRAINING_IMAGE"), namespace=settings.k8s_namespace, gpus=settings.k8s_gpus, nodes=settings.k8s_nodes,
                multinode_api=settings.k8s_multinode_api, trainjob_runtime=settings.k8s_trainjob_runtime, queue=settings.k8s_queue,
                home_mount=str(settings.home_dir),
            ),
            # cleaned_corpus on a KubeRay RayJob of its own, in the same project image.
            "curation": ray_curation_launcher(dg.EnvVar("HKGAI_TRAINING_IMAGE"), namespace=settings.k8s_namespace,
                                              mlflow_tracking_uri=settings.mlflow_tracking_uri, weaviate_url=settings.weaviate_url,
                                              home_mount=str(settings.home_dir)),
            # A sentence-transformers directory baked into the image or on the shared volume.
            "embedder": EmbedderResource(kind=settings.embedder_kind, model_dir=settings.embedder_model_dir),
            "vector_store": WeaviateVectorStoreResource(url=dg.EnvVar("HKGAI_WEAVIATE_URL"), api_key=dg.EnvVar("HKGAI_WEAVIATE_API_KEY")),
        }
    raise ValueError(f"unknown profile {profile!r}; expected 'local' or 'production'")
