"""Operating the local platform: the standard Dagster CLI against the code location, and runs
whose process was killed (kill -9) marked failed instead of staying STARTED forever."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.launcher import WorkerStatus

from hkgai_pipelines import platform
from hkgai_pipelines.settings import HkgaiSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).with_name("dagster"))


@pytest.fixture
def instance_home(hkgai_home, monkeypatch) -> HkgaiSettings:
    """A local home with hkgai's dagster.yaml; DAGSTER_HOME points at it for this test only."""
    monkeypatch.setenv("DAGSTER_HOME", str(hkgai_home / "dagster"))
    settings = HkgaiSettings()
    platform.prepare_home(settings)
    return settings


def _dagster_cli(settings: HkgaiSettings, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAGSTER_HOME=str(settings.dagster_home), HKGAI_HOME=str(settings.home_dir))
    return subprocess.run([DAGSTER, *args], cwd=settings.home_dir, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(600)
def test_the_dagster_cli_selects_materializes_and_launches(instance_home):
    """`dagster asset materialize --select` crashed in antlr4 ("ord() expected string of length
    1"): DVC's hydra-core pinned the 4.9 runtime under Dagster's 4.13 grammar."""
    listed = _dagster_cli(instance_home, "asset", "list", "-m", "hkgai_pipelines.definitions", "--select", "value_benchmark")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert listed.stdout.split() == ["value_benchmark"]

    materialized = _dagster_cli(
        instance_home, "asset", "materialize", "-m", "hkgai_pipelines.definitions",
        "--select", "raw_documents", "--partition", "hk_knowledge",
    )
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    assert "RUN_SUCCESS" in materialized.stderr + materialized.stdout
    assert (instance_home.lake_dir / "raw" / "hk_knowledge.parquet").exists()

    launched = _dagster_cli(
        instance_home, "job", "launch", "-m", "hkgai_pipelines.definitions", "-j", "ingest_sources",
        "--tags", json.dumps({"dagster/partition": "local_samples"}),
    )
    assert launched.returncode == 0, launched.stderr[-3000:]

    instance = dg.DagsterInstance.get()
    assert isinstance(instance.run_launcher, platform.LocalRunLauncher)
    runs = {run.job_name: run for run in instance.get_runs()}
    assert runs["__ASSET_JOB"].status == dg.DagsterRunStatus.SUCCESS
    assert runs["__ASSET_JOB"].tags["dagster/partition"] == "hk_knowledge"
    # The daemon of `hkgai ui` (QueuedRunCoordinator) starts the launched run.
    assert runs["ingest_sources"].status == dg.DagsterRunStatus.QUEUED
    assert runs["ingest_sources"].tags["dagster/partition"] == "local_samples"


STUCK_RUN = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    from hkgai_pipelines.platform import get_instance, process_tags
    from hkgai_pipelines.settings import HkgaiSettings

    @dg.op
    def wait_forever():
        time.sleep(600)

    @dg.job
    def stuck():
        wait_forever()

    # "demo": the way `hkgai demo` runs a job; "cli": untagged, like `dagster asset materialize`
    # or a run worker started by the run launcher (only the engine events record the pid).
    tags = process_tags() if sys.argv[1] == "demo" else {}
    stuck.execute_in_process(instance=get_instance(HkgaiSettings()), tags={**tags, "test/mode": sys.argv[1]})
    """
)


def _wait_for_step(instance: dg.DagsterInstance, mode: str, process: subprocess.Popen) -> dg.RunRecord:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the {mode} run's process exited early"
        for record in instance.get_run_records(dg.RunsFilter(tags={"test/mode": mode})):
            steps = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START)
            if record.dagster_run.status == dg.DagsterRunStatus.STARTED and steps:
                return record
        time.sleep(0.5)
    raise AssertionError(f"the {mode} run never reached its step")


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    (event,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return event.message


@pytest.mark.timeout(300)
def test_a_killed_run_is_marked_failed(instance_home, tmp_path):
    script = tmp_path / "stuck_run.py"
    script.write_text(STUCK_RUN)
    env = dict(os.environ, DAGSTER_HOME=str(instance_home.dagster_home), HKGAI_HOME=str(instance_home.home_dir))
    processes = {mode: subprocess.Popen([sys.executable, str(script), mode], env=env) for mode in ("demo", "cli")}
    try:
        instance = platform.get_instance(instance_home)  # at once with both processes: see below
        records = {mode: _wait_for_step(instance, mode, process) for mode, process in processes.items()}

        # Alive: nothing is touched, and the launcher tells the daemon so.
        assert platform.fail_dead_runs(instance) == []
        for record in records.values():
            assert instance.run_launcher.check_run_worker_health(record.dagster_run).status == WorkerStatus.RUNNING
        assert platform.run_process(instance, records["demo"]).pid == processes["demo"].pid
        assert platform.run_process(instance, records["cli"]).pid == processes["cli"].pid

        for process in processes.values():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        demo_run, cli_run = records["demo"].dagster_run.run_id, records["cli"].dagster_run.run_id
        assert instance.get_run_by_id(demo_run).status == dg.DagsterRunStatus.STARTED  # what the fault left

        # What `hkgai demo` and `hkgai ui` do first: both runs failed, each naming its process.
        assert sorted(platform.fail_dead_runs(instance)) == sorted([demo_run, cli_run])
        for mode, run_id in (("demo", demo_run), ("cli", cli_run)):
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            assert f"pid {processes[mode].pid}" in _failure_message(instance, run_id)
        assert platform.fail_dead_runs(instance) == []
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.timeout(300)
def test_the_daemons_run_monitoring_fails_a_run_whose_worker_was_killed(instance_home, tmp_path):
    """What `hkgai ui`'s daemon does every poll_interval_seconds, through Dagster's own code."""
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    script = tmp_path / "stuck_run.py"
    script.write_text(STUCK_RUN)
    env = dict(os.environ, DAGSTER_HOME=str(instance_home.dagster_home), HKGAI_HOME=str(instance_home.home_dir))
    process = subprocess.Popen([sys.executable, str(script), "cli"], env=env)
    try:
        instance = platform.get_instance(instance_home)
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        record = _wait_for_step(instance, "cli", process)
        monitor_started_run(instance, None, record, logging.getLogger("test"))
        assert instance.get_run_by_id(record.dagster_run.run_id).status == dg.DagsterRunStatus.STARTED

        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        monitor_started_run(instance, None, instance.get_run_record_by_id(record.dagster_run.run_id), logging.getLogger("test"))
        assert instance.get_run_by_id(record.dagster_run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert f"pid {process.pid}" in _failure_message(instance, record.dagster_run.run_id)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_existing_homes_get_run_monitoring_and_hand_edited_configs_are_kept(hkgai_home, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(hkgai_home / "dagster"))
    config = hkgai_home / "dagster" / "dagster.yaml"
    config.parent.mkdir(parents=True)
    # What earlier versions wrote.
    config.write_text("# Written by hkgai: the persistent local Dagster instance (SQLite under this folder).\ntelemetry:\n  enabled: false\n")
    platform.prepare_home(HkgaiSettings())
    assert config.read_text() == platform.DAGSTER_YAML
    config.write_text("telemetry:\n  enabled: true\n")
    platform.prepare_home(HkgaiSettings())
    assert config.read_text() == "telemetry:\n  enabled: true\n"


def test_production_never_puts_the_dagster_instance_on_the_lake_volume(hkgai_home, monkeypatch):
    monkeypatch.setenv("HKGAI_PROFILE", "production")
    monkeypatch.setenv("HKGAI_MLFLOW_TRACKING_URI", "https://mlflow.internal")
    monkeypatch.setenv("HKGAI_DVC_REMOTE", "s3://hkgai-data/dvc")
    monkeypatch.setenv("HKGAI_WEAVIATE_URL", "https://weaviate.internal")
    monkeypatch.setenv("DAGSTER_HOME", str(hkgai_home / "dagster"))
    with pytest.raises(RuntimeError, match="kept apart"):
        platform.prepare_home(HkgaiSettings())
    monkeypatch.delenv("DAGSTER_HOME")
    with pytest.raises(RuntimeError, match="Helm chart"):
        platform.prepare_home(HkgaiSettings())
    chart_home = hkgai_home.parent / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(chart_home))
    assert platform.prepare_home(HkgaiSettings()) == chart_home
    assert not (hkgai_home / "dagster").exists()


OPEN_INSTANCE = textwrap.dedent(
    """
    import sys, time
    from hkgai_pipelines.platform import get_instance
    from hkgai_pipelines.settings import HkgaiSettings

    start = float(sys.argv[1])
    time.sleep(max(0.0, start - time.time()))
    get_instance(HkgaiSettings()).dispose()
    """
)


@pytest.mark.timeout(300)
def test_processes_opening_a_fresh_home_at_once_all_get_the_instance(hkgai_home, tmp_path):
    """CI failure: `table asset_daemon_asset_evaluations already exists` when two processes
    created a new home's SQLite instance together. Four processes open it at the same instant."""
    script = tmp_path / "open_instance.py"
    script.write_text(OPEN_INSTANCE)
    env = dict(os.environ, HKGAI_HOME=str(hkgai_home), DAGSTER_HOME=str(hkgai_home / "dagster"))
    start = time.time() + 8  # after every interpreter has imported Dagster
    processes = [
        subprocess.Popen([sys.executable, str(script), str(start)], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [process.communicate(timeout=240)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], "\n".join(e[-2000:] for e in errors)
