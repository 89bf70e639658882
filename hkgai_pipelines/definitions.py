"""The Dagster code location: `dagster dev -m hkgai_pipelines.definitions`."""

from __future__ import annotations

import dagster as dg

from hkgai_pipelines.assets.corpora import corpora_assets, raw_documents, source_partitions
from hkgai_pipelines.assets.evaluation import evaluation_assets, evaluation_checks
from hkgai_pipelines.assets.registry import champion_drift_sensor, champion_model, model_approval_sensor, promote_champion_job, registry_assets, registry_checks
from hkgai_pipelines.assets.models import model_assets
from hkgai_pipelines.assets.rag import rag_assets, rag_checks, rag_refresh_job, rag_refresh_nightly
from hkgai_pipelines.resources import resources_for

#: One run per source partition (what a backfill of raw_documents does).
ingest_sources_job = dg.define_asset_job(
    "ingest_sources",
    selection=dg.AssetSelection.assets(raw_documents),
    partitions_def=source_partitions,
    description="Ingest one source partition of raw_documents.",
)

#: Everything downstream of the raw sources, in one run. On Kubernetes (K8sRunLauncher) the run
#: pod orchestrates and curates; its training stages run in GPU pods of their own. The
#: `hkgai/gpu` tag lets the QueuedRunCoordinator admit one training run at a time
#: (k8s/dagster/values.yaml); locally both tags are ignored.
build_downstream_job = dg.define_asset_job(
    "build_downstream",
    # champion_model moves only on a reviewer's decision (model_approval_sensor), never here.
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(raw_documents, champion_model),
    description="Materialize every unpartitioned asset (and run its checks) from the ingested sources.",
    tags={
        "hkgai/gpu": "training",
        "dagster-k8s/config": {
            "container_config": {"resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}}},
        },
    },
)

defs = dg.Definitions(
    assets=[*corpora_assets, *model_assets, *rag_assets, *evaluation_assets, *registry_assets],
    asset_checks=[*rag_checks, *evaluation_checks, *registry_checks],
    jobs=[ingest_sources_job, build_downstream_job, rag_refresh_job, promote_champion_job],
    schedules=[rag_refresh_nightly],
    sensors=[model_approval_sensor, champion_drift_sensor],
    resources=resources_for(),
)
