"""The Kubernetes launch path against a fake API server (tests/fake_k8s.py): real dagster-k8s
and kubernetes-client code, real Dagster Pipes messages from the pod's process."""

import sys
import threading
import time

import dagster as dg
import pytest

from hkgai_pipelines.resources.k8s_pipes import TrainingPipesK8sClient
from hkgai_pipelines.training.k8s_watch import WatchLimits
from hkgai_pipelines.training.pod_spec import GpuPodOptions, training_pod_spec
from tests.fake_k8s import FakeCluster

#: What a training entry point does, in brief: report through Pipes, after SLEEP seconds.
POD_SCRIPT = """
import os, time
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("node rank " + os.environ.get("PET_NODE_RANK", "0"))
    time.sleep(float(os.environ.get("SLEEP", "0")))
    pipes.report_asset_materialization(metadata={"steps": 6, "nodes": os.environ.get("PET_NNODES", "1")})
"""
LIMITS = WatchLimits(poll_s=0.2, pending_timeout_s=20, run_timeout_s=60, unknown_grace_s=1)


@pytest.fixture
def cluster():
    fake = FakeCluster()
    yield fake
    fake.close()


def _options(sleep: float) -> GpuPodOptions:
    return GpuPodOptions(image="registry.example/hkgai:1.0", gpus=8, env_from_secrets=(), extra_env=(("SLEEP", str(sleep)),))


def _pod_spec(sleep: float) -> dict:
    return training_pod_spec(_options(sleep))


def _materialize(cluster, tmp_path, nodes: int = 1, sleep: float = 0.0, while_running=None):
    client = TrainingPipesK8sClient(load_incluster_config=False, kubeconfig_file=str(cluster.kubeconfig(tmp_path)), poll_interval=0.2)
    command = [sys.executable, "-c", POD_SCRIPT]

    @dg.asset
    def trained(context: dg.AssetExecutionContext):
        if nodes == 1:
            invocation = client.run_pod(context=context, image="registry.example/hkgai:1.0", command=command, namespace="hkgai",
                                        base_pod_spec=_pod_spec(sleep), base_pod_meta={"labels": {"app": "hkgai"}}, limits=LIMITS)
        else:
            options = _options(sleep)
            invocation = client.run_pytorchjob(context=context, options=options, command=command, nodes=nodes, limits=LIMITS)
        return invocation.get_materialize_result()

    if while_running:
        threading.Thread(target=while_running, daemon=True).start()
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        result = dg.materialize([trained], instance=instance, raise_on_error=False)
        elapsed = time.monotonic() - started
        failures = [_chain(e.event_specific_data.error) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    return result, elapsed, failures, logs


def _chain(error) -> str:
    """The error and its causes (Dagster wraps the asset's exception)."""
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return " <- ".join(messages)


def _wait_running(cluster, name_part: str) -> str:
    for _ in range(200):
        running = [n for n, p in list(cluster.pods.items()) if name_part in n and p["status"]["phase"] == "Running"]
        if running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError("pod never ran")


def test_single_pod_run_reports_its_materialization_and_is_deleted(cluster, tmp_path):
    result, _, failures, logs = _materialize(cluster, tmp_path)
    assert result.success, failures
    metadata = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert metadata["steps"].value == 6
    assert any("node rank 0" in m for m in logs)
    assert cluster.pods == {} and len(cluster.deleted) == 1  # torn down after success


def test_deleted_pod_fails_the_run_within_the_bound_even_with_a_hanging_log_stream(cluster, tmp_path):
    cluster.hang_logs = True

    def delete_it():
        cluster.delete_pod(_wait_running(cluster, ""))

    result, elapsed, failures, _ = _materialize(cluster, tmp_path, sleep=30, while_running=delete_it)
    assert not result.success
    assert "no longer exists: it was deleted" in failures[0]
    assert elapsed < 15  # the pod would have run 30 s; the stream never closes


def test_evicted_pod_fails_with_the_kubelet_reason_and_is_cleaned_up(cluster, tmp_path):
    def evict_it():
        cluster.evict(_wait_running(cluster, ""))

    result, elapsed, failures, _ = _materialize(cluster, tmp_path, sleep=30, while_running=evict_it)
    assert not result.success
    assert "was evicted: The node was low on resource: memory." in failures[0]
    assert elapsed < 15 and cluster.pods == {}


def test_two_node_pytorchjob_reads_pipes_from_rank_zero_and_tears_everything_down(cluster, tmp_path):
    result, _, failures, logs = _materialize(cluster, tmp_path, nodes=3)
    assert result.success, failures
    events = result.get_asset_materialization_events()
    assert len(events) == 1  # rank 0 only
    assert events[0].step_materialization_data.materialization.metadata["nodes"].value == "3"
    assert any("node rank 0" in m for m in logs) and not any("node rank 1" in m for m in logs)
    assert cluster.jobs == {} and cluster.pods == {}


def test_a_failed_worker_fails_the_job_and_stops_every_rank(cluster, tmp_path):
    def kill_worker():
        name = _wait_running(cluster, "worker-0")
        cluster.pods[name]["status"] = {"phase": "Failed", "containerStatuses": [
            {"name": "pytorch", "image": "i", "imageID": "", "restartCount": 0, "ready": False,
             "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}

    result, elapsed, failures, _ = _materialize(cluster, tmp_path, nodes=2, sleep=30, while_running=kill_worker)
    assert not result.success
    assert "worker-0 failed: container pytorch exited 137 (OOMKilled)" in failures[0]
    assert elapsed < 15 and cluster.jobs == {} and cluster.pods == {}
