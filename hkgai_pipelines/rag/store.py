"""The vector-store interface shared by the embedded (LanceDB) and Weaviate implementations.

An index has versions (one table or collection each) and an alias that names the live
version; a refresh writes a new version and moves the alias only after it passes its
retrieval check, so readers never see a half-built index (blue-green). Every version records
the embedder name and dimension it was built with, and its state: `building` from
`create_version` until `mark_complete`, which the refresh calls only after the version passed
its retrieval check. A process killed in between leaves a `building` version behind; the
refresh drops those, rollback never targets them, pruning never counts them, and
`swap_alias` refuses them. Versions recorded before states existed have none and read as
`complete` (the old refresh kept only versions that passed the check, or half-built ones it
could not clean up; rollback re-runs the check, which tells them apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: Columns every version stores for a chunk (besides its vector).
CHUNK_FIELDS = ("id", "doc_id", "chunk_index", "title", "text", "content", "source", "lang", "licence", "updated_at")


#: A version still being written (or abandoned by a killed refresh): never served.
BUILDING = "building"
#: A version that passed its retrieval check: may be served and rolled back to.
COMPLETE = "complete"
VERSION_STATES = (BUILDING, COMPLETE)


class VectorStoreError(RuntimeError):
    pass


class EmbedderMismatchError(VectorStoreError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    name: str
    embedder: str
    dim: int
    created_at: str
    chunks: int = 0
    state: str = BUILDING

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE


@dataclass(frozen=True)
class SearchHit:
    id: str
    doc_id: str
    title: str
    text: str
    source: str
    lang: str
    score: float


class VectorStore(Protocol):
    def create_version(self, name: str, embedder: str, dim: int) -> VersionInfo:
        """Create an empty version in state `building`.

        Raises VectorStoreError for an invalid or existing name."""

    def mark_complete(self, version: str) -> VersionInfo:
        """Record that `version` passed its retrieval check (state `complete`).

        Raises VectorStoreError for an unknown version."""

    def upsert(self, version: str, rows: list[dict], vectors: np.ndarray) -> None: ...

    def delete(self, version: str, ids: list[str]) -> None: ...

    def fetch(self, version: str) -> tuple[list[dict], np.ndarray]: ...

    def finalize(self, version: str) -> None:
        """Build the ANN and full-text indexes once all rows are in."""

    def query(
        self, version: str, vector: np.ndarray, text: str, *, k: int = 5, alpha: float = 0.5,
        lang: str | None = None, source: str | None = None,
    ) -> list[SearchHit]: ...

    def version_info(self, version: str) -> VersionInfo: ...

    def list_versions(self) -> list[VersionInfo]:
        """Every version, `building` ones included (so a refresh can find and drop them),
        oldest first."""

    def drop_version(self, version: str) -> None: ...

    def get_alias(self, alias: str) -> str | None: ...

    def swap_alias(self, alias: str, version: str) -> str | None:
        """Point `alias` at `version`; return the version it pointed at before.

        Raises VectorStoreError for an unknown version or one that is not `complete`."""


def check_embedder(info: VersionInfo, embedder_name: str, dim: int) -> None:
    """Raises EmbedderMismatchError when `info` was built with another embedder or dimension."""
    if info.embedder != embedder_name or info.dim != dim:
        raise EmbedderMismatchError(
            f"index version {info.name} was built with {info.embedder} ({info.dim}-d) but the query "
            f"embedder is {embedder_name} ({dim}-d); rebuild the index or configure the same embedder"
        )
