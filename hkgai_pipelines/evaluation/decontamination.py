"""Benchmark decontamination: training text must share no long n-gram with any benchmark item.

Chinese and English are measured in their own units: 13 consecutive CJK characters, or 8
consecutive English words (the usual choices of contamination studies). Text is normalised
first: NFKC, lower case, and Traditional folded to Simplified with OpenCC's t2s, so that a Simplified training sentence cannot hide a Traditional benchmark item.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from hkgai_pipelines.curation.langid import HAN_RE

CJK_N = 13
WORD_N = 8
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Overlap:
    train_id: str
    bench_id: str
    ngram: str


def normalise(text: str) -> str:
    from hkgai_pipelines.curation.script import to_simplified

    return to_simplified(unicodedata.normalize("NFKC", text).lower())


def ngrams(text: str) -> set[str]:
    """Every 13-CJK-character and 8-English-word window of the text (punctuation and spaces
    between characters do not break a CJK window; other scripts do)."""
    text = normalise(text)
    grams: set[str] = set()
    chars = "".join(HAN_RE.findall(text))
    grams.update(chars[i:i + CJK_N] for i in range(len(chars) - CJK_N + 1))
    words = _WORD.findall(HAN_RE.sub(" ", text))
    grams.update(" ".join(words[i:i + WORD_N]) for i in range(len(words) - WORD_N + 1))
    return grams


def find_overlaps(train: dict[str, str], benchmark: dict[str, str]) -> list[Overlap]:
    """Every (training record, benchmark item) pair sharing an n-gram, with one shared n-gram."""
    index: dict[str, str] = {}
    for bench_id, text in benchmark.items():
        for gram in ngrams(text):
            index.setdefault(gram, bench_id)
    found: dict[tuple[str, str], str] = {}
    for train_id, text in train.items():
        for gram in ngrams(text):
            bench_id = index.get(gram)
            if bench_id is not None:
                found.setdefault((train_id, bench_id), gram)
    return [Overlap(t, b, g) for (t, b), g in sorted(found.items())]
