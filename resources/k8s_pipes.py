"""Dagster Pipes on Kubernetes for training: one GPU pod, or a multi-node Kubeflow Trainer v2
TrainJob (legacy: a training-operator v1 PyTorchJob).

`TrainingPipesK8sClient` is dagster-k8s's PipesK8sClient (its kube config loading, its Pipes
context injector and pod-log message reader, its pod builder) with a different wait:

- the Pipes messages are read from node 0's (rank 0's) pod log in a background thread, so a log
  stream that stays open after its node died cannot block the run;
- the pods themselves are polled (`training.k8s_watch.watch_pods`): deleted, evicted,
  disrupted, failed or stuck pods fail the Dagster step with the reason within one poll
  interval, and the asset's RetryPolicy resumes from the newest checkpoint on the shared volume;
- whatever happens (success, failure, the run cancelled from the UI), the pod or the whole
  TrainJob / PyTorchJob is deleted on the way out, so no node keeps a GPU.
"""

from __future__ import annotations

import json
import random
import re
import string
import threading
from collections.abc import Callable, Mapping, Sequence

from dagster import AssetExecutionContext, OpExecutionContext
from dagster._core.pipes.client import PipesClientCompletedInvocation
from dagster._core.pipes.utils import open_pipes_session
from dagster_k8s import PipesK8sClient
from dagster_k8s.client import DagsterKubernetesClient
from dagster_k8s.pipes import PipesK8sPodLogsMessageReader, build_pod_body, get_pod_name

from hkgai_pipelines.training.k8s_watch import (
    JOBSET_NAME, TrainingPodError, WatchLimits, creation_tracker, jobset_pods, pod_verdict, watch_pods,
)
from hkgai_pipelines.training.pod_spec import LOCAL_QUEUE, RUNTIME_NAME, TRAINER_GROUP, TRAINER_VERSION, GpuPodOptions, pytorchjob, trainjob

KUBEFLOW = ("kubeflow.org", "v1", "pytorchjobs")
TRAINER = (TRAINER_GROUP, TRAINER_VERSION, "trainjobs")


def _not_found(error: Exception) -> bool:
    return getattr(error, "status", None) == 404


def trainjob_name(run_id: str, op_name: str) -> str:
    """get_pod_name's form, short enough that node 0's hostname `<name>-node-0-0` is a DNS label
    (63 characters) and starting with a letter (the TrainJob CRD requires an RFC 1035 name). The
    random suffix keeps a retry's TrainJob apart from one still being deleted."""
    op = re.sub("[^a-z0-9-]", "", op_name.lower().replace("_", "-"))[:20].strip("-")
    return f"dagster-{run_id[:8]}-{op}-{''.join(random.choices(string.digits, k=6))}"


class LogFollower:
    """Feeds rank 0's log to the Pipes message reader on a daemon thread. `pod_name` may be a
    function: a TrainJob's node 0 pod gets its name (a random suffix) only once it is created."""

    def __init__(self, reader: PipesK8sPodLogsMessageReader, context, core_api, pod_name: str | Callable[[], str], namespace: str) -> None:
        self.error: BaseException | None = None
        self.pod_name = pod_name if isinstance(pod_name, str) else "node 0's pod"

        def follow() -> None:
            try:
                reader.consume_pod_logs(context=context, core_api=core_api, pod_name=self.pod_name, namespace=namespace)
            except BaseException as error:  # reported by join(), not lost on the thread
                self.error = error

        self.resolve = (lambda: pod_name) if isinstance(pod_name, str) else pod_name
        self.thread = threading.Thread(target=follow, name="pipes-logs", daemon=True)

    def start(self) -> None:
        self.pod_name = self.resolve()
        self.thread.start()

    def join(self, timeout_s: float) -> None:
        """After the pods succeeded: the log must end soon (it holds the materialization)."""
        if not self.thread.is_alive() and self.thread.ident is None:
            raise TrainingPodError(f"the logs of {self.pod_name} were never followed")
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise TrainingPodError(f"the log of {self.pod_name} did not end within {timeout_s:.0f} s of the pod succeeding")
        if self.error is not None:
            raise TrainingPodError(f"reading the Pipes messages from {self.pod_name} failed: {self.error!r}")


class TrainingPipesK8sClient(PipesK8sClient):
    def _read_pod(self, core_api, name: str, namespace: str) -> dict | None:
        try:
            return json.loads(core_api.read_namespaced_pod(name, namespace, _preload_content=False).data)
        except Exception as error:
            if _not_found(error):
                return None
            raise

    def _supervise(self, context, client, read: Callable[[], dict], log_pod: str | Callable[[], str], namespace: str,
                   limits: WatchLimits, teardown: Callable[[], None]) -> None:
        follower = LogFollower(self.message_reader, context, client.core_api, log_pod, namespace)
        try:
            watch_pods(read, limits, on_running=follower.start)
            if follower.thread.ident is None:  # finished between two polls: read the whole log now
                follower.start()
            follower.join(timeout_s=max(60.0, 6 * limits.poll_s))
        except TrainingPodError as error:
            context.log.error(f"training stopped: {error}")
            raise
        finally:
            teardown()

    def _delete(self, context, kind: str, name: str, delete: Callable[[], object]) -> None:
        try:
            delete()
        except Exception as error:
            if not _not_found(error):
                context.log.warning(f"could not delete {kind} {name}: {error!r}")

    def run_pod(self, *, context: OpExecutionContext | AssetExecutionContext, image: str, command: Sequence[str], namespace: str,
                base_pod_spec: Mapping, base_pod_meta: Mapping, limits: WatchLimits) -> PipesClientCompletedInvocation:
        """One pod (G GPUs on one node), built by dagster-k8s's own pod builder."""
        self._load_k8s_config()
        client = DagsterKubernetesClient.production_client()
        with open_pipes_session(context=context, context_injector=self.context_injector, message_reader=self.message_reader) as session:
            name = get_pod_name(context.run_id, context.op.name)
            body = build_pod_body(pod_name=name, image=image, command=list(command), env_vars=session.get_bootstrap_env_vars(),
                                  base_pod_meta=base_pod_meta, base_pod_spec=base_pod_spec)
            client.core_api.create_namespaced_pod(namespace, body)
            context.log.info(f"created pod {namespace}/{name}")

            def teardown() -> None:
                self._delete(context, "pod", name, lambda: client.core_api.delete_namespaced_pod(name, namespace))

            observe = creation_tracker(created=(name,))
            self._supervise(context, client, lambda: {name: observe(name, self._read_pod(client.core_api, name, namespace))},
                            name, namespace, limits, teardown)
        return PipesClientCompletedInvocation(session)

    def _clients(self):
        """(the dagster-k8s client, a CustomObjectsApi on its connection) for a multi-node job."""
        import kubernetes

        self._load_k8s_config()
        client = DagsterKubernetesClient.production_client()
        return client, kubernetes.client.CustomObjectsApi(client.core_api.api_client)

    def run_trainjob(self, *, context: OpExecutionContext | AssetExecutionContext, options: GpuPodOptions, command: Sequence[str],
                     nodes: int, limits: WatchLimits, runtime: str = RUNTIME_NAME, queue: str | None = LOCAL_QUEUE) -> PipesClientCompletedInvocation:
        """N nodes as a Kubeflow Trainer v2 TrainJob on the ClusterTrainingRuntime `runtime`; node 0
        speaks Pipes. Raises TrainingPodError when the TrainJob or one of its pods is deleted, evicted
        or fails, or a WatchLimits bound passes (time queued by Kueue counts as pending)."""
        client, custom = self._clients()
        namespace = options.namespace
        with open_pipes_session(context=context, context_injector=self.context_injector, message_reader=self.message_reader) as session:
            name = trainjob_name(context.run_id, context.op.name)
            job = trainjob(options, list(command), nodes, name, pipes_env=dict(session.get_bootstrap_env_vars()), runtime=runtime,
                           queue=queue, deadline_s=int(limits.pending_timeout_s + limits.run_timeout_s))
            custom.create_namespaced_custom_object(*TRAINER[:2], namespace, TRAINER[2], job)
            context.log.info(f"created TrainJob {namespace}/{name}: {nodes} nodes x {options.gpus} GPUs on {runtime}"
                             + (f", queue {queue}" if queue else ""))
            seen: set[str] = set()
            node0: list[str] = []

            def read() -> dict:
                try:
                    status = custom.get_namespaced_custom_object(*TRAINER[:2], namespace, TRAINER[2], name).get("status") or {}
                except Exception as error:
                    if _not_found(error):
                        raise TrainingPodError(f"TrainJob {name} no longer exists: it was deleted before it finished") from None
                    raise
                listed = client.core_api.list_namespaced_pod(namespace, label_selector=f"{JOBSET_NAME}={name}", _preload_content=False)
                pods, first = jobset_pods(json.loads(listed.data)["items"], seen, name, nodes)
                if first and not node0:
                    node0.append(first)
                failed = next((c for c in status.get("conditions") or [] if c.get("type") == "Failed" and c.get("status") == "True"), None)
                # A pod's own reason (evicted, OOMKilled) says more than the TrainJob's; this one
                # covers the rest (deadline exceeded, a node that failed and is gone already).
                if failed and not any(pod_verdict(pod, pod_name).state == "failed" for pod_name, pod in pods.items()):
                    raise TrainingPodError(f"TrainJob {name} failed ({failed.get('reason')}): {failed.get('message', '')}")
                return pods

            def teardown() -> None:
                # Foreground: the JobSet, its Jobs and every node's pod go before the TrainJob does.
                self._delete(context, "TrainJob", name, lambda: custom.delete_namespaced_custom_object(
                    *TRAINER[:2], namespace, TRAINER[2], name, propagation_policy="Foreground"))

            def node0_pod() -> str:  # asked once every node runs (or all have finished)
                if not node0:
                    raise TrainingPodError(f"TrainJob {name}: no pod of node 0 was ever listed")
                return node0[0]

            self._supervise(context, client, read, node0_pod, namespace, limits, teardown)
        return PipesClientCompletedInvocation(session)

    def run_pytorchjob(self, *, context: OpExecutionContext | AssetExecutionContext, options: GpuPodOptions, command: Sequence[str],
                       nodes: int, limits: WatchLimits, queue: str | None = LOCAL_QUEUE) -> PipesClientCompletedInvocation:
        """Legacy (training-operator v1): N pods as a PyTorchJob; rank 0 (the Master) speaks Pipes."""
        client, custom = self._clients()
        namespace = options.namespace
        with open_pipes_session(context=context, context_injector=self.context_injector, message_reader=self.message_reader) as session:
            name = get_pod_name(context.run_id, context.op.name)
            job = pytorchjob(options, list(command), nodes, name, pipes_env=dict(session.get_bootstrap_env_vars()), queue=queue)
            custom.create_namespaced_custom_object(*KUBEFLOW[:2], namespace, KUBEFLOW[2], job)
            context.log.info(f"created PyTorchJob {namespace}/{name}: {nodes} nodes x {options.gpus} GPUs")
            # The operator names pods <job>-master-0 and <job>-worker-<i>.
            pods = [f"{name}-master-0"] + [f"{name}-worker-{i}" for i in range(nodes - 1)]
            observe = creation_tracker()

            def read() -> dict:
                try:
                    custom.get_namespaced_custom_object(*KUBEFLOW[:2], namespace, KUBEFLOW[2], name)
                except Exception as error:
                    if _not_found(error):
                        raise TrainingPodError(f"PyTorchJob {name} no longer exists: it was deleted before it finished") from None
                    raise
                return {pod: observe(pod, self._read_pod(client.core_api, pod, namespace)) for pod in pods}

            def teardown() -> None:  # cleanPodPolicy All: deleting the job deletes every rank's pod
                self._delete(context, "PyTorchJob", name, lambda: custom.delete_namespaced_custom_object(*KUBEFLOW[:2], namespace, KUBEFLOW[2], name))

            self._supervise(context, client, read, pods[0], namespace, limits, teardown)
        return PipesClientCompletedInvocation(session)
