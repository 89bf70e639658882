"""RAG: `knowledge_documents` (chunked HK knowledge, markup stripped, injection-screened) and
`vector_index` (blue-green refresh; unchanged chunks keep the live version), the
retrieval-quality check, and the nightly refresh schedule."""

import html

import dagster as dg
import pyarrow as pa

from hkgai_pipelines.assets.metadata import markdown_table
from hkgai_pipelines.rag.index import IndexRefresher
from hkgai_pipelines.rag.knowledge import chunk_documents, load_knowledge_documents
from hkgai_pipelines.rag.retrieval_eval import load_questions
from hkgai_pipelines.resources import DataLakeResource, EmbedderResource, PipelineConfigResource, VectorStoreResource
from hkgai_pipelines.sources.ingest import content_hash
from hkgai_pipelines.sources.lake import write_table_atomic

CHUNKS_PATH = ("rag", "chunks.parquet")


@dg.asset(
    group_name="rag",
    kinds={"python", "parquet"},
    description=(
        "Chunked Hong Kong knowledge documents (every source with rag: true), stable chunk ids (lake rag/); markup "
        "stripped, and documents carrying prompt-injection text quarantined with their reason."
    ),
)
def knowledge_documents(context: dg.AssetExecutionContext, pipeline_config: PipelineConfigResource, lake: DataLakeResource) -> dg.MaterializeResult:
    params = pipeline_config.rag_params()
    documents = load_knowledge_documents(pipeline_config.catalog(), params.max_document_chars)
    for item in documents.quarantined:
        context.log.warning(f"quarantined {item.doc_id} ({item.locator}): {item.reason}")
    chunks = chunk_documents(documents, params.chunk_target_chars, params.chunk_overlap_chars)
    rows = [chunk.to_row() for chunk in chunks]
    path = lake.path(*CHUNKS_PATH)
    write_table_atomic(pa.Table.from_pylist(rows), path)
    by_lang: dict[str, int] = {}
    for doc in documents:
        by_lang[doc.lang] = by_lang.get(doc.lang, 0) + 1
    digest = content_hash([c.id for c in chunks])
    context.log.info(f"{len(documents)} documents -> {len(chunks)} chunks; {len(documents.quarantined)} quarantined")
    return dg.MaterializeResult(
        metadata={
            "documents": len(documents),
            "chunks": len(chunks),
            "quarantined": len(documents.quarantined),
            "quarantined_documents": markdown_table(
                ["doc_id", "file", "reason"], [(q.doc_id, q.locator, html.escape(q.reason)) for q in documents.quarantined]
            ),
            "markup_stripped": len(documents.markup_stripped),
            "documents_by_language": markdown_table(["lang", "documents"], sorted(by_lang.items())),
            # Escaped: the UI renders this as Markdown, where raw HTML would be live markup.
            "preview": markdown_table(
                ["doc_id", "title", "text"], [(c.doc_id, html.escape(c.title), html.escape(c.text[:60])) for c in chunks[:5]]
            ),
            "path": dg.MetadataValue.path(str(path)),
        },
        data_version=dg.DataVersion(digest),
    )


def _refresher(pipeline_config: PipelineConfigResource, embedder: EmbedderResource, vector_store: VectorStoreResource) -> IndexRefresher:
    params = pipeline_config.rag_params()
    return IndexRefresher(
        vector_store.get_store(), embedder.get_embedder(), alias=vector_store.alias, keep_versions=params.keep_versions,
        min_recall_at_5=params.min_recall_at_5, min_mrr=params.min_mrr, alpha=params.alpha,
    )


@dg.asset(
    deps=[knowledge_documents],
    group_name="rag",
    kinds={"python", "lancedb", "weaviate"},
    description=(
        "Embeddings of knowledge_documents in the vector store, refreshed incrementally into a new version and "
        "swapped in behind the alias only after the retrieval check passes (blue-green); when no chunk changed "
        "the live version is kept (changed: false) and no version is created."
    ),
)
def vector_index(
    context: dg.AssetExecutionContext,
    pipeline_config: PipelineConfigResource,
    lake: DataLakeResource,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> dg.MaterializeResult:
    import pyarrow.parquet as pq

    from hkgai_pipelines.rag.chunking import Chunk

    table = pq.read_table(lake.path(*CHUNKS_PATH))
    fields = [f for f in Chunk.__dataclass_fields__]
    chunks = [Chunk(**{k: row[k] for k in fields}) for row in table.to_pylist()]
    refresher = _refresher(pipeline_config, embedder, vector_store)
    result = refresher.refresh(chunks, load_questions())
    if result.abandoned_versions:
        context.log.warning(f"dropped versions left building by a killed refresh: {', '.join(result.abandoned_versions)}")
    if result.changed:
        context.log.info(
            f"{result.version}: {result.embedded} embedded, {result.carried} carried, {result.removed} removed; "
            f"recall@5 {result.report.recall_at_k:.3f}, MRR {result.report.mrr:.3f}; alias {vector_store.alias} swapped from {result.previous}"
        )
    else:
        context.log.info(
            f"no chunk changed: {result.version} stays live, no new version; "
            f"recall@5 {result.report.recall_at_k:.3f}, MRR {result.report.mrr:.3f}"
        )
    return dg.MaterializeResult(
        metadata={
            "changed": result.changed,
            "version": result.version,
            "previous_version": result.previous or "(none)",
            "alias": vector_store.alias,
            "chunks": result.chunks,
            "embedded": result.embedded,
            "carried_over": result.carried,
            "removed": result.removed,
            "recall_at_5": result.report.recall_at_k,
            "mrr": result.report.mrr,
            "retrieval_questions": result.report.questions,
            "embedder": refresher.embedder.name,
            "dim": refresher.embedder.dim,
            "dropped_versions": ", ".join(result.dropped_versions) or "(none)",
            "abandoned_versions_dropped": ", ".join(result.abandoned_versions) or "(none)",
        },
        data_version=dg.DataVersion(result.version),
    )


@dg.asset_check(asset=vector_index, blocking=True, description="recall@5 and MRR of the live index on the retrieval question set.")
def vector_index_retrieval_quality(
    pipeline_config: PipelineConfigResource, embedder: EmbedderResource, vector_store: VectorStoreResource
) -> dg.AssetCheckResult:
    refresher = _refresher(pipeline_config, embedder, vector_store)
    live = refresher.store.get_alias(refresher.alias)
    if live is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description=f"no version behind alias {refresher.alias}")
    report = refresher.evaluate(live, load_questions())
    passed = report.recall_at_k >= refresher.min_recall_at_5 and report.mrr >= refresher.min_mrr
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"recall@5 {report.recall_at_k:.3f} (min {refresher.min_recall_at_5}), MRR {report.mrr:.3f} (min {refresher.min_mrr})",
        metadata={"recall_at_5": report.recall_at_k, "mrr": report.mrr, "version": live, "misses": dg.MetadataValue.json(report.misses)},
    )


rag_refresh_job = dg.define_asset_job(
    "rag_refresh",
    selection=dg.AssetSelection.assets(knowledge_documents, vector_index),
    description="Re-chunk the knowledge sources and refresh the vector index (blue-green).",
)

rag_refresh_nightly = dg.ScheduleDefinition(
    name="rag_refresh_nightly",
    job=rag_refresh_job,
    cron_schedule="0 2 * * *",
    execution_timezone="Asia/Hong_Kong",
    # Running by default: the nightly refresh is what keeps answers current; toggle it in the UI.
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly (02:00 Hong Kong time) refresh of knowledge_documents and vector_index.",
)

rag_assets = [knowledge_documents, vector_index]
rag_checks = [vector_index_retrieval_quality]
