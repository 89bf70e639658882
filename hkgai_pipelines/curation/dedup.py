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
4. **clusters**: connected components of those edges (scipy.sparse.csgraph). The first record
   of a component in order is kept; the others are `near_duplicate`s with `cluster_id` = the
   kept record's id. An exact duplicate of a representative that was dropped is a
   near-duplicate of that representative's kept record.

`similarity` of a dropped record: 1.0 for an exact duplicate; for a near duplicate the highest
estimated Jaccard similarity of its verified pairs (to its anchor or to members it anchors).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hkgai_pipelines.curation.langid import HAN_RE

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
    return hashlib.sha1(_folded(text).encode("utf-8")).digest()


def exact_key(text: str) -> str:
    """`exact_digest` as hex text."""
    return exact_digest(text).hex()


def shingles(text: str, n: int) -> list[str]:
    """Character n-grams when Han characters dominate, word n-grams otherwise."""
    han = HAN_RE.findall(text)
    words = _WORD_RE.findall(text.lower())
    if len(han) >= len(words):
        units = list(_folded(text))
        joiner = ""
    else:
        units = words
        joiner = " "
    if len(units) <= n:
        return [joiner.join(units)] if units else [""]
    return [joiner.join(units[i:i + n]) for i in range(len(units) - n + 1)]


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
        from rensa import RMinHash

        minhash = RMinHash(num_perm=self.num_perm, seed=self.seed)
        minhash.update(shingles(text, self.ngram))
        return np.asarray(minhash.digest(), dtype=np.uint32)

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        """uint32 array (len(texts), num_perm)."""
        rows = [self.signature(text) for text in texts]
        return np.stack(rows) if rows else np.zeros((0, self.num_perm), dtype=np.uint32)

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


@dataclass(frozen=True)
class DuplicateVerdict:
    kind: str  # "exact" or "near"
    duplicate_of: str  # id of the kept record
    similarity: float


@dataclass
class DedupKeys:
    """What the corpus-wide decision needs of each record, sorted by order key.

    About 180 bytes a record: for every record that takes part in the duplicate-id decision
    its order (8) and id (~24 in Arrow); for every dedup candidate its order (8), exact key
    (20) and band hashes (8 per band, 128 with 16 bands). Text and signatures stay with the
    workers.
    """

    id_orders: np.ndarray  # int64 (n,)
    ids: pa.Array  # string (n,)
    candidate_orders: np.ndarray  # int64 (m,)
    exact: np.ndarray  # S20 (m,)
    bands: np.ndarray  # uint64 (m, num_bands)


class KeyCollector:
    """Gathers `DedupKeys` batch by batch, in any order of batches."""

    def __init__(self, num_bands: int) -> None:
        self.num_bands = num_bands
        self._id_orders: list[np.ndarray] = []
        self._ids: list[pa.Array] = []
        self._orders: list[np.ndarray] = []
        self._exact: list[np.ndarray] = []
        self._bands: list[np.ndarray] = []

    def add_ids(self, orders: np.ndarray, ids: pa.Array | list[str]) -> None:
        self._id_orders.append(np.asarray(orders, dtype=np.int64))
        self._ids.append(pa.array(ids, type=pa.string()) if not isinstance(ids, pa.Array) else ids.cast(pa.string()))

    def add_candidates(self, orders: np.ndarray, exact: np.ndarray, bands: np.ndarray) -> None:
        self._orders.append(np.asarray(orders, dtype=np.int64))
        self._exact.append(np.asarray(exact, dtype=f"S{EXACT_KEY_BYTES}"))
        self._bands.append(np.asarray(bands, dtype=np.uint64).reshape(-1, self.num_bands))

    def finish(self) -> DedupKeys:
        id_orders = np.concatenate(self._id_orders) if self._id_orders else np.zeros(0, np.int64)
        ids = pa.concat_arrays(self._ids) if self._ids else pa.array([], pa.string())
        by_order = np.argsort(id_orders, kind="stable")
        orders = np.concatenate(self._orders) if self._orders else np.zeros(0, np.int64)
        exact = np.concatenate(self._exact) if self._exact else np.zeros(0, f"S{EXACT_KEY_BYTES}")
        bands = np.concatenate(self._bands) if self._bands else np.zeros((0, self.num_bands), np.uint64)
        candidates = np.argsort(orders, kind="stable")
        return DedupKeys(id_orders[by_order], ids.take(pa.array(by_order)), orders[candidates], exact[candidates], bands[candidates])


#: Verifies candidate pairs: given (anchor orders, member orders), returns (anchor orders,
#: member orders, similarities) for every pair, in any order. The single-process path
#: computes signatures in memory; the engine brings each anchor's pairs together on a worker.
PairVerifier = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class DuplicateDecisions:
    """The corpus-wide verdicts by order key; only dropped records have one. Arrays only, so
    a Ray worker reads them from shared memory without copying."""

    duplicate_id_orders: np.ndarray  # int64, sorted: rejected as repair:duplicate_id
    dropped_orders: np.ndarray  # int64, sorted: rejected by dedup
    dropped_exact: np.ndarray  # bool: exact (else near) duplicate
    dropped_cluster_ids: np.ndarray  # bytes (UTF-8 id of the kept record)
    dropped_similarity: np.ndarray  # float64
    summary: dict = field(default_factory=dict)

    def duplicate_id_mask(self, orders: np.ndarray) -> np.ndarray:
        """bool per order: is the record a repeat of an earlier record's id."""
        return _members_of(self.duplicate_id_orders, np.asarray(orders, dtype=np.int64))

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
        # Item by item: the array's fixed width depends on the longest id in the whole corpus.
        digest.update(b"\x00".join(self.dropped_cluster_ids[start:end].tolist()))
        return digest.hexdigest()

    def verdicts_for(self, orders: np.ndarray) -> dict[int, DuplicateVerdict]:
        """Verdicts of the dropped records among `orders`."""
        orders = np.asarray(orders, dtype=np.int64)
        found = _members_of(self.dropped_orders, orders)
        positions = np.searchsorted(self.dropped_orders, orders[found])
        return {
            int(order): DuplicateVerdict(
                "exact" if self.dropped_exact[i] else "near",
                self.dropped_cluster_ids[i].decode("utf-8"),
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


def lsh_anchor_pairs(bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, member) index pairs of records sorted by order: in every band, the records
    with the same band hash form a bucket, and each is paired with the bucket's first record.
    Unique pairs, anchor < member. Memory: a few arrays of the number of records."""
    n = bands.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty
    position = np.arange(n, dtype=np.int64)
    pieces = []
    for band in range(bands.shape[1]):
        hashes = bands[:, band]
        index = np.lexsort((position, hashes))  # by hash, then by order
        sorted_hashes = hashes[index]
        starts = np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]]
        if starts.all():
            continue
        group_first = np.maximum.accumulate(np.where(starts, position, 0))
        members = ~starts
        pieces.append(index[members] * n + index[group_first[members]])
    # One unique over every band's pairs (not one per band over the growing union: that sorted
    # the union again for each of the bands).
    combined = np.unique(np.concatenate(pieces)) if pieces else empty
    member, anchor = np.divmod(combined, n)
    return anchor, member


def decide_duplicates(keys: DedupKeys, threshold: float, verify: PairVerifier) -> DuplicateDecisions:
    """Duplicate ids, exact and near duplicates of the whole corpus (see the module docstring).

    `threshold`: estimated Jaccard similarity at which two records are near-duplicates
    (params.yaml `curation.dedup.threshold`). `verify` computes the similarity of candidate
    pairs where the signatures are. Raises what `verify` raises.
    """
    repeated_ids = duplicate_id_orders(keys.id_orders, keys.ids)
    alive = ~_members_of(repeated_ids, keys.candidate_orders)
    orders, exact, bands = keys.candidate_orders[alive], keys.exact[alive], keys.bands[alive]
    ids = keys.ids.take(pa.array(np.searchsorted(keys.id_orders, orders)))
    n = len(orders)

    representative = exact_representatives(exact)
    is_representative = representative == np.arange(n)
    rep_index = np.flatnonzero(is_representative)  # in order
    anchor, member = lsh_anchor_pairs(bands[rep_index])
    anchor, member = rep_index[anchor], rep_index[member]  # back to candidate indices

    similarity = np.zeros(len(anchor))
    if len(anchor):
        got_anchor, got_member, got_similarity = verify(orders[anchor], orders[member])
        similarity = _align(orders[anchor], orders[member], got_anchor, got_member, got_similarity)
    verified = similarity >= threshold
    edge_a, edge_m, edge_sim = anchor[verified], member[verified], similarity[verified]

    # Components over all candidates; exact duplicates hang on their representative.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([edge_a, np.flatnonzero(~is_representative)])
    cols = np.concatenate([edge_m, representative[~is_representative]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False) if n else (0, np.zeros(0, np.int64))
    first = np.full(label.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, label, np.arange(n))  # records are in order: the smallest index is first
    kept_index = first[label]
    best = np.zeros(n)
    np.maximum.at(best, edge_a, edge_sim)
    np.maximum.at(best, edge_m, edge_sim)

    dropped = kept_index != np.arange(n)
    exact_of_kept = dropped & (representative == kept_index)
    dropped_similarity = np.where(exact_of_kept, 1.0, np.where(is_representative, best, best[representative]))
    cluster_ids = ids.take(pa.array(kept_index[dropped])).to_pylist()
    return DuplicateDecisions(
        duplicate_id_orders=repeated_ids,
        dropped_orders=orders[dropped],
        dropped_exact=exact_of_kept[dropped],
        dropped_cluster_ids=np.array([cid.encode("utf-8") for cid in cluster_ids], dtype=bytes) if cluster_ids else np.zeros(0, "S1"),
        dropped_similarity=dropped_similarity[dropped],
        summary={
            "duplicate_ids": int(len(repeated_ids)),
            "candidates": int(n),
            "exact_duplicates": int(exact_of_kept.sum()),
            "candidate_pairs": int(len(anchor)),
            "verified_pairs": int(verified.sum()),
            "near_duplicates": int(dropped.sum() - exact_of_kept.sum()),
        },
    )


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
    collector = KeyCollector(hasher.num_bands)
    orders = np.arange(len(docs), dtype=np.int64)
    collector.add_ids(orders, [doc_id for doc_id, _ in docs])
    signatures = hasher.signatures(text for _, text in docs)
    collector.add_candidates(orders, np.array([exact_digest(text) for _, text in docs], dtype=f"S{EXACT_KEY_BYTES}"), hasher.band_hashes(signatures))
    decisions = decide_duplicates(collector.finish(), threshold, in_memory_verifier(dict(enumerate(text for _, text in docs)), hasher))
    return {docs[order][0]: verdict for order, verdict in decisions.verdicts_for(orders).items()}
