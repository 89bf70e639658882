"""MLflow run bookkeeping for training stages: one run per stage output folder, reused when a
killed run is resumed (the run id is kept beside the checkpoints)."""

from __future__ import annotations

from pathlib import Path


def open_stage_run(tracking_uri: str, experiment: str, run_name: str, output_dir: Path, artifact_root: str | None = None):
    """(client, run_id, resumed): the stage's existing run when one was started for this folder."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    marker = Path(output_dir) / "mlflow_run_id"
    if marker.exists():
        run_id = marker.read_text().strip()
        try:
            client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
            return client, run_id, True
        except MlflowException:
            pass
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=f"{artifact_root}/{experiment}" if artifact_root else None
    )
    run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_id)
    return client, run_id, False


def log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        try:
            client.log_batch(run_id, params=items[start:start + 100])
        except MlflowException:
            # On resume the params are already logged (MLflow params are immutable).
            pass


def finish_stage(pipes, client, run_id: str, output_dir: Path, final_dir: Path, summary: dict, metrics: dict[str, float]) -> None:
    """Write summary.json, log the final metrics and the model to MLflow, close the run, and
    report the materialization through Pipes. Shared by pretrain, sft and dpo."""
    import json
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, int(summary.get("steps", 0))) for k, v in metrics.items()])
    (Path(output_dir) / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    client.log_artifact(run_id, str(Path(output_dir) / "summary.json"))
    client.log_artifacts(run_id, str(final_dir), artifact_path="checkpoint")
    client.set_terminated(run_id, "FINISHED")
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and v is not None}
    tables = {k: {"raw_value": v, "type": "json"} for k, v in summary.items() if isinstance(v, dict)}
    pipes.report_asset_materialization(metadata={**scalars, **tables}, data_version=run_id)
