"""Curation on a Ray cluster: a KubeRay RayJob (ray.io/v1), launched and watched from Dagster.

In the production profile `cleaned_corpus` curates through `RayCurationLauncher` (the local
profile through `launcher.LocalCurationLauncher`, in the run's process). Tested against a fake
KubeRay (tests/test_kuberay.py) that runs the submitter's entry point, the real `hkgai curate`
on a real local Ray cluster, as a subprocess; not against a real KubeRay operator.

The design: `cleaned_corpus` runs `hkgai curate --lake LAKE --out VERSION ...` (`curate_command`) on
a Ray cluster of its own: KubeRay creates the cluster from the RayJob's `rayClusterSpec` (a head and an autoscaling group of CPU workers, every pod mounting the lake's volume where the
training pods mount it), submits the entry point through a submitter pod once the cluster is up
(the driver runs on the head with RAY_ADDRESS set, so the engine's tasks spread over the
workers), and deletes the cluster when the job ends.

- `curation_rayjob` builds the RayJob (pure data; k8s/ray/rayjob-curation.yaml is rendered from
  it and the tests validate both against the RayJob CRD schema of KubeRay v1.7.0 in k8s/crds);
- `rayjob_verdict` and `watch_rayjob` turn the RayJob's status and its submitter pod into
  "keep waiting", "done" or an error with the reason;
- `RayJobPipesClient.run_rayjob` runs one under Dagster Pipes: the Pipes variables go into the
  Ray job's runtime environment (`runtimeEnvYAML`, so they reach the driver on the head, not only
  the submitter pod), the messages are read from the submitter pod's log (KubeRay's submitter
  runs `ray job logs --follow`, which prints the driver's output), and the RayJob is deleted
  whatever happens;
- `RayCurationLauncher` is the Dagster resource the asset calls.

Why not dagster-ray's `PipesKubeRayJobClient` (dagster-ray 0.4.8, checked against its source):
it reads the Pipes messages over the Ray dashboard's job-log websocket, so the Dagster run pod
would need the `ray` package and a network path to every head's dashboard; its wait loop treats
a RayJob whose `jobDeploymentStatus` is Failed as still running once `jobStatus` is set (an
`activeDeadlineSeconds` or submitter failure mid-run then hangs the step); and it leaves the
RayJob behind when the job ends or fails. This client talks only to the Kubernetes API, like the training launcher
(`k8s_pipes.py`), whose log follower, teardown and pod verdicts it reuses.

`python -m hkgai_pipelines.resources.ray_jobs k8s` rewrites the rendered example.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import yaml
from dagster import AssetExecutionContext, OpExecutionContext
from dagster._core.pipes.client import PipesClientCompletedInvocation
from dagster._core.pipes.utils import open_pipes_session

from hkgai_pipelines.curation.engine import EngineRun
from hkgai_pipelines.curation.pipeline import STAGING_PREFIX
from hkgai_pipelines.resources.k8s_pipes import LogFollower, TrainingPipesK8sClient, trainjob_name
from hkgai_pipelines.resources.launcher import CurationLauncher
from hkgai_pipelines.training.k8s_watch import PodVerdict, TrainingPodError, WatchLimits, pod_verdict

RAY_GROUP, RAY_API_VERSION = "ray.io", "v1"
RAYJOBS = (RAY_GROUP, RAY_API_VERSION, "rayjobs")
#: The KubeRay release the RayJob is written for: its CRDs are in k8s/crds, its operator's Helm
#: values in k8s/kuberay-operator/values.yaml.
KUBERAY_VERSION = "v1.7.0"
#: The Ray of the project image (the tests keep it equal to the installed one). KubeRay reads it:
#: from Ray 2.53 on it probes the Ray pods over HTTP instead of running wget, which the image
#: does not carry.
RAY_VERSION = "2.60.0"
#: Where the KubeRay operator runs; it polls each job's status on the head's dashboard (8265), so
#: the NetworkPolicy `ray-curation` (k8s/base/networkpolicies.yaml) admits this namespace.
OPERATOR_NAMESPACE = "kuberay-system"
#: Labels on every pod of a curation RayJob (head, workers, submitter); the NetworkPolicy
#: `ray-curation` lets these pods reach each other (Ray picks many of its ports at run time).
CURATION_LABELS = {"app.kubernetes.io/part-of": "hkgai", "hkgai/role": "curation"}
#: KubeRay's labels on the submitter pod of RayJob <name> (v1.7.0, rayjob_controller.go).
SUBMITTER_NAME_LABEL = "ray.io/originated-from-cr-name"
SUBMITTER_CRD_LABEL = "ray.io/originated-from-crd"
#: KubeRay refuses longer RayJob names (53 characters for the cluster it names <job>-<5 chars>).
MAX_RAYJOB_NAME = 47
#: Kueue (v0.19) admits an autoscaling RayJob only as an elastic workload, with this annotation.
ELASTIC_JOB_ANNOTATION = "kueue.x-k8s.io/elastic-job"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: The lake: the claim and mount path every training pod uses (tests keep them equal), so the
#: paths the Dagster run pod passes (lake/, lake/cleaned) are the same on every Ray pod.
LAKE_CLAIM = "hkgai-home"
HOME_MOUNT = "/mnt/hkgai"
#: The entry point wrapper that speaks Pipes for `hkgai curate` (hkgai_pipelines/pipes_command.py).
PIPES_COMMAND_MODULE = "hkgai_pipelines.pipes_command"



def _restricted_container() -> dict:
    """The container security context of the restricted Pod Security profile (uid of the image)."""
    return {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _restricted_pod() -> dict:
    return {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}


class RayJobError(TrainingPodError):
    """A curation RayJob that cannot finish: the message names the RayJob (or its submitter pod)
    and KubeRay's or Ray's reason."""


@dataclass(frozen=True)
class RayCurationOptions:
    image: str
    namespace: str = "hkgai"
    #: The head runs the GCS, the dashboard and the driver (`hkgai curate`), and no Ray tasks
    #: (num-cpus 0): the curation work goes to the workers, the head stays responsive.
    head_cpu: str = "2"
    head_memory: str = "8Gi"
    worker_cpu: str = "8"
    worker_memory: str = "32Gi"
    #: The autoscaler keeps between min and max workers, adding them while Ray has queued tasks.
    min_workers: int = 1
    max_workers: int = 8
    #: Seconds a worker may sit idle before the autoscaler removes it.
    idle_timeout_s: int = 60
    lake_claim: str = LAKE_CLAIM
    home_mount: str = HOME_MOUNT
    #: Secrets whose keys become environment variables of every Ray pod: hkgai-s3 holds the S3
    #: credentials (pyarrow's S3 filesystem reads AWS_* from the environment when the lake or the
    #: output is an s3:// URI) and HKGAI_DVC_REMOTE, which the production settings require.
    env_from_secrets: tuple[str, ...] = ("hkgai-s3",)
    #: Non-secret (name, value) settings of the Ray pods; `settings_env` gives the ones the
    #: production profile of `hkgai` needs.
    env: tuple[tuple[str, str], ...] = ()
    ray_version: str = RAY_VERSION
    #: Should the launcher die, KubeRay deletes the finished cluster after this long.
    ttl_after_finished_s: int = 300
    node_selector: dict[str, str] = field(default_factory=dict)


def settings_env(home_mount: str = HOME_MOUNT, mlflow_tracking_uri: str | None = None, weaviate_url: str | None = None) -> tuple[tuple[str, str], ...]:
    """The `hkgai` settings of the Ray pods. The image sets HKGAI_PROFILE=production, whose
    settings refuse to load without the servers' addresses, so the pods get the addresses the
    code location has (the secrets, HKGAI_DVC_REMOTE among them, come from `env_from_secrets`)."""
    env = [("HKGAI_PROFILE", "production"), ("HKGAI_HOME", home_mount), ("HF_HUB_OFFLINE", "1")]
    env += [(name, value) for name, value in (("HKGAI_MLFLOW_TRACKING_URI", mlflow_tracking_uri), ("HKGAI_WEAVIATE_URL", weaviate_url)) if value]
    return tuple(env)


def _container(name: str, options: RayCurationOptions, cpu: str, memory: str, ports: list[dict] | None = None) -> dict:
    container = {
        "name": name,
        "image": options.image,
        # No CPU limit (throttling would only slow the work down); KubeRay gives Ray the CPU
        # request as num-cpus and the memory limit as its memory.
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "env": [{"name": name_, "value": value} for name_, value in options.env],
        "envFrom": [{"secretRef": {"name": secret}} for secret in options.env_from_secrets],
        "volumeMounts": [{"name": "hkgai-home", "mountPath": options.home_mount}, {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": _restricted_container(),
    }
    if ports:
        container["ports"] = ports
    return container


def _ray_pod(container: dict, options: RayCurationOptions, memory: str, automount_token: bool) -> dict:
    spec = {
        "securityContext": _restricted_pod(),
        "containers": [container],
        "volumes": [
            {"name": "hkgai-home", "persistentVolumeClaim": {"claimName": options.lake_claim}},
            # Ray's object store lives in /dev/shm; the container default (64 MiB) would push it
            # to disk. Memory-backed, so it counts toward (and is capped by) the pod's memory.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": memory}},
        ],
    }
    if not automount_token:
        spec["automountServiceAccountToken"] = False  # workers need no Kubernetes API access
    if options.node_selector:
        spec["nodeSelector"] = dict(options.node_selector)
    return {"metadata": {"labels": dict(CURATION_LABELS)}, "spec": spec}


def _submitter_template(options: RayCurationOptions) -> dict:
    """KubeRay's default submitter (the head's image, 500m/200Mi) with the namespace's pod
    rules: labels for the NetworkPolicy, the restricted security context, no API token. KubeRay
    fills in the command (`ray job submit --no-wait ...; ray job logs --follow ...`)."""
    container = {
        "name": "ray-job-submitter",
        "image": options.image,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _restricted_container(),
    }
    return {"metadata": {"labels": dict(CURATION_LABELS)},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "securityContext": _restricted_pod(),
                     "containers": [container]}}


def curation_rayjob(options: RayCurationOptions, entrypoint: Sequence[str], name: str, pipes_env: dict[str, str] | None = None,
                    queue: str | None = None, deadline_s: int | None = None) -> dict:
    """The RayJob running `entrypoint` (argv; Ray runs it through a shell, so it is quoted here)
    on a cluster of its own.

    `pipes_env` (the Dagster Pipes bootstrap variables) goes into the Ray job's runtime
    environment, which is what reaches the driver. `queue` labels the RayJob for Kueue (the
    LocalQueue's ClusterQueue must cover CPU nodes) and, because the cluster autoscales, marks it
    an elastic workload. `deadline_s` ends the job on KubeRay's side too, should the Dagster run
    pod that watches it die. Raises ValueError for a name KubeRay refuses or min > max workers."""
    if len(name) > MAX_RAYJOB_NAME:
        raise ValueError(f"RayJob name {name!r} is longer than KubeRay's {MAX_RAYJOB_NAME} characters")
    if not 0 <= options.min_workers <= options.max_workers or options.max_workers < 1:
        raise ValueError(f"need 0 <= min_workers <= max_workers and max_workers >= 1, got {options.min_workers}..{options.max_workers}")
    head_ports = [{"name": "gcs-server", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                  {"name": "client", "containerPort": 10001}]
    head = _ray_pod(_container("ray-head", options, options.head_cpu, options.head_memory, head_ports), options, options.head_memory,
                    automount_token=True)  # the autoscaler sidecar in the head patches the RayCluster
    worker = _ray_pod(_container("ray-worker", options, options.worker_cpu, options.worker_memory), options, options.worker_memory,
                      automount_token=False)
    metadata: dict = {"name": name, "namespace": options.namespace, "labels": {"app.kubernetes.io/part-of": "hkgai", "hkgai/stage": "curation"}}
    if queue:
        metadata["labels"][QUEUE_LABEL] = queue
        metadata["annotations"] = {ELASTIC_JOB_ANNOTATION: "true"}
    spec: dict = {
        "entrypoint": shlex.join(entrypoint),
        # K8sJobMode: a submitter pod submits the job and prints its log (the Pipes channel).
        "submissionMode": "K8sJobMode",
        # No retries inside the RayJob: a failed job fails the Dagster step, and the asset's retry
        # runs it again (a second submission would print the Pipes messages a second time).
        "backoffLimit": 0,
        "submitterConfig": {"backoffLimit": 0},
        "submitterPodTemplate": _submitter_template(options),
        # The cluster goes when the job ends (Kueue requires it); the launcher deletes the
        # RayJob itself as soon as it has read the result.
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": options.ttl_after_finished_s,
        "rayClusterSpec": {
            "rayVersion": options.ray_version,
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {
                "upscalingMode": "Default",
                "idleTimeoutSeconds": options.idle_timeout_s,
                "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}},
                "securityContext": _restricted_container(),
            },
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": head},
            "workerGroupSpecs": [{
                "groupName": "cpu",
                "replicas": options.min_workers,
                "minReplicas": options.min_workers,
                "maxReplicas": options.max_workers,
                "rayStartParams": {},
                "template": worker,
            }],
        },
    }
    if pipes_env:
        spec["runtimeEnvYAML"] = yaml.safe_dump({"env_vars": dict(sorted(pipes_env.items()))}, sort_keys=True)
    if deadline_s:
        spec["activeDeadlineSeconds"] = int(deadline_s)
    return {"apiVersion": f"{RAY_GROUP}/{RAY_API_VERSION}", "kind": "RayJob", "metadata": metadata, "spec": spec}


def curate_command(lake_dir: str, out_dir: str, workers: int, *, work_dir: str | None = None, parts_dir: str | None = None,
                   params_file: str | None = None, report: str | None = None) -> list[str]:
    """The driver's command: `hkgai curate` under the Pipes wrapper, which reports the run's
    report (`--report`, default OUT/stats.json) as the materialization. `cleaned_corpus` passes
    the versions folder's resume and parts folders (incremental, as in the run pod), its
    params.yaml, and a report file beside the version."""
    command = ["hkgai", "curate", "--lake", lake_dir, "--out", out_dir, "--workers", str(workers)]
    for option, value in (("--work-dir", work_dir), ("--parts-dir", parts_dir), ("--params", params_file), ("--report", report)):
        if value is not None:
            command += [option, value]
    return ["python", "-m", PIPES_COMMAND_MODULE, "--report-json", report or f"{out_dir}/stats.json", "--", *command]


# ------------------------------------------------------------------ verdicts and the wait

#: jobDeploymentStatus values in which the Ray cluster is not up yet: a new RayJob, one held by
#: Kueue (Suspended), one whose pods are starting (Initializing).
_NOT_STARTED = {"", "New", "Initializing", "Suspending", "Suspended", "Retrying", "Waiting"}


def rayjob_verdict(job: dict | None, name: str) -> PodVerdict:
    """pending | running | succeeded | failed, from the RayJob JSON (None once it is gone).

    KubeRay v1.7.0 reports a job in `status.jobDeploymentStatus` (the cluster and submission:
    Failed with a `reason` such as DeadlineExceeded or SubmissionFailed; ValidationFailed for a
    spec it refuses) and `status.jobStatus` (Ray's own: FAILED or STOPPED with Ray's message).
    Either failing fails the job, whichever comes first; success needs both: Complete and
    SUCCEEDED (a STOPPED job also ends Complete)."""
    if job is None:
        return PodVerdict("failed", f"RayJob {name} no longer exists: it was deleted before it finished")
    metadata, status = job.get("metadata") or {}, job.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return PodVerdict("failed", f"RayJob {name} is being deleted (since {metadata['deletionTimestamp']})")
    deployment, ray_status = status.get("jobDeploymentStatus") or "", status.get("jobStatus") or ""
    message = (status.get("message") or "").strip()
    if deployment == "ValidationFailed":
        return PodVerdict("failed", f"KubeRay refused RayJob {name}: {message or 'no message'}")
    if deployment == "Failed":
        return PodVerdict("failed", f"RayJob {name} failed ({status.get('reason') or 'no reason'}): {message or 'no message'}")
    if ray_status in ("FAILED", "STOPPED"):
        return PodVerdict("failed", f"Ray job {status.get('jobId', '?')} of RayJob {name} {ray_status}: {message or 'no message'}")
    if deployment == "Complete":
        if ray_status == "SUCCEEDED":
            return PodVerdict("succeeded")
        return PodVerdict("failed", f"RayJob {name} completed with Ray job status {ray_status or 'unknown'}: {message or 'no message'}")
    if deployment in _NOT_STARTED:
        return PodVerdict("pending", deployment or "New")
    return PodVerdict("running", deployment)


def submitter_pod(listed: list[dict], seen: list[str]) -> tuple[str, dict | None] | None:
    """The submitter pod to follow, from the pods listed by KubeRay's submitter labels: None while
    there is none, (name, pod) once one exists, (name, None) once the one seen is gone. `seen`
    (updated here) keeps the first one: with backoffLimit 0 there is no second."""
    if not seen:
        if not listed:
            return None
        first = min(listed, key=lambda pod: (pod["metadata"].get("creationTimestamp") or "", pod["metadata"]["name"]))
        seen.append(first["metadata"]["name"])
    return seen[0], next((pod for pod in listed if pod["metadata"]["name"] == seen[0]), None)


def watch_rayjob(read: Callable[[], tuple[dict | None, list[dict]]], name: str, limits: WatchLimits,
                 on_running: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll `read()` (the RayJob JSON or None when gone, and its submitter pods) until the RayJob
    succeeded.

    `on_running(pod name)` is called once, when the submitter pod runs (or has already finished):
    its log is readable from then on. Raises RayJobError for a failed, refused or deleted RayJob,
    a submitter pod that fails, is deleted or evicted, and when the job has not started within
    `pending_timeout_s` (queued by Kueue or no node for its cluster: that time counts) or not
    finished within `run_timeout_s`."""
    started = clock()
    seen: list[str] = []
    following = False
    unknown_since: float | None = None
    while True:
        now = clock()
        job, listed = read()
        verdict = rayjob_verdict(job, name)
        if verdict.state == "failed":
            raise RayJobError(verdict.message)
        submitter = submitter_pod(listed, seen)
        if submitter is not None:
            pod_name, pod = submitter
            pod_state = pod_verdict(pod, pod_name)
            if pod_state.state == "failed":
                raise RayJobError(f"the submitter of RayJob {name}: {pod_state.message}")
            if pod_state.state == "unknown":
                unknown_since = now if unknown_since is None else unknown_since
                if now - unknown_since > limits.unknown_grace_s:
                    raise RayJobError(f"the submitter of RayJob {name}: {pod_state.message} for {now - unknown_since:.0f} s")
            else:
                unknown_since = None
            if not following and pod_state.state in ("running", "succeeded"):
                following = True
                if on_running:
                    on_running(pod_name)
        if verdict.state == "succeeded":
            return
        if not following and now - started > limits.pending_timeout_s:
            raise RayJobError(f"RayJob {name} did not start within {limits.pending_timeout_s:.0f} s (deployment status {verdict.message}): "
                              "queued by Kueue, no node free for its Ray cluster, or the image does not pull")
        if now - started > limits.run_timeout_s:
            raise RayJobError(f"RayJob {name} did not finish within {limits.run_timeout_s:.0f} s")
        sleep(limits.poll_s)


# ------------------------------------------------------------------ the Pipes client


class RayJobPipesClient(TrainingPipesK8sClient):
    """dagster-k8s's Pipes pieces (kube config, context injector, pod-log message reader) around a
    RayJob: see the module docstring."""

    def run_rayjob(self, *, context: OpExecutionContext | AssetExecutionContext, options: RayCurationOptions,
                   entrypoint: Sequence[str], limits: WatchLimits, queue: str | None = None) -> PipesClientCompletedInvocation:
        """Runs `entrypoint` as the driver of a new RayJob and returns what it reported through
        Pipes. Raises RayJobError (see `watch_rayjob`); the RayJob is deleted on the way out,
        whatever the outcome (success, failure, the run cancelled)."""
        client, custom = self._clients()
        namespace = options.namespace
        with open_pipes_session(context=context, context_injector=self.context_injector, message_reader=self.message_reader) as session:
            name = trainjob_name(context.run_id, context.op.name)
            job = curation_rayjob(options, entrypoint, name, pipes_env=dict(session.get_bootstrap_env_vars()), queue=queue,
                                  deadline_s=int(limits.pending_timeout_s + limits.run_timeout_s))
            custom.create_namespaced_custom_object(*RAYJOBS[:2], namespace, RAYJOBS[2], job)
            context.log.info(f"created RayJob {namespace}/{name}: head + {options.min_workers}..{options.max_workers} workers "
                             f"x {options.worker_cpu} CPUs" + (f", queue {queue}" if queue else ""))
            selector = f"{SUBMITTER_NAME_LABEL}={name},{SUBMITTER_CRD_LABEL}=RayJob"

            def read() -> tuple[dict | None, list[dict]]:
                try:
                    current = custom.get_namespaced_custom_object(*RAYJOBS[:2], namespace, RAYJOBS[2], name)
                except Exception as error:
                    if getattr(error, "status", None) != 404:  # the API's "not found": deleted
                        raise
                    current = None
                listed = client.core_api.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
                return current, json.loads(listed.data)["items"]

            submitter: list[str] = []

            def submitter_name() -> str:
                if not submitter:
                    raise RayJobError(f"RayJob {name}: no submitter pod was ever listed")
                return submitter[0]

            follower = LogFollower(self.message_reader, context, client.core_api, submitter_name, namespace)

            def start_following(pod_name: str) -> None:
                submitter.append(pod_name)
                follower.start()

            try:
                watch_rayjob(read, name, limits, on_running=start_following)
                if follower.thread.ident is None:
                    raise RayJobError(f"RayJob {name} succeeded but its submitter pod was never seen running")
                # The submitter has finished (KubeRay marks the job Complete only then), so its log
                # ends; what it held has to be read before the RayJob and its pods are deleted.
                follower.join(timeout_s=max(60.0, 6 * limits.poll_s))
            except TrainingPodError as error:
                context.log.error(f"curation stopped: {error}")
                raise
            finally:
                # Background propagation: KubeRay's finalizer stops the Ray job while its cluster
                # still exists, then the garbage collector removes the cluster and the submitter.
                self._delete(context, "RayJob", name, lambda: custom.delete_namespaced_custom_object(*RAYJOBS[:2], namespace, RAYJOBS[2], name))
        return PipesClientCompletedInvocation(session, metadata={"RayJob": f"{namespace}/{name}"})


# ------------------------------------------------------------------ the Dagster resource


def _cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity ("8", "500m") in CPUs."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


class RayCurationLauncher(CurationLauncher):
    """Runs `hkgai curate` for `cleaned_corpus` on a KubeRay RayJob (production profile).

    `curate(...)` runs the engine on the RayJob's own Ray cluster into the new version folder on
    the shared volume (the same files a local run writes) and returns the `EngineRun` the
    driver wrote as its report; the RayJob's Pipes materialization (the report's counts) is
    logged. A RayJob that fails, is deleted, or does not start or end within the bounds raises
    RayJobError with the reason."""

    image: str
    namespace: str = "hkgai"
    head_cpu: str = "2"
    head_memory: str = "8Gi"
    worker_cpu: str = "8"
    worker_memory: str = "32Gi"
    min_workers: int = 1
    max_workers: int = 8
    #: `hkgai curate --workers`; 0: one per worker CPU of the largest cluster (max_workers x worker_cpu).
    workers: int = 0
    #: A Kueue LocalQueue whose ClusterQueue covers CPU nodes; "" leaves Kueue out. (The
    #: training queue's flavor selects GPU nodes, so it is not one for curation.)
    queue: str = ""
    lake_claim: str = LAKE_CLAIM
    home_mount: str = HOME_MOUNT
    env_from_secrets: list[str] = ["hkgai-s3"]
    #: Non-secret environment of the Ray pods (see `settings_env`).
    pod_env: dict[str, str] = {}
    poll_s: float = 10.0
    #: Queued by Kueue, nodes scaling up, the image pulling: all of it counts.
    pending_timeout_s: float = 1800.0
    run_timeout_s: float = 6 * 3600.0
    #: Kube config: in-cluster when None (the Dagster run pod), else this kubeconfig file.
    kubeconfig_file: str | None = None

    def options(self) -> RayCurationOptions:
        return RayCurationOptions(
            image=self.image, namespace=self.namespace, head_cpu=self.head_cpu, head_memory=self.head_memory, worker_cpu=self.worker_cpu,
            worker_memory=self.worker_memory, min_workers=self.min_workers, max_workers=self.max_workers, lake_claim=self.lake_claim,
            home_mount=self.home_mount, env_from_secrets=tuple(self.env_from_secrets), env=tuple(self.pod_env.items()),
        )

    def limits(self) -> WatchLimits:
        return WatchLimits(poll_s=self.poll_s, pending_timeout_s=self.pending_timeout_s, run_timeout_s=self.run_timeout_s)

    def parallelism(self) -> int:
        return self.workers or self.max_workers * max(1, int(_cpus(self.worker_cpu)))

    def client(self) -> RayJobPipesClient:
        if self.kubeconfig_file:
            return RayJobPipesClient(load_incluster_config=False, kubeconfig_file=self.kubeconfig_file, poll_interval=self.poll_s)
        return RayJobPipesClient(load_incluster_config=True, poll_interval=self.poll_s)

    def run(self, context: AssetExecutionContext, entrypoint: Sequence[str]) -> dg.MaterializeResult:
        """Any entry point on the curation cluster (it must speak Pipes and report one materialization)."""
        invocation = self.client().run_rayjob(context=context, options=self.options(), entrypoint=list(entrypoint), limits=self.limits(),
                                              queue=self.queue or None)
        return invocation.get_materialize_result()

    def curate(self, context: AssetExecutionContext, *, lake_dir: Path, sources: list[str], params_file: Path,
               out_dir: Path, work_dir: Path, parts_dir: Path) -> EngineRun:
        """Curate the lake into `out_dir`: a new version folder (`OutputVersions.new_version()`),
        which the caller publishes after its gates, DVC push and MLflow run. `sources`: the
        code location's catalog; the driver reads the catalog of the same image and HKGAI_HOME,
        and a report of other sources or another order (the order decides which record of a
        duplicate cluster is kept) raises RayJobError. Every path must be on the volume both
        pods mount."""
        report = Path(work_dir) / f"{STAGING_PREFIX}report-{Path(out_dir).name}.json"
        report.unlink(missing_ok=True)
        try:
            self.run(context, curate_command(str(lake_dir), str(out_dir), self.parallelism(), work_dir=str(work_dir),
                                             parts_dir=str(parts_dir), params_file=str(params_file), report=str(report)))
            written = json.loads(report.read_text(encoding="utf-8"))
        finally:
            report.unlink(missing_ok=True)
        if written.get("catalog") != list(sources):
            raise RayJobError(f"the RayJob curated the catalog sources {written.get('catalog')}, the code location's are {list(sources)}: "
                              "the image's configs/sources.yaml differs from the code location's")
        run = EngineRun.from_report(written)
        context.log.info(f"RayJob curation: kept {run.stats.kept} of {run.stats.input_records} ({run.cluster}, {run.workers} workers)")
        return run


def ray_curation_launcher(image: str | dg.EnvVar, namespace: str = "hkgai", mlflow_tracking_uri: str | None = None,
                          weaviate_url: str | None = None, home_mount: str = HOME_MOUNT) -> RayCurationLauncher:
    """The launcher `resources_for("production")` gives `cleaned_corpus`: the project image, the
    settings the Ray pods need to load the production profile, and the home mounted where the
    run pod has it (the lake and version paths the asset passes must mean the same there)."""
    return RayCurationLauncher(image=image, namespace=namespace, home_mount=home_mount,
                               pod_env=dict(settings_env(home_mount, mlflow_tracking_uri, weaviate_url)))


# ------------------------------------------------------------------ the rendered example

EXAMPLE_IMAGE = "ghcr.io/hkgai/hkgai-pipelines:0.1.0"
#: The version folder in the example; the launcher is given `OutputVersions.new_version()`.
EXAMPLE_VERSION = "v20261201T000000000000Z"
EXAMPLE_HEADER = (
    f"# The curation RayJob (KubeRay {KUBERAY_VERSION}, ray.io/v1) that RayCurationLauncher creates for cleaned_corpus in the\n"
    "# production profile: `hkgai curate` over the lake on the shared volume, on a Ray cluster of its own (a head and\n"
    "# 1..8 autoscaled 8-CPU workers) that KubeRay deletes when the job ends. Rendered from\n"
    "# resources/ray_jobs.py by `python -m hkgai_pipelines.resources.ray_jobs k8s`; tests keep the two equal and\n"
    "# validate this file against the RayJob CRD schema in k8s/crds. The launcher fills in the Dagster Pipes\n"
    "# variables (placeholders here) and a new version folder of cleaned.versions/ (the asset makes it current after\n"
    "# its DVC push and MLflow run). To run it by hand, without Dagster or Pipes, drop runtimeEnvYAML and:\n"
    "#   kubectl -n hkgai create -f k8s/ray/rayjob-curation.yaml\n"
)


def example_rayjob() -> dict:
    """The object behind k8s/ray/rayjob-curation.yaml."""
    options = RayCurationOptions(image=EXAMPLE_IMAGE, env=settings_env(HOME_MOUNT, "http://mlflow.hkgai.svc.cluster.local:5000",
                                                                        "http://weaviate.hkgai.svc.cluster.local:80"))
    lake = f"{HOME_MOUNT}/lake"
    pipes = {"DAGSTER_PIPES_CONTEXT": "<set by the launcher>", "DAGSTER_PIPES_MESSAGES": "<set by the launcher>"}
    # Into a new version folder, not lake/cleaned (the current version's link, which `hkgai curate`
    # refuses): the asset publishes the version after its DVC push and MLflow run.
    command = curate_command(lake, f"{lake}/cleaned.versions/{EXAMPLE_VERSION}", options.max_workers * int(options.worker_cpu))
    return curation_rayjob(options, command, "hkgai-curate-cleaned-corpus", pipes_env=pipes, deadline_s=int(WatchLimits().pending_timeout_s
                                                                                                            + WatchLimits().run_timeout_s))


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "k8s") / "ray" / "rayjob-curation.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(EXAMPLE_HEADER + yaml.safe_dump(example_rayjob(), sort_keys=False))
    print(f"wrote {target}")
