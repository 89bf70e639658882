"""Model chain assets: the datasets (`sft_dataset`, `preference_dataset`) and the three
training stages (`base_model`, `sft_checkpoint`, `aligned_model`), each launched through
Dagster Pipes by the TrainingLauncher resource."""

import json
import shutil
from pathlib import Path

import dagster as dg

from hkgai_pipelines.assets.corpora import CLEANED_DIR, cleaned_corpus
from hkgai_pipelines.assets.metadata import markdown_table
from hkgai_pipelines.platform import relative_link
from hkgai_pipelines.rag.knowledge import load_knowledge_documents
from hkgai_pipelines.training.datasets import preference_records, sft_records, write_jsonl
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
    # Relative (`runs/<run_id>/final`), so that a moved or copied home reads its own model.
    relative_link(lake.path("models", asset, "latest"), archive / "final")
    return archive / "final"


def published_stage(lake: DataLakeResource, stage: str) -> tuple[Path, str]:
    """(model directory, MLflow run id) of the newest published run of a training stage."""
    latest = lake.path("models", stage, "latest")
    if not (latest / "config.json").exists():
        raise FileNotFoundError(f"{latest}: no {stage} model; materialize {stage} first")
    model_dir = latest.resolve()
    summary = json.loads((model_dir.parent / "summary.json").read_text())
    return model_dir, summary["mlflow_run_id"]


def _dataset_result(context: dg.AssetExecutionContext, mlflow: MlflowResource, records: list[dict], path: Path, extra: dict) -> dg.MaterializeResult:
    """Metadata, and an MLflow run in the data experiment holding the dataset file, so the
    training runs that read it can be traced to exactly this version."""
    from collections import Counter

    from hkgai_pipelines.sources.ingest import content_hash

    digest = content_hash([r["id"] for r in records])
    splits = Counter(r["split"] for r in records)
    langs = Counter(r["lang"] for r in records)
    asset = context.asset_key.to_user_string()
    run_id = mlflow.log_run(
        asset,
        params={"records": len(records), "train": splits.get("train", 0), "eval": splits.get("eval", 0)},
        metrics={f"records_{lang}": n for lang, n in langs.items()},
        tags={"asset": asset, "dagster_run_id": context.run_id, "data_version": digest},
        artifacts={"dataset": path},
        experiment=f"{mlflow.experiment_name}-data",
    )
    return dg.MaterializeResult(
        metadata={
            "records": len(records), "train": splits.get("train", 0), "eval": splits.get("eval", 0),
            "by_language": markdown_table(["lang", "records"], sorted(langs.items())),
            "path": dg.MetadataValue.path(str(path)),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run_id)), **extra,
        },
        data_version=dg.DataVersion(digest),
    )


@dg.asset(
    deps=[cleaned_corpus],
    group_name="models",
    kinds={"python", "json"},
    description="Chat-format instruction data (Cantonese, Traditional and Simplified Chinese, English): authored HK Q&A, general instructions and pairs derived from the knowledge documents; train/eval by a stable hash (lake datasets/).",
)
def sft_dataset(context: dg.AssetExecutionContext, pipeline_config: PipelineConfigResource, lake: DataLakeResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    params = pipeline_config.rag_params()
    records = sft_records(load_knowledge_documents(pipeline_config.catalog(), params.max_document_chars))
    path = lake.path("datasets", "sft.jsonl")
    write_jsonl(records, path)
    from collections import Counter

    sources = Counter(r["source"] for r in records)
    return _dataset_result(context, mlflow, records, path, {"by_source": markdown_table(["source", "records"], sorted(sources.items()))})


@dg.asset(
    group_name="models",
    kinds={"python", "json"},
    description="(prompt, chosen = correction, rejected = original) pairs from the authored question-answer-correction data, under data/value_principles.md (lake datasets/).",
)
def preference_dataset(context: dg.AssetExecutionContext, lake: DataLakeResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    from collections import Counter

    records = preference_records()
    path = lake.path("datasets", "preference.jsonl")
    write_jsonl(records, path)
    kinds = Counter(r["kind"] for r in records)
    return _dataset_result(context, mlflow, records, path, {"by_kind": markdown_table(["kind", "pairs"], sorted(kinds.items()))})


@dg.asset(
    deps=[cleaned_corpus, sft_dataset],
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
    summary, model_dir, reported = _train_stage(
        context, "base_model", "pretrain", pipeline_config, lake, mlflow, training_launcher,
        corpus=_corpus(lake), language_mix=pipeline_config.language_mix(),
        sft_dataset=str(lake.path("datasets", "sft.jsonl")),
    )
    return _stage_result(summary, model_dir, reported, mlflow, pipeline_config.preset, {})


def _corpus(lake: DataLakeResource) -> str:
    """The current cleaned_corpus version's `cleaned.parquet`, resolved once: a training job
    reads the version that was current when it started, even if a newer one is published
    while it runs (the MLflow run records this path)."""
    return str(lake.path(CLEANED_DIR, "cleaned.parquet").resolve())


def _stage_result(summary: dict, model_dir: Path, reported: dg.MaterializeResult, mlflow: MlflowResource, preset: str, tables: dict) -> dg.MaterializeResult:
    from hkgai_pipelines.training.quality import perplexity_rows

    return dg.MaterializeResult(
        metadata={
            **(reported.metadata or {}),
            "preset": preset,
            "perplexity_by_language": markdown_table(
                ["held-out set", "lang", "before", "after"], perplexity_rows(summary["quality_before"], summary["quality_after"])
            ),
            **tables,
            "training_figures": _training_figures(summary),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(summary["mlflow_run_id"])),
            "checkpoint_uri": str(model_dir),
            "path": dg.MetadataValue.path(str(model_dir)),
        },
        data_version=dg.DataVersion(summary["mlflow_run_id"]),
    )


def _training_figures(summary: dict) -> dg.MetadataValue:
    """Which MLflow metric holds each training figure above, and the MLflow figure that looks
    like one of them but is not (Hugging Face's `train_loss`, the mean over all steps)."""
    from hkgai_pipelines.training.common import SUMMARY_METRICS

    meaning = {"first_loss": "loss of the first logged step", "final_loss": "loss of the last logged step",
               "tokens_per_second": "median of the rates measured between log lines"}
    rows = [(key, SUMMARY_METRICS[key], text) for key, text in meaning.items() if summary.get(key) is not None]
    rows.append(("-", "train_summary/mean_loss_all_steps", "mean loss over all steps (Hugging Face's train_loss)"))
    return markdown_table(["Dagster", "MLflow metric", "figure"], rows)


def _train_stage(
    context: dg.AssetExecutionContext, asset: str, module: str, pipeline_config: PipelineConfigResource,
    lake: DataLakeResource, mlflow: MlflowResource, launcher: TrainingLauncher, **fields,
) -> tuple[dict, Path, dg.MaterializeResult]:
    """Launch `hkgai_pipelines.training.<module>` for `asset` and publish its model directory;
    `fields` are the stage-specific job fields (datasets, the model it starts from)."""
    folder = stage_folder(lake, asset)
    job = {
        "preset": pipeline_config.preset, "output_dir": str(folder), "tracking_uri": mlflow.tracking_uri,
        "experiment": mlflow.experiment_name, "run_name": asset, "config_dir": pipeline_config.config_dir,
        "artifact_root": mlflow.artifact_location, **fields,
    }
    reported = launcher.launch(context, f"hkgai_pipelines.training.{module}", job, folder / "job.json")
    summary = json.loads((folder / "summary.json").read_text())
    return summary, publish(lake, asset, folder, summary["mlflow_run_id"]), reported


@dg.asset(
    deps=[base_model, sft_dataset],
    group_name="models",
    kinds={"pytorch", "mlflow"},
    retry_policy=dg.RetryPolicy(max_retries=1),
    description="Full-parameter supervised fine-tuning of base_model on sft_dataset (assistant tokens only).",
)
def sft_checkpoint(
    context: dg.AssetExecutionContext, pipeline_config: PipelineConfigResource, lake: DataLakeResource,
    mlflow: MlflowResource, training_launcher: TrainingLauncher,
) -> dg.MaterializeResult:
    summary, model_dir, reported = _train_stage(
        context, "sft_checkpoint", "sft", pipeline_config, lake, mlflow, training_launcher,
        dataset=str(lake.path("datasets", "sft.jsonl")), base_model=str(lake.path("models", "base_model", "latest").resolve()),
        corpus=_corpus(lake),
    )
    return _stage_result(summary, model_dir, reported, mlflow, pipeline_config.preset, {})


@dg.asset(
    deps=[sft_checkpoint, preference_dataset],
    group_name="models",
    kinds={"pytorch", "mlflow"},
    retry_policy=dg.RetryPolicy(max_retries=1),
    description="sft_checkpoint aligned to the value principles with DPO (trl DPOTrainer) on preference_dataset.",
)
def aligned_model(
    context: dg.AssetExecutionContext, pipeline_config: PipelineConfigResource, lake: DataLakeResource,
    mlflow: MlflowResource, training_launcher: TrainingLauncher,
) -> dg.MaterializeResult:
    summary, model_dir, reported = _train_stage(
        context, "aligned_model", "dpo", pipeline_config, lake, mlflow, training_launcher,
        dataset=str(lake.path("datasets", "preference.jsonl")), sft_model=str(lake.path("models", "sft_checkpoint", "latest").resolve()),
        corpus=_corpus(lake), sft_dataset=str(lake.path("datasets", "sft.jsonl")),
    )
    table = markdown_table(
        ["pairs", "reward accuracy", "reward margin"],
        [("held-out, before", summary["heldout_reward_accuracy_before"], summary["heldout_reward_margin_before"]),
         ("held-out, after", summary["heldout_reward_accuracy"], summary["heldout_reward_margin"]),
         ("training, after", summary["train_reward_accuracy"], summary["train_reward_margin"])],
    )
    return _stage_result(summary, model_dir, reported, mlflow, pipeline_config.preset, {"dpo_rewards": table})


model_assets = [sft_dataset, preference_dataset, base_model, sft_checkpoint, aligned_model]
