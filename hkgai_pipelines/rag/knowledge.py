"""knowledge_documents: the RAG material as validated documents and their chunks.

A refresh must fail loudly rather than index something wrong: an empty document, one above
the size limit, or two documents with the same id stop the build with a message naming them.

Knowledge documents are data that ends up inside a model prompt, so they are treated as
hostile until screened:

* Markup is removed at ingestion (`strip_markup`, BeautifulSoup): tags go, their text stays,
  and the contents of `<script>`, `<style>`, `<template>` and `<noscript>` go entirely, as do
  HTML comments. Titles are stripped the same way, so a citation title is plain text.
* The text that remains is screened by the guard's prompt-injection detector
  (safety/guard.py `InjectionDetector`). A document that fails is quarantined: left out of the
  index, with its id and the reason, in `KnowledgeDocuments.quarantined` (knowledge_documents
  reports the count and the list; the loader logs a warning for each). One planted document
  does not stop the refresh of all the others.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from hkgai_pipelines.curation.langid import identify_language
from hkgai_pipelines.rag.chunking import Chunk, chunk_document
from hkgai_pipelines.sources.catalog import SourceCatalog
from hkgai_pipelines.sources.readers import read_source
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord, utc_now

log = logging.getLogger(__name__)

#: Elements whose contents are code or alternatives to the page, never reading text.
DROPPED_ELEMENTS = ("script", "style", "template", "noscript")
#: Elements that end a line when rendered; their text is kept on its own line(s).
_BLOCK_ELEMENTS = (
    "p", "div", "section", "article", "header", "footer", "aside", "nav", "main", "blockquote", "pre",
    "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd", "table", "tr", "title",
)
#: A Markdown autolink, <https://...>: an HTML parser would read it as a tag and lose the URL.
_AUTOLINK_RE = re.compile(r"<((?:https?|mailto):[^\s<>]+)>")


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


@dataclass(frozen=True)
class QuarantinedDocument:
    """A document left out of the index, and why."""

    doc_id: str
    locator: str
    reason: str


class KnowledgeDocuments(list):
    """The accepted documents (a list of KnowledgeDocument), with what screening did:
    `quarantined` (left out, with reasons) and `markup_stripped` (ids of documents whose title
    or body carried markup that was removed)."""

    def __init__(self, documents=(), quarantined: list[QuarantinedDocument] | None = None, markup_stripped: list[str] | None = None) -> None:
        super().__init__(documents)
        self.quarantined: list[QuarantinedDocument] = list(quarantined or [])
        self.markup_stripped: list[str] = list(markup_stripped or [])


def strip_markup(text: str) -> str:
    """`text` as plain text: HTML/XML tags removed with their text kept, the contents of
    script/style/template/noscript elements and comments removed entirely, entities decoded,
    block elements and <br> turned into line breaks. Text with no `<` or `&` is returned
    unchanged (byte-identical, so chunk ids do not move)."""
    if "<" not in text and "&" not in text:
        return text
    import warnings

    from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

    with warnings.catch_warnings():
        # Short plain text that looks like a file name or URL is what we parse on purpose.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(_AUTOLINK_RE.sub(r"\1", text), "html.parser")
    for element in soup(DROPPED_ELEMENTS):
        element.decompose()
    for element in soup("br"):
        element.replace_with("\n")
    for element in soup(_BLOCK_ELEMENTS):
        element.insert_before("\n")
        element.insert_after("\n")
    plain = soup.get_text()  # NavigableStrings only: comments, doctypes and CDATA are left out
    # Block boundaries next to existing blank lines would otherwise pile up empty lines.
    return re.sub(r"\n[ \t]*(\n[ \t]*)+\n", "\n\n", plain)


def documents_from_records(records: list[RawRecord], max_chars: int) -> KnowledgeDocuments:
    """Validated, markup-stripped, injection-screened documents (module docstring).

    Raises KnowledgeError naming every empty (also: empty once markup is removed), oversized or
    duplicate document, or when every document was quarantined."""
    from hkgai_pipelines.safety.guard import InjectionDetector

    detector = InjectionDetector()
    seen: dict[str, str] = {}
    documents = []
    quarantined: list[QuarantinedDocument] = []
    stripped_ids: list[str] = []
    problems = []
    for record in records:
        doc_id = f"{record.source}/{record.locator.removesuffix('.md')}"
        raw_title = record.title or record.text.split("\n", 1)[0][:80]
        raw_body = record.text.split("\n\n", 1)[1] if record.title and "\n\n" in record.text else record.text
        if doc_id in seen:
            problems.append(f"duplicate document id {doc_id} ({seen[doc_id]} and {record.locator})")
            continue
        seen[doc_id] = record.locator
        title, body = strip_markup(raw_title), strip_markup(raw_body)
        if (title, body) != (raw_title, raw_body):
            stripped_ids.append(doc_id)
            # A title is one line: the breaks and spaces that removed tags leave are folded.
            title = " ".join(title.split())
        if not body.strip():
            problems.append(f"{doc_id}: empty document" + (" once markup is removed" if raw_body.strip() else ""))
            continue
        if len(body) > max_chars:
            problems.append(f"{doc_id}: {len(body)} characters exceeds the {max_chars}-character limit")
            continue
        reason = detector.reason(f"{title}\n{body}")
        if reason:
            quarantined.append(QuarantinedDocument(doc_id, record.locator, reason))
            continue
        documents.append(KnowledgeDocument(doc_id, title, body.strip(), record.source, identify_language(body).lang, record.licence, record.ingested_at))
    if problems:
        raise KnowledgeError("knowledge documents rejected: " + "; ".join(problems))
    if quarantined and not documents:
        raise KnowledgeError("every knowledge document was quarantined: " + "; ".join(f"{q.doc_id} ({q.reason})" for q in quarantined))
    return KnowledgeDocuments(documents, quarantined, stripped_ids)


def load_knowledge_documents(catalog: SourceCatalog, max_chars: int) -> KnowledgeDocuments:
    """The documents of every `rag: true` source, screened (`documents_from_records`); each
    quarantined document is also logged as a warning, for callers that do not report them.

    Raises KnowledgeError when no source is marked `rag: true`, a file cannot be read, or
    `documents_from_records` rejects the set."""
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
    documents = documents_from_records(records, max_chars)
    for item in documents.quarantined:
        log.warning("knowledge document %s (%s) quarantined: %s", item.doc_id, item.locator, item.reason)
    return documents


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
