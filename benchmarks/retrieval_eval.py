"""What `hkgai ask` cites, across scripts and languages: recall@5 and MRR of its citations per
question language, and how often it answers "not found" to questions the knowledge base
cannot answer, before and after rag/search.py, in one process on one index.

    python benchmarks/retrieval_eval.py [--json OUT] [--misses] [--calibrate]

* before: the retrieval `hkgai ask` used until rag/search.py (`previous_citations`, kept here
  as the peer): the store's hybrid query with the question as typed (alpha 0.5, 5 chunks),
  "not found" when the cosine of the single nearest chunk is below 0.3, citations ordered by
  the passage language first and score second;
* after: `Answerer.retrieve`, the code `hkgai ask` runs (rag/search.py QuestionSearch).

The index is built from the packaged knowledge documents (hkgai_pipelines/data/knowledge,
configs/sources.yaml) with the packaged USE embedder, as `vector_index` builds it, in a
temporary folder. The questions are benchmarks/data/retrieval_questions.yaml (its version is
printed); a question counts as recalled when one of its answering documents is among the first
five citations, and an answer of "not found" cites nothing. Rows `en -> zh only` and
`zh -> en only` repeat the questions whose every answering document is in the other writing
system. `--calibrate` prints the figures the thresholds of rag/search.py were set from
(hkgai_pipelines/data/rag_questions.yaml and the set's `calibration_unanswerable` list, never
its scored questions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "benchmarks" / "data" / "retrieval_questions.yaml"
LANGUAGES = ("en", "yue", "zh-hant", "zh-hans")
K = 5


def previous_citations(store, embedder, version: str, question: str, detector, *, k: int = K, alpha: float = 0.5,
                       min_similarity: float = 0.3) -> list[str]:
    """The document ids the previous `hkgai ask` cited for `question` ([] for "not found"):
    rag/answer.py as it was before rag/search.py, retrieval and citation steps only."""
    from hkgai_pipelines.rag.answer import question_language
    from hkgai_pipelines.rag.search import ANSWER_LANGUAGES

    lang = question_language(question)

    def screen(hits):
        return [h for h in hits if not detector.reason(f"{h.title}\n{h.text}")]

    vector = embedder.embed([question])[0]
    hits = screen(store.query(version, vector, question, k=k, alpha=alpha))
    nearest = screen(store.query(version, vector, question, k=k, alpha=1.0))
    similarity = float(np.dot(vector, embedder.embed([f"{nearest[0].title}\n{nearest[0].text}"])[0])) if nearest else 0.0
    if not hits or similarity < min_similarity:
        return []
    order = ANSWER_LANGUAGES.get(lang, (lang,))
    ranked = sorted(hits, key=lambda h: order.index(h.lang) if h.lang in order else len(order))
    return list(dict.fromkeys(h.doc_id for h in ranked))


def build_index(folder: Path, embedder):
    """(store, alias) of an index of the packaged knowledge documents in `folder`."""
    from hkgai_pipelines.rag.index import DEFAULT_ALIAS, IndexRefresher
    from hkgai_pipelines.rag.knowledge import chunk_documents, load_knowledge_documents
    from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore
    from hkgai_pipelines.rag.retrieval_eval import load_questions
    from hkgai_pipelines.sources.catalog import load_catalog

    documents = load_knowledge_documents(load_catalog(ROOT / "configs" / "sources.yaml"), 200_000)
    store = EmbeddedVectorStore(folder)
    IndexRefresher(store, embedder).refresh(chunk_documents(documents, 300, 60), load_questions())
    return store, DEFAULT_ALIAS


def _groups(question) -> list[str]:
    groups = [question.lang]
    if question.answerable and question.answered_only_across():
        groups.append("en -> zh only" if question.lang == "en" else "zh -> en only")
    return groups


def calibrate(answerer, benchmark) -> dict:
    """The figures MIN_RELEVANCE, MIN_COSINE and STRONG_COSINE of rag/search.py were set
    from: for each question, (question, the best document's relevance, its cosine, the highest
    cosine of any retrieved document)."""
    from hkgai_pipelines.rag.retrieval_eval import load_questions

    def evidence(question: str) -> tuple[str, float, float, float]:
        _, result = answerer.retrieve(question)
        best = max(result.documents, key=lambda d: d.relevance)
        return question, round(best.relevance, 3), round(best.vector, 3), round(max(d.vector for d in result.documents), 3)

    answerable = [evidence(q.text) for q in load_questions()]
    off_topic = [evidence(q) for q in benchmark.calibration_unanswerable]
    return {
        "rag_questions (43): lowest relevance": min(answerable, key=lambda row: row[1]),
        "rag_questions: lowest cosine of the best document": min(answerable, key=lambda row: row[2]),
        "calibration_unanswerable: highest relevance": sorted(off_topic, key=lambda row: -row[1])[:3],
        "calibration_unanswerable: highest cosine": max(off_topic, key=lambda row: row[3]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--misses", action="store_true", help="list the questions each retrieval gets wrong")
    parser.add_argument("--calibrate", action="store_true", help="print the threshold calibration figures")
    args = parser.parse_args()

    from hkgai_pipelines.rag.answer import Answerer
    from hkgai_pipelines.rag.embedders import UniversalSentenceEncoder
    from hkgai_pipelines.rag.retrieval_eval import CitationScores, load_benchmark
    from hkgai_pipelines.safety.guard import InjectionDetector

    benchmark = load_benchmark(QUESTIONS)
    embedder = UniversalSentenceEncoder()
    detector = InjectionDetector()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        store, alias = build_index(Path(folder), embedder)
        version = store.get_alias(alias)
        print(f"index {version}: {store.version_info(version).chunks} chunks, built in {time.perf_counter() - started:.1f} s "
              f"({embedder.name})")
        answerer = Answerer(store=store, embedder=embedder, alias=alias)
        # Warm both paths (first embedding, first full-text query) before timing.
        previous_citations(store, embedder, version, "warm up", detector)
        answerer.retrieve("warm up")

        scores = {name: {} for name in ("before", "after")}
        seconds = {"before": [], "after": []}
        misses = {"before": [], "after": []}
        for question in benchmark.questions:
            started = time.perf_counter()
            before = previous_citations(store, embedder, version, question.text, detector)
            seconds["before"].append(time.perf_counter() - started)
            started = time.perf_counter()
            _, result = answerer.retrieve(question.text)
            after = [d.doc_id for d in result.documents] if result.found else []
            seconds["after"].append(time.perf_counter() - started)
            for name, cited in (("before", before), ("after", after)):
                for group in [*_groups(question), "all"]:
                    scores[name].setdefault(group, CitationScores()).add(question, cited, K)
                wrong = (not cited) if question.answerable else bool(cited)
                if question.answerable and cited and not set(cited[:K]) & set(question.doc_ids):
                    wrong = True
                if wrong:
                    misses[name].append((question.lang, question.text, [c.rsplit("/", 1)[-1] for c in cited[:3]]))
        calibration = calibrate(answerer, benchmark) if args.calibrate else None

    print(f"questions: {QUESTIONS.relative_to(ROOT)} version {benchmark.version}, "
          f"{sum(q.answerable for q in benchmark.questions)} answerable, {sum(not q.answerable for q in benchmark.questions)} unanswerable; "
          f"citations k = {K}")
    print()
    header = f"{'question language':<18} {'n':>3}  {'recall@5':>15}  {'MRR':>15}  {'answered':>15}  {'unanswerable: not found':>24}"
    print(header)
    print(f"{'':<18} {'':>3}  {'before   after':>15}  {'before   after':>15}  {'before   after':>15}  {'before   after':>24}")
    groups = [*LANGUAGES, "en -> zh only", "zh -> en only", "all"]
    for group in groups:
        b, a = scores["before"].get(group), scores["after"].get(group)
        if b is None:
            continue
        unanswerable = f"{b.declined}/{b.unanswerable}   {a.declined}/{a.unanswerable}" if b.unanswerable else "-"
        print(f"{group:<18} {b.answerable:>3}  {b.recall:>6.3f}  {a.recall:>6.3f}  {b.mrr:>6.3f}  {a.mrr:>6.3f}  "
              f"{b.answered:>6d}  {a.answered:>6d}  {unanswerable:>24}")
    print()
    for name in ("before", "after"):
        print(f"{name}: {1000 * statistics.median(seconds[name]):.0f} ms median per question "
              f"(p95 {1000 * float(np.percentile(seconds[name], 95)):.0f} ms), query embedding included")
    if args.misses:
        for name in ("before", "after"):
            print(f"\n{name}: {len(misses[name])} wrong (answerable: no answering document in the first {K} or not found; "
                  "unanswerable: answered)")
            for lang, text, cited in misses[name]:
                print(f"  [{lang}] {text}  -> {cited or 'not found'}")
    if calibration:
        print("\ncalibration (rag/search.py MIN_RELEVANCE, MIN_COSINE, STRONG_COSINE), rows (question, relevance, cosine, highest cosine):")
        for key, value in calibration.items():
            print(f"  {key}: {value}")
    if args.json:
        figures = {
            "benchmark": str(QUESTIONS.relative_to(ROOT)), "benchmark_version": benchmark.version, "embedder": embedder.name,
            "index_version": version, "k": K,
            "groups": {name: {group: {"answerable": s.answerable, "recall_at_5": round(s.recall, 4), "mrr": round(s.mrr, 4),
                                      "answered": s.answered, "unanswerable": s.unanswerable, "declined": s.declined}
                              for group, s in scores[name].items()} for name in scores},
            "median_seconds": {name: statistics.median(values) for name, values in seconds.items()},
            "calibration": calibration,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
