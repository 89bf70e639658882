"""Language-aware chunking of knowledge documents into retrieval passages.

Sentences end at Chinese 。！？； (and their full-width relatives) or at English . ! ? ;
followed by a space; chunks collect whole sentences up to a target size in characters and
repeat the last sentences of the previous chunk (up to `overlap_chars`) so a fact that spans
a boundary is retrievable from either side. The document title is carried into every chunk.
A chunk's id hashes (document id, chunk text): unchanged text keeps its id across runs, which
is what lets the index refresh embed only what changed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

# A sentence ends after CJK terminal punctuation (with any closing quote/bracket), or after
# English terminal punctuation followed by whitespace; blank lines end paragraphs.
_SENTENCE_END_RE = re.compile(r"(?<=[。！？；!?])[」』”’）)]*|(?<=[.;!?])(?=\s)|\n\s*\n")


@dataclass(frozen=True)
class Chunk:
    id: str
    doc_id: str
    chunk_index: int
    title: str
    text: str
    source: str
    lang: str
    licence: str
    updated_at: str

    @property
    def content(self) -> str:
        """What is embedded and full-text indexed: the title, then the passage."""
        return f"{self.title}\n{self.text}"

    def to_row(self) -> dict:
        return {**asdict(self), "content": self.content}


def chunk_id(doc_id: str, text: str) -> str:
    return hashlib.sha256(f"{doc_id}\x00{text}".encode("utf-8")).hexdigest()[:20]


def split_sentences(text: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(text):
        end = match.end()
        if end > start:
            piece = text[start:end].strip()
            if piece:
                pieces.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def _join(sentences: list[str]) -> str:
    out = ""
    for sentence in sentences:
        # English sentences are separated by a space; CJK sentences run on.
        if out and (out[-1].isascii() or sentence[0].isascii()):
            out += " "
        out += sentence
    return out


def chunk_text(text: str, target_chars: int = 300, overlap_chars: int = 60) -> list[str]:
    if target_chars <= overlap_chars:
        raise ValueError(f"target_chars ({target_chars}) must exceed overlap_chars ({overlap_chars})")
    sentences = split_sentences(text)
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for sentence in sentences:
        if current and size + len(sentence) > target_chars:
            chunks.append(_join(current))
            carried: list[str] = []
            carried_size = 0
            for previous in reversed(current):
                if carried_size + len(previous) > overlap_chars:
                    break
                carried.insert(0, previous)
                carried_size += len(previous)
            current, size = carried, carried_size
        current.append(sentence)
        size += len(sentence)
    if current and (not chunks or _join(current) not in chunks[-1]):
        chunks.append(_join(current))
    return chunks


def chunk_document(
    doc_id: str,
    title: str,
    body: str,
    *,
    source: str,
    lang: str,
    licence: str,
    updated_at: str,
    target_chars: int = 300,
    overlap_chars: int = 60,
) -> list[Chunk]:
    return [
        Chunk(chunk_id(doc_id, text), doc_id, index, title, text, source, lang, licence, updated_at)
        for index, text in enumerate(chunk_text(body, target_chars, overlap_chars))
    ]
