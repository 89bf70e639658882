"""Likelihood-mode scoring throughput: batched EvalModel.loglikelihood against the same
requests scored one at a time, in the same process on the same model.

    python benchmarks/eval_throughput.py [--model DIR] [--items 120] [--batch-size 16] [--repeats 3]

Items are the project's authored SFT pairs, each with three references (its answer, a refusal
template and another item's answer) as a value-benchmark item has. The model is the newest
demo aligned_model when there is one (`make demo`), else a small random DeepSeek-architecture
model with the DeepSeek tokenizer. Prints the median of `repeats` runs of each mode and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REFUSAL = "對唔住，呢個問題我幫唔到你。"


def items(count: int) -> list[dict]:
    from hkgai_pipelines.training.datasets import sft_records

    records = [r for r in sft_records([]) if r["split"] == "train"][: count + 1]
    return [{"id": r["id"], "prompt": r["prompt"], "safe": r["answer"], "refusal": REFUSAL, "unsafe": records[i + 1]["answer"]}
            for i, r in enumerate(records[:count])]


def load_model(path: str | None, batch_size: int):
    from hkgai_pipelines.evaluation.model import EvalModel
    from hkgai_pipelines.settings import get_settings

    candidate = Path(path) if path else get_settings().lake_dir / "models" / "aligned_model" / "latest"
    if (candidate / "config.json").exists():
        return EvalModel.load(str(candidate), batch_size=batch_size), str(candidate)
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    from hkgai_pipelines.training.tokenizer import deepseek_tokenizer

    tokenizer = deepseek_tokenizer()
    torch.manual_seed(0)
    config = DeepseekV3Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=64, kv_lora_rank=32,
                              qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=4, n_shared_experts=1,
                              num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=0)
    return EvalModel(DeepseekV3ForCausalLM(config), tokenizer, name="random", batch_size=batch_size), "random DeepSeek (128 hidden, 2 layers)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from hkgai_pipelines.evaluation.likelihood import LABELS

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, name = load_model(args.model, args.batch_size)
    data = items(args.items)
    requests = [(item["prompt"], item[label]) for item in data for label in LABELS]
    model.loglikelihood(requests[:8])  # warm-up
    batched, single = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fast = model.loglikelihood(requests)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        slow = [model.loglikelihood([request])[0] for request in requests]
        single.append(time.perf_counter() - start)
    drift = max(abs(a.logprob - b.logprob) for a, b in zip(fast, slow))
    b, s = statistics.median(batched), statistics.median(single)
    print(f"model: {name}; {len(data)} items x {len(LABELS)} references, batch size {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"batched:       {len(data) / b:8.1f} items/s  (median of {args.repeats}: {b:.2f} s)")
    print(f"one at a time: {len(data) / s:8.1f} items/s  (median of {args.repeats}: {s:.2f} s)")
    print(f"ratio batched / one-at-a-time: {s / b:.2f}x; largest log-prob difference between the modes {drift:.2e}")


if __name__ == "__main__":
    main()
