"""What the three training entry points share: model construction, the Trainer arguments,
checkpoint discovery for resume, and a callback that streams metrics to MLflow and Dagster Pipes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from hkgai_pipelines.training.deepspeed_resume import config_for_resume, mark_universal_checkpointing
from hkgai_pipelines.training.presets import ModelPreset, StageConfig


def build_model(preset: ModelPreset, tokenizer, init_from: str | None = None):
    """`init_from` (a checkpoint directory) wins; else the preset's config (init) or checkpoint."""
    from transformers import AutoModelForCausalLM

    from hkgai_pipelines.training.architectures import init_model, isolate_packed_sequences
    from hkgai_pipelines.training.tokenizer import check_vocab

    source = init_from or (preset.checkpoint if preset.mode == "pretrained" else None)
    if source:
        if not Path(source).exists() and "://" not in source:
            raise FileNotFoundError(f"checkpoint not found: {source}")
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32 if not torch.cuda.is_available() else "auto")
    else:
        # The preset's model.architecture (DeepSeek-V3 by default, or V4), seeded.
        model = init_model(preset, tokenizer)
    # DeepSeek-V4's compressed attention kept within each packed SFT conversation; others unchanged.
    isolate_packed_sequences(model)
    check_vocab(tokenizer, model.config.vocab_size)
    # So that DeepSpeed can convert this run's checkpoints when the GPU count changes.
    mark_universal_checkpointing(model)
    return model


def prepare_for_training(model, preset: ModelPreset):
    """Apply the preset's speed settings: experts implementation, fused loss, compiled layers."""
    from hkgai_pipelines.training.losses import use_fused_linear_cross_entropy

    training = preset.training
    if training.experts_implementation != "eager" and hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation(training.experts_implementation)
    if training.fused_cross_entropy:
        use_fused_linear_cross_entropy(model)
    if training.compile_layers and torch.cuda.is_available():
        # In place: the state dict keys stay those of the plain model.
        for layer in model.model.layers:
            layer.compile()
    return model


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder (a trainer_state.json is written last)."""
    candidates = [p for p in Path(checkpoints_dir).glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(candidates, key=lambda p: int(p.name.split("-")[1]), default=None)


def deepspeed_config(preset: ModelPreset, checkpoints_dir: Path, force: bool = False) -> dict | None:
    """The preset's DeepSpeed config where a GPU is present (or `force`), adjusted to resume the
    newest checkpoint at this world size; None means the plain Trainer."""
    if not preset.training.deepspeed or not (force or torch.cuda.is_available()):
        return None
    path = Path(preset.training.deepspeed)
    if not path.is_absolute():
        path = Path(__file__).resolve().parents[2] / path
    return config_for_resume(path, latest_checkpoint(checkpoints_dir))


def training_arguments(stage: StageConfig, preset: ModelPreset, checkpoints_dir: Path, deepspeed: dict | None | str = "auto", **extra):
    """`deepspeed="auto"`: `deepspeed_config(preset, checkpoints_dir)`; a dict or None overrides."""
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    if deepspeed == "auto":
        deepspeed = deepspeed_config(preset, checkpoints_dir)
    settings = dict(
        output_dir=str(checkpoints_dir),
        max_steps=stage.steps,
        per_device_train_batch_size=stage.batch_size,
        learning_rate=stage.learning_rate,
        warmup_steps=stage.warmup_steps,
        lr_scheduler_type="cosine",
        save_steps=stage.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(10, stage.steps // 10 or 1)),
        report_to=[],
        seed=preset.training.seed,
        use_cpu=not cuda,
        bf16=cuda and preset.training.dtype == "bfloat16",
        # ZeRO only where there is a GPU to shard across; the plain Trainer on CPU.
        deepspeed=deepspeed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    # The caller's keywords win (the GPU benchmark logs every 10 steps and keeps one checkpoint).
    return TrainingArguments(**{**settings, **extra})


# Metric names on the stage's MLflow run. MLflow's run page ("Model metrics" tab, 3.x) files a
# metric under the section named by its key up to the last "/", shows the named sections first in
# alphabetical order and the keys without a "/" last, and orders charts by key within a section.
# So `train/` holds only the loss and learning-rate curves (the first row of charts),
# `train/details/` the rest of each step's log line, `train_summary/` the end-of-training figures,
# and the evaluation metrics (no "/", evaluation/report.py `flat_metrics`) come last.
# One-value figures are logged at step 0: MLflow draws a metric whose latest step is 0 as a bar
# labelled with its value (as the evaluation metrics), one at a later step as a one-point line.
HEADLINE_CURVES = ("loss", "learning_rate")
# Hugging Face's end-of-training line, renamed so that no figure passes for Dagster's:
# its `train_loss` is the mean loss over all steps, not the final loss.
HF_SUMMARY_NAMES = {"train_loss": "mean_loss_all_steps", "train_runtime": "runtime_seconds"}
# Dagster's figures (`history_summary`) under the names they have in MLflow.
SUMMARY_METRICS = {"first_loss": "train_summary/first_loss", "final_loss": "train_summary/final_loss",
                   "tokens_per_second": "train_summary/tokens_per_second_median"}


def mlflow_metric_key(key: str, summary_line: bool = False) -> str:
    """The MLflow name of a Trainer log key (`summary_line`: the line `train()` ends with)."""
    if summary_line:
        return "train_summary/" + HF_SUMMARY_NAMES.get(key, key.removeprefix("train_"))
    return f"train/{key}" if key in HEADLINE_CURVES else f"train/details/{key}"


class MetricsCallback(TrainerCallback):
    """Logs every Trainer log line to MLflow (same run across resumes, names from
    `mlflow_metric_key`) and to Dagster Pipes, with tokens/s measured between log lines
    (`tokens_per_step=None`: not measured); at the end of training, Dagster's figures
    (`history_summary`) under `train_summary/`."""

    def __init__(self, client, run_id: str, pipes, tokens_per_step: int | None) -> None:
        self.client = client
        self.run_id = run_id
        self.pipes = pipes
        self.tokens_per_step = tokens_per_step
        self._last = (time.perf_counter(), 0)
        self.history: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        # Totals over the whole train() call: no tokens/s from it (its interval holds the last
        # checkpoint save) and its own section in MLflow.
        summary_line = "train_runtime" in logs
        now, step = time.perf_counter(), state.global_step
        last_time, last_step = self._last
        if self.tokens_per_step and not summary_line and step > last_step and now > last_time:
            logs["tokens_per_second"] = (step - last_step) * self.tokens_per_step / (now - last_time)
        self._last = (now, step)
        metrics = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        if metrics:
            self._log_mlflow({mlflow_metric_key(k, summary_line): v for k, v in metrics.items()}, 0 if summary_line else step)
            self.history.append({"step": step, **metrics})
            self.pipes.log.info(f"step {step}: " + json.dumps({k: round(v, 4) for k, v in metrics.items()}))

    def on_train_end(self, args, state, control, **kwargs):
        # The figures Dagster reports, computed once, so that both UIs show the same numbers.
        figures = {SUMMARY_METRICS[k]: v for k, v in history_summary(self).items() if v is not None}
        if figures:
            self._log_mlflow(figures, 0)

    def on_save(self, args, state, control, **kwargs):
        self.pipes.log.info(f"checkpoint saved at step {state.global_step}")

    def _log_mlflow(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in metrics.items()])


def load_stage(job, stage_name: str):
    """(preset, stage config with the job's `max_steps` override, output dir, final dir,
    checkpoints dir) for one training stage."""
    from dataclasses import asdict

    from hkgai_pipelines.training.presets import StageConfig, load_preset

    preset = load_preset(job.preset, Path(job.config_dir) if job.config_dir else None)
    stage = getattr(preset.training, stage_name)
    if job.max_steps is not None:
        stage = StageConfig(**{**asdict(stage), "steps": job.max_steps})
    output = Path(job.output_dir)
    return preset, stage, output, output / "final", output / "checkpoints"


def train_reporting_failure(trainer, checkpoints: Path, pipes, client, run_id: str, label: str, resume_from: Path | None):
    """`trainer.train()` (resuming when a checkpoint exists); a crash is reported through Pipes
    with the last checkpoint and closes the MLflow run as FAILED before it propagates."""
    try:
        return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except BaseException as error:
        pipes.log.error(f"{label} failed: {error!r}; last checkpoint: {latest_checkpoint(checkpoints)}")
        client.set_terminated(run_id, "FAILED")
        raise


def history_summary(callback: "MetricsCallback") -> dict:
    """Dagster's figures: the loss of the first and of the last logged step and the median of
    the tokens/s intervals (MLflow: `SUMMARY_METRICS`)."""
    losses = [h["loss"] for h in callback.history if "loss" in h]
    speeds = sorted(h["tokens_per_second"] for h in callback.history if "tokens_per_second" in h)
    return {
        "first_loss": float(losses[0]) if losses else None,
        "final_loss": float(losses[-1]) if losses else None,
        "tokens_per_second": float(speeds[len(speeds) // 2]) if speeds else None,
    }


def run_cli(argv: list[str] | None, job_class, main, description: str, printed: tuple[str, ...]) -> None:
    """`python -m hkgai_pipelines.training.<stage> --job job.json`: run `main`, print a summary line."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--job", required=True, help=f"JSON file with the {job_class.__name__} fields")
    args = parser.parse_args(argv)
    summary = main(job_class(**json.loads(Path(args.job).read_text())))
    print(json.dumps({key: summary.get(key) for key in printed}), flush=True)
    close_process_group()


def close_process_group() -> None:
    """Destroy the torch.distributed process group after a successful run.

    Left to interpreter shutdown, Gloo's worker threads can outlive the objects they use and the
    rank dies with SIGABRT ("terminate called without an active exception", pytorch issue 190489)
    after its work is done, which torchrun reports as a failed job. Called on success only: after
    an exception the other ranks may be stuck in a collective and the destroy itself would hang.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
