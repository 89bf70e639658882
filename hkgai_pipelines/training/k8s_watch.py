"""Watching training pods until they finish, with every way of not finishing made an error.

dagster-k8s waits for a Pipes pod by following its log stream and its container statuses. When
the node goes away the stream can stay open and the last container status stays `running`, so
the run hangs (dagster issue 22453). Here the verdict comes from the pod object itself, polled
at a fixed interval: a pod that is gone, being deleted, evicted, disrupted (preemption, node
shutdown, taint eviction), failed, or stuck in an image or crash loop ends the watch with a
`TrainingPodError` naming the pod and the reason, within one poll interval of the API server
saying so. A pod whose node stops reporting (phase Unknown) is given `unknown_grace_s`.

Pure logic over the pod JSON (camelCase, as the API returns it); the Kubernetes calls are the
caller's `read` function.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: Waiting reasons that never resolve by themselves.
FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff", "CreateContainerError",
                 "CreateContainerConfigError", "InvalidImageName", "RunContainerError"}


class TrainingPodError(RuntimeError):
    pass


@dataclass(frozen=True)
class PodVerdict:
    state: str  # pending | running | succeeded | failed | unknown
    message: str = ""


def _terminated_detail(status: dict) -> str:
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            reason = terminated.get("reason") or "Error"
            return f"container {container.get('name')} exited {terminated.get('exitCode')} ({reason})"
    return ""


def pod_verdict(pod: dict | None, name: str) -> PodVerdict:
    if pod is None:
        return PodVerdict("failed", f"pod {name} no longer exists: it was deleted (by a person, a controller or node loss) before it finished")
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase", "Pending")
    if phase == "Succeeded":
        return PodVerdict("succeeded")
    if status.get("reason") == "Evicted":
        return PodVerdict("failed", f"pod {name} was evicted: {status.get('message', 'no message')}")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return PodVerdict("failed", f"pod {name} was disrupted ({condition.get('reason')}): {condition.get('message', '')}".rstrip(": "))
    if metadata.get("deletionTimestamp"):
        return PodVerdict("failed", f"pod {name} is being deleted (since {metadata['deletionTimestamp']})")
    if phase == "Failed":
        detail = _terminated_detail(status) or status.get("message") or status.get("reason") or "no detail"
        return PodVerdict("failed", f"pod {name} failed: {detail}")
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            return PodVerdict("failed", f"pod {name}: container {container.get('name')} {waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            return PodVerdict("failed", f"pod {name} failed: {_terminated_detail(status)}")
    if phase == "Unknown":
        return PodVerdict("unknown", f"pod {name}: its node stopped reporting")
    return PodVerdict("running" if phase == "Running" else "pending")


def creation_tracker(created: tuple[str, ...] = ()) -> Callable[[str, dict | None], dict | None]:
    """Maps "not found" to a pending placeholder until the pod has been seen once: a pod the
    operator has not created yet is pending; one that disappears after being seen, or after
    we created it ourselves (`created`), is gone."""
    seen: set[str] = set(created)

    def observe(name: str, pod: dict | None) -> dict | None:
        if pod is None:
            return None if name in seen else {"status": {"phase": "Pending"}}
        seen.add(name)
        return pod

    return observe


#: The labels JobSet (v0.12, under Kubeflow Trainer v2) and the Job controller put on a TrainJob's
#: pods. A TrainJob's JobSet has its name; node i of the `node` replicated job is completion index
#: i of the Job `<name>-node-0`, in a pod named `<name>-node-0-<i>-<random suffix>`.
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX = "jobset.sigs.k8s.io/job-index"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def jobset_pods(listed: list[dict], seen: set[str], name: str, nodes: int, replicated_job: str = "node") -> tuple[dict[str, dict | None], str | None]:
    """The pods of TrainJob `name` for `watch_pods`, and node 0's pod name (None until it exists).

    `listed` is the pod list by JobSet label; `seen` (updated here) the pod names seen so far, so a
    pod that disappears is reported gone (None) even when a controller has replaced it since. A
    node without a pod yet is pending under its hostname `<name>-node-0-<i>`."""
    pods: dict[str, dict | None] = {}
    node0, covered = None, set()
    for pod in listed:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(REPLICATED_JOB) != replicated_job:
            continue
        pod_name = pod["metadata"]["name"]
        pods[pod_name] = pod
        seen.add(pod_name)
        index = labels.get(COMPLETION_INDEX)
        covered.add(index)
        if index == "0" and labels.get(JOB_INDEX, "0") == "0" and node0 is None:
            node0 = pod_name
    pods.update({gone: None for gone in seen - pods.keys()})
    pods.update({f"{name}-{replicated_job}-0-{i}": {"status": {"phase": "Pending"}} for i in range(nodes) if str(i) not in covered})
    return pods, node0


@dataclass(frozen=True)
class WatchLimits:
    poll_s: float = 10.0
    #: Scheduling, image pull and start-up together (GPU nodes may need to scale up).
    pending_timeout_s: float = 1800.0
    #: The whole run; a stage has a budget, and "forever" is not one.
    run_timeout_s: float = 6 * 3600.0
    unknown_grace_s: float = 120.0


def watch_pods(read: Callable[[], dict[str, dict | None]], limits: WatchLimits, on_running: Callable[[], None] | None = None,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll `read()` ({pod name: pod JSON or None when gone}) until every pod succeeded.

    `on_running` is called once, when every pod runs (start following logs then). Raises
    TrainingPodError for the first pod that cannot finish, or when a limit passes.
    """
    started = clock()
    unknown_since: dict[str, float] = {}
    all_ran = False
    while True:
        now = clock()
        verdicts = {name: pod_verdict(pod, name) for name, pod in read().items()}
        for name, verdict in verdicts.items():
            if verdict.state == "failed":
                raise TrainingPodError(verdict.message)
            if verdict.state == "unknown":
                since = unknown_since.setdefault(name, now)
                if now - since > limits.unknown_grace_s:
                    raise TrainingPodError(f"{verdict.message} for {now - since:.0f} s (limit {limits.unknown_grace_s:.0f} s)")
            else:
                unknown_since.pop(name, None)
        states = {v.state for v in verdicts.values()}
        if states == {"succeeded"}:
            return
        if not all_ran and states <= {"running", "succeeded", "unknown"}:
            all_ran = True
            if on_running:
                on_running()
        if not all_ran and now - started > limits.pending_timeout_s:
            pending = sorted(n for n, v in verdicts.items() if v.state == "pending")
            raise TrainingPodError(f"pods {pending} still pending after {limits.pending_timeout_s:.0f} s (no GPU node free, or the image does not pull)")
        if now - started > limits.run_timeout_s:
            raise TrainingPodError(f"training did not finish within {limits.run_timeout_s:.0f} s")
        sleep(limits.poll_s)
