"""Pack tokenized SFT conversations into rows of up to `seq_len` tokens.

Padding each batch to its longest conversation wastes most of a GPU step on short chats; packing
fills rows with whole conversations instead. Packed conversations must not see each other: every
conversation's `position_ids` restart at 0, and with no `attention_mask` transformers turns those
restarts into a block-diagonal causal mask (`masking_utils.find_packed_sequence_indices`), so each
token is predicted from its own conversation only, exactly as in an unpacked batch. A conversation
starts with its prompt, whose labels are -100, so no loss crosses a boundary either.

Rows are filled best-fit decreasing: conversations longest first, each into the fullest row that
still has room (a sorted list of free space, so packing 100k conversations stays O(n log n)).
Conversations are never split; one longer than `seq_len` is an error (`encode_conversation`
truncates to `seq_len` before this runs).
"""

from __future__ import annotations

import bisect

import torch


def pack_conversations(encoded: list[dict], seq_len: int) -> list[dict]:
    """Rows of {input_ids, labels, position_ids}, each holding whole conversations."""
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]["input_ids"]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row index), ascending
    for index in order:
        length = len(encoded[index]["input_ids"])
        if length == 0 or length > seq_len:
            raise ValueError(f"conversation {index} has {length} tokens; a packed row holds 1 to {seq_len}")
        slot = bisect.bisect_left(free, (length, -1))  # the fullest row that still fits it
        if slot < len(free):
            space, row = free.pop(slot)
        else:
            space, row = seq_len, len(rows)
            rows.append([])
        rows[row].append(index)
        if space - length:
            bisect.insort(free, (space - length, row))
    packed = []
    for members in rows:
        packed.append({
            "input_ids": [t for i in members for t in encoded[i]["input_ids"]],
            "labels": [t for i in members for t in encoded[i]["labels"]],
            "position_ids": [p for i in members for p in range(len(encoded[i]["input_ids"]))],
        })
    return packed


class PackedCollator:
    """Pads packed rows to the batch's widest. The padding is one more segment (positions from
    0, labels -100), so it neither attends to nor is attended by a conversation.

    No attention mask is passed, and `use_cache=False` is: transformers reads the segments from
    position_ids only when there is neither a mask nor a KV cache, and DeepSeek's config asks for
    a cache by default, in training too; with one, the segments would silently see each other."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        batch = {"input_ids": [], "labels": [], "position_ids": []}
        for r in rows:
            pad = width - len(r["input_ids"])
            batch["input_ids"].append(r["input_ids"] + [self.pad_id] * pad)
            batch["labels"].append(r["labels"] + [-100] * pad)
            batch["position_ids"].append(r["position_ids"] + list(range(pad)))
        return {**{k: torch.tensor(v) for k, v in batch.items()}, "use_cache": False}
