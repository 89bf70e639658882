"""Continued pretraining of a DeepSeek-architecture model on cleaned_corpus.

    python -m hkgai_pipelines.training.pretrain --job job.json

`init` presets build the model from the preset's config (and train the byte-level BPE
tokenizer on the corpus); `pretrained` presets load the checkpoint. Runs under Dagster Pipes:
logs and metrics stream to the orchestrator and MLflow, checkpoints are saved every
`save_steps`, a re-run resumes from the newest checkpoint in the same MLflow run, and the
final model directory, run id, steps, tokens and losses come back as materialization metadata.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class PretrainJob:
    preset: str
    corpus: str  # cleaned_corpus: a Parquet file or a folder of part files
    output_dir: str
    tracking_uri: str
    experiment: str = "hkgai-v1"
    run_name: str = "base_model"
    config_dir: str | None = None
    artifact_root: str | None = None
    #: Overrides the preset's step count (tests use a handful).
    max_steps: int | None = None
    #: Language sampling weights (params.yaml `training.language_mix`); the preset's otherwise.
    language_mix: dict | None = None
    #: sft_dataset, for the SFT-eval perplexity every stage reports (optional here).
    sft_dataset: str | None = None


def main(job: PretrainJob) -> dict:
    from transformers import PrinterCallback, Trainer
    from transformers.utils import logging as hf_logging

    from hkgai_pipelines.training.common import (
        MetricsCallback, build_model, history_summary, latest_checkpoint, load_stage, prepare_for_training, train_reporting_failure,
        training_arguments,
    )
    from hkgai_pipelines.training.data import BlockDataset, count_corpus_documents, iter_corpus_documents, pack_corpus
    from hkgai_pipelines.training.quality import stage_perplexities
    from hkgai_pipelines.training.runs import finish_stage, is_rank_zero, log_params, open_stage_pipes, open_stage_run
    from hkgai_pipelines.training.tokenizer import deepseek_tokenizer, train_bpe_tokenizer

    hf_logging.disable_progress_bar()
    with open_stage_pipes() as pipes, contextlib.ExitStack() as stack:
        preset, stage, output, final_dir, checkpoints = load_stage(job, "pretrain")
        documents = count_corpus_documents(job.corpus)
        if documents < 10:
            raise ValueError(f"{job.corpus}: {documents} documents is too small a corpus to pretrain on")
        torch.manual_seed(preset.training.seed)

        kind = preset.tokenizer["kind"]
        tokenizer_dir = output / "tokenizer"
        # Every rank builds the same (deterministic) tokenizer; rank 0 writes it. It is read back
        # only on resume, when a checkpoint proves the earlier attempt finished writing it.
        save_dir = tokenizer_dir if is_rank_zero() else None
        if (tokenizer_dir / "tokenizer.json").exists() and latest_checkpoint(checkpoints):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)  # resume: the same vocabulary
        elif kind == "train_bpe":
            tokenizer = train_bpe_tokenizer((d["text"] for d in iter_corpus_documents(job.corpus)), preset.tokenizer["vocab_size"], save_dir)
        elif kind == "deepseek":
            tokenizer = deepseek_tokenizer(save_dir)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(preset.checkpoint)
            if save_dir:
                tokenizer.save_pretrained(save_dir)

        resume_from = latest_checkpoint(checkpoints)
        model = prepare_for_training(build_model(preset, tokenizer), preset)
        seq_len = preset.training.seq_len
        target = max(stage.steps, 1) * stage.batch_size * seq_len
        mix = job.language_mix or preset.training.language_mix
        # Streamed from the part files; the packed tokens are memory-mapped from a folder of
        # this process (every rank packs the same blocks), removed when the stage ends.
        packed_dir = Path(tempfile.mkdtemp(prefix="hkgai-packed-"))
        stack.callback(shutil.rmtree, packed_dir, ignore_errors=True)
        corpus = pack_corpus(iter_corpus_documents(job.corpus), tokenizer, seq_len, target, mix, preset.training.seed, work_dir=packed_dir)
        client, run_id, resumed = open_stage_run(job.tracking_uri, job.experiment, job.run_name, output, job.artifact_root)
        log_params(client, run_id, {**preset.flat_params(), "stage": "pretrain", "pretrain.steps": stage.steps, "corpus": job.corpus,
                                    **{f"language_mix.{k}": v for k, v in mix.items()}})
        quality_before = stage_perplexities(model, tokenizer, seq_len, job.corpus, job.sft_dataset)
        pipes.log.info(f"pretrain: {corpus.train_tokens} tokens in {len(corpus.train_blocks)} blocks; resume from {resume_from}")

        callback = MetricsCallback(client, run_id, pipes, tokens_per_step=stage.batch_size * seq_len)
        trainer = Trainer(
            model=model,
            args=training_arguments(stage, preset, checkpoints),
            train_dataset=BlockDataset(corpus.train_blocks, corpus.order),
            callbacks=[callback],
        )
        # MetricsCallback reports every log line (to MLflow and Pipes); the Trainer's own
        # printer would print each a second time.
        trainer.remove_callback(PrinterCallback)
        if stage.steps > 0:
            train_reporting_failure(trainer, checkpoints, pipes, client, run_id, "pretraining", resume_from)
        else:
            # `pretrained` mode with no continued pretraining: the checkpoint is the base model.
            pipes.log.info("pretrain.steps is 0: the loaded checkpoint is used as base_model as is")
        trainer.save_model(str(final_dir))
        if is_rank_zero():  # every rank holds the same tokenizer; one writes it
            tokenizer.save_pretrained(final_dir)
        quality_after = stage_perplexities(model, tokenizer, seq_len, job.corpus, job.sft_dataset)
        summary = {
            "checkpoint_uri": str(final_dir),
            "mlflow_run_id": run_id,
            "steps": int(trainer.state.global_step),
            "resumed_from_step": int(resume_from.name.split("-")[1]) if resume_from else 0,
            "tokens_seen": int(trainer.state.global_step * stage.batch_size * seq_len),
            # The loss of the last logged step, never Hugging Face's `training_loss` (the mean over all steps).
            **history_summary(callback),
            "perplexity_before": quality_before["corpus"],
            "perplexity_after": quality_after["corpus"],
            "tokens_by_lang": corpus.tokens_by_lang,
            "quality_before": quality_before,
            "quality_after": quality_after,
        }
        finish_stage(pipes, client, run_id, output, final_dir, summary,
                     {f"heldout_ppl_{lang}": v for lang, v in quality_after["corpus"].items()})
        return summary


def cli(argv: list[str] | None = None) -> None:
    from hkgai_pipelines.training.common import run_cli

    run_cli(argv, PretrainJob, main, "Continued pretraining (runs under Dagster Pipes).", ("checkpoint_uri", "mlflow_run_id", "steps", "final_loss"))


if __name__ == "__main__":
    cli(sys.argv[1:])
