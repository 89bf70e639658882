"""The curation engine on a Ray cluster of two nodes (`ray.cluster_utils.Cluster`: two raylets
with their own object stores on this machine) keeps the same ids as on one: the driver's keys
and decisions travel between nodes, and the steps tasks spread over both (SPREAD)."""

from __future__ import annotations

import pytest
import ray

from hkgai_pipelines.curation import engine
from tests.curation_corpus import KEPT, REJECTED, read_outputs, summary, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("shards") / "corpus")


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    small_store = 100 * 1024 * 1024  # the fixture corpus needs little; the default is 30% of RAM per node
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": small_store, "include_dashboard": False})
    cluster.add_node(num_cpus=2, object_store_memory=small_store)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow  # two raylets start and each loads the language models: a minute on 2 cores
def test_a_two_node_cluster_keeps_the_same_ids(two_nodes, corpus, curation_params, tmp_path):
    assert len([node for node in ray.nodes() if node["Alive"]]) == 2
    run = engine.curate_files([corpus], curation_params, tmp_path / "out", licence="x", workers=3, batch_size=2)
    kept, rejected, _, stats = read_outputs(tmp_path / "out")
    assert summary(kept, rejected) == (KEPT, REJECTED)
    assert (stats["input_records"], stats["kept"], stats["rejected"], stats["quarantined"]) == (13, 5, 7, 1)
    assert (run.workers, run.cluster) == (3, "running Ray session")


@pytest.mark.slow  # a second driver connects, and the cluster's workers load the models again
def test_ray_address_connects_to_the_cluster_and_leaves_it_running(two_nodes, corpus, curation_params, tmp_path, monkeypatch):
    """The production path: no Ray session in the process, RAY_ADDRESS names the cluster (as
    KubeRay sets it for a RayJob's driver). The engine connects, uses every CPU of the cluster
    when no worker count is given, and disconnects at the end without stopping the cluster."""
    ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", two_nodes.address)
    try:
        run = engine.curate_files([corpus], curation_params, tmp_path / "out", licence="x", batch_size=2)
        assert not ray.is_initialized()
    finally:
        ray.init(address=two_nodes.address, log_to_driver=False, configure_logging=False)  # the module's session, for the teardown
    assert (run.workers, run.cluster) == (3, f"Ray cluster {two_nodes.address}")
    assert summary(*read_outputs(tmp_path / "out")[:2]) == (KEPT, REJECTED)
    assert len([node for node in ray.nodes() if node["Alive"]]) == 2
