"""Curation on KubeRay: the RayJob the launcher builds (against KubeRay v1.7.0's CRD schema and
its controller's and Kueue's admission rules), the rendered example, the operator's Helm values,
the RBAC and NetworkPolicy it needs, the status verdicts, and the launch path against the fake
API server (tests/fake_k8s.py), whose fake operator runs the entry point as the Ray driver and
reports the outcome in the RayJob's status as KubeRay does."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import jsonschema
import kubernetes_validate
import pytest
import yaml

from hkgai_pipelines.resources.ray_jobs import (
    CURATION_LABELS, ELASTIC_JOB_ANNOTATION, KUBERAY_VERSION, MAX_RAYJOB_NAME, OPERATOR_NAMESPACE, PIPES_COMMAND_MODULE, QUEUE_LABEL,
    RAY_VERSION, RayCurationLauncher, RayCurationOptions, RayJobError, curate_command, curation_rayjob, example_rayjob,
    ray_curation_launcher, rayjob_verdict, settings_env, watch_rayjob,
)
from hkgai_pipelines.resources.k8s_pipes import trainjob_name
from hkgai_pipelines.settings import HkgaiSettings
from hkgai_pipelines.training.k8s_watch import WatchLimits
from hkgai_pipelines.training.pod_spec import TARGET_KUBERNETES_VERSION, GpuPodOptions, training_pod_spec
from tests.crd_schemas import validate_custom
from tests.fake_k8s import RAYJOB_NAME_LABEL, FakeCluster, kuberay_refusal, kueue_refusal

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
PIPES = {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"}
OPTIONS = RayCurationOptions(image="registry.example/hkgai:1.0", env=settings_env())
COMMAND = curate_command("/mnt/hkgai/lake", "/mnt/hkgai/lake/cleaned.versions/v1", 64)


def _rayjob(**kwargs) -> dict:
    return curation_rayjob(OPTIONS, COMMAND, "dagster-0e2c3d4f-cleaned-corpus-123456", pipes_env=PIPES, **kwargs)


def _pod_templates(job: dict) -> dict[str, dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return {"head": cluster["headGroupSpec"]["template"], "worker": cluster["workerGroupSpecs"][0]["template"],
            "submitter": job["spec"]["submitterPodTemplate"]}


# ------------------------------------------------------------------ the RayJob object


@pytest.mark.parametrize("queue", [None, "hkgai-curation"])
def test_rayjob_validates_against_the_crd_and_its_pods_as_restricted_pods(queue):
    job = _rayjob(queue=queue, deadline_s=3600)
    validate_custom(job)  # the RayJob CRD schema of KubeRay v1.7.0 (k8s/crds)
    # The RayCluster KubeRay makes of it: the RayJob's labels and rayClusterSpec, named <job>-<5 chars>.
    validate_custom({"apiVersion": "ray.io/v1", "kind": "RayCluster", "spec": job["spec"]["rayClusterSpec"],
                     "metadata": {"name": job["metadata"]["name"] + "-abcde", "namespace": "hkgai", "labels": job["metadata"]["labels"]}})
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == ("ray.io/v1", "RayJob", "hkgai")
    for role, template in _pod_templates(job).items():
        spec = {**template["spec"], "restartPolicy": template["spec"].get("restartPolicy", "Always")}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"x-{role}", **template["metadata"]}, "spec": spec}
        kubernetes_validate.validate(pod, TARGET_KUBERNETES_VERSION, strict=True)
        assert template["metadata"]["labels"] == CURATION_LABELS  # the NetworkPolicy ray-curation selects them
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
            assert container["image"] == "registry.example/hkgai:1.0"
        # Only the head keeps an API token: its autoscaler sidecar scales the RayCluster.
        assert spec.get("automountServiceAccountToken", True) is (role == "head")
    assert job["spec"]["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] == 3600


def test_rayjob_autoscales_cpu_workers_runs_the_entry_point_and_cleans_up():
    job = _rayjob()
    spec, cluster = job["spec"], job["spec"]["rayClusterSpec"]
    assert spec["entrypoint"] == ("python -m hkgai_pipelines.pipes_command --report-json /mnt/hkgai/lake/cleaned.versions/v1/stats.json -- "
                                  "hkgai curate --lake /mnt/hkgai/lake --out /mnt/hkgai/lake/cleaned.versions/v1 --workers 64")
    assert (spec["submissionMode"], spec["backoffLimit"], spec["submitterConfig"]) == ("K8sJobMode", 0, {"backoffLimit": 0})
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 300
    assert cluster["enableInTreeAutoscaling"] is True and cluster["rayVersion"] == RAY_VERSION
    (group,) = cluster["workerGroupSpecs"]
    assert (group["groupName"], group["minReplicas"], group["replicas"], group["maxReplicas"]) == ("cpu", 1, 1, 8)
    assert group["template"]["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"memory": "32Gi"}}
    assert "nvidia.com/gpu" not in str(cluster)  # CPU work; GPU nodes are tainted and stay free for training
    assert cluster["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0"}  # tasks go to the workers


def test_the_lake_is_mounted_on_every_ray_pod_where_training_pods_mount_it():
    training = training_pod_spec(GpuPodOptions(image="i"))
    lake_volume = next(v for v in training["volumes"] if v["name"] == "hkgai-home")
    lake_mount = next(m for m in training["containers"][0]["volumeMounts"] if m["name"] == "hkgai-home")
    for role, template in _pod_templates(_rayjob()).items():
        if role == "submitter":
            continue  # it only submits and prints the log
        assert lake_volume in template["spec"]["volumes"]
        container = template["spec"]["containers"][0]
        assert lake_mount in container["volumeMounts"] and {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        # S3 credentials for an s3:// lake (pyarrow reads AWS_* from the environment) and HKGAI_DVC_REMOTE.
        assert container["envFrom"] == [{"secretRef": {"name": "hkgai-s3"}}]


def test_pipes_variables_reach_the_driver_through_the_runtime_env_only():
    job = _rayjob()
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == {"env_vars": PIPES}
    # Not in any pod: the submitter's environment does not reach the driver on the head.
    assert "DAGSTER_PIPES" not in str(_pod_templates(job))


def test_kuberay_and_kueue_accept_the_rayjob_and_kueue_needs_the_elastic_annotation():
    plain, queued = _rayjob(), _rayjob(queue="hkgai-curation")
    assert kuberay_refusal(plain) is None and kuberay_refusal(queued) is None
    assert QUEUE_LABEL not in plain["metadata"]["labels"] and "annotations" not in plain["metadata"]
    assert queued["metadata"]["labels"][QUEUE_LABEL] == "hkgai-curation"
    assert kueue_refusal(queued) is None
    # An autoscaling Ray cluster is admitted by Kueue v0.19 only as an elastic workload.
    del queued["metadata"]["annotations"][ELASTIC_JOB_ANNOTATION]
    assert "workload slicing" in kueue_refusal(queued)


@pytest.mark.parametrize("change, where", [
    (lambda job: job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(maxReplicas="8"), "'8' is not of type 'integer'"),
    (lambda job: job["spec"].update(shutdownAfterJobFinishez=True), "shutdownAfterJobFinishez"),
    (lambda job: job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(memory="8 GB"),
     "does not match"),
])
def test_an_invalid_rayjob_is_caught_by_the_crd_schema(change, where):
    job = _rayjob()
    change(job)
    with pytest.raises(jsonschema.ValidationError, match=where):
        validate_custom(job)


def test_names_and_worker_bounds_kuberay_would_refuse_are_refused_here():
    for op_name in ("cleaned_corpus", "a_very_long_asset_name_that_goes_on_and_on"):
        name = trainjob_name("0e2c3d4f-1234-5678-9abc-def012345678", op_name)
        assert len(name) <= MAX_RAYJOB_NAME and kuberay_refusal(curation_rayjob(OPTIONS, COMMAND, name)) is None
    with pytest.raises(ValueError, match="longer than KubeRay's 47"):
        curation_rayjob(OPTIONS, COMMAND, "x" * 48)
    with pytest.raises(ValueError, match="min_workers <= max_workers"):
        curation_rayjob(RayCurationOptions(image="i", min_workers=3, max_workers=2), COMMAND, "x")


def test_rendered_rayjob_matches_the_launcher_code():
    """k8s/ray/rayjob-curation.yaml documents what the launcher creates; `python -m
    hkgai_pipelines.resources.ray_jobs k8s` rewrites it."""
    assert yaml.safe_load((K8S / "ray" / "rayjob-curation.yaml").read_text()) == example_rayjob()


def test_ray_version_is_the_installed_ray_and_new_enough_for_http_probes():
    # The image installs the project's Ray; where this environment has Ray, it must be that one.
    installed = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}.get("ray")
    assert installed in (None, RAY_VERSION)
    # KubeRay v1.7.0 probes Ray >= 2.53 over HTTP; older ones through wget, which the image lacks.
    assert tuple(int(x) for x in RAY_VERSION.split(".")[:2]) >= (2, 53)


def test_the_image_has_the_ray_job_server_and_cli_a_rayjob_needs():
    """The head serves Ray's job API (KubeRay submits to it and polls it) and the submitter runs
    `ray job submit`: both come with ray[default] only, at the Ray the RayJob names."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f'"ray[default]=={RAY_VERSION}"' in dockerfile
    assert example_rayjob()["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"] == \
        example_rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def test_ray_pods_load_the_production_settings(monkeypatch):
    """The image sets HKGAI_PROFILE=production; `hkgai curate` loads the settings, which need the
    servers' addresses: the pods have them (HKGAI_DVC_REMOTE comes from the hkgai-s3 secret)."""
    head = example_rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in head["env"]}
    assert {k for k in env if k.startswith("HKGAI_")} <= {f"HKGAI_{name.upper()}" for name in HkgaiSettings.model_fields}
    for name in [k for k in os.environ if k.startswith("HKGAI_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HKGAI_DVC_REMOTE", "s3://hkgai-dvc")
    settings = HkgaiSettings()
    assert settings.profile == "production" and str(settings.home) == "/mnt/hkgai"
    # The same addresses as the code location's (k8s/dagster/values.yaml).
    deployment = yaml.safe_load((K8S / "dagster" / "values.yaml").read_text())["dagster-user-deployments"]["deployments"][0]
    code_location = {e["name"]: e["value"] for e in deployment["env"]}
    assert {k: env[k] for k in ("HKGAI_MLFLOW_TRACKING_URI", "HKGAI_WEAVIATE_URL", "HKGAI_HOME")} == \
        {k: code_location[k] for k in ("HKGAI_MLFLOW_TRACKING_URI", "HKGAI_WEAVIATE_URL", "HKGAI_HOME")}
    monkeypatch.delenv("HKGAI_WEAVIATE_URL")
    with pytest.raises(ValueError, match="HKGAI_WEAVIATE_URL"):
        HkgaiSettings()


def test_the_resource_runs_hkgai_curate_with_a_worker_per_cpu():
    launcher = ray_curation_launcher("registry.example/hkgai:1.0", mlflow_tracking_uri="http://mlflow:5000", weaviate_url="http://weaviate:80")
    assert launcher.parallelism() == 64 and RayCurationLauncher(image="i", worker_cpu="500m", max_workers=4).parallelism() == 4
    assert launcher.options().env == settings_env("/mnt/hkgai", "http://mlflow:5000", "http://weaviate:80")
    assert curate_command("/l", "/l/cleaned", 64) == ["python", "-m", PIPES_COMMAND_MODULE, "--report-json", "/l/cleaned/stats.json", "--",
                                                     "hkgai", "curate", "--lake", "/l", "--out", "/l/cleaned", "--workers", "64"]


# ------------------------------------------------------------------ k8s/: RBAC, NetworkPolicy, operator values


def test_launcher_role_may_run_rayjobs():
    role = next(d for d in yaml.safe_load_all((K8S / "base" / "rbac.yaml").read_text()) if d and d["kind"] == "Role")
    verbs = {(group, resource): set(rule["verbs"]) for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    assert {"create", "get", "list", "watch", "delete"} <= verbs[("ray.io", "rayjobs")]
    assert {"list", "get"} <= verbs[("", "pods")] and verbs[("", "pods/log")] == {"get"}  # the submitter pod and its log


def test_networkpolicy_lets_the_ray_pods_talk_and_the_operator_poll_the_dashboard():
    policies = {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "base" / "networkpolicies.yaml").read_text()) if d}
    policy = policies["ray-curation"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= CURATION_LABELS.items()
    peers, operator = policy["spec"]["ingress"]
    assert peers == {"from": [{"podSelector": {"matchLabels": policy["spec"]["podSelector"]["matchLabels"]}}]}  # every port: Ray picks them
    assert operator["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE}}}]
    head = example_rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    dashboard = next(p["containerPort"] for p in head["ports"] if p["name"] == "dashboard")
    assert operator["ports"] == [{"port": dashboard}]


def test_operator_values_pin_the_release_of_the_crds_and_watch_the_project_namespace():
    values = yaml.safe_load((K8S / "kuberay-operator" / "values.yaml").read_text())
    assert values["image"] == {"repository": "quay.io/kuberay/operator", "tag": KUBERAY_VERSION, "pullPolicy": "IfNotPresent"}
    crds = (K8S / "crds" / "README.md").read_text()
    assert re.search(rf"`ray\.io_rayjobs\.v1\.json` \| RayJob \(Namespaced\) \| KubeRay {KUBERAY_VERSION} ", crds)
    assert re.search(rf"`ray\.io_rayclusters\.v1\.json` \| RayCluster \(Namespaced\) \| KubeRay {KUBERAY_VERSION} ", crds)
    prod = yaml.safe_load((K8S / "overlays" / "prod" / "kustomization.yaml").read_text())["namespace"]
    assert values["watchNamespace"] == [prod] == [RayCurationLauncher(image="i").namespace]
    assert values["singleNamespaceInstall"] is True and values["crNamespacedRbacEnable"] is True  # Roles, no ClusterRole
    assert values["batchScheduler"] == {"enabled": False, "name": ""}  # Kueue needs no batch-scheduler hook
    assert values["resources"]["requests"] and values["resources"]["limits"]["memory"]
    assert f"--namespace {OPERATOR_NAMESPACE}" in (K8S / "kuberay-operator" / "values.yaml").read_text()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (Debian: apt install kubectl)")
def test_prod_overlay_applies_the_ray_policy_in_the_project_namespace():
    built = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / "prod")], capture_output=True, text=True, check=True).stdout
    policy = next(d for d in yaml.safe_load_all(built) if d and d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "ray-curation")
    assert policy["metadata"]["namespace"] == example_rayjob()["metadata"]["namespace"]


# ------------------------------------------------------------------ verdicts and the wait


def _job(deployment="", ray_status="", **status):
    return {"metadata": {}, "status": {"jobDeploymentStatus": deployment, "jobStatus": ray_status, "jobId": "j-1", **status}}


@pytest.mark.parametrize("job, state, message", [
    (None, "failed", "RayJob r no longer exists: it was deleted before it finished"),
    ({"metadata": {"deletionTimestamp": "2026-12-01T04:00:00Z"}, "status": {"jobDeploymentStatus": "Running"}}, "failed", "RayJob r is being deleted"),
    (_job(), "pending", "New"),
    (_job("Suspended"), "pending", "Suspended"),
    (_job("Initializing"), "pending", "Initializing"),
    (_job("Running", "PENDING"), "running", ""),
    (_job("Running", "SUCCEEDED"), "running", ""),  # the submitter has not finished: not done yet
    (_job("Complete", "SUCCEEDED"), "succeeded", ""),
    (_job("Complete", "STOPPED", message="Job was intentionally stopped."), "failed", "Ray job j-1 of RayJob r STOPPED: Job was intentionally stopped."),
    (_job("Running", "FAILED", message="Job entrypoint command failed with exit code 2"), "failed",
     "Ray job j-1 of RayJob r FAILED: Job entrypoint command failed with exit code 2"),
    # dagster-ray 0.4.8 keeps waiting on this one: the deployment failed while Ray still says RUNNING.
    (_job("Failed", "RUNNING", reason="DeadlineExceeded", message="activeDeadlineSeconds passed"), "failed",
     "RayJob r failed (DeadlineExceeded): activeDeadlineSeconds passed"),
    (_job("ValidationFailed", reason="ValidationFailed", message="RayJob name should be no more than 47 characters"), "failed",
     "KubeRay refused RayJob r: RayJob name should be no more than 47 characters"),
])
def test_rayjob_verdicts(job, state, message):
    verdict = rayjob_verdict(job, "r")
    assert verdict.state == state and verdict.message.startswith(message)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _pod(phase, name="r-abcde"):
    return {"metadata": {"name": name, "creationTimestamp": "2026-12-01T04:00:00Z"}, "status": {"phase": phase}}


def test_watch_waits_for_the_rayjob_after_its_submitter_finished_and_follows_the_log_once():
    clock, followed = Clock(), []
    states = iter([(_job("Initializing"), []), (_job("Running", "RUNNING"), [_pod("Pending")]), (_job("Running", "RUNNING"), [_pod("Running")]),
                   (_job("Running", "SUCCEEDED"), [_pod("Succeeded")]), (_job("Complete", "SUCCEEDED"), [_pod("Succeeded")])])
    watch_rayjob(lambda: next(states), "r", WatchLimits(poll_s=1), on_running=followed.append, clock=clock, sleep=clock.sleep)
    assert followed == ["r-abcde"] and clock.now == 4.0


def test_watch_fails_a_rayjob_kueue_never_admits_within_the_pending_bound():
    clock = Clock()
    with pytest.raises(RayJobError, match=r"RayJob r did not start within 5 s \(deployment status Suspended\)"):
        watch_rayjob(lambda: (_job("Suspended"), []), "r", WatchLimits(poll_s=1, pending_timeout_s=5), clock=clock, sleep=clock.sleep)


def test_watch_fails_when_the_submitter_pod_is_evicted_or_deleted():
    clock = Clock()
    evicted = {"metadata": {"name": "r-abcde"}, "status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}}
    with pytest.raises(RayJobError, match="the submitter of RayJob r: pod r-abcde was evicted: The node was low on resource: memory."):
        watch_rayjob(lambda: (_job("Running", "RUNNING"), [evicted]), "r", WatchLimits(poll_s=1), clock=clock, sleep=clock.sleep)
    states = iter([(_job("Running", "RUNNING"), [_pod("Running")]), (_job("Running", "RUNNING"), [])])
    with pytest.raises(RayJobError, match="pod r-abcde no longer exists"):
        watch_rayjob(lambda: next(states), "r", WatchLimits(poll_s=1), clock=clock, sleep=clock.sleep)


# ------------------------------------------------------------------ the launch path (fake API server)

#: What `hkgai curate` does, in brief: print, write OUT/stats.json, exit 0 (or fail as told).
DRIVER = """
import json, os, sys, time
out = sys.argv[1]
print("curating with RAY_ADDRESS=" + os.environ.get("RAY_ADDRESS", "unset"), flush=True)
time.sleep(float(os.environ.get("SLEEP", "0")))
if os.environ.get("FAIL"):
    print("no raw documents under /mnt/hkgai/lake/raw", file=sys.stderr, flush=True)
    sys.exit(int(os.environ["FAIL"]))
os.makedirs(out, exist_ok=True)
json.dump({"input_records": 5, "kept": 3, "rejected": 2, "quarantined": 0, "steps": {"dedup": {"kept": 3}}}, open(out + "/stats.json", "w"))
"""


@pytest.fixture
def cluster():
    fake = FakeCluster()
    yield fake
    fake.close()


def _launch(cluster, tmp_path, env: dict[str, str] | None = None, while_running=None, **settings):
    launcher = RayCurationLauncher(image="registry.example/hkgai:1.0", kubeconfig_file=str(cluster.kubeconfig(tmp_path)), poll_s=0.2,
                                   pending_timeout_s=settings.pop("pending_timeout_s", 20), run_timeout_s=60, env_from_secrets=[],
                                   pod_env=env or {}, **settings)
    out = tmp_path / "cleaned"
    entrypoint = [sys.executable, "-m", PIPES_COMMAND_MODULE, "--report-json", str(out / "stats.json"), "--",
                  sys.executable, "-c", DRIVER, str(out)]

    @dg.asset
    def cleaned_corpus(context: dg.AssetExecutionContext):
        return launcher.run(context, entrypoint)

    if while_running:
        threading.Thread(target=while_running, daemon=True).start()
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        result = dg.materialize([cleaned_corpus], instance=instance, raise_on_error=False)
        elapsed = time.monotonic() - started
        failures = [_chain(e.event_specific_data.error) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    return result, elapsed, failures, logs


def _chain(error) -> str:
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return " <- ".join(messages)


def _submitter_running(cluster, followed: bool = True) -> str:
    """The submitter pod once it runs (and, by default, once the launcher reads its log)."""
    for _ in range(300):
        for name, pod in list(cluster.pods.items()):
            if pod["metadata"]["labels"].get(RAYJOB_NAME_LABEL) and pod["status"]["phase"] == "Running" and (not followed or name in cluster.followed):
                return name
        time.sleep(0.05)
    raise AssertionError("the submitter pod never ran")


def test_curation_rayjob_reports_its_materialization_through_pipes_and_is_deleted(cluster, tmp_path, capfd):
    result, _, failures, logs = _launch(cluster, tmp_path)
    assert result.success, failures
    metadata = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
    assert {k: metadata[k].value for k in ("input_records", "kept", "rejected")} == {"input_records": 5, "kept": 3, "rejected": 2}
    assert metadata["report"].value == str(tmp_path / "cleaned" / "stats.json") and "steps" not in metadata
    assert metadata["RayJob"].value.startswith("hkgai/dagster-")
    assert any(m.startswith("running ") and "stats.json" in m for m in logs)  # a Pipes log message of the wrapper
    # The driver's own output, read from the submitter pod's log and forwarded to stdout by the reader.
    assert "curating with RAY_ADDRESS=127.0.0.1:6379" in capfd.readouterr().out
    (created,) = cluster.rayjobs_created
    validate_custom(created)
    assert set(yaml.safe_load(created["spec"]["runtimeEnvYAML"])["env_vars"]) == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert cluster.rayjobs == {} and cluster.pods == {} and created["metadata"]["name"] in cluster.deleted  # torn down


def test_a_failing_entry_point_fails_the_run_with_rays_reason_and_is_deleted(cluster, tmp_path):
    result, elapsed, failures, _ = _launch(cluster, tmp_path, env={"FAIL": "2"})
    assert not result.success
    # KubeRay marks the deployment Failed (AppFailed) with Ray's message once the submitter is done.
    assert re.search(r"RayJob dagster-\S+ failed \(AppFailed\): Job entrypoint command failed with exit code 2", failures[0])
    assert "no raw documents under /mnt/hkgai/lake/raw" in failures[0]  # the driver's last words
    assert elapsed < 15 and cluster.rayjobs == {} and cluster.pods == {}


def test_a_rayjob_deleted_mid_run_fails_within_the_bound_even_with_a_hanging_log_stream(cluster, tmp_path):
    cluster.hang_logs = True

    def delete_it():
        _submitter_running(cluster)
        cluster.delete_rayjob(next(iter(cluster.rayjobs)))

    result, elapsed, failures, _ = _launch(cluster, tmp_path, env={"SLEEP": "30"}, while_running=delete_it)
    assert not result.success
    assert re.search(r"RayJob dagster-\S+ no longer exists: it was deleted before it finished", failures[0])
    assert elapsed < 15 and cluster.pods == {}
    assert not [p for p in cluster.processes.values() if p.poll() is None]  # the driver stopped


def test_a_deadline_kuberay_reports_while_ray_still_runs_fails_the_run(cluster, tmp_path):
    def deadline_passes():
        _submitter_running(cluster)
        cluster.fail_rayjob(next(iter(cluster.rayjobs)), "DeadlineExceeded", "The RayJob has passed the activeDeadlineSeconds. StartTime: ...")

    result, elapsed, failures, _ = _launch(cluster, tmp_path, env={"SLEEP": "30"}, while_running=deadline_passes)
    assert not result.success
    assert re.search(r"RayJob dagster-\S+ failed \(DeadlineExceeded\): The RayJob has passed the activeDeadlineSeconds", failures[0])
    assert elapsed < 15 and cluster.rayjobs == {} and cluster.pods == {}


def test_a_rayjob_held_by_kueue_waits_then_runs_once_admitted(cluster, tmp_path):
    cluster.hold_admission = True
    held = []

    def admit_later():
        while not cluster.rayjobs:
            time.sleep(0.05)
        time.sleep(1.0)  # five polls while Suspended with no pod: pending, not failed
        held.append((dict(cluster.pods), cluster.rayjob_status[next(iter(cluster.rayjobs))]["jobDeploymentStatus"]))
        cluster.admit_rayjob(next(iter(cluster.rayjobs)))

    result, _, failures, _ = _launch(cluster, tmp_path, while_running=admit_later, queue="hkgai-curation")
    assert result.success, failures
    assert held == [({}, "Suspended")] and cluster.rayjobs == {} and cluster.pods == {}
    assert cluster.rayjobs_created[0]["metadata"]["labels"][QUEUE_LABEL] == "hkgai-curation"


def test_a_rayjob_never_admitted_fails_at_the_pending_bound_and_is_deleted(cluster, tmp_path):
    cluster.hold_admission = True
    result, elapsed, failures, _ = _launch(cluster, tmp_path, pending_timeout_s=2)
    assert not result.success
    assert re.search(r"RayJob dagster-\S+ did not start within 2 s \(deployment status Suspended\)", failures[0])
    assert elapsed < 15 and cluster.rayjobs == {}


def test_a_cancelled_run_deletes_the_rayjob(cluster, tmp_path, monkeypatch):
    """Cancelling from the UI: Dagster raises DagsterExecutionInterruptedError in the step at its
    next interrupt point, here the launcher's poll once the driver runs."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    import hkgai_pipelines.resources.ray_jobs as ray_jobs

    verdict = ray_jobs.rayjob_verdict

    def interrupted_once_running(job, name):
        if job is not None and (job.get("status") or {}).get("jobStatus") == "RUNNING" and cluster.followed:
            raise DagsterExecutionInterruptedError()
        return verdict(job, name)

    monkeypatch.setattr(ray_jobs, "rayjob_verdict", interrupted_once_running)
    result, elapsed, _, _ = _launch(cluster, tmp_path, env={"SLEEP": "30"})
    assert not result.success
    assert elapsed < 15 and cluster.rayjobs == {} and cluster.pods == {}
    assert any(name.startswith("dagster-") for name in cluster.deleted)


def test_the_pipes_wrapper_outside_dagster_passes_the_exit_code_through(tmp_path):
    """By hand (`kubectl create -f k8s/ray/rayjob-curation.yaml` without runtimeEnvYAML) there is no
    Pipes session: the wrapper still runs the command and exits with its code."""
    wrapper = [sys.executable, "-m", PIPES_COMMAND_MODULE, "--report-json", str(tmp_path / "stats.json"), "--"]
    failed = subprocess.run([*wrapper, sys.executable, "-c", "print('half way'); raise SystemExit(3)"], capture_output=True, text=True)
    assert failed.returncode == 3 and "half way" in failed.stdout and "exited 3" in failed.stderr
    done = subprocess.run([*wrapper, sys.executable, "-c", f"open({str(tmp_path / 'stats.json')!r}, 'w').write('{{\"kept\": 1}}')"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ the launcher as cleaned_corpus calls it

#: Stands in for `hkgai curate` on the Ray head: checks it was given the asset's folders and
#: writes the run report it was handed (REPORT_FROM) where `--report` says.
FAKE_HKGAI = """#!{python}
import os, shutil, sys
args = sys.argv[1:]
assert args[0] == "curate", args
option = dict(zip(args[1::2], args[2::2]))
for name in ("--lake", "--out", "--work-dir", "--parts-dir", "--params", "--report", "--workers"):
    assert name in option, name
print("curating " + option["--lake"] + " into " + option["--out"], flush=True)
os.makedirs(os.path.dirname(option["--report"]), exist_ok=True)
shutil.copyfile(os.environ["REPORT_FROM"], option["--report"])
"""


def _launcher_run(cluster, tmp_path, sources):
    from hkgai_pipelines.curation.engine import EngineRun
    from hkgai_pipelines.curation.pipeline import CurationOutputs, CurationStats

    stats = CurationStats(input_records=5, kept=3, rejected=2)
    stats.by_source["hkcancor"].update({"input": 5, "kept": 3, "rejected": 2})
    version = tmp_path / "lake" / "cleaned.versions" / "v-new"
    outputs = CurationOutputs(version, version / "cleaned.parquet", version / "rejected.parquet", version / "quarantine.jsonl",
                              version / "stats.json", "ab" * 32)
    sent = EngineRun(stats, outputs, "ray", 16, "Ray cluster 127.0.0.1:6379", {"dedup": 1.5}, {"candidate_pairs": 4}, 0, 3, 2, 7, ("hkcancor",))
    (tmp_path / "report-from.json").write_text(json.dumps(sent.to_report() | {"catalog": ["hkcancor", "ctcpc"]}), encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hkgai").write_text(FAKE_HKGAI.format(python=sys.executable))
    (bin_dir / "hkgai").chmod(0o755)
    # The fake hkgai first, then this environment's python (the image's).
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {"PATH": path, "REPORT_FROM": str(tmp_path / "report-from.json")}
    launcher = RayCurationLauncher(image="registry.example/hkgai:1.0", kubeconfig_file=str(cluster.kubeconfig(tmp_path)), poll_s=0.2,
                                   pending_timeout_s=20, run_timeout_s=60, env_from_secrets=[], pod_env=env, workers=16)
    got = {}

    @dg.asset
    def cleaned_corpus(context: dg.AssetExecutionContext):
        got["run"] = launcher.curate(context, lake_dir=tmp_path / "lake", sources=sources, params_file=ROOT / "params.yaml", out_dir=version,
                                     work_dir=version.parent, parts_dir=version.parent / "parts")
        return dg.MaterializeResult(metadata={"kept": got["run"].stats.kept})

    with dg.instance_for_test() as instance:
        result = dg.materialize([cleaned_corpus], instance=instance, raise_on_error=False)
    failures = [_chain(e.event_specific_data.error) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return result, sent, got.get("run"), failures, version


def test_the_launcher_returns_the_run_the_rayjobs_driver_reported_and_removes_the_report(cluster, tmp_path):
    result, sent, run, failures, version = _launcher_run(cluster, tmp_path, sources=["hkcancor", "ctcpc"])
    assert result.success, failures
    assert run == sent  # the asset sees the driver's counts, content hash, phases and incremental figures
    (created,) = cluster.rayjobs_created
    assert f"--report {version.parent}/.curate-staging-report-v-new.json" in created["spec"]["entrypoint"]
    assert "--workers 16" in created["spec"]["entrypoint"]
    assert not list(version.parent.glob("*report*"))


@pytest.mark.parametrize("sources", [["ctcpc"], ["ctcpc", "hkcancor"]])
def test_a_rayjob_that_curated_another_catalog_fails_the_step(cluster, tmp_path, sources):
    """Other sources, or the same in another order (which changes the kept record of a cluster)."""
    result, _, run, failures, _ = _launcher_run(cluster, tmp_path, sources=sources)
    assert not result.success and run is None
    assert f"the RayJob curated the catalog sources ['hkcancor', 'ctcpc'], the code location's are {sources}" in failures[0]
