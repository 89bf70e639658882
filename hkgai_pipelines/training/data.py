"""Training data for continued pretraining: packed token blocks with a language mix.

Documents are split into train and held-out by a stable hash of their id (so the split never
changes between runs), tokenized with an end-of-text token after each, sampled per language
with the mix weights (seeded), concatenated and cut into `seq_len` blocks: no padding is
wasted. Held-out documents never enter training; `training.quality` measures per-language
perplexity on them before and after each stage.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass

import torch

LANGUAGES = ("yue", "zh-hant", "zh-hans", "en", "mixed")


def load_corpus_documents(corpus) -> list[dict]:
    """Rows {id, text, lang} of cleaned_corpus's `cleaned.parquet`: a single Parquet file or a
    folder of part files (the curation engine writes one per batch; read in file-name order,
    which is input order)."""
    import pyarrow.parquet as pq

    return pq.read_table(corpus, columns=["id", "text", "lang"]).to_pylist()


def is_held_out(doc_id: str, share: float = 0.02) -> bool:
    bucket = int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < share


@dataclass
class PackedCorpus:
    train_blocks: torch.Tensor  # (n_blocks, seq_len)
    tokens_by_lang: dict[str, int]

    @property
    def train_tokens(self) -> int:
        return int(self.train_blocks.numel())


def _blocks(ids: list[int], seq_len: int) -> torch.Tensor:
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def pack_corpus(
    docs: list[dict], tokenizer, seq_len: int, target_tokens: int, language_mix: dict[str, float],
    seed: int = 42, heldout_share: float = 0.02,
) -> PackedCorpus:
    """`docs` are rows with id, text and lang (cleaned_corpus)."""
    if not docs:
        raise ValueError("the corpus is empty: nothing to pretrain on")
    eos = tokenizer.eos_token_id
    train: dict[str, list[list[int]]] = defaultdict(list)
    kept = [d for d in docs if not is_held_out(d["id"], heldout_share)]
    encoded = tokenizer([d["text"] for d in kept], add_special_tokens=False)["input_ids"]
    for doc, ids in zip(kept, encoded):
        train[doc["lang"]].append(ids + [eos])
    weights = {lang: w for lang, w in language_mix.items() if train.get(lang)}
    if not weights:
        raise ValueError(f"no training documents in any language of the mix {sorted(language_mix)}")
    total_weight = sum(weights.values())
    rng = random.Random(seed)
    stream: list[int] = []
    tokens_by_lang: dict[str, int] = defaultdict(int)
    for lang, weight in sorted(weights.items()):
        budget = int(target_tokens * weight / total_weight)
        pool = train[lang]
        taken = 0
        while taken < budget:
            ids = pool[rng.randrange(len(pool))]
            stream.extend(ids)
            taken += len(ids)
        tokens_by_lang[lang] = taken
    # Shuffle at document granularity would need the boundaries; shuffling whole blocks after
    # packing mixes languages across steps just as well.
    blocks = _blocks(stream, seq_len)
    if len(blocks) == 0:
        raise ValueError(f"corpus too small: fewer than {seq_len} tokens")
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    return PackedCorpus(blocks[order], dict(tokens_by_lang))


class BlockDataset(torch.utils.data.Dataset):
    """Causal-LM examples from packed blocks: labels are the inputs (the model shifts them)."""

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        block = self.blocks[index]
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
