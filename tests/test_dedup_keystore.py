"""The corpus-wide decision one range of hash buckets at a time (`curation/keystore.py`,
`dedup.KeyStore`): rows spilled to disk and decided in many small ranges give the decision
taken on every key at once, so the driver's memory can stay within a budget."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hkgai_pipelines.curation import dedup, keystore
from hkgai_pipelines.curation.keystore import FINE_BUCKETS, SortedRuns, bucket_of

SCHEMA = pa.schema([("bucket", pa.int32()), ("value", pa.int64())])


@pytest.mark.parametrize("spilled", [False, True])
def test_sorted_runs_give_every_row_once_by_bucket_range(tmp_path, spilled):
    runs = SortedRuns(SCHEMA, tmp_path / "runs" if spilled else None, flush_bytes=64)  # a run per append
    for start in range(0, 1000, 100):
        values = np.arange(start, start + 100)
        runs.append(pa.table({"bucket": (values * 7) % FINE_BUCKETS, "value": values}))
    assert runs.rows == 1000 and len(list((tmp_path / "runs").iterdir()) if spilled else []) == (10 if spilled else 0)
    ranges = runs.ranges(max_rows=150)
    assert ranges[0][0] == 0 and ranges[-1][1] == FINE_BUCKETS
    assert all(high == low for (_, high), (low, _) in zip(ranges, ranges[1:]))  # contiguous
    tables = [runs.read(low, high) for low, high in ranges]
    assert all(table.num_rows <= 150 for table in tables) and len(tables) == 7
    values = sorted(v for table in tables for v in table.column("value").to_pylist())
    assert values == list(range(1000))
    assert runs.ranges(None) == [(0, FINE_BUCKETS)] == runs.ranges(1000)


def test_runs_stay_in_memory_up_to_their_budget_then_all_go_to_disk(tmp_path):
    runs = SortedRuns(SCHEMA, tmp_path / "runs", flush_bytes=64, memory_bytes=5000)
    values = np.arange(100)
    for _ in range(3):  # 1,200 bytes a run
        runs.append(pa.table({"bucket": values.astype(np.int32), "value": values}))
    assert not (tmp_path / "runs").exists()
    for _ in range(2):
        runs.append(pa.table({"bucket": values.astype(np.int32), "value": values}))
    assert len(list((tmp_path / "runs").iterdir())) == 5  # the held runs too
    assert runs.read(0, 10).num_rows == 50


def test_runs_on_disk_are_split_into_one_file_per_range(tmp_path, monkeypatch):
    monkeypatch.setattr(keystore, "SPLIT_MIN_READS", 0)  # ten runs and seven ranges are worth it here
    runs = SortedRuns(SCHEMA, tmp_path / "runs", flush_bytes=64)
    for start in range(0, 1000, 100):
        values = np.arange(start, start + 100)
        runs.append(pa.table({"bucket": (values * 7) % FINE_BUCKETS, "value": values}))
    ranges = runs.ranges(max_rows=150)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ranges-7-10"]  # the ten runs are gone
    assert len(list((tmp_path / "runs" / "ranges-7-10").iterdir())) == 7
    assert sorted(v for low, high in ranges for v in runs.read(low, high).column("value").to_pylist()) == list(range(1000))
    assert runs.read(0, FINE_BUCKETS).num_rows == 1000  # any other range still reads every file
    # Split again with other ranges (the range files are not sorted by bucket), then add rows.
    for max_rows in (200, 100):
        ranges = runs.ranges(max_rows=max_rows)
        tables = [runs.read(low, high) for low, high in ranges]
        assert all(((t.column("bucket").to_numpy() >= low) & (t.column("bucket").to_numpy() < high)).all()
                   for t, (low, high) in zip(tables, ranges))
        assert sorted(v for t in tables for v in t.column("value").to_pylist()) == list(range(1000))
    runs.append(pa.table({"bucket": np.array([5], dtype=np.int32), "value": [1000]}))
    assert sum(runs.read(low, high).num_rows for low, high in ranges) == 1001


def test_a_split_holds_about_one_run_not_every_run_a_range_took_rows_from(tmp_path, monkeypatch):
    """Twenty 800 KB runs split into 80 ranges, four written at a time, whose buffers never
    fill: the split's Arrow memory stays near one run's (each range's rows are copied out of
    the run it was read from)."""
    monkeypatch.setattr(keystore, "SPLIT_MIN_READS", 0)
    monkeypatch.setattr(keystore, "SPLIT_FAN_OUT", 4)
    monkeypatch.setattr(keystore, "SPLIT_BUFFER_BYTES", 1 << 40)
    runs = SortedRuns(SCHEMA, tmp_path / "runs", flush_bytes=1)
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.integers(0, 2**62, 50_000)
        runs.append(pa.table({"bucket": (values % FINE_BUCKETS).astype(np.int32), "value": values}))
    peak, write = [0], pq.ParquetWriter.write_table

    def watched(self, table, *args, **kwargs):
        peak[0] = max(peak[0], pa.total_allocated_bytes())
        return write(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", watched)
    baseline = pa.total_allocated_bytes()
    ranges = runs.ranges(max_rows=1_000_000 // 80)
    # Measured: 6.2 MB (four writers' buffers, one run, the copied rows); 17.4 MB when each
    # range kept a slice of every run.
    assert len(ranges) >= 64 and peak[0] - baseline < 10_000_000


def test_bucket_of_spreads_structured_order_keys():
    """Order keys are unit << 40 | position: consecutive positions of one unit, and the same
    position of consecutive units, fill the buckets evenly."""
    positions = bucket_of(np.arange(100_000, dtype=np.int64))
    units = bucket_of(np.arange(100_000, dtype=np.int64) << 40)
    for buckets in (positions, units):
        counts = np.bincount(buckets, minlength=FINE_BUCKETS)
        assert buckets.min() >= 0 and buckets.max() < FINE_BUCKETS
        assert counts.min() >= 10 and counts.max() <= 40  # 24.4 a bucket on average


def _keys(seed: int, n: int = 4000, num_bands: int = 8):
    """Random keys with planted repeated ids, exact duplicates and shared band hashes."""
    rng = np.random.default_rng(seed)
    orders = np.sort(rng.choice(1 << 20, n, replace=False)).astype(np.int64) << 20
    ids = [f"doc-{rng.integers(0, n * 4)}" for _ in range(n)]
    exact = np.array([rng.bytes(20) for _ in range(n)], dtype="S20")
    copies = rng.random(n) < 0.05
    exact[copies] = exact[rng.integers(0, n, copies.sum())]
    bands = rng.integers(0, 1 << 62, (n, num_bands), dtype=np.uint64)
    for _ in range(n // 5):
        i, j = rng.integers(0, n, 2)
        shared = rng.integers(0, num_bands, rng.integers(1, 3))
        bands[j, shared] = bands[i, shared]
    candidate = rng.random(n) < 0.9
    return orders, ids, exact, bands, candidate


def _pseudo_similarity(anchor, member):
    """A similarity in [0, 1) that depends only on the pair, answered in reverse order."""
    with np.errstate(over="ignore"):
        mixed = anchor.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ member.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    return anchor[::-1], member[::-1], ((mixed >> np.uint64(40)).astype(np.float64) / (1 << 24))[::-1]


def _decide(keys, store, batches):
    orders, ids, exact, bands, candidate = keys
    rng = np.random.default_rng(7)
    for chunk in np.array_split(rng.permutation(len(orders)), batches):  # batches in any order
        store.add_ids(orders[chunk], [ids[i] for i in chunk])
        chunk = chunk[candidate[chunk]]
        store.add_candidates(orders[chunk], exact[chunk], bands[chunk])
    return dedup.decide_duplicates(store, 0.5, _pseudo_similarity)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_decision_in_many_spilled_ranges_equals_the_decision_at_once(tmp_path, seed, monkeypatch):
    monkeypatch.setattr(keystore, "SPLIT_MIN_READS", 0)
    keys = _keys(seed)
    at_once = _decide(keys, dedup.KeyStore(8), batches=3)
    store = dedup.KeyStore(8, tmp_path / "keys", memory_bytes=dedup.DECISION_BYTES_PER_ROW * 4000, flush_bytes=64 * 1024)
    ranged = _decide(keys, store, batches=11)
    assert len(store.bands.ranges(store.max_rows)) >= 15 and len(store.ids.ranges(store.max_rows)) == 2
    # Past a quarter of the budget the runs went to disk, and were split into one file per range.
    assert len(list((tmp_path / "keys" / "bands").glob(f"ranges-{len(store.bands.ranges(store.max_rows))}-*/range-*"))) >= 15
    for name in ("duplicate_id_orders", "dropped_orders", "dropped_exact", "dropped_cluster", "dropped_similarity", "kept_id_bytes",
                 "kept_id_offsets"):
        assert np.array_equal(getattr(at_once, name), getattr(ranged, name)), name
    assert ranged.summary == at_once.summary
    summary = at_once.summary
    assert min(summary["duplicate_ids"], summary["exact_duplicates"], summary["near_duplicates"]) > 50


def test_the_kept_record_of_a_cluster_is_the_first_in_order_across_ranges(tmp_path):
    """Orders 100..105, ids given in reverse: 101 repeats 100's id "a"; 103 is an exact copy of
    102 ("b"); 102 and 104 share band 0's hash 3 (103 would too, but an exact copy is not a
    candidate), 104 and 105 band 1's hash 32. Pairs (102, 104) and (104, 105) both verify, so
    {102, 103, 104, 105} is one cluster kept by 102: 103 an exact duplicate (similarity 1.0),
    104 and 105 near ones with their best similarity."""
    store = dedup.KeyStore(2, tmp_path / "keys", memory_bytes=2 * dedup.DECISION_BYTES_PER_ROW)  # a range per bucket
    orders = np.arange(100, 106, dtype=np.int64)
    store.add_ids(orders[::-1], ["e", "d", "c", "b", "a", "a"])  # 101 repeats 100's id "a"
    exact = np.array([b"0" * 20, b"1" * 20, b"2" * 20, b"2" * 20, b"4" * 20, b"5" * 20], dtype="S20")
    bands = np.array([[1, 10], [2, 20], [3, 30], [3, 31], [3, 32], [9, 32]], dtype=np.uint64)
    store.add_candidates(orders, exact, bands)
    similarity = {(102, 104): 0.9, (104, 105): 0.95}

    def verify(anchor, member):
        return anchor, member, np.array([similarity.get((a, m), 0.1) for a, m in zip(anchor.tolist(), member.tolist())])

    decisions = dedup.decide_duplicates(store, 0.8, verify)
    assert decisions.duplicate_id_orders.tolist() == [101]
    verdicts = {order: (v.kind, v.duplicate_of, v.similarity) for order, v in decisions.verdicts_for(orders).items()}
    assert verdicts == {103: ("exact", "b", 1.0), 104: ("near", "b", 0.95), 105: ("near", "b", 0.95)}
    assert decisions.summary == {"duplicate_ids": 1, "candidates": 5, "exact_duplicates": 1, "candidate_pairs": 2,
                                 "verified_pairs": 2, "near_duplicates": 2}


def test_dropped_records_share_their_kept_records_id_whatever_its_length():
    """An id as long as a crawled page's URL is stored once, not at every dropped record's width."""
    store = dedup.KeyStore(2)
    orders = np.arange(1, 7, dtype=np.int64)
    ids = ["https://example.hk/" + "x" * 5000, "a", "b", "c", "d", "e"]
    store.add_ids(orders, ids)
    exact = np.array([b"K1" * 10] * 3 + [b"K2" * 10] * 3, dtype="S20")
    bands = np.arange(12, dtype=np.uint64).reshape(6, 2)  # no shared band: exact duplicates only
    store.add_candidates(orders, exact, bands)
    decisions = dedup.decide_duplicates(store, 0.5, _pseudo_similarity)
    assert decisions.dropped_orders.tolist() == [2, 3, 5, 6]
    verdicts = decisions.verdicts_for(orders)
    assert [verdicts[order].duplicate_of for order in (2, 3, 5, 6)] == [ids[0], ids[0], "c", "c"]
    assert decisions.kept_id_bytes.nbytes == len(ids[0]) + 1 and decisions.dropped_cluster.tolist() == [0, 0, 1, 1]
    assert decisions.range_digest(0, 4) != decisions.range_digest(4, 7)


@pytest.mark.parametrize("copy_bytes", [1, 7, 1024 * 1024])
def test_kept_ids_are_placed_exactly_whatever_the_slices(tmp_path, monkeypatch, copy_bytes):
    """`_ids_of` copies the kept ids into place a slice of ID_COPY_BYTES at a time: multi-byte
    UTF-8, empty and long ids, across several ranges of stored ids, come out as they went in."""
    monkeypatch.setattr(dedup, "ID_COPY_BYTES", copy_bytes)
    store = dedup.KeyStore(1, tmp_path / "keys", 64 * 1024)  # a budget small enough for several ranges
    orders = np.arange(3000, dtype=np.int64) * 5 + 1
    ids = [["香港", "", "x" * 700, "𨋢-𠵱", "e\u0301"][order % 5] + f"/{order}" if order % 7 else "" for order in orders.tolist()]
    store.add_ids(orders, ids)
    wanted = orders[::3]
    utf8, starts = dedup._ids_of(store, wanted)
    assert [utf8[starts[i]:starts[i + 1]].tobytes().decode("utf-8") for i in range(len(wanted))] == ids[::3]
    assert len(store.ids.ranges(store.max_rows)) > 1


def test_pairs_are_verified_by_candidate_component_and_a_giant_one_by_anchor(tmp_path):
    """Each range of verification holds whole candidate components, so a record is gathered
    for one range; a component with more pairs than a range holds (a chain of 60 records, 59
    pairs, each with its own anchor, against 40 pairs a range) is split by anchor. Either
    way the decision is the one taken at once."""
    orders, ids, exact, bands, candidate = _keys(3)
    chain = np.flatnonzero(candidate)[:60]
    bands[chain] = (np.uint64(1) << np.uint64(63)) + np.arange(60 * 8, dtype=np.uint64).reshape(60, 8)  # linked to no other
    for step, (i, j) in enumerate(zip(chain[:-1], chain[1:])):
        bands[j, step % 8] = bands[i, step % 8] = (1 << 62) + step  # i and j alone share it
    keys = orders, ids, exact, bands, candidate
    at_once = _decide(keys, dedup.KeyStore(8), batches=3)
    seen = []

    def recording(anchor, member):
        seen.append(np.unique(np.r_[anchor, member]))
        return _pseudo_similarity(anchor, member)

    store = dedup.KeyStore(8, tmp_path / "keys", memory_bytes=dedup.VERIFY_BYTES_PER_PAIR * 2 * 40, flush_bytes=64 * 1024)
    assert store.max_pairs == 40
    store.add_ids(orders, ids)
    store.add_candidates(orders[candidate], exact[candidate], bands[candidate])
    ranged = dedup.decide_duplicates(store, 0.5, recording)
    for name in ("duplicate_id_orders", "dropped_orders", "dropped_exact", "dropped_cluster", "dropped_similarity", "kept_id_bytes"):
        assert np.array_equal(getattr(at_once, name), getattr(ranged, name)), name
    assert len(seen) > 10
    records, ranges = np.unique(np.concatenate(seen), return_counts=True)
    # Only the chain's records are gathered for more than one range.
    assert set(records[ranges > 1].tolist()) <= set(orders[chain].tolist()) and (ranges > 1).sum() > 10
