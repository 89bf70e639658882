"""Model chain assets: `base_model` (continued pretraining launched through Dagster Pipes)."""

import json
import shutil
from pathlib import Path

import dagster as dg

from hkgai_pipelines.assets.corpora import CLEANED_DIR, cleaned_corpus
from hkgai_pipelines.assets.metadata import markdown_table
from hkgai_pipelines.resources import DataLakeResource, MlflowResource, PipelineConfigResource
from hkgai_pipelines.resources.launcher import TrainingLauncher


def stage_folder(lake: DataLakeResource, asset: str) -> Path:
    """`models/<asset>/current`, the folder a stage trains in. A run that was killed leaves its
    checkpoints here, and the next materialization resumes from them."""
    current = lake.path("models", asset, "current")
    current.mkdir(parents=True, exist_ok=True)
    return current


def publish(lake: DataLakeResource, asset: str, folder: Path, run_id: str) -> Path:
    """Move a finished stage to `models/<asset>/runs/<run_id>` and point `models/<asset>/latest`
    at its model directory (what later stages and `hkgai ask` read)."""
    archive = lake.path("models", asset, "runs", run_id)
    archive.parent.mkdir(parents=True, exist_ok=True)
    if archive.exists():
        shutil.rmtree(archive)
    folder.rename(archive)
    latest = lake.path("models", asset, "latest")
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(archive / "final", target_is_directory=True)
    return archive / "final"


@dg.asset(
    deps=[cleaned_corpus],
    group_name="models",
    kinds={"pytorch", "mlflow"},
    retry_policy=dg.RetryPolicy(max_retries=1),  # a retry resumes from the newest checkpoint
    description="DeepSeek-architecture model: the preset's config initialised (or a checkpoint loaded) and continued-pretrained on cleaned_corpus.",
)
def base_model(
    context: dg.AssetExecutionContext,
    pipeline_config: PipelineConfigResource,
    lake: DataLakeResource,
    mlflow: MlflowResource,
    training_launcher: TrainingLauncher,
) -> dg.MaterializeResult:
    folder = stage_folder(lake, "base_model")
    job = {
        "preset": pipeline_config.preset,
        "corpus": str(lake.path(CLEANED_DIR, "cleaned.parquet")),
        "output_dir": str(folder),
        "tracking_uri": mlflow.tracking_uri,
        "experiment": mlflow.experiment_name,
        "run_name": "base_model",
        "config_dir": pipeline_config.config_dir,
        "artifact_root": mlflow.artifact_location,
    }
    reported = training_launcher.launch(context, "hkgai_pipelines.training.pretrain", job, folder / "job.json")
    summary = json.loads((folder / "summary.json").read_text())
    model_dir = publish(lake, "base_model", folder, summary["mlflow_run_id"])
    ppl = summary["perplexity_before"], summary["perplexity_after"]
    return dg.MaterializeResult(
        metadata={
            **(reported.metadata or {}),
            "preset": pipeline_config.preset,
            "perplexity_by_language": markdown_table(
                ["lang", "before", "after"], [(lang, ppl[0][lang], ppl[1].get(lang)) for lang in sorted(ppl[0])]
            ),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(summary["mlflow_run_id"])),
            "checkpoint_uri": str(model_dir),
            "path": dg.MetadataValue.path(str(model_dir)),
        },
        data_version=dg.DataVersion(summary["mlflow_run_id"]),
    )


model_assets = [base_model]
