"""Everything under k8s/ validates: core objects against the target Kubernetes schema, Kubeflow
Trainer and Kueue objects against the CRD schemas in k8s/crds, pod templates as pods; the overlays
and k8s/cluster build with kustomize; the Kueue quota, the RBAC, the Helm values, the Dockerfile
and the rendered examples agree with the code."""

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hkgai_pipelines.settings import HkgaiSettings
from hkgai_pipelines.training.pod_spec import LOCAL_QUEUE, TARGET_KUBERNETES_VERSION, example_objects
from tests.crd_schemas import is_custom, validate_custom

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name not in ("values.yaml", "kustomization.yaml"))


def _validate_pod_template(template: dict, name: str, restart_policy: str | None = None) -> None:
    spec = {**template["spec"], **({"restartPolicy": restart_policy} if restart_policy else {})}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **template.get("metadata", {})}, "spec": spec}
    kubernetes_validate.validate(pod, TARGET_KUBERNETES_VERSION, strict=True)


def validate(document: dict) -> None:
    """Core objects against the Kubernetes schema; Trainer and Kueue objects against their CRD
    schemas, a runtime's pod templates also as pods; a PyTorchJob (legacy, no CRD schema kept) by
    its pod templates."""
    if is_custom(document):
        validate_custom(document)
        if document["kind"] in ("ClusterTrainingRuntime", "TrainingRuntime"):
            for replicated in document["spec"]["template"]["spec"]["replicatedJobs"]:
                _validate_pod_template(replicated["template"]["spec"]["template"], f"x-{replicated['name']}")
    elif document["kind"] == "PyTorchJob":
        assert document["apiVersion"] == "kubeflow.org/v1"
        for role, replica in document["spec"]["pytorchReplicaSpecs"].items():
            assert set(replica) == {"replicas", "restartPolicy", "template"}, role
            _validate_pod_template(replica["template"], f"x-{role.lower()}", replica["restartPolicy"])
    else:
        kubernetes_validate.validate(document, TARGET_KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(K8S)) for p in MANIFESTS])
def test_manifest_validates(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        validate(document)


@pytest.mark.parametrize("file_name", sorted(example_objects()))
def test_rendered_files_match_the_launcher_code(file_name):
    """k8s/training/ documents what the launcher creates and k8s/cluster/training-runtime.yaml is
    the runtime its TrainJobs use; `make k8s-render` rewrites them."""
    assert yaml.safe_load((K8S / file_name).read_text()) == example_objects()[file_name]


def _build(folder: Path) -> list[dict]:
    built = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(built) if d]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (Debian: apt install kubectl)")
@pytest.mark.parametrize("overlay, namespace", [("dev", "hkgai-dev"), ("prod", "hkgai")])
def test_overlay_builds_and_every_object_validates(overlay, namespace):
    documents = _build(K8S / "overlays" / overlay)
    kinds = sorted({d["kind"] for d in documents})
    assert kinds == sorted({"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Service", "StatefulSet",
                            "Deployment", "NetworkPolicy", "LocalQueue", *(["PodDisruptionBudget"] if overlay == "prod" else [])})
    for document in documents:
        validate(document)
        if document["kind"] == "Namespace":
            assert document["metadata"]["name"] == namespace
        else:
            assert document["metadata"]["namespace"] == namespace
        spec = document.get("spec", {}).get("template", {}).get("spec")
        if spec:  # every workload: non-root, no escalation, requests and memory limits
            assert spec["securityContext"]["runAsNonRoot"] is True
            for container in spec["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
                assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mlflow = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    assert mlflow["spec"]["replicas"] == (2 if overlay == "prod" else 1)
    assert "--app-name=basic-auth" in mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    # The launcher's queue exists in the namespace, on the cluster's ClusterQueue, which selects it.
    queue = next(d for d in documents if d["kind"] == "LocalQueue")
    cluster = {d["kind"]: d for d in _build(K8S / "cluster")}
    assert queue["metadata"]["name"] == LOCAL_QUEUE and queue["spec"]["clusterQueue"] == cluster["ClusterQueue"]["metadata"]["name"]
    labels = next(d for d in documents if d["kind"] == "Namespace")["metadata"]["labels"]
    assert cluster["ClusterQueue"]["spec"]["namespaceSelector"]["matchLabels"].items() <= labels.items()


def _quantity(value) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (Debian: apt install kubectl)")
def test_cluster_objects_build_validate_and_queue_a_second_2x8_run():
    """k8s/cluster: the training runtime and Kueue's flavor and quota, cluster-scoped (no
    namespace). The quota admits one 2 x 8 TrainJob whole, and not a second one beside it."""
    documents = _build(K8S / "cluster")
    assert sorted(d["kind"] for d in documents) == ["ClusterQueue", "ClusterTrainingRuntime", "ResourceFlavor"]
    for document in documents:
        validate(document)  # also: no metadata.namespace on these cluster-scoped kinds
    by_kind = {d["kind"]: d for d in documents}
    job = example_objects()["training/trainjob-2x8.yaml"]
    assert job["spec"]["runtimeRef"]["name"] == by_kind["ClusterTrainingRuntime"]["metadata"]["name"]
    (group,) = by_kind["ClusterQueue"]["spec"]["resourceGroups"]
    (flavor,) = group["flavors"]
    assert flavor["name"] == by_kind["ResourceFlavor"]["metadata"]["name"]
    # The flavor's nodes are the nodes training pods select.
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert by_kind["ResourceFlavor"]["spec"]["nodeLabels"].items() <= patch["template"]["spec"]["template"]["spec"]["nodeSelector"].items()
    quota = {r["name"]: _quantity(r["nominalQuota"]) for r in flavor["resources"]}
    requests = job["spec"]["trainer"]["resourcesPerNode"]["requests"]
    assert set(requests) <= set(group["coveredResources"]) == set(quota)  # an uncovered resource is never admitted
    one_job = {name: job["spec"]["trainer"]["numNodes"] * _quantity(value) for name, value in requests.items()}
    assert all(one_job[name] <= quota[name] for name in one_job)
    assert any(2 * one_job[name] > quota[name] for name in one_job)  # the second run waits in the queue


def test_launcher_role_may_run_trainjobs_and_legacy_pytorchjobs():
    role = next(d for d in yaml.safe_load_all((K8S / "base" / "rbac.yaml").read_text()) if d and d["kind"] == "Role")
    verbs = {(group, resource): set(rule["verbs"]) for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    needed = {"create", "get", "list", "watch", "delete"}
    assert needed <= verbs[("trainer.kubeflow.org", "trainjobs")]
    assert needed <= verbs[("kubeflow.org", "pytorchjobs")]
    assert {"list", "get", "delete"} <= verbs[("", "pods")] and verbs[("", "pods/log")] == {"get"}


def test_dagster_values_run_this_project_with_the_k8s_run_launcher():
    values = yaml.safe_load((K8S / "dagster" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["enabled"] is True  # schedule and sensors
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "hkgai_pipelines.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["HKGAI_PROFILE"] == "production"
    # Every HKGAI_ variable the chart sets is a setting the code reads.
    fields = {f"HKGAI_{name.upper()}" for name in HkgaiSettings.model_fields} | {"HKGAI_TRAINING_IMAGE"}
    assert {k for k in env if k.startswith("HKGAI_")} <= fields
    rbac = [d for d in yaml.safe_load_all((K8S / "base" / "rbac.yaml").read_text()) if d]
    bound = next(d for d in rbac if d["kind"] == "RoleBinding")["subjects"][0]["name"]
    assert values["global"]["serviceAccountName"] == bound
    volume = deployment["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert volume == "hkgai-home"
    # One training run at a time per deployment, beside Kueue's quota across the cluster.
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    assert {"key": "hkgai/gpu", "limit": 1} in coordinator["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]


def test_dagster_instance_is_postgres_and_kept_off_the_lake_volume():
    values = yaml.safe_load((K8S / "dagster" / "values.yaml").read_text())
    postgres = values["postgresql"]
    assert postgres["enabled"] is True or postgres.get("postgresqlHost")
    deployment = values["dagster-user-deployments"]["deployments"][0]
    lake_mounts = [m["mountPath"] for m in deployment["volumeMounts"] if m["name"] == "hkgai-home"]
    assert lake_mounts == ["/mnt/hkgai"]
    # The lake volume is mounted only where assets run (code location, run pods); no Dagster
    # storage path (DAGSTER_HOME, compute logs, artifact storage) names a folder on it.
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert "hkgai-home" not in str(values[component].get("volumes", []))

    def strings(node, path=""):
        """(dotted key path, value) of every string in the values; list items keep the path."""
        if isinstance(node, dict):
            for key, value in node.items():
                yield from strings(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value, path)
        elif isinstance(node, str):
            yield path, node

    on_lake = {path for path, value in strings(values) if value.startswith("/mnt/hkgai")}
    # The mount itself and HKGAI_HOME's value, nothing else.
    assert on_lake == {"dagster-user-deployments.deployments.volumeMounts.mountPath", "dagster-user-deployments.deployments.env.value"}
    assert {e["name"] for e in deployment["env"] if e["value"].startswith("/mnt/hkgai")} == {"HKGAI_HOME"}
    assert "DAGSTER_HOME" not in {e["name"] for e in deployment["env"]}  # the chart's own
    assert "computeLogManager" not in values or "/mnt/hkgai" not in str(values["computeLogManager"])
    assert "DAGSTER_HOME" not in (ROOT / "Dockerfile").read_text()
    # Run monitoring fails a run whose run pod died instead of leaving it STARTED.
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True


def test_weaviate_values_need_a_key_and_a_version_with_aliases():
    values = yaml.safe_load((K8S / "weaviate" / "values.yaml").read_text())
    assert values["authentication"]["anonymous_access"]["enabled"] is False
    assert values["authentication"]["apikey"]["enabled"] is True and values["authentication"]["apikey"]["allowed_keys"] == []
    major, minor, _ = (int(x) for x in values["image"]["tag"].split("."))
    assert (major, minor) >= (1, 32)


def test_dockerfile_pins_its_base_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M)[1]
    assert base.startswith("nvidia/cuda:") and re.search(r":\d+\.\d+\.\d+-", base) and "latest" not in base
    assert re.search(r"^USER 1000$", text, re.M)
    assert "pip install torch==2.13.0" in text and '".[gpu]"' in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^gpu = \[", pyproject, re.M)
