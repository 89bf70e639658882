"""`hkgai ask` retrieval across scripts and languages (rag/search.py), on an index of the
packaged knowledge documents, and the answers it gives judged in context by the served guard."""

from pathlib import Path

import pytest

from hkgai_pipelines.rag.answer import Answerer, message
from hkgai_pipelines.rag.index import DEFAULT_ALIAS, IndexRefresher
from hkgai_pipelines.rag.knowledge import chunk_documents, load_knowledge_documents
from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore
from hkgai_pipelines.rag.retrieval_eval import load_questions
from hkgai_pipelines.rag.search import (
    LANGUAGE_MARGIN,
    keyword_coverage,
    language_bonus,
    question_forms,
    question_terms,
)
from hkgai_pipelines.sources.catalog import load_catalog

PROJECT_ROOT = Path(__file__).resolve().parent.parent
OCTOPUS = "hk_knowledge/yue-octopus-fare"


@pytest.fixture(scope="module")
def documents():
    return load_knowledge_documents(load_catalog(PROJECT_ROOT / "configs" / "sources.yaml"), 200_000)


@pytest.fixture(scope="module")
def store(tmp_path_factory, use_embedder, documents):
    store = EmbeddedVectorStore(tmp_path_factory.mktemp("vectors"))
    IndexRefresher(store, use_embedder).refresh(chunk_documents(documents, 300, 60), load_questions())
    return store


@pytest.fixture(scope="module")
def answerer(store, use_embedder):
    return Answerer(store=store, embedder=use_embedder, alias=DEFAULT_ALIAS)


# -- literal questions from the issue --------------------------------------------------------

def test_simplified_cantonese_question_cites_the_octopus_document(answerer):
    result = answerer.ask("八达通点样增值")
    assert result.citations[0]["doc_id"] == OCTOPUS
    assert result.answer != message("no_hits", result.lang) and "八達通" not in result.answer  # Simplified reply


def test_english_question_cites_the_cantonese_octopus_document(answerer):
    result = answerer.ask("What is the Octopus card?")
    cited = [c["doc_id"] for c in result.citations]
    assert cited[0] == "hk_knowledge/en-mtr"  # the English passage that names the card
    assert OCTOPUS in cited


@pytest.mark.parametrize("question", ["八達通點樣增值", "八达通点样增值", "What is the Octopus card?", "點樣續領香港身份證？",
                                      "How many public holidays are there in Hong Kong?"])
def test_citations_are_in_score_order(answerer, question):
    scores = [c["score"] for c in answerer.ask(question).citations]
    assert len(scores) >= 2
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("question", ["asdkjh qwe zxcv", "Who won the 2018 football World Cup final?", "今晚食咩好？"])
def test_nonsense_and_off_topic_questions_are_not_found(answerer, question):
    result = answerer.ask(question)
    assert result.citations == []
    assert result.answer == message("no_hits", result.lang)
    assert result.note.startswith("nothing relevant enough in the knowledge base: best document")


def test_a_paraphrase_with_few_shared_words_is_found_by_meaning(answerer):
    # 詐騙/查證 against the document's 騙案/查: little keyword evidence, cosine 0.48.
    result = answerer.ask("懷疑收到詐騙電話應如何查證？")
    assert result.citations[0]["doc_id"] == "hk_knowledge/yue-consumer-council"


def test_question_language_is_preferred_only_among_comparable_documents(answerer):
    # An English question about identity cards: the English document first, though the
    # Chinese versions are cited too.
    cited = [c["doc_id"] for c in answerer.ask("How do I renew my HKID card?").citations]
    assert cited[0] == "hk_knowledge/en-hkid-renewal"
    assert {"hk_knowledge/zh-hant-hkid", "hk_knowledge/yue-hkid-renewal"} <= set(cited)


# -- the parts, on literal inputs -------------------------------------------------------------

def test_question_is_searched_as_typed_and_in_hong_kong_traditional():
    assert question_forms("八达通点样增值") == ["八达通点样增值", "八達通點樣增值"]
    assert question_forms("八達通點樣增值") == ["八達通點樣增值"]
    assert question_forms("What is the Octopus card?") == ["What is the Octopus card?"]


def test_question_terms():
    assert question_terms("What is the Octopus card?") == ["octopus", "card", "octopus card"]
    # Bigrams of function characters only (点样) are not terms; comparison is in Simplified.
    assert question_terms("八達通點樣增值") == ["八达", "达通", "通点", "样增", "增值"]
    assert question_terms("How many public holidays?") == ["public", "holiday", "public holiday"]


def test_keyword_coverage_meets_across_scripts_and_word_forms():
    assert keyword_coverage(question_terms("八达通点样增值"), "八達通喺一九九七年九月推出") == pytest.approx(2 / 5)
    assert keyword_coverage(question_terms("renewing a card"), "Renew your cards online") == 1.0
    # Words found apart are not the phrase: "speed" and "light" but not "speed light".
    assert keyword_coverage(question_terms("speed of light"), "The High Speed Rail. A Light Rail network.") == pytest.approx(2 / 3)
    assert keyword_coverage(question_terms("moons"), "families eat mooncakes") == 0.0


def test_language_bonus_is_at_most_the_margin():
    assert language_bonus("yue", "yue") == LANGUAGE_MARGIN
    assert language_bonus("zh-hant", "yue") == LANGUAGE_MARGIN / 2
    assert language_bonus("en", "yue") == 0.0
    assert language_bonus("zh-hant", "zh-hans") == LANGUAGE_MARGIN


# -- answers judged in context by the served guard --------------------------------------------

@pytest.fixture(scope="session")
def served_guard(request, tmp_path_factory, use_embedder):
    from hkgai_pipelines.safety.classifier import load_guard

    # The guard trains its classifier on first use (tens of seconds) and caches it in a file
    # named by the hash of its training data and embedder, so a stale model is never reused:
    # pytest's cache folder keeps it between runs (a temporary folder with -p no:cacheprovider).
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("hkgai-guard") if cache else tmp_path_factory.mktemp("guard-cache")
    return load_guard(embedder=use_embedder, cache_dir=folder)


def test_extractive_answers_to_questions_about_each_document_pass_the_output_guard(store, use_embedder, documents, served_guard):
    answerer = Answerer(store=store, embedder=use_embedder, alias=DEFAULT_ALIAS, guard=served_guard)
    questions = [q.text for q in load_questions()] + [doc.title for doc in documents]
    blocked = []
    for question in questions:
        result = answerer.ask(question)
        if result.guard["output"] and result.guard["output"]["verdict"] == "block":
            blocked.append((question, result.guard["output"]["category"]))
    assert blocked == []
    # The two English questions, answered.
    for question in ("How do I renew my HKID card?", "How many public holidays are there in Hong Kong?"):
        result = answerer.ask(question)
        assert result.guard["output"] == {"verdict": "allow", "category": None}
        assert not result.answer.startswith("I can't help")
