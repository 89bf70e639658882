"""The incremental blue-green refresh: embed only what changed, swap only after the gate."""

import pytest

from tests.conftest import CountingEmbedder
from hkgai_pipelines.rag.chunking import chunk_document
from hkgai_pipelines.rag.index import IndexRefresher, RetrievalGateError, new_version_name
from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore
from hkgai_pipelines.rag.retrieval_eval import Question
from hkgai_pipelines.rag.store import VectorStoreError

DOCS = {
    "kb/hkid": ("補領身份證", "身份證唔見咗要去人事登記處補領。記得要網上預約。新證大約十個工作天可以攞。"),
    "kb/mtr": ("The MTR", "The MTR opened in October 1979. It now has ten heavy rail lines. Fares depend on distance."),
    "kb/mpf": ("強積金", "強積金於二零零零年十二月實施。僱主和僱員各供款百分之五。供款上限為每月一千五百元。"),
}
QUESTIONS = [
    Question("點樣補領身份證？", ("kb/hkid",)),
    Question("When did the MTR open?", ("kb/mtr",)),
    Question("強積金供款比率是多少？", ("kb/mpf",)),
]


def _chunks(docs, updated_at="t"):
    return [
        c
        for doc_id, (title, body) in docs.items()
        for c in chunk_document(doc_id, title, body, source="kb", lang="x", licence="x", updated_at=updated_at, target_chars=40, overlap_chars=0)
    ]


@pytest.fixture
def store(tmp_path):
    return EmbeddedVectorStore(tmp_path / "vectors")


def _edited(n):
    """DOCS with one MTR sentence edited: a real change, so a refresh makes a new version."""
    return {**DOCS, "kb/mtr": ("The MTR", f"The MTR opened in October 1979. It now has ten heavy rail lines. Edit {n}.")}


def _refresher(store, embedder, **kwargs):
    defaults = {"min_recall_at_5": 1.0, "min_mrr": 0.9, "keep_versions": 2}
    return IndexRefresher(store, embedder, **{**defaults, **kwargs})


def test_first_build_embeds_everything_and_swaps(store, counting_embedder):
    chunks = _chunks(DOCS)
    result = _refresher(store, counting_embedder).refresh(chunks, QUESTIONS)
    assert (result.embedded, result.carried, result.removed, result.previous) == (len(chunks), 0, 0, None)
    assert store.get_alias("HkKnowledge") == result.version
    assert (result.report.recall_at_k, result.report.mrr) == (1.0, 1.0)


def test_changing_one_document_reembeds_only_its_chunks(store, counting_embedder):
    refresher = _refresher(store, counting_embedder)
    first = refresher.refresh(_chunks(DOCS), QUESTIONS)
    changed = dict(DOCS)
    changed["kb/mtr"] = ("The MTR", "The MTR opened in October 1979. It now has eleven heavy rail lines. Fares depend on distance.")
    before = counting_embedder.texts
    second = refresher.refresh(_chunks(changed), QUESTIONS)
    # one MTR chunk changed text: 1 new chunk embedded (plus the 3 question embeddings of the
    # retrieval check), every other chunk carried over, the old MTR chunk left out
    assert (second.embedded, second.removed) == (1, 1)
    assert second.carried == len(_chunks(changed)) - 1
    assert counting_embedder.texts - before == 1 + len(QUESTIONS)
    assert second.previous == first.version
    assert store.get_alias("HkKnowledge") == second.version


def test_embedder_failure_half_way_leaves_alias_and_drops_partial_version(store, use_embedder):
    good = _refresher(store, use_embedder).refresh(_chunks(DOCS), QUESTIONS)
    failing = CountingEmbedder(use_embedder, fail_after=0)
    changed = {**DOCS, "kb/new": ("新文件", "呢份係新文件。要重新嵌入。")}
    with pytest.raises(RuntimeError, match="embedder failed half-way"):
        _refresher(store, failing).refresh(_chunks(changed), QUESTIONS)
    assert store.get_alias("HkKnowledge") == good.version
    assert [v.name for v in store.list_versions()] == [good.version]
    # the next run starts clean and succeeds
    assert _refresher(store, use_embedder).refresh(_chunks(changed), QUESTIONS).embedded == 1


def test_store_refusing_writes_leaves_alias(store, use_embedder, monkeypatch):
    good = _refresher(store, use_embedder).refresh(_chunks(DOCS), QUESTIONS)

    def refuse(*args, **kwargs):
        raise VectorStoreError("store is read-only")

    monkeypatch.setattr(store, "upsert", refuse)
    with pytest.raises(VectorStoreError, match="read-only"):
        _refresher(store, use_embedder).refresh(_chunks(_edited(1)), QUESTIONS)
    assert store.get_alias("HkKnowledge") == good.version
    assert [v.name for v in store.list_versions()] == [good.version]


def test_failing_retrieval_gate_does_not_swap(store, use_embedder):
    good = _refresher(store, use_embedder).refresh(_chunks(DOCS), QUESTIONS)
    impossible = [*QUESTIONS, Question("完全無關嘅問題", ("kb/absent",))]
    with pytest.raises(RetrievalGateError, match="alias not moved"):
        _refresher(store, use_embedder).refresh(_chunks(_edited(1)), impossible)
    assert store.get_alias("HkKnowledge") == good.version
    assert [v.name for v in store.list_versions()] == [good.version]


def test_keeps_last_versions_and_rolls_back(store, use_embedder):
    refresher = _refresher(store, use_embedder, keep_versions=2)
    versions = [refresher.refresh(_chunks(_edited(n)), QUESTIONS).version for n in range(3)]
    assert [v.name for v in store.list_versions()] == versions[1:]
    previous, current = refresher.rollback(questions=QUESTIONS)
    assert (previous, current) == (versions[2], versions[1])
    assert store.get_alias("HkKnowledge") == versions[1]


def test_duplicate_chunk_ids_and_empty_input_are_errors(store, use_embedder):
    chunks = _chunks(DOCS)
    with pytest.raises(ValueError, match="duplicate chunk ids"):
        _refresher(store, use_embedder).refresh(chunks + chunks[:1], QUESTIONS)
    with pytest.raises(ValueError, match="no chunks"):
        _refresher(store, use_embedder).refresh([], QUESTIONS)


def test_version_names_sort_by_time():
    from datetime import datetime, timezone

    earlier = new_version_name("A", datetime(2026, 1, 1, 2, 0, 0, 1, tzinfo=timezone.utc))
    later = new_version_name("A", datetime(2026, 1, 1, 2, 0, 0, 2, tzinfo=timezone.utc))
    assert earlier < later and earlier.startswith("A_20260101T020000")
