"""The production vector store: Weaviate through weaviate-client v4.

A collection per index version with self-provided vectors (HNSW, cosine); objects get
deterministic UUIDs (uuid5 of the chunk id), so re-importing a chunk overwrites instead of
duplicating; the searchable `content` uses trigram tokenization, which works for Chinese
without a word segmenter; the live version sits behind a collection alias (Weaviate >= 1.32)
and `swap_alias` is a single alias update, so queries never see a half-built collection.
The embedder name, dimension, creation time and state (`building` until the refresh marks the
version `complete` after its retrieval check) are stored in the collection description as
JSON; `mark_complete` rewrites that description (a collection-config update, which merges with
the existing schema), and `swap_alias` refuses a collection that is not complete.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import urlparse

import numpy as np

from hkgai_pipelines.rag.store import BUILDING, CHUNK_FIELDS, COMPLETE, SearchHit, VectorStoreError, VersionInfo

#: Weaviate reserves `id`; the chunk id is stored as `chunk_id`.
_PROPERTY = {name: ("chunk_id" if name == "id" else name) for name in CHUNK_FIELDS}


def connection_params(url: str, grpc_port: int | None = None) -> dict:
    """http(s)://host:port -> the keyword arguments of `weaviate.connect_to_custom`."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"WEAVIATE_URL must look like http(s)://host:port, got {url!r}")
    secure = parsed.scheme == "https"
    return {
        "http_host": parsed.hostname,
        "http_port": parsed.port or (443 if secure else 80),
        "http_secure": secure,
        "grpc_host": parsed.hostname,
        "grpc_port": grpc_port or (443 if secure else 50051),
        "grpc_secure": secure,
    }


def property_configs() -> list:
    from weaviate.classes.config import DataType, Property, Tokenization

    configs = []
    for name in CHUNK_FIELDS:
        if name == "chunk_index":
            configs.append(Property(name=name, data_type=DataType.INT))
        elif name == "content":
            # Trigrams: BM25 over Chinese needs sub-word units, and trigram tokenization
            # ships with every Weaviate build (gse needs ENABLE_TOKENIZER_GSE on the server).
            configs.append(Property(name=name, data_type=DataType.TEXT, tokenization=Tokenization.TRIGRAM))
        elif name in ("title", "text"):
            configs.append(Property(name=name, data_type=DataType.TEXT, skip_vectorization=True, index_searchable=False))
        else:
            configs.append(Property(name=_PROPERTY[name], data_type=DataType.TEXT, tokenization=Tokenization.FIELD))
    return configs


def object_uuid(chunk_id: str) -> str:
    from weaviate.util import generate_uuid5

    return str(generate_uuid5(chunk_id))


class WeaviateVectorStore:
    def __init__(self, url: str, api_key: str | None = None, grpc_port: int | None = None, timeout_s: int = 30) -> None:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        try:
            self._client = weaviate.connect_to_custom(
                **connection_params(url, grpc_port),
                auth_credentials=Auth.api_key(api_key) if api_key else None,
                additional_config=AdditionalConfig(timeout=Timeout(init=timeout_s, query=timeout_s, insert=timeout_s * 4)),
                skip_init_checks=False,
            )
        except Exception as error:
            raise VectorStoreError(f"cannot connect to Weaviate at {url}: {error}") from error

    def close(self) -> None:
        self._client.close()

    def _collection(self, version: str):
        if not self._client.collections.exists(version):
            raise VectorStoreError(f"unknown index version {version!r}")
        return self._client.collections.use(version)

    def create_version(self, name: str, embedder: str, dim: int) -> VersionInfo:
        from weaviate.classes.config import Configure, VectorDistances

        if self._client.collections.exists(name):
            raise VectorStoreError(f"version {name} already exists")
        info = VersionInfo(name, embedder, dim, datetime.now(timezone.utc).isoformat(timespec="seconds"), 0, BUILDING)
        self._client.collections.create(
            name=name,
            description=json.dumps({"embedder": embedder, "dim": dim, "created_at": info.created_at, "state": BUILDING}),
            vector_config=Configure.Vectors.self_provided(
                vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
            ),
            properties=property_configs(),
        )
        return info

    def _meta(self, version: str) -> dict:
        meta = json.loads(self._collection(version).config.get().description or "{}")
        if "embedder" not in meta:
            raise VectorStoreError(f"collection {version} was not created by this store (no embedder metadata)")
        return meta

    def mark_complete(self, version: str) -> VersionInfo:
        meta = self._meta(version)
        meta["state"] = COMPLETE
        self._collection(version).config.update(description=json.dumps(meta))
        return self.version_info(version)

    def version_info(self, version: str) -> VersionInfo:
        meta = self._meta(version)
        count = self._collection(version).aggregate.over_all(total_count=True).total_count or 0
        # No state: a collection written before states were recorded (store.py).
        return VersionInfo(version, meta["embedder"], int(meta["dim"]), meta["created_at"], count, meta.get("state", COMPLETE))

    def list_versions(self) -> list[VersionInfo]:
        infos = []
        for name, config in self._client.collections.list_all(simple=True).items():
            try:
                meta = json.loads(config.description or "{}")
            except json.JSONDecodeError:
                continue
            if "embedder" in meta:
                infos.append(self.version_info(name))
        return sorted(infos, key=lambda v: (v.created_at, v.name))

    def drop_version(self, version: str) -> None:
        aliases = self._client.alias.list_all(collection=version)
        if aliases:
            raise VectorStoreError(f"version {version} is live behind alias {sorted(aliases)}; swap the alias first")
        self._client.collections.delete(version)

    def upsert(self, version: str, rows: list[dict], vectors: np.ndarray) -> None:
        collection = self._collection(version)
        vectors = np.asarray(vectors, dtype=np.float32)
        with collection.batch.fixed_size(batch_size=200) as batch:
            for row, vector in zip(rows, vectors):
                batch.add_object(
                    properties={_PROPERTY[name]: row[name] for name in CHUNK_FIELDS},
                    uuid=object_uuid(row["id"]),
                    vector=vector.tolist(),
                )
        failed = collection.batch.failed_objects
        if failed:
            raise VectorStoreError(f"Weaviate refused {len(failed)} of {len(rows)} objects in {version}: {failed[0].message}")

    def delete(self, version: str, ids: list[str]) -> None:
        from weaviate.classes.query import Filter

        if ids:
            self._collection(version).data.delete_many(where=Filter.by_property("chunk_id").contains_any(ids))

    def fetch(self, version: str) -> tuple[list[dict], np.ndarray]:
        rows, vectors = [], []
        for obj in self._collection(version).iterator(include_vector=True):
            rows.append({name: obj.properties[_PROPERTY[name]] for name in CHUNK_FIELDS})
            vector = obj.vector["default"] if isinstance(obj.vector, dict) else obj.vector
            vectors.append(vector)
        dim = self.version_info(version).dim
        return rows, np.asarray(vectors, dtype=np.float32).reshape(len(rows), dim)

    def finalize(self, version: str) -> None:
        """Weaviate indexes on insert (HNSW and the inverted index); nothing to build."""

    def query(self, version: str, vector: np.ndarray, text: str, *, k: int = 5, alpha: float = 0.5,
              lang: str | None = None, source: str | None = None) -> list[SearchHit]:
        from weaviate.classes.query import Filter, HybridFusion, MetadataQuery

        filters = [Filter.by_property(name).equal(value) for name, value in (("lang", lang), ("source", source)) if value]
        where = None
        for condition in filters:
            where = condition if where is None else where & condition
        response = self._collection(version).query.hybrid(
            query=text or " ",
            vector=np.asarray(vector, dtype=np.float32).tolist(),
            alpha=alpha,
            limit=k,
            filters=where,
            fusion_type=HybridFusion.RELATIVE_SCORE,
            query_properties=["content"],
            return_metadata=MetadataQuery(score=True),
        )
        return [
            SearchHit(o.properties["chunk_id"], o.properties["doc_id"], o.properties["title"], o.properties["text"],
                      o.properties["source"], o.properties["lang"], float(o.metadata.score or 0.0))
            for o in response.objects
        ]

    def get_alias(self, alias: str) -> str | None:
        found = self._client.alias.get(alias_name=alias)
        return found.collection if found else None

    def swap_alias(self, alias: str, version: str) -> str | None:
        if self._meta(version).get("state", COMPLETE) != COMPLETE:  # raises for an unknown version
            raise VectorStoreError(f"version {version} is still building (or was abandoned); only a complete version can be served")
        previous = self.get_alias(alias)
        if previous is None:
            self._client.alias.create(alias_name=alias, target_collection=version)
        else:
            self._client.alias.update(alias_name=alias, new_target_collection=version)
        return previous
