"""Retrieval quality of an index version: recall@k and MRR over a question set.

A question is answered at rank r when any of its acceptable documents is the r-th distinct
document among the hits; recall@k counts questions answered within k, MRR averages 1/r.

Two question sets use this: `hkgai_pipelines/data/rag_questions.yaml`, the gate of every index
refresh (`load_questions`, `evaluate`), and the retrieval benchmark
`benchmarks/data/retrieval_questions.yaml` (`load_benchmark`, `score_citations`), which scores
what `hkgai ask` cites, per question language, unanswerable questions included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from hkgai_pipelines.rag.store import SearchHit


@dataclass(frozen=True)
class Question:
    text: str
    doc_ids: tuple[str, ...]


@dataclass
class RetrievalReport:
    questions: int
    recall_at_k: float
    mrr: float
    k: int
    misses: list[str] = field(default_factory=list)


def load_questions(source: str = "hk_knowledge") -> list[Question]:
    data = yaml.safe_load(resources.files("hkgai_pipelines").joinpath("data", "rag_questions.yaml").read_text(encoding="utf-8"))
    return [Question(item["q"], tuple(f"{source}/{doc}" for doc in item["docs"])) for item in data["questions"]]


def evaluate(search: Callable[[int, str, int], list[SearchHit]], questions: list[Question], k: int = 5) -> RetrievalReport:
    """`search(i, text, n)` returns the hits for question i (its index lets the caller reuse
    question embeddings computed in one batch)."""
    found = 0
    reciprocal = 0.0
    misses = []
    for index, question in enumerate(questions):
        distinct: list[str] = []
        # Ask for more hits than k: several chunks of one document take several slots.
        for hit in search(index, question.text, k * 4):
            if hit.doc_id not in distinct:
                distinct.append(hit.doc_id)
        rank = next((i + 1 for i, doc in enumerate(distinct[:k]) if doc in question.doc_ids), None)
        if rank:
            found += 1
            reciprocal += 1.0 / rank
        else:
            misses.append(question.text)
    n = max(len(questions), 1)
    return RetrievalReport(len(questions), found / n, reciprocal / n, k, misses)


# -- the retrieval benchmark (benchmarks/retrieval_eval.py) ---------------------------------


@dataclass(frozen=True)
class BenchmarkQuestion:
    text: str
    #: The question's language as written in the set: en, yue, zh-hant or zh-hans.
    lang: str
    #: Documents that answer it (full ids, "hk_knowledge/en-mtr"); empty when unanswerable.
    doc_ids: tuple[str, ...]

    @property
    def answerable(self) -> bool:
        return bool(self.doc_ids)

    def answered_only_across(self) -> bool:
        """True when every answering document is in the other writing system: an English
        question answered only by Chinese documents, or a Chinese question only by English
        ones (the embedder alone bridges these)."""
        english = [doc.rsplit("/", 1)[-1].startswith("en-") for doc in self.doc_ids]
        return bool(english) and (not any(english) if self.lang == "en" else all(english))


@dataclass(frozen=True)
class BenchmarkSet:
    version: int
    questions: list[BenchmarkQuestion]
    #: Off-topic questions kept apart for setting thresholds (never scored).
    calibration_unanswerable: list[str]


def load_benchmark(path: str | Path, source: str = "hk_knowledge") -> BenchmarkSet:
    """The question set at `path` (benchmarks/data/retrieval_questions.yaml). Raises KeyError
    for a file without `version` or `questions`."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    questions = [
        BenchmarkQuestion(item["q"], lang, tuple(f"{source}/{doc}" for doc in item["docs"]))
        for lang, items in data["questions"].items()
        for item in items
    ]
    questions += [BenchmarkQuestion(text, lang, ()) for lang, texts in data.get("unanswerable", {}).items() for text in texts]
    return BenchmarkSet(int(data["version"]), questions, list(data.get("calibration_unanswerable", [])))


def citation_rank(cited: Sequence[str], answers: Sequence[str], k: int = 5) -> int | None:
    """The 1-based rank of the first answering document among the first `k` distinct cited
    documents, or None."""
    distinct = list(dict.fromkeys(cited))[:k]
    return next((i + 1 for i, doc in enumerate(distinct) if doc in answers), None)


@dataclass
class CitationScores:
    """Scores of the citations served for a group of questions."""

    answerable: int = 0
    #: Answerable questions with an answering document among the first k citations.
    recalled: int = 0
    reciprocal_rank: float = 0.0
    #: Answerable questions that got an answer at all (not "not found").
    answered: int = 0
    unanswerable: int = 0
    #: Unanswerable questions answered "not found" (no citations).
    declined: int = 0

    def add(self, question: BenchmarkQuestion, cited: Sequence[str], k: int = 5) -> None:
        """Count one question; `cited` is empty when the answer was "not found"."""
        if not question.answerable:
            self.unanswerable += 1
            self.declined += not cited
            return
        self.answerable += 1
        self.answered += bool(cited)
        rank = citation_rank(cited, question.doc_ids, k)
        if rank:
            self.recalled += 1
            self.reciprocal_rank += 1.0 / rank

    @property
    def recall(self) -> float:
        return self.recalled / self.answerable if self.answerable else 0.0

    @property
    def mrr(self) -> float:
        return self.reciprocal_rank / self.answerable if self.answerable else 0.0

    @property
    def declined_share(self) -> float:
        return self.declined / self.unanswerable if self.unanswerable else 0.0
