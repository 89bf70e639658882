"""The training launchers: the GPU pod spec (validated against the Kubernetes schema) and a real
Pipes subprocess launch of the pretraining entry point behind base_model."""

import re
from pathlib import Path

import dagster as dg
import kubernetes_validate
import pytest

from hkgai_pipelines.resources import (
    DataLakeResource, EmbedderResource, K8sTrainingLauncher, LocalTrainingLauncher, MlflowResource, PipelineConfigResource,
)
from hkgai_pipelines.training.pod_spec import TARGET_KUBERNETES_VERSION, GpuPodOptions, full_pod, training_command

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("gpus", [1, 8])
def test_training_pod_validates_and_carries_gpu_limits(gpus):
    options = GpuPodOptions(image="registry.example/hkgai:1.0", gpus=gpus)
    command = training_command("hkgai_pipelines.training.sft", "/mnt/hkgai/lake/models/sft_checkpoint/current/job.json", gpus)
    pod = full_pod(options, command)
    kubernetes_validate.validate(pod, TARGET_KUBERNETES_VERSION, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"secretRef": {"name": "hkgai-mlflow"}} in container["envFrom"]
    assert {"name": "hkgai-home", "persistentVolumeClaim": {"claimName": "hkgai-home"}} in pod["spec"]["volumes"]
    if gpus == 1:
        assert command[:3] == ["python", "-m", "hkgai_pipelines.training.sft"]
    else:
        assert command[:3] == ["torchrun", "--standalone", "--nproc_per_node=8"]


def test_k8s_launcher_pod_spec_is_the_validated_one():
    launcher = K8sTrainingLauncher(image="registry.example/hkgai:1.0", gpus=4, namespace="ml")
    spec = launcher.pod_spec()
    assert spec["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "4"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "ml"}, "spec": {**spec, "containers": [{**spec["containers"][0], "image": "i"}]}}
    kubernetes_validate.validate(pod, TARGET_KUBERNETES_VERSION, strict=True)


def test_invalid_pod_is_caught_by_the_validator():
    pod = full_pod(GpuPodOptions(image="i"), ["python"])
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = ["not", "a", "quantity"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, TARGET_KUBERNETES_VERSION, strict=True)


@pytest.mark.timeout(600)
def test_base_model_materializes_through_a_pipes_subprocess(tmp_path):
    from hkgai_pipelines.assets.models import base_model
    from tests.test_training import _corpus, _preset_dir

    config_dir = _preset_dir(tmp_path, **{"training.pretrain.steps": 6, "training.pretrain.save_steps": 3})
    lake = tmp_path / "lake"
    (lake / "cleaned").mkdir(parents=True)
    _corpus(tmp_path).rename(lake / "cleaned" / "cleaned.parquet")
    resources = {
        "pipeline_config": PipelineConfigResource(config_dir=str(config_dir), params_file=str(PROJECT_ROOT / "params.yaml")),
        "lake": DataLakeResource(root=str(lake)),
        "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=(tmp_path / "art").as_uri()),
        "training_launcher": LocalTrainingLauncher(),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([base_model], instance=instance, resources=resources, selection=[base_model])
        assert result.success
        metadata = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
        assert metadata["steps"].value == 6
        assert metadata["mlflow_run"].value.startswith("http://127.0.0.1:5000/#/experiments/")
        assert "| held-out set | lang | before | after |" in metadata["perplexity_by_language"].value
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert any("step 6:" in message for message in logs)  # streamed through Pipes
    latest = lake / "models" / "base_model" / "latest"
    assert (latest / "config.json").exists() and (latest / "tokenizer.json").exists()


@pytest.mark.timeout(1500)
def test_the_model_chain_materializes_with_mlflow_runs_linked(tmp_path):
    """All five model-chain assets through Dagster, each stage in a Pipes subprocess, then the
    value benchmark and benchmark_scores over the three stages (with the decontamination checks)."""
    from mlflow.tracking import MlflowClient

    from hkgai_pipelines.assets.evaluation import evaluation_assets, evaluation_checks
    from hkgai_pipelines.assets.models import model_assets
    from hkgai_pipelines.assets.registry import registered_model, registered_model_gates
    from hkgai_pipelines.training.runs import significant
    from tests.test_training import _corpus, _preset_dir

    config_dir = _preset_dir(tmp_path, **{"training.pretrain.steps": 6, "training.sft.steps": 6, "training.dpo.steps": 4,
                                          "training.pretrain.save_steps": 50, "training.sft.save_steps": 50, "training.dpo.save_steps": 50})
    lake = tmp_path / "lake"
    (lake / "cleaned").mkdir(parents=True)
    _corpus(tmp_path).rename(lake / "cleaned" / "cleaned.parquet")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    resources = {
        "pipeline_config": PipelineConfigResource(config_dir=str(config_dir), params_file=str(_params_with(
            tmp_path, {"external_max_items": 10},
            # Gates every model passes: this test is about the path, test_registry about the gates.
            gates={"max_unsafe": {"hk_sensitive": 100.0}, "max_refusal": 100.0, "min_accuracy": {}}))),
        "lake": DataLakeResource(root=str(lake)),
        "mlflow": MlflowResource(tracking_uri=tracking, artifact_location=(tmp_path / "art").as_uri()),
        "training_launcher": LocalTrainingLauncher(),
        "embedder": EmbedderResource(kind="use"),
    }
    with dg.instance_for_test() as instance:
        selection = [*model_assets, *evaluation_assets, registered_model]
        result = dg.materialize([*selection, *evaluation_checks, registered_model_gates], instance=instance, resources=resources, selection=selection)
        assert result.success
        metadata = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata for e in result.get_asset_materialization_events()}
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert set(metadata) == {"sft_dataset", "preference_dataset", "base_model", "sft_checkpoint", "aligned_model", "value_benchmark",
                             "benchmark_scores", "registered_model"}
    assert checks == {"sft_dataset_decontaminated": True, "preference_dataset_decontaminated": True, "registered_model_gates": True}
    client = MlflowClient(tracking_uri=tracking)
    for dataset in ("sft_dataset", "preference_dataset"):
        assert "/runs/" in metadata[dataset]["mlflow_run"].value
    for stage in ("base_model", "sft_checkpoint", "aligned_model"):
        run_id = metadata[stage]["mlflow_run_id"].value
        assert metadata[stage]["mlflow_run"].value.endswith(f"/runs/{run_id}?workflowType=machine_learning")
        assert client.get_run(run_id).info.run_name == stage
        assert "| held-out set | lang | before | after |" in metadata[stage]["perplexity_by_language"].value
    assert "sft_eval" in metadata["aligned_model"]["perplexity_by_language"].value
    assert "| pairs | reward accuracy | reward margin |" in metadata["aligned_model"]["dpo_rewards"].value
    scores = metadata["benchmark_scores"]
    # `hkgai demo`'s summary line for the asset: the safe share by stage, not an empty cell.
    assert re.fullmatch(r"base_model \d+\.\d, sft_checkpoint \d+\.\d, aligned_model \d+\.\d", scores["safe_pct_overall"].value)
    table5 = scores["table5_likelihood"].value
    assert table5.startswith("| module | stage | Safe % | Refusal % | Unsafe % | items | errored |")
    assert "| Instruction attacks | aligned_model |" in table5 and "| 2025 | 0 |" in table5
    assert scores["table6_language_following"].value.startswith("| lang | base_model | sft_checkpoint | aligned_model |")
    assert Path(scores["chart_file"].value).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    aligned_run = metadata["aligned_model"]["mlflow_run_id"].value
    # Dagster shows the chart as an image: served by the MLflow UI, and embedded.
    assert f"/get-artifact?path=evaluation%2Fvalue_benchmark_by_stage.png&run_uuid={aligned_run})" in scores["chart"].value
    assert "](data:image/png;base64,iVBORw0KGgo" in scores["chart_embedded"].value
    assert {"lawful_questions_refused_pct", "guardrail_harmbench", "table5_generation", "other_suites"} <= set(scores)
    for stage in ("base_model", "sft_checkpoint", "aligned_model"):
        run = client.get_run(metadata[stage]["mlflow_run_id"].value)
        assert "eval.value_likelihood.hk_sensitive.safe" in run.data.metrics
        # Dagster's loss figures (4 significant digits) are MLflow's train_summary/ ones.
        for key in ("first_loss", "final_loss"):
            assert metadata[stage][key].value == significant(run.data.metrics[f"train_summary/{key}"])
        assert "train_summary/mean_loss_all_steps" in metadata[stage]["training_figures"].value
        # DPO counts no tokens/s (a pair's length varies), in MLflow as in Dagster.
        assert ("train_summary/tokens_per_second_median" in run.data.metrics) == ("tokens_per_second" in metadata[stage])
        assert run.data.tags["value_benchmark.version"] == metadata["value_benchmark"]["version"].value
        assert {"evaluation/benchmark_report.json", "evaluation/tables.md"} <= {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    version = client.get_model_version("hkgai-v1", metadata["registered_model"]["version"].value)
    assert version.tags["mlflow_run.aligned_model"] == metadata["aligned_model"]["mlflow_run_id"].value
    assert version.tags["preset"] == "cpu-demo" and version.tags["git.commit"]
    assert "## Intended use" in version.description and "| yue |" not in version.description.split("## Lineage")[1]
    # The card lists every table Dagster shows, and the chart, logged on the registered model's run too.
    from hkgai_pipelines.evaluation.report import TABLE_CAPTIONS

    assert all(f"### {caption} (`{key}`)" in version.description for key, caption in TABLE_CAPTIONS.items())
    registered_run = version.tags["mlflow_run.registered_model"]
    assert "evaluation/value_benchmark_by_stage.png" in {f.path for f in client.list_artifacts(registered_run, "evaluation")}
    assert f"](get-artifact?path=evaluation%2Fvalue_benchmark_by_stage.png&run_uuid={registered_run})" in version.description
    assert client.get_model_version_by_alias("hkgai-v1", "candidate").version == version.version
    import mlflow.pyfunc

    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    import pandas as pd

    served = mlflow.pyfunc.load_model(f"models:/hkgai-v1/{version.version}").predict(pd.DataFrame({"prompt": ["How is the Chief Executive elected?"]}))
    assert len(served) == 1 and isinstance(served[0], str)


def _params_with(tmp_path, evaluation: dict, gates: dict | None = None) -> Path:
    import yaml

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["evaluation"].update(evaluation)
    if gates is not None:
        params["registry"]["gates"] = gates
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True))
    return path


@pytest.mark.timeout(600)
def test_two_ranks_report_one_materialization_and_one_mlflow_run(tmp_path):
    """torchrun with 2 processes (gloo on CPU, as --nproc_per_node=G on a GPU node): both ranks
    train, only rank 0 speaks Pipes and MLflow."""
    from mlflow.tracking import MlflowClient

    from hkgai_pipelines.assets.models import base_model
    from tests.test_training import _corpus, _preset_dir

    config_dir = _preset_dir(tmp_path, **{"training.pretrain.steps": 4, "training.pretrain.save_steps": 50})
    lake = tmp_path / "lake"
    (lake / "cleaned").mkdir(parents=True)
    _corpus(tmp_path).rename(lake / "cleaned" / "cleaned.parquet")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    resources = {
        "pipeline_config": PipelineConfigResource(config_dir=str(config_dir), params_file=str(PROJECT_ROOT / "params.yaml")),
        "lake": DataLakeResource(root=str(lake)),
        "mlflow": MlflowResource(tracking_uri=tracking, artifact_location=(tmp_path / "art").as_uri()),
        "training_launcher": LocalTrainingLauncher(gpus=2),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([base_model], instance=instance, resources=resources, selection=[base_model])
        assert result.success
        events = result.get_asset_materialization_events()
        assert len(events) == 1 and events[0].step_materialization_data.materialization.metadata["steps"].value == 4
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("hkgai-v1").experiment_id])
    assert [r.info.run_name for r in runs] == ["base_model"]
    assert (lake / "models" / "base_model" / "latest" / "tokenizer.json").exists()
