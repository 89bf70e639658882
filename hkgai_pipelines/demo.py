"""`hkgai demo`: materialize the whole asset graph into the persistent Dagster instance.

The graph runs the way an operator would run it from the UI: one run per source partition
of `raw_documents` (a backfill), then one run of every downstream asset with its checks.
Each run is recorded in `$HKGAI_HOME/dagster`, so `hkgai ui` shows them afterwards. The runs
execute in this process and carry its pid (`hkgai/pid`), so that a later `hkgai demo` or
`hkgai ui` marks them failed if this process is killed before they finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hkgai_pipelines.settings import HkgaiSettings


# Dagster's console logger prints every step event at DEBUG; the demo prints its own progress
# and the full event log stays in the instance for the UI.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


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


def run_demo(settings: HkgaiSettings, on_progress: Callable[[str], None] = print) -> DemoSummary:
    import dagster as dg

    from hkgai_pipelines.platform import fail_dead_runs, get_instance, process_tags

    instance = get_instance(settings)
    # A demo killed mid-way left its run STARTED; only `hkgai ui`'s daemon would have noticed.
    for run_id in fail_dead_runs(instance):
        on_progress(f"run {run_id[:8]} of an earlier process that is gone: marked failed")
    from hkgai_pipelines.definitions import defs, source_partitions

    summary = DemoSummary()

    def execute(job_name: str, partition: str | None = None) -> dg.ExecuteInProcessResult:
        started = time.monotonic()
        on_progress(f"{job_name}" + (f" [{partition}]" if partition else "") + " ...")
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=partition, raise_on_error=False, run_config=QUIET_LOGS,
            tags=process_tags(),
        )
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
        return result

    for partition in source_partitions.get_partition_keys():
        execute("ingest_sources", partition)
        if not summary.runs[-1].success:
            return summary
    execute("build_downstream")
    return summary
