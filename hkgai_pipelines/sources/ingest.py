"""Ingest one source into the lake: `raw/<source>.parquet` plus its quarantine file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from hkgai_pipelines.sources.catalog import SourceSpec
from hkgai_pipelines.sources.lake import write_quarantine, write_raw_records
from hkgai_pipelines.sources.readers import read_source
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord


@dataclass(frozen=True)
class IngestResult:
    source: str
    path: Path
    quarantine_path: Path
    table: pa.Table
    quarantined: int
    content_hash: str

    @property
    def records(self) -> int:
        return self.table.num_rows

    @property
    def text_bytes(self) -> int:
        return sum(len(t.encode("utf-8")) for t in self.table.column("text").to_pylist())


def raw_paths(lake_dir: Path, source: str) -> tuple[Path, Path]:
    raw = Path(lake_dir) / "raw"
    return raw / f"{source}.parquet", raw / f"{source}.quarantine.jsonl"


def content_hash(ids: list[str]) -> str:
    """Ids already hash the content, so hashing the sorted ids fingerprints a set of records
    (a raw partition, the knowledge chunks, a dataset): the asset's data version."""
    digest = hashlib.sha256()
    for record_id in sorted(ids):
        digest.update(record_id.encode())
    return digest.hexdigest()[:16]


def ingest_source(spec: SourceSpec, lake_dir: Path) -> IngestResult:
    records: list[RawRecord] = []
    quarantined: list[QuarantineRecord] = []
    for item in read_source(spec):
        (records if isinstance(item, RawRecord) else quarantined).append(item)
    path, quarantine_path = raw_paths(lake_dir, spec.name)
    table = write_raw_records(records, path)
    write_quarantine(quarantined, quarantine_path)
    return IngestResult(
        source=spec.name,
        path=path,
        quarantine_path=quarantine_path,
        table=table,
        # A summary record stands for the rest of a file's quarantine: count what it stands for.
        quarantined=sum(record.count for record in quarantined),
        content_hash=content_hash(table.column("id").to_pylist()),
    )


def iter_raw_lake(lake_dir: Path, sources: list[str]):
    """Every raw record and raw quarantine record of the given sources, in catalog order (each
    partition's quarantine first): the units of `curation.inputs.lake_units`, one after the
    other. Raises FileNotFoundError for a partition that is not materialized."""
    from hkgai_pipelines.curation.inputs import iter_units, lake_units

    yield from iter_units(lake_units(lake_dir, sources))
