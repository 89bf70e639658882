"""Exact and near-duplicate detection, keeping the first document in input order.

Exact: SHA-1 of the text after NFKC, case-folding and removal of whitespace and punctuation,
so "你好！" and "你好 !" collide. Near: MinHash LSH (rensa's Rust implementation of the same
algorithm as datasketch; benchmarks/curation_throughput.py times both) over character
n-grams for Chinese and word n-grams for English, then the estimated Jaccard similarity of
every LSH candidate is checked against the threshold so banding false positives are not
dropped.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from hkgai_pipelines.curation.langid import HAN_RE

_STRIP_RE = re.compile(r"[\s\W_]+", re.UNICODE)
_WORD_RE = re.compile(r"[A-Za-z0-9']+")


def exact_key(text: str) -> str:
    folded = _STRIP_RE.sub("", unicodedata.normalize("NFKC", text).casefold())
    return hashlib.sha1(folded.encode("utf-8")).hexdigest()


def shingles(text: str, n: int) -> list[str]:
    """Character n-grams when Han characters dominate, word n-grams otherwise."""
    han = HAN_RE.findall(text)
    words = _WORD_RE.findall(text.lower())
    if len(han) >= len(words):
        units = [ch for ch in _STRIP_RE.sub("", unicodedata.normalize("NFKC", text).casefold())]
        joiner = ""
    else:
        units = words
        joiner = " "
    if len(units) <= n:
        return [joiner.join(units)] if units else [""]
    return [joiner.join(units[i:i + n]) for i in range(len(units) - n + 1)]


@dataclass(frozen=True)
class DuplicateVerdict:
    kind: str  # "exact" or "near"
    duplicate_of: str  # id of the kept document
    similarity: float


class Deduplicator:
    """Streams documents in a stable order; `check` returns None for the first of a cluster."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, num_bands: int = 16, ngram: int = 3, seed: int = 42) -> None:
        from rensa import RMinHashLSH

        if num_perm % num_bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of num_bands ({num_bands})")
        self.threshold = threshold
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        self._exact: dict[str, str] = {}
        self._lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=num_bands)
        self._kept: list[tuple[str, object]] = []

    def minhash(self, text: str):
        from rensa import RMinHash

        signature = RMinHash(num_perm=self.num_perm, seed=self.seed)
        signature.update(shingles(text, self.ngram))
        return signature

    def check(self, doc_id: str, text: str) -> DuplicateVerdict | None:
        key = exact_key(text)
        if key in self._exact:
            return DuplicateVerdict("exact", self._exact[key], 1.0)
        signature = self.minhash(text)
        best: tuple[float, str] | None = None
        for candidate in self._lsh.query(signature):
            kept_id, kept_signature = self._kept[candidate]
            similarity = signature.jaccard(kept_signature)
            if similarity >= self.threshold and (best is None or similarity > best[0]):
                best = (similarity, kept_id)
        if best is not None:
            return DuplicateVerdict("near", best[1], best[0])
        self._exact[key] = doc_id
        self._lsh.insert(len(self._kept), signature)
        self._kept.append((doc_id, signature))
        return None
