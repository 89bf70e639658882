"""Curation at scale: the curation engine (local executor; Ray tasks with 1 and 2 workers)
against the in-memory single-process path.

For each `--mb` size, builds one corpus from the packaged corpora (CTCPC, HKCanCor, HSK
sentences, the knowledge documents) replicated to that size, as curation_throughput.py does
(every replica numbered, so replicas are near-duplicates, not exact copies), written as
`--shards` JSONL files with consecutive replicas in different files, so near-duplicates
cross shards. Then, in the same run on the same files, each configuration curates it
`--repeats` times, each time in a fresh child process, round robin (every configuration once,
then again), so a drift of the machine's speed meets every configuration alike:

* single: `run_curation` in one process (every record in memory until the end);
* local: `engine.curate_files` with the local executor (batch after batch in the child, no
  Ray; what `hkgai curate` and `cleaned_corpus` run by default);
* ray-N: `engine.curate_files` on Ray embedded in the child with N workers.

Printed per size: throughput (input MiB/s over the curation call, median of the repeats;
Ray's start-up is timed apart and not included), kept records (all configurations must
agree), and peak memory measured from outside by sampling the child and every process under
it (Ray's GCS and raylet, every worker) every 0.2 s:

* peak RSS (sum of peaks): the sum over all those processes of each one's own peak resident
  set (VmHWM in /proc/PID/status), as the issue measured it. Pages of Ray's shared-memory
  object store are counted in every process that mapped them, so this over-counts for Ray;
* peak RSS (at once): the highest sum of current resident sets seen in one sample.

Ratios are against the single-process path (with `--skip-single`, against the local executor).
Printed too: the scaling of the Ray engine (N workers against 1), and with `--ceiling` the
same ratio for the per-record steps alone in plain processes (`multiprocessing.Pool`, spawned
processes that each import the code and load the steps' models; the records read beforehand,
no decision, no settle, no Ray): the scaling this machine gives the steps themselves, the
ceiling for the engine's. With `--datatrove`, datatrove's three pipelines from
curation_throughput.py run on the same files, one task, one worker each: as first compared
(reader, Gopher filters, the four MinHash stages on its English word tokens, writer), with
its counterparts of our steps (`run_datatrove(mapped=True)`: ftfy, PII, C4's line filters,
Gopher, MinHash on our character 3-grams; it has none for language ID and script, about 40%
of our steps' time), and running our steps themselves (`run_datatrove(ours=True)`,
`datatrove_steps.CurationSteps`, then the same MinHash stages: the same work per record, so
the engines are what differs); each configuration's MiB/s per core is printed against each.
The last two also run with N tasks on N workers for each Ray worker count N > 1,
so the Ray engine's N workers meet datatrove on the same N cores, where both pay the host's
scaling (one worker's per-core rate is not what N processes on this machine reach).
Also printed per configuration: the peak (at once) within each phase of the first run, and,
with `--keep DIR`, every sample in `DIR/rss-<size>-<configuration>.tsv` (seconds since the
curation call, MiB at once) beside the child's log (`.log`, the decision's steps with times).

A 1 GiB run takes two hours here, most of it the steps. `--keep DIR` keeps the corpora there
between invocations, and `--parts` runs the local executor incrementally with its parts folder
in DIR: a second invocation then takes the part files and keys of the first and runs only the
decision and the settle phase. After a change to the curation code the part files no longer
match it and every unit is processed again; `--pin-step-code` keeps them (the code fingerprint
pinned in the child, in the first invocation too), which is right only for a change that leaves
the steps as they were (a change to the decision or the settle phase). Before each run the
parts folder's remembered pairs, dedup index and settled files are removed, so the decision
verifies every candidate pair and every part settles, as in a full run; with `--pin-step-code` the child also
loads the steps' models first (a run that takes every unit from the parts folder would
otherwise decide without them, lower than a full run).

    python benchmarks/curation_scale.py --mb 20 100 --workers 1 2 --repeats 3
    python benchmarks/curation_scale.py --mb 1024 --workers --skip-single --repeats 1 --keep /data/bench --parts
    python benchmarks/curation_scale.py --mb 10 --workers 1 2 --skip-single --ceiling --datatrove
    python benchmarks/curation_scale.py --mb 40 --workers 2 --skip-single --datatrove --only ray-2 datatrove-mapped-2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SAMPLE_SECONDS = 0.2


def build_corpus(folder: Path, megabytes: float, shards: int, by_line: bool = False) -> tuple[int, int]:
    """curation_throughput's replicas, replica r in shard r % shards (`by_line`: line i in
    shard i % shards, so every shard holds part of every replica); (documents, bytes)."""
    from curation_throughput import replica_lines

    folder.mkdir(parents=True)
    handles = [open(folder / f"shard-{n:03d}.jsonl", "w", encoding="utf-8") for n in range(shards)]
    documents = written = 0
    try:
        for replica, line in replica_lines(megabytes):
            handles[(documents if by_line else replica) % shards].write(line)
            written += len(line.encode("utf-8"))
            documents += 1
    finally:
        for handle in handles:
            handle.close()
    return documents, written


def _built(folder: Path, megabytes: float, shards: int) -> tuple[int, int]:
    """`build_corpus` into `folder`, or what an earlier invocation built there (a marker
    file beside it, written last, says it is complete)."""
    marker = folder.parent / f"{folder.name}.built.json"
    if marker.is_file():
        built = json.loads(marker.read_text())
        return built["documents"], built["bytes"]
    if folder.exists():
        import shutil

        shutil.rmtree(folder)  # an invocation stopped while building
    documents, size = build_corpus(folder, megabytes, shards)
    marker.write_text(json.dumps({"documents": documents, "bytes": size}))
    return documents, size


def _forget_decisions(parts: Path) -> None:
    """Remove what an incremental run keeps of its decision (the verified pairs, the dedup
    index, each unit's settled files), keeping the units' part files and keys."""
    import shutil

    from hkgai_pipelines.curation.engine import DEDUP_INDEX_DIR, PAIRS_FILE, SETTLED_DIR

    for path in parts.glob(f"{PAIRS_FILE}*"):
        path.unlink()
    shutil.rmtree(parts / DEDUP_INDEX_DIR, ignore_errors=True)
    for settled in parts.glob(f"*/{SETTLED_DIR}"):
        shutil.rmtree(settled)


def _load_step_models(engine, params) -> None:
    """Put the steps' models (language ID, the Cantonese model, OpenCC, the redactor) in
    memory as a full run has them through its decision: a run whose units all come from the
    parts folder would otherwise decide without them, and peak lower than a full run."""
    import pickle

    from hkgai_pipelines.sources.records import RawRecord

    pipeline = engine._pipeline(pickle.dumps(params))  # the engine's own cached pipeline
    for order, text in enumerate(("你食咗飯未呀？我哋一陣去飲茶，順便買啲嘢。", "香港特别行政区政府今日公布新的房屋政策，市民可以上网查询。",
                                  "The Hong Kong Monetary Authority said on Tuesday that rates would stay where they are.")):
        pipeline.process(RawRecord(text=text, source="bench", licence="mixed", locator=f"warm:{order}", title=None,
                                   id=f"warm-{order}", ingested_at="2026-01-01T00:00:00Z", encoding="utf-8"), order)


def child(mode: str, corpus: Path, out: Path, workers: int, batch_size: int, parts: Path | None = None,
          pin_step_code: bool = False) -> None:
    """One measured run in this process; prints one JSON line."""
    import logging

    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    params = load_curation_params(PROJECT_ROOT / "params.yaml")
    report = {"started_at": time.time()}
    if mode == "local":
        from hkgai_pipelines.curation import engine
        from hkgai_pipelines.curation.inputs import file_units

        if pin_step_code:
            engine.code_fingerprint = lambda: "pinned by benchmarks/curation_scale.py --pin-step-code"
            _load_step_models(engine, params)
        units = file_units([corpus], source="bench", licence="mixed", max_record_bytes=params.max_record_bytes)
        report["started_at"] = time.time()
        started = time.perf_counter()
        run = engine.curate(units, params, out, batch_size=batch_size, executor="local", parts_dir=parts)
        report.update(seconds=time.perf_counter() - started, kept=run.stats.kept, input_records=run.stats.input_records,
                      phases=run.seconds, dedup=run.dedup, cached_units=run.cached_units)
    elif mode == "single":
        from hkgai_pipelines.curation.pipeline import run_curation
        from hkgai_pipelines.sources.files import read_files

        started = time.perf_counter()
        result, _ = run_curation(read_files([corpus], source="bench", licence="mixed"), params, out)
        report.update(seconds=time.perf_counter() - started, kept=result.stats.kept, input_records=result.stats.input_records)
    elif mode in ("datatrove", "datatrove-mapped", "datatrove-ours"):
        from curation_throughput import run_datatrove

        report["started_at"] = time.time()
        seconds, kept = run_datatrove(corpus, out, glob="*.jsonl", mapped=mode == "datatrove-mapped", workers=workers,
                                      ours=mode == "datatrove-ours")
        report.update(seconds=seconds, kept=kept, input_records=None)
    elif mode == "pool":
        import multiprocessing

        from hkgai_pipelines.curation.inputs import file_units

        units = file_units([corpus], source="bench", licence="mixed", max_record_bytes=params.max_record_bytes)
        items = list(enumerate(item for unit in units for item in unit.items()))
        report["started_at"] = time.time()
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            processed = sum(pool.map(_steps_only, [items[k::workers] for k in range(workers)]))
        report.update(seconds=time.perf_counter() - started, kept=None, input_records=processed)
    else:
        import ray

        from hkgai_pipelines.curation import engine

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        report["ray_start_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        run = engine.curate_files([corpus], params, out, source="bench", licence="mixed", workers=workers, batch_size=batch_size)
        report.update(seconds=time.perf_counter() - started, kept=run.stats.kept, input_records=run.stats.input_records,
                      phases=run.seconds, dedup=run.dedup)
        ray.shutdown()
    print("RESULT " + json.dumps(report), flush=True)


def _steps_only(items: list) -> int:
    """`--ceiling`: the per-record steps over (order, item) pairs in this (spawned) process,
    which builds its own pipeline as a Ray worker does; how many were processed."""
    from hkgai_pipelines.curation.pipeline import CurationPipeline
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    from hkgai_pipelines.curation.engine import DEFAULT_BATCH_SIZE

    pipeline = CurationPipeline(load_curation_params(PROJECT_ROOT / "params.yaml"))
    for start in range(0, len(items), DEFAULT_BATCH_SIZE):  # batches of the engine's size
        pipeline.process_batch((item, order) for order, item in items[start:start + DEFAULT_BATCH_SIZE])
    return len(items)


def _memory(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if line.startswith(("VmHWM", "VmRSS")))
        return tuple(int(fields.get(name, "0 kB").split()[0]) * 1024 for name in ("VmHWM", "VmRSS"))
    except (OSError, ValueError):
        return 0, 0


def measure(mode: str, corpus: Path, out: Path, workers: int, batch_size: int, parts: Path | None = None,
            pin_step_code: bool = False, log: Path | None = None) -> dict:
    """Run one child; return its report with peak_rss_sum, peak_rss_at_once (bytes),
    phase_peaks (bytes at once within each phase) and samples ((epoch seconds, bytes at once)).
    `log`: the child's stderr goes there (else it is kept in memory for the error message)."""
    import psutil

    command = [sys.executable, __file__, "--child", mode, "--corpus", str(corpus), "--out", str(out),
               "--workers", str(workers), "--batch-size", str(batch_size)]
    if parts is not None:
        command += ["--parts-dir", str(parts)]
    if pin_step_code:
        command.append("--pin-step-code")
    stderr_to = open(log, "w", encoding="utf-8") if log else subprocess.PIPE
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr_to, text=True)
    peaks: dict[tuple[int, float], int] = {}
    names: dict[tuple[int, float], str] = {}
    cpu: dict[tuple[int, float], float] = {}  # CPU seconds (user + system), the last seen
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                members = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for member in members:
                try:
                    key = (member.pid, member.create_time())
                except psutil.NoSuchProcess:
                    continue
                hwm, rss = _memory(member.pid)
                peaks[key] = max(peaks.get(key, 0), hwm)
                try:
                    times = member.cpu_times()
                    cpu[key] = times.user + times.system
                except psutil.NoSuchProcess:
                    pass
                if key not in names:
                    names[key] = _process_name(member)
                total += rss
            samples.append((time.time(), total))
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    if log:
        stderr_to.close()
        stderr = log.read_text(encoding="utf-8", errors="replace")
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
        raise RuntimeError(f"{mode} run failed ({process.returncode}):\n{stderr[-3000:]}")
    report = json.loads(lines[-1][len("RESULT "):])
    by_name: dict[str, list[int]] = {}
    cpu_by_name: dict[str, float] = {}
    for key, peak in peaks.items():
        by_name.setdefault(names.get(key, "?"), []).append(peak)
    for key, seconds in cpu.items():
        cpu_by_name[names.get(key, "?")] = cpu_by_name.get(names.get(key, "?"), 0.0) + seconds
    report.update(peak_rss_sum=sum(peaks.values()), peak_rss_at_once=max((rss for _, rss in samples), default=0),
                  processes=len(peaks), samples=samples, phase_peaks=_phase_peaks(samples, report),
                  peak_by_process={name: (len(values), sum(values)) for name, values in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))},
                  cpu_by_process=dict(sorted(cpu_by_name.items(), key=lambda kv: -kv[1])),
                  # Each Ray worker process apart: which ones run steps, which only read or settle.
                  ray_worker_cpu=sorted((seconds for key, seconds in cpu.items() if names.get(key) == "ray worker"), reverse=True))
    return report


def _phase_peaks(samples: list[tuple[float, int]], report: dict) -> dict[str, int]:
    """The highest at-once sample within each phase: the phases follow one another from the
    curation call's start (`started_at`) in the order the run reports them; before it is
    start-up, after them the outputs' replacement."""
    bounds, at = [("start-up", 0.0)], report["started_at"]
    for name, seconds in (report.get("phases") or {}).items():
        bounds.append((name, at))
        at += seconds
    bounds.append(("outputs", at))
    peaks = {}
    for (name, low), (_, high) in zip(bounds, bounds[1:] + [("", float("inf"))]):
        within = [rss for when, rss in samples if low <= when < high]
        if within:
            peaks[name] = max(within)
    return peaks


def _process_name(process) -> str:
    """What a process is: Ray names its workers' and its own processes in the command line."""
    import psutil

    try:
        command = process.cmdline()
    except psutil.Error:
        return "?"
    text = " ".join(command)
    if "default_worker.py" in text or (command and command[0].startswith("ray::")):
        return "ray worker"
    if "--child" in text:
        return "driver"
    for marker in ("gcs_server", "raylet", "dashboard/agent.py", "runtime_env/agent", "log_monitor", "monitor.py", "dashboard.py"):
        if marker in text:
            return marker
    return text[:60]


def _configuration_name(mode: str, workers: int) -> str:
    """The printed name of a configuration (`--only`'s mode and its worker count)."""
    plural = "s" if workers > 1 else ""
    return {"single": "single process, in memory", "local": "engine, local executor",
            "pool": f"steps only, {workers} plain process{'es' if workers > 1 else ''}",
            "datatrove": "datatrove, one task, one worker",
            "datatrove-mapped": ("datatrove with our steps' counterparts, one task, one worker" if workers == 1 else
                                 f"datatrove with our steps' counterparts, {workers} tasks, {workers} workers"),
            "datatrove-ours": ("datatrove running our steps, one task, one worker" if workers == 1 else
                               f"datatrove running our steps, {workers} tasks, {workers} workers")}.get(
        mode, f"engine, ray, {workers} worker{plural}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, nargs="+", default=[20.0, 100.0], help="input sizes in MiB")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="Ray worker counts to run (none: no Ray runs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--skip-single", action="store_true",
                        help="leave out the in-memory path (about 24 MiB of memory per input MiB: 1 GiB of input does not fit 24 GiB); "
                             "ratios are then against the local executor")
    parser.add_argument("--keep", type=Path, help="keep the corpora (and with --parts the parts folders, RSS samples and logs) in this folder")
    parser.add_argument("--parts", action="store_true", help="local executor: incremental, parts folder kept in --keep")
    parser.add_argument("--pin-step-code", action="store_true",
                        help="reuse part files made by other code (only for a change outside the steps: see the docstring)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time the steps alone in 1 and N plain processes (the machine's scaling for the steps)")
    parser.add_argument("--datatrove", action="store_true",
                        help="also run datatrove's pipelines (curation_throughput.py's: as before, with the counterparts of our steps, "
                             "and running our steps) on the same files, one core, and the last two on N workers for each Ray count "
                             "N > 1: per-core ratios (the engine's MiB/s per core over datatrove's)")
    parser.add_argument("--only", nargs="+", metavar="MODE-N",
                        help="run only these configurations, e.g. local-1 ray-2 datatrove-mapped-2; at least one of single, local "
                             "or ray (the ratios' baseline is the first of them in the order single, local, ray)")
    parser.add_argument("--child", choices=["single", "local", "ray", "pool", "datatrove", "datatrove-mapped", "datatrove-ours"], help=argparse.SUPPRESS)
    parser.add_argument("--parts-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.corpus, args.out, args.workers[0], args.batch_size, args.parts_dir, args.pin_step_code)
        return
    if args.parts and not args.keep:
        parser.error("--parts needs --keep (the parts folder is kept there)")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    configurations = ([] if args.skip_single else [("single", 1)]) + [("local", 1)] + [("ray", n) for n in args.workers]
    if args.ceiling:
        configurations += [("pool", n) for n in sorted({1, *args.workers})]
    if args.datatrove:
        # And with N tasks on N workers beside each Ray worker count: per core at the same
        # core count, where both pay the host's scaling (`--ceiling`).
        configurations += [("datatrove", 1)] + [(peer, n) for peer in ("datatrove-mapped", "datatrove-ours")
                                                 for n in sorted({1, *args.workers})]
    if args.only:
        known = {f"{mode}-{workers}" for mode, workers in configurations}
        unknown = sorted(set(args.only) - known)
        if unknown:
            parser.error(f"--only: {', '.join(unknown)} not among this invocation's configurations ({', '.join(sorted(known))})")
        configurations = [(mode, workers) for mode, workers in configurations if f"{mode}-{workers}" in args.only]
        if not any(mode in ("single", "local", "ray") for mode, _ in configurations):
            parser.error("--only: name at least one of single, local or ray (the baseline of the ratios)")
    with tempfile.TemporaryDirectory(dir=args.keep) as folder:
        for megabytes in args.mb:
            corpus = (args.keep or Path(folder)) / f"corpus-{megabytes:g}-{args.shards}"
            documents, size = _built(corpus, megabytes, args.shards)
            mib = size / 1024 / 1024
            print(f"\ninput: {documents:,} documents, {mib:.1f} MiB in {args.shards} shards; {args.repeats} runs each, "
                  f"batch size {args.batch_size}, {os.cpu_count()} cores", flush=True)
            rows, ceiling, peers = {}, {}, {}
            names = {(mode, workers): _configuration_name(mode, workers) for mode, workers in configurations}
            # Round robin: each repeat runs every configuration once, so a slow spell of the
            # machine (a shared VM's speed drifted by a third within one 27-minute run) falls on
            # every configuration alike instead of on whichever ran then.
            runs_of: dict[tuple[str, int], list[dict]] = {configuration: [] for configuration in configurations}
            for repeat in range(args.repeats):
                for (mode, workers), runs in runs_of.items():
                    tag = f"{megabytes:g}-{mode}-{workers}-{repeat}"
                    parts = args.keep / f"parts-{megabytes:g}-{args.shards}" if args.parts and mode == "local" else None
                    if parts is not None:
                        _forget_decisions(parts)
                    runs.append(measure(mode, corpus, Path(folder) / f"out-{tag}", workers, args.batch_size, parts,
                                        args.pin_step_code, args.keep / f"{tag}.log" if args.keep else None))
                    if args.keep:
                        (args.keep / f"rss-{tag}.tsv").write_text("".join(
                            f"{when - runs[-1]['started_at']:.1f}\t{rss / 2**20:.0f}\n" for when, rss in runs[-1]["samples"]))
                    kept = (f", kept {runs[-1]['kept']:,}" if runs[-1]["kept"] is not None
                            else f", processed {runs[-1]['input_records']:,}" if runs[-1]["input_records"] else "")
                    print(f"  {names[mode, workers]} run {repeat + 1}: {runs[-1]['seconds']:.1f}s{kept}", flush=True)
            for (mode, workers), runs in runs_of.items():
                if mode == "pool":
                    ceiling[workers] = runs
                elif mode.startswith("datatrove"):
                    peers[names[mode, workers]] = (runs, workers)
                else:
                    rows[names[mode, workers]] = runs
            baseline = next(iter(rows.values()))  # the in-memory path, or the local executor with --skip-single
            base_rate = mib / statistics.median(r["seconds"] for r in baseline)
            base_sum = statistics.median(r["peak_rss_sum"] for r in baseline)
            print(f"\n| configuration | MiB/s (median) | x {next(iter(rows))} | Ray start s | kept | peak RSS, sum of peaks | x first | peak RSS, at once | processes |")
            print("|---|---|---|---|---|---|---|---|---|")
            for name, runs in rows.items():
                rate = mib / statistics.median(r["seconds"] for r in runs)
                peak_sum = statistics.median(r["peak_rss_sum"] for r in runs)
                peak_once = statistics.median(r["peak_rss_at_once"] for r in runs)
                start = statistics.median(r.get("ray_start_seconds", 0.0) for r in runs)
                kept = {r["kept"] for r in runs}
                print(f"| {name} | {rate:.3f} | {rate / base_rate:.2f}x | {start:.1f} | {'/'.join(f'{k:,}' for k in sorted(kept))} "
                      f"| {peak_sum / 2**20:,.0f} MiB | {peak_sum / base_sum:.2f}x | {peak_once / 2**20:,.0f} MiB | {runs[0]['processes']} |")
            for name, runs in rows.items():
                print(f"  {name}, first run's peak RSS (at once) by phase: " + ", ".join(
                    f"{phase} {peak / 2**20:,.0f} MiB" for phase, peak in runs[0]["phase_peaks"].items())
                      + (f"; {runs[0]['cached_units']} of its units taken from the parts folder" if runs[0].get("cached_units") else ""))
                print(f"  {name}, first run's peak RSS by process: " + ", ".join(
                    f"{what} x{count} {total / 2**20:,.0f} MiB" for what, (count, total) in runs[0]["peak_by_process"].items()))
                # Where the cores went (sampled every SAMPLE_SECONDS, so a process shorter than
                # that may be missing): with 2 workers, how much the driver and Ray's own
                # processes took beside the workers.
                print(f"  {name}, first run's CPU seconds by process: " + ", ".join(
                    f"{what} {seconds:,.1f}" for what, seconds in runs[0]["cpu_by_process"].items()))
                if runs[0]["ray_worker_cpu"]:
                    print(f"  {name}, first run's CPU seconds of each Ray worker process: "
                          + ", ".join(f"{seconds:,.1f}" for seconds in runs[0]["ray_worker_cpu"]))
            phases = {name: runs[0].get("phases") for name, runs in rows.items() if runs[0].get("phases")}
            for name, phase in phases.items():
                print(f"  {name}, first run's phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phase.items())
                      + f"; dedup: {rows[name][0]['dedup']}")
            if len({r["kept"] for runs in rows.values() for r in runs}) != 1:
                print("  WARNING: the configurations kept different numbers of records")
            _print_scaling(rows, ceiling, args.workers)
            for peer_name, (peer, peer_cores) in peers.items():
                _print_per_core(rows, peer_name, peer, mib, peer_cores)


def _print_per_core(rows: dict, peer_name: str, peer: list, mib: float, peer_cores: int = 1) -> None:
    """MiB/s per core of each configuration (the local executor and the in-memory path use
    one core, Ray N workers N) against one of datatrove's pipelines on the same files, run on
    `peer_cores` workers."""
    peer_rate = mib / statistics.median(r["seconds"] for r in peer) / peer_cores
    kept = "/".join(f"{k:,}" for k in sorted({r["kept"] for r in peer if r["kept"] is not None}))
    print(f"  {peer_name}: {peer_rate:.3f} MiB/s per core (median of {len(peer)}){f', kept {kept}' if kept else ''}; "
          "each configuration's MiB/s per core and its ratio to this:")
    for name, runs in rows.items():
        cores = int(name.split()[2]) if name.startswith("engine, ray,") else 1
        rate = mib / statistics.median(r["seconds"] for r in runs) / cores
        print(f"    per core, {name}: {rate:.3f} MiB/s, {rate / peer_rate:.2f}x")


def _print_scaling(rows: dict, ceiling: dict, workers: list[int]) -> None:
    """The Ray engine's N workers against its 1 worker (median seconds), and the steps'
    own scaling in plain processes where it was measured."""
    def median(runs):
        return statistics.median(r["seconds"] for r in runs)

    one = rows.get("engine, ray, 1 worker")
    for count in workers:
        if count == 1 or one is None or f"engine, ray, {count} workers" not in rows:
            continue
        line = f"  scaling, {count} workers against 1: engine on Ray {median(one) / median(rows[f'engine, ray, {count} workers']):.2f}x"
        if 1 in ceiling and count in ceiling:
            line += (f"; the steps alone in plain processes {median(ceiling[1]) / median(ceiling[count]):.2f}x "
                     f"({median(ceiling[1]):.1f} s -> {median(ceiling[count]):.1f} s)")
        print(line)


if __name__ == "__main__":
    main()
