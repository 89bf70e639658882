"""MLflow run and Dagster Pipes bookkeeping for training stages: one run per stage output
folder, reused when a killed run is resumed (the run id is kept beside the checkpoints).

Under torchrun every rank runs the entry point. Only global rank 0 talks to MLflow and Pipes:
the ranks of a pod share its stdout (the Pipes message channel), and one stage is one MLflow run
and one materialization however many GPUs trained it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class OtherRankClient:
    """The MLflow client of ranks other than 0: every call is a no-op."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def open_stage_pipes():
    """`open_dagster_pipes()` on rank 0; on other ranks the Pipes no-op context."""
    from dagster_pipes import DagsterPipesWarning, open_dagster_pipes

    if not is_rank_zero():
        for key in [k for k in os.environ if k.startswith("DAGSTER_PIPES_")]:
            del os.environ[key]
        warnings.simplefilter("ignore", DagsterPipesWarning)
    return open_dagster_pipes()


def open_stage_run(tracking_uri: str, experiment: str, run_name: str, output_dir: Path, artifact_root: str | None = None):
    """(client, run_id, resumed): the stage's existing run when one was started for this folder."""
    if not is_rank_zero():
        return OtherRankClient(), None, False
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
    if not is_rank_zero():
        return
    import json
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, int(summary.get("steps", 0))) for k, v in metrics.items()])
    (Path(output_dir) / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    client.log_artifact(run_id, str(Path(output_dir) / "summary.json"))
    client.log_artifacts(run_id, str(final_dir), artifact_path="checkpoint")
    client.set_terminated(run_id, "FINISHED")
    # Figures as a reader takes them in (8.231, not 8.230752563476562); summary.json and MLflow
    # keep full precision. Perplexities are left to the asset's own table (said once).
    scalars = {k: significant(v) for k, v in summary.items() if isinstance(v, (int, float, str)) and v is not None}
    tables = {k: {"raw_value": v, "type": "json"} for k, v in summary.items()
              if isinstance(v, dict) and k not in ("quality_before", "quality_after")}
    pipes.report_asset_materialization(metadata={**scalars, **tables}, data_version=run_id)


def significant(value, digits: int = 4):
    """A float rounded to `digits` significant digits (8.230752563476562 -> 8.231,
    4505.97640565686 -> 4506.0); ints, bools and strings unchanged."""
    if isinstance(value, float) and not isinstance(value, bool) and value == value and abs(value) != float("inf"):
        return float(f"{value:.{digits}g}")
    return value
