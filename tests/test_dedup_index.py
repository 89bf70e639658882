"""The persisted dedup index (`curation/dedup_index.py`): a decision extended with appended
records equals the full decision over old and new records, array for array."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hkgai_pipelines.curation import dedup, dedup_index
from hkgai_pipelines.curation.dedup import KeyStore, MinHasher, decide_duplicates, exact_digest, in_memory_verifier
from hkgai_pipelines.curation.dedup_index import DedupIndex, IndexWriter, extend_decisions
from hkgai_pipelines.curation.inputs import order_key

HASHER = MinHasher(num_perm=32, num_bands=8)


def _keys(records: list[tuple[int, str, str]], memory_bytes: int | None = None, folder=None) -> KeyStore:
    """A KeyStore of (order, id, text) records, every one a dedup candidate."""
    keys = KeyStore(HASHER.num_bands, folder, memory_bytes)
    if records:
        orders = np.array([order for order, _, _ in records], dtype=np.int64)
        keys.add_ids(orders, [record_id for _, record_id, _ in records])
        exact = np.array([exact_digest(text) for _, _, text in records], dtype="S20")
        keys.add_candidates(orders, exact, HASHER.band_hashes(HASHER.signatures(text for _, _, text in records)))
    return keys


def _decisions_equal(got, want) -> None:
    for name in ("duplicate_id_orders", "dropped_orders", "dropped_exact", "dropped_cluster", "dropped_similarity",
                 "kept_id_bytes", "kept_id_offsets", "kept_orders"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert {k: v for k, v in got.summary.items()} == want.summary


def _corpus(rng: np.random.Generator, unit: int, count: int, bases: list[str]) -> list[tuple[int, str, str]]:
    records = []
    for position in range(count):
        kind = rng.integers(0, 4)
        base = bases[rng.integers(0, len(bases))]
        if kind == 0:
            text = base  # an exact copy
        elif kind == 1:
            cut = int(rng.integers(0, len(base)))
            text = base[:cut] + "啦" + base[cut + 1:]  # a near copy
        else:
            text = "".join(rng.choice(list("香港特別行政區政府今日公布新措施市民可以申請資助計劃"), 40))
        record_id = f"u{unit}-{position}" if rng.random() > 0.05 else f"shared-{rng.integers(0, 5)}"
        records.append((order_key(unit, position), record_id, text))
    return records


def _extended(tmp_path, old, new, memory_bytes=None):
    """(the decisions of a full decision over old, then extended with new; the index's root)."""
    verify = in_memory_verifier({order: text for order, _, text in old + new}, HASHER)
    root = tmp_path / "index"
    writer = IndexWriter(root)
    decide_duplicates(_keys(old), 0.7, verify, index=writer)
    dedup_index.commit(writer.stage([(0, "a"), (1, "b")], []))
    index = DedupIndex.open(root, [(0, "a"), (1, "b")], [2])
    assert index is not None
    ids = {order: record_id for order, record_id, _ in old}
    writer = IndexWriter(root)
    decisions = extend_decisions(index, _keys(new, memory_bytes, tmp_path / "spill" if memory_bytes else None), 0.7, verify,
                                 lambda orders: [ids[int(order)] for order in orders], writer)
    dedup_index.commit(writer.stage([(0, "a"), (1, "b"), (2, "c")], index.listing["generations"]))
    return decisions, root


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("memory_bytes", [None, 1 << 14])
def test_an_extended_decision_equals_the_full_decision(tmp_path, seed, memory_bytes, monkeypatch):
    if memory_bytes:  # ids hashed and nodes written in chunks with edges inside the data
        monkeypatch.setattr(dedup, "HASH_CHUNK", 7)
        monkeypatch.setattr(dedup_index, "NODE_CHUNK", 5)
    rng = np.random.default_rng(seed)
    bases = ["".join(rng.choice(list("我哋今日去咗旺角食飯之後返屋企睇電視佢話聽日會落雨"), 30)) for _ in range(12)]
    old = _corpus(rng, 0, 150, bases) + _corpus(rng, 1, 150, bases)
    new = _corpus(rng, 2, 60, bases)
    full = decide_duplicates(_keys(old + new), 0.7, in_memory_verifier({o: t for o, _, t in old + new}, HASHER))
    extended, root = _extended(tmp_path, old, new, memory_bytes)
    _decisions_equal(extended, full)
    assert full.summary["near_duplicates"] > 20 and full.summary["exact_duplicates"] > 20 and full.summary["duplicate_ids"] > 3
    # The committed listing names two generations and one state; nothing else is left.
    listing = dedup_index.read_listing(root / "current.json")
    assert len(listing["generations"]) == 2
    assert sorted(p.name for p in root.iterdir()) == sorted(["current.json", listing["state"], *(g["folder"] for g in listing["generations"])])


def test_a_new_record_joining_two_old_clusters_drops_the_later_kept_record(tmp_path):
    """Old: A and B share no bucket, so both are kept. New: M shares a bucket with each and is
    close to both, so a full decision makes one cluster of the three and keeps A only."""
    a, b, m = order_key(0, 0), order_key(1, 0), order_key(2, 0)

    def keys(records):
        store = KeyStore(2)
        orders = np.array([order for order, _, _ in records], dtype=np.int64)
        store.add_ids(orders, [record_id for _, record_id, _ in records])
        store.add_candidates(orders, np.array([rid.encode() * 20 for _, rid, _ in records], dtype="S20"),
                             np.array([bands for _, _, bands in records], dtype=np.uint64))
        return store

    def verify(anchor, member):
        return anchor, member, np.full(len(anchor), 0.875)

    old = [(a, "A", [1, 2]), (b, "B", [3, 4])]
    new = [(m, "M", [1, 4])]
    alone = decide_duplicates(keys(old), 0.8, verify)
    full = decide_duplicates(keys(old + new), 0.8, verify)
    assert not len(alone.dropped_orders) and full.dropped_orders.tolist() == [b, m]
    root = tmp_path / "index"
    writer = IndexWriter(root)
    decide_duplicates(keys(old), 0.8, verify, index=writer)
    dedup_index.commit(writer.stage([(0, "a"), (1, "b")], []))
    index = DedupIndex.open(root, [(0, "a"), (1, "b")], [2])
    extended = extend_decisions(index, keys(new), 0.8, verify, lambda orders: [{a: "A", b: "B"}[int(o)] for o in orders],
                                IndexWriter(root))
    _decisions_equal(extended, full)
    assert [v.duplicate_of for v in extended.verdicts_for(full.dropped_orders).values()] == ["A", "A"]


def test_the_index_is_not_used_for_other_units_a_unit_inserted_before_or_a_damaged_file(tmp_path):
    old = [(order_key(0, i), f"id{i}", f"text number {i} of the corpus") for i in range(5)]
    root = tmp_path / "index"
    writer = IndexWriter(root)
    decide_duplicates(_keys(old), 0.7, in_memory_verifier({o: t for o, _, t in old}, HASHER), index=writer)
    dedup_index.commit(writer.stage([(0, "a"), (3, "d")], []))
    assert DedupIndex.open(root, [(0, "a"), (3, "d")], [4]) is not None
    assert DedupIndex.open(root, [(0, "a"), (3, "d")], []) is not None  # nothing new
    assert DedupIndex.open(root, [(0, "a")], [4]) is None  # a unit removed
    assert DedupIndex.open(root, [(0, "a"), (3, "other")], [4]) is None  # a unit changed
    assert DedupIndex.open(root, [(0, "a"), (3, "d")], [2]) is None  # inserted before an old unit
    current = root / "current.json"
    listing, sealed = dedup_index.read_listing(current), current.read_bytes()
    damaged = root / next(iter(listing["files"]))
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    assert DedupIndex.open(root, [(0, "a"), (3, "d")], [4]) is None
    damaged.write_bytes(data)
    assert DedupIndex.open(root, [(0, "a"), (3, "d")], [4]) is not None
    # The listing itself: a segment's bucket range cut by one bit ('9' -> '1' in 4096) would
    # send lookups past the segment; valid JSON that is no listing; no file at all.
    assert b'"high": 4096' in sealed
    for text in (sealed.replace(b'"high": 4096', b'"high": 4016', 1), b"null", b"[]", b'"x"', b"{}", b'{"listing": {}}'):
        current.write_bytes(text)
        assert DedupIndex.open(root, [(0, "a"), (3, "d")], [4]) is None, text
    assert DedupIndex.open(tmp_path / "none", [], [0]) is None
