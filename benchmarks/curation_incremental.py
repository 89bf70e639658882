"""Incremental curation against a full run: what adding 1% new documents costs.

Builds one corpus from the packaged corpora replicated to `--mb` MiB (curation_scale.py's
`build_corpus` with `by_line`: line i in shard i % shards, in `--shards` JSONL files), so every
shard, the added one too, holds near-duplicates of documents in the others, as a new source
re-publishing known documents does. Then, in this process, after one warm-up run (language
models loaded for both):

* full: `engine.curate` over all shards, no kept part files (what every run did before);
* incremental: `engine.curate` over all but the last shard with a `parts_dir` (untimed: the
  state a previous run leaves, its dedup index included), then over all shards with the same
  `parts_dir`, timed. Only the last shard goes through the steps; its records are decided
  against the dedup index (`curation/dedup_index.py`), and the parts whose verdicts did not
  change are linked into the outputs, not settled again.
* with `--index-cost`, also a full run over all shards with a fresh `parts_dir` (what
  `cleaned_corpus` runs when nothing is kept): the price of writing the part folders, the key
  files and the dedup index, against the full run without them.

Each `--repeats` times (a fresh parts folder each time); medians printed, with the ratio of
the incremental run to the full run (goal: at most 0.05) and whether both produced the same
outputs (content hash over kept ids and texts, and the counts).

    python benchmarks/curation_incremental.py --mb 10 --shards 100 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10.0, help="input size in MiB")
    parser.add_argument("--shards", type=int, default=100, help="files; the last one is the added 1/shards")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--index-cost", action="store_true", help="also time a full run that keeps parts and the index")
    args = parser.parse_args()

    from curation_scale import build_corpus

    from hkgai_pipelines.curation import engine
    from hkgai_pipelines.curation.inputs import file_units
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    params = load_curation_params(PROJECT_ROOT / "params.yaml")
    work = Path(tempfile.mkdtemp(prefix="curation-incremental-"))
    try:
        documents, size = build_corpus(work / "corpus", args.mb, args.shards, by_line=True)
        shards = sorted((work / "corpus").glob("shard-*.jsonl"))
        added_bytes = shards[-1].stat().st_size

        def units(paths):
            return file_units(paths, source="bench", licence="mixed")

        def curate(paths, out, parts_dir=None):
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            run = engine.curate(units(paths), params, out, batch_size=args.batch_size, executor="local", parts_dir=parts_dir)
            return time.perf_counter() - started, run

        print(f"corpus: {documents:,} documents, {size / 2**20:.1f} MiB in {len(shards)} shards; "
              f"added: {shards[-1].name}, {added_bytes / 2**20:.2f} MiB ({added_bytes / size:.1%})", flush=True)
        curate(shards[:2], work / "warm-up")  # language models and OpenCC loaded before any timing

        full_times, incremental_times, phases, same, kept_times = [], [], [], [], []
        for repeat in range(args.repeats):
            seconds, full = curate(shards, work / "full")
            full_times.append(seconds)
            if args.index_cost:
                seconds, keeping = curate(shards, work / "keeping", work / f"keeping-parts-{repeat}")
                kept_times.append(seconds)
                same_keeping = keeping.outputs.content_hash == full.outputs.content_hash
                print(f"repeat {repeat + 1}: full run keeping parts and the index {seconds:.1f} s "
                      f"(dedup {keeping.seconds['dedup']:.2f} s against {full.seconds['dedup']:.2f} s); same outputs: {same_keeping}",
                      flush=True)
                shutil.rmtree(work / f"keeping-parts-{repeat}")
            parts = work / f"parts-{repeat}"
            curate(shards[:-1], work / "before", parts)
            seconds, incremental = curate(shards, work / "incremental", parts)
            incremental_times.append(seconds)
            phases.append(incremental.seconds)
            index_bytes = sum(path.stat().st_size for path in (parts / engine.DEDUP_INDEX_DIR).rglob("*") if path.is_file())
            same.append(incremental.outputs.content_hash == full.outputs.content_hash
                        and incremental.stats.to_dict() == full.stats.to_dict())
            print(f"repeat {repeat + 1}: full {full_times[-1]:.1f} s, incremental {seconds:.1f} s "
                  f"({incremental.processed_units} unit processed, {incremental.cached_units} taken, "
                  f"{incremental.cached_records:,} records not processed again, dedup index extended: "
                  f"{bool(incremental.dedup['index_extended'])}, its files {index_bytes / 2**20:.1f} MiB); same outputs: {same[-1]}",
                  flush=True)

        full_s, incremental_s = statistics.median(full_times), statistics.median(incremental_times)
        print()
        print(f"| run (medians of {args.repeats}) | seconds | ratio to full |")
        print("|---|---|---|")
        print(f"| full ({len(shards)} shards, no kept parts) | {full_s:.1f} | 1.00 |")
        print(f"| incremental (+1 shard, {added_bytes / size:.1%} of the bytes) | {incremental_s:.1f} | {incremental_s / full_s:.3f} |")
        if kept_times:
            kept_s = statistics.median(kept_times)
            print(f"| full, keeping parts, key files and the dedup index | {kept_s:.1f} | {kept_s / full_s:.3f} |")
        print()
        for phase in phases[0]:
            print(f"incremental phase {phase}: {statistics.median(p[phase] for p in phases):.2f} s")
        print(f"kept {full.stats.kept:,} of {full.stats.input_records:,}; same outputs as the full run in every repeat: {all(same)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
