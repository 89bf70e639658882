"""Preference alignment with trl's DPOTrainer on preference_dataset (full parameters).

    python -m hkgai_pipelines.training.dpo --job job.json

The policy starts from sft_checkpoint and the frozen reference is the same checkpoint. Reward
accuracy and margin (trl's implicit DPO reward, beta x log-ratio against the reference) are
measured on the held-out pairs before and after training, and on the training pairs, and go
to MLflow and the asset metadata. Runs under Dagster Pipes like the other stages.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DpoJob:
    preset: str
    dataset: str
    sft_model: str
    output_dir: str
    tracking_uri: str
    experiment: str = "hkgai-v1"
    run_name: str = "aligned_model"
    config_dir: str | None = None
    artifact_root: str | None = None
    max_steps: int | None = None
    #: cleaned_corpus and sft_dataset, for the perplexities every stage reports (optional).
    corpus: str | None = None
    sft_dataset: str | None = None


def _rewards(metrics: dict) -> dict:
    return {
        "reward_accuracy": float(metrics.get("eval_rewards/accuracies", 0.0)),
        "reward_margin": float(metrics.get("eval_rewards/margins", 0.0)),
    }


def main(job: DpoJob) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer

    from hkgai_pipelines.training.common import (
        MetricsCallback, deepspeed_config, history_summary, latest_checkpoint, load_stage, train_reporting_failure,
    )
    from hkgai_pipelines.training.deepspeed_resume import mark_universal_checkpointing
    from hkgai_pipelines.training.datasets import read_jsonl
    from hkgai_pipelines.training.quality import stage_perplexities
    from hkgai_pipelines.training.runs import finish_stage, is_rank_zero, log_params, open_stage_pipes, open_stage_run

    import datasets

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    with open_stage_pipes() as pipes:
        preset, stage, output, final_dir, checkpoints = load_stage(job, "dpo")
        records = read_jsonl(Path(job.dataset))
        columns = ("prompt", "chosen", "rejected")
        train = [{k: r[k] for k in columns} for r in records if r["split"] == "train"]
        held = [{k: r[k] for k in columns} for r in records if r["split"] == "eval"]
        if len(train) < 4 or not held:
            raise ValueError(f"{job.dataset}: {len(train)} training and {len(held)} held-out pairs; DPO needs at least 4 and 1")
        if not Path(job.sft_model, "config.json").exists():
            raise FileNotFoundError(f"sft checkpoint not found: {job.sft_model}")
        tokenizer = AutoTokenizer.from_pretrained(job.sft_model)
        model = AutoModelForCausalLM.from_pretrained(job.sft_model, dtype=torch.float32 if not torch.cuda.is_available() else "auto")
        mark_universal_checkpointing(model)
        cuda = torch.cuda.is_available()
        config = DPOConfig(
            output_dir=str(checkpoints), max_steps=stage.steps, per_device_train_batch_size=stage.batch_size,
            per_device_eval_batch_size=stage.batch_size, learning_rate=stage.learning_rate, warmup_steps=stage.warmup_steps,
            beta=stage.beta, max_length=preset.training.seq_len, save_steps=stage.save_steps, save_total_limit=2,
            logging_steps=max(1, min(10, stage.steps // 10 or 1)), report_to=[], seed=preset.training.seed,
            use_cpu=not cuda, bf16=cuda and preset.training.dtype == "bfloat16", gradient_checkpointing=False,
            deepspeed=deepspeed_config(preset, checkpoints),
            disable_tqdm=True, dataloader_num_workers=0,
        )
        client, run_id, _ = open_stage_run(job.tracking_uri, job.experiment, job.run_name, output, job.artifact_root)
        log_params(client, run_id, {**preset.flat_params(), "stage": "dpo", "dpo.steps": stage.steps, "dpo.beta": stage.beta, "dataset": job.dataset, "sft_model": job.sft_model})
        # No tokens/s: a pair is a chosen and a rejected sequence of varying length, so batch x seq_len
        # would be a made-up rate (trl counts the real tokens as `num_tokens`).
        callback = MetricsCallback(client, run_id, pipes, tokens_per_step=None)
        trainer = DPOTrainer(
            model=model, args=config, train_dataset=Dataset.from_list(train), eval_dataset=Dataset.from_list(held),
            processing_class=tokenizer, callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)
        before = _rewards(trainer.evaluate())
        quality_before = stage_perplexities(trainer.model, tokenizer, preset.training.seq_len, job.corpus, job.sft_dataset)
        resume_from = latest_checkpoint(checkpoints)
        train_reporting_failure(trainer, checkpoints, pipes, client, run_id, "DPO", resume_from)
        after = _rewards(trainer.evaluate())
        quality_after = stage_perplexities(trainer.model, tokenizer, preset.training.seq_len, job.corpus, job.sft_dataset)
        on_train = _rewards(trainer.evaluate(eval_dataset=Dataset.from_list(train)))
        trainer.save_model(str(final_dir))
        if is_rank_zero():  # every rank holds the same tokenizer; one writes it
            tokenizer.save_pretrained(final_dir)
        # trl counts the prompt, chosen and rejected tokens it has processed as `num_tokens`.
        counted = [h["num_tokens"] for h in callback.history if "num_tokens" in h]
        summary = {
            "checkpoint_uri": str(final_dir), "mlflow_run_id": run_id, "steps": int(trainer.state.global_step),
            "resumed_from_step": int(resume_from.name.split("-")[1]) if resume_from else 0,
            "train_pairs": len(train), "eval_pairs": len(held),
            "tokens_seen": int(counted[-1]) if counted else None,
            **{k: v for k, v in history_summary(callback).items() if k != "tokens_per_second"},
            "heldout_reward_accuracy_before": before["reward_accuracy"], "heldout_reward_margin_before": before["reward_margin"],
            "heldout_reward_accuracy": after["reward_accuracy"], "heldout_reward_margin": after["reward_margin"],
            "train_reward_accuracy": on_train["reward_accuracy"], "train_reward_margin": on_train["reward_margin"],
            "quality_before": quality_before, "quality_after": quality_after,
        }
        finish_stage(pipes, client, run_id, output, final_dir, summary,
                     {k: summary[k] for k in ("heldout_reward_accuracy", "heldout_reward_margin", "train_reward_margin")})
        return summary


def cli(argv: list[str] | None = None) -> None:
    from hkgai_pipelines.training.common import run_cli

    run_cli(argv, DpoJob, main, "DPO alignment (runs under Dagster Pipes).", ("checkpoint_uri", "mlflow_run_id", "steps", "heldout_reward_accuracy"))


if __name__ == "__main__":
    cli(sys.argv[1:])
