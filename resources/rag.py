"""The embedder and the vector store as resources: an abstract store resource with a local
(embedded LanceDB) and a production (Weaviate) implementation, both real."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr


class EmbedderResource(dg.ConfigurableResource):
    """`use` (the packaged multilingual USE v3) or a sentence-transformers model directory."""

    kind: str = "use"
    model_dir: str | None = None

    _embedder: object = PrivateAttr(default=None)

    def get_embedder(self):
        if self._embedder is None:
            from hkgai_pipelines.rag.embedders import TransformerMeanPoolEmbedder, UniversalSentenceEncoder

            if self.kind == "use":
                self._embedder = UniversalSentenceEncoder()
            elif self.kind == "sentence_transformers":
                if not self.model_dir:
                    raise ValueError("EmbedderResource(kind='sentence_transformers') needs model_dir")
                self._embedder = TransformerMeanPoolEmbedder(self.model_dir)
            else:
                raise ValueError(f"unknown embedder kind {self.kind!r}; expected 'use' or 'sentence_transformers'")
        return self._embedder


class VectorStoreResource(dg.ConfigurableResource):
    """Base class: `get_store()` returns an object with the `VectorStore` interface."""

    alias: str = "HkKnowledge"

    def get_store(self):
        raise NotImplementedError


class EmbeddedVectorStoreResource(VectorStoreResource):
    path: str

    def get_store(self):
        from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore

        return EmbeddedVectorStore(Path(self.path))


class WeaviateVectorStoreResource(VectorStoreResource):
    url: str
    api_key: str | None = None
    grpc_port: int | None = None

    def get_store(self):
        from hkgai_pipelines.rag.weaviate_store import WeaviateVectorStore

        return WeaviateVectorStore(self.url, self.api_key, self.grpc_port)
