"""The curation pipeline: repair -> PII redaction -> language ID -> script policy -> quality
-> deduplication, with per-step counters, and the four output files.

`run_curation` is the single implementation behind the `cleaned_corpus` asset, `hkgai curate`
and the DVC `curate` stage. Every input item ends in exactly one of kept, rejected
(with step and reason) or quarantined (with file, line and error): input = kept + rejected +
quarantined, and `CurationStats.check_counts` asserts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from hkgai_pipelines.curation.dedup import Deduplicator
from hkgai_pipelines.curation.langid import LanguageIdentifier
from hkgai_pipelines.curation.pii import PiiRedactor
from hkgai_pipelines.curation.quality import QualityFilter, score_quality, strip_boilerplate_lines
from hkgai_pipelines.curation.repair import repair_chinese_mojibake, repair_text, replacement_char_share
from hkgai_pipelines.curation.script import ScriptConverter
from hkgai_pipelines.params import CurationParams
from hkgai_pipelines.sources.lake import atomic_path, write_quarantine, write_table_atomic
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord

STEPS = ("repair", "pii", "langid", "script", "quality", "dedup")
QUALITY_COLUMNS = (
    "chars", "letter_ratio", "digit_ratio", "symbol_ratio", "dup_line_fraction",
    "dup_line_char_fraction", "boilerplate_line_fraction", "top_2gram_fraction",
    "top_3gram_fraction", "top_4gram_fraction",
)
PII_KINDS = ("HKID", "PHONE", "EMAIL", "CREDIT_CARD")
#: The four outputs of a run, in the order they are written and moved into place.
OUTPUT_NAMES = ("cleaned.parquet", "rejected.parquet", "quarantine.jsonl", "stats.json")
#: Prefix of the folder inside the output folder where a run's outputs are written before
#: they replace the previous ones; a leftover one is from a process that was killed.
STAGING_PREFIX = ".curate-staging-"

CLEANED_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("original_text", pa.string()),
     ("lang", pa.string()), ("lang_score", pa.float64()), ("source", pa.string()),
     ("licence", pa.string()), ("locator", pa.string()), ("title", pa.string()),
     ("encoding", pa.string())]
    + [(f"pii_{kind.lower()}", pa.int32()) for kind in PII_KINDS]
    + [(column, pa.float64()) for column in QUALITY_COLUMNS]
)
REJECTED_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("lang", pa.string()), ("source", pa.string()),
     ("licence", pa.string()), ("locator", pa.string()), ("encoding", pa.string()), ("step", pa.string()),
     ("reason", pa.string()), ("cluster_id", pa.string()), ("similarity", pa.float64())]
)


@dataclass
class CurationStats:
    input_records: int = 0
    kept: int = 0
    rejected: int = 0
    quarantined: int = 0
    by_reason: Counter = field(default_factory=Counter)
    by_lang: Counter = field(default_factory=Counter)
    by_source: dict = field(default_factory=lambda: defaultdict(Counter))
    steps: dict = field(default_factory=lambda: {step: Counter() for step in STEPS})
    pii: Counter = field(default_factory=Counter)
    script_converted: int = 0

    def check_counts(self) -> None:
        if self.input_records != self.kept + self.rejected + self.quarantined:
            raise AssertionError(
                f"counts do not add up: input {self.input_records} != kept {self.kept} + "
                f"rejected {self.rejected} + quarantined {self.quarantined}"
            )

    def to_dict(self) -> dict:
        return {
            "input_records": self.input_records,
            "kept": self.kept,
            "rejected": self.rejected,
            "quarantined": self.quarantined,
            "by_reason": dict(sorted(self.by_reason.items())),
            "by_lang": dict(sorted(self.by_lang.items())),
            "by_source": {s: dict(c) for s, c in sorted(self.by_source.items())},
            "steps": {s: dict(c) for s, c in self.steps.items()},
            "pii": dict(sorted(self.pii.items())),
            "script_converted": self.script_converted,
        }


@dataclass
class CurationResult:
    kept: list[dict]
    rejected: list[dict]
    quarantined: list[QuarantineRecord]
    stats: CurationStats

    def cleaned_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.kept, schema=CLEANED_SCHEMA)

    def rejected_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rejected, schema=REJECTED_SCHEMA)


class CurationPipeline:
    def __init__(self, params: CurationParams) -> None:
        self.params = params
        self.redactor = PiiRedactor()
        self.identifier = LanguageIdentifier()
        self.converter = ScriptConverter(params.script_policy)
        self.quality = QualityFilter(params.quality)

    def _redact(self, value: str | None) -> str | None:
        return self.redactor.redact(value).text if value else value

    def run(self, items: Iterable[RawRecord | QuarantineRecord]) -> CurationResult:
        p = self.params
        stats = CurationStats()
        kept: list[dict] = []
        rejected: list[dict] = []
        quarantined: list[QuarantineRecord] = []
        dedup = Deduplicator(p.dedup.threshold, p.dedup.num_perm, p.dedup.num_bands, p.dedup.ngram, p.dedup.seed)
        seen_ids: set[str] = set()

        def reject(doc: dict, step: str, reason: str, cluster_id: str | None = None, similarity: float | None = None) -> None:
            stats.rejected += 1
            stats.by_reason[f"{step}:{reason}"] += 1
            stats.by_source[doc["source"]]["rejected"] += 1
            stats.steps[step]["dropped"] += 1
            rejected.append({
                "id": doc["id"], "text": doc["text"], "lang": doc.get("lang"), "source": doc["source"],
                "licence": doc["licence"], "locator": doc["locator"], "encoding": doc.get("encoding"), "step": step, "reason": reason,
                "cluster_id": cluster_id, "similarity": similarity,
            })

        for item in items:
            if isinstance(item, QuarantineRecord):
                # One record may stand for many inputs (a file's summary of the quarantine
                # past its cap, a Parquet file of the wrong schema): count them all.
                stats.input_records += item.count
                stats.quarantined += item.count
                stats.by_source[item.source or "(unknown)"]["input"] += item.count
                stats.by_source[item.source or "(unknown)"]["quarantined"] += item.count
                # A file name or a crawled URI can carry PII (?email=...&tel=...).
                quarantined.append(replace(item, file=self._redact(item.file), error=self._redact(item.error)))
                continue
            stats.input_records += 1
            stats.by_source[item.source]["input"] += 1
            # Every string that is written is redacted: the title of a web page and the URI
            # that locates it ("/profile?tel=91234567") as much as the text.
            doc = {"id": item.id, "text": item.text, "source": item.source, "licence": item.licence,
                   "locator": self._redact(item.locator), "title": self._redact(item.title), "original_text": None,
                   "encoding": getattr(item, "encoding", None)}
            size = len(item.text.encode("utf-8", "surrogatepass"))
            if size > p.max_record_bytes:
                stats.quarantined += 1
                stats.by_source[item.source]["quarantined"] += 1
                quarantined.append(QuarantineRecord(doc["locator"], None, f"record of {size} bytes exceeds the {p.max_record_bytes}-byte limit", item.source))
                continue

            # repair: text, then Chinese mojibake
            doc["text"] = repair_text(item.text)
            doc["text"], mojibake = repair_chinese_mojibake(doc["text"])
            stats.steps["repair"]["mojibake_repaired"] += mojibake == "repaired"

            # pii: before anything is written anywhere, rejected text included, so it runs
            # before the first rejection.
            redaction = self.redactor.redact(doc["text"])
            doc["text"] = redaction.text
            for kind in PII_KINDS:
                doc[f"pii_{kind.lower()}"] = redaction.counts.get(kind, 0)
            stats.pii.update(redaction.counts)

            if not doc["text"]:
                reject(doc, "repair", "empty_after_repair")
                continue
            if mojibake == "mojibake":
                reject(doc, "repair", "mojibake")
                continue
            if replacement_char_share(doc["text"]) > p.max_replacement_char_share:
                reject(doc, "repair", "replacement_characters")
                continue
            if doc["id"] in seen_ids:
                reject(doc, "repair", "duplicate_id")
                continue
            seen_ids.add(doc["id"])
            stats.steps["repair"]["kept"] += 1
            stats.steps["pii"]["kept"] += 1
            stats.steps["pii"]["redacted_docs"] += 1 if redaction.counts else 0

            # langid
            result = self.identifier.identify(doc["text"])
            doc["lang"], doc["lang_score"] = result.lang, result.score
            if result.lang not in p.allowed_languages:
                reject(doc, "langid", f"language_{result.lang}")
                continue
            stats.steps["langid"]["kept"] += 1

            # script (the language's script, not the language, decides: Cantonese written in
            # Simplified characters is converted like Simplified Mandarin)
            converted = self.converter.convert(doc["text"], result.lang, getattr(result, "script", None))
            if converted != doc["text"]:
                doc["original_text"], doc["text"] = doc["text"], converted
                stats.script_converted += 1
                stats.steps["script"]["converted"] += 1
            stats.steps["script"]["kept"] += 1

            # quality: boilerplate lines go, then the rest is scored
            doc["text"], boilerplate_lines = strip_boilerplate_lines(doc["text"])
            if not doc["text"]:
                reject(doc, "quality", "boilerplate")
                continue
            stats.steps["quality"]["boilerplate_lines_removed"] += boilerplate_lines
            scores = score_quality(doc["text"])
            reason = self.quality.decide(scores)
            if reason:
                reject(doc, "quality", reason)
                continue
            doc.update({column: scores[column] for column in QUALITY_COLUMNS})
            stats.steps["quality"]["kept"] += 1

            # dedup (input order is the stable order: the first of a cluster is kept)
            verdict = dedup.check(doc["id"], doc["text"])
            if verdict:
                reject(doc, "dedup", f"{verdict.kind}_duplicate", cluster_id=verdict.duplicate_of, similarity=verdict.similarity)
                continue
            stats.steps["dedup"]["kept"] += 1

            stats.kept += 1
            stats.by_lang[doc["lang"]] += 1
            stats.by_source[doc["source"]]["kept"] += 1
            kept.append(doc)

        stats.check_counts()
        return CurationResult(kept, rejected, quarantined, stats)


@dataclass(frozen=True)
class CurationOutputs:
    out_dir: Path
    cleaned: Path
    rejected: Path
    quarantine: Path
    stats: Path
    content_hash: str


def write_outputs(result: CurationResult, out_dir: Path) -> CurationOutputs:
    """Write the four outputs; the content hash covers kept ids and texts.

    All four are written to a staging folder inside `out_dir` first and moved into place
    only when every one is complete, so a failure while writing (a full disk, a value a
    writer refuses) leaves the previous run's four outputs as they were. The staging folder
    is removed either way. Raises what the writers raise (OSError, pyarrow.ArrowException, ...).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in OUTPUT_NAMES}
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        staged = {name: staging / name for name in OUTPUT_NAMES}
        write_table_atomic(result.cleaned_table(), staged["cleaned.parquet"])
        write_table_atomic(result.rejected_table(), staged["rejected.parquet"])
        write_quarantine(result.quarantined, staged["quarantine.jsonl"])
        with atomic_path(staged["stats.json"]) as temp:
            temp.write_text(json.dumps(result.stats.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        # Renames within one folder: each is atomic, and nothing can fail half-way through a file.
        for name in OUTPUT_NAMES:
            os.replace(staged[name], paths[name])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    digest = hashlib.sha256()
    for doc in result.kept:
        digest.update(doc["id"].encode())
        digest.update(doc["text"].encode("utf-8", "surrogatepass"))
    return CurationOutputs(out_dir, paths["cleaned.parquet"], paths["rejected.parquet"],
                           paths["quarantine.jsonl"], paths["stats.json"], digest.hexdigest()[:16])


def run_curation(items: Iterable[RawRecord | QuarantineRecord], params: CurationParams, out_dir: Path) -> tuple[CurationResult, CurationOutputs]:
    result = CurationPipeline(params).run(items)
    return result, write_outputs(result, out_dir)
