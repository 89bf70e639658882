"""Resume of a ZeRO checkpoint at another world size goes through DeepSpeed's universal format."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hkgai_pipelines.training.deepspeed_resume import ResumeError, config_for_resume, saved_world_size

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ZERO2 = PROJECT_ROOT / "configs" / "deepspeed" / "zero2.json"


def _fake_checkpoint(folder: Path, ranks: int) -> Path:
    (folder / "global_step8").mkdir(parents=True)
    (folder / "latest").write_text("global_step8")
    (folder / "global_step8" / "mp_rank_00_model_states.pt").touch()
    for rank in range(ranks):
        (folder / "global_step8" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").touch()
    return folder


def test_saved_world_size_counts_optimizer_shards(tmp_path):
    assert saved_world_size(_fake_checkpoint(tmp_path / "checkpoint-8", 4)) == 4
    assert saved_world_size(tmp_path / "not-deepspeed") is None


def test_same_world_size_and_fresh_start_keep_the_config(tmp_path):
    checkpoint = _fake_checkpoint(tmp_path / "checkpoint-8", 2)
    plain = json.loads(ZERO2.read_text())
    assert config_for_resume(ZERO2, None) == plain
    assert config_for_resume(ZERO2, checkpoint, world_size=2, rank=0) == plain


def test_other_ranks_wait_for_rank_zero_and_give_up_with_a_clear_error(tmp_path):
    checkpoint = _fake_checkpoint(tmp_path / "checkpoint-8", 2)
    with pytest.raises(ResumeError, match="did not finish the universal conversion within 0 s"):
        config_for_resume(ZERO2, checkpoint, world_size=4, rank=3, wait_s=0.2)


def _torchrun(ranks: int, output: Path, steps: int) -> list[dict]:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    results = output.parent / f"results-{ranks}-ranks-{steps}-steps"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
         str(PROJECT_ROOT / "tests" / "deepspeed_worker.py"), str(output), str(steps), str(results)],
        capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads((results / f"rank{rank}.json").read_text()) for rank in range(ranks)]


# Slow (about 80-100 s on 2 cores: three torchrun launches and DeepSpeed's universal-checkpoint
# conversion); `make test-all` runs it. The default run keeps the fast checks of the same module.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_rank_checkpoint_resumes_on_one_rank_through_the_universal_format(tmp_path):
    output = tmp_path / "checkpoints"
    first = _torchrun(2, output, steps=4)
    assert [(r["world"], r["step"], r["resumed_from"]) for r in first] == [(2, 4, None), (2, 4, None)]
    assert saved_world_size(output / "checkpoint-4") == 2

    second = _torchrun(1, output, steps=6)
    assert [(r["world"], r["step"], r["resumed_from"], r["load_universal"]) for r in second] == [(1, 6, "checkpoint-4", True)]
    universal = output / "checkpoint-4" / "global_step4_universal"
    assert (output / "checkpoint-4" / "latest_universal").read_text() == "global_step4_universal"
    assert (universal / "zero" / "lm_head.weight" / "exp_avg.pt").exists()  # Adam moments carried over
    assert saved_world_size(output / "checkpoint-6") == 1
