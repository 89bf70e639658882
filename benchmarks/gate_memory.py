"""The cleaned_corpus GX gates over a curated output: batch by batch (what the asset checks do,
`expectations.OutputReader`) against the whole corpus loaded into one pandas frame (what
they did before), on the same output, each in a fresh child process.

Builds the corpus as curation_throughput.py does (the packaged corpora replicated to `--mb`
MiB), curates it once with the local executor, then runs all seven gates `--repeats` times
per mode and prints the median seconds and the peak RSS of the child (VmHWM), with the
RSS the child had after its imports, before any gate.

    python benchmarks/gate_memory.py --mb 10 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from curation_scale's reader. Not
    getrusage's ru_maxrss: Linux carries the parent's peak at fork across exec, so every child
    would report the parent's peak (the curation run, here) whenever it was higher."""
    from curation_scale import _memory

    peak, now = _memory(os.getpid())
    return (peak if field == "VmHWM" else now) / 2**20


def child(mode: str, out: Path) -> None:
    """All seven gates on `out`; prints one JSON line."""
    import pyarrow.parquet as pq

    from hkgai_pipelines.curation import expectations as gx
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    params = load_curation_params(PROJECT_ROOT / "params.yaml")
    gx._gx_context()  # GX's own start-up, outside the measured part
    before = _memory_mib("VmRSS")
    started = time.perf_counter()
    reader = gx.OutputReader(out)
    columns = gx.WRITTEN_TEXT_COLUMNS
    if mode == "whole":
        cleaned = pq.read_table(out / "cleaned.parquet").to_pandas()
        rejected = pq.read_table(out / "rejected.parquet", columns=[c for c in columns if c in gx.parquet_output(
            out / "rejected.parquet").schema.names]).to_pandas()
        outcomes = [
            gx.check_ids_unique(cleaned), gx.check_text_non_empty(cleaned), gx.check_lang_allowed(cleaned, params.allowed_languages),
            gx.check_no_residual_pii(cleaned, rejected), gx.check_length_bounds(cleaned, params.quality.min_chars, params.quality.max_chars),
            gx.check_language_mix(cleaned, params.min_language_share),
            gx.check_counts_add_up(reader.stats(), len(cleaned), reader.rows("rejected.parquet"), reader.quarantine_rows()),
        ]
    else:
        outcomes = [
            gx.check_ids_unique(reader.column("id")), gx.check_text_non_empty(reader.frames(["text"])),
            gx.check_lang_allowed(reader.frames(["lang"]), params.allowed_languages),
            gx.check_no_residual_pii(reader.frames(columns), reader.frames(columns, "rejected.parquet")),
            gx.check_length_bounds(reader.frames(["text"]), params.quality.min_chars, params.quality.max_chars),
            gx.check_language_mix(reader.column("lang"), params.min_language_share),
            gx.check_counts_add_up(reader.stats(), reader.rows("cleaned.parquet"), reader.rows("rejected.parquet"), reader.quarantine_rows()),
        ]
    seconds = time.perf_counter() - started
    peak = _memory_mib("VmHWM")
    print("RESULT " + json.dumps({"seconds": seconds, "peak_mib": peak, "before_mib": before,
                                  "passed": [o.passed for o in outcomes]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["whole", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out)
        return
    from curation_throughput import build_input

    from hkgai_pipelines.curation import engine
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus.jsonl"
        documents, size = build_input(corpus, args.mb)
        run = engine.curate_files([corpus], load_curation_params(PROJECT_ROOT / "params.yaml"), Path(folder) / "out",
                                  source="bench", licence="mixed")
        print(f"input: {documents:,} documents, {size / 2**20:.1f} MiB; curated: kept {run.stats.kept:,}, "
              f"rejected {run.stats.rejected:,}; {args.repeats} runs per mode", flush=True)
        results = {}
        for mode in ("whole", "batched"):
            runs = []
            for _ in range(args.repeats):
                done = subprocess.run([sys.executable, __file__, "--child", mode, "--out", str(Path(folder) / "out")],
                                      capture_output=True, text=True)
                if done.returncode:
                    raise RuntimeError(f"{mode} gates failed:\n{done.stderr[-3000:]}")
                runs.append(json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:]))
            results[mode] = runs
        print("\n| gates | seconds (median) | peak RSS MiB (median) | RSS before the gates | gates passed |")
        print("|---|---|---|---|---|")
        for mode, runs in results.items():
            name = "whole corpus in one frame" if mode == "whole" else "batched (OutputReader)"
            print(f"| {name} | {statistics.median(r['seconds'] for r in runs):.1f} | {statistics.median(r['peak_mib'] for r in runs):,.0f} "
                  f"| {statistics.median(r['before_mib'] for r in runs):,.0f} | {sum(runs[0]['passed'])}/7 |")
        whole, batched = results["whole"], results["batched"]
        grown = lambda runs: statistics.median(r["peak_mib"] - r["before_mib"] for r in runs)  # noqa: E731
        print(f"batched / whole: time {statistics.median(r['seconds'] for r in batched) / statistics.median(r['seconds'] for r in whole):.2f}x, "
              f"memory the gates add {grown(batched) / grown(whole):.2f}x")
        if [r["passed"] for r in whole] != [r["passed"] for r in batched]:
            print("WARNING: the two modes disagree on a gate")


if __name__ == "__main__":
    main()
