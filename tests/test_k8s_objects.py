"""The multi-node PyTorchJob and the pod verdicts the launcher acts on."""

import kubernetes_validate
import pytest

from hkgai_pipelines.resources import K8sTrainingLauncher
from hkgai_pipelines.training.k8s_watch import TrainingPodError, WatchLimits, pod_verdict, watch_pods
from hkgai_pipelines.training.pod_spec import TARGET_KUBERNETES_VERSION, GpuPodOptions, multinode_command, pytorchjob


def _job_2x8() -> dict:
    options = GpuPodOptions(image="registry.example/hkgai:1.0", gpus=8)
    command = multinode_command("hkgai_pipelines.training.sft", "/mnt/hkgai/lake/models/sft_checkpoint/current/job.json", 2, 8)
    return pytorchjob(options, command, nodes=2, name="hkgai-sft", pipes_env={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"})


def test_pytorchjob_2x8_has_the_operator_fields_resources_and_commands():
    job = _job_2x8()
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("kubeflow.org/v1", "PyTorchJob", "hkgai")
    assert job["spec"]["nprocPerNode"] == "8"
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "All", "backoffLimit": 0, "ttlSecondsAfterFinished": 3600}
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {role: spec["replicas"] for role, spec in replicas.items()} == {"Master": 1, "Worker": 1}
    for role, spec in replicas.items():
        assert spec["restartPolicy"] == "Never"
        container = spec["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch" and container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
        assert container["command"] == ["torchrun", "--nnodes=2", "--nproc_per_node=8", "-m", "hkgai_pipelines.training.sft",
                                        "--job", "/mnt/hkgai/lake/models/sft_checkpoint/current/job.json"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        names = {e["name"] for e in container["env"]}
        # Pipes speaks from rank 0 only.
        assert ("DAGSTER_PIPES_CONTEXT" in names) == (role == "Master")


@pytest.mark.parametrize("role", ["Master", "Worker"])
def test_pytorchjob_pod_templates_validate_as_pods(role):
    """The PyTorchJob CRD schema is not available offline; its pod templates are core v1."""
    template = _job_2x8()["spec"]["pytorchReplicaSpecs"][role]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", **template["metadata"]},
           "spec": {**template["spec"], "restartPolicy": "Never"}}
    kubernetes_validate.validate(pod, TARGET_KUBERNETES_VERSION, strict=True)


def test_one_node_is_not_a_pytorchjob():
    with pytest.raises(ValueError, match="2 or more nodes"):
        pytorchjob(GpuPodOptions(image="i"), ["torchrun"], nodes=1, name="x")


def test_launcher_picks_the_command_by_node_count(tmp_path):
    single = K8sTrainingLauncher(image="i", gpus=8).command("hkgai_pipelines.training.sft", tmp_path / "job.json")
    multi = K8sTrainingLauncher(image="i", gpus=8, nodes=4).command("hkgai_pipelines.training.sft", tmp_path / "job.json")
    assert single[:3] == ["torchrun", "--standalone", "--nproc_per_node=8"]
    assert multi[:3] == ["torchrun", "--nnodes=4", "--nproc_per_node=8"]


def _status(phase, **extra):
    return {"metadata": {}, "status": {"phase": phase, **extra}}


@pytest.mark.parametrize(
    "pod, state, message",
    [
        (None, "failed", "pod p no longer exists: it was deleted"),
        (_status("Running"), "running", ""),
        (_status("Pending"), "pending", ""),
        (_status("Succeeded"), "succeeded", ""),
        (_status("Failed", reason="Evicted", message="The node was low on resource: ephemeral-storage."), "failed",
         "pod p was evicted: The node was low on resource: ephemeral-storage."),
        (_status("Running", conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                                         "message": "Preempted by a higher-priority pod"}]), "failed",
         "pod p was disrupted (PreemptionByScheduler): Preempted by a higher-priority pod"),
        ({"metadata": {"deletionTimestamp": "2026-11-27T04:00:00Z"}, "status": {"phase": "Running"}}, "failed", "pod p is being deleted"),
        (_status("Failed", containerStatuses=[{"name": "c", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]),
         "failed", "pod p failed: container c exited 137 (OOMKilled)"),
        (_status("Pending", containerStatuses=[{"name": "c", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]),
         "failed", "pod p: container c ImagePullBackOff: not found"),
        (_status("Unknown"), "unknown", "pod p: its node stopped reporting"),
    ],
)
def test_pod_verdicts(pod, state, message):
    verdict = pod_verdict(pod, "p")
    assert verdict.state == state and verdict.message.startswith(message)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_watch_gives_an_unknown_node_its_grace_then_fails():
    clock = Clock()
    with pytest.raises(TrainingPodError, match=r"its node stopped reporting for 3 s \(limit 2 s\)"):
        watch_pods(lambda: {"p": _status("Unknown")}, WatchLimits(poll_s=1, unknown_grace_s=2), clock=clock, sleep=clock.sleep)


def test_watch_fails_a_pod_that_never_schedules():
    clock = Clock()
    with pytest.raises(TrainingPodError, match=r"pods \['p'\] still pending after 5 s"):
        watch_pods(lambda: {"p": _status("Pending")}, WatchLimits(poll_s=1, pending_timeout_s=5), clock=clock, sleep=clock.sleep)


def test_watch_starts_the_log_reader_once_when_every_pod_runs():
    clock, started = Clock(), []
    states = iter(["Pending", "Running", "Running", "Succeeded"])
    watch_pods(lambda: {"p": _status(next(states))}, WatchLimits(poll_s=1), on_running=lambda: started.append(clock()), clock=clock, sleep=clock.sleep)
    assert started == [1.0]
