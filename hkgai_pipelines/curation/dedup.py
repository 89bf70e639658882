"""Corpus-wide exact and near-duplicate removal, keeping the first record of each cluster.

The decision is global and deterministic: it depends on the records and their order, never
on how the corpus was split into batches, files or workers. Both the in-memory path
(`CurationPipeline.run`) and the curation engine (`curation/engine.py`, local or on Ray)
gather the same small per-record keys and call `decide_duplicates`, so they keep the same ids.

Each record that reaches this step has an *order key*, an int64 that sorts records in a
stable order (source order, then file order, then record order: `inputs.order_key`). Then:

1. **duplicate ids** (`repair:duplicate_id`): of the records sharing an id, the first in
   order is kept. (The pipeline takes this decision before language ID: `pipeline.py`.)
2. **exact**: SHA-1 of the text after NFKC, case-folding and removal of whitespace and
   punctuation, so "你好！" and "你好 !" collide. The first of each group is its
   *representative*; the others are `exact_duplicate`s of it.
3. **near**: MinHash (rensa's Rust implementation, the algorithm datasketch implements too;
   benchmarks/curation_throughput.py times both) over character n-grams for Chinese and word
   n-grams for English, cut into LSH bands. Representatives whose signatures agree on a whole
   band share a *bucket*. Each member of a bucket is compared with the bucket's first record
   (its *anchor*, as in NeMo Curator's Jaccard step), and the pair is an edge when the
   estimated Jaccard similarity (the share of equal MinHash values) reaches the threshold,
   so banding false positives are not dropped.
   Verification goes one range of pairs at a time; the ranges hold whole *candidate
   components* (the components of the unverified pairs), so each paired record is gathered
   and hashed for one range (`routed_by_component`).
4. **clusters**: connected components of those edges and of the exact duplicates' links to
   their representatives (`Components`: union-find over the candidates, fed one range of
   edges at a time, so the edges are never held together). The first record of a component
   in order is kept; the others are `near_duplicate`s with `cluster_id` = the
   kept record's id. An exact duplicate of a representative that was dropped is a
   near-duplicate of that representative's kept record.

`similarity` of a dropped record: 1.0 for an exact duplicate; for a near duplicate the highest
estimated Jaccard similarity of its verified pairs (to its anchor or to members it anchors).
"""

from __future__ import annotations

import array
import hashlib
import itertools
import logging
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hkgai_pipelines.curation.keystore import SortedRuns, bucket_of
from hkgai_pipelines.curation.langid import HAN_RUN_RE

if TYPE_CHECKING:
    from hkgai_pipelines.curation.dedup_index import IndexWriter

logger = logging.getLogger(__name__)

_STRIP_RE = re.compile(r"[\s\W_]+", re.UNICODE)
_WORD_RE = re.compile(r"[A-Za-z0-9']+")

#: Bytes of an exact key (SHA-1): a collision would drop a record that is no duplicate, and
#: SHA-1's 160 bits make one vanishingly unlikely at any corpus size.
EXACT_KEY_BYTES = 20

# FNV-1a (64 bit) over the 32-bit MinHash values of a band: any well-mixed 64-bit hash would
# do, since a collision only adds a candidate pair, which verification then rejects.
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _folded(text: str) -> str:
    return _STRIP_RE.sub("", unicodedata.normalize("NFKC", text).casefold())


def exact_digest(text: str) -> bytes:
    """The exact-duplicate key of `text` (EXACT_KEY_BYTES bytes)."""
    return _digest_of_folded(_folded(text))


def _digest_of_folded(folded: str) -> bytes:
    return hashlib.sha1(folded.encode("utf-8")).digest()


def exact_key(text: str) -> str:
    """`exact_digest` as hex text."""
    return exact_digest(text).hex()


def shingles(text: str, n: int) -> list[str]:
    """Character n-grams when Han characters dominate, word n-grams otherwise."""
    return _shingles(text, None, n)


def shingle_units(text: str, folded: str | None = None) -> tuple[list[str], str]:
    """(units, joiner) that `shingles` joins into n-grams: the characters of the folded text
    ("") when Han characters outnumber words, else the lower-cased words (" "). `folded`:
    `_folded(text)` when the caller has it (`MinHasher.keys`)."""
    units, joiner = _unit_source(text, folded)
    return list(units), joiner


def _unit_source(text: str, folded: str | None) -> tuple[str | list[str], str]:
    """`shingle_units` with the characters left as the folded string itself. Han characters
    are counted only when the text has words (most Chinese lines have none), by removing
    the Han runs: one string, where finding each character made one a character."""
    words = _WORD_RE.findall(text.lower())
    if not words or len(text) - len(HAN_RUN_RE.sub("", text)) >= len(words):
        return (_folded(text) if folded is None else folded), ""
    return words, " "


def _shingles(text: str, folded: str | None, n: int) -> list[str]:
    """`shingles`, given `_folded(text)` when the caller has it (`MinHasher.keys`)."""
    units, joiner = _unit_source(text, folded)
    if len(units) <= n:
        return [joiner.join(units)]
    if not joiner:
        # Character n-grams are the folded string's slices: 3x faster than joining slices
        # of its character list, with the same values.
        return [units[i:i + n] for i in range(len(units) - n + 1)]
    return [joiner.join(units[i:i + n]) for i in range(len(units) - n + 1)]


#: Texts hashed in one rensa call (`MinHasher._digests`): bounds their shingle strings and
#: the Python ints rensa's rows come back as (4,096 x 128 values, about 19 MB).
DIGEST_CHUNK = 4096


class MinHasher:
    """MinHash signatures of texts and their LSH band hashes.

    `num_perm` permutations in `num_bands` bands of `num_perm // num_bands` rows; params.yaml
    says where the values come from. Raises ValueError when the bands do not divide evenly.
    """

    def __init__(self, num_perm: int = 128, num_bands: int = 16, ngram: int = 3, seed: int = 42) -> None:
        if num_perm % num_bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of num_bands ({num_bands})")
        self.num_perm = num_perm
        self.num_bands = num_bands
        self.ngram = ngram
        self.seed = seed

    @classmethod
    def from_params(cls, params) -> "MinHasher":
        """From a `params.DedupParams`."""
        return cls(params.num_perm, params.num_bands, params.ngram, params.seed)

    def signature(self, text: str) -> np.ndarray:
        """uint32 array of `num_perm` MinHash values of the text's shingles."""
        return self.signatures([text])[0]

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        """uint32 array (n, num_perm) for n texts: `signature` of each."""
        texts = list(texts)
        return self._digests((shingles(text, self.ngram) for text in texts), len(texts))

    def sketches(self, texts: Iterable[str]) -> list:
        """rensa `RMinHash` objects (n) for n texts, holding `signatures`' values in Rust, for
        `sketch_similarities`. Comparing pairs needs no values in numpy, and taking them out
        of rensa is most of hashing a short text: its matrix gives rows only as lists of
        Python ints, ~9 us of ~13 us a 21-character line (benchmark corpus, 40,960 lines),
        against ~1 us for the sketch. Chunked as `signatures`."""
        from rensa import RMinHash

        texts = iter(texts)
        found = []
        while chunk := [shingles(text, self.ngram) for text in itertools.islice(texts, DIGEST_CHUNK)]:
            found.extend(RMinHash.from_token_sets(chunk, num_perm=self.num_perm, seed=self.seed))
        return found

    def keys(self, texts: list[str]) -> tuple[list[bytes], np.ndarray]:
        """The dedup keys of `texts`, in input order: `exact_digest(t)` of each and the
        `band_hashes` of their `signatures` (uint64 array (len(texts), num_bands)). Each text
        is folded (NFKC, case-folded, whitespace and punctuation removed) once for both."""
        folded = [_folded(text) for text in texts]
        exact = [_digest_of_folded(view) for view in folded]
        signatures = self._digests((_shingles(text, view, self.ngram) for text, view in zip(texts, folded)), len(texts))
        return exact, self.band_hashes(signatures)

    def _digests(self, shingle_sets: Iterable[list[str]], count: int) -> np.ndarray:
        """uint32 array (count, num_perm): the signatures of `count` shingle sets, taken from
        the iterable DIGEST_CHUNK at a time, so only one chunk's shingle strings and digests
        are alive at once (a verification range's tens of thousands of texts in one call held a
        few hundred MB of them: the decision's peak at 100 MiB of input)."""
        # rensa's batch call: the same values as one RMinHash per text (a test), without a
        # Python object per text; per record it was a third of the dedup keys' cost on
        # short lines, and band hashes of one row at a time most of the rest.
        from rensa import RMinHash

        signatures = np.zeros((count, self.num_perm), dtype=np.uint32)
        shingle_sets = iter(shingle_sets)
        for start in range(0, count, DIGEST_CHUNK):
            chunk = list(itertools.islice(shingle_sets, DIGEST_CHUNK))
            matrix = RMinHash.digest_matrix_from_token_sets(chunk, num_perm=self.num_perm, seed=self.seed)
            # The matrix offers only lists of Python ints (about 36 bytes a value with its
            # list). An `array` filled row by row takes them 3.5x faster than numpy's
            # conversion of the nested lists, which was most of the hashing time: rensa's
            # digests themselves take a tenth of the conversion.
            values = array.array("I")
            for row in matrix.to_rows():
                values.extend(row)
            signatures[start:start + len(chunk)] = np.frombuffer(values, dtype=np.uint32).reshape(len(chunk), self.num_perm)
        return signatures

    def band_hashes(self, signatures: np.ndarray) -> np.ndarray:
        """uint64 array (n, num_bands): one 64-bit hash per band of each signature."""
        n = signatures.shape[0]
        bands = signatures.reshape(n, self.num_bands, self.num_perm // self.num_bands).astype(np.uint64)
        hashes = np.full((n, self.num_bands), _FNV_OFFSET, dtype=np.uint64)
        with np.errstate(over="ignore"):  # multiplication modulo 2**64 is the point
            for row in range(bands.shape[2]):
                hashes = (hashes ^ bands[:, :, row]) * _FNV_PRIME
        return hashes


def pair_similarities(anchor: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity (k,) of each row of `members` (k, num_perm) with `anchor`:
    one signature (num_perm,) for all, or one per row (k, num_perm). The share of equal
    MinHash values, as rensa's and datasketch's `jaccard` compute it."""
    return (np.asarray(members) == np.asarray(anchor)).mean(axis=1)


def sketch_similarities(anchors: list, members: list) -> np.ndarray:
    """`pair_similarities` of `MinHasher.sketches`: float64 (k,) for the pairs (anchors[i],
    members[i]), k each, by rensa's `jaccard` (the share of equal values, k/num_perm exactly
    as numpy's mean of the equal values gives it; a test compares them)."""
    from rensa import RMinHash

    return np.fromiter(map(RMinHash.jaccard, anchors, members), dtype=np.float64, count=len(anchors))


@dataclass(frozen=True)
class DuplicateVerdict:
    kind: str  # "exact" or "near"
    duplicate_of: str  # id of the kept record
    similarity: float


#: Rows the corpus-wide decision keeps of each record (`KeyStore`), split by a hash of the
#: key they are grouped by (`keystore.SortedRuns`).
ID_ROWS = pa.schema([("bucket", pa.int32()), ("id", pa.string()), ("order", pa.int64())])
EXACT_ROWS = pa.schema([("bucket", pa.int32()), ("exact", pa.binary(EXACT_KEY_BYTES)), ("order", pa.int64())])
BAND_ROWS = pa.schema([("bucket", pa.int32()), ("band", pa.int16()), ("hash", pa.uint64()), ("order", pa.int64())])
PAIR_ROWS = pa.schema([("bucket", pa.int32()), ("anchor", pa.int64()), ("member", pa.int64())])
#: Working memory of the decision per row of a range it holds at once (the row itself, sort
#: indices and sorted copies; measured peaks were below 100 bytes for band rows): a range
#: holds at most half the budget's worth, `memory_bytes // 2 // DECISION_BYTES_PER_ROW` rows.
DECISION_BYTES_PER_ROW = 128
#: Working memory of verification per candidate pair of a range (`pair_join`): a record's
#: sketch (128 values in rensa, about 770 bytes at params.yaml's num_perm), its payload (its
#: text when shorter than a 512-byte signature, else the signature) and the pair's keys:
#: about 830 bytes a pair measured when members outnumber anchors and texts are short, as in
#: the benchmark corpus, up to about three times that for distinct pairs of 500-byte texts. A
#: range of pairs holds at most `memory_bytes // 2 // VERIFY_BYTES_PER_PAIR`.
VERIFY_BYTES_PER_PAIR = 1152
#: Rows of a kind buffered before they are written as one run (three kinds: at most about
#: three times this waits in memory).
SPILL_FLUSH_BYTES = 32 * 1024 * 1024


class KeyStore:
    """What the corpus-wide decision needs of each record, gathered batch by batch in any
    order of batches: ids (where the record takes part in the duplicate-id decision), and for
    every dedup candidate its exact key and LSH band hashes. Text and signatures stay with
    the workers.

    Each kind of row is split by a hash of what it is grouped by (`keystore`): ids by id,
    exact keys by key, band hashes by hash, so `decide_duplicates` takes the decision one
    range of buckets at a time. `folder`: where the rows are spilled once a kind holds more
    than an eighth of `memory_bytes` (in Arrow about 60 bytes a record plus 22 a band, 420
    bytes a record at 16 bands; about 260 on disk); None keeps them in memory.
    `memory_bytes`: the decision's budget: half for the runs the four kinds (ids, exact keys,
    bands, pairs) keep in memory, half for the range being decided; None: everything at once
    (the in-memory paths, whose records are in memory anyway). Exceeded only by a single hash
    bucket holding more than a range's share (a page copied millions of times puts its 16
    band rows in 16 buckets), or past 4,096 ranges' worth of rows (about 2 billion band rows
    at the engine's 256 MiB). `flush_bytes`: rows buffered per kind before they are written
    as a run (on top of the budget).
    """

    def __init__(self, num_bands: int, folder: Path | None = None, memory_bytes: int | None = None,
                 flush_bytes: int = SPILL_FLUSH_BYTES) -> None:
        self.num_bands = num_bands
        self.folder = folder
        self.max_rows = None if memory_bytes is None else max(1, memory_bytes // 2 // DECISION_BYTES_PER_ROW)
        #: Candidate pairs in one range of verification (`decide_duplicates`). A verifier
        #: that compares ranges at once (the engine on Ray: up to two per worker) holds as
        #: many ranges' pairs, and each comparing task one range's signatures.
        self.max_pairs = None if memory_bytes is None else max(1, memory_bytes // 2 // VERIFY_BYTES_PER_PAIR)
        self.flush_bytes = flush_bytes
        # Each of the four kinds stays in memory up to an eighth of the budget.
        self.held_bytes = 0 if memory_bytes is None else memory_bytes // 8
        self.ids, self.exact, self.bands = (SortedRuns(schema, _sub(folder, name), flush_bytes, self.held_bytes)
                                            for schema, name in ((ID_ROWS, "ids"), (EXACT_ROWS, "exact"), (BAND_ROWS, "bands")))

    def add_ids(self, orders: np.ndarray, ids: pa.Array | list[str], buckets: np.ndarray | None = None) -> None:
        """Records (orders (n,) int64) that take part in the duplicate-id decision, and their
        ids; `buckets`: their `id_buckets`, when already known (incremental curation keeps them)."""
        ids = pa.array(ids, type=pa.string()) if not isinstance(ids, pa.Array) else ids.cast(pa.string())
        if not len(ids):
            return
        buckets = id_buckets(ids) if buckets is None else np.asarray(buckets, dtype=np.int32)
        self.ids.append(pa.table({"bucket": buckets, "id": ids, "order": np.asarray(orders, dtype=np.int64)}))

    def add_candidates(self, orders: np.ndarray, exact: np.ndarray, bands: np.ndarray) -> None:
        """Dedup candidates: orders (m,) int64, exact keys (m,) S20, band hashes (m, num_bands) uint64."""
        orders = np.asarray(orders, dtype=np.int64)
        if not len(orders):
            return
        exact = np.ascontiguousarray(exact, dtype=f"S{EXACT_KEY_BYTES}")
        bands = np.asarray(bands, dtype=np.uint64).reshape(-1, self.num_bands)
        self.exact.append(pa.table({
            "bucket": exact_buckets(exact),
            "exact": exact_key_array(exact),
            "order": orders,
        }))
        hashes = bands.ravel()
        self.bands.append(pa.table({
            "bucket": bucket_of(hashes),
            "band": np.tile(np.arange(self.num_bands, dtype=np.int16), len(orders)),
            "hash": hashes,
            "order": np.repeat(orders, self.num_bands),
        }))


def exact_buckets(exact: np.ndarray) -> np.ndarray:
    """int32 `keystore` bucket (m,) of each exact key (S20), from its first 8 bytes: SHA-1
    output is already uniform."""
    exact = np.ascontiguousarray(exact, dtype=f"S{EXACT_KEY_BYTES}")
    return bucket_of(np.frombuffer(exact.tobytes(), dtype=np.uint8).reshape(-1, EXACT_KEY_BYTES)[:, :8].copy().view(np.uint64).ravel())


#: Ids hashed at a time (`id_hashes`): bounds the Python strings made for pandas' hash (a
#: range of ids holds up to a million).
HASH_CHUNK = 65_536


def id_hashes(ids: pa.Array) -> np.ndarray:
    """uint64 hash (n,) of each id (strings, no nulls): pandas' hash of objects, keyed with a
    fixed key, so the same in every process."""
    import pandas as pd

    hashes = np.empty(len(ids), dtype=np.uint64)
    for start in range(0, len(ids), HASH_CHUNK):
        chunk = ids.slice(start, HASH_CHUNK).to_pylist()
        hashes[start:start + len(chunk)] = pd.util.hash_array(np.asarray(chunk, dtype=object))
    return hashes


def id_buckets(ids: pa.Array) -> np.ndarray:
    """int32 `keystore` bucket (n,) of each id (strings, no nulls): `bucket_of` its `id_hashes`."""
    return bucket_of(id_hashes(ids))


def _sub(folder: Path | None, name: str) -> Path | None:
    return None if folder is None else folder / name


def exact_keys_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An Arrow column of exact keys as a numpy S20 array (no object per value)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.frombuffer(array.buffers()[1], dtype=f"S{EXACT_KEY_BYTES}", count=len(array), offset=array.offset * EXACT_KEY_BYTES)


def exact_key_array(exact: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Exact keys (m,) S20 as an Arrow column, from the buffer: a numpy bytes scalar would
    drop a digest's trailing zero bytes."""
    exact = np.ascontiguousarray(exact, dtype=f"S{EXACT_KEY_BYTES}")
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(EXACT_KEY_BYTES), len(exact), [None, pa.py_buffer(exact.tobytes())])


#: Verifies candidate pairs: given (anchor orders, member orders), returns (anchor orders,
#: member orders, similarities) for every pair, in any order. The single-process path
#: computes signatures in memory; the engine joins the paired records' texts from its part
#: files (`pair_join.JoinedPairVerifier`). A verifier with an `expect(anchor, member)`
#: method is first told every range's pairs, in the order they will be asked; one with a
#: `map(ranges)` method answers an iterable of ranges in order, several at once if it can.
PairVerifier = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def verify_each(verify: PairVerifier, ranges: Iterable[tuple[np.ndarray, np.ndarray]]
                ) -> Iterator[tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """((anchor, member) asked, `verify`'s answer (anchor, member, similarity)) for each range
    of pairs, in order: through its `map` when it has one (which may take a few ranges ahead
    of its answers, answering in range order), else one call per range. An empty range is
    answered empty without a call, unless the verifier has `expect` (it was told of every
    range, so it counts every range)."""
    asked: deque[tuple[np.ndarray, np.ndarray]] = deque()

    def named() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for anchor, member in ranges:
            asked.append((anchor, member))
            yield anchor, member

    if hasattr(verify, "map"):
        answers = verify.map(named())
    else:
        empty = np.zeros(0, dtype=np.int64)
        answers = (verify(anchor, member) if len(anchor) or hasattr(verify, "expect") else (empty, empty, np.zeros(0))
                   for anchor, member in named())
    for answer in answers:
        yield asked.popleft(), answer


@dataclass
class DuplicateDecisions:
    """The corpus-wide verdicts by order key; only dropped records have one. Arrays only, so
    a Ray worker reads them from shared memory without copying."""

    duplicate_id_orders: np.ndarray  # int64, sorted: rejected as repair:duplicate_id
    dropped_orders: np.ndarray  # int64, sorted: rejected by dedup
    dropped_exact: np.ndarray  # bool: exact (else near) duplicate
    dropped_cluster: np.ndarray  # int32 (int64 past 2**31 records): index of the kept record's id among the kept ids
    dropped_similarity: np.ndarray  # float64
    # The distinct kept records' ids, UTF-8, one after another (id k is bytes
    # kept_id_offsets[k]:kept_id_offsets[k + 1]): a fixed-width bytes array would give every
    # dropped record the width of the longest id (a URL of a crawled page runs to kilobytes).
    kept_id_bytes: np.ndarray  # uint8
    kept_id_offsets: np.ndarray  # int64, one more than the kept ids
    summary: dict = field(default_factory=dict)
    #: The order keys of the kept ids (int64, sorted; the kept records of clusters).
    kept_orders: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def cluster_id_bytes(self, index: int) -> bytes:
        """The UTF-8 id of the kept record of dropped record `index` (its position in dropped_orders)."""
        kept = int(self.dropped_cluster[index])
        return self.kept_id_bytes[self.kept_id_offsets[kept]:self.kept_id_offsets[kept + 1]].tobytes()

    def duplicate_id_mask(self, orders: np.ndarray) -> np.ndarray:
        """bool per order: is the record a repeat of an earlier record's id."""
        return _members_of(self.duplicate_id_orders, np.asarray(orders, dtype=np.int64))

    def dropped_mask(self, orders: np.ndarray) -> np.ndarray:
        """bool per order: is the record a duplicate dropped by deduplication (its verdict at
        the same position in dropped_orders, found with np.searchsorted)."""
        return _members_of(self.dropped_orders, np.asarray(orders, dtype=np.int64))

    def range_digest(self, low: int, high: int) -> str:
        """SHA-256 (hex) of every verdict on the orders in [low, high): equal digests mean a
        part file of those orders settles to the same rows (incremental curation reuses it)."""
        digest = hashlib.sha256()
        start, end = np.searchsorted(self.duplicate_id_orders, [low, high])
        digest.update(self.duplicate_id_orders[start:end].astype("<i8").tobytes())
        start, end = np.searchsorted(self.dropped_orders, [low, high])
        digest.update(self.dropped_orders[start:end].astype("<i8").tobytes())
        digest.update(self.dropped_exact[start:end].astype(bool).tobytes())
        digest.update(self.dropped_similarity[start:end].astype("<f8").tobytes())
        digest.update(b"\x00".join(self.cluster_id_bytes(i) for i in range(start, end)))
        return digest.hexdigest()

    def verdicts_for(self, orders: np.ndarray) -> dict[int, DuplicateVerdict]:
        """Verdicts of the dropped records among `orders`."""
        orders = np.asarray(orders, dtype=np.int64)
        found = _members_of(self.dropped_orders, orders)
        positions = np.searchsorted(self.dropped_orders, orders[found])
        return {
            int(order): DuplicateVerdict(
                "exact" if self.dropped_exact[i] else "near",
                self.cluster_id_bytes(i).decode("utf-8"),
                float(self.dropped_similarity[i]),
            )
            for order, i in zip(orders[found], positions)
        }


def _members_of(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    if not len(sorted_values) or not len(queries):
        return np.zeros(len(queries), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_values, queries), len(sorted_values) - 1)
    return sorted_values[positions] == queries


def duplicate_id_orders(id_orders: np.ndarray, ids: pa.Array) -> np.ndarray:
    """Orders of the records whose id an earlier record (in order) already has; sorted."""
    if len(id_orders) < 2:
        return np.zeros(0, dtype=np.int64)
    table = pa.table({"id": ids, "order": pa.array(id_orders, pa.int64())})
    index = pc.sort_indices(table, sort_keys=[("id", "ascending"), ("order", "ascending")])
    sorted_ids = ids.take(index)
    repeats = pc.equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
    return np.sort(id_orders[index.to_numpy()][1:][repeats])


def exact_representatives(exact: np.ndarray) -> np.ndarray:
    """For records sorted by order: the index of the first record with the same exact key."""
    index = np.argsort(exact, kind="stable")  # stable: equal keys stay in order
    keys = exact[index]
    starts = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
    group_first = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
    representative = np.empty(len(keys), dtype=np.int64)
    representative[index] = index[group_first]
    return representative


def bucket_anchor_pairs(band: np.ndarray, hashes: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, member) order pairs of band rows (n,) each: the rows with the same band and
    hash form a bucket, and each member is paired with the bucket's first record in order.
    A pair found in several bands comes once per band. Memory: a few arrays of n."""
    anchor, member, _ = bucket_anchors(band, hashes, orders, with_buckets=False)
    return anchor, member


def bucket_anchors(band: np.ndarray, hashes: np.ndarray, orders: np.ndarray, with_buckets: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`bucket_anchor_pairs`' (anchor, member) pairs, and with `with_buckets` the row index
    (n,) of every bucket's anchor, one-record buckets included, in order of hash (what
    `dedup_index` keeps so that a later record finds the anchor of its bucket)."""
    empty = np.zeros(0, dtype=np.int64)
    if len(orders) < 2:
        return empty, empty, (np.arange(len(orders)) if with_buckets else None)
    # Only rows whose hash another row shares can be in a bucket of two: one plain sort finds
    # them, and the three-key sort runs on those alone (3x faster when most hashes are unique).
    by_hash = np.argsort(hashes)
    same = hashes[by_hash[1:]] == hashes[by_hash[:-1]]
    shared = np.zeros(len(hashes), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    rows = by_hash[shared]
    if not len(rows):
        return empty, empty, (by_hash if with_buckets else None)
    index = np.lexsort((orders[rows], hashes[rows], band[rows]))  # by band, hash, then order
    sorted_rows = rows[index]
    sorted_band, sorted_hash, sorted_order = band[sorted_rows], hashes[sorted_rows], orders[sorted_rows]
    starts = np.r_[True, (sorted_band[1:] != sorted_band[:-1]) | (sorted_hash[1:] != sorted_hash[:-1])]
    group_first = np.maximum.accumulate(np.where(starts, np.arange(len(index)), 0))
    members = ~starts
    anchors = None
    if with_buckets:
        anchors = np.concatenate([by_hash[~shared], sorted_rows[starts]])
        anchors = anchors[np.argsort(hashes[anchors], kind="stable")]
    return sorted_order[group_first[members]], sorted_order[members], anchors


def _unique_pairs(anchor: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = np.lexsort((member, anchor))
    anchor, member = anchor[index], member[index]
    first = np.r_[True, (anchor[1:] != anchor[:-1]) | (member[1:] != member[:-1])] if len(index) else np.zeros(0, bool)
    return anchor[first], member[first]


def _exact_links(exact: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(member, representative) orders of the records (exact keys and orders, any order) whose
    exact key an earlier record has: each with the first record of its key."""
    by_order = np.argsort(orders, kind="stable")
    orders = orders[by_order]
    representative = exact_representatives(exact[by_order])
    linked = representative != np.arange(len(orders))
    return orders[linked], orders[representative[linked]]


class NarrowKeys:
    """Sorted, distinct int64 keys held in 4 bytes each where they allow it (else as given).

    Each key is split at bit `shift`: the distinct high parts are kept once (`highs`, sorted)
    and the key becomes (rank of its high part) << shift | its low part, a uint32 that sorts as
    the key does. Order keys (`inputs.order_key`, unit << 40 | position) have few distinct high
    parts: the 1 GiB run's 10.8 million candidates in 8 files have 8 at shift 28. The largest
    shift whose ranks fit in 32 bits is taken; keys too spread for any stay int64."""

    #: Shifts tried, largest first (a larger shift has fewer high parts to keep).
    SHIFTS = (28, 24, 20, 16, 12, 8)
    #: Keys converted at a time: bounds the int64 temporaries of the conversion.
    CHUNK = 1 << 20

    def __init__(self, keys: np.ndarray):
        """`keys`: int64, sorted and distinct. Not kept: the caller may free them."""
        self.shift, self.highs = None, None
        for shift in self.SHIFTS if len(keys) else ():
            highs = self._distinct_highs(keys, shift)
            if len(highs) << shift <= 1 << 32:
                self.shift, self.highs = shift, highs
                break
        if self.shift is None:
            self.values = keys
            return
        self._mask = np.int64((1 << self.shift) - 1)
        self.values = np.empty(len(keys), dtype=np.uint32)
        for start in range(0, len(keys), self.CHUNK):
            self.values[start:start + self.CHUNK] = self._narrow(keys[start:start + self.CHUNK])[0]

    @classmethod
    def _distinct_highs(cls, keys: np.ndarray, shift: int) -> np.ndarray:
        parts, last = [], None
        for start in range(0, len(keys), cls.CHUNK):
            high = keys[start:start + cls.CHUNK] >> shift
            first = np.r_[last is None or high[0] != last, high[1:] != high[:-1]]
            parts.append(high[first])
            last = high[-1]
        return np.concatenate(parts)

    def _narrow(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint32 values of `keys`, bool: whether each key's high part is one of `highs`)."""
        high = keys >> self.shift
        rank = np.minimum(np.searchsorted(self.highs, high), len(self.highs) - 1)
        known = self.highs[rank] == high
        return (rank.astype(np.uint32) << np.uint32(self.shift)) | (keys & self._mask).astype(np.uint32), known

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Position (int64) of each of `keys` (int64) among the keys. Raises ValueError for
        one that is not among them."""
        keys = np.asarray(keys, dtype=np.int64)
        known = np.ones(len(keys), dtype=bool)
        if self.shift is not None and len(keys):
            keys, known = self._narrow(keys)
        positions = np.searchsorted(self.values, keys)  # same dtypes: the values are not copied
        if len(keys) and (not len(self.values) or not known.all()
                          or not np.array_equal(self.values[np.minimum(positions, len(self.values) - 1)], keys)):
            raise ValueError("an edge joins a record that is not a candidate")
        return positions

    def wide(self, values: np.ndarray) -> np.ndarray:
        """The int64 keys of `values` (some of `self.values`)."""
        if self.shift is None:
            return values
        return (self.highs[values >> np.uint32(self.shift)] << self.shift) | (values & np.uint32(self._mask)).astype(np.int64)


class Components:
    """Connected components of the candidates, fed edges one batch at a time (union-find on
    numpy arrays). Memory: 12 bytes per node (its order key, 4 bytes as `NarrowKeys`; its
    root, as an int32 position while the nodes fit; its best edge similarity, float32 while
    every similarity given is exactly a float32, as MinHash's k/num_perm estimates with
    num_perm a power of two are, float64 from the first that is not), however many edges
    there are: a scipy graph of the 1 GiB run's 19.9 million edges held the edges and two
    sparse copies of them at once.

    Each link hangs the larger of two roots under the smaller, so a component's root is its
    smallest position: with `nodes` sorted, the first record of the component in order."""

    def __init__(self, nodes: np.ndarray | NarrowKeys, similarities: bool = True):
        """`nodes`: int64 order keys, sorted and distinct, every edge joining two of them (not
        kept: the caller may free them), or another's `keys` (shared). `similarities`: False
        keeps no best similarity per node (4 bytes a node less; `over`)."""
        self.keys = nodes if isinstance(nodes, NarrowKeys) else NarrowKeys(nodes)
        count = len(self.keys.values)
        self._index = np.int32 if count < np.iinfo(np.int32).max else np.int64
        self.parent = np.arange(count, dtype=self._index)
        self.best = np.zeros(count, dtype=np.float32) if similarities else None

    @classmethod
    def over(cls, keys: NarrowKeys) -> "Components":
        """Components of the same nodes as another's (its `keys`, shared), each node alone,
        without similarities (8 bytes a node less than `Components(nodes)`'s copy)."""
        return cls(keys, similarities=False)

    def roots(self, orders: np.ndarray) -> np.ndarray:
        """Position of each of `orders`' (int64 order keys of nodes) component's root: its
        first node. Raises ValueError for an order key that is not a node."""
        return self._roots(self._positions(orders))

    @classmethod
    def restored(cls, nodes: np.ndarray, parent: np.ndarray, best: np.ndarray) -> "Components":
        """Components of `nodes` (int64, sorted, distinct) whose first len(parent) nodes are
        those of a `state()` (their roots' positions `parent`, their best similarities
        `best`), the nodes after them each alone: an earlier decision's components with
        records appended after its own."""
        components = cls(nodes)
        known = len(parent)
        components.parent[:known] = parent
        if best.dtype == np.float64:
            components.best = components.best.astype(np.float64)
        components.best[:known] = best
        return components

    def state(self) -> tuple[NarrowKeys, np.ndarray, np.ndarray]:
        """(the nodes (`NarrowKeys`: `wide(values)` gives their int64 order keys, sorted),
        each node's root's position, each node's best similarity): what `restored` takes back."""
        self._flatten()
        return self.keys, self.parent, self.best

    def _positions(self, orders: np.ndarray) -> np.ndarray:
        return self.keys.positions(orders).astype(self._index)

    def _roots(self, positions: np.ndarray) -> np.ndarray:
        roots = self.parent[positions]
        while True:
            up = self.parent[roots]
            if np.array_equal(up, roots):
                return roots
            roots = up

    def _jump(self, positions: np.ndarray) -> None:
        """Point each of `positions` at its root by pointer jumping among them (each pass
        halves their depth): a chain made in one round (each root hooked under a smaller one
        that was itself hooked) is flattened in log(length) passes instead of walked once per
        query."""
        while True:
            up = self.parent[positions]
            upper = self.parent[up]
            if np.array_equal(up, upper):
                return
            self.parent[positions] = upper

    def _flatten(self) -> None:
        """Every node straight to its root (pointer jumping over the whole array)."""
        while True:
            up = self.parent[self.parent]
            if np.array_equal(up, self.parent):
                return
            self.parent = up

    def union(self, a: np.ndarray, b: np.ndarray, similarity: np.ndarray | None = None) -> None:
        """Join the components of a[i] and b[i] (int64 order keys, equal lengths); with
        `similarity` (float64 per edge), keep each node's highest. Raises ValueError for an
        order key that is not a node.

        Rounds of hooking and shortcutting, as in the parallel connected-components algorithms
        (Shiloach and Vishkin): each edge's two roots are found, the larger root is hooked
        under the smallest root it meets, the hooked roots are pointed straight at their new
        roots, and the edges whose roots still differ go round again. At the end every node
        points at its root, so the next call starts from trees of depth one: a call that joins
        anything ends with a pass over every node (a few milliseconds per million nodes)."""
        a, b = self._positions(a), self._positions(b)
        if similarity is not None:
            similarity = np.asarray(similarity, dtype=np.float64)
            if self.best.dtype == np.float32:
                narrow = similarity.astype(np.float32)
                if np.array_equal(narrow, similarity):
                    similarity = narrow
                else:  # a similarity float32 would round: every one is held exactly from here on
                    self.best = self.best.astype(np.float64)
            for ends in (a, b):
                np.maximum.at(self.best, ends, similarity)
        hooked_any = False
        while len(a):
            a, b = self._roots(a), self._roots(b)
            differ = a != b
            if not differ.any():
                break
            a, b = a[differ], b[differ]
            # Several edges may hang the same root: the smallest of their roots wins, and the
            # others are joined to it in the next round through their own roots.
            high = np.maximum(a, b)
            np.minimum.at(self.parent, high, np.minimum(a, b))
            self._jump(np.unique(high))
            hooked_any = True
        if hooked_any:
            self._flatten()

    def dropped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(order keys of the nodes that are not their component's first, by order (int64);
        for each, the position of that first record among `kept` (int32, or int64 past 2**31
        nodes); each one's best similarity (float32, or float64 when one given was not exactly
        a float32); `kept`, the order keys of the first records of components with more than
        one node, by order (int64)). Call once: it gives the roots' memory up to the ranks.
        Boolean masks, not index arrays: 1 byte a node where an int64 index takes 8."""
        self._flatten()
        moved = self.parent != np.arange(len(self.parent), dtype=self._index)
        roots = self.parent[moved]
        dropped_orders, best = self.keys.wide(self.keys.values[moved]), self.best[moved]
        del moved
        # A root's position among the kept roots, by a running count over the nodes: no sort
        # of the dropped records' roots (millions at 1 GiB of input).
        is_kept = np.zeros(len(self.parent), dtype=bool)
        is_kept[roots] = True
        self.parent = self.best = None  # no longer needed: their memory goes to the ranks
        rank = np.cumsum(is_kept, dtype=self._index)
        rank -= 1
        cluster = rank[roots]
        del rank, roots
        return dropped_orders, cluster, best, self.keys.wide(self.keys.values[is_kept])


def decide_duplicates(keys: KeyStore, threshold: float, verify: PairVerifier, index: "IndexWriter | None" = None
                      ) -> DuplicateDecisions:
    """Duplicate ids, exact and near duplicates of the whole corpus (see the module docstring),
    one range of hash buckets at a time (`KeyStore`).

    `threshold`: estimated Jaccard similarity at which two records are near-duplicates
    (params.yaml `curation.dedup.threshold`). `verify` computes the similarity of candidate
    pairs where the signatures are, once per range of pairs (through its `map`, if it has one,
    which may verify a few ranges at once: their pairs are then held together). `index`: a
    `dedup_index.IndexWriter` given each range's ids, exact representatives and bucket
    anchors, and the components, so a later run that appends records decides only them
    (`dedup_index.extend_decisions`). Memory: the store's budget for the ranges, 12 bytes per
    candidate for the components (12 more while the pairs are routed by candidate component), and arrays of the duplicates found (repeated ids, exact
    duplicates, the dropped records' verdicts); the verified pairs are joined into the
    components range by range, never held. Raises what `verify` raises, and ValueError when
    a candidate has no id.
    """
    empty = np.zeros(0, dtype=np.int64)
    logger.info("dedup: %d records' ids stored; repeated ids", keys.ids.rows)
    # 1. Repeated ids: an id's rows share a bucket.
    repeated = []
    for low, high in keys.ids.ranges(keys.max_rows):
        table = keys.ids.read(low, high)
        ids = table.column("id").combine_chunks()
        repeated.append(duplicate_id_orders(table.column("order").to_numpy(), ids))
        if index is not None:
            index.add_ids(low, high, ids)
    repeated = np.sort(np.concatenate([empty, *repeated]))

    # 2. Exact duplicates among the candidates whose id is not a repeat: a key's rows share a bucket.
    logger.info("dedup: %d repeated ids; exact duplicates", len(repeated))
    candidates, links, alive_orders = 0, [], []
    for low, high in keys.exact.ranges(keys.max_rows):
        table = keys.exact.read(low, high)
        orders = table.column("order").to_numpy()
        alive = ~_members_of(repeated, orders)
        candidates += int(alive.sum())
        alive_orders.append(orders[alive])
        exact = exact_keys_of(table.column("exact"))[alive]
        member, rep = _exact_links(exact, orders[alive])
        links.append((member, rep))
        if index is not None:
            representative = ~_members_of(member, orders[alive])  # `_exact_links` gives members sorted
            index.add_exact(low, high, exact[representative], orders[alive][representative])
    exact_member = np.concatenate([empty, *(member for member, _ in links)])
    exact_rep = np.concatenate([empty, *(rep for _, rep in links)])
    del links
    by_member = np.argsort(exact_member)
    exact_member, exact_rep = exact_member[by_member], exact_rep[by_member]
    # The components' nodes: every candidate (an edge or an exact link joins two of them),
    # sorted in place (a sorted copy would hold them twice).
    nodes = np.concatenate([empty, *alive_orders])
    del alive_orders
    nodes.sort()
    components = Components(nodes)
    del nodes
    components.union(exact_member, exact_rep)

    # 3. LSH candidate pairs among the representatives: a band hash's rows share a bucket.
    # Pairs are kept by a hash of their anchor, so each anchor's pairs meet in one range; with
    # a budget, then again by candidate component (`routed_by_component`), so each paired
    # record is gathered for one range.
    logger.info("dedup: %d candidates, %d exact links; candidate pairs", candidates, len(exact_member))
    excluded = np.union1d(repeated, exact_member)
    pairs = SortedRuns(PAIR_ROWS, _sub(keys.folder, "pairs"), keys.flush_bytes, keys.held_bytes)
    for low, high in keys.bands.ranges(keys.max_rows):
        table = keys.bands.read(low, high)
        orders = table.column("order").to_numpy()
        keep = ~_members_of(excluded, orders)
        band, hashes, orders = table.column("band").to_numpy()[keep], table.column("hash").to_numpy()[keep], orders[keep]
        anchor, member, anchors = bucket_anchors(band, hashes, orders, with_buckets=index is not None)
        pairs.append(pa.table({"bucket": bucket_of(anchor), "anchor": anchor, "member": member}))
        if index is not None:
            index.add_bands(low, high, band[anchors], hashes[anchors], orders[anchors])
    del excluded
    if keys.max_pairs is not None:
        pairs = routed_by_component(pairs, Components.over(components.keys), keys)

    # 4. Verify each range of pairs once; the verified ones are the edges, joined into the
    # components range by range. A verifier that gathers the records from elsewhere is told
    # every range's pairs first.
    def pair_ranges() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        for table in _each_range(pairs, keys.max_pairs):
            anchor, member = _unique_pairs(table.column("anchor").to_numpy(), table.column("member").to_numpy())
            if len(anchor):
                yield anchor, member

    logger.info("dedup: verifying candidate pairs")
    candidate_pairs, verified_pairs = join_verified(components, pair_ranges, verify, threshold)
    logger.info("dedup: %d candidate pairs, %d verified; components", candidate_pairs, verified_pairs)
    counts = {"candidates": candidates, "candidate_pairs": candidate_pairs, "verified_pairs": verified_pairs}
    if index is not None:
        index.set_state(components, exact_member, exact_rep, repeated, counts)
    decisions = decisions_from(components, exact_member, exact_rep, repeated, lambda kept: _ids_of(keys, kept), counts)
    if index is not None:
        index.set_kept(decisions)
    return decisions


def routed_by_component(pairs: SortedRuns, candidates: "Components", keys: KeyStore) -> SortedRuns:
    """The candidate pairs (`PAIR_ROWS`, kept by a hash of their anchor) kept again by a hash
    of their *candidate component*'s first record (the connected components of the candidate
    pairs themselves, before any is verified), so a range of pairs holds whole components and
    pair verification gathers each paired record for one range, not for every range whose
    anchors paired it: on the 40 MiB benchmark corpus 670,752 payload rows for 374,081 records
    by anchor. A component with more pairs than a range holds (`keys.max_pairs`: boilerplate
    shared by thousands of pages) is kept by anchor as before. Any split gives the same
    decision: the edges are the same, and the components do not depend on their order.
    `candidates`: components of every candidate, each alone (`Components.over`), joined here.
    Three passes over the pairs (join, count per component, keep again); memory beyond the
    store's budget: 8 bytes a candidate for the counts."""
    for table in _each_range(pairs, keys.max_rows):
        candidates.union(table.column("anchor").to_numpy(), table.column("member").to_numpy())
    sizes = np.zeros(len(candidates.parent), dtype=np.int64)
    for table in _each_range(pairs, keys.max_rows):
        sizes += np.bincount(candidates.roots(table.column("anchor").to_numpy()), minlength=len(sizes))
    routed = SortedRuns(PAIR_ROWS, _sub(keys.folder, "component-pairs"), keys.flush_bytes, keys.held_bytes)
    for table in _each_range(pairs, keys.max_rows):
        anchor = table.column("anchor").to_numpy()
        root = candidates.roots(anchor)
        by = np.where(sizes[root] > keys.max_pairs, anchor, candidates.keys.wide(candidates.keys.values[root]))
        routed.append(pa.table({"bucket": bucket_of(by), "anchor": anchor, "member": table.column("member")}))
    logger.info("dedup: candidate pairs by component (%d components of more than one record, %d over a range)",
                int((sizes > 0).sum()), int((sizes > keys.max_pairs).sum()))
    return routed


def join_verified(components: "Components", ranges: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
                  verify: PairVerifier, threshold: float) -> tuple[int, int]:
    """Verify each range of candidate pairs (anchor, member: int64 order keys) once and join
    the pairs whose similarity reaches `threshold` into `components`, range by range.
    `ranges()` gives the ranges afresh each call: a verifier with `expect` is told every
    range's pairs first, then asked. Returns (candidate pairs, verified pairs). Raises what
    `verify` raises, and ValueError when it does not answer every pair once."""
    if hasattr(verify, "expect"):
        for anchor, member in ranges():
            verify.expect(anchor, member)
    candidate_pairs = verified_pairs = 0
    for (anchor, member), (got_anchor, got_member, got_similarity) in verify_each(verify, ranges()):
        candidate_pairs += len(anchor)
        similarity = _align(anchor, member, got_anchor, got_member, got_similarity)
        verified = similarity >= threshold
        verified_pairs += int(verified.sum())
        components.union(anchor[verified], member[verified], similarity[verified])
    return candidate_pairs, verified_pairs


def decisions_from(components: "Components", exact_member: np.ndarray, exact_rep: np.ndarray, repeated: np.ndarray,
                   ids_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], counts: dict) -> DuplicateDecisions:
    """The verdicts of a decision whose edges are all in `components` (given up: see
    `Components.dropped`): each candidate's component is its root, the first record of the
    component in order. `exact_member`, `exact_rep`: the exact links (int64, by member);
    `repeated`: the duplicate-id orders (int64, sorted); `ids_of(kept orders)`: their ids as
    (UTF-8 bytes, offsets), as `_ids_of`; `counts`: candidates, candidate_pairs, verified_pairs."""
    dropped_orders, dropped_cluster, best, kept_orders = components.dropped()
    del components
    logger.info("dedup: %d dropped, %d kept records of clusters; verdicts", len(dropped_orders), len(kept_orders))
    # The verdicts. A dropped record's similarity is its own best verified similarity, unless
    # it is an exact copy (a member of an exact group, whose representative stood for it in
    # the pairs): then 1.0 when the representative is its cluster's kept record, and otherwise
    # the representative's best (the representative is then dropped too). Exact members are
    # few, so the work beyond one float64 copy of the similarities is over them alone.
    dropped_similarity = best.astype(np.float64)
    del best
    dropped_exact = np.zeros(len(dropped_orders), dtype=bool)
    members = np.flatnonzero(_members_of(exact_member, dropped_orders))
    reps = exact_rep[np.searchsorted(exact_member, dropped_orders[members])]
    exact = reps == kept_orders[dropped_cluster[members]]
    dropped_exact[members[exact]] = True
    inexact, reps = members[~exact], reps[~exact]
    if len(inexact):
        at = np.minimum(np.searchsorted(dropped_orders, reps), len(dropped_orders) - 1)
        # Representatives are never members, so their similarities are still their own here.
        dropped_similarity[inexact] = np.where(dropped_orders[at] == reps, dropped_similarity[at], 0.0)
    dropped_similarity[members[exact]] = 1.0
    del members, reps, exact, inexact
    logger.info("dedup: the kept records' ids")
    kept_id_bytes, kept_id_offsets = ids_of(kept_orders)
    return DuplicateDecisions(
        duplicate_id_orders=repeated,
        dropped_orders=dropped_orders,
        dropped_exact=dropped_exact,
        dropped_cluster=dropped_cluster,
        kept_id_bytes=kept_id_bytes,
        kept_id_offsets=kept_id_offsets,
        dropped_similarity=dropped_similarity,
        kept_orders=kept_orders,
        summary={
            "duplicate_ids": int(len(repeated)),
            "candidates": int(counts["candidates"]),
            "exact_duplicates": int(dropped_exact.sum()),
            "candidate_pairs": int(counts["candidate_pairs"]),
            "verified_pairs": int(counts["verified_pairs"]),
            "near_duplicates": int(len(dropped_orders) - dropped_exact.sum()),
        },
    )


def _each_range(runs: SortedRuns, max_rows: int | None) -> Iterable[pa.Table]:
    for low, high in runs.ranges(max_rows):
        yield runs.read(low, high)


def _ids_of(keys: KeyStore, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 ids of `orders` (int64, sorted, distinct) one after another (uint8) and where
    each starts (int64, one more than the orders). Two passes over the stored ids: the first
    measures each id, the second copies it into place, so the ids are held once (collecting
    them, joining and reordering held them three times: at 1 GiB of input the kept records
    of clusters number millions). Raises ValueError for an order without an id."""
    lengths = np.zeros(len(orders), dtype=np.int64)
    found = 0
    for _, at, offsets, _ in _id_hits(keys, orders):
        lengths[at] = np.diff(offsets)
        found += len(at)
    if found != len(orders):
        raise ValueError(f"{len(orders) - found} kept record(s) of a duplicate cluster have no id")
    starts = np.zeros(len(orders) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    del lengths
    utf8 = np.empty(int(starts[-1]), dtype=np.uint8)
    for data, at, offsets, hits in _id_hits(keys, orders):
        # Where each byte goes (int64 indices, one per byte, so about ID_COPY_BYTES of ids at
        # a time): the hits' bytes are contiguous in `data`, each id's to its own start.
        marks = np.arange(offsets[0], offsets[-1], ID_COPY_BYTES)
        cuts = np.unique(np.r_[0, np.searchsorted(offsets, marks, side="right") - 1, hits])
        for low, high in zip(cuts[:-1], cuts[1:]):
            sizes = np.diff(offsets[low:high + 1])
            within = np.arange(offsets[high] - offsets[low]) - np.repeat(offsets[low:high] - offsets[low], sizes)
            utf8[np.repeat(starts[at[low:high]], sizes) + within] = data[offsets[low]:offsets[high]]
    return utf8, starts


#: Bytes of ids placed at once by `_ids_of`, whose index arrays take about 24 bytes per byte
#: of id (an id longer than this goes alone).
ID_COPY_BYTES = 1024 * 1024


def _id_hits(keys: KeyStore, orders: np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per range of stored ids that holds some of `orders` (sorted): (its ids' UTF-8 bytes as
    uint8, the positions in `orders` of the hits, the hits' byte offsets (one more than the
    hits), hits)."""
    for table in _each_range(keys.ids, keys.max_rows):
        present = table.column("order").to_numpy()
        hit = _members_of(orders, present)
        if not hit.any():
            continue
        ids = table.column("id").filter(pa.array(hit)).combine_chunks().cast(pa.large_string())
        offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset:ids.offset + len(ids) + 1]
        data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if ids.buffers()[2] is not None else np.zeros(0, np.uint8)
        yield data, np.searchsorted(orders, present[hit]), offsets, len(ids)


def _align(anchor: np.ndarray, member: np.ndarray, got_anchor: np.ndarray, got_member: np.ndarray, got_similarity: np.ndarray) -> np.ndarray:
    """`got_similarity` reordered to the pairs (anchor, member). Raises ValueError when the
    verifier did not answer for every pair exactly once."""
    want = np.lexsort((member, anchor))
    have = np.lexsort((np.asarray(got_member), np.asarray(got_anchor)))
    if len(have) != len(want) or not (
        np.array_equal(np.asarray(got_anchor)[have], anchor[want]) and np.array_equal(np.asarray(got_member)[have], member[want])
    ):
        raise ValueError(f"pair verification answered {len(have)} pairs for {len(want)} asked")
    similarity = np.empty(len(want))
    similarity[want] = np.asarray(got_similarity, dtype=np.float64)[have]
    return similarity


def in_memory_verifier(texts_by_order: dict[int, str], hasher: MinHasher) -> PairVerifier:
    """A `PairVerifier` for records whose texts are all in memory (the single-process path)."""

    def verify(anchor: np.ndarray, member: np.ndarray):
        similarity = np.empty(len(anchor))
        order = np.argsort(anchor, kind="stable")
        starts = np.flatnonzero(np.r_[True, anchor[order][1:] != anchor[order][:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(order)]):
            group = order[start:end]
            members = hasher.signatures(texts_by_order[int(m)] for m in member[group])
            similarity[group] = pair_similarities(hasher.signature(texts_by_order[int(anchor[group[0]])]), members)
        return anchor, member, similarity

    return verify


def find_duplicates(docs: list[tuple[str, str]], threshold: float = 0.8, hasher: MinHasher | None = None) -> dict[str, DuplicateVerdict]:
    """Verdicts for a list of (id, text) in order, by id of the dropped documents: the
    corpus-wide decision on a small in-memory list (tests, benchmarks)."""
    hasher = hasher or MinHasher()
    collector = KeyStore(hasher.num_bands)
    orders = np.arange(len(docs), dtype=np.int64)
    collector.add_ids(orders, [doc_id for doc_id, _ in docs])
    signatures = hasher.signatures(text for _, text in docs)
    collector.add_candidates(orders, np.array([exact_digest(text) for _, text in docs], dtype=f"S{EXACT_KEY_BYTES}"), hasher.band_hashes(signatures))
    decisions = decide_duplicates(collector, threshold, in_memory_verifier(dict(enumerate(text for _, text in docs)), hasher))
    return {docs[order][0]: verdict for order, verdict in decisions.verdicts_for(orders).items()}
