"""Retrieval quality of an index version: recall@k and MRR over a question set.

A question is answered at rank r when any of its acceptable documents is the r-th distinct
document among the hits; recall@k counts questions answered within k, MRR averages 1/r.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

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
