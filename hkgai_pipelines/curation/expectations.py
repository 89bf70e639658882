"""Great Expectations (GX Core 1.x) gates on the curated corpus, one function per property.

Each function validates pandas frames against a small expectation suite in an ephemeral GX
context and returns a `GateOutcome`; the Dagster asset checks turn those into blocking
`AssetCheckResult`s, and tests call them directly on planted violations.

A corpus is never loaded whole. Row-wise gates take a frame or an iterable of frames
(`OutputReader.frames`: record batches of `BATCH_ROWS` rows of the columns they need) and
validate batch by batch, their results summed (`validate_frames`). Gates over the whole
corpus read one small column in Arrow: the ids (`check_ids_unique` validates only the rows
whose id repeats, which gives GX's own unique-count), the languages (`check_language_mix`
counts them). Row counts come from the Parquet metadata and stats.json.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from hkgai_pipelines.curation.pii_audit import audit_text

_counter = itertools.count()
_context = None


@dataclass
class GateOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _gx_context():
    global _context
    if _context is None:
        import great_expectations as gx

        from great_expectations.data_context.types.base import ProgressBarsConfig

        _context = gx.get_context(mode="ephemeral")
        # Progress bars would interleave with Dagster's and Rich's output.
        _context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return _context


def validate_frame(frame: pd.DataFrame, expectations: list) -> tuple[bool, list[dict]]:
    """Validate `frame` against `expectations`; return success and each result's summary."""
    import great_expectations as gx

    context = _gx_context()
    name = f"frame_{next(_counter)}"
    source = context.data_sources.add_pandas(name)
    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name).get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    results = batch.validate(suite)
    summaries = []
    for result in results.results:
        detail = result.result or {}
        summaries.append({
            "expectation": result.expectation_config.type,
            "success": bool(result.success),
            "unexpected_count": detail.get("unexpected_count"),
            "partial_unexpected_list": [str(v)[:80] for v in (detail.get("partial_unexpected_list") or [])[:5]],
            "observed_value": detail.get("observed_value"),
        })
    context.data_sources.delete(name)
    return bool(results.success), summaries


#: Rows per batch a row-wise gate validates at once: GX's pandas engine copies a batch a few
#: times, so memory is a few times this many rows' text, whatever the corpus size.
BATCH_ROWS = 50_000

Frames = pd.DataFrame | Iterable[pd.DataFrame]


def _frames(data: Frames) -> Iterable[pd.DataFrame]:
    return [data] if isinstance(data, pd.DataFrame) else data


def validate_frames(frames: Iterable[pd.DataFrame], expectations: list) -> tuple[bool, list[dict]]:
    """`validate_frame` on each frame in turn, for row-wise expectations: success when every
    batch succeeds, unexpected counts summed, the first five unexpected values kept. Raises
    ValueError for no frame at all (give an empty frame of the columns instead)."""
    success, merged = True, None
    for frame in frames:
        ok, summaries = validate_frame(frame, expectations)
        success = success and ok
        merged = summaries if merged is None else [_merged(a, b) for a, b in zip(merged, summaries)]
    if merged is None:
        raise ValueError("no frame to validate")
    return success, merged


def _merged(a: dict, b: dict) -> dict:
    counts = [c for c in (a["unexpected_count"], b["unexpected_count"]) if c is not None]
    return {
        "expectation": a["expectation"],
        "success": a["success"] and b["success"],
        "unexpected_count": sum(counts) if counts else None,
        "partial_unexpected_list": (a["partial_unexpected_list"] + b["partial_unexpected_list"])[:5],
        "observed_value": a["observed_value"] if a["observed_value"] is not None else b["observed_value"],
    }


def _outcome(success: bool, summaries: list[dict], ok: str, failed: str) -> GateOutcome:
    return GateOutcome(success, ok if success else failed, {"gx_results": summaries})


def check_ids_unique(ids: pd.DataFrame | pa.ChunkedArray | pa.Array) -> GateOutcome:
    """Every id present and unique. `ids`: a frame with an `id` column, or the id column in
    Arrow (`OutputReader.column`). Only the rows whose id is missing or repeats reach GX: its
    unique and not-null expectations count the same unexpected rows on them as on the whole
    column."""
    import great_expectations.expectations as gxe
    import pyarrow.compute as pc

    column = pa.chunked_array([pa.array(ids["id"], pa.string())]) if isinstance(ids, pd.DataFrame) else pa.chunked_array([ids]) if isinstance(ids, pa.Array) else ids
    counts = pc.value_counts(column.drop_null()) if len(column) else pa.StructArray.from_arrays([pa.array([], pa.string()), pa.array([], pa.int64())], ["values", "counts"])
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    offending = pc.or_(pc.is_null(column), pc.is_in(column, value_set=repeated))
    frame = pd.DataFrame({"id": pc.filter(column, offending).to_pylist()}, dtype=object)
    success, summaries = validate_frame(frame, [gxe.ExpectColumnValuesToBeUnique(column="id"), gxe.ExpectColumnValuesToNotBeNull(column="id")])
    outcome = _outcome(success, summaries, "every id is unique", "duplicate or missing ids")
    outcome.metadata["ids"] = len(column)
    return outcome


def check_text_non_empty(cleaned: Frames) -> GateOutcome:
    import great_expectations.expectations as gxe

    frames = (frame[["text"]].assign(stripped=frame["text"].fillna("").str.strip()) for frame in _frames(cleaned))
    success, summaries = validate_frames(frames, [
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="stripped", min_value=1),
    ])
    return _outcome(success, summaries, "no empty text", "empty or null text")


def check_lang_allowed(cleaned: Frames, allowed: list[str]) -> GateOutcome:
    import great_expectations.expectations as gxe

    frames = (frame[["lang"]] for frame in _frames(cleaned))
    success, summaries = validate_frames(frames, [gxe.ExpectColumnValuesToBeInSet(column="lang", value_set=list(allowed))])
    return _outcome(success, summaries, f"every lang in {sorted(allowed)}", "unexpected language labels")


#: Every free-text column a curation output writes: PII in a page title or a crawled URI is
#: as much a leak as PII in the text.
WRITTEN_TEXT_COLUMNS = ("text", "original_text", "title", "locator")


def check_no_residual_pii(cleaned: Frames, rejected: Frames | None = None) -> GateOutcome:
    """No PII left in the kept nor the rejected records (both are written to the lake), in
    any of their `WRITTEN_TEXT_COLUMNS`.

    The detector is `pii_audit.audit_text`, built independently of the redactor, so a form
    the redactor misses is not missed here for the same reason. The offending findings (kind
    and value, at most five) are in the metadata for the reader of a failed gate.
    """
    import great_expectations.expectations as gxe

    certain: list[str] = []
    possible: list[str] = []
    possible_count = 0

    def audited() -> Iterator[pd.DataFrame]:
        nonlocal possible_count
        for frame in itertools.chain(_frames(cleaned), _frames(rejected) if rejected is not None else []):
            texts = [value for column in WRITTEN_TEXT_COLUMNS if column in frame for value in frame[column].fillna("")]
            findings = [audit_text(text) for text in texts]
            for finding in itertools.chain.from_iterable(findings):
                if finding.certain:
                    certain.append(f"{finding.kind}: {finding.value}")
                else:
                    possible_count += 1
                    possible.append(finding.value)
            del certain[5:], possible[5:]  # examples for a reader; the counts are GX's
            yield pd.DataFrame({"residual_pii": [sum(f.certain for f in found) for found in findings]}, dtype="int64")

    success, summaries = validate_frames(audited(), [gxe.ExpectColumnValuesToBeBetween(column="residual_pii", min_value=0, max_value=0)])
    outcome = _outcome(success, summaries, "no PII left in kept or rejected text (independent detector)", "PII left in the text")
    outcome.metadata["findings"] = certain
    # Bare eight-digit numbers a plan allows: listed for a reader, not blocking.
    outcome.metadata["possible_phone_numbers"] = {"count": possible_count, "examples": possible}
    return outcome


def check_length_bounds(cleaned: Frames, min_chars: int, max_chars: int) -> GateOutcome:
    import great_expectations.expectations as gxe

    frames = (pd.DataFrame({"chars": frame["text"].fillna("").map(lambda t: sum(1 for ch in t if not ch.isspace()))}, dtype="int64")
              for frame in _frames(cleaned))
    success, summaries = validate_frames(frames, [gxe.ExpectColumnValuesToBeBetween(column="chars", min_value=min_chars, max_value=max_chars)])
    return _outcome(success, summaries, f"every text has {min_chars}-{max_chars} characters", "texts outside the length bounds")


def language_shares(langs: pd.DataFrame | pa.ChunkedArray | pa.Array, minimums: dict[str, float]) -> pd.DataFrame:
    """Share of each language of `minimums` among the records: `langs` is a frame with a `lang`
    column or the lang column in Arrow."""
    import pyarrow.compute as pc

    if isinstance(langs, pd.DataFrame):
        counts, total = langs["lang"].value_counts().to_dict(), len(langs)
    else:
        pairs = pc.value_counts(langs)
        counts, total = dict(zip(pairs.field("values").to_pylist(), pairs.field("counts").to_pylist())), len(langs)
    total = max(total, 1)
    return pd.DataFrame(
        [{"lang": lang, "share": float(counts.get(lang, 0)) / total, "min_share": float(minimum)} for lang, minimum in sorted(minimums.items())]
    )


def check_language_mix(langs: pd.DataFrame | pa.ChunkedArray | pa.Array, minimums: dict[str, float]) -> GateOutcome:
    import great_expectations.expectations as gxe

    shares = language_shares(langs, minimums)
    success, summaries = validate_frame(shares, [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="share", column_B="min_share", or_equal=True),
    ])
    metadata_shares = {row.lang: round(row.share, 4) for row in shares.itertuples()}
    outcome = _outcome(success, summaries, "every language at or above its minimum share", f"a language below its minimum share: {metadata_shares}")
    outcome.metadata["shares"] = metadata_shares
    return outcome


def check_counts_add_up(stats: dict, cleaned_rows: int, rejected_rows: int, quarantine_records: int) -> GateOutcome:
    """stats.json's input = kept + rejected + quarantined, and each count equals what its file
    holds: `cleaned_rows`, `rejected_rows` (Parquet rows) and `quarantine_records` (records
    quarantine.jsonl accounts for, `OutputReader.quarantine_records`)."""
    import great_expectations.expectations as gxe

    frame = pd.DataFrame([{
        "input_records": stats["input_records"],
        "accounted": stats["kept"] + stats["rejected"] + stats["quarantined"],
        "kept": stats["kept"], "cleaned_rows": cleaned_rows,
        "rejected": stats["rejected"], "rejected_rows": rejected_rows,
        "quarantined": stats["quarantined"], "quarantine_records": quarantine_records,
    }])
    success, summaries = validate_frame(frame, [
        gxe.ExpectColumnPairValuesToBeEqual(column_A="input_records", column_B="accounted"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="kept", column_B="cleaned_rows"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="rejected", column_B="rejected_rows"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="quarantined", column_B="quarantine_records"),
    ])
    return _outcome(success, summaries, "input = kept + rejected + quarantined, and the files agree", "counts do not add up")


def parquet_output(path: Path):
    """A curation Parquet output as a `pyarrow.dataset.Dataset`: a single file (from
    `run_curation`) or a folder of part files (from the engine) reads the same way."""
    import pyarrow.dataset as ds

    return ds.dataset(Path(path), format="parquet")


@dataclass(frozen=True)
class OutputReader:
    """A curation output folder, read the way the gates need it: record batches of a few
    columns, one column in Arrow, row counts from the Parquet metadata."""

    out_dir: Path
    batch_rows: int = BATCH_ROWS

    def frames(self, columns: Iterable[str], name: str = "cleaned.parquet") -> Iterator[pd.DataFrame]:
        """Frames of at most `batch_rows` rows of those of `columns` the output has; one empty
        frame of them when it has no rows."""
        dataset = parquet_output(Path(self.out_dir) / name)
        columns = [column for column in columns if column in dataset.schema.names]
        empty = True
        for batch in dataset.to_batches(columns=columns, batch_size=self.batch_rows):
            if batch.num_rows:
                empty = False
                yield batch.to_pandas()
        if empty:
            yield dataset.schema.empty_table().select(columns).to_pandas()

    def column(self, column: str, name: str = "cleaned.parquet") -> pa.ChunkedArray:
        return parquet_output(Path(self.out_dir) / name).to_table(columns=[column]).column(column)

    def rows(self, name: str) -> int:
        return parquet_output(Path(self.out_dir) / name).count_rows()

    def stats(self) -> dict:
        return json.loads((Path(self.out_dir) / "stats.json").read_text(encoding="utf-8"))

    def quarantine_records(self) -> int:
        """The input records quarantine.jsonl accounts for: one a line, but a summary line
        (\"... and N more quarantined\") stands for its `count`."""
        with open(Path(self.out_dir) / "quarantine.jsonl", encoding="utf-8") as handle:
            return sum(int(json.loads(line).get("count", 1)) for line in handle if line.strip())
