"""The Dagster layer: definitions load, and assets materialize against a temporary instance."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from hkgai_pipelines.assets.corpora import cleaned_corpus, raw_documents
from hkgai_pipelines.curation.engine import PARTS_DIR_NAME
from hkgai_pipelines.curation.versions import OutputVersions
from hkgai_pipelines.resources import DataLakeResource, DvcResource, LocalCurationLauncher, MlflowResource, PipelineConfigResource

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_definitions_load_with_groups_jobs_and_checks():
    from hkgai_pipelines.definitions import defs

    repo = defs.get_repository_def()
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert {"raw_documents", "cleaned_corpus", "knowledge_documents", "vector_index", "base_model",
            "sft_dataset", "preference_dataset", "sft_checkpoint", "aligned_model"} <= keys
    groups = {key.to_user_string(): repo.asset_graph.get(key).group_name for key in repo.asset_graph.get_all_asset_keys()}
    assert (groups["cleaned_corpus"], groups["vector_index"]) == ("corpora", "rag")
    assert repo.assets_defs_by_key[dg.AssetKey("raw_documents")].group_names_by_key[dg.AssetKey("raw_documents")] == "corpora"
    assert {job.name for job in repo.get_all_jobs()} >= {"ingest_sources", "build_downstream", "rag_refresh"}
    check_names = {key.name for key in repo.asset_graph.asset_check_keys}
    assert len([name for name in check_names if name.startswith("cleaned_corpus_")]) == 7
    partitions = repo.assets_defs_by_key[dg.AssetKey("raw_documents")].partitions_def.get_partition_keys()
    assert partitions == ["hkcancor", "ctcpc", "hsk_sentences", "hk_knowledge", "local_samples"]


@pytest.fixture
def small_project(tmp_path) -> dict:
    """A config dir with the project's source names but small slices, and test params."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    catalog = yaml.safe_load((PROJECT_ROOT / "configs" / "sources.yaml").read_text())
    for source in catalog["sources"]:
        if source["kind"] == "ctcpc":
            source["options"] = {"max_records": 300}
        if source["kind"] == "local_files":
            source["options"]["path"] = str(PROJECT_ROOT / source["options"]["path"])
    (config_dir / "sources.yaml").write_text(yaml.safe_dump(catalog, allow_unicode=True))
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    # 300 CTCPC sentences instead of 40,000 make Cantonese a smaller share of the sample.
    params["curation"]["min_language_share"]["yue"] = 0.10
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True))
    home = tmp_path / "home"
    return {
        "params_file": params_file,
        "params": params,
        "resources": {
            "pipeline_config": PipelineConfigResource(config_dir=str(config_dir), params_file=str(params_file)),
            "lake": DataLakeResource(root=str(home / "lake")),
            "dvc": DvcResource(repo_dir=str(home / "lake"), remote_url=str(home / "dvc-remote")),
            "mlflow": MlflowResource(
                tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_location=(home / "mlartifacts").as_uri()
            ),
            "curation": LocalCurationLauncher(),
        },
        "home": home,
    }


def test_materialize_one_raw_partition_records_metadata(small_project):
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_documents], partition_key="ctcpc", instance=instance, resources=small_project["resources"])
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = event.step_materialization_data.materialization.metadata
        assert metadata["records"].value == 300
        assert metadata["licence"].value == "CC0-1.0"
        assert metadata["quarantined"].value == 0
        assert "| id | locator | text |" in metadata["preview"].value
        record = instance.get_latest_materialization_event(dg.AssetKey("raw_documents"))
        assert record.asset_materialization.partition == "ctcpc"
    assert (small_project["home"] / "lake" / "raw" / "ctcpc.parquet").exists()


def _ingest_all(instance, resources):
    for partition in ["hkcancor", "ctcpc", "hsk_sentences", "hk_knowledge", "local_samples"]:
        assert dg.materialize([raw_documents], partition_key=partition, instance=instance, resources=resources).success


@pytest.mark.timeout(600)
def test_materialize_cleaned_corpus_with_green_gates_and_dvc(small_project):
    """As `make demo` runs it: no Ray session and no RAY_ADDRESS, so the curation engine runs
    in this process (the Ray path of the asset: the next test)."""
    resources = small_project["resources"]
    with dg.instance_for_test() as instance:
        _ingest_all(instance, resources)
        result = dg.materialize([cleaned_corpus], instance=instance, resources=resources)
        assert result.success
        evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert len(evaluations) == 7 and all(evaluations.values()), evaluations
        metadata = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
        assert metadata["input_records"].value == metadata["kept"].value + metadata["rejected"].value + metadata["quarantined"].value
        assert metadata["quarantined"].value == 2  # the planted bad lines in local_samples/feedback.jsonl
        assert metadata["dvc_md5"].value.endswith(".dir")
        assert metadata["mlflow_run"].value.startswith("http://127.0.0.1:5000/#/experiments/")
        assert metadata["engine"].value == "local executor (this process)"
        # The run's log follows the curation: each phase as it starts and ends.
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
        assert any(message.startswith("read and steps: 0 of ") for message in messages)
        assert any(message.startswith("settle: ") and message.endswith("(100%)") for message in messages)
    lake = small_project["home"] / "lake"
    # Published as a version: lake/cleaned is a link to it, cleaned.dvc records it.
    version = metadata["version"].value
    assert (lake / "cleaned").readlink() == Path("cleaned.versions", version)
    record = yaml.safe_load((lake / "cleaned.dvc").read_text())["outs"][0]
    assert (record["path"], record["md5"]) == (f"cleaned.versions/{version}", metadata["dvc_md5"].value)
    remote_files = [p for p in (small_project["home"] / "dvc-remote").rglob("*") if p.is_file()]
    assert len(remote_files) >= 5  # the .dir manifest and the four output files


@pytest.mark.slow  # a Ray head starts and the job's Ray workers load the language models: about a minute on 2 cores
@pytest.mark.timeout(900)
def test_cleaned_corpus_on_a_rayjob_publishes_the_corpus_the_run_pod_would(small_project, tmp_path):
    """Production's path: the asset holds the versions lock and launches `hkgai curate` on a
    RayJob (a fake KubeRay that runs the submitter's entry point as a subprocess; the driver
    reaches a real Ray cluster at the RAY_ADDRESS KubeRay gives it, 127.0.0.1:6379). The new
    version passes the gates and is published; curating again in the run's process gives the
    same DVC hash (unchanged), so both paths make one corpus."""
    import os
    import sys

    from ray.cluster_utils import Cluster

    from hkgai_pipelines.resources import RayCurationLauncher
    from tests.fake_k8s import FakeCluster

    resources = small_project["resources"]
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "gcs_server_port": 6379, "include_dashboard": False,
                                                         "object_store_memory": 100 * 1024 * 1024})
    kube = FakeCluster()
    try:
        env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HKGAI_PROFILE": "local",
               "HKGAI_HOME": str(small_project["home"]), "HKGAI_CONFIG_DIR": resources["pipeline_config"].config_dir, "HF_HUB_OFFLINE": "1"}
        launcher = RayCurationLauncher(image="registry.example/hkgai:1.0", kubeconfig_file=str(kube.kubeconfig(tmp_path)), poll_s=0.2,
                                       pending_timeout_s=30, run_timeout_s=600, env_from_secrets=[], pod_env=env, worker_cpu="2", max_workers=1)
        with dg.instance_for_test() as instance:
            _ingest_all(instance, resources)
            on_ray = dg.materialize([cleaned_corpus], instance=instance, resources={**resources, "curation": launcher})
            assert on_ray.success
            ray_metadata = _cleaned_metadata(on_ray)
            local = _cleaned_metadata(dg.materialize([cleaned_corpus], instance=instance, resources=resources))
        (created,) = kube.rayjobs_created
        entrypoint = created["spec"]["entrypoint"]
    finally:
        kube.close()
        head.shutdown()
    assert ray_metadata["engine"] == "Ray, 2 workers (Ray cluster 127.0.0.1:6379)"
    assert ray_metadata["published"].startswith("new version") and ray_metadata["input_records"] == local["input_records"]
    assert "--parts-dir" in entrypoint and "--report" in entrypoint and ray_metadata["version"] in entrypoint
    assert local["published"].startswith("unchanged") and local["dvc_md5"] == ray_metadata["dvc_md5"]
    # The run pod took every unit from the RayJob's part files (the parts folder is shared).
    assert local["incremental"].startswith("0 input units processed, 10 taken")
    versions = small_project["home"] / "lake" / "cleaned.versions"
    assert not list(versions.glob("*report*"))  # the RayJob's report is removed once read


def _cleaned_metadata(result: dg.ExecuteInProcessResult) -> dict:
    return {k: v.value for k, v in result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata.items()}


@pytest.mark.timeout(900)
def test_a_changed_partition_is_curated_alone_and_gives_the_full_run_corpus(small_project):
    """One raw partition re-ingested with more records: only its units go through the steps,
    and the corpus is the one a full run makes (the same DVC hash once the kept part files
    are removed and everything is curated again)."""
    resources, lake = small_project["resources"], small_project["home"] / "lake"
    with dg.instance_for_test() as instance:
        _ingest_all(instance, resources)
        dg.materialize([cleaned_corpus], instance=instance, resources=resources)
        sources_file = Path(resources["pipeline_config"].config_dir) / "sources.yaml"
        catalog = yaml.safe_load(sources_file.read_text())
        for source in catalog["sources"]:
            if source["kind"] == "ctcpc":
                source["options"] = {"max_records": 360}
        sources_file.write_text(yaml.safe_dump(catalog, allow_unicode=True))
        assert dg.materialize([raw_documents], partition_key="ctcpc", instance=instance, resources=resources).success
        incremental = _cleaned_metadata(dg.materialize([cleaned_corpus], instance=instance, resources=resources))
        # ctcpc's records; its quarantine file is unchanged
        assert incremental["incremental"].startswith("1 input units processed, 9 taken")
        assert incremental["incremental"].endswith("sources curated: ctcpc")
        shutil.rmtree(lake / "cleaned.versions" / PARTS_DIR_NAME)
        full = _cleaned_metadata(dg.materialize([cleaned_corpus], instance=instance, resources=resources))
    assert full["incremental"].startswith("10 input units processed, 0 taken")
    assert full["dvc_md5"] == incremental["dvc_md5"] and full["published"].startswith("unchanged")
    assert incremental["input_records"] == full["input_records"] and incremental["kept"] == full["kept"]


@pytest.mark.timeout(900)
def test_cleaned_corpus_versions_change_together_and_only_after_dvc_and_mlflow(small_project, monkeypatch):
    """Identical input keeps the current version (same DVC hash, no copy); a changed corpus
    whose MLflow run fails is never made current; the next good run publishes and prunes."""
    resources, lake = small_project["resources"], small_project["home"] / "lake"
    with dg.instance_for_test() as instance:
        _ingest_all(instance, resources)
        first = _cleaned_metadata(dg.materialize([cleaned_corpus], instance=instance, resources=resources))
        again = _cleaned_metadata(dg.materialize([cleaned_corpus], instance=instance, resources=resources))
        assert again["dvc_md5"] == first["dvc_md5"] and again["version"] == first["version"]
        assert again["published"].startswith("unchanged")
        assert [v.name for v in (lake / "cleaned.versions").glob("v*") if v.is_dir()] == [first["version"]]
        # Incremental: nothing changed, so no partition went through the steps again.
        assert first["incremental"].startswith("10 input units processed, 0 taken")
        assert again["incremental"].startswith("0 input units processed, 10 taken")
        assert again["incremental"].endswith("sources curated: none (no partition changed)")

        # A different corpus (a stricter length bound), and MLflow down when it is recorded.
        params = small_project["params"]
        params["curation"]["quality"]["min_chars"] = 12
        small_project["params_file"].write_text(yaml.safe_dump(params, allow_unicode=True))

        def outage(*args, **kwargs):
            raise ConnectionError("MLflow tracking server unreachable")

        with monkeypatch.context() as patch:
            patch.setattr(MlflowResource, "log_run", outage)
            failed = dg.materialize([cleaned_corpus], instance=instance, resources=resources, raise_on_error=False)
        assert not failed.success
        assert [v.name for v in (lake / "cleaned.versions").glob("v*")] == [first["version"]]
        assert (lake / "cleaned").readlink() == Path("cleaned.versions", first["version"])
        assert yaml.safe_load((lake / "cleaned.dvc").read_text())["outs"][0]["md5"] == first["dvc_md5"]
        stats = yaml.safe_load((lake / "cleaned" / "stats.json").read_text())
        assert stats["kept"] == first["kept"]

        second = _cleaned_metadata(dg.materialize([cleaned_corpus], instance=instance, resources=resources))
    assert second["published"] == f"new version {second['version']} (previous {first['version']})"
    assert second["kept"] < first["kept"] and second["dvc_md5"] != first["dvc_md5"]
    assert (lake / "cleaned").readlink() == Path("cleaned.versions", second["version"])
    assert yaml.safe_load((lake / "cleaned" / "stats.json").read_text())["kept"] == second["kept"]
    # The failed run's version (pushed to DVC, never current) went with its record.
    names = sorted(v.name for v in (lake / "cleaned.versions").glob("v*") if v.is_dir())
    assert names == [first["version"], second["version"]]
    assert [p.name for p in lake.glob("*.dvc") if p.is_file()] == ["cleaned.dvc"]
    assert list((lake / "cleaned.versions").glob("*.dvc")) == []

    # A rollback to the first version: the next run compares its corpus with the first (not with
    # what cleaned.dvc still records) and publishes the second corpus again as a new version.
    OutputVersions(lake, "cleaned").make_current(lake / "cleaned.versions" / first["version"])
    with dg.instance_for_test() as instance:
        third = _cleaned_metadata(dg.materialize([cleaned_corpus], instance=instance, resources=resources))
    assert third["published"] == f"new version {third['version']} (previous {first['version']})"
    assert third["dvc_md5"] == second["dvc_md5"] and third["incremental"].startswith("0 input units processed")
    record = yaml.safe_load((lake / "cleaned.dvc").read_text())["outs"][0]
    assert (record["md5"], record["path"]) == (third["dvc_md5"], f"cleaned.versions/{third['version']}")


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("ray_session")  # a running Ray session: cleaned_corpus curates on it
def test_failing_gate_is_reported_as_a_blocking_error_and_nothing_is_published(small_project):
    resources = small_project["resources"]
    lake = small_project["home"] / "lake"
    with dg.instance_for_test() as instance:
        _ingest_all(instance, resources)
        first = _cleaned_metadata(dg.materialize([cleaned_corpus], instance=instance, resources=resources))
        params = small_project["params"]
        params["curation"]["min_language_share"] = {"zh-hans": 0.99}
        small_project["params_file"].write_text(yaml.safe_dump(params, allow_unicode=True))
        result = dg.materialize([cleaned_corpus], instance=instance, resources=resources, raise_on_error=False)
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        mix = evaluations["cleaned_corpus_language_mix"]
        assert not mix.passed
        assert mix.severity == dg.AssetCheckSeverity.ERROR
        assert len(evaluations) == 7 and sum(e.passed for e in evaluations.values()) == 6
        # blocking checks fail the run, so nothing downstream can start
        assert not result.success
        # No materialization: lineage and staleness never see the discarded corpus.
        assert result.get_asset_materialization_events() == []
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert f"not published: blocking gate(s) failed: cleaned_corpus_language_mix; current version {first['version']} stays" in str(
            failure.event_specific_data.error.message)
        latest = instance.get_latest_materialization_event(cleaned_corpus.key)
        assert latest.asset_materialization.metadata["version"].value == first["version"]
    # ... and the corpus that failed was never published: readers keep the first version.
    assert (lake / "cleaned").readlink() == Path("cleaned.versions", first["version"])
    assert [v.name for v in (lake / "cleaned.versions").glob("v*") if v.is_dir()] == [first["version"]]
    assert yaml.safe_load((lake / "cleaned.dvc").read_text())["outs"][0]["md5"] == first["dvc_md5"]
