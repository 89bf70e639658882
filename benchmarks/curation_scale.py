"""Curation at scale: the curation engine (local executor; Ray Data with 1 and 2 workers)
against the in-memory single-process path.

For each `--mb` size, builds one corpus from the packaged corpora (CTCPC, HKCanCor, HSK
sentences, the knowledge documents) replicated to that size, as curation_throughput.py does
(every replica numbered, so replicas are near-duplicates, not exact copies), written as
`--shards` JSONL files with consecutive replicas in different files, so near-duplicates
cross shards. Then, in the same run on the same files, each configuration curates it
`--repeats` times, each time in a fresh child process:

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

    python benchmarks/curation_scale.py --mb 20 100 --workers 1 2 --repeats 3
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


def child(mode: str, corpus: Path, out: Path, workers: int, batch_size: int) -> None:
    """One measured run in this process; prints one JSON line."""
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    params = load_curation_params(PROJECT_ROOT / "params.yaml")
    report = {}
    if mode == "local":
        from hkgai_pipelines.curation import engine

        started = time.perf_counter()
        run = engine.curate_files([corpus], params, out, source="bench", licence="mixed", batch_size=batch_size, executor="local")
        report.update(seconds=time.perf_counter() - started, kept=run.stats.kept, input_records=run.stats.input_records,
                      phases=run.seconds, dedup=run.dedup)
    elif mode == "single":
        from hkgai_pipelines.curation.pipeline import run_curation
        from hkgai_pipelines.sources.files import read_files

        started = time.perf_counter()
        result, _ = run_curation(read_files([corpus], source="bench", licence="mixed"), params, out)
        report.update(seconds=time.perf_counter() - started, kept=result.stats.kept, input_records=result.stats.input_records)
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


def _memory(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if line.startswith(("VmHWM", "VmRSS")))
        return tuple(int(fields.get(name, "0 kB").split()[0]) * 1024 for name in ("VmHWM", "VmRSS"))
    except (OSError, ValueError):
        return 0, 0


def measure(mode: str, corpus: Path, out: Path, workers: int, batch_size: int) -> dict:
    """Run one child; return its report with peak_rss_sum and peak_rss_at_once (bytes)."""
    import psutil

    command = [sys.executable, __file__, "--child", mode, "--corpus", str(corpus), "--out", str(out),
               "--workers", str(workers), "--batch-size", str(batch_size)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[tuple[int, float], int] = {}
    names: dict[tuple[int, float], str] = {}
    at_once = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal at_once
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
                if key not in names:
                    names[key] = _process_name(member)
                total += rss
            at_once = max(at_once, total)
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
        raise RuntimeError(f"{mode} run failed ({process.returncode}):\n{stderr[-3000:]}")
    report = json.loads(lines[-1][len("RESULT "):])
    by_name: dict[str, list[int]] = {}
    for key, peak in peaks.items():
        by_name.setdefault(names.get(key, "?"), []).append(peak)
    report.update(peak_rss_sum=sum(peaks.values()), peak_rss_at_once=at_once, processes=len(peaks),
                  peak_by_process={name: (len(values), sum(values)) for name, values in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))})
    return report


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
    parser.add_argument("--child", choices=["single", "local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.corpus, args.out, args.workers[0], args.batch_size)
        return
    configurations = ([] if args.skip_single else [("single", 1)]) + [("local", 1)] + [("ray", n) for n in args.workers]
    with tempfile.TemporaryDirectory() as folder:
        for megabytes in args.mb:
            corpus = Path(folder) / f"corpus-{megabytes:g}"
            documents, size = build_corpus(corpus, megabytes, args.shards)
            mib = size / 1024 / 1024
            print(f"\ninput: {documents:,} documents, {mib:.1f} MiB in {args.shards} shards; {args.repeats} runs each, "
                  f"batch size {args.batch_size}, {os.cpu_count()} cores", flush=True)
            rows = {}
            for mode, workers in configurations:
                name = {"single": "single process, in memory", "local": "engine, local executor"}.get(
                    mode, f"engine, ray, {workers} worker{'s' if workers > 1 else ''}")
                runs = []
                for repeat in range(args.repeats):
                    runs.append(measure(mode, corpus, Path(folder) / f"out-{mode}-{workers}-{repeat}", workers, args.batch_size))
                    print(f"  {name} run {repeat + 1}: {runs[-1]['seconds']:.1f}s, kept {runs[-1]['kept']:,}", flush=True)
                rows[name] = runs
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
                print(f"  {name}, first run's peak RSS by process: " + ", ".join(
                    f"{what} x{count} {total / 2**20:,.0f} MiB" for what, (count, total) in runs[0]["peak_by_process"].items()))
            phases = {name: runs[0].get("phases") for name, runs in rows.items() if runs[0].get("phases")}
            for name, phase in phases.items():
                print(f"  {name}, first run's phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phase.items())
                      + f"; dedup: {rows[name][0]['dedup']}")
            if len({r["kept"] for runs in rows.values() for r in runs}) != 1:
                print("  WARNING: the configurations kept different numbers of records")


if __name__ == "__main__":
    main()
