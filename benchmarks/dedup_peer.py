"""Near-duplicate removal on Chinese pages: ours against datatrove's MinHash stages (its local
and its Ray executor) and Data-Juicer's Ray MinHash deduplicator, all on character 3-grams.

The question: would a maintained distributed implementation do the corpus-wide step instead of
`curation/dedup.py`, on Chinese text? datatrove's default word tokenizer for Chinese is jieba,
and its English one sees a Chinese sentence as a few long words, so here it gets a tokenizer
that yields the units ours shingles: the folded characters of a text whose Han characters
outnumber its words, the words otherwise (`dedup.shingles`).

The corpus: `--pages` pages of `--page-lines` sentences drawn at random (seeded) from the
packaged corpora (CTCPC, HKCanCor, HSK sentences, the knowledge documents: 131,270 sentences;
about 2 KB of text a page, the length of a news article's main text), in `--shards` JSONL
files; then every fifth page has a *variant* written to the last shard, after every original:
the page with 1 to 24 of its lines replaced by other random sentences, so the planted pairs spread over true Jaccard similarities (of
the character 3-gram sets, computed exactly) from about 0.3 to 0.98. Right answers: a pair at
or above the threshold (0.8, params.yaml) loses its variant, a pair below it keeps both.

Each method reads the JSONL files and writes the kept documents:

* ours: `dedup.find_duplicates`, the corpus-wide decision both curation executors take (exact
  keys, LSH bands, each bucket member verified against its anchor by estimated Jaccard,
  connected components, the first in order kept), in this process, one core;
* datatrove: MinhashDedupSignature -> MinhashDedupBuckets -> MinhashDedupCluster ->
  MinhashDedupFilter with the same n (3), 16 buckets of 8 hashes (ours: 128 permutations in
  16 bands), on LocalPipelineExecutor (one worker) and on RayPipelineExecutor (`--ray-workers`
  tasks at once on Ray started in this process before the clock);
* Data-Juicer (with `--data-juicer PYTHON`, an interpreter that has py-data-juicer: `make
  bench-peers` builds one in `.venv/tools/data-juicer`): `ray_bts_minhash_deduplicator_with_uid`
  (MinHash, LSH bands, the BTS distributed union-find on Ray actors; the uid is the document's
  place in input order, so the first in order is kept), character 3-grams of the text with
  whitespace and punctuation removed, 128 permutations in 16 bands of 8, threshold 0.8, on Ray
  with `--ray-workers` CPUs started in that child process before the clock.

Printed: seconds (median of `--repeats`), documents/s per core, and per band of true
similarity the share of planted pairs whose variant was dropped, and whether the dropped one
was the variant (the later in order).

    make bench-peers
    .venv/bin/python benchmarks/dedup_peer.py --pages 5000 --repeats 3 --data-juicer .venv/tools/data-juicer/bin/python

The tables are printed on stdout; datatrove's executors log each stage on stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BANDS = [(0.9, 1.01), (0.8, 0.9), (0.7, 0.8), (0.5, 0.7), (0.0, 0.5)]
REPLACED_LINES = [1, 2, 3, 4, 6, 8, 12, 16, 24]


def build_pages(folder: Path, pages: int, page_lines: int, shards: int, ngram: int) -> list[dict]:
    """Write the corpus (see the module docstring) into `folder`; the planted pairs, each
    {"original", "variant", "replaced", "jaccard"}."""
    from curation_throughput import packaged_texts

    from hkgai_pipelines.curation.dedup import shingles

    sentences = [text.replace("\n", " ") for text in packaged_texts()]
    rng = random.Random(7)
    folder.mkdir(parents=True)
    handles = [open(folder / f"shard-{n:03d}.jsonl", "w", encoding="utf-8") for n in range(shards)]
    planted = []
    variants = []
    try:
        for page in range(pages):
            lines = rng.sample(sentences, page_lines)
            text = "\n".join(lines)
            handles[page * (shards - 1) // pages].write(json.dumps({"id": f"p{page}", "text": text}, ensure_ascii=False) + "\n")
            if page % 5 == 0:
                replaced = REPLACED_LINES[(page // 5) % len(REPLACED_LINES)]
                changed = list(lines)
                for index in rng.sample(range(page_lines), replaced):
                    changed[index] = rng.choice(sentences)
                variant = "\n".join(changed)
                a, b = set(shingles(text, ngram)), set(shingles(variant, ngram))
                planted.append({"original": f"p{page}", "variant": f"v{page}", "replaced": replaced,
                                "jaccard": len(a & b) / len(a | b)})
                variants.append(json.dumps({"id": f"v{page}", "text": variant}, ensure_ascii=False) + "\n")
        handles[-1].writelines(variants)
    finally:
        for handle in handles:
            handle.close()
    return planted


def read_documents(folder: Path) -> list[tuple[str, str]]:
    return [(row["id"], row["text"]) for path in sorted(folder.glob("*.jsonl"))
            for row in map(json.loads, path.open(encoding="utf-8"))]


def run_ours(folder: Path, out: Path) -> tuple[float, set[str]]:
    """Seconds, and the ids kept, of `dedup.find_duplicates` on the corpus (read, decided, written)."""
    from hkgai_pipelines.curation.dedup import MinHasher, find_duplicates
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    params = load_curation_params(PROJECT_ROOT / "params.yaml").dedup
    started = time.perf_counter()
    docs = read_documents(folder)
    dropped = find_duplicates(docs, params.threshold, MinHasher.from_params(params))
    out.mkdir(parents=True)
    with gzip.open(out / "kept.jsonl.gz", "wt", encoding="utf-8") as handle:
        for doc_id, text in docs:
            if doc_id not in dropped:
                handle.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    elapsed = time.perf_counter() - started
    return elapsed, {doc_id for doc_id, _ in docs if doc_id not in dropped}


def character_tokenizer():
    """A datatrove WordTokenizer whose words are the units `dedup.shingles` joins: the folded
    characters of Han-dominated text, the words of other text."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    from hkgai_pipelines.curation.dedup import shingle_units

    class CharacterTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return shingle_units(text)[0]

        def sent_tokenize(self, text: str) -> list[str]:
            return text.splitlines()

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            raise NotImplementedError("not used by the MinHash stages")

    return CharacterTokenizer("zh")


def run_datatrove(folder: Path, out: Path, ngram: int, shards: int, ray_workers: int = 0) -> tuple[float, set[str]]:
    """Seconds, and the ids kept, of datatrove's four MinHash stages on the corpus: local
    executor with one worker, or with `ray_workers` the Ray executor (Ray already started)."""
    from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig(n_grams=ngram, num_buckets=16, hashes_per_bucket=8)
    stages = [
        ([JsonlReader(str(folder)), MinhashDedupSignature(output_folder=str(out / "sigs"), config=config, language=character_tokenizer())], shards),
        ([MinhashDedupBuckets(input_folder=str(out / "sigs"), output_folder=str(out / "buckets"), config=config)], config.num_buckets),
        ([MinhashDedupCluster(input_folder=str(out / "buckets"), output_folder=str(out / "remove"), config=config)], 1),
        ([JsonlReader(str(folder)), MinhashDedupFilter(input_folder=str(out / "remove")), JsonlWriter(str(out / "deduped"))], shards),
    ]
    started = time.perf_counter()
    for index, (pipeline, tasks) in enumerate(stages):
        logs = str(out / f"logs{index}")
        if ray_workers:
            RayPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=ray_workers, logging_dir=logs, mem_per_cpu_gb=1).run()
        else:
            LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=logs).run()
    elapsed = time.perf_counter() - started
    kept = {json.loads(line)["id"] for path in (out / "deduped").glob("*.jsonl.gz") for line in gzip.open(path, "rt", encoding="utf-8")}
    return elapsed, kept


def data_juicer_child(folder: Path, out: Path, cpus: int) -> None:
    """Run Data-Juicer's Ray MinHash deduplicator on the corpus in this process (an interpreter
    with py-data-juicer; nothing of this project is imported) and print one JSON line: the
    seconds and the file of kept ids."""
    import pyarrow as pa
    import ray
    from data_juicer.ops.deduplicator.ray_bts_minhash_deduplicator import RayBTSMinhashDeduplicatorWithUid

    rows = [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.open(encoding="utf-8")]
    table = pa.table({"id": [row["id"] for row in rows], "text": [row["text"] for row in rows],
                      "__dj__uid": pa.array(range(len(rows)), pa.int64())})
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    op = RayBTSMinhashDeduplicatorWithUid(tokenization="character", window_size=3, lowercase=True,
                                          ignore_pattern=r"[\s\W_]+", num_permutations=128, jaccard_threshold=0.8,
                                          num_bands=16, num_rows_per_band=8)
    dataset = ray.data.from_arrow(table).repartition(max(cpus * 4, 1))
    kept = [row["id"] for row in op.run(dataset).select_columns(["id"]).iter_rows()]
    elapsed = time.perf_counter() - started
    out.mkdir(parents=True)
    (out / "kept.json").write_text(json.dumps(kept))
    print(json.dumps({"seconds": elapsed, "kept_file": str(out / "kept.json")}))


def run_data_juicer(python: str, folder: Path, out: Path, cpus: int) -> tuple[float, set[str]]:
    """`data_juicer_child` under `python`: seconds (from its Ray start to its kept ids), ids kept."""
    import subprocess

    child = subprocess.run([python, __file__, "--data-juicer-child", str(folder), str(out), "--ray-workers", str(cpus)],
                           capture_output=True, text=True, check=False)
    if child.returncode:
        raise SystemExit(f"Data-Juicer's run failed:\n{child.stderr[-3000:]}")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    return report["seconds"], set(json.loads(Path(report["kept_file"]).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=5000, help="original pages (a fifth get a variant)")
    parser.add_argument("--page-lines", type=int, default=40,
                        help=f"sentences per page (at least {max(REPLACED_LINES)}, the most a variant replaces)")
    parser.add_argument("--shards", type=int, default=4, help="JSONL files (datatrove reads one per task)")
    parser.add_argument("--ray-workers", type=int, default=2, help="datatrove's Ray executor: tasks at once (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-juicer", metavar="PYTHON", help="also run Data-Juicer's Ray MinHash deduplicator under this interpreter")
    parser.add_argument("--data-juicer-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_juicer_child:
        data_juicer_child(*args.data_juicer_child, max(args.ray_workers, 1))
        return
    if args.repeats < 1 or args.shards < 1 or args.pages < 1:
        parser.error("--repeats, --shards and --pages must be at least 1")
    if args.page_lines < max(REPLACED_LINES):
        parser.error(f"--page-lines must be at least {max(REPLACED_LINES)} (a variant replaces up to that many lines)")

    import logging

    from loguru import logger

    logger.remove()  # datatrove logs every task's progress to stderr
    logger.add(sys.stderr, level="WARNING")
    logging.getLogger("ray").setLevel(logging.WARNING)

    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    params = load_curation_params(PROJECT_ROOT / "params.yaml").dedup
    with tempfile.TemporaryDirectory(prefix="dedup-peer-") as work:
        corpus = Path(work) / "corpus"
        planted = build_pages(corpus, args.pages, args.page_lines, args.shards, params.ngram)
        documents = args.pages + len(planted)
        megabytes = sum(path.stat().st_size for path in corpus.glob("*.jsonl")) / 2**20
        print(f"{documents:,} documents ({args.pages:,} pages of {args.page_lines} sentences and {len(planted):,} variants), "
              f"{megabytes:.1f} MiB of JSONL in {args.shards} files")

        methods = [("ours: dedup.find_duplicates, one process", 1, lambda out: run_ours(corpus, out)),
                   ("datatrove, local executor, one worker", 1, lambda out: run_datatrove(corpus, out, params.ngram, args.shards))]
        if args.ray_workers:
            import ray

            ray.init(num_cpus=args.ray_workers, include_dashboard=False, log_to_driver=False)
            methods.append((f"datatrove, Ray executor, {args.ray_workers} workers", args.ray_workers,
                            lambda out: run_datatrove(corpus, out, params.ngram, args.shards, args.ray_workers)))
        if args.data_juicer:
            cpus = max(args.ray_workers, 1)
            methods.append((f"Data-Juicer, Ray, {cpus} CPU{'s' if cpus > 1 else ''}", cpus,
                            lambda out: run_data_juicer(args.data_juicer, corpus, out, cpus)))
        results = {}
        for repeat in range(args.repeats):
            for name, cores, run in methods:
                seconds, kept = run(Path(work) / f"run-{repeat}-{len(results.get(name, []))}-{cores}-{abs(hash(name))}")
                results.setdefault(name, []).append((seconds, kept))
                print(f"  {name}: {seconds:.1f} s, kept {len(kept):,}", file=sys.stderr)

    print()
    print("| method | runs (s) | median | documents/s per core | kept |")
    print("|---|---|---|---|---|")
    for name, cores, _ in methods:
        runs = results[name]
        median = statistics.median(seconds for seconds, _ in runs)
        kept_counts = sorted({len(kept) for _, kept in runs})
        print(f"| {name} | {' / '.join(f'{s:.2f}' for s, _ in runs)} | {median:.2f} | {documents / median / cores:,.0f} | "
              f"{' or '.join(f'{k:,}' for k in kept_counts)} |")
    ours = statistics.median(seconds for seconds, _ in results[methods[0][0]])
    for name, cores, _ in methods[1:]:
        peer = statistics.median(seconds for seconds, _ in results[name])
        print(f"ours per core against {name}: {peer * cores / ours:.2f}x")

    print()
    print("Planted pairs, each method's first run: share whose variant was dropped (right answer: all at or above the threshold "
          f"{params.threshold}, none below); in brackets, where one of the pair was dropped, the share where it was the original")
    print("| true Jaccard | pairs | " + " | ".join(name for name, _, _ in methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for low, high in BANDS:
        pairs = [pair for pair in planted if low <= pair["jaccard"] < high]
        cells = []
        for name, _, _ in methods:
            kept = results[name][0][1]
            variant_dropped = sum(pair["variant"] not in kept for pair in pairs)
            original_dropped = sum(pair["original"] not in kept for pair in pairs)
            either = sum(pair["variant"] not in kept or pair["original"] not in kept for pair in pairs)
            share = f"{variant_dropped / len(pairs):.1%}" if pairs else "-"
            cells.append(f"{share} ({original_dropped / either:.0%})" if either else share)
        print(f"| {low:.1f} to {min(high, 1.0):.1f} | {len(pairs)} | " + " | ".join(cells) + " |")
    first = results[methods[0][0]][0][1]
    for name, _, _ in methods[1:]:
        kept = results[name][0][1]
        print(f"{name}: kept sets differ from ours in {len(first ^ kept):,} documents "
              f"({len(first - kept):,} kept only by ours, {len(kept - first):,} only by it)")


if __name__ == "__main__":
    main()
