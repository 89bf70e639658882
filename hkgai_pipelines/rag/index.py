"""Incremental blue-green refresh of the vector index.

1. Drop `building` versions a killed refresh left behind (store.py: version states).
2. Diff the new chunks against the live version (the alias target) by chunk id and content.
   If nothing changed (same chunks, same embedder), keep the live version: no copy is made,
   so a night without edits does not push a verified version out of the rollback window.
3. Otherwise create a new version (state `building`); carry the vectors of unchanged chunks
   over, embed only new or changed chunks, leave removed chunks out.
4. Build the indexes, run the retrieval check on the new version; only if it passes, mark it
   `complete` and move the alias. Then drop complete versions beyond the newest
   `keep_versions` (building versions are never counted, the live one is never dropped).

Any failure before the swap (embedder, store, retrieval gate) drops the half-built version
and re-raises; the alias stays on the last complete version. A process killed outright cannot
clean up, which is what the `building` state is for: the next refresh drops the version, and
neither `rollback` nor `swap_alias` will serve it. `rollback` also re-runs the retrieval check
on its target before it moves the alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from hkgai_pipelines.rag.chunking import Chunk
from hkgai_pipelines.rag.embedders import Embedder
from hkgai_pipelines.rag.retrieval_eval import Question, RetrievalReport, evaluate
from hkgai_pipelines.rag.store import CHUNK_FIELDS, VectorStore, VersionInfo, check_embedder

DEFAULT_ALIAS = "HkKnowledge"

#: The row fields that decide whether a chunk changed. `updated_at` is left out: it is when
#: the source was read (RawRecord.ingested_at), which moves on every run without any content
#: changing, so comparing it would make every refresh a change.
COMPARED_FIELDS = tuple(name for name in CHUNK_FIELDS if name != "updated_at")


class RetrievalGateError(RuntimeError):
    def __init__(self, report: RetrievalReport, min_recall: float, min_mrr: float, what: str = "alias not moved") -> None:
        super().__init__(
            f"retrieval check failed: recall@{report.k} {report.recall_at_k:.3f} (min {min_recall}), "
            f"MRR {report.mrr:.3f} (min {min_mrr}); {what}. Missed: {report.misses[:5]}"
        )
        self.report = report


class RollbackError(ValueError):
    """No version to roll back to, or the target is not one that may be served."""


@dataclass
class RefreshPlan:
    to_embed: list[Chunk]
    carried: list[Chunk]
    removed: list[str]
    carried_vectors: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    #: True when the live version already holds exactly these chunks, built by this embedder.
    unchanged: bool = False


@dataclass
class RefreshResult:
    #: The version behind the alias after the refresh (the live one again when unchanged).
    version: str
    previous: str | None
    chunks: int
    embedded: int
    carried: int
    removed: int
    report: RetrievalReport
    dropped_versions: list[str]
    #: False when no chunk changed and the live version was kept instead of copied.
    changed: bool = True
    #: `building` versions left by an earlier, killed refresh and dropped by this one.
    abandoned_versions: list[str] = field(default_factory=list)


def new_version_name(alias: str = DEFAULT_ALIAS, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    # Microseconds keep two refreshes in one second apart; the name sorts by time.
    return f"{alias}_{now.strftime('%Y%m%dT%H%M%S%f')}"


def _compared(row: dict) -> tuple:
    return tuple(row[name] for name in COMPARED_FIELDS)


def plan_refresh(store: VectorStore, alias: str, embedder: Embedder, chunks: list[Chunk]) -> RefreshPlan:
    """What a refresh to `chunks` has to embed, can carry over, and leaves out.

    Raises VectorStoreError when the live version cannot be read."""
    live = store.get_alias(alias)
    live_rows: dict[str, dict] = {}
    live_vectors: dict[str, np.ndarray] = {}
    if live is not None:
        info = store.version_info(live)
        # A different embedder makes old vectors useless: everything is embedded again.
        if info.embedder == embedder.name and info.dim == embedder.dim:
            rows, vectors = store.fetch(live)
            live_rows = {row["id"]: row for row in rows}
            live_vectors = {row["id"]: vectors[i] for i, row in enumerate(rows)}
    new_ids = {chunk.id for chunk in chunks}
    # The id hashes (doc_id, text) but the vector embeds `content` (title + text): a chunk whose
    # title changed keeps its id and must still be embedded again.
    reusable = {c.id for c in chunks if c.id in live_rows and live_rows[c.id]["content"] == c.content}
    unchanged = bool(live_rows) and len(live_rows) == len(chunks) and all(
        c.id in live_rows and _compared(live_rows[c.id]) == _compared(c.to_row()) for c in chunks
    )
    return RefreshPlan(
        to_embed=[c for c in chunks if c.id not in reusable],
        carried=[c for c in chunks if c.id in reusable],
        removed=sorted(set(live_rows) - new_ids),
        carried_vectors={cid: live_vectors[cid] for cid in reusable},
        unchanged=unchanged,
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

    def _own_versions(self) -> list[VersionInfo]:
        prefix = f"{self.alias}_"
        return [v for v in self.store.list_versions() if v.name.startswith(prefix)]

    def evaluate(self, version: str, questions: list[Question]) -> RetrievalReport:
        """recall@5 and MRR of `version` on `questions`.

        Raises EmbedderMismatchError when `version` was built with another embedder."""
        check_embedder(self.store.version_info(version), self.embedder.name, self.embedder.dim)
        vectors = self.embedder.embed([q.text for q in questions])  # one batch, not one call each
        return evaluate(
            lambda i, text, k: self.store.query(version, vectors[i], text, k=k, alpha=self.alpha), questions, k=5
        )

    def _passes(self, report: RetrievalReport) -> bool:
        return report.recall_at_k >= self.min_recall_at_5 and report.mrr >= self.min_mrr

    def drop_abandoned(self) -> list[str]:
        """Drop the `building` versions of this alias that a killed refresh left behind.

        Two refreshes of one alias must not run at once: the second would drop the first's
        version while it is being written (the first then fails; the alias is untouched)."""
        live = self.store.get_alias(self.alias)
        dropped = []
        for info in self._own_versions():
            if not info.complete and info.name != live:
                self.store.drop_version(info.name)
                dropped.append(info.name)
        return dropped

    def refresh(self, chunks: list[Chunk], questions: list[Question], version: str | None = None) -> RefreshResult:
        """Bring the index behind the alias to `chunks` (module docstring).

        Raises ValueError for no chunks or duplicate chunk ids, RetrievalGateError when the new
        version (or, for an unchanged refresh, the live one) fails the retrieval check,
        EmbedderMismatchError, VectorStoreError, and whatever the embedder raises; on every
        error the alias stays where it was."""
        if not chunks:
            raise ValueError("no chunks to index")
        ids = [c.id for c in chunks]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate chunk ids in the input")
        abandoned = self.drop_abandoned()
        plan = plan_refresh(self.store, self.alias, self.embedder, chunks)
        live = self.store.get_alias(self.alias)
        if plan.unchanged and live is not None:
            # The live version passed this check when it went live; the questions are package
            # data and may have changed since, so it is checked again rather than trusted.
            report = self.evaluate(live, questions)
            if not self._passes(report):
                raise RetrievalGateError(report, self.min_recall_at_5, self.min_mrr, f"alias not moved: no chunk changed and {live} stays live")
            return RefreshResult(
                version=live, previous=live, chunks=len(chunks), embedded=0, carried=len(chunks), removed=0,
                report=report, dropped_versions=self.prune(), changed=False, abandoned_versions=abandoned,
            )
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
            if not self._passes(report):
                raise RetrievalGateError(report, self.min_recall_at_5, self.min_mrr)
            self.store.mark_complete(version)
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
            dropped_versions=self.prune(), changed=True, abandoned_versions=abandoned,
        )

    def prune(self) -> list[str]:
        """Drop the oldest complete versions beyond `keep_versions`, never the live one.

        Only complete versions count toward `keep_versions`: a half-built version must never
        push a verified one out of the rollback window."""
        live = self.store.get_alias(self.alias)
        versions = [v.name for v in self._own_versions() if v.complete]
        dropped = []
        for name in versions[: max(len(versions) - self.keep_versions, 0)]:
            if name != live:
                self.store.drop_version(name)
                dropped.append(name)
        return dropped

    def rollback(self, to: str | None = None, *, questions: list[Question]) -> tuple[str | None, str]:
        """Point the alias at `to`, or at the newest complete version older than the live one,
        after re-running the retrieval check on it; return (previous, new) alias targets.

        Raises RollbackError when there is no older complete version or `to` is not complete,
        VectorStoreError for an unknown version, EmbedderMismatchError when the target was
        built with another embedder, and RetrievalGateError when the target fails the check
        (the alias is not moved)."""
        live = self.store.get_alias(self.alias)
        if to is None:
            older = [v.name for v in self._own_versions() if v.complete and live and v.name < live]
            if not older:
                raise RollbackError(f"no version older than {live} to roll back to (only complete versions count)")
            to = older[-1]
        info = self.store.version_info(to)
        if not info.complete:
            raise RollbackError(f"version {to} is {info.state} (its refresh never finished, or is still running); it cannot be served")
        check_embedder(info, self.embedder.name, self.embedder.dim)
        report = self.evaluate(to, questions)
        if not self._passes(report):
            raise RetrievalGateError(report, self.min_recall_at_5, self.min_mrr, f"alias {self.alias} not moved to {to}")
        return self.store.swap_alias(self.alias, to), to
