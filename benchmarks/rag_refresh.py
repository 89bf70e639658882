"""Vector-index refresh and query latency on the knowledge base replicated to >= 20,000 chunks.

Prints, in one run on the embedded (LanceDB) store with the packaged USE embedder:
* full build: chunks/s (embed, write, build the full-text and ANN indexes);
* incremental refresh with 1% of documents changed, as a fraction of the full build
  (target: under 5%), and how many chunks it embedded;
* top-5 query latency p50/p95 for hybrid search (vector + BM25) against a brute-force numpy
  cosine top-5 over the same vectors, both timed after the query embedding (which is the
  same for both) over the same questions.

    python benchmarks/rag_refresh.py --chunks 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hkgai_pipelines.rag.embedders import UniversalSentenceEncoder
from hkgai_pipelines.rag.index import IndexRefresher
from hkgai_pipelines.rag.knowledge import KnowledgeDocument, chunk_documents, load_knowledge_documents
from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore
from hkgai_pipelines.rag.retrieval_eval import load_questions
from hkgai_pipelines.settings import PROJECT_ROOT
from hkgai_pipelines.sources.catalog import load_catalog


def replicate(documents: list[KnowledgeDocument], copies: int) -> list[KnowledgeDocument]:
    return [
        KnowledgeDocument(f"copy{i:04d}/{d.doc_id}", d.title, d.body, d.source, d.lang, d.licence, d.updated_at)
        for i in range(copies)
        for d in documents
    ]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of documents changed for the incremental refresh")
    args = parser.parse_args()

    base = load_knowledge_documents(load_catalog(PROJECT_ROOT / "configs" / "sources.yaml"), 200_000)
    per_copy = len(chunk_documents(base, 300, 60))
    copies = -(-args.chunks // per_copy)
    documents = replicate(base, copies)
    chunks = chunk_documents(documents, 300, 60)
    embedder = UniversalSentenceEncoder()
    embedder.embed(["warm up"])
    questions = load_questions()

    with tempfile.TemporaryDirectory() as folder:
        store = EmbeddedVectorStore(Path(folder))
        # The retrieval gate expects the original doc ids; replicas have new ones, so it is
        # switched off here (its cost, 43 queries, is part of both timings below).
        refresher = IndexRefresher(store, embedder, min_recall_at_5=0.0, min_mrr=0.0)
        started = time.perf_counter()
        full = refresher.refresh(chunks, questions)
        full_seconds = time.perf_counter() - started
        print(f"knowledge base: {len(documents):,} documents, {len(chunks):,} chunks ({copies} copies of {len(base)} documents)")
        print(f"full build:        {full_seconds:7.1f}s  {len(chunks) / full_seconds:8.1f} chunks/s  (embedded {full.embedded:,})")

        step = max(int(1 / args.changed), 1)
        changed = [
            KnowledgeDocument(d.doc_id, d.title, d.body + (" Updated." if d.lang == "en" else "（已更新）"), d.source, d.lang, d.licence, d.updated_at)
            if i % step == 0 else d
            for i, d in enumerate(documents)
        ]
        n_changed = sum(1 for i in range(len(documents)) if i % step == 0)
        started = time.perf_counter()
        incremental = refresher.refresh(chunk_documents(changed, 300, 60), questions)
        incremental_seconds = time.perf_counter() - started
        print(
            f"incremental:       {incremental_seconds:7.1f}s  = {incremental_seconds / full_seconds:.1%} of the full build "
            f"({n_changed} documents changed = {n_changed / len(documents):.1%}; embedded {incremental.embedded:,}, "
            f"carried {incremental.carried:,}, removed {incremental.removed:,})"
        )

        version = store.get_alias(refresher.alias)
        rows, vectors = store.fetch(version)
        texts = [q.text for q in questions]
        query_vectors = embedder.embed(texts)
        hybrid, brute = [], []
        for _ in range(3):
            for text, vector in zip(texts, query_vectors):
                t = time.perf_counter()
                store.query(version, vector, text, k=5, alpha=0.5)
                hybrid.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                scores = vectors @ vector
                top = np.argpartition(-scores, 5)[:5]
                top[np.argsort(-scores[top])]
                brute.append((time.perf_counter() - t) * 1000)
        print(f"query top-5 over {len(rows):,} chunks, {len(hybrid)} queries:")
        print(f"  hybrid (LanceDB ANN + BM25):   p50 {percentile(hybrid, 50):6.2f} ms  p95 {percentile(hybrid, 95):6.2f} ms")
        print(f"  brute-force numpy cosine:      p50 {percentile(brute, 50):6.2f} ms  p95 {percentile(brute, 95):6.2f} ms")
        print(f"  ratio hybrid/brute-force p50: {statistics.median(hybrid) / statistics.median(brute):.1f}x")


if __name__ == "__main__":
    main()
