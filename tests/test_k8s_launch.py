"""The Kubernetes launch path against a fake API server (tests/fake_k8s.py): real dagster-k8s
and kubernetes-client code, real Dagster Pipes messages from the pod's process. Single pods,
Kubeflow Trainer v2 TrainJobs (node 0's log, teardown, a deleted TrainJob or pod, an eviction,
one failed node, a TrainJob held by Kueue) and legacy PyTorchJobs."""

import re
import sys
import threading
import time

import dagster as dg
import pytest

from hkgai_pipelines.resources.k8s_pipes import TrainingPipesK8sClient
from hkgai_pipelines.training.k8s_watch import WatchLimits
from hkgai_pipelines.training.pod_spec import RUNTIME_NAME, GpuPodOptions, training_pod_spec, training_runtime
from tests.fake_k8s import FakeCluster

#: What a training entry point does, in brief: report through Pipes, after SLEEP seconds.
POD_SCRIPT = """
import os, time
from dagster_pipes import open_dagster_pipes
print("pipes env:", "DAGSTER_PIPES_CONTEXT" in os.environ, flush=True)
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


def _materialize(cluster, tmp_path, nodes: int = 1, sleep: float = 0.0, while_running=None, api: str = "pytorchjob"):
    client = TrainingPipesK8sClient(load_incluster_config=False, kubeconfig_file=str(cluster.kubeconfig(tmp_path)), poll_interval=0.2)
    command = [sys.executable, "-c", POD_SCRIPT]
    cluster.runtimes[RUNTIME_NAME] = training_runtime(_options(sleep))  # k8s/cluster/training-runtime.yaml

    @dg.asset
    def trained(context: dg.AssetExecutionContext):
        if nodes == 1:
            invocation = client.run_pod(context=context, image="registry.example/hkgai:1.0", command=command, namespace="hkgai",
                                        base_pod_spec=_pod_spec(sleep), base_pod_meta={"labels": {"app": "hkgai"}}, limits=LIMITS)
        elif api == "trainjob":
            invocation = client.run_trainjob(context=context, options=_options(sleep), command=command, nodes=nodes, limits=LIMITS)
        else:
            invocation = client.run_pytorchjob(context=context, options=_options(sleep), command=command, nodes=nodes, limits=LIMITS)
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


def _trainjob_pod(cluster, node: int) -> str:
    """The name of node `node`'s pod once it runs (JobSet's labels; the name has a random suffix)."""
    for _ in range(200):
        for name, pod in list(cluster.pods.items()):
            if pod["metadata"]["labels"].get("batch.kubernetes.io/job-completion-index") == str(node) and pod["status"]["phase"] == "Running":
                return name
        time.sleep(0.05)
    raise AssertionError(f"node {node} never ran")


def _log(cluster, pod_name: str) -> str:
    return "\n".join(cluster.logs[pod_name])


def test_trainjob_reads_pipes_from_node_zero_only_and_tears_everything_down(cluster, tmp_path):
    result, _, failures, logs = _materialize(cluster, tmp_path, nodes=3, api="trainjob")
    assert result.success, failures
    events = result.get_asset_materialization_events()
    assert len(events) == 1  # node 0 only
    assert events[0].step_materialization_data.materialization.metadata["nodes"].value == "3"  # PET_NNODES from the runtime
    assert any("node rank 0" in m for m in logs) and not any("node rank 1" in m for m in logs)
    pods = {name: name.rsplit("-", 2)[-2] for name in cluster.logs}  # <trainjob>-node-0-<node>-<suffix>
    assert sorted(pods.values()) == ["0", "1", "2"]
    for name, node in pods.items():  # the guard kept the Pipes variables to node 0
        assert ("pipes env: True" in _log(cluster, name)) == (node == "0"), name
    assert cluster.trainjobs == {} and cluster.pods == {}  # torn down after success
    assert any(name.startswith("dagster-") for name in cluster.deleted)


def test_a_deleted_trainjob_pod_fails_the_run_within_the_bound_even_with_a_hanging_log_stream(cluster, tmp_path):
    cluster.hang_logs = True

    def delete_node_0():
        name = _trainjob_pod(cluster, 0)
        while name not in cluster.followed:  # the launcher has seen it: its log is being read
            time.sleep(0.05)
        cluster.delete_pod(name)

    result, elapsed, failures, _ = _materialize(cluster, tmp_path, nodes=2, sleep=30, while_running=delete_node_0, api="trainjob")
    assert not result.success
    assert re.search(r"pod dagster-\S+-node-0-0-[a-z0-9]{5} no longer exists: it was deleted", failures[0])
    assert elapsed < 15 and cluster.trainjobs == {} and cluster.pods == {}


def test_a_deleted_trainjob_fails_the_run(cluster, tmp_path):
    def delete_the_trainjob():
        _trainjob_pod(cluster, 1)
        cluster.delete_trainjob(next(iter(cluster.trainjobs)))

    result, elapsed, failures, _ = _materialize(cluster, tmp_path, nodes=2, sleep=30, while_running=delete_the_trainjob, api="trainjob")
    assert not result.success
    assert re.search(r"TrainJob dagster-\S+ no longer exists: it was deleted before it finished", failures[0])
    assert elapsed < 15 and cluster.pods == {}


def test_an_evicted_trainjob_node_fails_with_the_kubelet_reason_and_is_cleaned_up(cluster, tmp_path):
    def evict_node_1():
        cluster.evict(_trainjob_pod(cluster, 1))

    result, elapsed, failures, _ = _materialize(cluster, tmp_path, nodes=2, sleep=30, while_running=evict_node_1, api="trainjob")
    assert not result.success
    assert "was evicted: The node was low on resource: memory." in failures[0]
    assert elapsed < 15 and cluster.trainjobs == {} and cluster.pods == {}


def test_one_failed_trainjob_node_fails_the_run_and_stops_every_node(cluster, tmp_path):
    def kill_node_1():
        name = _trainjob_pod(cluster, 1)
        cluster.pods[name]["status"] = {"phase": "Failed", "containerStatuses": [
            {"name": "node", "image": "i", "imageID": "", "restartCount": 0, "ready": False,
             "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}

    result, elapsed, failures, _ = _materialize(cluster, tmp_path, nodes=2, sleep=30, while_running=kill_node_1, api="trainjob")
    assert not result.success
    assert re.search(r"node-0-1-[a-z0-9]{5} failed: container node exited 137 \(OOMKilled\)", failures[0])
    assert elapsed < 15 and cluster.trainjobs == {} and cluster.pods == {}
    assert not [p for p in cluster.processes.values() if p.poll() is None]  # node 0 stopped too


def test_a_trainjob_failed_by_its_controller_fails_the_run_with_the_condition(cluster, tmp_path):
    """No pod says why (an active deadline passed, a failed node already gone): the TrainJob's
    Failed condition does."""
    def fail_the_trainjob():
        _trainjob_pod(cluster, 1)
        cluster.failed_trainjobs.add(next(iter(cluster.trainjobs)))

    result, elapsed, failures, _ = _materialize(cluster, tmp_path, nodes=2, sleep=30, while_running=fail_the_trainjob, api="trainjob")
    assert not result.success
    assert re.search(r"TrainJob dagster-\S+ failed \(FailedJobs\): jobset failed due to one or more job failures", failures[0])
    assert elapsed < 15 and cluster.trainjobs == {} and cluster.pods == {}


def test_a_trainjob_held_by_kueue_waits_then_runs_once_admitted(cluster, tmp_path):
    cluster.hold_admission = True
    held = []

    def admit_later():
        while not cluster.trainjobs:
            time.sleep(0.05)
        time.sleep(1.0)  # five polls with the TrainJob suspended and no pod: pending, not failed
        held.append(dict(cluster.pods))
        cluster.admit(next(iter(cluster.trainjobs)))

    result, _, failures, _ = _materialize(cluster, tmp_path, nodes=2, while_running=admit_later, api="trainjob")
    assert result.success, failures
    assert held == [{}] and cluster.trainjobs == {} and cluster.pods == {}


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


def test_a_cancelled_trainjob_run_tears_every_node_down(cluster, tmp_path, monkeypatch):
    """Cancelling from the UI: Dagster raises DagsterExecutionInterruptedError in the step at its
    next interrupt point, here the launcher's poll once both nodes' pods exist."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    import hkgai_pipelines.resources.k8s_pipes as k8s_pipes

    listed = k8s_pipes.jobset_pods

    def interrupted_once_running(items, *args, **kwargs):
        pods = listed(items, *args, **kwargs)
        if len(items) == 2:  # both nodes' pods exist
            raise DagsterExecutionInterruptedError()
        return pods

    monkeypatch.setattr(k8s_pipes, "jobset_pods", interrupted_once_running)
    result, elapsed, _, _ = _materialize(cluster, tmp_path, nodes=2, sleep=30, api="trainjob")
    assert not result.success
    assert elapsed < 15 and cluster.trainjobs == {} and cluster.pods == {}
    assert any(name.startswith("dagster-") for name in cluster.deleted)
