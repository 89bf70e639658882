"""The DeepSpeed configs parse, and their "auto" fields are filled from the Trainer arguments."""

import json
from pathlib import Path

import pytest

from hkgai_pipelines.training.presets import load_preset

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "deepspeed"


@pytest.mark.parametrize("name, stage", [("zero2.json", 2), ("zero3.json", 3)])
def test_config_parses_and_defers_batch_sizes_to_the_trainer(name, stage):
    config = json.loads((CONFIGS / name).read_text())
    assert config["zero_optimization"]["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "gradient_clipping"):
        assert config[key] == "auto"


def test_presets_point_at_existing_configs():
    for preset in ("gpu-h100", "production"):
        path = Path(__file__).resolve().parent.parent / load_preset(preset).training.deepspeed
        assert path.exists(), path


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json"])
def test_trainer_config_fills_auto_values(name):
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from hkgai_pipelines.training.common import training_arguments

    preset = load_preset("gpu-h100")
    args = training_arguments(preset.training.sft, preset, Path("/tmp/unused"), deepspeed=None)
    config = HfTrainerDeepSpeedConfig(str(CONFIGS / name))
    config.trainer_config_process(args)
    assert config.config["train_micro_batch_size_per_gpu"] == preset.training.sft.batch_size == 16
    assert config.config["gradient_accumulation_steps"] == 1
    assert config.config["train_batch_size"] == preset.training.sft.batch_size * args.world_size
    assert config.config["gradient_clipping"] == args.max_grad_norm
