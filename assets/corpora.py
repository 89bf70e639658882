"""Corpora: `raw_documents` (one partition per source) and `cleaned_corpus` with its GX gates.

`cleaned_corpus` publishes versions (`curation/versions.py`): each run curates into a new
version folder, runs the GX gates on it, pushes it with DVC and records it in MLflow, and only
then makes it current with one atomic link swap; identical outputs keep the current version,
and a version that fails a blocking gate is never published.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from hkgai_pipelines import versioning
from hkgai_pipelines.assets.metadata import markdown_table
from hkgai_pipelines.curation import expectations
from hkgai_pipelines.curation.engine import PARTS_DIR_NAME
from hkgai_pipelines.curation.versions import OutputVersions
from hkgai_pipelines.resources import CurationLauncher, DataLakeResource, DvcResource, MlflowResource, PipelineConfigResource
from hkgai_pipelines.settings import get_settings
from hkgai_pipelines.sources.catalog import load_catalog
from hkgai_pipelines.sources.ingest import ingest_source

# Partitions are the sources declared in configs/sources.yaml, read when the code location loads.
source_partitions = dg.StaticPartitionsDefinition(load_catalog(get_settings().sources_file).names)

CLEANED_DIR = "cleaned"
#: The concurrency pool of `cleaned_corpus`, limited to one step at a time by the instance
#: (`concurrency.pools.default_limit: 1` in the local dagster.yaml and the Helm values): two
#: materializations would otherwise curate into the same folder and record one DVC hash for
#: different data.
CURATION_POOL = "cleaned_corpus"


@dg.asset(
    partitions_def=source_partitions,
    group_name="corpora",
    kinds={"python", "parquet"},
    description="Ingested records of one source with stable ids, source, licence and locator (lake raw/).",
)
def raw_documents(context: dg.AssetExecutionContext, pipeline_config: PipelineConfigResource, lake: DataLakeResource) -> dg.MaterializeResult:
    spec = pipeline_config.catalog().get(context.partition_key)
    result = ingest_source(spec, lake.root_path)
    preview = result.table.slice(0, 5).select(["id", "locator", "text"]).to_pylist()
    context.log.info(f"{spec.name}: {result.records} records, {result.quarantined} quarantined")
    return dg.MaterializeResult(
        metadata={
            "records": result.records,
            "bytes": result.text_bytes,
            "quarantined": result.quarantined,
            "licence": spec.licence,
            "kind": spec.kind,
            "path": dg.MetadataValue.path(str(result.path)),
            "preview": markdown_table(["id", "locator", "text"], [(r["id"], r["locator"], r["text"][:80]) for r in preview]),
        },
        data_version=dg.DataVersion(result.content_hash),
    )


def _all_text(output: expectations.OutputReader):
    columns = expectations.WRITTEN_TEXT_COLUMNS
    return output.frames(columns), output.frames(columns, "rejected.parquet")


# The GX gates, run by cleaned_corpus on the new version before it is published (its check
# specs, all blocking): (check name, description, gate on the version and the curation params).
# They read the corpus in batches or one column at a time, never whole.
GATES = (
    ("cleaned_corpus_ids_unique", "GX: ids are unique and present.",
     lambda output, params: expectations.check_ids_unique(output.column("id"))),
    ("cleaned_corpus_text_non_empty", "GX: no null or blank text.",
     lambda output, params: expectations.check_text_non_empty(output.frames(["text"]))),
    ("cleaned_corpus_lang_allowed", "GX: every lang is an allowed label.",
     lambda output, params: expectations.check_lang_allowed(output.frames(["lang"]), list(params.allowed_languages))),
    ("cleaned_corpus_no_residual_pii",
     "GX: no e-mail, phone, HKID or card number left in kept or rejected text, by a detector independent of the redactor.",
     lambda output, params: expectations.check_no_residual_pii(*_all_text(output))),
    ("cleaned_corpus_length_bounds", "GX: text length within the quality bounds.",
     lambda output, params: expectations.check_length_bounds(output.frames(["text"]), params.quality.min_chars, params.quality.max_chars)),
    ("cleaned_corpus_language_mix", "GX: each language at or above its minimum share.",
     lambda output, params: expectations.check_language_mix(output.column("lang"), params.min_language_share)),
    ("cleaned_corpus_counts_add_up", "GX: input = kept + rejected + quarantined; files agree with stats.json.",
     lambda output, params: expectations.check_counts_add_up(
         output.stats(), output.rows("cleaned.parquet"), output.rows("rejected.parquet"), output.quarantine_records())),
)


@dg.asset(
    deps=[raw_documents],
    pool=CURATION_POOL,
    group_name="corpora",
    kinds={"python", "parquet", "dvc"},
    description=(
        "Normalised, language-tagged, PII-redacted, quality-filtered, deduplicated text; rejects and "
        "quarantine kept with reasons (lake cleaned/: the current version, DVC-tracked; versions in cleaned.versions/). "
        "Published only when every GX gate passes."
    ),
    check_specs=[dg.AssetCheckSpec(name, asset="cleaned_corpus", blocking=True, description=description) for name, description, _ in GATES],
)
def cleaned_corpus(
    context: dg.AssetExecutionContext,
    pipeline_config: PipelineConfigResource,
    lake: DataLakeResource,
    dvc: DvcResource,
    mlflow: MlflowResource,
    curation: CurationLauncher,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    catalog = pipeline_config.catalog()
    params = pipeline_config.curation_params()
    versions = OutputVersions(lake.root_path, CLEANED_DIR)
    # The pool makes a second materialization wait before its step starts. The lock waits too,
    # as a second line: on the local SQLite instance two steps that claim the pool's one slot
    # in the same instant can both get it (Dagster checks for a free slot and assigns it in two
    # statements, which SQLite does not serialise across processes).
    with versions.lock(on_wait=context.log.warning):
        previous = versions.current()
        previous_md5 = _record_current(versions, previous, dvc)
        version = versions.new_version()
        try:
            # The curation engine (in this process, or on a KubeRay RayJob in production: the
            # `curation` resource) into a new version folder that readers cannot see yet.
            # Incremental: the steps run only on the raw partitions that are new or changed since
            # the last run (their part files are kept in the versions folder); deduplication and
            # the outputs cover every partition.
            run = curation.curate(context, lake_dir=lake.root_path, sources=catalog.names, params_file=Path(pipeline_config.params_file),
                                  out_dir=version, work_dir=versions.folder, parts_dir=versions.folder / PARTS_DIR_NAME)
            stats, outputs = run.stats, run.outputs
            # The gates on the new version, before DVC, MLflow or any reader sees it: a corpus
            # that fails one is never published, and the current version stays.
            output = expectations.OutputReader(version)
            outcomes = {name: gate(output, params) for name, _, gate in GATES}
            failed = [name for name, outcome in outcomes.items() if not outcome.passed]
            tracked = run_id = None
            unchanged = False
            if not failed:
                # DVC and MLflow before the version becomes current: when either fails, the step
                # fails and readers keep the previous corpus.
                tracked = dvc.track_and_push(_versioned(version))
                unchanged = previous_md5 is not None and tracked.md5 == previous_md5
                run_id = mlflow.log_run(
                    "cleaned_corpus",
                    params={"dedup_threshold": params.dedup.threshold, "allowed_languages": ",".join(params.allowed_languages),
                            "executor": run.executor, "workers": run.workers},
                    metrics={"input_records": stats.input_records, "kept": stats.kept, "rejected": stats.rejected,
                             "quarantined": stats.quarantined},
                    tags={"asset": "cleaned_corpus", "dagster_run_id": context.run_id, "dvc_md5": tracked.md5,
                          "data_version": outputs.content_hash, "corpus_version": (previous if unchanged else version).name,
                          "published": "unchanged" if unchanged else "new version"},
                    artifacts={"curation": outputs.stats},
                    experiment=f"{mlflow.experiment_name}-data",
                )
        except BaseException:
            versions.discard(version)  # never published (a kill leaves it to the next prune)
            raise
        if failed:
            # Not published; the check results below name the offenders.
            versions.discard(version)
            published = previous
            outcome_text = (f"not published: blocking gate(s) failed: {', '.join(failed)}; current version "
                            f"{previous.name if previous is not None else 'none'} stays")
        elif unchanged:
            # Identical outputs (the same DVC hash): the current version stays, no copy of it.
            versions.discard(version)
            published = previous
            outcome_text = f"unchanged: identical to the current version {published.name}"
        else:
            record = dvc.read_record(_versioned(version))
            # A lake from before versions: its folder's DVC record (cleaned.dvc) is logged with
            # it, so `hkgai corpus rollback` to it can point cleaned.dvc back.
            legacy_record = _legacy_record(dvc) if previous == versions.link else None
            versions.make_current(version, record, legacy_record)  # logged, then the one atomic step
            dvc.point(CLEANED_DIR, _versioned(version), record)
            published = version
            outcome_text = f"new version {published.name}" + (f" (previous {previous.name})" if previous is not None else "")
        pruned = versions.prune()
    dedup_dropped = stats.steps["dedup"].get("dropped", 0)
    deduped_input = stats.steps["dedup"].get("kept", 0) + dedup_dropped
    context.log.info(f"kept {stats.kept} of {stats.input_records} on {run.cluster} with {run.workers} workers; {outcome_text}")
    publication = {
        "published": outcome_text,
        "versions_removed": len(pruned),
    }
    if published is not None:
        publication |= {"path": dg.MetadataValue.path(str(published)), "version": published.name}
    if tracked is not None:
        publication |= {"dvc_md5": tracked.md5, "dvc_remote": tracked.remote, "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run_id))}
    metadata = {
            "input_records": stats.input_records,
            "kept": stats.kept,
            "rejected": stats.rejected,
            "quarantined": stats.quarantined,
            "dedup_rate": round(dedup_dropped / deduped_input, 4) if deduped_input else 0.0,
            "script_converted": stats.script_converted,
            "language_mix": markdown_table(
                ["lang", "documents", "share"],
                [(lang, n, n / max(stats.kept, 1)) for lang, n in sorted(stats.by_lang.items())],
            ),
            "by_source": markdown_table(
                ["source", "input", "kept", "rejected", "quarantined"],
                [(s, c.get("input", 0), c.get("kept", 0), c.get("rejected", 0), c.get("quarantined", 0)) for s, c in sorted(stats.by_source.items())],
            ),
            "by_reason": markdown_table(["step:reason", "documents"], sorted(stats.by_reason.items())),
            "steps": markdown_table(["step", "kept", "dropped"], [(s, c.get("kept", 0), c.get("dropped", 0)) for s, c in stats.steps.items()]),
            "pii_redacted": markdown_table(["type", "count"], sorted(stats.pii.items())),
            "engine": f"Ray, {run.workers} workers ({run.cluster})" if run.executor == "ray" else "local executor (this process)",
            "incremental": f"{run.processed_units} input units processed, {run.cached_units} taken from earlier runs "
                           f"({run.cached_records} records not processed again); sources curated: "
                           f"{', '.join(run.processed_sources) or 'none (no partition changed)'}",
            "engine_seconds": markdown_table(["phase", "seconds"], [(phase, round(s, 1)) for phase, s in run.seconds.items()]),
            "dedup": markdown_table(["measure", "records or pairs"], sorted(run.dedup.items())),
            **publication,
    }
    check_results = [_gate(name, outcome) for name, outcome in outcomes.items()]
    if failed:
        # The check results, then a failure and no materialization: the version is gone, and a
        # materialization event would hand lineage (registered_model's data_version of the
        # corpus) and the UI's staleness a corpus that nobody can read.
        yield from check_results
        raise dg.Failure(description=outcome_text, metadata=metadata)
    yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(outputs.content_hash), check_results=check_results)


def _record_current(versions: OutputVersions, current: Path | None, dvc: DvcResource) -> str | None:
    """The current version's DVC hash (None before the first publish, or when it is not
    known), with `cleaned.dvc` made to record that version: a run stopped between the link swap
    and writing `cleaned.dvc`, or a rollback (`OutputVersions.make_current(older)`), leaves it
    recording another one."""
    if current is None:
        return None
    if current == versions.link:  # a lake from before versions: cleaned.dvc records the folder
        return dvc.recorded_md5(CLEANED_DIR)
    record = versions.published().get(current.name)
    if not record:
        return None
    md5 = versioning.record_md5(record)
    if dvc.recorded_md5(CLEANED_DIR) != md5:
        dvc.point(CLEANED_DIR, _versioned(current), record)
    return md5


def _legacy_record(dvc: DvcResource) -> dict | None:
    """The DVC record of a `cleaned/` folder from before versions (cleaned.dvc), or None."""
    try:
        return dvc.read_record(CLEANED_DIR)
    except versioning.DvcError:
        return None


def _versioned(version: Path) -> str:
    """A version folder as DVC's target, relative to the lake: `cleaned.versions/v...`."""
    return f"{version.parent.name}/{version.name}"


def _gate(name: str, outcome: expectations.GateOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata={"gx_results": dg.MetadataValue.json(outcome.metadata)},
    )


# The corpus gates are no separate asset checks: they are cleaned_corpus's own check specs
# (GATES), run before it publishes.
corpora_assets = [raw_documents, cleaned_corpus]
