"""`dedup.Components`: union-find over the candidates, fed a batch of edges at a time. Its
components equal scipy's connected components of all the edges at once, whatever the batches,
and each component's root is its first record in order."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hkgai_pipelines.curation.dedup import Components, NarrowKeys


def test_a_chain_fed_backwards_keeps_its_first_record_and_each_nodes_best_similarity():
    nodes = np.array([10, 20, 30, 40, 50, 60], dtype=np.int64)
    components = Components(nodes)
    components.union(np.array([50, 40]), np.array([60, 50]), np.array([0.9, 0.8]))
    components.union(np.array([30]), np.array([40]), np.array([0.85]))
    components.union(np.array([10]), np.array([20]), np.array([1.0]))
    dropped, cluster, best, kept = components.dropped()
    assert dropped.tolist() == [20, 40, 50, 60]
    assert kept.tolist() == [10, 30]
    assert cluster.tolist() == [0, 1, 1, 1]
    assert best.tolist() == [1.0, 0.85, 0.9, 0.9]


def test_edges_that_hang_one_root_under_several_roots_join_them_all():
    # 5's root is linked to 1, 2 and 3 in the same batch: only the smallest wins the first
    # round, and the others must still end up in 1's component.
    components = Components(np.arange(7, dtype=np.int64))
    components.union(np.array([5, 5, 5, 6]), np.array([3, 2, 1, 4]))
    dropped, cluster, _, kept = components.dropped()
    assert dict(zip(dropped.tolist(), kept[cluster].tolist())) == {2: 1, 3: 1, 5: 1, 6: 4}


def test_an_edge_to_a_record_that_is_not_a_candidate_raises():
    components = Components(np.array([1, 2, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="not a candidate"):
        components.union(np.array([1]), np.array([4]))
    with pytest.raises(ValueError, match="not a candidate"):
        Components(np.zeros(0, dtype=np.int64)).union(np.array([1]), np.array([2]))


def test_no_nodes_no_edges():
    components = Components(np.zeros(0, dtype=np.int64))
    components.union(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
    assert [len(part) for part in components.dropped()] == [0, 0, 0, 0]


@pytest.mark.parametrize("batches", [1, 3, 17])
@pytest.mark.parametrize("shifts", [NarrowKeys.SHIFTS, ()])
def test_random_graphs_in_any_batches_equal_scipys_components(batches, shifts, monkeypatch):
    monkeypatch.setattr(NarrowKeys, "SHIFTS", shifts)  # () keeps the order keys int64
    rng = np.random.default_rng(batches)
    for _ in range(20):
        n = int(rng.integers(2, 400))
        nodes = np.sort(rng.choice(2**62, size=n, replace=False)).astype(np.int64)
        edges = int(rng.integers(0, 2 * n))
        a, b = rng.integers(0, n, edges), rng.integers(0, n, edges)
        similarity = rng.random(edges)
        components = Components(nodes)
        for part in np.array_split(np.arange(edges), batches):
            components.union(nodes[a[part]], nodes[b[part]], similarity[part])
        dropped, cluster, best, kept = components.dropped()

        _, label = connected_components(coo_matrix((np.ones(edges), (a, b)), shape=(n, n)), directed=False)
        first = np.full(label.max() + 1, n)
        np.minimum.at(first, label, np.arange(n))
        expected_best = np.zeros(n)
        for ends in (a, b):
            np.maximum.at(expected_best, ends, similarity)
        is_dropped = first[label] != np.arange(n)
        assert dropped.tolist() == nodes[is_dropped].tolist()
        assert kept[cluster].tolist() == nodes[first[label]][is_dropped].tolist()
        assert kept.tolist() == np.unique(nodes[first[label]][is_dropped]).tolist()
        assert best.tolist() == expected_best[is_dropped].tolist()


def test_a_long_chain_fed_in_random_batches_is_one_component_with_every_node_at_its_root():
    """A chain hooks each root under the next within one round; without shortcutting, finding
    a root walked the chain once per query (3 million nodes took minutes). After every call
    each node points straight at its root, so the next call's searches take one step."""
    n = 100_000
    nodes = np.arange(n, dtype=np.int64) * 3
    order = np.random.default_rng(1).permutation(n - 1)
    components = Components(nodes)
    for part in np.array_split(order, 10):
        components.union(nodes[part], nodes[part + 1])
        assert np.array_equal(components.parent[components.parent], components.parent)
    dropped, cluster, _, kept = components.dropped()
    assert kept.tolist() == [0] and len(dropped) == n - 1 and not cluster.any()


def test_similarities_are_held_as_float32_until_one_would_round():
    """MinHash estimates k/128 are exact in float32 (4 bytes a candidate fewer); a verifier
    whose similarities are not turns the store to float64 without changing any held value."""
    components = Components(np.array([1, 2, 3, 4], dtype=np.int64))
    components.union(np.array([1]), np.array([2]), np.array([105 / 128]))
    assert components.best.dtype == np.float32
    components.union(np.array([3]), np.array([4]), np.array([0.1]))
    assert components.best.dtype == np.float64
    dropped, _, best, _ = components.dropped()
    assert dropped.tolist() == [2, 4] and best.tolist() == [105 / 128, 0.1]


def test_verdicts_of_exact_copies_follow_their_representative():
    """An exact copy stands in the pairs through its group's representative (the group's first
    record): it is an exact duplicate of its cluster's kept record when that representative
    is the kept one, and otherwise a near duplicate with the representative's similarity."""
    from hkgai_pipelines.curation.dedup import KeyStore, decide_duplicates

    # 0 "kept" and 1 "rep" share a band hash (a candidate pair of similarity 104/128); 2 is an
    # exact copy of 1; 4 an exact copy of 3, which has no near neighbour.
    keys = KeyStore(1)
    orders = np.arange(5, dtype=np.int64)
    keys.add_ids(orders, ["kept", "rep", "copy-of-rep", "other", "copy-of-other"])
    exact = np.array([b"a" * 20, b"b" * 20, b"b" * 20, b"c" * 20, b"c" * 20], dtype="S20")
    keys.add_candidates(orders, exact, np.array([[7], [7], [8], [9], [10]], dtype=np.uint64))

    def verify(anchor, member):
        return anchor, member, np.full(len(anchor), 104 / 128)

    decisions = decide_duplicates(keys, 0.8, verify)
    verdicts = {order: (v.kind, v.duplicate_of, v.similarity) for order, v in decisions.verdicts_for(orders).items()}
    assert verdicts == {1: ("near", "kept", 104 / 128), 2: ("near", "kept", 104 / 128), 4: ("exact", "other", 1.0)}


@pytest.mark.parametrize("shifts", [NarrowKeys.SHIFTS, ()])
def test_narrow_keys_sort_and_find_as_the_keys_do(shifts, monkeypatch):
    """Order keys (unit << 40 | position) held as uint32 where their high parts are few; with
    no shift to try they stay int64. Either way: the same positions, the same keys back."""
    from hkgai_pipelines.curation.inputs import order_key

    monkeypatch.setattr(NarrowKeys, "SHIFTS", shifts)
    monkeypatch.setattr(NarrowKeys, "CHUNK", 7)  # chunk edges inside the data
    rng = np.random.default_rng(0)
    keys = np.unique([order_key(int(unit), int(position)) for unit, position in
                      zip(rng.integers(0, 5, 300), rng.integers(0, 2**31, 300))]).astype(np.int64)
    narrow = NarrowKeys(keys)
    assert narrow.values.dtype == (np.uint32 if shifts else np.int64)
    assert np.all(np.diff(narrow.values.astype(np.int64)) > 0)
    picked = rng.permutation(len(keys))[:50]
    assert narrow.positions(keys[picked]).tolist() == picked.tolist()
    assert narrow.wide(narrow.values).tolist() == keys.tolist()
    for stranger in (keys[0] + 1 if keys[1] != keys[0] + 1 else keys[0] - 1, order_key(9, 0), -1):
        with pytest.raises(ValueError, match="not a candidate"):
            narrow.positions(np.array([keys[3], stranger]))


def test_narrow_keys_of_the_1_gib_runs_shape_use_four_bytes():
    """8 files of 1.6 million records: high parts at shift 28 are the 8 units."""
    from hkgai_pipelines.curation.inputs import order_key

    keys = np.array([order_key(unit, position) for unit in range(8) for position in (0, 1_600_000)], dtype=np.int64)
    narrow = NarrowKeys(keys)
    assert (narrow.shift, len(narrow.highs), narrow.values.dtype) == (28, 8, np.uint32)
