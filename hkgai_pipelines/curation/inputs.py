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

Tasks (`plan_tasks`): a large JSONL or Parquet file is cut into slices of about `TASK_BYTES`
(`sources.files.plan_spans`), so that one big file still keeps every worker busy, and small
consecutive units are grouped into one task of about as many bytes. A task is read where its
steps run (the engine's tasks read their own slices: handing records from reading tasks to
steps tasks through Ray's object store cost a fifth of the CPU time of a 2-worker run). The plan
depends on the inputs alone, never on the worker count, so every executor cuts the same part
files. In a sliced unit the position is (slice index << SLICE_ITEM_BITS) | the item's place in
its slice, which sorts as the item's place in the file; an unsliced unit's is the item's place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from hkgai_pipelines.sources.files import DEFAULT_MAX_RECORD_BYTES, Span, collect_inputs, plan_spans, read_file
from hkgai_pipelines.sources.records import FileItem, QuarantineRecord

#: Low bits of an order key that number the items of one unit: 2**40 (a trillion) items per
#: file; the remaining 23 bits number up to 8 million units.
ITEM_BITS = 40
MAX_UNITS = 1 << (63 - ITEM_BITS)

#: Low bits of a sliced unit's position that number the items of one slice: 16.7 million, more
#: than a slice holds (a JSONL item is a non-blank line of at least 2 bytes, and a slice is
#: TASK_BYTES but for its last line, up to files of 64 GiB; a Parquet slice has fewer rows);
#: the other 16 bits of ITEM_BITS number up to 65,536 slices of one file.
SLICE_ITEM_BITS = 24
MAX_SLICES = 1 << (ITEM_BITS - SLICE_ITEM_BITS)

#: Bytes of input a task reads (a slice of a large file, or small files together): 1 MiB is
#: 3-4 s of steps on one core for the benchmark corpus's short records, so the last tasks
#: leave little idle time, and about 1 ms of planning and 10 ms of Ray's scheduling a task.
TASK_BYTES = 1024 * 1024


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

    def items(self, span: Span | None = None) -> Iterator[FileItem]:
        """The unit's records and quarantine records, in file order (of `span` alone: a file)."""
        if self.kind == "unreadable":
            yield QuarantineRecord(self.name, None, self.problem or "not read", self.source)
        elif self.kind == "lake_quarantine":
            from hkgai_pipelines.sources.lake import read_quarantine

            yield from read_quarantine(Path(self.path))
        else:
            yield from read_file(
                Path(self.path), source=self.source, licence=self.licence, root=Path(self.root) if self.root else None,
                max_record_bytes=self.max_record_bytes, scope_ids=self.scope_ids, name=self.name or None, span=span,
            )

    def size(self) -> int:
        """Bytes of the unit's file (0 when it cannot be read: it is one quarantine record)."""
        if self.kind == "unreadable":
            return 0
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InputSlice:
    """A unit whole (`span` None) or one slice of it (`index` among the unit's slices); `size`
    is its bytes (for Parquet rows, its share of the file's bytes), for grouping."""

    unit: InputUnit
    index: int = 0
    span: Span | None = None
    size: int = 0

    def numbered_items(self) -> Iterator[tuple[int, FileItem]]:
        """(order key, item) of the slice's items, in file order. Raises ValueError for a
        slice of more than 2**SLICE_ITEM_BITS items."""
        base = self.index << SLICE_ITEM_BITS  # 0 for a whole unit, whose items number on past it
        for position, item in enumerate(self.unit.items(self.span)):
            if self.span is not None and position >> SLICE_ITEM_BITS:
                raise ValueError(f"slice {self.index} of {self.unit.name or self.unit.path} holds over {1 << SLICE_ITEM_BITS} items")
            yield order_key(self.unit.index, base | position), item

    def to_row(self) -> dict:
        return {"unit": self.unit.to_row(), "index": self.index, "span": None if self.span is None else asdict(self.span),
                "size": self.size}

    @classmethod
    def from_row(cls, row: dict) -> "InputSlice":
        return cls(InputUnit(**row["unit"]), row["index"], None if row["span"] is None else Span(**row["span"]), row["size"])


def unit_slices(unit: InputUnit, target_bytes: int) -> list[InputSlice]:
    """The slices of one unit: several for a JSONL or Parquet file over `target_bytes` that can
    be read in spans, else the whole unit. Depends on the unit's file alone."""
    size = unit.size()
    spans = plan_spans(Path(unit.path), target_bytes, MAX_SLICES) if unit.kind == "file" and size > target_bytes else None
    if not spans:
        return [InputSlice(unit, 0, None, size)]
    if spans[0].unit == "bytes":
        return [InputSlice(unit, index, span, span.stop - span.start) for index, span in enumerate(spans)]
    rows = spans[-1].stop
    return [InputSlice(unit, index, span, size * (span.stop - span.start) // rows) for index, span in enumerate(spans)]


#: Finds the slices of each of the units it is given (those over the target size), in their
#: order: `(units, target_bytes) -> [unit_slices(unit, target_bytes) for unit in units]`.
SliceMapper = Callable[[list[InputUnit], int], Iterable[list[InputSlice]]]


def slice_here(units: list[InputUnit], target_bytes: int) -> list[list[InputSlice]]:
    """The default `SliceMapper`: one unit after the other, in this process."""
    return [unit_slices(unit, target_bytes) for unit in units]


def plan_tasks(units: Iterable[InputUnit], target_bytes: int | None = None,
               slice_units: SliceMapper = slice_here) -> list[list[InputSlice]]:
    """The units' slices (`unit_slices`) in input order, consecutive ones grouped into tasks
    of about `target_bytes` (default TASK_BYTES; a slice is never split; a task of several
    holds at most `target_bytes`). `slice_units` finds the slices of the files over
    `target_bytes`, the ones that may be cut (a JSONL file's cuts count its newlines, one read
    of the whole file: the engine does that in Ray tasks, one a file); a smaller unit is one
    slice. The plan does not depend on where the slices were found."""
    target_bytes = target_bytes or TASK_BYTES
    units = list(units)
    sizes = [unit.size() for unit in units]
    large = [index for index, (unit, size) in enumerate(zip(units, sizes)) if unit.kind == "file" and size > target_bytes]
    sliced = dict(zip(large, slice_units([units[index] for index in large], target_bytes)))
    tasks: list[list[InputSlice]] = []
    task: list[InputSlice] = []
    size = 0
    for index, unit in enumerate(units):
        for piece in sliced.get(index) or [InputSlice(unit, 0, None, sizes[index])]:
            if task and size + piece.size > target_bytes:
                tasks.append(task)
                task, size = [], 0
            task.append(piece)
            size += piece.size
    if task:
        tasks.append(task)
    return tasks


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
