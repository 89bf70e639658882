"""SFT training throughput: packed rows (training/packing.py) against per-batch padding, in the
same process on the same model and conversations.

    python benchmarks/sft_packing.py [--seq-len 512] [--batch-size 8] [--hidden 128] [--repeats 3]

The conversations are the project's authored SFT set, tokenized with the DeepSeek tokenizer and
the chat template as `training/sft.py` does. The model is a small random DeepSeek-architecture
model (MLA, MoE) with the full 129,280-token vocabulary. Each mode trains one epoch over the
same conversations (forward, backward, AdamW, after one warm-up step) from the same initial
weights, so both train on the same supervised tokens (labels that are not -100) and the ratio of
their throughputs is the ratio of the epoch times (median of `repeats` epochs). Also printed: supervised tokens per token slot,
the share of each batch's compute that trains anything.
On CPU this measures the padding saved against the block-diagonal mask's cost; a GPU, whose
attention kernels treat masks differently, needs its own run.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time


def conversations(tokenizer, seq_len: int) -> list[dict]:
    from hkgai_pipelines.training.datasets import sft_records
    from hkgai_pipelines.training.sft import encode_conversation

    return [encode_conversation(tokenizer, [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["answer"]}], seq_len)
            for r in sft_records([]) if r["split"] == "train"]


def time_epoch(model, batches: list[dict]) -> list[float]:
    """Seconds per optimizer step over one pass through `batches`, after one warm-up step."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for batch in [batches[0], *batches]:
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    from hkgai_pipelines.training.packing import PackedCollator, pack_conversations
    from hkgai_pipelines.training.sft import ConversationCollator
    from hkgai_pipelines.training.tokenizer import deepseek_tokenizer

    tokenizer = deepseek_tokenizer()
    encoded = conversations(tokenizer, args.seq_len)
    rows = pack_conversations(encoded, args.seq_len)
    torch.manual_seed(0)
    order = torch.randperm(len(encoded)).tolist()  # the Trainer shuffles too; sorted input would flatter padding
    padded = [ConversationCollator(tokenizer.pad_token_id)([encoded[i] for i in order[s:s + args.batch_size]])
              for s in range(0, len(order), args.batch_size)]
    packed = [PackedCollator(tokenizer.pad_token_id)(rows[s:s + args.batch_size]) for s in range(0, len(rows), args.batch_size)]
    h = args.hidden
    config = DeepseekV3Config(vocab_size=len(tokenizer), hidden_size=h, intermediate_size=2 * h, moe_intermediate_size=h // 2,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=h // 2, kv_lora_rank=h // 4,
                              qk_nope_head_dim=h // 4, qk_rope_head_dim=16, v_head_dim=h // 4, n_routed_experts=4, n_shared_experts=1,
                              num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=0, max_position_embeddings=args.seq_len)
    initial = DeepseekV3ForCausalLM(config)
    tokens = sum(len(e["input_ids"]) for e in encoded)
    print(f"{len(encoded)} conversations, {tokens} tokens (mean {tokens / len(encoded):.0f}); seq_len {args.seq_len}, "
          f"batch {args.batch_size}; {len(padded)} padded batches, {len(rows)} packed rows in {len(packed)} batches; "
          f"hidden {h}, {torch.get_num_threads()} threads")
    results = {}
    for name, batches in (("padded per batch", padded), ("packed rows", packed)):
        epochs = [sum(time_epoch(copy.deepcopy(initial), batches)) for _ in range(args.repeats)]
        supervised = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        slots = sum(int(b["input_ids"].numel()) for b in batches)
        results[name] = supervised / statistics.median(epochs)
        print(f"{name:17s} {results[name]:7.0f} supervised tokens/s  (epoch of {len(batches)} steps, median of {args.repeats}: "
              f"{statistics.median(epochs):.1f} s; {supervised} supervised tokens in {slots} slots = {supervised / slots:.2f})")
    print(f"ratio packed / padded: {results['packed rows'] / results['padded per batch']:.2f}x")


if __name__ == "__main__":
    main()
