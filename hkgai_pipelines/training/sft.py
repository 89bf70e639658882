"""Full-parameter supervised fine-tuning on sft_dataset.

    python -m hkgai_pipelines.training.sft --job job.json

Conversations are rendered with the chat template saved with the tokenizer; the loss covers
the assistant's tokens only (the prompt's labels are -100), so the model learns to answer,
not to repeat questions. Runs under Dagster Pipes like pretraining: MLflow metrics, periodic
checkpoints, resume of a killed run, per-language held-out perplexity before and after.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class SftJob:
    preset: str
    dataset: str
    base_model: str
    output_dir: str
    tracking_uri: str
    experiment: str = "hkgai-v1"
    run_name: str = "sft_checkpoint"
    config_dir: str | None = None
    artifact_root: str | None = None
    max_steps: int | None = None
    #: cleaned_corpus, for the held-out corpus perplexity every stage reports (optional).
    corpus: str | None = None


def encode_conversation(tokenizer, messages: list[dict], max_length: int) -> dict:
    from hkgai_pipelines.training.tokenizer import chat_ids

    prompt_ids = chat_ids(tokenizer, messages[:-1], add_generation_prompt=True)
    full_ids = chat_ids(tokenizer, messages)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return {"input_ids": full_ids[:max_length], "labels": labels[:max_length]}


class ConversationCollator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in examples)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for e in examples:
            pad = width - len(e["input_ids"])
            batch["input_ids"].append(e["input_ids"] + [self.pad_id] * pad)
            batch["labels"].append(e["labels"] + [-100] * pad)
            batch["attention_mask"].append([1] * len(e["input_ids"]) + [0] * pad)
        return {k: torch.tensor(v) for k, v in batch.items()}


@torch.no_grad()
def answer_perplexity_by_language(model, encoded: list[dict], langs: list[str], collator) -> dict[str, float]:
    model.eval()
    by_lang: dict[str, list[float]] = {}
    for example, lang in zip(encoded, langs):
        batch = collator([example])
        by_lang.setdefault(lang, []).append(float(model(**batch).loss))
    model.train()
    return {lang: float(torch.exp(torch.tensor(sum(v) / len(v)))) for lang, v in sorted(by_lang.items())}


def main(job: SftJob) -> dict:
    from transformers import AutoTokenizer, PrinterCallback, Trainer
    from transformers.utils import logging as hf_logging

    from hkgai_pipelines.training.common import (
        MetricsCallback, build_model, history_summary, latest_checkpoint, load_stage, prepare_for_training, train_reporting_failure,
        training_arguments,
    )
    from hkgai_pipelines.training.datasets import read_jsonl
    from hkgai_pipelines.training.packing import PackedCollator, pack_conversations
    from hkgai_pipelines.training.quality import stage_perplexities
    from hkgai_pipelines.training.runs import finish_stage, is_rank_zero, log_params, open_stage_pipes, open_stage_run

    hf_logging.disable_progress_bar()
    with open_stage_pipes() as pipes:
        preset, stage, output, final_dir, checkpoints = load_stage(job, "sft")
        records = read_jsonl(Path(job.dataset))
        train = [r for r in records if r["split"] == "train"]
        held = [r for r in records if r["split"] == "eval"]
        if len(train) < 8:
            raise ValueError(f"{job.dataset}: {len(train)} training conversations is too few for SFT")
        tokenizer = AutoTokenizer.from_pretrained(job.base_model)
        if not tokenizer.chat_template:
            raise ValueError(f"{job.base_model}: the tokenizer has no chat template")
        model = build_model(preset, tokenizer, init_from=job.base_model)
        seq_len = preset.training.seq_len
        encoded_train = [encode_conversation(tokenizer, r["messages"], seq_len) for r in train]
        encoded_held = [encode_conversation(tokenizer, r["messages"], seq_len) for r in held]
        collator = ConversationCollator(tokenizer.pad_token_id)
        client, run_id, _ = open_stage_run(job.tracking_uri, job.experiment, job.run_name, output, job.artifact_root)
        log_params(client, run_id, {**preset.flat_params(), "stage": "sft", "sft.steps": stage.steps, "dataset": job.dataset, "base_model": job.base_model})
        ppl_before = answer_perplexity_by_language(model, encoded_held, [r["lang"] for r in held], collator)
        quality_before = stage_perplexities(model, tokenizer, seq_len, job.corpus, None)
        resume_from = latest_checkpoint(checkpoints)
        if stage.pack:
            rows, train_collator = pack_conversations(encoded_train, seq_len), PackedCollator(tokenizer.pad_token_id)
        else:
            rows, train_collator = encoded_train, collator
        # Rows are padded per batch, not to seq_len: count their mean real length.
        mean_tokens = sum(len(e["input_ids"]) for e in rows) / len(rows)
        callback = MetricsCallback(client, run_id, pipes, tokens_per_step=int(stage.batch_size * mean_tokens))
        prepare_for_training(model, preset)
        trainer = Trainer(
            model=model, args=training_arguments(stage, preset, checkpoints, remove_unused_columns=False),
            train_dataset=rows, data_collator=train_collator, callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)
        train_reporting_failure(trainer, checkpoints, pipes, client, run_id, "SFT", resume_from)
        trainer.save_model(str(final_dir))
        if is_rank_zero():  # every rank holds the same tokenizer; one writes it
            tokenizer.save_pretrained(final_dir)
        ppl_after = answer_perplexity_by_language(model, encoded_held, [r["lang"] for r in held], collator)
        quality_after = stage_perplexities(model, tokenizer, seq_len, job.corpus, None)
        summary = {
            "checkpoint_uri": str(final_dir), "mlflow_run_id": run_id, "steps": int(trainer.state.global_step),
            "resumed_from_step": int(resume_from.name.split("-")[1]) if resume_from else 0,
            "train_conversations": len(train), "train_rows": len(rows), "eval_conversations": len(held),
            **history_summary(callback),
            "tokens_seen": int(trainer.state.global_step * stage.batch_size * mean_tokens),
            "perplexity_before": ppl_before, "perplexity_after": ppl_after,
            "quality_before": {"sft_eval": ppl_before, **quality_before},
            "quality_after": {"sft_eval": ppl_after, **quality_after},
        }
        finish_stage(pipes, client, run_id, output, final_dir, summary,
                     {f"sft_eval_ppl_{lang}": v for lang, v in ppl_after.items()})
        return summary


def cli(argv: list[str] | None = None) -> None:
    from hkgai_pipelines.training.common import run_cli

    run_cli(argv, SftJob, main, "Supervised fine-tuning (runs under Dagster Pipes).", ("checkpoint_uri", "mlflow_run_id", "steps", "final_loss"))


if __name__ == "__main__":
    cli(sys.argv[1:])
