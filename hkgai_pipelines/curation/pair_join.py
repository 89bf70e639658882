"""Verifying candidate pairs by a join: each paired record is read and hashed once per run.

The corpus-wide decision (`dedup.decide_duplicates`) verifies its LSH candidate pairs one
range of buckets at a time (of candidate components, `dedup.routed_by_component`), and a pair needs the MinHash signatures of both records,
which are not kept (128 values, 512 bytes a record: more than the text of most records).
Looking the records up in the part files range by range reads every part file once per
range: at 1 GiB of input the decision had read 99 GB of part files after 55 minutes, the
reads growing with the square of the corpus. This verifier does what a database's sort-merge
join or a MapReduce shuffle does instead, in three steps:

1. `expect`: before any range is verified, each range names its records. The (part group,
   order key, range) rows are spilled sorted by part group (`keystore.SortedRuns`), where a
   group is a run of consecutive part files (part files hold consecutive order keys).
2. `route`, on the first verification: one pass over the part files that hold a named
   record, in order. Each named record's text is read once and its *payload* (the text when
   its UTF-8 is no longer than a signature, else its signature, computed once) is written
   once for each range that named it, spilled by range.
3. each verification reads its own range's payloads, hashes the texts among them into
   rensa sketches and compares its pairs (`range_similarities`). Ranges are independent, so `map` runs several at
   once where a `CompareMapper` allows (Ray tasks in the engine, each reading its range's
   spill file itself), and hands the similarities back in range order.

What is read and written is linear in the pairs (about 20 million at 1 GiB of this project's
benchmark corpus, half of which is near-duplicates), and each part file is read once.
Memory: one range of named records, one part file, one range's payloads, their sketches
(about 770 bytes a record in rensa; per comparing task: a parallel `compare` mapper holds
one range in each task) and the Python strings of a slice of their texts
(`dedup.KeyStore.max_pairs` bounds a range's pairs), and the spill buffers. A range of
45,855 pairs of the benchmark corpus peaked 35-37 MiB above its payloads (about 830 bytes a
pair); taking numpy signatures out of rensa's matrix had peaked at 80-89 MiB.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hkgai_pipelines.curation.dedup import DIGEST_CHUNK, MinHasher, pair_similarities, sketch_similarities
from hkgai_pipelines.curation.keystore import FINE_BUCKETS, SortedRuns

logger = logging.getLogger(__name__)

#: (part group, order key, range) of every record a range will verify.
NAMED_ROWS = pa.schema([("bucket", pa.int32()), ("order", pa.int64()), ("range", pa.int32())])
#: What a range gets of each of its records: the text or the signature (the other is null).
PAYLOAD_ROWS = pa.schema([("bucket", pa.int32()), ("order", pa.int64()), ("text", pa.string()), ("signature", pa.binary())])
#: Pairs compared at once: bounds the two gathered signature arrays (64 MiB at 128 values).
COMPARE_SLICE_PAIRS = 65_536

#: One routing job: a part file, the order keys named in it (sorted, repeated once per range
#: that named them) and those ranges.
RouteJob = tuple[str, np.ndarray, np.ndarray]
#: Runs routing jobs (`payload_rows` with the hasher) and yields their tables in job order:
#: `map` in this process, Ray tasks on a cluster (`engine._run_on_ray`).
RouteMapper = Callable[[Iterable[RouteJob], MinHasher], Iterator[pa.Table]]

#: One comparing job: a range's payloads (the path of its own spill file, which a process
#: elsewhere can open, or the rows themselves) and its pairs (anchor, member order keys).
CompareJob = tuple[str | pa.Table, np.ndarray, np.ndarray]
#: Runs comparing jobs (`range_similarities` with the hasher) and yields their similarities
#: in job order: in this process, or Ray tasks (`engine._run_on_ray`).
CompareMapper = Callable[[Iterable[CompareJob], MinHasher], Iterator[np.ndarray]]


def local_mapper(jobs: Iterable[RouteJob], hasher: MinHasher) -> Iterator[pa.Table]:
    """`RouteMapper` in this process, one part file at a time."""
    return (payload_rows(part, orders, ranges, hasher) for part, orders, ranges in jobs)


def local_compare(jobs: Iterable[CompareJob], hasher: MinHasher) -> Iterator[np.ndarray]:
    """`CompareMapper` in this process, one range at a time."""
    return (range_similarities(payloads, anchor, member, hasher) for payloads, anchor, member in jobs)


def part_first_order(part: str) -> int:
    """The first order key of a part file, from its name (`engine.part_name`)."""
    return int(Path(part).stem.split("-")[1])


class JoinedPairVerifier:
    """A `dedup.PairVerifier` over part files with `expect` (see the module docstring).

    `parts`: every part file of the run, in input order (named by their first order key).
    `folder`: where the named rows and payloads are spilled (None: kept in memory).
    `memory_bytes`: rows each spill store keeps in memory before spilling; `max_rows`: named
    rows routed at once. `mapper`: where routing runs (`local_mapper` by default); `compare`:
    where ranges are compared (`local_compare` by default).

    Calls: `expect(anchor, member)` once per range, then, for the same ranges in the same
    order, `verifier(anchor, member)` for each or `verifier.map(ranges)` for several at once.
    Raises ValueError when a verification asks for a record its `expect` did not name or that
    no part file holds, and RuntimeError when `expect` comes after a verification.
    """

    def __init__(self, parts: list[str], hasher: MinHasher, folder: Path | None = None, *, memory_bytes: int = 0,
                 flush_bytes: int = 32 * 1024 * 1024, max_rows: int | None = None, mapper: RouteMapper = local_mapper,
                 compare: CompareMapper = local_compare) -> None:
        self.parts = list(parts)
        self.hasher = hasher
        self.max_rows = max_rows
        self.mapper = mapper
        self.compare = compare
        self._firsts = np.array([part_first_order(part) for part in self.parts], dtype=np.int64)
        self._named = SortedRuns(NAMED_ROWS, None if folder is None else folder / "named", flush_bytes, memory_bytes)
        self._payloads = SortedRuns(PAYLOAD_ROWS, None if folder is None else folder / "payloads", flush_bytes, memory_bytes)
        self._expected = 0
        self._verified = 0
        self._routed = False
        #: Figures for the run's summary: distinct records routed, payload rows written.
        self.routed_records = 0
        self.payload_rows = 0

    def expect(self, anchor: np.ndarray, member: np.ndarray) -> None:
        """Name the records of the next range's pairs (order keys (k,) int64 each)."""
        if self._routed:
            raise RuntimeError("expect() after a verification: every range must be named first")
        if self._expected >= FINE_BUCKETS:  # ranges are of the key store's buckets, so never
            raise ValueError(f"more than {FINE_BUCKETS} ranges named")
        records = np.unique(np.concatenate([np.asarray(anchor, np.int64), np.asarray(member, np.int64)]))
        self._named.append(pa.table({"bucket": self._group_of(records), "order": records,
                                     "range": np.full(len(records), self._expected, dtype=np.int32)}))
        self._expected += 1

    def __call__(self, anchor: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(anchor, member, similarity) of the next expected range's pairs."""
        return next(self.map([(anchor, member)]))

    def map(self, ranges: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(anchor, member, similarity) of each of the next expected ranges, in order; the
        `compare` mapper may compare several ranges at once. An empty range is answered here.
        Run it to its end: it takes ranges ahead of its answers (a parallel mapper a few, the
        local one the next non-empty range), so a caller that stops early and asks again has
        skipped the ranges taken but not answered (`__call__` takes one range, and one answer)."""
        if not self._routed:
            self._route()
        asked: deque[tuple[np.ndarray, np.ndarray]] = deque()

        def jobs() -> Iterator[CompareJob]:
            for anchor, member in ranges:
                index = self._verified
                if index >= self._expected:
                    raise ValueError(f"verification {index + 1} asked, {self._expected} range(s) named")
                self._verified += 1
                anchor, member = np.asarray(anchor, np.int64), np.asarray(member, np.int64)
                asked.append((anchor, member))
                if len(anchor):
                    yield self._payloads.source(index, index + 1), anchor, member

        # The mapper takes the jobs lazily (a parallel one a few ahead) and yields one result
        # per job in job order; empty ranges have no job and are answered in their turn.
        results, received, done = iter(self.compare(jobs(), self.hasher)), deque(), False
        while True:
            while asked and (received or not len(asked[0][0])):
                anchor, member = asked.popleft()
                yield anchor, member, received.popleft() if len(anchor) else np.zeros(0)
            if done:
                if asked or received:
                    raise RuntimeError(f"the compare mapper answered {len(received)} job(s) for {len(asked)} range(s)")
                return
            try:
                received.append(next(results))
            except StopIteration:
                done = True

    def _group_of(self, orders: np.ndarray) -> np.ndarray:
        """Part group (int32 in [0, FINE_BUCKETS), non-decreasing with the order key) of each
        order key: consecutive part files share a group, so a range of groups is a run of parts."""
        part = np.searchsorted(self._firsts, orders, side="right") - 1
        if len(part) and part.min() < 0:
            raise ValueError(f"order key {int(orders[part < 0][0])} is before the first part file")
        return (part * FINE_BUCKETS // max(1, len(self.parts))).astype(np.int32)

    def _route(self) -> None:
        """Step 2: every named record's payload, to each range that named it."""
        self._routed = True
        for table in self.mapper(self._jobs(), self.hasher):
            # A record is in one part file, so in one job's table.
            self.routed_records += len(np.unique(table.column("order").to_numpy()))
            self.payload_rows += table.num_rows
            self._payloads.append(table)
        # Each range reads its own file, not a slice of every run.
        self._payloads.split([(index, index + 1) for index in range(self._expected)])
        logger.info("pair verification: %d records routed to %d ranges (%d payload rows)", self.routed_records, self._expected,
                    self.payload_rows)

    def _jobs(self) -> Iterator[RouteJob]:
        """One job per part file that holds named records, in order."""
        for low, high in self._named.ranges(self.max_rows):
            named = self._named.read(low, high)
            if not named.num_rows:
                continue
            orders = named.column("order").to_numpy()
            by_order = np.argsort(orders, kind="stable")
            orders, ranges = orders[by_order], named.column("range").to_numpy()[by_order]
            part = np.searchsorted(self._firsts, orders, side="right") - 1
            cuts = np.flatnonzero(np.diff(part)) + 1
            for start, end in zip(np.r_[0, cuts], np.r_[cuts, len(orders)]):
                yield self.parts[int(part[start])], orders[start:end], ranges[start:end]


def payload_rows(part: str, orders: np.ndarray, ranges: np.ndarray, hasher: MinHasher) -> pa.Table:
    """`PAYLOAD_ROWS` of one part file: for each (order, range) named (orders sorted), the
    record's text when its UTF-8 is at most a signature's size, else its signature (computed
    once however many ranges named it); bucket = the range. Raises ValueError for an order
    key the part does not hold. Only the long texts become Python strings (to be hashed):
    the short ones are measured and moved in Arrow."""
    table = pq.read_table(part, columns=["order", "text"])
    present = table.column("order").to_numpy()
    by_order = np.argsort(present, kind="stable")
    wanted = np.unique(orders)
    position = by_order[np.minimum(np.searchsorted(present[by_order], wanted), len(present) - 1)] if len(present) else None
    if position is None or not np.array_equal(present[position], wanted):
        raise ValueError(f"{part} does not hold every record named for verification")
    texts = table.column("text").take(pa.array(position))
    if texts.null_count:
        raise ValueError(f"{part} holds no text for a record named for verification")
    long = pc.greater(pc.binary_length(texts), hasher.num_perm * 4).to_numpy(zero_copy_only=False)
    hashed = np.flatnonzero(long)
    signatures = hasher.signatures(texts.take(pa.array(hashed)).to_pylist())
    signature_of = pa.array([row.tobytes() for row in signatures], type=pa.binary())  # long texts: few
    slot = np.full(len(wanted), -1, dtype=np.int64)
    slot[hashed] = np.arange(len(hashed))
    signature_of = signature_of.take(pa.array(slot, mask=slot < 0))
    text_of = pc.if_else(pa.array(long), pa.scalar(None, pa.string()), texts)
    each = pa.array(np.searchsorted(wanted, orders))
    return pa.table({
        "bucket": np.asarray(ranges, dtype=np.int32),
        "order": np.asarray(orders, dtype=np.int64),
        "text": text_of.take(each),
        "signature": signature_of.take(each),
    }, schema=PAYLOAD_ROWS)


def route_group(jobs: list[RouteJob], hasher: MinHasher) -> pa.Table:
    """`payload_rows` of several routing jobs (consecutive part files), as one table in job
    order: a Ray task's share of the routing (`route_groups`)."""
    return pa.concat_tables([payload_rows(part, orders, ranges, hasher) for part, orders, ranges in jobs]
                            or [PAYLOAD_ROWS.empty_table()])


def route_groups(jobs: Iterable[RouteJob], rows: int) -> Iterator[list[RouteJob]]:
    """Consecutive routing jobs in groups of about `rows` named rows (a job is never split):
    one Ray task a part file (1,000 records in the engine's part files) spent more in the
    task's own cost than in reading the file."""
    group, named = [], 0
    for job in jobs:
        group.append(job)
        named += len(job[1])
        if named >= rows:
            yield group
            group, named = [], 0
    if group:
        yield group


def range_similarities(payloads: str | pa.Table, anchor: np.ndarray, member: np.ndarray, hasher: MinHasher) -> np.ndarray:
    """Estimated Jaccard similarity (k,) float64 of each pair (anchor[i], member[i]) (order
    keys, k each) of one range, from the range's `PAYLOAD_ROWS` (a Parquet file's path, or
    the rows): each record's stored signature, or the signature of its text, hashed here.
    Raises ValueError when a pair names a record the payloads do not hold.

    Pairs of two texts (most: a text travels when it is shorter than a signature) are compared
    by rensa on its own sketches (`MinHasher.sketches`); a pair with a stored signature is
    compared in numpy, its text's values taken from the sketch."""
    if isinstance(payloads, str):
        payloads = pq.read_table(payloads, schema=PAYLOAD_ROWS)
    orders = payloads.column("order").to_numpy()
    by_order = np.argsort(orders, kind="stable")
    records = np.unique(np.concatenate([anchor, member]))
    rows = by_order[np.minimum(np.searchsorted(orders[by_order], records), max(len(orders) - 1, 0))] if len(orders) else None
    if rows is None or not np.array_equal(orders[rows], records):
        raise ValueError(f"a range asks for records it did not name ({len(records)} asked, {len(orders)} named)")
    stored = payloads.column("signature").combine_chunks()
    has_signature = stored.is_valid().to_numpy(zero_copy_only=False)[rows]
    # Each text record's sketch, by its position among the records (-1: a stored signature).
    hashed = np.flatnonzero(~has_signature)
    sketches = hasher.sketches(_strings(payloads.column("text").take(pa.array(rows[hashed]))))
    sketch_of = np.full(len(records), -1, dtype=np.int64)
    sketch_of[hashed] = np.arange(len(hashed))
    del payloads
    a_rows, m_rows = np.searchsorted(records, anchor), np.searchsorted(records, member)
    similarity = np.empty(len(anchor))
    texts = ~has_signature[a_rows] & ~has_signature[m_rows]
    similarity[texts] = sketch_similarities([sketches[i] for i in sketch_of[a_rows[texts]].tolist()],
                                            [sketches[i] for i in sketch_of[m_rows[texts]].tolist()])
    others = np.flatnonzero(~texts)
    if len(others):
        # The records of these pairs as numpy rows: stored signatures from the column's buffer,
        # texts from their sketches.
        needed = np.unique(np.concatenate([a_rows[others], m_rows[others]]))
        values = np.empty((len(needed), hasher.num_perm), dtype=np.uint32)
        from_buffer = has_signature[needed]
        if from_buffer.any():
            taken = stored.take(pa.array(rows[needed[from_buffer]]))
            offsets = np.frombuffer(taken.buffers()[1], dtype=np.int32)[taken.offset:taken.offset + len(taken) + 1]
            data = np.frombuffer(taken.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
            values[from_buffer] = data.view(np.uint32).reshape(len(taken), hasher.num_perm)
        for at, record in zip(np.flatnonzero(~from_buffer).tolist(), needed[~from_buffer].tolist()):
            values[at] = sketches[sketch_of[record]].digest()
        a_at, m_at = np.searchsorted(needed, a_rows[others]), np.searchsorted(needed, m_rows[others])
        for start in range(0, len(others), COMPARE_SLICE_PAIRS):
            end = start + COMPARE_SLICE_PAIRS
            similarity[others[start:end]] = pair_similarities(values[a_at[start:end]], values[m_at[start:end]])
    return similarity


def _strings(texts: pa.ChunkedArray, chunk: int = DIGEST_CHUNK) -> Iterator[str]:
    """The values of `texts` as Python strings, a slice at a time: only the slice's strings
    are alive at once next to the sketches (`MinHasher.sketches` takes them lazily)."""
    for start in range(0, len(texts), chunk):
        yield from texts.slice(start, chunk).to_pylist()
