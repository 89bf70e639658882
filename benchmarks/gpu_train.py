"""GPU check: SFT of the gpu-h100 preset under DeepSpeed ZeRO-2 on one H100.

    python benchmarks/gpu_train.py [--budget-s 480] [--out DIR]     # on the GPU machine
    python benchmarks/gpu_train.py --tiny                            # a CPU rehearsal, minutes

One process orchestrates; each variant trains in its own `torchrun --nproc_per_node=1` child
through the project's own path (preset -> build_model -> prepare_for_training -> Trainer with
the preset's DeepSpeed config), so a crash or an out-of-memory in one variant leaves the others
measured. Printed, in this order:

- the card's bf16 matmul rate (8192^3, median of 10), the second MFU denominator;
- per variant: median step time -> tokens/s, MFU against 989 TFLOP/s (H100 SXM bf16 dense) and
  against the measured matmul rate, peak GPU memory; the first variants are the two MoE
  implementations (eager expert loop vs grouped GEMM), then one change at a time on top;
- a CUDA-time profile (top kernels) of the eager-loss and fused-loss grouped variants;
- the SFT run: a few hundred steps with a loss curve, SIGKILLed after its checkpoint, resumed,
  and the step it continued from.

FLOPs per token = 6 x active parameters (embedding lookup excluded, lm_head included, routed
experts counted top-k of n) + attention 6 x layers x seq x heads x (qk_dim + v_dim), PaLM's
convention (no causal halving). The SFT data are the project's 331 authored conversations,
concatenated into 2048-token rows with the DeepSeek tokenizer under the plain causal mask and
cycled: the loss curve shows fitting, not generalisation. (The SFT stage packs with
`training/packing.py` instead, whose block-diagonal mask keeps conversations apart; these
figures were measured before it existed.)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H100_BF16_DENSE_TFLOPS = 989.0
MARK = "@@"


@dataclass
class Variant:
    name: str
    experts: str = "grouped_mm"
    fused_loss: bool = False
    compile: bool = False
    micro_batch: int = 8
    steps: int = 18
    warmup: int = 4
    save_steps: int = 0
    profile: bool = False
    resume: bool = False
    output_dir: str = ""
    tiny: bool = False
    deepspeed: bool = True


# ----------------------------------------------------------------------------- worker side

def emit(**event) -> None:
    print(MARK + json.dumps(event), flush=True)


def flops_per_token(model, seq_len: int) -> tuple[int, int, float]:
    """(total parameters, active parameters, training FLOPs per token)."""
    config = model.config
    total = active = 0
    for name, param in model.named_parameters():
        n = param.numel()
        total += n
        if "embed_tokens" in name:
            continue
        if ".mlp.experts." in name:
            n = n * config.num_experts_per_tok // config.n_routed_experts
        active += n
    qk = config.qk_nope_head_dim + config.qk_rope_head_dim
    attention = 6 * config.num_hidden_layers * seq_len * config.num_attention_heads * (qk + config.v_head_dim)
    return total, active, 6.0 * active + attention


def packed_sft_rows(tokenizer, seq_len: int, rows: int):
    """Authored SFT conversations (prompt tokens unlabelled), concatenated into full rows with
    no segment mask: the layout the published H100 figures were measured on."""
    import torch

    from hkgai_pipelines.training.datasets import sft_records
    from hkgai_pipelines.training.sft import encode_conversation

    encoded = [encode_conversation(tokenizer, r["messages"], seq_len) for r in sft_records([]) if r["split"] == "train"]
    ids: list[int] = []
    labels: list[int] = []
    out = []
    i = 0
    while len(out) < rows:
        example = encoded[i % len(encoded)]
        i += 1
        ids += example["input_ids"]
        labels += example["labels"]
        while len(ids) >= seq_len and len(out) < rows:
            out.append({"input_ids": torch.tensor(ids[:seq_len]), "labels": torch.tensor(labels[:seq_len])})
            ids, labels = ids[seq_len:], labels[seq_len:]
    return out, len(encoded)


def worker(variant: Variant) -> None:
    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback
    from transformers.utils import logging as hf_logging

    from hkgai_pipelines.training.common import build_model, latest_checkpoint, prepare_for_training, training_arguments
    from hkgai_pipelines.training.deepspeed_resume import config_for_resume
    from hkgai_pipelines.training.presets import StageConfig, load_preset
    from hkgai_pipelines.training.tokenizer import deepseek_tokenizer

    hf_logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    preset = load_preset("gpu-h100")
    model_shape = dict(preset.model)
    seq_len = preset.training.seq_len
    if variant.tiny:
        model_shape.update(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=32,
                           qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16)
        seq_len = 128
    training = replace(preset.training, seq_len=seq_len, experts_implementation=variant.experts,
                       fused_cross_entropy=variant.fused_loss, compile_layers=variant.compile)
    preset = replace(preset, model=model_shape, training=training)
    tokenizer = deepseek_tokenizer()
    if cuda:
        torch.set_default_dtype(torch.bfloat16)
        torch.set_default_device("cuda")
    model = build_model(preset, tokenizer)
    torch.set_default_device(None)
    torch.set_default_dtype(torch.float32)
    prepare_for_training(model, preset)
    total, active, per_token = flops_per_token(model, seq_len)
    rows, conversations = packed_sft_rows(tokenizer, seq_len, variant.steps * variant.micro_batch)
    emit(event="model", total_params=total, active_params=active, flops_per_token=per_token,
         conversations=conversations, rows=len(rows), seq_len=seq_len)

    # Variants that only time steps never save; their Trainer output still needs a folder.
    checkpoints = Path(variant.output_dir or tempfile.mkdtemp(prefix="gpu_train_")) / "checkpoints"
    resume_from = latest_checkpoint(checkpoints) if variant.resume else None
    deepspeed = None
    if variant.deepspeed and (cuda or os.environ.get("DS_ACCELERATOR") == "cpu"):
        deepspeed = config_for_resume(ROOT / preset.training.deepspeed, resume_from)
    stage = StageConfig(steps=variant.steps, batch_size=variant.micro_batch, learning_rate=1e-4,
                        warmup_steps=min(20, variant.steps // 10), save_steps=variant.save_steps or variant.steps * 10)
    args = training_arguments(stage, preset, checkpoints, deepspeed=deepspeed, logging_steps=10, save_total_limit=1,
                              remove_unused_columns=False)

    class Probe(TrainerCallback):
        def __init__(self) -> None:
            self.last = None
            self.profiler = None

        def on_train_begin(self, args, state, control, **kwargs):
            emit(event="begin", step=state.global_step)

        def on_step_begin(self, args, state, control, **kwargs):
            if variant.profile and state.global_step == variant.warmup and self.profiler is None:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
                self.profiler.__enter__()
            if cuda:
                torch.cuda.synchronize()
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            emit(event="step", step=state.global_step, seconds=time.perf_counter() - self.last)
            if self.profiler is not None and state.global_step == variant.warmup + 2:
                self.profiler.__exit__(None, None, None)
                try:
                    table = self.profiler.key_averages().table(sort_by="device_time_total" if cuda else "cpu_time_total", row_limit=18, max_name_column_width=60)
                    print(f"profile of steps {variant.warmup + 1}-{variant.warmup + 2} ({variant.name}):\n{table}", flush=True)
                except Exception as error:  # a profile is a nice-to-have; never lose the run to it
                    print(f"profile failed: {error!r}", flush=True)
                self.profiler = None
            # Never save at the last step: only the mid-run checkpoint matters here (13 GB each).
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                emit(event="loss", step=state.global_step, loss=float(logs["loss"]))

        def on_save(self, args, state, control, **kwargs):
            emit(event="saved", step=state.global_step)

    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[Probe()])
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    emit(event="done", step=trainer.state.global_step, peak_gib=peak)


# ----------------------------------------------------------------------------- orchestrator

def run_child(variant: Variant, timeout_s: float, log, kill_after_step: int | None = None) -> dict:
    """Run one variant; collect its events. `kill_after_step`: SIGKILL the whole process group
    once a checkpoint exists and that step is done (an evicted pod, as far as the job can tell)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               str(Path(__file__).resolve()), "--worker", json.dumps(asdict(variant))]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    result = {"steps": [], "losses": [], "saved": [], "killed_at": None, "tail": []}
    try:
        for line in proc.stdout:
            log.write(line)
            if line.startswith(MARK):
                event = json.loads(line[len(MARK):])
                kind = event.pop("event")
                if kind == "step":
                    result["steps"].append(event)
                elif kind == "loss":
                    result["losses"].append(event)
                elif kind == "saved":
                    result["saved"].append(event["step"])
                else:
                    result[kind] = event
                if kind == "step" and kill_after_step and result["saved"] and event["step"] >= kill_after_step:
                    os.killpg(proc.pid, signal.SIGKILL)
                    result["killed_at"] = event["step"]
                    break
            else:
                result["tail"] = (result["tail"] + [line.rstrip()])[-40:]
            if time.monotonic() - started > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)
                result["error"] = f"timed out after {timeout_s:.0f} s"
                break
    finally:
        proc.wait()
    result["seconds"] = time.monotonic() - started
    if proc.returncode not in (0, -signal.SIGKILL) and "error" not in result:
        # The worker's own exception, not torchrun's ChildFailedError wrapper.
        errors = [l for l in result["tail"] if "Error" in l and "ChildFailedError" not in l and "errors.html" not in l]
        result["error"] = errors[-1].strip() if errors else f"exit {proc.returncode}"
    return result


def summarise(variant: Variant, result: dict, matmul_tflops: float | None) -> dict:
    times = [s["seconds"] for s in result["steps"][variant.warmup:]]
    row = {"variant": variant.name, "experts": variant.experts, "fused_loss": variant.fused_loss,
           "compile": variant.compile, "micro_batch": variant.micro_batch, "error": result.get("error")}
    if times and "model" in result:
        step = statistics.median(times)
        tokens = variant.micro_batch * result["model"]["seq_len"] / step
        achieved = tokens * result["model"]["flops_per_token"] / 1e12
        row.update(step_ms=round(step * 1000, 1), tokens_per_s=round(tokens), tflops=round(achieved, 1),
                   mfu_989=round(100 * achieved / H100_BF16_DENSE_TFLOPS, 1),
                   mfu_matmul=round(100 * achieved / matmul_tflops, 1) if matmul_tflops else None,
                   peak_gib=round(result.get("done", {}).get("peak_gib", 0.0), 1) or None, timed_steps=len(times))
    return row


def matmul_tflops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del a, b
    torch.cuda.empty_cache()  # the training children need the memory, not this process
    return 2 * 8192**3 / statistics.median(times) / 1e12


def print_table(rows: list[dict], results: dict, out: Path, info: dict, peak: float | None, t0: float) -> None:
    # The peer: the call's first variant (the eager expert loop, or the compiled one in --phase compile).
    baseline = next((r["tokens_per_s"] for r in rows if r.get("tokens_per_s")), None)
    print(f"\n| variant | tokens/s | x {rows[0]['variant'] if rows else ''} | MFU (989) | MFU (matmul) | step ms | peak GiB | error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['tokens_per_s'] / baseline:.2f}" if baseline and r.get("tokens_per_s") else "-"
        print(f"| {r['variant']} | {r.get('tokens_per_s', '-')} | {ratio} | {r.get('mfu_989', '-')} | {r.get('mfu_matmul', '-')} | "
              f"{r.get('step_ms', '-')} | {r.get('peak_gib', '-')} | {(r.get('error') or '')[:60]} |")
    model = next((v["model"] for v in results.values() if v.get("model")), None)
    if model:
        print(f"model: {model['total_params'] / 1e9:.2f}B total, {model['active_params'] / 1e6:.0f}M active, "
              f"{model['flops_per_token'] / 1e9:.2f} GFLOP/token; {model['conversations']} SFT conversations packed to {model['seq_len']}")
    (out / "results.json").write_text(json.dumps({"info": info, "matmul_tflops": peak, "rows": rows, "results": results}, indent=1))
    print(f"total {time.monotonic() - t0:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="tiny model, CPU rehearsal of every phase")
    parser.add_argument("--budget-s", type=float, default=480, help="stop starting phases after this")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_train"), help="logs and results.json")
    parser.add_argument("--sft-steps", type=int, default=240)
    parser.add_argument("--phase", choices=("all", "compile"), default="all",
                        help="compile: only the torch.compile variants (the second device call)")
    args = parser.parse_args()
    if args.worker:
        worker(Variant(**json.loads(args.worker)))
        return

    import torch

    t0 = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu_train_work")
    cuda = torch.cuda.is_available()
    import deepspeed
    import transformers

    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__, "deepspeed": deepspeed.__version__,
            "date": time.strftime("%Y-%m-%d")}
    print("environment:", json.dumps(info), flush=True)
    peak = matmul_tflops()
    if peak:
        print(f"bf16 matmul 8192^3: {peak:.0f} TFLOP/s (median of 10)", flush=True)
    tiny = {"tiny": True, "steps": 8, "warmup": 2, "micro_batch": 2} if args.tiny else {}
    base = Variant(name="", **tiny)
    variants = [
        replace(base, name="eager experts", experts="eager", steps=min(base.steps, 14)),
        replace(base, name="grouped_mm", profile=True),
        replace(base, name="grouped_mm + fused CE", fused_loss=True, profile=True),
    ]
    rows, results = [], {}
    log = open(out / "gpu_train.log", "w")

    def left() -> float:
        return args.budget_s - (time.monotonic() - t0)

    def measure(variant: Variant, timeout: float) -> dict:
        print(f"--- {variant.name} ({left():.0f} s of budget left)", flush=True)
        result = run_child(variant, timeout, log)
        row = summarise(variant, result, peak)
        print(json.dumps(row), flush=True)
        if row["error"]:
            print("\n".join(result["tail"][-8:]), flush=True)
        rows.append(row)
        results[variant.name] = {"row": row, "losses": result["losses"], "model": result.get("model")}
        return row

    if args.phase == "compile":
        # Every variant compiles its decoder layers; the first is the baseline of the first call.
        compiled = replace(base, compile=True, steps=base.steps if args.tiny else 16)
        for variant in (replace(compiled, name="compiled, eager experts", experts="eager"),
                        replace(compiled, name="compiled, grouped_mm", experts="grouped_mm"),
                        replace(compiled, name="compiled, eager experts + fused CE", experts="eager", fused_loss=True),
                        replace(compiled, name="compiled, eager + fused CE, micro-batch 16", experts="eager", fused_loss=True,
                                micro_batch=4 if args.tiny else 16, steps=base.steps if args.tiny else 12)):
            if left() < 45:
                print(f"--- {variant.name}: skipped, {left():.0f} s of budget left", flush=True)
                continue
            measure(variant, min(100, left() - 5))
        print_table(rows, results, out, info, peak, t0)
        return

    for variant in variants:
        measure(variant, min(120, max(30, left() - 200)))

    # The SFT run with kill and resume uses the fastest variant that ran.
    ok = [r for r in rows if r.get("tokens_per_s")]
    best = max(ok, key=lambda r: r["tokens_per_s"]) if ok else {"experts": "grouped_mm", "fused_loss": False}
    steps = 12 if args.tiny else args.sft_steps
    save_at, kill_after = steps // 2, steps // 2 + (3 if args.tiny else 12)
    sft = replace(base, name="sft", experts=best["experts"], fused_loss=best["fused_loss"], steps=steps,
                  save_steps=save_at, output_dir=str(work / "sft"), warmup=4)
    import shutil

    shutil.rmtree(work / "sft", ignore_errors=True)
    print(f"--- SFT {steps} steps, checkpoint at {save_at}, SIGKILL after step {kill_after} ({left():.0f} s left)", flush=True)
    first = run_child(sft, max(60, left() - 60), log, kill_after_step=kill_after)
    print(json.dumps({"first_run_steps": len(first["steps"]), "saved": first["saved"], "killed_at": first["killed_at"],
                      "error": first.get("error")}), flush=True)
    second = run_child(replace(sft, resume=True), max(60, left() - 20), log)
    begin = second.get("begin", {}).get("step")
    first_after = second["steps"][0]["step"] if second["steps"] else None
    sft_row = summarise(replace(sft, name="sft (resumed part)"), second, peak)
    print(json.dumps({"resumed_from_step": begin, "first_step_after_resume": first_after,
                      "final_step": second.get("done", {}).get("step"), "error": second.get("error")}), flush=True)
    print("loss curve (step: loss):", " ".join(f"{e['step']}:{e['loss']:.3f}" for e in first["losses"] + second["losses"]), flush=True)
    rows.append(sft_row)
    results["sft"] = {"row": sft_row, "first": {k: first[k] for k in ("saved", "killed_at", "losses")},
                      "second": {"begin": begin, "first_step": first_after, "losses": second["losses"], "done": second.get("done")}}

    # What is left of the budget goes to changes that may not fit or may not compile.
    for variant in (replace(base, name="best + compiled layers", experts=best["experts"], fused_loss=best["fused_loss"], compile=True, steps=base.steps + 4),
                    replace(base, name="best + micro-batch 16", experts=best["experts"], fused_loss=best["fused_loss"], micro_batch=4 if args.tiny else 16, steps=14)):
        if left() < 75:
            print(f"--- {variant.name}: skipped, {left():.0f} s of budget left", flush=True)
            continue
        measure(variant, left() - 10)

    print_table(rows, results, out, info, peak, t0)


if __name__ == "__main__":
    main()
