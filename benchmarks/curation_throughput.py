"""Curation throughput against datatrove, and near-duplicate detection against datasketch.

Builds one JSONL input from the real corpora (CTCPC, HKCanCor, HSK sentences, the knowledge
documents), replicated to `--mb` megabytes; every replica carries a replica number so
replicas are near-duplicates, not exact copies (exact copies would let a hash-based dedup
skip MinHash altogether). Then, in the same process, on the same file:

* ours: the full `run_curation` pipeline (repair, PII, language ID, script, quality, MinHash
  LSH dedup with rensa) reading the JSONL file, in one process (benchmarks/curation_scale.py
  measures the curation engine, local and on Ray);
* datatrove: JsonlReader -> GopherRepetitionFilter -> GopherQualityFilter -> the four MinHash
  dedup stages (signature, buckets, cluster, filter) -> JsonlWriter, one task, one worker;

and prints MB/s and documents/s per core (both run single-threaded) and the ratio. Then it
times near-duplicate detection alone, ours (rensa signatures, corpus-wide clusters) against
datasketch's MinHashLSH queried record by record (the greedy check ours had before) with the
same permutations, bands, threshold and shingles, `--repeats` times, and prints medians.

    python benchmarks/curation_throughput.py --mb 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from hkgai_pipelines.params import load_curation_params
from hkgai_pipelines.settings import PROJECT_ROOT
from hkgai_pipelines.sources.catalog import SourceSpec
from hkgai_pipelines.sources.readers import read_source
from hkgai_pipelines.sources.records import RawRecord

SOURCES = [
    SourceSpec("ctcpc", "ctcpc", "CC0-1.0"),
    SourceSpec("hkcancor", "hkcancor", "CC-BY-4.0"),
    SourceSpec("hsk_sentences", "hsk_sentences", "CC-BY-SA-4.0"),
    SourceSpec("hk_knowledge", "hk_knowledge", "CC-BY-4.0"),
]


def packaged_texts() -> list[str]:
    """The texts of the packaged corpora (`SOURCES`), in source order."""
    return [item.text for spec in SOURCES for item in read_source(spec) if isinstance(item, RawRecord)]


def replica_lines(megabytes: float) -> Iterator[tuple[int, str]]:
    """(replica, JSONL line) of the packaged corpora replicated to `megabytes` MiB; every
    replica numbered, so replicas are near-duplicates, not exact copies."""
    texts = packaged_texts()
    target = int(megabytes * 1024 * 1024)
    written = replica = 0
    while written < target:
        for index, text in enumerate(texts):
            line = json.dumps({"id": f"r{replica}-{index}", "text": f"{text} ({replica})"}, ensure_ascii=False) + "\n"
            yield replica, line
            written += len(line.encode("utf-8"))
            if written >= target:
                return
        replica += 1


def build_input(path: Path, megabytes: float) -> tuple[int, int]:
    """One JSONL file of `replica_lines`; (documents, bytes)."""
    documents = written = 0
    with path.open("w", encoding="utf-8") as handle:
        for _, line in replica_lines(megabytes):
            handle.write(line)
            written += len(line.encode("utf-8"))
            documents += 1
    return documents, written


def run_ours(path: Path, work: Path) -> float:
    from hkgai_pipelines.curation.pipeline import run_curation
    from hkgai_pipelines.sources.files import read_files

    params = load_curation_params(PROJECT_ROOT / "params.yaml")
    started = time.perf_counter()
    result, _ = run_curation(read_files([path], source="bench", licence="mixed"), params, work / "ours")
    elapsed = time.perf_counter() - started
    print(f"  ours: kept {result.stats.kept} of {result.stats.input_records}")
    return elapsed


def run_datatrove(path: Path, work: Path, glob: str | None = None, mapped: bool = False, workers: int = 1, ours: bool = False) -> tuple[float, int]:
    """datatrove's pipeline (above) on the JSONL file `path`, or with `glob` on the files of
    the folder `path` that match it; (seconds it took, documents it kept).

    `mapped`: datatrove's counterpart of each of our steps that has one, as close as they map:
    FTFYFormatter for the repair step (ours: ftfy and the Chinese-mojibake check), PIIFormatter
    for PII (datatrove's: e-mail and IP addresses; ours: those, phones, HKIDs, cards, on a
    normalised view), C4QualityFilter's line filters for the boilerplate lines (javascript,
    policy, curly-bracket and lorem-ipsum lines; its rules for English sentences, terminal
    punctuation and words per line, are off), the Gopher filters for the quality scores, and the
    MinHash stages on the character 3-grams ours shingles (`dedup_peer.character_tokenizer`).
    Language ID and script conversion have no datatrove counterpart that runs offline (its
    LanguageFilter downloads a fastText model).

    `ours`: our steps themselves in place of those filters (`datatrove_steps.CurationSteps`:
    repair, PII, language ID, script, quality, exactly as the curation engine runs them), then
    the same MinHash stages: both engines do the same work per record.

    `workers`: tasks and worker processes of the local executor for the stages that read
    documents (the files are split between tasks by rank, as datatrove's own MinHash example
    runs them); the bucket stage always has one task per bucket, the cluster stage one."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig(n_grams=3, num_buckets=16, hashes_per_bucket=8)
    if mapped and ours:
        raise ValueError("mapped and ours are two different step sets: choose one")
    folder = work / (("datatrove-ours" if ours else "datatrove-mapped" if mapped else "datatrove") + (f"-{workers}" if workers > 1 else ""))
    if ours:
        from datatrove_steps import CurationSteps

        mapped_steps = [CurationSteps()]
    else:
        mapped_steps = [
            FTFYFormatter(),
            PIIFormatter(),
            C4QualityFilter(filter_no_terminal_punct=False, min_num_sentences=-1, min_words_per_line=-1),
        ] if mapped else []
    signature_options = {}
    if mapped or ours:
        from dedup_peer import character_tokenizer

        signature_options["language"] = character_tokenizer()
    gopher_filters = [
        # Gopher's repetition rules are meant for documents of 50+ words; on sentences a
        # single repeated bigram exceeds 0.2 and every record is dropped (ours applies them
        # from 50 tokens). Thresholds above 1 keep the computation and drop nothing here.
        GopherRepetitionFilter(
            top_n_grams=((2, 1.01), (3, 1.01), (4, 1.01)),
            dup_n_grams=((5, 1.01), (6, 1.01), (7, 1.01), (8, 1.01), (9, 1.01), (10, 1.01)),
        ),
        # Gopher's word-count, word-length and stop-word rules assume English web pages and
        # would drop every sentence-level CJK record, leaving the dedup stages no work;
        # they are switched off, the symbol and ellipsis rules stay, as in ours.
        GopherQualityFilter(min_doc_words=None, min_avg_word_length=None, max_avg_word_length=None, max_non_alpha_words_ratio=None, min_stop_words=None),
    ]
    stages = [
        [
            JsonlReader(str(path), glob_pattern=glob) if glob else JsonlReader(str(path.parent), glob_pattern=path.name),
            *mapped_steps,
            *([] if ours else gopher_filters),
            JsonlWriter(str(folder / "filtered")),
        ],
        [JsonlReader(str(folder / "filtered")), MinhashDedupSignature(output_folder=str(folder / "sigs"), config=config, **signature_options)],
        [MinhashDedupBuckets(input_folder=str(folder / "sigs"), output_folder=str(folder / "buckets"), config=config)],
        [MinhashDedupCluster(input_folder=str(folder / "buckets"), output_folder=str(folder / "remove"), config=config)],
        [
            JsonlReader(str(folder / "filtered")),
            MinhashDedupFilter(input_folder=str(folder / "remove")),
            JsonlWriter(str(folder / "deduped")),
        ],
    ]
    started = time.perf_counter()
    for index, pipeline in enumerate(stages):
        tasks = config.num_buckets if index == 2 else 1 if index == 3 else workers
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(folder / f"logs{index}")).run()
    elapsed = time.perf_counter() - started
    kept = sum(1 for f in (folder / "deduped").glob("*.jsonl.gz") for _ in __import__("gzip").open(f, "rt"))
    return elapsed, kept


def near_dup_timings(path: Path, limit: int, repeats: int) -> None:
    from datasketch import MinHash, MinHashLSH

    from hkgai_pipelines.curation.dedup import MinHasher, find_duplicates, shingles

    params = load_curation_params(PROJECT_ROOT / "params.yaml").dedup
    docs = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            docs.append((record["id"], record["text"]))
            if len(docs) >= limit:
                break

    def ours() -> int:
        # The corpus-wide decision (exact keys, LSH buckets, verified anchor pairs, connected
        # components) that both curation paths take, here on records in memory.
        return len(find_duplicates(docs, params.threshold, MinHasher.from_params(params)))

    def peer() -> int:
        rows = params.num_perm // params.num_bands
        lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm, params=(params.num_bands, rows))
        kept: dict[str, MinHash] = {}
        exact: set[str] = set()
        dropped = 0
        from hkgai_pipelines.curation.dedup import exact_key

        for doc_id, text in docs:
            key = exact_key(text)
            if key in exact:
                dropped += 1
                continue
            signature = MinHash(num_perm=params.num_perm, seed=params.seed)
            signature.update_batch([s.encode("utf-8") for s in shingles(text, params.ngram)])
            if any(signature.jaccard(kept[c]) >= params.threshold for c in lsh.query(signature)):
                dropped += 1
                continue
            exact.add(key)
            lsh.insert(doc_id, signature)
            kept[doc_id] = signature
        return dropped

    for name, fn in (("rensa (ours)", ours), ("datasketch", peer)):
        times, dropped = [], 0
        for _ in range(repeats):
            started = time.perf_counter()
            dropped = fn()
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"  {name:13s} median {median:.2f}s over {repeats} runs, {len(docs) / median:,.0f} docs/s, dropped {dropped}")
        if name == "rensa (ours)":
            ours_median = median
    print(f"  near-dup speed-up of ours over datasketch: {median / ours_median:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200.0, help="input size in MiB")
    parser.add_argument("--near-dup-docs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        path = work / "input" / "corpus.jsonl"
        path.parent.mkdir()
        documents, size = build_input(path, args.mb)
        mb = size / 1024 / 1024
        print(f"input: {documents:,} documents, {mb:.1f} MiB (single process = one core each)")
        ours = run_ours(path, work)
        print(f"ours:      {ours:7.1f}s  {mb / ours:6.3f} MiB/s  {documents / ours:8,.0f} docs/s per core")
        peer, peer_kept = run_datatrove(path, work)
        print(f"  datatrove: kept {peer_kept}")
        print(f"datatrove: {peer:7.1f}s  {mb / peer:6.3f} MiB/s  {documents / peer:8,.0f} docs/s per core")
        print(f"ratio ours/datatrove (throughput): {peer / ours:.2f}x")
        print(f"near-duplicate detection on the first {args.near_dup_docs:,} documents:")
        near_dup_timings(path, args.near_dup_docs, args.repeats)


if __name__ == "__main__":
    main()
