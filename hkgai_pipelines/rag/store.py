"""The vector-store interface shared by the embedded (LanceDB) and Weaviate implementations.

An index has versions (one table or collection each) and an alias that names the live
version; a refresh writes a new version and moves the alias only after it passes its
retrieval check, so readers never see a half-built index (blue-green). Every version records
the embedder name and dimension it was built with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: Columns every version stores for a chunk (besides its vector).
CHUNK_FIELDS = ("id", "doc_id", "chunk_index", "title", "text", "content", "source", "lang", "licence", "updated_at")


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
    def create_version(self, name: str, embedder: str, dim: int) -> VersionInfo: ...

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

    def list_versions(self) -> list[VersionInfo]: ...

    def drop_version(self, version: str) -> None: ...

    def get_alias(self, alias: str) -> str | None: ...

    def swap_alias(self, alias: str, version: str) -> str | None:
        """Point `alias` at `version`; return the version it pointed at before."""


def check_embedder(info: VersionInfo, embedder_name: str, dim: int) -> None:
    if info.embedder != embedder_name or info.dim != dim:
        raise EmbedderMismatchError(
            f"index version {info.name} was built with {info.embedder} ({info.dim}-d) but the query "
            f"embedder is {embedder_name} ({dim}-d); rebuild the index or configure the same embedder"
        )
