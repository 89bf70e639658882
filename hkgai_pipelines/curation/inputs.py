"""The inputs of a curation run as a list of independently readable units, in a stable order.

A unit is one file (read with `sources.files.read_file`, which never raises for what the file
holds), one raw lake partition's quarantine file, or one path that is not read at all (a FIFO,
a link leaving its folder: a single quarantine record naming it). Units are small, picklable
and carry absolute paths, so any worker of a Ray cluster can read one; reading them one after
the other yields exactly what `read_files` and `iter_raw_lake` yield.

Order keys: every item gets `order_key(unit.index, position in the unit)`, an int64 that sorts
items in the stable order of the whole input (sources in catalog order, then files in sorted
path order, then records in file order). Deduplication keeps the first record of a cluster in
that order, whichever worker read it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from hkgai_pipelines.sources.files import DEFAULT_MAX_RECORD_BYTES, collect_inputs, read_file
from hkgai_pipelines.sources.records import FileItem, QuarantineRecord

#: Low bits of an order key that number the items of one unit: 2**40 (a trillion) items per
#: file; the remaining 23 bits number up to 8 million units.
ITEM_BITS = 40
MAX_UNITS = 1 << (63 - ITEM_BITS)


def order_key(unit_index: int, position: int) -> int:
    """The order key of the `position`-th item of unit `unit_index`. Raises ValueError past
    the limits of ITEM_BITS."""
    if not 0 <= unit_index < MAX_UNITS or not 0 <= position < (1 << ITEM_BITS):
        raise ValueError(f"order key out of range: unit {unit_index}, item {position}")
    return (unit_index << ITEM_BITS) | position


@dataclass(frozen=True)
class InputUnit:
    """One unit of input; `kind` is "file", "lake_quarantine" or "unreadable"."""

    index: int
    kind: str
    path: str
    name: str
    source: str
    licence: str = ""
    root: str | None = None
    scope_ids: bool = True
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    problem: str | None = None

    def items(self) -> Iterator[FileItem]:
        """The unit's records and quarantine records, in file order."""
        if self.kind == "unreadable":
            yield QuarantineRecord(self.name, None, self.problem or "not read", self.source)
        elif self.kind == "lake_quarantine":
            from hkgai_pipelines.sources.lake import read_quarantine

            yield from read_quarantine(Path(self.path))
        else:
            yield from read_file(
                Path(self.path), source=self.source, licence=self.licence, root=Path(self.root) if self.root else None,
                max_record_bytes=self.max_record_bytes, scope_ids=self.scope_ids, name=self.name or None,
            )

    def to_row(self) -> dict:
        return asdict(self)


def file_units(
    paths: Iterable[Path], *, source: str, licence: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    exclude: Iterable[Path] = (),
) -> list[InputUnit]:
    """Units of the files and folders given to `hkgai curate`, as `read_files` reads them.
    Raises FileNotFoundError for a given path that does not exist."""
    units = []
    for index, entry in enumerate(collect_inputs(paths, exclude=exclude)):
        kind = "unreadable" if entry.problem is not None else "file"
        units.append(InputUnit(index, kind, os.path.abspath(entry.path), entry.name, source, licence,
                               max_record_bytes=max_record_bytes, problem=entry.problem))
    return units


def lake_units(lake_dir: Path, sources: list[str]) -> list[InputUnit]:
    """Units of the raw lake partitions of `sources`, in catalog order, as `iter_raw_lake`
    reads them (each partition's quarantine file first). Raises FileNotFoundError for a
    partition that is not materialized."""
    from hkgai_pipelines.sources.ingest import raw_paths

    lake_dir = Path(os.path.abspath(lake_dir))
    units = []
    for source in sources:
        path, quarantine_path = raw_paths(lake_dir, source)
        if not path.exists():
            raise FileNotFoundError(f"raw partition {source!r} not materialized: {path} is missing")
        units.append(InputUnit(len(units), "lake_quarantine", str(quarantine_path), quarantine_path.name, source))
        # The lake's ids are final (already scoped to source and file when ingested): keep them.
        # No name: read_file names the partition relative to the lake, as iter_raw_lake does.
        units.append(InputUnit(len(units), "file", str(path), "", source, "", root=str(lake_dir), scope_ids=False))
    return units


def iter_units(units: Iterable[InputUnit]) -> Iterator[FileItem]:
    """Every item of the units, one unit after the other (the single-process reading)."""
    for unit in units:
        yield from unit.items()
