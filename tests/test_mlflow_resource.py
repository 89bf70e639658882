"""The MLflow resource against a real SQLite store."""

import json

from hkgai_pipelines.resources import MlflowResource


def test_log_run_and_read_it_back(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text('{"kept": 3}')
    resource = MlflowResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment_name="test-exp",
        artifact_location=(tmp_path / "artifacts").as_uri(),
        ui_url="http://127.0.0.1:5999",
    )
    run_id = resource.log_run(
        "cleaned_corpus",
        params={"threshold": 0.8},
        metrics={"kept": 3, "rejected": 1},
        tags={"asset": "cleaned_corpus"},
        artifacts={"curation": stats},
        json_artifacts={"report.json": {"ok": True}},
    )
    client = resource.get_client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "cleaned_corpus"
    assert run.data.params == {"threshold": "0.8"}
    assert run.data.metrics == {"kept": 3.0, "rejected": 1.0}
    assert run.data.tags["asset"] == "cleaned_corpus"
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["curation", "report.json"]
    downloaded = client.download_artifacts(run_id, "report.json", str(tmp_path / "dl"))
    assert json.loads(open(downloaded).read()) == {"ok": True}
    assert resource.run_url(run_id) == f"http://127.0.0.1:5999/#/experiments/{run.info.experiment_id}/runs/{run_id}?workflowType=machine_learning"
    # A second resource on the same store finds the same experiment rather than creating one.
    again = MlflowResource(tracking_uri=resource.tracking_uri, experiment_name="test-exp")
    assert again.experiment_id() == run.info.experiment_id
