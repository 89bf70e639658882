"""The curation pipeline: repair -> PII redaction -> language ID -> script policy -> quality
-> deduplication, with per-step counters, and the four output files.

Every input item ends in exactly one of kept, rejected (with step and reason) or quarantined
(with file, line and error): input = kept + rejected + quarantined, and
`CurationStats.check_counts` asserts it.

A run has three phases, and both ways of running it share them:

1. `CurationPipeline.process` takes one item through the per-record steps and returns a
   *processed row* (a plain dict, `PROCESSED_SCHEMA`) with what the record became and, for a
   record that passed the quality step, its deduplication keys.
2. `dedup.decide_duplicates` takes the corpus-wide decisions (duplicate ids, exact and near
   duplicates) from small per-record keys.
3. `settle_table` applies those decisions to processed rows: kept, rejected or quarantined
   rows, counted into `CurationStats`.

`run_curation` runs the three phases in this process, holding every record in memory (tests,
small inputs, the benchmark's baseline). `curation/engine.py` runs them in batch-sized tasks
with memory bounded by the batch size, in this process or as Ray tasks; the `cleaned_corpus`
asset, `hkgai curate` and the DVC `curate` stage use it. The same input gives the same kept
ids and counts on all of them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hkgai_pipelines.curation.dedup import (
    EXACT_KEY_BYTES,
    DuplicateDecisions,
    KeyStore,
    MinHasher,
    decide_duplicates,
    in_memory_verifier,
)
from hkgai_pipelines.curation.langid import LanguageIdentifier, LanguageResult
from hkgai_pipelines.curation.pii import PiiRedactor
from hkgai_pipelines.curation.quality import QualityFilter, score_quality, strip_boilerplate_lines
from hkgai_pipelines.curation.repair import repair_chinese_mojibake, repair_text, replacement_char_share
from hkgai_pipelines.curation.script import ScriptConverter
from hkgai_pipelines.params import CurationParams
from hkgai_pipelines.sources.files import field_with_surrogate, printable
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
#: A processed row: a record after the per-record steps (`kind` "record") or a quarantine
#: record (`kind` "quarantine", with the q_* fields), before the corpus-wide decisions.
#: `step`/`reason`: the rejection the steps decided, if any; `id_check`: the record passed
#: repair and takes part in the duplicate-id decision; `candidate`: it passed quality and
#: takes part in deduplication. The flags after it feed the per-step counters.
PROCESSED_SCHEMA = pa.schema(
    [("order", pa.int64()), ("kind", pa.string())]
    + list(CLEANED_SCHEMA)
    + [("step", pa.string()), ("reason", pa.string()), ("id_check", pa.bool_()), ("candidate", pa.bool_()),
       ("mojibake_repaired", pa.bool_()), ("redacted", pa.bool_()), ("converted", pa.bool_()),
       ("boilerplate_lines", pa.int32()),
       ("q_file", pa.string()), ("q_line", pa.int64()), ("q_error", pa.string()), ("q_count", pa.int64())]
)
#: Keys of a processed row that are not stored with it: the candidate's exact key (bytes) and
#: LSH band hashes (uint64 array), which go to the corpus-wide decision.
DEDUP_KEY_FIELDS = ("exact", "bands")
#: Records whose dedup keys `CurationPipeline.run` computes together (the engine's batches
#: are its `batch_size`).
KEY_BATCH_SIZE = 1000


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

    def merge(self, other: "CurationStats") -> None:
        """Add `other`'s counts to these (the counts of another part of the same run).
        Counter.update, not +, so that counters at 0 stay listed."""
        for name in ("input_records", "kept", "rejected", "quarantined", "script_converted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.by_reason.update(other.by_reason)
        self.by_lang.update(other.by_lang)
        self.pii.update(other.pii)
        for source, counts in other.by_source.items():
            self.by_source[source].update(counts)
        for step, counts in other.steps.items():
            self.steps.setdefault(step, Counter()).update(counts)

    def to_dict(self) -> dict:
        """stats.json; every mapping in a fixed order, so that the same counts give the same
        file however the run was split into parts."""
        source_keys = ("input", "kept", "rejected", "quarantined")
        return {
            "input_records": self.input_records,
            "kept": self.kept,
            "rejected": self.rejected,
            "quarantined": self.quarantined,
            "by_reason": dict(sorted(self.by_reason.items())),
            "by_lang": dict(sorted(self.by_lang.items())),
            "by_source": {s: {k: c[k] for k in source_keys if k in c} for s, c in sorted(self.by_source.items())},
            "steps": {s: dict(sorted(c.items())) for s, c in self.steps.items()},
            "pii": dict(sorted(self.pii.items())),
            "script_converted": self.script_converted,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "CurationStats":
        """The inverse of `to_dict`."""
        stats = cls(data["input_records"], data["kept"], data["rejected"], data["quarantined"],
                    Counter(data["by_reason"]), Counter(data["by_lang"]), script_converted=data["script_converted"])
        for source, counts in data["by_source"].items():
            stats.by_source[source].update(counts)
        for step, counts in data["steps"].items():
            stats.steps.setdefault(step, Counter()).update(counts)
        stats.pii.update(data["pii"])
        return stats


class KeptDigest:
    """Fingerprint of the kept records (ids and texts), the asset's data version.

    The sum modulo 2**256 of each record's SHA-256: the same records give the same digest
    whichever worker kept them and in which part, and ids are unique, so no two records
    cancel out.
    """

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def add(self, doc_id: str, text: str) -> None:
        digest = hashlib.sha256(doc_id.encode() + b"\x00" + text.encode("utf-8", "surrogatepass")).digest()
        self.value = (self.value + int.from_bytes(digest, "big")) % (1 << 256)

    def merge(self, other: "KeptDigest") -> None:
        self.value = (self.value + other.value) % (1 << 256)

    def hexdigest(self) -> str:
        return hashlib.sha256(self.value.to_bytes(32, "big")).hexdigest()[:16]


@dataclass
class CurationResult:
    """A settled run or part: the kept rows (`CLEANED_SCHEMA`), the rejected rows
    (`REJECTED_SCHEMA`), both in input order, the quarantine, the counts and the kept digest."""

    cleaned: pa.Table
    rejected: pa.Table
    quarantined: list[QuarantineRecord]
    stats: CurationStats
    digest: KeptDigest = field(default_factory=KeptDigest)


class CurationPipeline:
    """The per-record steps (`process`) and the single-process run (`run`)."""

    def __init__(self, params: CurationParams) -> None:
        self.params = params
        self.redactor = PiiRedactor()
        self.identifier = LanguageIdentifier()
        self.converter = ScriptConverter(params.script_policy)
        self.quality = QualityFilter(params.quality)
        self.hasher = MinHasher.from_params(params.dedup)

    def _redact(self, value: str | None) -> str | None:
        return self.redactor.redact(value).text if value else value

    def process(self, item: RawRecord | QuarantineRecord, order: int) -> dict:
        """One item through repair, PII, language ID, script and quality: a processed row
        (`PROCESSED_SCHEMA`, plus `DEDUP_KEY_FIELDS` for a dedup candidate). No decision
        that needs other records is taken here."""
        return self.process_batch([(item, order)])[0]

    def process_batch(self, numbered: Iterable[tuple[RawRecord | QuarantineRecord, int]]) -> list[dict]:
        """One processed row per (item, order key) pair, in input order, quarantine rows
        included. The order key is the record's place in the corpus's stable order (source,
        file, record: `inputs.order_key`), which the corpus-wide decisions keep the first of.
        A row that passed every step is a dedup *candidate* (`row["candidate"]`); only those
        get their dedup keys, `exact` (`dedup.exact_digest`) and `bands` (uint64 (num_bands,),
        `MinHasher.band_hashes`), computed for the whole batch in one call (`MinHasher.keys`)."""
        rows = [self._until_language(item, order) for item, order in numbered]
        # Language ID for the whole batch at once (its OpenCC conversions in one call each).
        pending = [row for row in rows if row.get("id_check")]
        for row, result in zip(pending, self.identifier.identify_batch([row["text"] for row in pending])):
            self._from_language(row, result)
        candidates = [row for row in rows if row.get("candidate")]
        if candidates:
            exact, bands = self.hasher.keys([row["text"] for row in candidates])
            for row, digest, row_bands in zip(candidates, exact, bands):
                row["exact"], row["bands"] = digest, row_bands
        return rows

    def steps(self, item: RawRecord | QuarantineRecord, order: int) -> dict:
        """The per-record steps of one item without its dedup keys: the processed row
        (`PROCESSED_SCHEMA`) that `process_batch` completes. Also what a peer's executor runs
        for these steps (benchmarks/datatrove_steps.py)."""
        row = self._until_language(item, order)
        if row.get("id_check"):
            self._from_language(row, self.identifier.identify(row["text"]))
        return row

    def _until_language(self, item: RawRecord | QuarantineRecord, order: int) -> dict:
        """The steps before language ID (repair, PII): the processed row, final unless
        `row["id_check"]` (the record passed repair; `_from_language` continues it)."""
        # The file readers quarantine a record with a lone surrogate in any field (Arrow and
        # JSON cannot encode one); records handed in by other callers are held to the same.
        surrogate_field = field_with_surrogate(item)
        if surrogate_field is not None:
            if isinstance(item, RawRecord):
                error = f"{printable(item.locator)}: field {surrogate_field!r} is not valid Unicode (lone surrogate)"
                return _quarantine_row(order, self._redact(printable(item.locator)), None, self._redact(error), printable(item.source), 1)
            item = replace(item, **{f.name: printable(getattr(item, f.name)) for f in fields(item) if isinstance(getattr(item, f.name), str)})
        if isinstance(item, QuarantineRecord):
            # A file name or a crawled URI can carry PII (?email=...&tel=...).
            return _quarantine_row(order, self._redact(item.file), item.line, self._redact(item.error), item.source, item.count)
        p = self.params
        # Every string that is written is redacted: the title of a web page and the URI
        # that locates it ("/profile?tel=91234567") as much as the text.
        row = {"order": order, "kind": "record", "id": item.id, "text": item.text, "source": item.source,
               "licence": item.licence, "locator": self._redact(item.locator), "title": self._redact(item.title),
               "original_text": None, "lang": None, "lang_score": None, "encoding": getattr(item, "encoding", None),
               "step": None, "reason": None, "id_check": False, "candidate": False, "mojibake_repaired": False,
               "redacted": False, "converted": False, "boilerplate_lines": 0}
        size = len(item.text.encode("utf-8", "surrogatepass"))
        if size > p.max_record_bytes:
            return _quarantine_row(order, row["locator"], None, f"record of {size} bytes exceeds the {p.max_record_bytes}-byte limit", item.source, 1)

        # repair: text, then Chinese mojibake
        text = repair_text(item.text)
        text, mojibake = repair_chinese_mojibake(text)
        row["mojibake_repaired"] = mojibake == "repaired"

        # pii: before anything is written anywhere, rejected text included, so it runs
        # before the first rejection.
        redaction = self.redactor.redact(text)
        row["text"] = redaction.text
        for kind in PII_KINDS:
            row[f"pii_{kind.lower()}"] = redaction.counts.get(kind, 0)
        row["redacted"] = bool(redaction.counts)

        if not row["text"]:
            return _rejected(row, "repair", "empty_after_repair")
        if mojibake == "mojibake":
            return _rejected(row, "repair", "mojibake")
        if replacement_char_share(row["text"]) > p.max_replacement_char_share:
            return _rejected(row, "repair", "replacement_characters")
        # Whether an earlier record has this id is decided over the whole corpus
        # (`settle_table`); a repeat is rejected as repair:duplicate_id before the steps below count.
        row["id_check"] = True
        return row

    def _from_language(self, row: dict, result: LanguageResult) -> dict:
        """The steps from language ID on (language, script, quality) for a row of
        `_until_language` and its `LanguageResult`; completes `row` in place."""
        p = self.params
        # langid
        row["lang"], row["lang_score"] = result.lang, result.score
        if result.lang not in p.allowed_languages:
            return _rejected(row, "langid", f"language_{result.lang}")

        # script (the language's script, not the language, decides: Cantonese written in
        # Simplified characters is converted like Simplified Mandarin)
        converted = self.converter.convert(row["text"], result.lang, getattr(result, "script", None))
        if converted != row["text"]:
            row["original_text"], row["text"] = row["text"], converted
            row["converted"] = True

        # quality: boilerplate lines go, then the rest is scored
        row["text"], boilerplate_lines = strip_boilerplate_lines(row["text"])
        if not row["text"]:
            return _rejected(row, "quality", "boilerplate")
        row["boilerplate_lines"] = boilerplate_lines
        scores = score_quality(row["text"], boilerplate_free=True)
        reason = self.quality.decide(scores)
        if reason:
            return _rejected(row, "quality", reason)
        row.update({column: scores[column] for column in QUALITY_COLUMNS})

        # a dedup candidate: its keys are computed with its batch's (`process_batch`); the
        # decision is corpus-wide (dedup.decide_duplicates)
        row["candidate"] = True
        return row

    def run(self, items: Iterable[RawRecord | QuarantineRecord]) -> CurationResult:
        """Every item in this process, in memory; order keys are the input positions."""
        numbered = enumerate(items)
        rows: list[dict] = []
        # In batches, as the engine runs them: a batch's shingles are held while its keys are computed.
        while batch := [(item, order) for order, item in itertools.islice(numbered, KEY_BATCH_SIZE)]:
            rows.extend(self.process_batch(batch))
        keys = KeyStore(self.hasher.num_bands)
        collect_keys(rows, keys)
        texts = {row["order"]: row["text"] for row in rows if row.get("candidate")}
        decisions = decide_duplicates(keys, self.params.dedup.threshold, in_memory_verifier(texts, self.hasher))
        result = settle_table(pa.Table.from_pylist(rows, schema=PROCESSED_SCHEMA), decisions)
        result.stats.check_counts()
        return result


def _quarantine_row(order: int, file: str, line: int | None, error: str, source: str, count: int) -> dict:
    return {"order": order, "kind": "quarantine", "q_file": file, "q_line": line, "q_error": error, "source": source, "q_count": count}


def _rejected(row: dict, step: str, reason: str) -> dict:
    row["step"], row["reason"] = step, reason
    return row


def collect_keys(rows: Iterable[dict], keys: KeyStore) -> None:
    """Add the corpus-wide decision's keys of processed rows to `keys`."""
    rows = [row for row in rows if row.get("id_check")]
    keys.add_ids(np.array([row["order"] for row in rows], dtype=np.int64), [row["id"] for row in rows])
    candidates = [row for row in rows if row["candidate"]]
    if candidates:
        keys.add_candidates(
            np.array([row["order"] for row in candidates], dtype=np.int64),
            np.array([row["exact"] for row in candidates], dtype=f"S{EXACT_KEY_BYTES}"),
            np.stack([row["bands"] for row in candidates]),
        )


def settle_table(table: pa.Table, decisions: DuplicateDecisions) -> CurationResult:
    """Apply the corpus-wide decisions to processed rows (`PROCESSED_SCHEMA`, in input
    order): the kept, rejected and quarantined rows, their counts and the kept records' digest.

    Columnar (masks over the table, no Python object per kept row): settling is the engine's
    third phase, and per-row dicts made it most of that phase's time. A record's outcome is
    the first that applies, in the order of the steps: a rejection by the steps before
    language ID (`id_check` false), a repeated id (repair:duplicate_id), the rejection the
    language, boilerplate or quality step decided, a duplicate verdict, else kept. A counter
    that a reached step adds to is listed in the stats even at 0, as the per-step counters
    always were."""
    stats = CurationStats()
    orders = table.column("order").to_numpy()
    is_record = ~_flag(pc.equal(table.column("kind"), "quarantine"))
    step = np.array(table.column("step").to_pylist(), dtype=object)
    reason = np.array(table.column("reason").to_pylist(), dtype=object)
    sources = table.column("source")

    quarantine = table.filter(pa.array(~is_record))
    quarantined = [
        QuarantineRecord(row["q_file"], row["q_line"], row["q_error"], row["source"], row["q_count"])
        for row in quarantine.select(["q_file", "q_line", "q_error", "source", "q_count"]).to_pylist()
    ]
    # One quarantine row may stand for many inputs (a file's summary of the quarantine past
    # its cap, a Parquet file of the wrong schema): count them all.
    for record in quarantined:
        source = record.source or "(unknown)"
        stats.input_records += record.count
        stats.quarantined += record.count
        stats.by_source[source]["input"] += record.count
        stats.by_source[source]["quarantined"] += record.count

    records = int(is_record.sum())
    stats.input_records += records
    _count_by(stats.by_source, "input", sources, is_record)
    if records:
        stats.steps["repair"]["mojibake_repaired"] += _total(table, "mojibake_repaired", is_record)
    for kind in PII_KINDS:
        found = _total(table, f"pii_{kind.lower()}", is_record)
        if found:
            stats.pii[kind] += found

    # Each stage: the records that reach it, and those it rejects.
    checked = is_record & _flag(table.column("id_check"))
    rejected = is_record & ~checked  # by the steps before language ID
    repeated = checked & decisions.duplicate_id_mask(orders)
    step[repeated], reason[repeated] = "repair", "duplicate_id"
    after_repair = checked & ~repeated
    if after_repair.any():
        stats.steps["repair"]["kept"] += int(after_repair.sum())
        stats.steps["pii"]["kept"] += int(after_repair.sum())
        stats.steps["pii"]["redacted_docs"] += _total(table, "redacted", after_repair)
    after_langid = after_repair & (step != "langid")
    if after_langid.any():
        stats.steps["langid"]["kept"] += int(after_langid.sum())
        stats.steps["script"]["kept"] += int(after_langid.sum())
        converted = _total(table, "converted", after_langid)
        if converted:
            stats.script_converted += converted
            stats.steps["script"]["converted"] += converted
    boilerplate = after_langid & (reason == "boilerplate")
    step[boilerplate] = "quality"  # a text that was all boilerplate lines: quality's rejection
    after_boilerplate = after_langid & ~boilerplate
    if after_boilerplate.any():
        stats.steps["quality"]["boilerplate_lines_removed"] += _total(table, "boilerplate_lines", after_boilerplate)
    after_quality = after_boilerplate & (step != "quality")
    if after_quality.any():
        stats.steps["quality"]["kept"] += int(after_quality.sum())

    duplicate = after_quality & decisions.dropped_mask(orders)
    positions = np.searchsorted(decisions.dropped_orders, orders[duplicate])
    step[duplicate] = "dedup"
    reason[duplicate] = ["exact_duplicate" if decisions.dropped_exact[i] else "near_duplicate" for i in positions]
    cluster_id = np.full(len(orders), None, dtype=object)
    cluster_id[duplicate] = [decisions.cluster_id_bytes(i).decode("utf-8") for i in positions]
    similarity = np.full(len(orders), np.nan)
    similarity[duplicate] = decisions.dropped_similarity[positions]

    rejected |= repeated | (after_repair & ~after_quality) | duplicate
    kept = after_quality & ~duplicate
    stats.rejected = int(rejected.sum())
    for name, count in Counter(f"{s}:{r}" for s, r in zip(step[rejected], reason[rejected])).items():
        stats.by_reason[name] += count
    for name, count in Counter(step[rejected]).items():
        stats.steps[name]["dropped"] += count
    _count_by(stats.by_source, "rejected", sources, rejected)
    if kept.any():
        stats.steps["dedup"]["kept"] += int(kept.sum())
    stats.kept = int(kept.sum())
    stats.by_lang.update(_value_counts(table.column("lang").filter(pa.array(kept))))
    _count_by(stats.by_source, "kept", sources, kept)

    cleaned = table.filter(pa.array(kept)).select(CLEANED_SCHEMA.names)
    digest = KeptDigest()
    for doc_id, text in zip(cleaned.column("id").to_pylist(), cleaned.column("text").to_pylist()):
        digest.add(doc_id, text)
    rejected_mask = pa.array(rejected)
    rejected_columns = {name: table.column(name).filter(rejected_mask) for name in REJECTED_SCHEMA.names if name in table.column_names}
    rejected_columns.update(step=pa.array(step[rejected], pa.string()), reason=pa.array(reason[rejected], pa.string()),
                            cluster_id=pa.array(cluster_id[rejected], pa.string()),
                            similarity=pa.array(similarity[rejected], pa.float64(), mask=~duplicate[rejected]))
    return CurationResult(
        pa.table(cleaned.columns, schema=CLEANED_SCHEMA).combine_chunks(),
        pa.table([rejected_columns[name] for name in REJECTED_SCHEMA.names], schema=REJECTED_SCHEMA).combine_chunks(),
        quarantined, stats, digest,
    )


def _flag(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean column as a numpy bool array, null as False."""
    return pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(bool)


def _total(table: pa.Table, name: str, mask: np.ndarray) -> int:
    """The sum of a numeric or boolean column over the rows of `mask` (nulls as 0)."""
    column = table.column(name)
    values = pc.fill_null(column, False if pa.types.is_boolean(column.type) else 0).to_numpy(zero_copy_only=False)
    return int(values[mask].sum())


def _value_counts(column: pa.ChunkedArray) -> dict:
    return {item["values"]: item["counts"] for item in pc.value_counts(column).to_pylist()}


def _count_by(by_source: dict, key: str, sources: pa.ChunkedArray, mask: np.ndarray) -> None:
    """by_source[source][key] += the rows of `mask` from each source."""
    if mask.any():
        for source, count in _value_counts(sources.filter(pa.array(mask))).items():
            by_source[source][key] += count


@dataclass(frozen=True)
class CurationOutputs:
    out_dir: Path
    cleaned: Path
    rejected: Path
    quarantine: Path
    stats: Path
    content_hash: str


def staging_folder(out_dir: Path) -> Path:
    """A new private folder inside `out_dir` for a run's outputs (see `replace_outputs`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))


def replace_outputs(staging: Path, out_dir: Path) -> dict[str, Path]:
    """Move the four outputs written in `staging` into `out_dir`, replacing the previous
    ones; returns their paths.

    A file replaces a file with one atomic rename. A folder of part files (the engine's
    Parquet outputs) cannot be renamed over an existing path, so the previous output is first
    renamed into the staging folder (removed afterwards by the caller): renames within one
    file system, which do not fail half-way through a file. A previous file is kept there
    too (a hard link, or a copy where links fail), so that when a rename fails (a file made
    read-only or immutable, a full directory) the outputs already replaced are put back and
    the folder holds the previous run's four outputs, not two runs' (a fresh-user trial: the
    new cleaned.parquet beside the old stats.json). Raises the rename's OSError; when putting
    back fails too, an OSError saying the folder now mixes two runs.
    """
    staging, out_dir = Path(staging), Path(out_dir)
    paths = {}
    # [final path, where its previous output is kept (None: there was none), new output in place]
    done: list[list] = []
    try:
        for name in OUTPUT_NAMES:
            staged, final = staging / name, out_dir / name
            previous = staging / f".previous-{name}" if os.path.lexists(final) else None
            if previous is not None and (staged.is_dir() or final.is_dir()):
                os.replace(final, previous)
                done.append([final, previous, False])  # moved away: to be put back from here on
            elif previous is not None:
                _keep_previous(final, previous)  # `final` stays in place until the atomic rename
            os.replace(staged, final)
            if done and done[-1][0] == final:
                done[-1][2] = True
            else:
                done.append([final, previous, True])
            paths[name] = final
    except OSError as error:
        try:
            _put_back(done, staging)
        except OSError as second:
            raise OSError(f"{error}; putting the previous outputs back failed too ({second}): {out_dir} now holds "
                          f"outputs of two runs, and running the same command again replaces them") from error
        raise
    return paths


def _keep_previous(final: Path, previous: Path) -> None:
    try:
        os.link(final, previous)
    except OSError:
        shutil.copy2(final, previous)


def _put_back(done: list[list], staging: Path) -> None:
    """Undo `replace_outputs`'s renames so far, last first: a new output moved back into the
    staging folder (a file is simply renamed over by its previous one), the previous output
    (if any) back in place."""
    for final, previous, new_in_place in reversed(done):
        if new_in_place and (previous is None or previous.is_dir()):
            os.replace(final, staging / f".failed-{final.name}")
        if previous is not None:
            os.replace(previous, final)


def write_outputs(result: CurationResult, out_dir: Path) -> CurationOutputs:
    """Write the four outputs as single files; the content hash covers kept ids and texts.

    All four are written to a staging folder inside `out_dir` first and moved into place
    only when every one is complete, so a failure while writing (a full disk, a value a
    writer refuses) leaves the previous run's four outputs as they were. The staging folder
    is removed either way. Raises what the writers raise (OSError, pyarrow.ArrowException, ...).
    """
    staging = staging_folder(out_dir)
    try:
        staged = {name: staging / name for name in OUTPUT_NAMES}
        write_table_atomic(result.cleaned, staged["cleaned.parquet"])
        write_table_atomic(result.rejected, staged["rejected.parquet"])
        write_quarantine(result.quarantined, staged["quarantine.jsonl"])
        write_stats(result.stats, staged["stats.json"])
        paths = replace_outputs(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CurationOutputs(Path(out_dir), paths["cleaned.parquet"], paths["rejected.parquet"],
                           paths["quarantine.jsonl"], paths["stats.json"], result.digest.hexdigest())


def write_stats(stats: CurationStats, path: Path) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(stats.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")


def run_curation(items: Iterable[RawRecord | QuarantineRecord], params: CurationParams, out_dir: Path) -> tuple[CurationResult, CurationOutputs]:
    """The whole pipeline in this process (every record in memory), outputs as single files.
    For corpora larger than memory, and to use several cores, see `curation/engine.py`."""
    result = CurationPipeline(params).run(items)
    return result, write_outputs(result, out_dir)
