"""knowledge_documents, vector_index and the nightly schedule in Dagster."""

from pathlib import Path

import dagster as dg

from hkgai_pipelines.assets.rag import knowledge_documents, rag_checks, rag_refresh_nightly, vector_index
from hkgai_pipelines.resources import DataLakeResource, EmbeddedVectorStoreResource, EmbedderResource, PipelineConfigResource

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_nightly_schedule_runs_the_refresh_at_two_hong_kong_time():
    from hkgai_pipelines.definitions import defs

    schedule = defs.resolve_schedule_def("rag_refresh_nightly")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "Asia/Hong_Kong")
    assert schedule.job_name == "rag_refresh"
    selection = defs.resolve_job_def("rag_refresh").asset_layer.executable_asset_keys
    assert selection == {dg.AssetKey("knowledge_documents"), dg.AssetKey("vector_index")}
    assert rag_refresh_nightly.default_status == dg.DefaultScheduleStatus.RUNNING


def test_materialize_rag_assets_twice_is_incremental(tmp_path):
    resources = {
        "pipeline_config": PipelineConfigResource(config_dir=str(PROJECT_ROOT / "configs"), params_file=str(PROJECT_ROOT / "params.yaml")),
        "lake": DataLakeResource(root=str(tmp_path / "lake")),
        "embedder": EmbedderResource(kind="use"),
        "vector_store": EmbeddedVectorStoreResource(path=str(tmp_path / "vectors")),
    }
    with dg.instance_for_test() as instance:
        first = dg.materialize([knowledge_documents, vector_index, *rag_checks], instance=instance, resources=resources)
        assert first.success
        assert all(e.passed for e in first.get_asset_check_evaluations())
        meta = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata for e in first.get_asset_materialization_events()}
        chunks = meta["knowledge_documents"]["chunks"].value
        assert meta["knowledge_documents"]["documents"].value == 43
        assert meta["vector_index"]["embedded"].value == chunks
        assert meta["vector_index"]["recall_at_5"].value >= 0.85
        second = dg.materialize([knowledge_documents, vector_index], instance=instance, resources=resources)
        meta2 = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata for e in second.get_asset_materialization_events()}
        assert (meta2["vector_index"]["embedded"].value, meta2["vector_index"]["carried_over"].value) == (0, chunks)
        assert meta2["vector_index"]["previous_version"].value == meta["vector_index"]["version"].value
