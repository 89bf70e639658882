"""Training data for continued pretraining: packed token blocks with a language mix.

Documents are split into train and held-out by a stable hash of their id (so the split never
changes between runs), tokenized with an end-of-text token after each, sampled per language
with the mix weights (seeded), concatenated and cut into `seq_len` blocks: no padding is
wasted. Held-out documents never enter training; `training.quality` measures per-language
perplexity on them before and after each stage.

Nothing here holds the corpus in memory: documents stream from cleaned_corpus's part files in
record batches (`iter_corpus_documents`); tokens go to one file per language, and the sampled
stream to a file of blocks, both read through `numpy.memmap` (the indexed-dataset layout of
Megatron-LM and nanoGPT). What stays in memory is a length per document and the sampled
documents' indices.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

LANGUAGES = ("yue", "zh-hant", "zh-hans", "en", "mixed")
#: Documents read and tokenized at once.
READ_BATCH_ROWS = 10_000
#: Token ids on disk: int32 holds any vocabulary below 2**31, and torch reads it directly.
TOKEN_DTYPE = np.int32


def corpus_files(corpus) -> list[Path]:
    """The Parquet files of cleaned_corpus's `cleaned.parquet`: the file itself, or a folder's
    part files in name order, which is input order. Raises FileNotFoundError if missing."""
    corpus = Path(corpus)
    if corpus.is_dir():
        return sorted(corpus.glob("*.parquet"))
    if not corpus.exists():
        raise FileNotFoundError(f"no corpus at {corpus}")
    return [corpus]


def iter_corpus_documents(corpus, batch_rows: int = READ_BATCH_ROWS) -> Iterator[dict]:
    """Rows {id, text, lang} of cleaned_corpus's `cleaned.parquet`, in input order, read
    `batch_rows` at a time."""
    import pyarrow.parquet as pq

    for path in corpus_files(corpus):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["id", "text", "lang"]):
            yield from batch.to_pylist()


def count_corpus_documents(corpus) -> int:
    """Rows of the corpus, from the Parquet footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in corpus_files(corpus))


def load_corpus_documents(corpus) -> list[dict]:
    """Every row {id, text, lang} of the corpus in memory: for small corpora and tests."""
    return list(iter_corpus_documents(corpus))


def is_held_out(doc_id: str, share: float = 0.02) -> bool:
    bucket = int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < share


@dataclass
class PackedCorpus:
    #: (n_blocks, seq_len) token ids, memory-mapped from `work_dir`, in packing order;
    #: `order` is the shuffled order training reads them in (`BlockDataset`).
    train_blocks: torch.Tensor
    order: torch.Tensor
    tokens_by_lang: dict[str, int]

    @property
    def train_tokens(self) -> int:
        return int(self.train_blocks.numel())


def _blocks(ids: list[int], seq_len: int) -> torch.Tensor:
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


class _TokenFile:
    """One language's training documents, tokenized: ids appended to a file, and each
    document's start and length kept for sampling."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = open(path, "wb")
        self.lengths: list[int] = []
        self.tokens = 0

    def append(self, ids: list[int]) -> None:
        np.asarray(ids, dtype=TOKEN_DTYPE).tofile(self.handle)
        self.lengths.append(len(ids))
        self.tokens += len(ids)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(memory-mapped tokens, document start offsets)."""
        self.handle.close()
        starts = np.zeros(len(self.lengths), dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=starts[1:])
        tokens = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r") if self.tokens else np.zeros(0, TOKEN_DTYPE)
        return tokens, starts


def pack_corpus(
    docs: Iterable[dict], tokenizer, seq_len: int, target_tokens: int, language_mix: dict[str, float],
    seed: int = 42, heldout_share: float = 0.02, work_dir: Path | None = None,
) -> PackedCorpus:
    """Pack `docs` (rows with id, text and lang: `iter_corpus_documents`) into blocks.

    Streams: documents are tokenized `READ_BATCH_ROWS` at a time into one token file per
    language under `work_dir` (default: a new temporary folder, which the caller removes), the
    sampled stream is written to `blocks.bin` there. Per language of the mix, documents are
    drawn at random (seeded) until the language's share of `target_tokens` is reached. Raises
    ValueError for an empty corpus, no document in any language of the mix, or fewer than
    `seq_len` tokens.
    """
    import tempfile

    work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="hkgai-packed-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    eos = tokenizer.eos_token_id
    files: dict[str, _TokenFile] = {}
    seen = 0

    def tokenize(batch: list[dict]) -> None:
        encoded = tokenizer([d["text"] for d in batch], add_special_tokens=False)["input_ids"]
        for doc, ids in zip(batch, encoded):
            if doc["lang"] not in language_mix:
                continue
            if doc["lang"] not in files:
                files[doc["lang"]] = _TokenFile(work_dir / f"tokens-{len(files)}.bin")
            files[doc["lang"]].append(ids + [eos])

    batch: list[dict] = []
    for doc in docs:
        seen += 1
        if not is_held_out(doc["id"], heldout_share):
            batch.append(doc)
            if len(batch) >= READ_BATCH_ROWS:
                tokenize(batch)
                batch = []
    if batch:
        tokenize(batch)
    if not seen:
        raise ValueError("the corpus is empty: nothing to pretrain on")
    train = {lang: token_file.finish() for lang, token_file in files.items()}
    weights = {lang: w for lang, w in language_mix.items() if lang in train and len(train[lang][1])}
    if not weights:
        raise ValueError(f"no training documents in any language of the mix {sorted(language_mix)}")
    total_weight = sum(weights.values())
    rng = random.Random(seed)
    # The sampled documents first (indices only), then their tokens copied into the stream.
    picks: list[tuple[str, np.ndarray]] = []
    tokens_by_lang: dict[str, int] = {}
    stream_tokens = 0
    for lang, weight in sorted(weights.items()):
        budget = int(target_tokens * weight / total_weight)
        lengths = np.diff(np.append(train[lang][1], len(train[lang][0])))
        chosen, taken = [], 0
        while taken < budget:
            index = rng.randrange(len(lengths))
            chosen.append(index)
            taken += int(lengths[index])
        picks.append((lang, np.asarray(chosen, dtype=np.int64)))
        tokens_by_lang[lang] = taken
        stream_tokens += taken
    n_blocks = stream_tokens // seq_len
    if n_blocks == 0:
        raise ValueError(f"corpus too small: fewer than {seq_len} tokens")
    blocks = np.memmap(work_dir / "blocks.bin", dtype=TOKEN_DTYPE, mode="w+", shape=(n_blocks * seq_len,))
    position = 0
    for lang, chosen in picks:
        tokens, starts = train[lang]
        lengths = np.diff(np.append(starts, len(tokens)))
        for index in chosen:
            length = min(int(lengths[index]), len(blocks) - position)
            if length <= 0:
                break
            blocks[position:position + length] = tokens[starts[index]:starts[index] + length]
            position += length
    blocks.flush()
    # Shuffle at document granularity would need the boundaries; shuffling whole blocks after
    # packing mixes languages across steps just as well.
    order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed))
    return PackedCorpus(torch.from_numpy(blocks.reshape(n_blocks, seq_len)), order, tokens_by_lang)


class BlockDataset(torch.utils.data.Dataset):
    """Causal-LM examples from packed blocks, in `order` (default: as stored): labels are the
    inputs (the model shifts them). Blocks may be memory-mapped; each is read when asked for."""

    def __init__(self, blocks: torch.Tensor, order: torch.Tensor | None = None) -> None:
        self.blocks = blocks
        self.order = order

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        block = self.blocks[int(self.order[index]) if self.order is not None else index].to(torch.long)
        return {"input_ids": block, "labels": block.clone(), "attention_mask": torch.ones_like(block)}


@torch.no_grad()
def perplexity_by_language(model, heldout: dict[str, torch.Tensor], batch_size: int = 8) -> dict[str, float]:
    model.eval()
    out = {}
    for lang, blocks in sorted(heldout.items()):
        losses = []
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start:start + batch_size].to(model.device)
            losses.append(float(model(input_ids=batch, labels=batch).loss) * len(batch))
        out[lang] = float(torch.exp(torch.tensor(sum(losses) / len(blocks))))
    model.train()
    return out
