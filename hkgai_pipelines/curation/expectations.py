"""Great Expectations (GX Core 1.x) gates on the curated corpus, one function per property.

Each function validates a pandas frame against a small expectation suite in an ephemeral GX
context and returns a `GateOutcome`; the Dagster asset checks turn those into blocking
`AssetCheckResult`s, and tests call them directly on planted violations.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

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


def _outcome(success: bool, summaries: list[dict], ok: str, failed: str) -> GateOutcome:
    return GateOutcome(success, ok if success else failed, {"gx_results": summaries})


def check_ids_unique(cleaned: pd.DataFrame) -> GateOutcome:
    import great_expectations.expectations as gxe

    success, summaries = validate_frame(cleaned[["id"]], [gxe.ExpectColumnValuesToBeUnique(column="id"), gxe.ExpectColumnValuesToNotBeNull(column="id")])
    return _outcome(success, summaries, "every id is unique", "duplicate or missing ids")


def check_text_non_empty(cleaned: pd.DataFrame) -> GateOutcome:
    import great_expectations.expectations as gxe

    frame = cleaned[["text"]].assign(stripped=cleaned["text"].fillna("").str.strip())
    success, summaries = validate_frame(frame, [
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="stripped", min_value=1),
    ])
    return _outcome(success, summaries, "no empty text", "empty or null text")


def check_lang_allowed(cleaned: pd.DataFrame, allowed: list[str]) -> GateOutcome:
    import great_expectations.expectations as gxe

    success, summaries = validate_frame(cleaned[["lang"]], [gxe.ExpectColumnValuesToBeInSet(column="lang", value_set=list(allowed))])
    return _outcome(success, summaries, f"every lang in {sorted(allowed)}", "unexpected language labels")


#: Every free-text column a curation output writes: PII in a page title or a crawled URI is
#: as much a leak as PII in the text.
WRITTEN_TEXT_COLUMNS = ("text", "original_text", "title", "locator")


def check_no_residual_pii(cleaned: pd.DataFrame, rejected: pd.DataFrame | None = None) -> GateOutcome:
    """No PII left in the kept nor the rejected records (both are written to the lake), in
    any of their `WRITTEN_TEXT_COLUMNS`.

    The detector is `pii_audit.audit_text`, built independently of the redactor, so a form
    the redactor misses is not missed here for the same reason. The offending findings (kind
    and value, at most five) are in the metadata for the reader of a failed gate.
    """
    import great_expectations.expectations as gxe

    texts = [value for column in WRITTEN_TEXT_COLUMNS if column in cleaned for value in cleaned[column].fillna("")]
    if rejected is not None:
        texts += [value for column in WRITTEN_TEXT_COLUMNS if column in rejected for value in rejected[column].fillna("")]
    findings = [audit_text(text) for text in texts]
    frame = pd.DataFrame({"residual_pii": [sum(f.certain for f in found) for found in findings]})
    success, summaries = validate_frame(frame, [gxe.ExpectColumnValuesToBeBetween(column="residual_pii", min_value=0, max_value=0)])
    outcome = _outcome(success, summaries, "no PII left in kept or rejected text (independent detector)", "PII left in the text")
    outcome.metadata["findings"] = [f"{f.kind}: {f.value}" for found in findings for f in found if f.certain][:5]
    # Bare eight-digit numbers a plan allows: listed for a reader, not blocking.
    possible = [f.value for found in findings for f in found if not f.certain]
    outcome.metadata["possible_phone_numbers"] = {"count": len(possible), "examples": possible[:5]}
    return outcome


def check_length_bounds(cleaned: pd.DataFrame, min_chars: int, max_chars: int) -> GateOutcome:
    import great_expectations.expectations as gxe

    frame = pd.DataFrame({"chars": cleaned["text"].fillna("").map(lambda t: sum(1 for ch in t if not ch.isspace()))})
    success, summaries = validate_frame(frame, [gxe.ExpectColumnValuesToBeBetween(column="chars", min_value=min_chars, max_value=max_chars)])
    return _outcome(success, summaries, f"every text has {min_chars}-{max_chars} characters", "texts outside the length bounds")


def language_shares(cleaned: pd.DataFrame, minimums: dict[str, float]) -> pd.DataFrame:
    total = max(len(cleaned), 1)
    counts = cleaned["lang"].value_counts()
    return pd.DataFrame(
        [{"lang": lang, "share": float(counts.get(lang, 0)) / total, "min_share": float(minimum)} for lang, minimum in sorted(minimums.items())]
    )


def check_language_mix(cleaned: pd.DataFrame, minimums: dict[str, float]) -> GateOutcome:
    import great_expectations.expectations as gxe

    shares = language_shares(cleaned, minimums)
    success, summaries = validate_frame(shares, [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="share", column_B="min_share", or_equal=True),
    ])
    metadata_shares = {row.lang: round(row.share, 4) for row in shares.itertuples()}
    outcome = _outcome(success, summaries, "every language at or above its minimum share", f"a language below its minimum share: {metadata_shares}")
    outcome.metadata["shares"] = metadata_shares
    return outcome


def check_counts_add_up(stats: dict, cleaned_rows: int, rejected_rows: int, quarantine_rows: int) -> GateOutcome:
    import great_expectations.expectations as gxe

    frame = pd.DataFrame([{
        "input_records": stats["input_records"],
        "accounted": stats["kept"] + stats["rejected"] + stats["quarantined"],
        "kept": stats["kept"], "cleaned_rows": cleaned_rows,
        "rejected": stats["rejected"], "rejected_rows": rejected_rows,
        "quarantined": stats["quarantined"], "quarantine_rows": quarantine_rows,
    }])
    success, summaries = validate_frame(frame, [
        gxe.ExpectColumnPairValuesToBeEqual(column_A="input_records", column_B="accounted"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="kept", column_B="cleaned_rows"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="rejected", column_B="rejected_rows"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="quarantined", column_B="quarantine_rows"),
    ])
    return _outcome(success, summaries, "input = kept + rejected + quarantined, and the files agree", "counts do not add up")


def parquet_output(path: Path):
    """A curation Parquet output as a `pyarrow.dataset.Dataset`: a single file (from
    `run_curation`) or a folder of part files (from the engine) reads the same way."""
    import pyarrow.dataset as ds

    return ds.dataset(Path(path), format="parquet")


def load_rejected_text(out_dir: Path) -> pd.DataFrame:
    """The `WRITTEN_TEXT_COLUMNS` a curation output's rejected.parquet has."""
    import pyarrow.parquet as pq

    path = Path(out_dir) / "rejected.parquet"
    columns = [c for c in WRITTEN_TEXT_COLUMNS if c in parquet_output(path).schema.names]
    return pq.read_table(path, columns=columns).to_pandas()


def load_outputs(out_dir: Path) -> tuple[pd.DataFrame, dict, int, int]:
    """cleaned frame, stats, rejected row count, quarantine row count of a curation output folder."""
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    cleaned = pq.read_table(out_dir / "cleaned.parquet").to_pandas()
    stats = json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))
    rejected_rows = parquet_output(out_dir / "rejected.parquet").count_rows()
    with open(out_dir / "quarantine.jsonl", encoding="utf-8") as handle:
        quarantine_rows = sum(1 for line in handle if line.strip())
    return cleaned, stats, rejected_rows, quarantine_rows
