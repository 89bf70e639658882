"""One contract for every VectorStore implementation: the embedded LanceDB store always,
Weaviate when WEAVIATE_URL points at a live server (>= 1.32, for aliases)."""

import os
import uuid

import numpy as np
import pytest

from hkgai_pipelines.rag.chunking import chunk_document
from hkgai_pipelines.rag.store import EmbedderMismatchError, VectorStoreError, check_embedder

DOCS = [
    ("kb/hkid", "點樣補領身份證", "身份證唔見咗要去人事登記處補領。記得要網上預約。", "yue", "kb"),
    ("kb/mtr", "The MTR", "The MTR opened in October 1979. It now has ten heavy rail lines.", "en", "kb"),
    ("kb/mpf", "強積金", "強積金於二零零零年十二月實施。僱主和僱員各供款百分之五。", "zh-hant", "kb"),
    ("faq/octopus", "八達通", "八達通可以喺港鐵、巴士同便利店用。", "yue", "faq"),
]


def _store(kind, tmp_path):
    if kind == "embedded":
        from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore

        return EmbeddedVectorStore(tmp_path / "vectors")
    from hkgai_pipelines.rag.weaviate_store import WeaviateVectorStore

    return WeaviateVectorStore(os.environ["WEAVIATE_URL"], os.environ.get("WEAVIATE_API_KEY"))


@pytest.fixture(params=["embedded", pytest.param("weaviate", marks=pytest.mark.skipif(not os.environ.get("WEAVIATE_URL"), reason="WEAVIATE_URL not set"))])
def store(request, tmp_path):
    store = _store(request.param, tmp_path)
    yield store
    if request.param == "weaviate":
        store.close()


@pytest.fixture
def names():
    suffix = uuid.uuid4().hex[:8]
    return f"Contract_{suffix}_a", f"Contract_{suffix}_b", f"ContractAlias{suffix}"


def _rows(use_embedder):
    chunks = [c for d in DOCS for c in chunk_document(d[0], d[1], d[2], source=d[4], lang=d[3], licence="CC0-1.0", updated_at="2026-11-01")]
    rows = [c.to_row() for c in chunks]
    return rows, use_embedder.embed([r["content"] for r in rows])


def _query(store, version, embedder, text, **kwargs):
    return store.query(version, embedder.embed([text])[0], text, **kwargs)


def test_versions_upsert_fetch_and_metadata(store, names, use_embedder):
    a, _, _ = names
    info = store.create_version(a, use_embedder.name, use_embedder.dim)
    assert (info.name, info.embedder, info.dim, info.state) == (a, "use-multilingual-v3", 512, "building")
    rows, vectors = _rows(use_embedder)
    store.upsert(a, rows, vectors)
    store.upsert(a, rows[:2], vectors[:2])  # upsert of existing ids does not duplicate
    store.finalize(a)
    fetched, fetched_vectors = store.fetch(a)
    assert sorted(r["id"] for r in fetched) == sorted(r["id"] for r in rows)
    by_id = {r["id"]: v for r, v in zip(fetched, fetched_vectors)}
    assert np.allclose(by_id[rows[0]["id"]], vectors[0], atol=1e-5)
    assert store.version_info(a).chunks == len(rows)
    assert a in [v.name for v in store.list_versions()]
    with pytest.raises(VectorStoreError):
        store.create_version(a, use_embedder.name, use_embedder.dim)


def test_hybrid_query_and_filters(store, names, use_embedder):
    a, _, _ = names
    store.create_version(a, use_embedder.name, use_embedder.dim)
    store.upsert(a, *_rows(use_embedder))
    store.finalize(a)
    assert _query(store, a, use_embedder, "點樣續領身份證？", k=2)[0].doc_id == "kb/hkid"
    assert _query(store, a, use_embedder, "When did the MTR open?", k=2)[0].doc_id == "kb/mtr"
    for alpha in (0.0, 0.5, 1.0):
        assert _query(store, a, use_embedder, "強積金供款", k=1, alpha=alpha)[0].doc_id == "kb/mpf"
    only_en = _query(store, a, use_embedder, "身份證", k=5, lang="en")
    assert {h.lang for h in only_en} == {"en"}
    only_faq = _query(store, a, use_embedder, "八達通", k=5, source="faq")
    assert [h.doc_id for h in only_faq] == ["faq/octopus"]


def test_delete_removes_chunks(store, names, use_embedder):
    a, _, _ = names
    store.create_version(a, use_embedder.name, use_embedder.dim)
    rows, vectors = _rows(use_embedder)
    store.upsert(a, rows, vectors)
    store.delete(a, [rows[0]["id"]])
    assert rows[0]["id"] not in {r["id"] for r in store.fetch(a)[0]}


def test_alias_swap_and_drop(store, names, use_embedder):
    a, b, alias = names
    for version in (a, b):
        store.create_version(version, use_embedder.name, use_embedder.dim)
        store.mark_complete(version)
    assert store.get_alias(alias) is None
    assert store.swap_alias(alias, a) is None
    assert store.get_alias(alias) == a
    assert store.swap_alias(alias, b) == a
    assert store.get_alias(alias) == b
    with pytest.raises(VectorStoreError):
        store.drop_version(b)  # live behind the alias
    store.drop_version(a)
    assert a not in [v.name for v in store.list_versions()]
    with pytest.raises(VectorStoreError):
        store.swap_alias(alias, a)
    assert store.get_alias(alias) == b


def test_embedder_mismatch_is_an_error(store, names, use_embedder):
    a, _, _ = names
    store.create_version(a, use_embedder.name, use_embedder.dim)
    with pytest.raises(EmbedderMismatchError, match="was built with use-multilingual-v3 \\(512-d\\)"):
        check_embedder(store.version_info(a), "st:bge-m3", 1024)


def test_versions_are_building_until_marked_complete_and_never_served_before(store, names, use_embedder):
    a, b, alias = names
    store.create_version(a, use_embedder.name, use_embedder.dim)
    store.create_version(b, use_embedder.name, use_embedder.dim)
    rows, vectors = _rows(use_embedder)
    store.upsert(b, rows[:1], vectors[:1])
    states = {v.name: (v.state, v.complete) for v in store.list_versions()}
    assert states[a] == states[b] == ("building", False)  # listed, with their state
    with pytest.raises(VectorStoreError, match="still building"):
        store.swap_alias(alias, b)
    assert store.get_alias(alias) is None
    info = store.mark_complete(b)
    assert (info.state, info.complete, info.chunks, info.embedder) == ("complete", True, 1, use_embedder.name)
    assert store.version_info(b).state == "complete"
    assert {v.name: v.state for v in store.list_versions()}[b] == "complete"
    assert store.swap_alias(alias, b) is None and store.get_alias(alias) == b
    store.drop_version(a)  # a building version can be dropped
    with pytest.raises(VectorStoreError):
        store.mark_complete(a)
