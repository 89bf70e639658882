"""`hkgai ask`: input guardrail -> hybrid retrieval -> answer -> output guardrail -> citations.

The answer comes from a causal LM prompted with the retrieved passages when one is available
(the MLflow `champion`, else the newest aligned model; `model_version` says which). With no
model yet, the answer is extractive: the passage sentences most similar to the question,
taken from a passage in the question's language (Simplified Chinese questions get
Traditional passages converted with OpenCC t2s), and `model_version` is null with a note
saying so. A question with no relevant passage gets an answer that says nothing was found,
never an invented one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from hkgai_pipelines.curation.langid import identify_language
from hkgai_pipelines.rag.chunking import split_sentences
from hkgai_pipelines.rag.embedders import Embedder
from hkgai_pipelines.rag.store import SearchHit, VectorStore, check_embedder
from hkgai_pipelines.safety.guard import GuardVerdict, RuleGuard

#: Passage languages that can answer a question in each language, best first.
ANSWER_LANGUAGES = {
    "yue": ("yue", "zh-hant", "mixed"),
    "mixed": ("yue", "mixed", "zh-hant"),
    "zh-hant": ("zh-hant", "yue"),
    "zh-hans": ("zh-hant", "yue"),
    "en": ("en",),
}

MESSAGES = {
    "no_hits": {
        "en": "I could not find information about this in the Hong Kong knowledge base.",
        "yue": "知識庫入面搵唔到有關呢個問題嘅資料。",
        "zh-hant": "知識庫中找不到與此問題相關的資料。",
        "zh-hans": "知识库中找不到与此问题相关的资料。",
    },
    "refusal": {
        "en": "I can't help with that request. If you or someone else is in danger, call 999.",
        "yue": "呢個要求我幫唔到手。如果你或者其他人有危險，請即刻打九九九。",
        "zh-hant": "我無法協助這個要求。如你或他人有危險，請立即致電九九九。",
        "zh-hans": "我无法协助这个要求。如你或他人有危险，请立即致电九九九。",
    },
}


def message(kind: str, lang: str) -> str:
    table = MESSAGES[kind]
    return table.get(lang) or table.get("yue" if lang == "mixed" else "en")


class Generator(Protocol):
    version: str

    def generate(self, prompt: str, max_new_tokens: int = 256) -> str: ...


class CausalLMGenerator:
    """A causal-LM checkpoint directory (any stage of the model chain), served through
    `EvalModel.generate`: the chat template the model was fine-tuned and benchmarked with, and
    the same greedy decoding settings, so `hkgai ask` answers the way benchmark_scores measured."""

    #: The RAG prompt carries up to three passages; tokens beyond the context are cut from the
    #: left by EvalModel, so only an absurd prompt is refused outright.
    MAX_PROMPT_CHARS = 100_000

    def __init__(self, model_dir: str, version: str) -> None:
        from hkgai_pipelines.evaluation.model import EvalModel

        self._model = EvalModel.load(model_dir, batch_size=1, max_prompt_chars=self.MAX_PROMPT_CHARS)
        self.version = version

    def generate(self, prompt: str, max_new_tokens: int = 256) -> str:
        reply = self._model.generate([prompt], max_new_tokens=max_new_tokens)[0]
        if reply.error:
            raise ValueError(f"{self.version}: {reply.error}")
        return reply.text


def build_prompt(question: str, passages: list[SearchHit], lang: str) -> str:
    context = "\n\n".join(f"[{i + 1}] {hit.title}\n{hit.text}" for i, hit in enumerate(passages))
    instruction = {
        "en": "Answer in English using only the passages below; cite them as [n].",
        "yue": "請用廣東話，只根據以下資料回答，並以 [n] 註明出處。",
        "zh-hant": "請用繁體中文，只根據以下資料回答，並以 [n] 註明出處。",
        "zh-hans": "请用简体中文，只根据以下资料回答，并以 [n] 注明出处。",
    }.get(lang, "Answer using only the passages below; cite them as [n].")
    return f"{instruction}\n\n{context}\n\n問題 / Question: {question}\n答案 / Answer:"


@dataclass
class AskResult:
    answer: str
    citations: list[dict]
    guard: dict
    model_version: str | None
    lang: str
    note: str | None = None
    index_version: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Answerer:
    store: VectorStore
    embedder: Embedder
    alias: str
    #: Any guard with `check(text) -> GuardVerdict`: RuleGuard, or the HybridGuard the CLI serves.
    guard: RuleGuard = field(default_factory=RuleGuard)
    generator: Generator | None = None
    k: int = 5
    alpha: float = 0.5
    #: Cosine similarity below which the best passage is not about the question.
    min_similarity: float = 0.3

    def ask(self, question: str) -> AskResult:
        lang = identify_language(question).lang
        lang = lang if lang in MESSAGES["no_hits"] or lang == "mixed" else "en"
        verdict = self.guard.check(question)
        if verdict.blocked:
            return AskResult(message("refusal", lang), [], {"input": verdict.to_json(), "output": None}, None, lang, "blocked by the input guardrail")
        version = self.store.get_alias(self.alias)
        if version is None:
            raise RuntimeError(f"no live index behind alias {self.alias}; materialize vector_index first")
        check_embedder(self.store.version_info(version), self.embedder.name, self.embedder.dim)
        vector = self.embedder.embed([question])[0]
        hits = self.store.query(version, vector, question, k=self.k, alpha=self.alpha)
        nearest = self.store.query(version, vector, question, k=1, alpha=1.0)
        similarity = self._similarity(vector, nearest)
        model_version = self.generator.version if self.generator else None
        if not hits or similarity < self.min_similarity:
            return AskResult(message("no_hits", lang), [], {"input": verdict.to_json(), "output": None}, model_version, lang,
                             f"no passage above similarity {self.min_similarity} (best {similarity:.2f})", version)
        ranked = self._prefer_language(hits, lang)
        if self.generator:
            answer = self.generator.generate(build_prompt(question, ranked[:3], lang))
            note = None
        else:
            answer = self._extractive_answer(question, vector, ranked, lang)
            note = "no registered model yet (no champion or aligned_model): extractive answer from the top passage"
        out_verdict = self.guard.check(answer) if answer.strip() else GuardVerdict("allow")
        if out_verdict.blocked:
            answer = message("refusal", lang)
        citations = []
        for hit in ranked:
            if all(c["doc_id"] != hit.doc_id for c in citations):
                citations.append({"doc_id": hit.doc_id, "title": hit.title, "source": hit.source, "score": round(hit.score, 4)})
        return AskResult(answer, citations, {"input": verdict.to_json(), "output": out_verdict.to_json()}, model_version, lang, note, version)

    def _similarity(self, vector: np.ndarray, nearest: list[SearchHit]) -> float:
        if not nearest:
            return 0.0
        content = self.embedder.embed([f"{nearest[0].title}\n{nearest[0].text}"])[0]
        return float(np.dot(vector, content))

    @staticmethod
    def _prefer_language(hits: list[SearchHit], lang: str) -> list[SearchHit]:
        order = ANSWER_LANGUAGES.get(lang, (lang,))
        return sorted(hits, key=lambda h: (order.index(h.lang) if h.lang in order else len(order)))

    def _extractive_answer(self, question: str, vector: np.ndarray, hits: list[SearchHit], lang: str) -> str:
        """The two sentences most similar to the question, from the best document's passages
        in the question's language, in their original order."""
        best_doc = hits[0].doc_id
        sentences: list[str] = []
        for hit in hits:
            if hit.doc_id == best_doc:
                sentences.extend(s for s in split_sentences(hit.text) if s not in sentences)
        if len(sentences) > 2:
            scores = self.embedder.embed(sentences) @ vector
            keep = sorted(np.argsort(-scores)[:2])
            sentences = [sentences[i] for i in keep]
        answer = " ".join(sentences) if lang == "en" else "".join(sentences)
        if lang == "zh-hans":
            from hkgai_pipelines.curation.script import to_simplified

            answer = to_simplified(answer)
        return answer
