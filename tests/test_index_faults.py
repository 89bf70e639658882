"""Testers' faults in the index refresh, each reproduced literally:

* a refresh killed before the alias swap left half-built versions (one with 0 chunks) listed
  like complete ones; the next refresh kept them and pruned the verified versions, and
  `hkgai index rollback` then pointed the alias at the empty version;
* a refresh with nothing changed made a copy of the live version, pushing real versions out
  of the rollback window.
"""

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import PROJECT_ROOT
from hkgai_pipelines.rag.index import IndexRefresher, RetrievalGateError, RollbackError, new_version_name
from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore
from hkgai_pipelines.rag.retrieval_eval import Question
from hkgai_pipelines.rag.store import VectorStoreError
from tests.test_index_refresh import DOCS, QUESTIONS, _chunks

ALIAS = "HkKnowledge"


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, and (with drop_version disabled) no cleanup."""


def _edited(n):
    return {**DOCS, "kb/mtr": ("The MTR", f"The MTR opened in October 1979. It now has ten heavy rail lines. Edit {n}.")}


@pytest.fixture
def store(tmp_path):
    return EmbeddedVectorStore(tmp_path / "vectors")


def _refresher(store, embedder, **kwargs):
    return IndexRefresher(store, embedder, **{"min_recall_at_5": 1.0, "min_mrr": 0.9, "keep_versions": 2, **kwargs})


def _kill_refresh(store, refresher, monkeypatch, docs, where):
    """Run a refresh that dies at `where` ("upsert": before any row is written, 0 chunks;
    "finalize": all rows written, never checked) without any cleanup running."""
    version = new_version_name(ALIAS)

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(store, where, die)
        patch.setattr(store, "drop_version", lambda name: None)  # a killed process cleans nothing up
        with pytest.raises(Killed):
            refresher.refresh(_chunks(docs), QUESTIONS, version=version)
    return version


def test_killed_refresh_is_never_served_kept_or_counted(store, use_embedder, monkeypatch):
    refresher = _refresher(store, use_embedder)
    v1 = refresher.refresh(_chunks(DOCS), QUESTIONS).version
    v2 = refresher.refresh(_chunks(_edited(1)), QUESTIONS).version
    empty = _kill_refresh(store, refresher, monkeypatch, _edited(2), "upsert")
    partial = _kill_refresh(store, refresher, monkeypatch, _edited(2), "finalize")

    # The tester's listing: the half-built versions are there, but marked as building.
    listed = {v.name: (v.state, v.chunks) for v in store.list_versions()}
    assert listed[empty] == ("building", 0)
    assert listed[partial][0] == "building" and listed[partial][1] > 0
    assert (listed[v1][0], listed[v2][0]) == ("complete", "complete")
    assert store.get_alias(ALIAS) == v2
    # Neither can be served, by rollback or by a direct swap.
    for half_built in (empty, partial):
        with pytest.raises(RollbackError, match="building"):
            refresher.rollback(half_built, questions=QUESTIONS)
        with pytest.raises(VectorStoreError, match="still building"):
            store.swap_alias(ALIAS, half_built)
    assert store.get_alias(ALIAS) == v2

    # The next refresh drops them and prunes by complete versions only: v2 stays in the window.
    v4 = refresher.refresh(_chunks(_edited(3)), QUESTIONS)
    assert v4.abandoned_versions == [empty, partial]
    assert v4.dropped_versions == [v1]
    assert [v.name for v in store.list_versions()] == [v2, v4.version]

    # `hkgai index rollback` goes to the last verified version, never to the empty one.
    assert refresher.rollback(questions=QUESTIONS) == (v4.version, v2)
    assert store.get_alias(ALIAS) == v2
    assert all(h.doc_id == "kb/mpf" for h in store.query(v2, use_embedder.embed(["強積金"])[0], "強積金", k=1))


def test_rollback_reruns_the_retrieval_check_and_refuses_a_failing_target(store, use_embedder):
    refresher = _refresher(store, use_embedder)
    v1 = refresher.refresh(_chunks(DOCS), QUESTIONS).version
    v2 = refresher.refresh(_chunks(_edited(1)), QUESTIONS).version
    # v1 loses its rows after it was verified (a store incident, or a version written before
    # states existed that a killed refresh left empty): rollback must not trust its state alone.
    store.delete(v1, [row["id"] for row in store.fetch(v1)[0]])
    with pytest.raises(RetrievalGateError, match=f"alias {ALIAS} not moved to {v1}"):
        refresher.rollback(questions=QUESTIONS)
    assert store.get_alias(ALIAS) == v2


def test_version_without_a_recorded_state_is_read_as_complete_and_rechecked(store, use_embedder):
    """Metadata written before states existed (no "state" key): read as complete, so rollback
    may consider it, and its retrieval check is what keeps an empty one from being served."""
    refresher = _refresher(store, use_embedder)
    legacy = new_version_name(ALIAS)
    store.create_version(legacy, use_embedder.name, use_embedder.dim)
    meta_path = store.root / "_versions" / f"{legacy}.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["state"]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    live = refresher.refresh(_chunks(DOCS), QUESTIONS).version
    assert store.version_info(legacy).state == "complete"
    with pytest.raises(RetrievalGateError, match="not moved"):
        refresher.rollback(questions=QUESTIONS)
    assert store.get_alias(ALIAS) == live


def test_two_refreshes_with_the_same_chunks_create_exactly_one_version(store, counting_embedder):
    refresher = _refresher(store, counting_embedder)
    first = refresher.refresh(_chunks(DOCS), QUESTIONS)
    embedded_before = counting_embedder.texts
    # updated_at is when the source was read: it moves every run without the content changing.
    second = refresher.refresh(_chunks(DOCS, updated_at="a later read"), QUESTIONS)
    assert [v.name for v in store.list_versions()] == [first.version]
    assert (second.changed, second.version, second.previous) == (False, first.version, first.version)
    assert (second.embedded, second.carried, second.removed) == (0, len(_chunks(DOCS)), 0)
    assert counting_embedder.texts - embedded_before == len(QUESTIONS)  # the check, no chunk
    assert first.changed is True
    assert store.get_alias(ALIAS) == first.version


def test_no_op_refreshes_do_not_push_verified_versions_out_of_the_window(store, use_embedder):
    refresher = _refresher(store, use_embedder, keep_versions=2)
    v1 = refresher.refresh(_chunks(DOCS), QUESTIONS).version
    v2 = refresher.refresh(_chunks(_edited(1)), QUESTIONS).version
    for _ in range(3):
        assert refresher.refresh(_chunks(_edited(1)), QUESTIONS).changed is False
    assert [v.name for v in store.list_versions()] == [v1, v2]
    assert refresher.rollback(questions=QUESTIONS) == (v2, v1)


def test_a_title_change_is_a_change_and_its_chunks_are_embedded_again(store, counting_embedder):
    """The chunk id hashes the text only, but the vector embeds title + text."""
    refresher = _refresher(store, counting_embedder)
    first = refresher.refresh(_chunks(DOCS), QUESTIONS)
    renamed = {**DOCS, "kb/mpf": ("強制性公積金", DOCS["kb/mpf"][1])}
    second = refresher.refresh(_chunks(renamed), QUESTIONS)
    mpf_chunks = sum(1 for c in _chunks(renamed) if c.doc_id == "kb/mpf")
    assert second.changed and second.version != first.version
    assert (second.embedded, second.removed) == (mpf_chunks, 0)


def test_unchanged_refresh_still_checks_the_live_version(store, use_embedder):
    refresher = _refresher(store, use_embedder)
    live = refresher.refresh(_chunks(DOCS), QUESTIONS).version
    impossible = [*QUESTIONS, Question("完全無關嘅問題", ("kb/absent",))]
    with pytest.raises(RetrievalGateError, match=f"no chunk changed and {live} stays live"):
        refresher.refresh(_chunks(DOCS), impossible)
    assert store.get_alias(ALIAS) == live
    assert [v.name for v in store.list_versions()] == [live]


def test_index_cli_lists_states_and_refuses_to_roll_back_to_a_building_version(tmp_path, monkeypatch, use_embedder):
    from hkgai_pipelines.cli import app
    from hkgai_pipelines.rag.knowledge import chunk_documents, load_knowledge_documents
    from hkgai_pipelines.rag.retrieval_eval import load_questions
    from hkgai_pipelines.sources.catalog import load_catalog

    home = tmp_path / "home"
    monkeypatch.setenv("HKGAI_HOME", str(home))
    monkeypatch.delenv("HKGAI_PROFILE", raising=False)
    store = EmbeddedVectorStore(home / "vectors")
    documents = load_knowledge_documents(load_catalog(PROJECT_ROOT / "configs" / "sources.yaml"), 200_000)
    live = IndexRefresher(store, use_embedder).refresh(chunk_documents(documents, 300, 60), load_questions()).version
    half_built = new_version_name(ALIAS)
    store.create_version(half_built, use_embedder.name, use_embedder.dim)

    runner = CliRunner()
    listing = runner.invoke(app, ["index", "list"])
    assert listing.exit_code == 0, listing.output
    assert listing.stdout.splitlines()[0].startswith(f"* {live}  complete  ")
    assert listing.stdout.splitlines()[1].startswith(f"  {half_built}  building  0 chunks")
    refused = runner.invoke(app, ["index", "rollback", "--to", half_built])
    assert refused.exit_code == 1 and "building" in refused.output
    assert store.get_alias(ALIAS) == live
    # An older version marked complete but empty (the tester's rollback target): the re-run
    # retrieval check refuses it, and the message comes through as written.
    empty = f"{ALIAS}_00000000T000000000000"
    store.create_version(empty, use_embedder.name, use_embedder.dim)
    store.mark_complete(empty)
    refused = runner.invoke(app, ["index", "rollback"])
    assert refused.exit_code == 1
    assert "retrieval check failed: recall@5 0.000" in refused.output and f"not moved to {empty}" in refused.output
    assert store.get_alias(ALIAS) == live
