"""`hkgai demo`: materialize the whole asset graph into the persistent Dagster instance.

The graph runs the way an operator would run it from the UI: one run per source partition
of `raw_documents` (a backfill), then one run of every downstream asset with its checks.
Each run is recorded in `$HKGAI_HOME/dagster`, so `hkgai ui` shows them afterwards. The runs
execute in this process and carry its pid (`hkgai/pid`), so that a later `hkgai demo` or
`hkgai ui` marks them failed if this process is killed before they finish.

The runs belong to the code location the UI serves, as runs launched from the UI do: each is
created from the location's job (its remote origin names the location `CODE_LOCATION_MODULE`
and the repository), so the UI lists it under Jobs -> <job> -> Runs and on the Overview
timeline, and can re-execute it. `dagster job execute` and `execute_in_process` record no such
origin. The location is loaded in this process (no code server is started): the module is the
one `hkgai ui` serves with `dagster dev -m`, and its name is the location's name there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hkgai_pipelines.settings import HkgaiSettings

if TYPE_CHECKING:
    import dagster as dg
    from dagster._core.execution.job_execution_result import JobExecutionResult
    from dagster._core.remote_representation.code_location import CodeLocation


# Dagster's console logger prints every step event at DEBUG; the demo prints its own progress
# and the full event log stays in the instance for the UI.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The default executor would start a process per step, as a run launched from the UI does; the
# demo runs every step in its own process, as `execute_in_process` did.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}

#: The code location module: what `hkgai ui` serves (`dagster dev -m`, platform.dagster_ui_command)
#: and the code server of the Helm chart runs (`dagster api grpc -m`, k8s/dagster/values.yaml).
CODE_LOCATION_MODULE = "hkgai_pipelines.definitions"
#: The location's name in the Helm chart's workspace: its user deployment's name.
HELM_CODE_LOCATION = "hkgai-pipelines"


def code_location_name(settings: HkgaiSettings) -> str:
    """The name the Dagster UI gives the project's code location: `dagster dev -m MODULE` names
    it after the module; on the production profile the Helm chart names it after the deployment."""
    return HELM_CODE_LOCATION if settings.profile == "production" else CODE_LOCATION_MODULE


@dataclass
class DemoRun:
    job: str
    partition: str | None
    run_id: str
    success: bool
    seconds: float


@dataclass
class DemoSummary:
    runs: list[DemoRun] = field(default_factory=list)
    materialized: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(run.success for run in self.runs) and all(self.checks.values())


@contextlib.contextmanager
def code_location(instance: dg.DagsterInstance, location_name: str, module: str = CODE_LOCATION_MODULE) -> Iterator[CodeLocation]:
    """The code location `module` loaded in this process under `location_name`."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    # What `dagster dev -m module` loads (load.location_origin_from_module_name), in this process.
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=module, working_directory=os.getcwd())
    origin = InProcessCodeLocationOrigin(loadable_target_origin=target, location_name=location_name)
    with origin.create_location(instance) as location:
        yield location


def execute_job(
    instance: dg.DagsterInstance,
    location: CodeLocation,
    job_name: str,
    partition: str | None = None,
    tags: dict[str, str] | None = None,
    run_config: dict | None = None,
) -> JobExecutionResult:
    """Create a run of the location's job `job_name` (of `partition`) the way the UI's launchpad
    does, with the job's remote origin and code origin, and execute it in this process.

    The run's tags are the job's, `tags`, and the partition's; raises DagsterUnknownPartitionError
    for a partition the job does not have.
    """
    from dagster import multi_or_in_process_executor
    from dagster._core.execution.api import execute_run
    from dagster._core.execution.execute_in_process import merge_run_tags
    from dagster._utils.hosted_user_process import recon_job_from_origin

    (repository,) = location.get_repositories().values()
    remote_job = repository.get_full_job(job_name)
    recon_job = recon_job_from_origin(remote_job.get_python_origin())
    job_def = recon_job.get_definition()
    run_config = dict(run_config or {})
    if job_def.executor_def is multi_or_in_process_executor:
        run_config = {**run_config, **IN_PROCESS}
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        # As execute_in_process tags a run: the job's run tags, `tags`, the partition's.
        tags=merge_run_tags(job_def, partition, tags, None, instance, run_config),
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    return execute_run(recon_job, run, instance, raise_on_error=False)


def run_demo(
    settings: HkgaiSettings,
    on_progress: Callable[[str], None] = print,
    jobs: Sequence[tuple[str, str | None]] | None = None,
) -> DemoSummary:
    """Run the demo's jobs in order, stopping at the first failed run.

    `jobs`: (job, partition) pairs to run instead of the whole graph (ingest_sources for every
    source partition, then build_downstream).
    """
    from hkgai_pipelines.platform import fail_dead_runs, get_instance, process_tags

    instance = get_instance(settings)
    # A demo killed mid-way left its run STARTED; only `hkgai ui`'s daemon would have noticed.
    for run_id in fail_dead_runs(instance):
        on_progress(f"run {run_id[:8]} of an earlier process that is gone: marked failed")
    from hkgai_pipelines.definitions import source_partitions

    if jobs is None:
        jobs = [*(("ingest_sources", partition) for partition in source_partitions.get_partition_keys()), ("build_downstream", None)]
    summary = DemoSummary()

    def execute(location: CodeLocation, job_name: str, partition: str | None = None) -> DemoRun:
        started = time.monotonic()
        on_progress(f"{job_name}" + (f" [{partition}]" if partition else "") + " ...")
        result = execute_job(instance, location, job_name, partition, tags=process_tags(), run_config=QUIET_LOGS)
        run = DemoRun(job_name, partition, result.run_id, result.success, time.monotonic() - started)
        summary.runs.append(run)
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            key = event.asset_key.to_user_string()
            if partition:
                key = f"{key}[{partition}]"
            summary.materialized[key] = {k: v.value for k, v in materialization.metadata.items() if isinstance(v.value, (int, float, str))}
        for evaluation in result.get_asset_check_evaluations():
            summary.checks[evaluation.check_name] = evaluation.passed
        on_progress(f"  {'ok' if result.success else 'FAILED'} in {run.seconds:.1f}s (run {result.run_id[:8]})")
        return run

    with code_location(instance, code_location_name(settings)) as location:
        for job_name, partition in jobs:
            if not execute(location, job_name, partition).success:
                break
    return summary
