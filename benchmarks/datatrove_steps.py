"""Our per-record curation steps as a datatrove filter, so that datatrove's executor can run
exactly the steps the curation engine runs (repair, PII, language ID, script, quality).

datatrove has no offline counterpart of language ID and script conversion (its LanguageFilter
downloads a fastText model), so its own filters (`run_datatrove(mapped=True)`) do less work
per record than ours; with this filter both engines run the same steps and the comparison
measures the engines: reading, batching, writing, the MinHash stages, the parallelism.

    from datatrove_steps import CurationSteps
"""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter


class CurationSteps(BaseFilter):
    """Keeps a document when it passes our steps (`CurationPipeline.steps` marks it a dedup
    candidate), with its text as the steps left it (repaired, redacted, converted, boilerplate
    lines removed); a rejected one is dropped with its step and reason ("quality:too_short"),
    a quarantined one (over the size limit, not valid Unicode) as "quarantine" (datatrove's
    stats count drops by reason, so the per-record error is not one). A document without an id
    gets the stable id our readers give (`RawRecord`). The pipeline (models, OpenCC, redactor)
    is built on first use in each copy of the filter: datatrove's local executor copies the
    pipeline for each task, so once per task (once per worker where tasks = workers).
    The corpus-wide decisions (repeated ids, exact and near duplicates) are not made here:
    datatrove's MinHash stages after this filter remove duplicates."""

    name = "hkgai curation steps"

    def __init__(self, source: str = "bench", licence: str = "mixed") -> None:
        super().__init__()
        self.source, self.licence = source, licence
        self._pipeline = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        from hkgai_pipelines.sources.records import RawRecord

        if self._pipeline is None:
            from hkgai_pipelines.curation.pipeline import CurationPipeline
            from hkgai_pipelines.params import load_curation_params
            from hkgai_pipelines.settings import PROJECT_ROOT

            self._pipeline = CurationPipeline(load_curation_params(PROJECT_ROOT / "params.yaml"))
        doc_id = "" if doc.id is None else str(doc.id)
        record = RawRecord(text=doc.text, source=self.source, licence=self.licence, locator=doc_id or "document", id=doc_id,
                           ingested_at="2026-01-01T00:00:00Z", encoding="utf-8")
        row = self._pipeline.steps(record, 0)
        if row["kind"] == "quarantine":
            return False, "quarantine"
        if not row.get("candidate"):
            return False, f"{row['step']}:{row['reason']}"
        doc.text = row["text"]
        return True
