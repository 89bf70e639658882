"""`dedup.Components`: union-find over the candidates, fed a batch of edges at a time. Its
components equal scipy's connected components of all the edges at once, whatever the batches,
and each component's root is its first record in order."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hkgai_pipelines.curation.dedup import Components


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
def test_random_graphs_in_any_batches_equal_scipys_components(batches):
    rng = np.random.default_rng(batches)
    for _ in range(20):
        n = int(rng.integers(2, 400))
        nodes = np.sort(rng.choice(10**9, size=n, replace=False)).astype(np.int64)
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
