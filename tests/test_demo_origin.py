"""`hkgai demo`'s runs belong to the code location `hkgai ui` serves, as runs launched from the
UI do: the UI lists them under Jobs -> <job> -> Runs and on the Overview timeline. Runs executed
with `execute_in_process` had no remote origin, and the UI found none of them ("No runs found")."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from hkgai_pipelines import platform
from hkgai_pipelines.demo import CODE_LOCATION_MODULE, HELM_CODE_LOCATION, code_location_name, run_demo
from hkgai_pipelines.settings import HkgaiSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: What the UI calls the location of `dagster dev -m hkgai_pipelines.definitions`, and the
#: repository a `Definitions` object makes.
UI_LOCATION = "hkgai_pipelines.definitions"
UI_REPOSITORY_LABEL = f"__repository__@{UI_LOCATION}"


@pytest.fixture
def instance_home(hkgai_home, monkeypatch) -> HkgaiSettings:
    """A local home; DAGSTER_HOME points at it for this test only."""
    monkeypatch.setenv("DAGSTER_HOME", str(hkgai_home / "dagster"))
    return HkgaiSettings()


def _ui_location_name() -> str:
    """The location name Dagster gives the workspace `hkgai ui` starts (`dagster dev -m MODULE`)."""
    from dagster._cli.workspace.cli_target import WorkspaceOpts, workspace_opts_to_load_target

    command = platform.dagster_ui_command(3000)
    dev = command.index("dev")
    assert not {"-w", "--workspace", "-f", "--python-file"} & set(command[dev:])  # no workspace.yaml renames it
    module = command[command.index("-m", dev) + 1]
    (origin,) = workspace_opts_to_load_target(WorkspaceOpts(module_name=[module])).create_origins()
    return origin.location_name


def test_the_demo_names_the_location_as_the_ui_and_the_helm_chart_do(hkgai_home):
    assert _ui_location_name() == UI_LOCATION == CODE_LOCATION_MODULE
    assert code_location_name(HkgaiSettings()) == UI_LOCATION
    values = yaml.safe_load((PROJECT_ROOT / "k8s" / "dagster" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["name"] == HELM_CODE_LOCATION and deployment["dagsterApiGrpcArgs"] == ["-m", CODE_LOCATION_MODULE]
    production = HkgaiSettings(profile="production", mlflow_tracking_uri="http://mlflow:5000", dvc_remote="s3://lake", weaviate_url="http://weaviate:8080")
    assert code_location_name(production) == HELM_CODE_LOCATION


RUNS_OF_JOB = """
query ($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs { runId repositoryOrigin { repositoryLocationName repositoryName } } }
  }
}
"""


@pytest.mark.timeout(300)
def test_demo_runs_are_the_runs_of_the_ui_job(instance_home):
    progress: list[str] = []
    summary = run_demo(instance_home, on_progress=progress.append, jobs=[("ingest_sources", "hk_knowledge")])

    assert summary.success, progress
    (demo_run,) = summary.runs
    assert (demo_run.job, demo_run.partition) == ("ingest_sources", "hk_knowledge")
    assert summary.materialized["raw_documents[hk_knowledge]"]["records"] > 0
    assert progress[0] == "ingest_sources [hk_knowledge] ..."
    assert progress[-1].startswith("  ok in ") and demo_run.run_id[:8] in progress[-1]

    instance = dg.DagsterInstance.get()
    # What the UI asks for a job's runs (dagster_graphql Pipeline.resolve_runs): the job's name and
    # the label of the repository the job's location holds.
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="ingest_sources", tags={REPOSITORY_LABEL_TAG: UI_REPOSITORY_LABEL}))
    assert [run.run_id for run in runs] == [demo_run.run_id]
    (run,) = runs
    assert run.status == dg.DagsterRunStatus.SUCCESS
    origin = run.remote_job_origin
    assert origin is not None and origin.job_name == "ingest_sources"
    assert origin.location_name == _ui_location_name() == UI_LOCATION
    assert origin.repository_origin.repository_name == "__repository__"
    assert origin.repository_origin.get_label() == UI_REPOSITORY_LABEL
    assert run.job_code_origin is not None and run.job_code_origin.job_name == "ingest_sources"
    assert run.tags["dagster/code_location"] == UI_LOCATION
    assert run.tags["dagster/partition"] == "hk_knowledge"
    assert run.tags[platform.PID_TAG] == str(os.getpid()) and run.tags[platform.HOST_TAG] == socket.gethostname()
    assert run.run_config["loggers"]["console"]["config"]["log_level"] == "WARNING"
    assert run.run_config["execution"] == {"config": {"in_process": {}}}  # no process per step

    # The same through the UI's GraphQL schema: Jobs -> ingest_sources -> Runs of that location.
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    target = InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name=CODE_LOCATION_MODULE), location_name=UI_LOCATION))
    with WorkspaceProcessContext(instance, target) as workspace:
        selector = {"repositoryLocationName": UI_LOCATION, "repositoryName": "__repository__", "pipelineName": "ingest_sources"}
        result = execute_dagster_graphql(workspace.create_request_context(), RUNS_OF_JOB, {"selector": selector})
    assert result.errors is None, result.errors
    job = result.data["pipelineOrError"]
    assert job["__typename"] == "Pipeline"
    assert job["runs"] == [{"runId": demo_run.run_id, "repositoryOrigin": {"repositoryLocationName": UI_LOCATION, "repositoryName": "__repository__"}}]
