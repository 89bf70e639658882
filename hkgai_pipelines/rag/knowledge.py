"""knowledge_documents: the RAG material as validated documents and their chunks.

A refresh must fail loudly rather than index something wrong: an empty document, one above
the size limit, or two documents with the same id stop the build with a message naming them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hkgai_pipelines.curation.langid import identify_language
from hkgai_pipelines.rag.chunking import Chunk, chunk_document
from hkgai_pipelines.sources.catalog import SourceCatalog
from hkgai_pipelines.sources.readers import read_source
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord, utc_now


class KnowledgeError(ValueError):
    pass


@dataclass(frozen=True)
class KnowledgeDocument:
    doc_id: str
    title: str
    body: str
    source: str
    lang: str
    licence: str
    updated_at: str


def documents_from_records(records: list[RawRecord], max_chars: int) -> list[KnowledgeDocument]:
    seen: dict[str, str] = {}
    documents = []
    problems = []
    for record in records:
        doc_id = f"{record.source}/{record.locator.removesuffix('.md')}"
        title = record.title or record.text.split("\n", 1)[0][:80]
        body = record.text.split("\n\n", 1)[1] if record.title and "\n\n" in record.text else record.text
        if doc_id in seen:
            problems.append(f"duplicate document id {doc_id} ({seen[doc_id]} and {record.locator})")
            continue
        seen[doc_id] = record.locator
        if not body.strip():
            problems.append(f"{doc_id}: empty document")
            continue
        if len(body) > max_chars:
            problems.append(f"{doc_id}: {len(body)} characters exceeds the {max_chars}-character limit")
            continue
        documents.append(KnowledgeDocument(doc_id, title, body.strip(), record.source, identify_language(body).lang, record.licence, record.ingested_at))
    if problems:
        raise KnowledgeError("knowledge documents rejected: " + "; ".join(problems))
    return documents


def load_knowledge_documents(catalog: SourceCatalog, max_chars: int) -> list[KnowledgeDocument]:
    records: list[RawRecord] = []
    for spec in catalog.sources:
        if not spec.rag:
            continue
        for item in read_source(spec):
            if isinstance(item, QuarantineRecord):
                raise KnowledgeError(f"knowledge source {spec.name}: {item.file}: {item.error}")
            records.append(item)
    if not records:
        raise KnowledgeError("no source in the catalog is marked rag: true")
    return documents_from_records(records, max_chars)


def chunk_documents(documents: list[KnowledgeDocument], target_chars: int, overlap_chars: int) -> list[Chunk]:
    updated = utc_now()
    return [
        chunk
        for doc in documents
        for chunk in chunk_document(
            doc.doc_id, doc.title, doc.body, source=doc.source, lang=doc.lang, licence=doc.licence,
            updated_at=doc.updated_at or updated, target_chars=target_chars, overlap_chars=overlap_chars,
        )
    ]
