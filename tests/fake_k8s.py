"""A small fake Kubernetes API server for the launcher tests.

It answers the calls the real kubernetes client makes for pods, Kubeflow Trainer v2 TrainJobs and
(legacy) PyTorchJobs, and plays kubelet, training operator, Trainer with JobSet, and Kueue: a
created pod's container command really runs here as a subprocess with the pod's env (so Dagster
Pipes messages are genuine), its stdout becomes the pod log, and its exit sets the phase. Tests
reach in to delete or evict a pod mid-run, `hang_logs` keeps log streams open after their pod is
gone, as a lost node's stream does, and `hold_admission` keeps TrainJobs suspended (queued by
Kueue) until `admit`.

`trainjob_pods` is the Trainer's part in brief: the pods a TrainJob becomes on its runtime, named
and labelled as JobSet v0.12 and the Job controller name and label them.

KubeRay (v1.7.0) RayJobs: the fake operator validates a created RayJob as KubeRay does (the rules
in `kuberay_refusal`), holds it Suspended while `hold_admission` (Kueue), and otherwise brings it
to Running and creates its submitter pod (`rayjob_submitter_pod`), whose process is the Ray
job's driver; when it exits the RayJob becomes Complete/SUCCEEDED or Failed/FAILED with Ray's
message, `rayjob_status_lag_s` after the pod has finished (KubeRay notices on a later reconcile).
`fail_rayjob` plays a failure KubeRay reports on its own (a deadline passed, the submission failed).
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import string
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _merge(base: dict, patch: dict) -> None:
    """Strategic merge, as far as the launcher's runtime patch needs it: maps merge, lists of named
    objects merge by name (volume mounts by mountPath, their patch merge key), other lists replace."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value) and isinstance(base.get(key), list):
            merge_key = "mountPath" if key == "volumeMounts" else "name"
            by_key = {item.get(merge_key): item for item in base[key]}
            for item in value:
                if item.get(merge_key) in by_key and merge_key in item:
                    _merge(by_key[item[merge_key]], item)
                else:
                    base[key].append(copy.deepcopy(item))
        else:
            base[key] = copy.deepcopy(value)


def _upsert_env(env: list[dict], extra: list[dict]) -> list[dict]:
    merged = {e["name"]: e for e in env}
    merged.update({e["name"]: e for e in extra})
    return list(merged.values())


def trainjob_pods(runtime: dict, job: dict) -> list[dict]:
    """The pods of `job` on `runtime` (one replicated job `node`): the runtime patches merged into
    the pod template, the trainer's image, command, env and resources on container `node`, the
    Torch plugin's PET_* variables (node rank from the completion index annotation), and JobSet's
    and the Job controller's names and labels."""
    name, namespace, trainer = job["metadata"]["name"], job["metadata"]["namespace"], job["spec"]["trainer"]
    rjob = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    template = copy.deepcopy(rjob["template"]["spec"]["template"])
    for patch in job["spec"].get("runtimePatches", []):
        for rpatch in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if rpatch["name"] == rjob["name"]:
                _merge(template, rpatch["template"]["spec"]["template"])
    nodes = trainer.get("numNodes", runtime["spec"]["mlPolicy"].get("numNodes", 1))
    container = next(c for c in template["spec"]["containers"] if c["name"] == "node")
    container.update(image=trainer["image"], command=list(trainer["command"]))
    _merge(container.setdefault("resources", {}), trainer.get("resourcesPerNode", {}))
    container["env"] = _upsert_env(container.get("env", []), trainer.get("env", []) + [
        {"name": "PET_NNODES", "value": str(nodes)}, {"name": "PET_NPROC_PER_NODE", "value": str(trainer.get("numProcPerNode", "auto"))},
        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
        {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"}, {"name": "PET_MASTER_PORT", "value": "29500"},
    ])
    container["ports"] = [{"containerPort": 29500}]
    pods = []
    for index in range(nodes):
        labels = {**template.get("metadata", {}).get("labels", {}), "jobset.sigs.k8s.io/jobset-name": name,
                  "jobset.sigs.k8s.io/replicatedjob-name": rjob["name"], "jobset.sigs.k8s.io/job-index": "0",
                  "batch.kubernetes.io/job-completion-index": str(index), "job-name": f"{name}-{rjob['name']}-0"}
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{name}-{rjob['name']}-0-{index}-{suffix}", "namespace": namespace, "labels": labels,
                                  "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
                     "spec": {**copy.deepcopy(template["spec"]), "hostname": f"{name}-{rjob['name']}-0-{index}", "subdomain": name}})
    return pods


def _env_value(pod: dict, entry: dict) -> str:
    """An env entry's value as the kubelet resolves it (field references to annotations only)."""
    if "value" in entry:
        return entry["value"]
    path = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
    match = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
    return (pod["metadata"].get("annotations") or {}).get(match[1], "") if match else ""


#: KubeRay's labels on a RayJob's submitter pod (v1.7.0, rayjob_controller.go getSubmitterTemplate);
#: the Job controller adds batch.kubernetes.io/job-name (the submitter Job is named after the RayJob).
RAYJOB_NAME_LABEL = "ray.io/originated-from-cr-name"
RAYJOB_CRD_LABEL = "ray.io/originated-from-crd"
#: Ray's message for a failed driver (ray 2.60, dashboard/modules/job/job_supervisor.py).
RAY_FAILED_MESSAGE = "Job entrypoint command failed with exit code {code}, last available logs (truncated to 20,000 chars):\n{tail}"


def kuberay_refusal(job: dict) -> str | None:
    """Why KubeRay v1.7.0 would set a RayJob ValidationFailed (ray-operator/controllers/ray/utils/
    validation.go, the rules a launcher could break), or None when it accepts it."""
    name, spec = job["metadata"]["name"], job["spec"]
    if len(name) > 47:
        return "The RayJob metadata is invalid: RayJob name should be no more than 47 characters"
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        return "The RayJob metadata is invalid: RayJob name should be a valid DNS1035 label"
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        return "The RayJob spec is invalid: a RayJob with shutdownAfterJobFinishes set to false is not allowed to be suspended"
    if not spec.get("shutdownAfterJobFinishes") and spec.get("ttlSecondsAfterFinished", 0) > 0:
        return "The RayJob spec is invalid: a RayJob with shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished"
    cluster = spec.get("rayClusterSpec")
    if not cluster:
        return "The RayJob spec is invalid: one of RayClusterSpec or ClusterSelector must be set"
    if not cluster["headGroupSpec"]["template"]["spec"].get("containers"):
        return "The RayJob spec is invalid: headGroupSpec should have at least one container"
    for group in cluster.get("workerGroupSpecs") or []:
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not cluster.get("enableInTreeAutoscaling") and (low is None or high is None):
            return f"The RayJob spec is invalid: worker group {group['groupName']} must set both minReplicas and maxReplicas when autoscaling is disabled"
        if low is not None and high is not None and low > high:
            return f"The RayJob spec is invalid: worker group {group['groupName']} has minReplicas {low} greater than maxReplicas {high}"
    try:
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
    except yaml.YAMLError as error:
        return f"failed to unmarshal RuntimeEnvYAML: {error}"
    if not isinstance(runtime_env, dict):
        return "failed to unmarshal RuntimeEnvYAML: not a mapping"
    if spec.get("activeDeadlineSeconds", 1) <= 0:
        return "The RayJob spec is invalid: activeDeadlineSeconds must be a positive integer"
    return None


def kueue_refusal(job: dict) -> str | None:
    """Why Kueue v0.19.2's RayJob webhook would deny creating a RayJob labelled for a queue
    (pkg/controller/jobs/rayjob/rayjob_webhook.go, raycluster/common.go), or None."""
    if not (job["metadata"].get("labels") or {}).get("kueue.x-k8s.io/queue-name"):
        return None
    spec = job["spec"]
    if not spec.get("shutdownAfterJobFinishes"):
        return "spec.shutdownAfterJobFinishes: Invalid value: false: a kueue managed job should delete the cluster after finishing"
    cluster = spec["rayClusterSpec"]
    if cluster.get("enableInTreeAutoscaling") and (job["metadata"].get("annotations") or {}).get("kueue.x-k8s.io/elastic-job") != "true":
        return "spec.rayClusterSpec.enableInTreeAutoscaling: Invalid value: true: a kueue managed job should only use autoscaling when workload slicing is enabled"
    if any(group["groupName"] == "head" for group in cluster.get("workerGroupSpecs") or []):
        return 'spec.rayClusterSpec.workerGroupSpecs: Forbidden: "head" is reserved for the head group'
    return None


def rayjob_submitter_pod(job: dict) -> dict:
    """The submitter pod KubeRay makes of `job` (its submitterPodTemplate, KubeRay's and the Job
    controller's labels), as this fake runs it. On a cluster the pod runs `ray job submit --no-wait
    -- <entrypoint>; ray job logs --follow`: the entrypoint runs as the driver on the Ray head, with
    the head container's environment, RAY_ADDRESS and the job's runtime env_vars, and the pod's
    log is the driver's output. Here the pod runs the entrypoint (through a shell, as Ray does)
    with that environment itself, so its log is that same output; nothing else of the submitter
    template reaches the driver."""
    name, spec = job["metadata"]["name"], job["spec"]
    template = copy.deepcopy(spec.get("submitterPodTemplate") or {"spec": {"restartPolicy": "Never", "containers": [{"name": "ray-job-submitter"}]}})
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
    container = template["spec"]["containers"][0]
    container.setdefault("image", head.get("image", ""))
    container["command"] = ["/bin/sh", "-c", spec["entrypoint"]]
    container["env"] = [e for e in head.get("env") or [] if "value" in e] + [{"name": "RAY_ADDRESS", "value": "127.0.0.1:6379"}] + [
        {"name": key, "value": str(value)} for key, value in (runtime_env.get("env_vars") or {}).items()]
    labels = {**(template.get("metadata") or {}).get("labels", {}), RAYJOB_NAME_LABEL: name, RAYJOB_CRD_LABEL: "RayJob",
              "app.kubernetes.io/created-by": "kuberay-operator", "batch.kubernetes.io/job-name": name, "job-name": name}
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-{suffix}", "namespace": job["metadata"]["namespace"], "labels": labels},
            "spec": template["spec"]}


class FakeCluster:
    def __init__(self) -> None:
        self.pods: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.trainjobs: dict[str, dict] = {}
        self.runtimes: dict[str, dict] = {}
        self.failed_trainjobs: set[str] = set()
        self.hold_admission = False
        self.logs: dict[str, list[str]] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.deleted: list[str] = []
        self.followed: set[str] = set()  # pods whose log someone has asked for
        self.hang_logs = False
        self.run_containers = True
        self.rayjobs: dict[str, dict] = {}
        self.rayjob_status: dict[str, dict] = {}
        self.rayjobs_created: list[dict] = []  # every RayJob as it was posted
        self.rayjob_status_lag_s = 0.3
        self.exit_hooks: dict[str, object] = {}  # pod name -> called with the exit code instead of setting the phase
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, folder: Path) -> Path:
        path = folder / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "hkgai"}}],
        }))
        return path

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        self.server.shutdown()

    # ------------------------------------------------------------ kubelet and operator

    def add_pod(self, pod: dict, on_exit=None) -> None:
        name = pod["metadata"]["name"]
        if on_exit is not None:
            self.exit_hooks[name] = on_exit
        pod["metadata"].setdefault("creationTimestamp", _now())
        pod["status"] = {"phase": "Pending"}
        with self.lock:
            self.pods[name] = pod
            self.logs[name] = []
        if self.run_containers:
            threading.Thread(target=self._run, args=(name,), daemon=True).start()

    def _run(self, name: str) -> None:
        pod = self.pods[name]
        container = pod["spec"]["containers"][0]
        env = {**os.environ, **{e["name"]: _env_value(pod, e) for e in container.get("env") or []}}
        self._set_status(name, "Running", {"running": {"startedAt": _now()}}, ready=True)
        process = subprocess.Popen(container["command"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.processes[name] = process
        for line in process.stdout:
            with self.lock:
                if name in self.logs:
                    self.logs[name].append(f"{_now()} {line.rstrip()}")
        code = process.wait()
        if name in self.exit_hooks:
            return self.exit_hooks[name](code)
        if name in self.pods and self.pods[name]["status"].get("reason") != "Evicted":
            self._set_status(name, "Succeeded" if code == 0 else "Failed",
                             {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}})

    def _set_status(self, name: str, phase: str, state: dict, ready: bool = False) -> None:
        with self.lock:
            if name in self.pods:
                container = self.pods[name]["spec"]["containers"][0]
                self.pods[name]["status"] = {"phase": phase, "containerStatuses": [{
                    "name": container["name"], "image": container.get("image", ""), "imageID": "", "restartCount": 0,
                    "ready": ready, "state": state}]}

    def delete_pod(self, name: str) -> None:
        """What `kubectl delete pod` or a lost node's garbage collection does. A TrainJob that
        loses a pod fails (backoffLimit 0: its Job fails, so its JobSet and the TrainJob do)."""
        with self.lock:
            pod = self.pods.pop(name, None)
            self.deleted.append(name)
            trainjob = ((pod or {}).get("metadata", {}).get("labels") or {}).get("jobset.sigs.k8s.io/jobset-name")
            if trainjob in self.trainjobs:
                self.failed_trainjobs.add(trainjob)
        process = self.processes.get(name)
        if process and process.poll() is None:
            process.kill()

    def evict(self, name: str, message: str = "The node was low on resource: memory.") -> None:
        with self.lock:
            status = self.pods[name]["status"]
            status.update(phase="Failed", reason="Evicted", message=message)
        process = self.processes.get(name)
        if process and process.poll() is None:
            process.kill()

    def add_job(self, job: dict) -> None:
        """The training operator: a Master and Workers from the replica templates, with PET_* env."""
        name = job["metadata"]["name"]
        self.jobs[name] = job
        specs = job["spec"]["pytorchReplicaSpecs"]
        nodes = sum(spec["replicas"] for spec in specs.values())
        rank = 0
        for role in ("Master", "Worker"):
            for index in range(specs.get(role, {}).get("replicas", 0)):
                template = json.loads(json.dumps(specs[role]["template"]))
                container = template["spec"]["containers"][0]
                container["env"] = container.get("env", []) + [
                    {"name": "PET_NNODES", "value": str(nodes)}, {"name": "PET_NODE_RANK", "value": str(rank)},
                    {"name": "PET_MASTER_ADDR", "value": f"{name}-master-0"}, {"name": "PET_MASTER_PORT", "value": "23456"},
                ]
                self.add_pod({"metadata": {"name": f"{name}-{role.lower()}-{index}", "labels": {"training.kubeflow.org/job-name": name}},
                              "spec": template["spec"]})
                rank += 1

    def add_trainjob(self, job: dict) -> None:
        """Kueue and Trainer: suspended while `hold_admission`, else its pods are created."""
        self.trainjobs[job["metadata"]["name"]] = job
        if self.hold_admission:
            job["spec"]["suspend"] = True
        else:
            self.admit(job["metadata"]["name"])

    def admit(self, name: str) -> None:
        job = self.trainjobs[name]
        job["spec"]["suspend"] = False
        for pod in trainjob_pods(self.runtimes[job["spec"]["runtimeRef"]["name"]], job):
            self.add_pod(pod)

    def trainjob_status(self, name: str) -> dict:
        """The Trainer copies its JobSet's Failed condition; a JobSet fails with its first failed Job."""
        phases = [p["status"]["phase"] for p in list(self.pods.values())
                  if p["metadata"].get("labels", {}).get("jobset.sigs.k8s.io/jobset-name") == name]
        if name in self.failed_trainjobs or "Failed" in phases:
            return {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs",
                                    "message": "jobset failed due to one or more job failures"}]}
        if self.trainjobs[name]["spec"].get("suspend"):
            return {"conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended", "message": "TrainJob is suspended"}]}
        return {}

    def delete_trainjob(self, name: str) -> None:
        """Deleting a TrainJob deletes its JobSet, Jobs and pods (owner references)."""
        self.trainjobs.pop(name, None)
        self.deleted.append(name)
        for pod in [p for p, body in list(self.pods.items()) if body["metadata"].get("labels", {}).get("jobset.sigs.k8s.io/jobset-name") == name]:
            self.delete_pod(pod)

    def add_rayjob(self, job: dict) -> None:
        """KubeRay (and Kueue): refuse an invalid RayJob, hold one while `hold_admission`, else run it."""
        name = job["metadata"]["name"]
        self.rayjobs_created.append(copy.deepcopy(job))
        self.rayjobs[name] = job
        refusal = kuberay_refusal(job)
        if refusal:
            self.rayjob_status[name] = {"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed", "message": refusal}
        elif self.hold_admission:
            job["spec"]["suspend"] = True
            self.rayjob_status[name] = {"jobDeploymentStatus": "Suspended", "jobStatus": ""}
        else:
            self.admit_rayjob(name)

    def admit_rayjob(self, name: str) -> None:
        """The cluster is up at once: the job is submitted and its submitter pod created."""
        job = self.rayjobs[name]
        job["spec"]["suspend"] = False
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        cluster = f"{name}-{suffix}"
        self.rayjob_status[name] = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": f"{name}-{suffix[::-1]}",
                                    "rayClusterName": cluster, "dashboardURL": f"{cluster}-head-svc.{job['metadata']['namespace']}.svc.cluster.local:8265",
                                    "startTime": _now()}
        pod = rayjob_submitter_pod(job)
        self.add_pod(pod, on_exit=lambda code: self._rayjob_driver_exited(name, pod["metadata"]["name"], code))

    def _rayjob_driver_exited(self, name: str, pod_name: str, code: int) -> None:
        # `ray job logs --follow` ends with the job, 0 whatever the job's outcome: the pod succeeds.
        self._set_status(pod_name, "Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}})
        tail = [line.split(" ", 1)[-1] for line in self.logs.get(pod_name, [])[-10:]]

        def report() -> None:
            with self.lock:
                status = self.rayjob_status.get(name)
                if status is None or status.get("jobDeploymentStatus") in ("Complete", "Failed"):
                    return
                if code == 0:
                    status.update(jobStatus="SUCCEEDED", jobDeploymentStatus="Complete", message="Job finished successfully.")
                else:
                    status.update(jobStatus="FAILED", jobDeploymentStatus="Failed", reason="AppFailed",
                                  message=RAY_FAILED_MESSAGE.format(code=code, tail="\n".join(tail)))
                status["endTime"] = _now()

        timer = threading.Timer(self.rayjob_status_lag_s, report)
        timer.daemon = True
        timer.start()

    def fail_rayjob(self, name: str, reason: str, message: str) -> None:
        """A failure KubeRay reports itself (DeadlineExceeded, SubmissionFailed, ...); Ray's own
        jobStatus stays what it was, as on a cluster."""
        with self.lock:
            self.rayjob_status[name].update(jobDeploymentStatus="Failed", reason=reason, message=message, endTime=_now())

    def delete_rayjob(self, name: str) -> None:
        """Deleting a RayJob deletes its RayCluster and submitter Job, so their pods (owner references)."""
        self.rayjobs.pop(name, None)
        self.rayjob_status.pop(name, None)
        self.deleted.append(name)
        for pod in [p for p, body in list(self.pods.items()) if body["metadata"].get("labels", {}).get(RAYJOB_NAME_LABEL) == name]:
            self.delete_pod(pod)

    # ------------------------------------------------------------ HTTP

    def _handler(self):
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _missing(self, kind: str, name: str) -> None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "message": f'{kind} "{name}" not found', "code": 404})

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

            def do_POST(self):
                path = urlparse(self.path).path
                body = self._body()
                if re.fullmatch(r"/api/v1/namespaces/[^/]+/pods", path):
                    created = json.loads(json.dumps(body))
                    cluster.add_pod(body)
                    return self._send(201, created)
                if re.fullmatch(r"/apis/kubeflow.org/v1/namespaces/[^/]+/pytorchjobs", path):
                    cluster.add_job(body)
                    return self._send(201, body)
                if re.fullmatch(r"/apis/trainer.kubeflow.org/v1alpha1/namespaces/[^/]+/trainjobs", path):
                    created = json.loads(json.dumps(body))
                    cluster.add_trainjob(body)
                    return self._send(201, created)
                if re.fullmatch(r"/apis/ray.io/v1/namespaces/[^/]+/rayjobs", path):
                    if refusal := kueue_refusal(body):  # Kueue's validating webhook
                        return self._send(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                                                "message": f'admission webhook "vrayjob.kb.io" denied the request: {refusal}'})
                    created = json.loads(json.dumps(body))
                    cluster.add_rayjob(body)
                    return self._send(201, created)
                self._send(404, {"message": f"no route {path}"})

            def do_DELETE(self):
                path = urlparse(self.path).path
                if match := re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/([^/]+)", path):
                    if match[1] not in cluster.pods:
                        return self._missing("pods", match[1])
                    cluster.delete_pod(match[1])
                    return self._send(200, {"kind": "Status", "status": "Success"})
                if match := re.fullmatch(r"/apis/kubeflow.org/v1/namespaces/[^/]+/pytorchjobs/([^/]+)", path):
                    if cluster.jobs.pop(match[1], None) is None:
                        return self._missing("pytorchjobs", match[1])
                    cluster.deleted.append(match[1])
                    for pod in [p for p, body in cluster.pods.items() if body["metadata"].get("labels", {}).get("training.kubeflow.org/job-name") == match[1]]:
                        cluster.delete_pod(pod)  # cleanPodPolicy: All
                    return self._send(200, {"kind": "Status", "status": "Success"})
                if match := re.fullmatch(r"/apis/trainer.kubeflow.org/v1alpha1/namespaces/[^/]+/trainjobs/([^/]+)", path):
                    if match[1] not in cluster.trainjobs:
                        return self._missing("trainjobs", match[1])
                    cluster.delete_trainjob(match[1])
                    return self._send(200, {"kind": "Status", "status": "Success"})
                if match := re.fullmatch(r"/apis/ray.io/v1/namespaces/[^/]+/rayjobs/([^/]+)", path):
                    if match[1] not in cluster.rayjobs:
                        return self._missing("rayjobs.ray.io", match[1])
                    cluster.delete_rayjob(match[1])
                    return self._send(200, {"kind": "Status", "status": "Success"})
                self._send(404, {"message": f"no route {path}"})

            def do_GET(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if match := re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/([^/]+)/log", url.path):
                    return self._stream_log(match[1], query.get("follow", ["false"])[0].lower() == "true")
                if match := re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/([^/]+)", url.path):
                    pod = cluster.pods.get(match[1])
                    return self._send(200, pod) if pod else self._missing("pods", match[1])
                if re.fullmatch(r"/api/v1/namespaces/[^/]+/pods", url.path):
                    wanted = query.get("fieldSelector", [""])[0].removeprefix("metadata.name=")
                    selector = dict(term.split("=", 1) for term in query.get("labelSelector", [""])[0].split(",") if term)
                    items = [p for n, p in list(cluster.pods.items()) if (not wanted or n == wanted)
                             and selector.items() <= (p["metadata"].get("labels") or {}).items()]
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
                if match := re.fullmatch(r"/apis/trainer.kubeflow.org/v1alpha1/namespaces/[^/]+/trainjobs/([^/]+)", url.path):
                    job = cluster.trainjobs.get(match[1])
                    return self._send(200, {**job, "status": cluster.trainjob_status(match[1])}) if job else self._missing("trainjobs", match[1])
                if match := re.fullmatch(r"/apis/ray.io/v1/namespaces/[^/]+/rayjobs/([^/]+)", url.path):
                    job = cluster.rayjobs.get(match[1])
                    if not job:
                        return self._missing("rayjobs.ray.io", match[1])
                    with cluster.lock:
                        status = dict(cluster.rayjob_status.get(match[1], {}))
                    return self._send(200, {**job, "status": status})
                if match := re.fullmatch(r"/apis/kubeflow.org/v1/namespaces/[^/]+/pytorchjobs/([^/]+)", url.path):
                    job = cluster.jobs.get(match[1])
                    return self._send(200, job) if job else self._missing("pytorchjobs", match[1])
                self._send(404, {"message": f"no route {url.path}"})

            def _stream_log(self, name: str, follow: bool) -> None:
                if name not in cluster.logs:
                    return self._missing("pods", name)
                cluster.followed.add(name)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                sent = 0
                while True:
                    # A copy: the pod's thread appends while we write, and a line appended
                    # between the write and the count would be skipped.
                    lines = list(cluster.logs.get(name, []))
                    for line in lines[sent:]:
                        self.wfile.write((line + "\n").encode())
                        self.wfile.flush()
                    sent = len(lines)
                    gone = name not in cluster.pods
                    done = gone or cluster.pods[name]["status"]["phase"] in ("Succeeded", "Failed")
                    if done and cluster.hang_logs:
                        time.sleep(3600)  # a lost node's stream: open, silent
                    if not follow or (done and sent == len(cluster.logs.get(name, []))):
                        return
                    time.sleep(0.05)

        return Handler
