"""Run by test_deepspeed_resume under torchrun: a tiny DeepSeek model trained by the Trainer with
the project's ZeRO-2 config on CPU (gloo), resuming from the newest checkpoint the way the
training entry points do. Each rank writes its result as JSON to RESULTS/rank<R>.json (not stdout:
the ranks share one pipe, and their lines can interleave)."""

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, Trainer

from hkgai_pipelines.training.common import close_process_group, latest_checkpoint, training_arguments
from hkgai_pipelines.training.deepspeed_resume import config_for_resume, mark_universal_checkpointing
from hkgai_pipelines.training.presets import load_preset
from tests.conftest import TINY_DEEPSEEK

output, steps, results = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
preset = load_preset("gpu-h100")
stage = replace(preset.training.sft, steps=steps, batch_size=2, save_steps=4, warmup_steps=0)
torch.manual_seed(0)
model = DeepseekV3ForCausalLM(DeepseekV3Config(**TINY_DEEPSEEK))
mark_universal_checkpointing(model)
rows = [{"input_ids": torch.randint(0, 64, (16,))} for _ in range(64)]
for row in rows:
    row["labels"] = row["input_ids"]
resume = latest_checkpoint(output)
config = config_for_resume(Path(__file__).resolve().parents[1] / preset.training.deepspeed, resume, wait_s=120)
args = training_arguments(stage, preset, output, deepspeed=config, logging_steps=1, save_total_limit=3)
trainer = Trainer(model=model, args=args, train_dataset=rows)
trainer.train(resume_from_checkpoint=str(resume) if resume else None)
results.mkdir(parents=True, exist_ok=True)
(results / f"rank{os.environ['RANK']}.json").write_text(json.dumps({
    "rank": int(os.environ["RANK"]), "world": int(os.environ["WORLD_SIZE"]), "step": trainer.state.global_step,
    "resumed_from": resume.name if resume else None, "load_universal": config.get("checkpoint", {}).get("load_universal", False),
    "loss": trainer.state.log_history[-2].get("loss"),
}))
close_process_group()
