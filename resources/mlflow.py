"""MLflow tracking and registry as a typed resource.

Everything goes through an explicit `MlflowClient` bound to this resource's URIs rather than
mlflow's process-global tracking URI, so two resources (a test's and the demo's) never write
to each other's store.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

#: MLflow UI query parameter selecting the Model training workspace (MLflow 3's `workflowType`).
MODEL_TRAINING_WORKSPACE = "workflowType=machine_learning"


class MlflowResource(dg.ConfigurableResource):
    tracking_uri: str
    registry_uri: str | None = None
    experiment_name: str = "hkgai-v1"
    #: Where new experiments keep artifacts; None lets the server decide (production).
    artifact_location: str | None = None
    #: Base URL of the MLflow UI, for links in asset metadata.
    ui_url: str = "http://127.0.0.1:5000"

    _client: Any = PrivateAttr(default=None)

    def get_client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            from hkgai_pipelines.registry.promotion import bound_mlflow_waits

            # Before the first request: MLflow's own retries would wait ~4 min on a dead server.
            bound_mlflow_waits()
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)
        return self._client

    def experiment_id(self, name: str | None = None) -> str:
        client = self.get_client()
        name = name or self.experiment_name
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=self.artifact_location and f"{self.artifact_location}/{name}")

    def run_url(self, run_id: str) -> str:
        """The run's page in the MLflow UI, opened in its Model training workspace: MLflow 3 opens
        in GenAI, whose sidebar has no model registry and lists training runs as evaluation runs
        (the UI reads the workspace from this query parameter, then from the browser's storage)."""
        run = self.get_client().get_run(run_id)
        return f"{self.ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}?{MODEL_TRAINING_WORKSPACE}"

    def log_run(
        self,
        run_name: str,
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        artifacts: dict[str, Path] | None = None,
        json_artifacts: dict[str, Any] | None = None,
        experiment: str | None = None,
    ) -> str:
        """Create a finished run with the given params, metrics, tags and artifacts."""
        from mlflow.entities import Metric, Param, RunTag

        client = self.get_client()
        run = client.create_run(self.experiment_id(experiment), run_name=run_name, tags=tags or {})
        run_id = run.info.run_id
        try:
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items()],
                params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            )
            for name, path in (artifacts or {}).items():
                client.log_artifact(run_id, str(path), artifact_path=name)
            if json_artifacts:
                with tempfile.TemporaryDirectory() as folder:
                    for name, payload in json_artifacts.items():
                        target = Path(folder, name)
                        target.write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")
                        client.log_artifact(run_id, str(target))
            client.set_terminated(run_id, "FINISHED")
        except Exception:
            client.set_terminated(run_id, "FAILED")
            raise
        return run_id
