"""SFT training throughput: packed rows (training/packing.py) against per-batch padding, in the
same process on the same model and conversations.

    python benchmarks/sft_packing.py [--seq-len 512] [--batch-size 8] [--steps 12] [--hidden 128]

The conversations are the project's authored SFT set, tokenized with the DeepSeek tokenizer and
the chat template as `training/sft.py` does. The model is a small random DeepSeek-architecture
model (MLA, MoE) with the full 129,280-token vocabulary. Each mode runs `steps` optimizer steps
(forward, backward, AdamW) from the same initial weights; the first two are warm-up. Throughput
counts supervised tokens (labels that are not -100) per second, so padding and the packed rows'
extra prompt tokens are cost, not output. Prints the median step time of each mode and the ratio.
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


def time_steps(model, batches: list[dict], steps: int) -> tuple[list[float], int]:
    """Seconds per optimizer step (after two warm-up steps) and the supervised tokens they trained on."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times, supervised = [], 0
    for step in range(steps):
        batch = batches[step % len(batches)]
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 2:
            times.append(time.perf_counter() - start)
            supervised += int((batch["labels"][:, 1:] != -100).sum())
    return times, supervised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=128)
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
        times, supervised = time_steps(copy.deepcopy(initial), batches, args.steps)
        median = statistics.median(times)
        per_step = supervised / len(times)
        results[name] = per_step / median
        width = statistics.median(int(b["input_ids"].numel()) for b in batches)
        print(f"{name:17s} {results[name]:9.0f} supervised tokens/s  (median step {median:.3f} s, "
              f"{per_step:.0f} supervised tokens a step, median batch {width} token slots)")
    print(f"ratio packed / padded: {results['packed rows'] / results['padded per batch']:.2f}x")


if __name__ == "__main__":
    main()
