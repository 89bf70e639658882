"""Incremental blue-green refresh of the vector index.

1. Diff the new chunks against the live version (the alias target) by chunk id.
2. Create a new version; carry the vectors of unchanged chunks over, embed only new chunks,
   leave removed chunks out.
3. Build the indexes, run the retrieval check on the new version.
4. Only if it passes, move the alias. Then drop versions beyond the newest `keep_versions`.

Any failure before the swap (embedder, store, retrieval gate) drops the half-built version
and re-raises; the alias stays on the last complete version, so the next run starts clean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from hkgai_pipelines.rag.chunking import Chunk
from hkgai_pipelines.rag.embedders import Embedder
from hkgai_pipelines.rag.retrieval_eval import Question, RetrievalReport, evaluate
from hkgai_pipelines.rag.store import VectorStore, check_embedder

DEFAULT_ALIAS = "HkKnowledge"


class RetrievalGateError(RuntimeError):
    def __init__(self, report: RetrievalReport, min_recall: float, min_mrr: float) -> None:
        super().__init__(
            f"retrieval check failed: recall@{report.k} {report.recall_at_k:.3f} (min {min_recall}), "
            f"MRR {report.mrr:.3f} (min {min_mrr}); alias not moved. Missed: {report.misses[:5]}"
        )
        self.report = report


@dataclass
class RefreshPlan:
    to_embed: list[Chunk]
    carried: list[Chunk]
    removed: list[str]
    carried_vectors: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


@dataclass
class RefreshResult:
    version: str
    previous: str | None
    chunks: int
    embedded: int
    carried: int
    removed: int
    report: RetrievalReport
    dropped_versions: list[str]


def new_version_name(alias: str = DEFAULT_ALIAS, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    # Microseconds keep two refreshes in one second apart; the name sorts by time.
    return f"{alias}_{now.strftime('%Y%m%dT%H%M%S%f')}"


def plan_refresh(store: VectorStore, alias: str, embedder: Embedder, chunks: list[Chunk]) -> RefreshPlan:
    live = store.get_alias(alias)
    live_vectors: dict[str, np.ndarray] = {}
    if live is not None:
        info = store.version_info(live)
        # A different embedder makes old vectors useless: everything is embedded again.
        if info.embedder == embedder.name and info.dim == embedder.dim:
            rows, vectors = store.fetch(live)
            live_vectors = {row["id"]: vectors[i] for i, row in enumerate(rows)}
    new_ids = {chunk.id for chunk in chunks}
    return RefreshPlan(
        to_embed=[c for c in chunks if c.id not in live_vectors],
        carried=[c for c in chunks if c.id in live_vectors],
        removed=sorted(set(live_vectors) - new_ids),
        carried_vectors={c.id: live_vectors[c.id] for c in chunks if c.id in live_vectors},
    )


class IndexRefresher:
    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        *,
        alias: str = DEFAULT_ALIAS,
        keep_versions: int = 3,
        min_recall_at_5: float = 0.8,
        min_mrr: float = 0.6,
        alpha: float = 0.5,
        batch_size: int = 256,
    ) -> None:
        if keep_versions < 1:
            raise ValueError("keep_versions must be at least 1")
        self.store = store
        self.embedder = embedder
        self.alias = alias
        self.keep_versions = keep_versions
        self.min_recall_at_5 = min_recall_at_5
        self.min_mrr = min_mrr
        self.alpha = alpha
        self.batch_size = batch_size

    def evaluate(self, version: str, questions: list[Question]) -> RetrievalReport:
        check_embedder(self.store.version_info(version), self.embedder.name, self.embedder.dim)
        vectors = self.embedder.embed([q.text for q in questions])  # one batch, not one call each
        return evaluate(
            lambda i, text, k: self.store.query(version, vectors[i], text, k=k, alpha=self.alpha), questions, k=5
        )

    def refresh(self, chunks: list[Chunk], questions: list[Question], version: str | None = None) -> RefreshResult:
        if not chunks:
            raise ValueError("no chunks to index")
        ids = [c.id for c in chunks]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate chunk ids in the input")
        plan = plan_refresh(self.store, self.alias, self.embedder, chunks)
        version = version or new_version_name(self.alias)
        self.store.create_version(version, self.embedder.name, self.embedder.dim)
        try:
            # Embed first, write once: one large write makes one table fragment instead of
            # one per batch, which keeps both the write and the index build fast.
            new_vectors = [self.embedder.embed([c.content for c in plan.to_embed[start:start + self.batch_size]])
                           for start in range(0, len(plan.to_embed), self.batch_size)]
            carried_vectors = [np.vstack([plan.carried_vectors[c.id] for c in plan.carried])] if plan.carried else []
            vectors = np.vstack(carried_vectors + new_vectors) if (carried_vectors or new_vectors) else np.zeros((0, self.embedder.dim))
            self.store.upsert(version, [c.to_row() for c in plan.carried + plan.to_embed], vectors)
            self.store.finalize(version)
            report = self.evaluate(version, questions)
            if report.recall_at_k < self.min_recall_at_5 or report.mrr < self.min_mrr:
                raise RetrievalGateError(report, self.min_recall_at_5, self.min_mrr)
            previous = self.store.swap_alias(self.alias, version)
        except BaseException:
            try:
                self.store.drop_version(version)
            except Exception:  # the original error matters more than the cleanup's
                pass
            raise
        return RefreshResult(
            version=version, previous=previous, chunks=len(chunks), embedded=len(plan.to_embed),
            carried=len(plan.carried), removed=len(plan.removed), report=report,
            dropped_versions=self.prune(),
        )

    def prune(self) -> list[str]:
        """Drop the oldest versions beyond `keep_versions`, never the live one."""
        live = self.store.get_alias(self.alias)
        prefix = f"{self.alias}_"
        versions = [v.name for v in self.store.list_versions() if v.name.startswith(prefix)]
        dropped = []
        for name in versions[: max(len(versions) - self.keep_versions, 0)]:
            if name != live:
                self.store.drop_version(name)
                dropped.append(name)
        return dropped

    def rollback(self, to: str | None = None) -> tuple[str | None, str]:
        """Point the alias at `to`, or at the newest version older than the live one."""
        live = self.store.get_alias(self.alias)
        if to is None:
            prefix = f"{self.alias}_"
            older = [v.name for v in self.store.list_versions() if v.name.startswith(prefix) and live and v.name < live]
            if not older:
                raise ValueError(f"no version older than {live} to roll back to")
            to = older[-1]
        check_embedder(self.store.version_info(to), self.embedder.name, self.embedder.dim)
        return self.store.swap_alias(self.alias, to), to
