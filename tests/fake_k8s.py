"""A small fake Kubernetes API server for the launcher tests.

It answers the calls the real kubernetes client makes for pods and Kubeflow PyTorchJobs, and
plays kubelet and training operator: a created pod's container command really runs here as a
subprocess with the pod's env (so Dagster Pipes messages are genuine), its stdout becomes the
pod log, and its exit sets the phase. Tests reach in to delete or evict a pod mid-run, and
`hang_logs` keeps log streams open after their pod is gone, as a lost node's stream does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeCluster:
    def __init__(self) -> None:
        self.pods: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.logs: dict[str, list[str]] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.deleted: list[str] = []
        self.hang_logs = False
        self.run_containers = True
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

    def add_pod(self, pod: dict) -> None:
        name = pod["metadata"]["name"]
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
        env = {**os.environ, **{e["name"]: e.get("value", "") for e in container.get("env") or []}}
        self._set_status(name, "Running", {"running": {"startedAt": _now()}}, ready=True)
        process = subprocess.Popen(container["command"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.processes[name] = process
        for line in process.stdout:
            with self.lock:
                if name in self.logs:
                    self.logs[name].append(f"{_now()} {line.rstrip()}")
        code = process.wait()
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
        """What `kubectl delete pod` or a lost node's garbage collection does."""
        with self.lock:
            self.pods.pop(name, None)
            self.deleted.append(name)
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
                    items = [p for n, p in cluster.pods.items() if not wanted or n == wanted]
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
                if match := re.fullmatch(r"/apis/kubeflow.org/v1/namespaces/[^/]+/pytorchjobs/([^/]+)", url.path):
                    job = cluster.jobs.get(match[1])
                    return self._send(200, job) if job else self._missing("pytorchjobs", match[1])
                self._send(404, {"message": f"no route {url.path}"})

            def _stream_log(self, name: str, follow: bool) -> None:
                if name not in cluster.logs:
                    return self._missing("pods", name)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                sent = 0
                while True:
                    lines = cluster.logs.get(name, [])
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
