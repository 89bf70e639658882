"""The embedded vector store: LanceDB tables under $HKGAI_HOME/vectors.

One table per index version; an IVF-SQ ANN index once a version is large enough for one
to pay off (below that LanceDB's exact scan is faster than building it), and a native
full-text index over character 2-3-grams so Chinese, which has no spaces between words,
is searchable by BM25. Version metadata (embedder, dimension, creation time and state,
`building` or `complete`) and aliases are small JSON files replaced atomically (write, fsync,
rename), so a reader sees either the old alias or the new one, and a version's state is
either the old one or the new one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from hkgai_pipelines.rag.store import BUILDING, CHUNK_FIELDS, COMPLETE, SearchHit, VectorStoreError, VersionInfo

_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def _atomic_write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, ensure_ascii=False, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class EmbeddedVectorStore:
    def __init__(self, root: str | Path, ann_min_rows: int = 5000) -> None:
        import lancedb

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = lancedb.connect(str(self.root))
        self.ann_min_rows = ann_min_rows

    # -- versions ---------------------------------------------------------------------
    def _meta_path(self, version: str) -> Path:
        return self.root / "_versions" / f"{version}.json"

    def _schema(self, dim: int) -> pa.Schema:
        fields = [pa.field(name, pa.int32() if name == "chunk_index" else pa.string()) for name in CHUNK_FIELDS]
        return pa.schema(fields + [pa.field("vector", pa.list_(pa.float32(), dim))])

    def create_version(self, name: str, embedder: str, dim: int) -> VersionInfo:
        if not _NAME_RE.match(name):
            raise VectorStoreError(f"invalid version name {name!r}")
        if name in self._db.table_names() or self._meta_path(name).exists():
            raise VectorStoreError(f"version {name} already exists")
        # The metadata first: a process killed right after it leaves a `building` version that
        # the next refresh finds and drops, never a table that no listing knows about.
        info = VersionInfo(name, embedder, dim, datetime.now(timezone.utc).isoformat(timespec="seconds"), 0, BUILDING)
        _atomic_write_json(self._meta_path(name), info.__dict__)
        try:
            self._db.create_table(name, schema=self._schema(dim))
        except BaseException:
            self._meta_path(name).unlink(missing_ok=True)
            raise
        return info

    def _read_meta(self, version: str) -> dict:
        path = self._meta_path(version)
        if not path.exists():
            raise VectorStoreError(f"unknown index version {version!r}")
        data = json.loads(path.read_text(encoding="utf-8"))
        data.setdefault("state", COMPLETE)  # written before states were recorded (store.py)
        return data

    def mark_complete(self, version: str) -> VersionInfo:
        data = self._read_meta(version)
        if version not in self._db.table_names():
            raise VectorStoreError(f"index version {version!r} has metadata but no table")
        data["state"] = COMPLETE
        _atomic_write_json(self._meta_path(version), data)
        return self.version_info(version)

    def version_info(self, version: str) -> VersionInfo:
        data = self._read_meta(version)
        data["chunks"] = self._db.open_table(version).count_rows() if version in self._db.table_names() else 0
        return VersionInfo(**data)

    def list_versions(self) -> list[VersionInfo]:
        names = sorted(p.stem for p in (self.root / "_versions").glob("*.json")) if (self.root / "_versions").exists() else []
        return sorted((self.version_info(n) for n in names), key=lambda v: (v.created_at, v.name))

    def drop_version(self, version: str) -> None:
        if version in self._aliases().values():
            raise VectorStoreError(f"version {version} is live behind an alias; swap the alias first")
        if version in self._db.table_names():
            self._db.drop_table(version)
        self._meta_path(version).unlink(missing_ok=True)

    # -- rows -------------------------------------------------------------------------
    def upsert(self, version: str, rows: list[dict], vectors: np.ndarray) -> None:
        if not rows:
            return
        info = self.version_info(version)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(rows), info.dim):
            raise VectorStoreError(f"expected vectors of shape ({len(rows)}, {info.dim}), got {vectors.shape}")
        columns = {name: [row[name] for row in rows] for name in CHUNK_FIELDS}
        columns["vector"] = list(vectors)
        table = pa.table(columns, schema=self._schema(info.dim))
        target = self._db.open_table(version)
        if target.count_rows() == 0:
            target.add(table)  # a fresh version: a plain append, no join against existing ids
            return
        target.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(table)

    def delete(self, version: str, ids: list[str]) -> None:
        if ids:
            self._db.open_table(version).delete(f"id IN ({', '.join(_sql_quote(i) for i in ids)})")

    def fetch(self, version: str) -> tuple[list[dict], np.ndarray]:
        table = self._db.open_table(version).to_arrow()
        rows = table.select(list(CHUNK_FIELDS)).to_pylist()
        dim = self.version_info(version).dim
        # Straight from Arrow's buffer: a Python list per vector costs seconds at 20k chunks.
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return rows, np.asarray(flat, dtype=np.float32).reshape(len(rows), dim)

    def finalize(self, version: str) -> None:
        table = self._db.open_table(version)
        # Character 2-3-grams: Chinese has no word boundaries, and bigrams are what CJK
        # analyzers (Lucene's CJKAnalyzer) index; no stemming or stop words for the same reason.
        table.create_fts_index(
            "content", replace=True, base_tokenizer="ngram", ngram_min_length=2, ngram_max_length=3,
            stem=False, remove_stop_words=False, ascii_folding=True,
        )
        if table.count_rows() >= self.ann_min_rows:
            # IVF with scalar quantisation: at 20,000 chunks it builds in 0.3 s and answers in
            # ~3 ms, where IVF_HNSW_SQ takes 6 s to build for the same latency and an
            # unindexed scan takes ~40 ms.
            table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_SQ")

    # -- search -----------------------------------------------------------------------
    def query(self, version: str, vector: np.ndarray, text: str, *, k: int = 5, alpha: float = 0.5,
              lang: str | None = None, source: str | None = None) -> list[SearchHit]:
        from lancedb.rerankers import LinearCombinationReranker

        table = self._db.open_table(version)
        where = " AND ".join(f"{column} = {_sql_quote(value)}" for column, value in (("lang", lang), ("source", source)) if value)
        vector = np.asarray(vector, dtype=np.float32)
        if alpha >= 1.0 or not text.strip():
            search = table.search(vector, vector_column_name="vector").distance_type("cosine")
        elif alpha <= 0.0:
            search = table.search(text, query_type="fts", fts_columns="content")
        else:
            search = (
                table.search(query_type="hybrid", vector_column_name="vector", fts_columns="content")
                .vector(vector).text(text)
                .rerank(LinearCombinationReranker(weight=alpha))
            )
        if where:
            search = search.where(where, prefilter=True)
        hits = []
        for row in search.limit(k).to_list():
            if "_relevance_score" in row:
                score = float(row["_relevance_score"])
            elif "_distance" in row:
                score = 1.0 - float(row["_distance"])
            else:
                score = float(row.get("_score", 0.0))
            hits.append(SearchHit(row["id"], row["doc_id"], row["title"], row["text"], row["source"], row["lang"], score))
        return hits

    # -- aliases ----------------------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        path = self.root / "_aliases.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def get_alias(self, alias: str) -> str | None:
        return self._aliases().get(alias)

    def swap_alias(self, alias: str, version: str) -> str | None:
        if not self.version_info(version).complete:  # raises for an unknown version
            raise VectorStoreError(f"version {version} is still building (or was abandoned); only a complete version can be served")
        aliases = self._aliases()
        previous = aliases.get(alias)
        aliases[alias] = version
        _atomic_write_json(self.root / "_aliases.json", aliases)
        return previous
