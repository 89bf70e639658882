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
#: bounds how finely the rows can be split: at a billion band rows (62 million records at 16
#: bands) a bucket holds about 244,000 rows, and a range at least one bucket.
_BUCKET_BITS = 12
FINE_BUCKETS = 1 << _BUCKET_BITS
#: Rows of a run's row groups: small enough that reading a narrow range of buckets skips most
#: of a run, large enough that row-group metadata stays small.
RUN_ROW_GROUP = 65_536
#: Ranges one pass of `SortedRuns.split` writes at once, and the rows each holds before writing
#: them: 64 open writers and at most 64 MiB of buffered rows. Nothing is dictionary-encoded
#: (`use_dictionary=False`): hashes and order keys are all distinct, and an open writer kept
#: its dictionary encoder's buffers, about 6.8 MiB after a 1 MiB row group (432 MiB for 64
#: writers; 0.9 MiB each without).
SPLIT_FAN_OUT = 64
SPLIT_BUFFER_BYTES = 1024 * 1024
#: Reads (runs x ranges) up to which the runs are read as they are: a split rewrites every
#: run, which costs more than a few hundred pruned reads (0.5 s against none at 10 MiB of input).
SPLIT_MIN_READS = 256
#: Fibonacci hashing's multiplier (2**64 / golden ratio): spreads structured keys (order keys
#: are unit << 40 | position) evenly over the buckets.
_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)


def bucket_of(keys: np.ndarray) -> np.ndarray:
    """int32 bucket in [0, FINE_BUCKETS) of each uint64 (or int64) key (n,): the top bits of
    the key times the Fibonacci multiplier, modulo 2**64."""
    return (fibonacci_mix(keys) >> np.uint64(64 - _BUCKET_BITS)).astype(np.int32)


def fibonacci_mix(keys: np.ndarray) -> np.ndarray:
    """uint64 keys (n,) times the Fibonacci multiplier modulo 2**64: the high bits of the
    product are spread evenly whatever the keys' structure (Knuth, TAOCP vol. 3, 6.4)."""
    with np.errstate(over="ignore"):
        return np.asarray(keys).astype(np.uint64) * _FIBONACCI


class SortedRuns:
    """Rows of one schema with an int32 `bucket` column, appended in batches, read back by
    bucket range.

    Runs (one per flush of about `flush_bytes` of buffered rows) stay in memory while they
    hold at most `memory_bytes` together; the first run past that sends every run to `folder`
    as a Parquet file, and every later run is written as it is made. So a small corpus never
    touches the disk and a large one holds one buffer. With no folder, everything stays in
    memory. Raises OSError when the folder cannot be written.
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
        self._spilled = False
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
        self._range_files = {}  # a split covers the rows it saw, not these
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
        if self.folder is not None and (self._spilled or self._held_bytes > self.memory_bytes):
            self._runs = [self._written(run, index) if isinstance(run, pa.Table) else run for index, run in enumerate(self._runs)]
            self._held_bytes, self._spilled = 0, True

    def _written(self, run: pa.Table, index: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"run-{index:06d}.parquet"
        # Snappy: a third of lz4's read time here, about its size (hashes do not compress).
        pq.write_table(run, path, row_group_size=RUN_ROW_GROUP, compression="snappy", use_dictionary=False)
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

    def source(self, low: int, high: int) -> str | pa.Table:
        """The rows of `read(low, high)` as the path of the range's own file, when `split`
        wrote one (another process can then read it without the rows passing through this
        one), else as the rows."""
        self.flush()
        path = self._range_files.get((low, high))
        return str(path) if path is not None else self.read(low, high)

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
        self.split(ranges)
        return ranges

    def split(self, ranges: list[tuple[int, int]]) -> None:
        """Rewrite on-disk runs as one file per range: reading each range from every run costs
        runs x ranges reads, which grows with the square of the corpus. Instead, each pass over
        the runs writes SPLIT_FAN_OUT ranges' files (an external sort's bounded-fan-out merge),
        so the runs are read ceil(ranges / SPLIT_FAN_OUT) times. Memory: one run, and per open
        range up to SPLIT_BUFFER_BYTES of rows before they are written as a row group."""
        self.flush()
        on_disk = [run for run in self._runs if isinstance(run, Path)]
        if (len(on_disk) * len(ranges) <= SPLIT_MIN_READS or len(on_disk) < len(self._runs)
                or all(key in self._range_files for key in ranges)):
            return
        folder = self.folder / f"ranges-{len(ranges)}-{len(on_disk)}"
        folder.mkdir(parents=True, exist_ok=True)
        lows = [low for low, _ in ranges] + [FINE_BUCKETS]
        files: dict[int, Path] = {}
        for first in range(0, len(ranges), SPLIT_FAN_OUT):
            group = range(first, min(first + SPLIT_FAN_OUT, len(ranges)))
            writers: dict[int, pq.ParquetWriter] = {}
            pending: dict[int, list[pa.Table]] = {index: [] for index in group}

            def write(index: int) -> None:
                if index not in writers:
                    files[index] = folder / f"range-{index:06d}.parquet"
                    writers[index] = pq.ParquetWriter(files[index], self.schema, compression="snappy", use_dictionary=False)
                writers[index].write_table(pa.concat_tables(pending[index]).combine_chunks())
                pending[index] = []

            try:
                for run in self._runs:
                    # One chunk per column: each range's `take` below then gathers from
                    # contiguous arrays (a run file reads back as one chunk per row group).
                    table = (pq.read_table(run, schema=self.schema) if isinstance(run, Path) else run).combine_chunks()
                    buckets = table.column("bucket").to_numpy()
                    # Runs from an earlier split are not sorted by bucket.
                    by_bucket = np.argsort(buckets.astype(np.int16), kind="stable")
                    cuts = np.searchsorted(buckets[by_bucket], lows[group.start:group.stop + 1])
                    for index, start, end in zip(group, cuts[:-1].tolist(), cuts[1:].tolist()):
                        if end > start:
                            # `take` copies the range's rows. A slice (or combine_chunks of
                            # one, which does not copy a single chunk) would keep the whole run
                            # alive until the range is written: at 1 GiB of input, a range
                            # that never filled its buffer held a slice of each of 113 runs,
                            # and the split's peak was 1.1 GB above the steps'.
                            pending[index].append(table.take(pa.array(by_bucket[start:end])))
                            if sum(piece.nbytes for piece in pending[index]) >= SPLIT_BUFFER_BYTES:
                                write(index)
                for index in group:
                    if pending[index]:
                        write(index)
            finally:
                for writer in writers.values():
                    writer.close()
        for run in on_disk:
            run.unlink()
        self._runs = [files[index] for index in sorted(files)]
        self._range_files = {key: files.get(index) for index, key in enumerate(ranges)}
