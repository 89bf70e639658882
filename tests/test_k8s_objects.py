"""The multi-node TrainJob (and the legacy PyTorchJob), the runtime it runs on, and the pod
verdicts the launcher acts on."""

import re
import subprocess

import jsonschema
import kubernetes_validate
import pytest

from hkgai_pipelines.resources import K8sTrainingLauncher
from hkgai_pipelines.resources.k8s_pipes import trainjob_name
from hkgai_pipelines.training.k8s_watch import TrainingPodError, WatchLimits, jobset_pods, pod_verdict, watch_pods
from hkgai_pipelines.training.pod_spec import (
    NODE0_GUARD, TARGET_KUBERNETES_VERSION, GpuPodOptions, multinode_command, pytorchjob, training_runtime, trainjob,
)
from tests.crd_schemas import validate_custom
from tests.fake_k8s import trainjob_pods

JOB = "/mnt/hkgai/lake/models/sft_checkpoint/current/job.json"
PIPES = {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"}
OPTIONS_2X8 = GpuPodOptions(image="registry.example/hkgai:1.0", gpus=8)
TORCHRUN = ["torchrun", "--nnodes=2", "--nproc_per_node=8", "-m", "hkgai_pipelines.training.sft", "--job", JOB]


def _trainjob_2x8() -> dict:
    return trainjob(OPTIONS_2X8, multinode_command("hkgai_pipelines.training.sft", JOB, 2, 8), nodes=2, name="hkgai-sft", pipes_env=PIPES)


def test_trainjob_2x8_validates_and_carries_resources_env_volumes_and_queue_label():
    job = _trainjob_2x8()
    validate_custom(job)  # the TrainJob CRD schema of Trainer v2.3.0 (k8s/crds)
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob", "hkgai")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "hkgai-training"
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": "hkgai-torch-distributed"}
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "8"},
                                           "limits": {"memory": "64Gi", "nvidia.com/gpu": "8"}}
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["HKGAI_HOME"] == "/mnt/hkgai" and env["DAGSTER_PIPES_CONTEXT"] == "ctx"
    # One pod template serves every node, so the Pipes variables are dropped by a guard on nodes != 0.
    assert trainer["command"] == ["/bin/sh", "-c", NODE0_GUARD % "DAGSTER_PIPES_CONTEXT DAGSTER_PIPES_MESSAGES", "pipes-on-node-0", *TORCHRUN]
    (patch,) = job["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node" and pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "hkgai-home", "persistentVolumeClaim": {"claimName": "hkgai-home"}} in pod["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert pod["containers"] == [{"name": "node", "volumeMounts": [{"name": "hkgai-home", "mountPath": "/mnt/hkgai"},
                                                                    {"name": "dshm", "mountPath": "/dev/shm"}]}]


def test_training_runtime_validates_as_a_crd_object_and_its_pods_as_restricted_pods():
    runtime = training_runtime(OPTIONS_2X8)
    validate_custom(runtime)
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["template"]["metadata"]["labels"] == {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    assert node["template"]["spec"]["backoffLimit"] == 0  # a lost node fails the job; Dagster's retry resumes
    template = node["template"]["spec"]["template"]
    assert template["spec"]["containers"][0]["name"] == "node" and template["spec"]["restartPolicy"] == "Never"
    assert {"secretRef": {"name": "hkgai-mlflow"}} in template["spec"]["containers"][0]["envFrom"]  # no envFrom in the TrainJob API
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", **template["metadata"]}, "spec": template["spec"]},
                                 TARGET_KUBERNETES_VERSION, strict=True)


def test_trainjob_nodes_become_valid_pods_with_pipes_env_on_node_zero_only():
    """The pods the Trainer, JobSet and the Job controller make of the TrainJob (tests/fake_k8s):
    valid pods with 8 GPUs, the shared volume and /dev/shm; the guard, run by a real shell with
    each node's PET_NODE_RANK, leaves the Pipes variables to node 0."""
    job = _trainjob_2x8()
    pods = trainjob_pods(training_runtime(OPTIONS_2X8), job)
    assert [p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] for p in pods] == ["0", "1"]
    for index, pod in enumerate(pods):
        kubernetes_validate.validate(pod, TARGET_KUBERNETES_VERSION, strict=True)
        assert re.fullmatch(rf"hkgai-sft-node-0-{index}-[a-z0-9]{{5}}", pod["metadata"]["name"])
        assert pod["metadata"]["labels"]["hkgai/role"] == "training"  # the NetworkPolicies' selector
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/mnt/hkgai", "/dev/shm"}
        guard = container["command"][:4] + ["env"]
        env = {"PATH": "/usr/bin:/bin", "PET_NODE_RANK": str(index), **PIPES}
        seen = subprocess.run(guard, env=env, capture_output=True, text=True, check=True).stdout
        assert ("DAGSTER_PIPES_CONTEXT=ctx" in seen) == (index == 0) and ("DAGSTER_PIPES_MESSAGES" in seen) == (index == 0)
        assert "PET_NODE_RANK" in seen


@pytest.mark.parametrize("change, where", [
    (lambda job: job["spec"]["trainer"].update(numNodez=2), "numNodez"),
    (lambda job: job["spec"]["trainer"].update(numNodes="2"), "'2' is not of type 'integer'"),
    (lambda job: job["spec"]["trainer"]["resourcesPerNode"]["limits"].update({"nvidia.com/gpu": "eight"}), "does not match"),
])
def test_an_invalid_trainjob_is_caught_by_the_crd_schema(change, where):
    job = _trainjob_2x8()
    change(job)
    with pytest.raises(jsonschema.ValidationError, match=where):
        validate_custom(job)


def test_one_node_is_not_a_trainjob():
    with pytest.raises(ValueError, match="2 or more nodes"):
        trainjob(GpuPodOptions(image="i"), ["torchrun"], nodes=1, name="x")


def test_trainjob_names_satisfy_the_crd_rule_and_leave_node_zero_a_dns_hostname():
    for op_name in ("sft", "sft_checkpoint_with_a_very_long_asset_name_indeed"):
        name = trainjob_name("0e2c3d4f-1234-5678-9abc-def012345678", op_name)
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)  # the TrainJob CRD's CEL rule
        assert len(f"{name}-node-0-0") <= 63


def test_jobset_pods_names_node_zero_and_reports_unborn_and_vanished_pods():
    def pod(name, index):
        return {"metadata": {"name": name, "labels": {"jobset.sigs.k8s.io/replicatedjob-name": "node", "jobset.sigs.k8s.io/job-index": "0",
                                                       "batch.kubernetes.io/job-completion-index": index}}, "status": {"phase": "Running"}}

    seen: set[str] = set()
    pods, node0 = jobset_pods([], seen, "tj", 2)
    assert node0 is None and {n: p["status"]["phase"] for n, p in pods.items()} == {"tj-node-0-0": "Pending", "tj-node-0-1": "Pending"}
    pods, node0 = jobset_pods([pod("tj-node-0-1-bbbbb", "1"), pod("tj-node-0-0-aaaaa", "0")], seen, "tj", 2)
    assert node0 == "tj-node-0-0-aaaaa" and set(pods) == {"tj-node-0-0-aaaaa", "tj-node-0-1-bbbbb"}
    # Node 1's pod replaced by another: the first one is reported gone, not silently swapped.
    pods, _ = jobset_pods([pod("tj-node-0-0-aaaaa", "0"), pod("tj-node-0-1-ccccc", "1")], seen, "tj", 2)
    assert pods["tj-node-0-1-bbbbb"] is None and pod_verdict(None, "tj-node-0-1-bbbbb").state == "failed"


def _job_2x8() -> dict:
    options = GpuPodOptions(image="registry.example/hkgai:1.0", gpus=8)
    command = multinode_command("hkgai_pipelines.training.sft", "/mnt/hkgai/lake/models/sft_checkpoint/current/job.json", 2, 8)
    return pytorchjob(options, command, nodes=2, name="hkgai-sft", pipes_env={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"})


def test_legacy_pytorchjob_2x8_has_the_operator_fields_resources_commands_and_queue_label():
    job = _job_2x8()
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("kubeflow.org/v1", "PyTorchJob", "hkgai")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "hkgai-training"
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


@pytest.mark.parametrize("nodes, api, called", [(1, "trainjob", "run_pod"), (2, "trainjob", "run_trainjob"), (2, "pytorchjob", "run_pytorchjob")])
def test_launcher_runs_several_nodes_as_a_trainjob_unless_told_legacy(monkeypatch, tmp_path, nodes, api, called):
    calls = []

    class Client:
        def __getattr__(self, method):
            def run(**kwargs):
                calls.append((method, kwargs))
                return type("Invocation", (), {"get_materialize_result": lambda self: "result"})()
            return run

    monkeypatch.setattr(K8sTrainingLauncher, "client", lambda self: Client())
    launcher = K8sTrainingLauncher(image="i", gpus=8, nodes=nodes, multinode_api=api)
    assert launcher.launch(None, "hkgai_pipelines.training.sft", {"a": 1}, tmp_path / "job.json") == "result"
    ((method, kwargs),) = calls
    assert method == called
    if called == "run_pod":
        assert kwargs["base_pod_meta"]["labels"]["kueue.x-k8s.io/queue-name"] == "hkgai-training"
    else:
        assert kwargs["queue"] == "hkgai-training" and kwargs["nodes"] == 2
    if called == "run_trainjob":
        assert kwargs["runtime"] == "hkgai-torch-distributed"


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
