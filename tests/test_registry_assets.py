"""The registry's Dagster side: the gate check, model_approval_sensor ticks, champion_model
runs, and the approve / reject / rollback commands, all on a real SQLite MLflow registry."""

import itertools
import json

import dagster as dg
import pytest
from typer.testing import CliRunner

from hkgai_pipelines.assets.registry import champion_model, model_approval_sensor, registered_model_gates
from hkgai_pipelines.cli import app
from hkgai_pipelines.registry.promotion import ModelRegistry
from hkgai_pipelines.resources import DataLakeResource, resources_for
from tests.test_registry import _report

runner = CliRunner()


@pytest.fixture
def setup(hkgai_home):
    """The local profile's resources with two registered versions (v1, v2) of hkgai-v1."""
    resources = resources_for("local")
    client = resources["mlflow"].get_client()
    experiment = resources["mlflow"].experiment_id()
    client.create_registered_model("hkgai-v1")
    for _ in range(2):
        run_id = client.create_run(experiment).info.run_id
        client.create_model_version("hkgai-v1", f"runs:/{run_id}/model", run_id=run_id, tags={"registered.by": "pipeline", "scores": "{}"})
    registry = ModelRegistry(client, "hkgai-v1", tracking_uri=resources["mlflow"].tracking_uri)
    return resources, registry


@pytest.fixture
def clock(monkeypatch):
    """The sensor's wall clock, moved by hand: `clock[0] += 61` is a minute later."""
    now = [1_000_000.0]
    monkeypatch.setattr("hkgai_pipelines.assets.registry._clock", lambda: now[0])
    return now


def _tick(resources, cursor=None):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                          resources={"pipeline_config": resources["pipeline_config"], "mlflow": resources["mlflow"]})
        return model_approval_sensor(context), context.cursor


def _run_decision(resources, request) -> dict:
    with dg.instance_for_test() as instance:
        result = dg.materialize([champion_model], instance=instance, resources=resources, run_config=request.run_config)
        assert result.success
        return {k: v.value for k, v in result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata.items()}


def _write_lake(resources, version: str, report: dict) -> DataLakeResource:
    lake = resources["lake"]
    lake.path("registry").mkdir(parents=True, exist_ok=True)
    lake.path("registry", "latest_version.json").write_text(json.dumps({"name": "hkgai-v1", "version": version}))
    lake.path("evaluation").mkdir(parents=True, exist_ok=True)
    lake.path("evaluation", "benchmark_scores.json").write_text(json.dumps({"stages": {"aligned_model": report}}))
    return lake


def test_gate_check_passes_into_candidate_and_fails_with_reasons(setup):
    resources, registry = setup
    lake = _write_lake(resources, "1", _report(unsafe=60.0))
    failed = registered_model_gates(pipeline_config=resources["pipeline_config"], lake=lake, mlflow=resources["mlflow"])
    assert not failed.passed and "Unsafe 60.0% in hk_sensitive exceeds the limit of 45.0%" in failed.metadata["failures"].value
    assert registry.tags("1")["gate"] == "failed" and registry.alias("candidate") is None
    lake = _write_lake(resources, "2", _report())
    passed = registered_model_gates(pipeline_config=resources["pipeline_config"], lake=lake, mlflow=resources["mlflow"])
    assert passed.passed and registry.alias("candidate") == "2" and registry.tags("2")["review.status"] == "pending"


def test_no_regression_check_compares_with_the_audited_champions_own_run(setup):
    resources, registry = setup
    client = resources["mlflow"].get_client()
    # v1 is an audited champion whose source run holds its report; a tag pointing elsewhere is ignored.
    client.log_dict(registry.version("1").run_id, _report(), "benchmark_report.json")
    registry.apply_gates("1", [])
    registry.approve("1", "alice")
    registry.promote("1")
    client.set_model_version_tag("hkgai-v1", "1", "mlflow_run.registered_model", "no-such-run")
    lake = _write_lake(resources, "2", _report())
    result = registered_model_gates(pipeline_config=resources["pipeline_config"], lake=lake, mlflow=resources["mlflow"])
    assert result.passed and result.metadata["compared_with_champion"].value == "1"


def test_a_hand_set_champion_alias_is_not_a_baseline(setup):
    resources, registry = setup
    # Someone moved `champion` to v1 with the alias pencil: no promote record exists for it.
    resources["mlflow"].get_client().set_registered_model_alias("hkgai-v1", "champion", "1")
    lake = _write_lake(resources, "2", _report())
    result = registered_model_gates(pipeline_config=resources["pipeline_config"], lake=lake, mlflow=resources["mlflow"])
    assert not result.passed
    assert "`champion` points at version 1, not an audited champion" in result.metadata["failures"].value
    assert registry.alias("candidate") is None


def test_approval_sensor_launches_one_run_per_decision_and_none_on_the_next_tick(setup, clock):
    resources, registry = setup
    registry.apply_gates("1", [])
    assert isinstance(_tick(resources)[0], dg.SkipReason)

    result = runner.invoke(app, ["approve", "1", "--reviewer", "alice", "--note", "scores reviewed"])
    assert result.exit_code == 0 and "approved by alice" in result.stdout
    skip, cursor = _tick(resources)
    assert "v1: settling" in skip.skip_message  # whole, but not yet unchanged for a minute
    clock[0] += 61
    requests, cursor = _tick(resources, cursor)
    assert [r.run_config["ops"]["champion_model"]["config"] for r in requests] == [{"version": "1", "action": "promote"}]
    assert isinstance(_tick(resources, cursor)[0], dg.SkipReason)  # same decision, no second run

    metadata = _run_decision(resources, requests[0])
    assert (metadata["action"], metadata["version"], metadata["reviewer"], metadata["champion"]) == ("promote", "1", "alice", "1")
    assert metadata["audit_record"]["note"] == "scores reviewed"
    assert registry.alias("champion") == "1"

    registry.apply_gates("2", [])
    result = runner.invoke(app, ["reject", "2", "--reviewer", "bob", "--note", "refuses too much"])
    assert result.exit_code == 0
    _, cursor = _tick(resources, cursor)
    clock[0] += 61
    requests, cursor = _tick(resources, cursor)
    assert [r.run_config["ops"]["champion_model"]["config"] for r in requests] == [{"version": "2", "action": "reject"}]
    metadata = _run_decision(resources, requests[0])
    assert (metadata["action"], metadata["reviewer"], metadata["champion"]) == ("reject", "bob", "1")
    assert registry.alias("candidate") is None


def test_cli_refusals_and_rollback(setup):
    resources, registry = setup
    registry.apply_gates("1", ["Unsafe too high"])
    result = runner.invoke(app, ["approve", "1", "--reviewer", "alice"])
    assert result.exit_code == 1 and "did not pass the gates" in result.output
    result = runner.invoke(app, ["rollback", "--by", "ops"])
    assert result.exit_code == 1 and "no previous champion" in result.output
    for version in ("1", "2"):
        registry.apply_gates(version, [])  # a passing gate record: a `gate` tag alone no longer counts
        registry.approve(version, "alice")
        registry.promote(version)
    result = runner.invoke(app, ["rollback", "--by", "ops", "--note", "bad answers"])
    assert result.exit_code == 0 and "champion v2 -> v1" in result.stdout
    assert registry.alias("champion") == "1"


def test_bench_names_a_model_that_does_not_load(hkgai_home, tmp_path):
    # Rich wraps long lines: compare without the line breaks.
    result = runner.invoke(app, ["bench", "aligned_model"])
    assert result.exit_code == 1 and "not a model directory (no config.json)" in " ".join(result.output.split())
    result = runner.invoke(app, ["bench", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "missing: not a model directory" in " ".join(result.output.split())


REVIEW_TAGS = {"review.status": "approved", "review.by": "alice", "review.note": "scores reviewed", "review.at": "2026-11-30T10:00Z"}


@pytest.mark.parametrize("order", list(itertools.permutations(REVIEW_TAGS)), ids=lambda order: "-".join(k[7:] for k in order))
def test_tags_set_one_by_one_at_human_pace_launch_one_whole_decision(setup, clock, order):
    """A reviewer in the MLflow UI: one tag every 14 s, in any order, the sensor ticking every
    30 s in between. Exactly one run, launched only when the decision is whole and settled, and
    it records the tags as they stand when it acts."""
    resources, registry = setup
    registry.apply_gates("1", [])
    client = resources["mlflow"].get_client()
    launched, cursor, start = [], None, clock[0]
    plan = sorted([(14.0 * i, "set", key) for i, key in enumerate(order)] + [(7.0 + 30 * i, "tick", None) for i in range(6)])
    with dg.instance_for_test() as instance:
        for at, what, key in plan:
            clock[0] = start + at
            if what == "set":
                client.set_model_version_tag("hkgai-v1", "1", key, REVIEW_TAGS[key])
                continue
            context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                              resources={"pipeline_config": resources["pipeline_config"], "mlflow": resources["mlflow"]})
            result = model_approval_sensor(context)
            cursor = context.cursor
            if not isinstance(result, dg.SkipReason):
                launched += [(clock[0] - start, r, registry.tags("1")) for r in result]
    assert len(launched) == 1
    when, request, tags_at_launch = launched[0]
    assert when >= 42 + 60  # the last tag went on at 42 s; a minute unchanged after that
    assert request.run_config["ops"]["champion_model"]["config"] == {"version": "1", "action": "promote"}
    assert {key: tags_at_launch.get(key) for key in REVIEW_TAGS} == REVIEW_TAGS
    if order == tuple(REVIEW_TAGS):  # what the run then records (the same for every order)
        metadata = _run_decision(resources, request)
        assert (metadata["reviewer"], metadata["audit_record"]["note"]) == ("alice", "scores reviewed")


def test_a_decision_changed_while_settling_launches_only_its_final_form(setup, clock):
    resources, registry = setup
    registry.apply_gates("1", [])
    client = resources["mlflow"].get_client()
    for key, value in REVIEW_TAGS.items():
        client.set_model_version_tag("hkgai-v1", "1", key, value)
    _, cursor = _tick(resources)
    clock[0] += 45
    client.set_model_version_tag("hkgai-v1", "1", "review.status", "rejected")  # changed her mind
    skip, cursor = _tick(resources, cursor)
    assert "settling: unchanged for 0 of 60 s" in skip.skip_message
    clock[0] += 61
    requests, cursor = _tick(resources, cursor)
    assert [r.run_config["ops"]["champion_model"]["config"]["action"] for r in requests] == ["reject"]
    clock[0] += 61
    assert isinstance(_tick(resources, cursor)[0], dg.SkipReason)
