"""DeepSpeed configs for the Trainer, and resume across a change in GPU count.

A ZeRO checkpoint is sharded by data-parallel rank (`zero_pp_rank_<r>_..._optim_states.pt`),
so a job saved on 8 GPUs cannot load its optimizer state on 4 or 16 (deepspeed issues 2898 and
5405). DeepSpeed's answer is the universal checkpoint: one folder per parameter with its full
fp32 weights and Adam moments, loadable at any world size. The conversion is slow and doubles
the disk use, so it runs only when the world size actually changed, once, on global rank 0;
the other ranks wait for the marker file it writes last (the checkpoint volume is shared).

The conversion needs `universal_checkpoint_info` in the saved state, which DeepSpeed copies from
the model; `mark_universal_checkpointing` sets it (data parallel only: no tensor-parallel
patterns to describe).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

UNIVERSAL_INFO = {"universal_checkpoint_version": 0.4}
UNIVERSAL_MARKER = "latest_universal"


class ResumeError(RuntimeError):
    pass


def mark_universal_checkpointing(model) -> None:
    model.universal_checkpoint_info = dict(UNIVERSAL_INFO)


def load_config(path: str | Path) -> dict:
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    stage = config.get("zero_optimization", {}).get("stage")
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"{path}: zero_optimization.stage must be 0-3, got {stage!r}")
    return config


def current_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def saved_tag(checkpoint: Path) -> str | None:
    """The DeepSpeed tag (`global_stepN`) inside a Trainer `checkpoint-N` folder, if any."""
    latest = Path(checkpoint) / "latest"
    return latest.read_text().strip() if latest.exists() else None


def saved_world_size(checkpoint: Path) -> int | None:
    """Data-parallel ranks that wrote the checkpoint (one optimizer shard each)."""
    tag = saved_tag(checkpoint)
    if tag is None:
        return None
    shards = [p for p in (Path(checkpoint) / tag).glob("*optim_states.pt") if re.match(r"(bf16_)?zero_pp_rank_\d+_", p.name)]
    return len(shards) or None


def convert_to_universal(checkpoint: Path) -> Path:
    """Run DeepSpeed's ds_to_universal on the checkpoint's tag; returns the universal folder."""
    tag = saved_tag(checkpoint)
    if tag is None:
        raise ResumeError(f"{checkpoint}: no DeepSpeed 'latest' file; not a DeepSpeed checkpoint")
    source, target = Path(checkpoint) / tag, Path(checkpoint) / f"{tag}_universal"
    result = subprocess.run(
        [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(source), "--output_folder", str(target)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise ResumeError(f"universal conversion of {source} failed:\n{result.stderr[-2000:]}")
    # Written last: its presence means the conversion is complete.
    (Path(checkpoint) / UNIVERSAL_MARKER).write_text(target.name)
    return target


def wait_for_universal(checkpoint: Path, timeout_s: float, poll_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (Path(checkpoint) / UNIVERSAL_MARKER).exists():
        if time.monotonic() > deadline:
            raise ResumeError(f"{checkpoint}: rank 0 did not finish the universal conversion within {timeout_s:.0f} s")
        time.sleep(poll_s)


def config_for_resume(config_path: str | Path, checkpoint: Path | None, world_size: int | None = None,
                      rank: int | None = None, wait_s: float = 1800) -> dict:
    """The DeepSpeed config to train with: unchanged for a fresh start or a same-size resume;
    with `checkpoint.load_universal` after converting when the world size changed."""
    config = load_config(config_path)
    if checkpoint is None:
        return config
    world_size = current_world_size() if world_size is None else world_size
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    saved = saved_world_size(checkpoint)
    if saved is None or saved == world_size:
        return config
    if not (Path(checkpoint) / UNIVERSAL_MARKER).exists():
        if rank == 0:
            convert_to_universal(checkpoint)
        else:
            wait_for_universal(checkpoint, wait_s)
    return {**config, "checkpoint": {**config.get("checkpoint", {}), "load_universal": True}}
