"""The corpus-wide deduplication's keys, held by hash partition instead of whole in memory.

The decision (`dedup.decide_duplicates`) groups records by id, by exact key and by LSH band
hash, and verifies candidate pairs grouped by anchor. Each grouping only ever compares rows
with the same key, so the rows can be split by a hash of that key and each split decided on
its own: the external hash partitioning that a MapReduce or Spark shuffle does, and that NeMo
Curator's and Data-Juicer's distributed MinHash deduplication do across workers. Here it is
done across time on one driver, so its memory stays within a budget whatever the corpus size.

Rows arrive in batches in any order. Each kind of row (`SortedRuns`) carries a `bucket`
column, one of FINE_BUCKETS values from a hash of the grouping key; buffered rows are sorted
by bucket and written as one Parquet *run* per flush (in memory when there is no folder).
Reading a contiguous range of buckets reads that range from every run (Parquet row-group
statistics skip the rest), and `ranges` cuts the buckets into ranges of at most a given
number of rows, from the per-bucket counts kept while writing.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Hash buckets a kind of row is split into. A range of them is the unit of work, so this
#: bounds how finely the rows can be split: 4,096 ranges of about 50,000 band rows each at a
#: billion band rows (62 million records at 16 bands).
_BUCKET_BITS = 12
FINE_BUCKETS = 1 << _BUCKET_BITS
#: Rows of a run's row groups: small enough that reading a narrow range of buckets skips most
#: of a run, large enough that row-group metadata stays small.
RUN_ROW_GROUP = 65_536
#: Fibonacci hashing's multiplier (2**64 / golden ratio): spreads structured keys (order keys
#: are unit << 40 | position) evenly over the buckets.
_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)


def bucket_of(keys: np.ndarray) -> np.ndarray:
    """int32 bucket in [0, FINE_BUCKETS) of each uint64 (or int64) key (n,): the top bits of
    the key times the Fibonacci multiplier, modulo 2**64."""
    with np.errstate(over="ignore"):
        mixed = np.asarray(keys).astype(np.uint64) * _FIBONACCI
    return (mixed >> np.uint64(64 - _BUCKET_BITS)).astype(np.int32)


class SortedRuns:
    """Rows of one schema with an int32 `bucket` column, appended in batches, read back by
    bucket range.

    Runs (one per flush of about `flush_bytes` of buffered rows) stay in memory while they
    hold at most `memory_bytes` together; past that, every run goes to `folder` as a Parquet
    file, so a small corpus never touches the disk and a large one holds one buffer. With no
    folder, everything stays in memory. Raises OSError when the folder cannot be written.
    """

    def __init__(self, schema: pa.Schema, folder: Path | None = None, flush_bytes: int = 32 * 1024 * 1024,
                 memory_bytes: int = 0) -> None:
        if schema.field("bucket").type != pa.int32():
            raise ValueError("a SortedRuns schema needs an int32 'bucket' column")
        self.schema = schema
        self.folder = folder
        self.flush_bytes = flush_bytes
        self.memory_bytes = memory_bytes
        self._held_bytes = 0
        #: Rows per bucket, over every run.
        self.counts = np.zeros(FINE_BUCKETS, dtype=np.int64)
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self._runs: list[pa.Table | Path] = []
        #: After `ranges` split on-disk runs: each range's own file (None: no rows).
        self._range_files: dict[tuple[int, int], Path | None] = {}

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def append(self, table: pa.Table) -> None:
        """Add rows (`schema`'s columns)."""
        if not table.num_rows:
            return
        table = table.select(self.schema.names).cast(self.schema)
        self.counts += np.bincount(table.column("bucket").to_numpy(), minlength=FINE_BUCKETS)
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        if self._pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one run, sorted by bucket."""
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        # Buckets fit in 16 bits, for which numpy's stable sort is a radix sort.
        table = table.take(np.argsort(table.column("bucket").to_numpy().astype(np.int16), kind="stable"))
        self._pending, self._pending_bytes = [], 0
        self._runs.append(table.combine_chunks())
        self._held_bytes += table.nbytes
        if self.folder is not None and self._held_bytes > self.memory_bytes:
            self._runs = [self._written(run, index) if isinstance(run, pa.Table) else run for index, run in enumerate(self._runs)]
            self._held_bytes = 0

    def _written(self, run: pa.Table, index: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"run-{index:06d}.parquet"
        pq.write_table(run, path, row_group_size=RUN_ROW_GROUP, compression="lz4")
        return path

    def read(self, low: int, high: int) -> pa.Table:
        """Every row whose bucket is in [low, high), from every run (in no particular order)."""
        self.flush()
        if (low, high) in self._range_files:
            path = self._range_files[low, high]
            return self.schema.empty_table() if path is None else pq.read_table(path, schema=self.schema)
        pieces = []
        for run in self._runs:
            if isinstance(run, Path):
                pieces.append(pq.read_table(run, filters=[("bucket", ">=", low), ("bucket", "<", high)], schema=self.schema))
            else:
                buckets = run.column("bucket").to_numpy()
                start, end = np.searchsorted(buckets, [low, high])
                pieces.append(run.slice(start, end - start))
        return pa.concat_tables(pieces) if pieces else self.schema.empty_table()

    def ranges(self, max_rows: int | None) -> list[tuple[int, int]]:
        """Contiguous bucket ranges [low, high) covering every bucket, each holding at most
        `max_rows` rows unless one bucket alone holds more; None: one range."""
        if max_rows is None or self.rows <= max_rows:
            return [(0, FINE_BUCKETS)]
        bounds, held = [0], 0
        for bucket, count in enumerate(self.counts.tolist()):
            if held and held + count > max_rows:
                bounds.append(bucket)
                held = 0
            held += count
        bounds.append(FINE_BUCKETS)
        ranges = list(itertools.pairwise(bounds))
        self._split(ranges)
        return ranges

    def _split(self, ranges: list[tuple[int, int]]) -> None:
        """Rewrite on-disk runs as one file per range, in one pass over the runs: reading each
        range from every run costs runs x ranges reads, which grows with the square of the
        corpus (a k-way split, as an external sort's merge phase makes one read per run).
        Memory: one run (`flush_bytes`) at a time."""
        self.flush()
        on_disk = [run for run in self._runs if isinstance(run, Path)]
        if len(on_disk) < 2 or all(key in self._range_files for key in ranges):
            return
        folder = self.folder / f"ranges-{len(ranges)}"
        folder.mkdir(parents=True, exist_ok=True)
        writers: dict[int, pq.ParquetWriter] = {}
        lows = [low for low, _ in ranges] + [FINE_BUCKETS]
        try:
            for run in self._runs:
                table = pq.read_table(run, schema=self.schema) if isinstance(run, Path) else run
                cuts = np.searchsorted(table.column("bucket").to_numpy(), lows)
                for index, (start, end) in enumerate(itertools.pairwise(cuts.tolist())):
                    if end > start:
                        if index not in writers:
                            writers[index] = pq.ParquetWriter(folder / f"range-{index:06d}.parquet", self.schema, compression="lz4")
                        writers[index].write_table(table.slice(start, end - start))
        finally:
            for writer in writers.values():
                writer.close()
        for run in on_disk:
            run.unlink()
        self._runs = [folder / f"range-{index:06d}.parquet" for index in sorted(writers)]
        self._range_files = {ranges[index]: folder / f"range-{index:06d}.parquet" for index in writers}
        self._range_files.update({key: None for key in ranges if key not in self._range_files})
