"""CPU cost of the per-record curation steps against a peer commit, in one command.

The steps (`CurationPipeline.process_batch`: repair, PII, language ID, script, quality and the
dedup keys; no reading, no corpus-wide decision, no writing) are where a curation run spends
its time, on one core or on each Ray worker. Two corpora, built once from the packaged corpora
as `curation_scale.py` builds its own:

* records: curation_throughput's replicas (`--mb` MiB of JSONL), short records as the
  packaged corpora hold them (sentences, turns of speech; about 50 bytes of text each at the
  default 10 MiB; a small `--mb` holds fewer replicas of the short corpora, so longer records);
* pages: the same records, `--page-lines` consecutive ones joined by newlines into one
  document (about 2 KB of text at 10 MiB, the length of a news article or a web page's main text).

Each tree (this working tree and `--peer`, checked out with `git worktree`) processes each
corpus in a fresh child process, `--repeats` times, trees alternating: the pipeline is built
and warmed on the first 2,000 items, then every item is processed in batches of the engine's
size. Printed per corpus: CPU s, the child's `time.process_time` over the processing (the
runs, and their median); MiB/s, MiB of record text (not of JSONL) per CPU second; x peer, the
peer's median over this tree's (above 1: this tree is cheaper); and whether the processed rows
(every field, the dedup keys included) hash the same in both trees. With a small `--mb` the
warm-up covers every item, so the timed pass meets memoised model weights; use the default.

    python benchmarks/step_cost.py --peer 7d2bf2d
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 1000  # engine.DEFAULT_BATCH_SIZE at the time of writing; the peer may lack the name
WARM_ITEMS = 2000


def build_pages(records: Path, pages: Path, page_lines: int) -> None:
    """`pages`: one JSONL file whose documents are `page_lines` consecutive records of the
    `records` folder's files joined by newlines."""
    texts = [json.loads(line)["text"] for path in sorted(records.glob("*.jsonl")) for line in path.open(encoding="utf-8")]
    pages.mkdir(parents=True)
    with open(pages / "pages.jsonl", "w", encoding="utf-8") as handle:
        for start in range(0, len(texts), page_lines):
            handle.write(json.dumps({"id": f"page-{start}", "text": "\n".join(texts[start:start + page_lines])}, ensure_ascii=False) + "\n")


def _row_digest(rows: list[dict], digest) -> None:
    for row in rows:
        clean = {key: (value.tolist() if hasattr(value, "tolist") else value.hex() if isinstance(value, bytes) else value)
                 for key, value in row.items()}
        digest.update(json.dumps(clean, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))


def child(corpus: Path) -> None:
    """Process `corpus` in this process (the tree on PYTHONPATH); print one JSON line."""
    from hkgai_pipelines.curation.inputs import file_units
    from hkgai_pipelines.curation.pipeline import CurationPipeline
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    params = load_curation_params(PROJECT_ROOT / "params.yaml")
    items = [item for unit in file_units([corpus], source="bench", licence="mixed") for item in unit.items()]
    text_bytes = sum(len(item.text.encode("utf-8", "surrogatepass")) for item in items if hasattr(item, "text"))
    pipeline = CurationPipeline(params)
    # The peer may predate process_batch: then one record at a time, as it ran then.
    batch = getattr(pipeline, "process_batch", None) or (lambda numbered: [pipeline.process(item, order) for item, order in numbered])
    batch([(item, order) for order, item in enumerate(items[:WARM_ITEMS])])
    digest = hashlib.sha256()
    cpu = 0.0
    for start in range(0, len(items), BATCH):
        numbered = [(item, order) for order, item in enumerate(items[start:start + BATCH], start)]
        began = time.process_time()
        rows = batch(numbered)
        cpu += time.process_time() - began
        _row_digest(rows, digest)
    print(json.dumps({"items": len(items), "text_mib": text_bytes / 2**20, "cpu_seconds": cpu, "rows_sha256": digest.hexdigest()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default="7d2bf2d", help="the commit to compare with")
    parser.add_argument("--mb", type=float, default=10.0, help="MiB of JSONL in the records corpus")
    parser.add_argument("--page-lines", type=int, default=40, help="records joined into one page")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tree on each corpus, trees alternating")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    import subprocess

    from curation_scale import build_corpus
    from peer_tree import REPO, run_in_trees

    # Before building anything: the peer must be a commit this clone has (not in a shallow one).
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{args.peer}^{{commit}}"],
                      capture_output=True).returncode:
        parser.error(f"--peer {args.peer}: no such commit in this clone (a shallow clone lacks history: git fetch --unshallow)")

    with tempfile.TemporaryDirectory(prefix="step-cost-") as folder:
        records, pages = Path(folder) / "records", Path(folder) / "pages"
        build_corpus(records, args.mb, shards=1)
        build_pages(records, pages, args.page_lines)
        results: dict[str, dict[str, list[dict]]] = {}
        for corpus in (records, pages):
            for _ in range(args.repeats):
                for tree, result in run_in_trees(Path(__file__).resolve(), [str(corpus)], args.peer).items():
                    results.setdefault(corpus.name, {}).setdefault(tree, []).append(result)
    print()
    print("| corpus | items | text MiB | tree | CPU s (runs) | median | MiB/s | x peer | rows identical |")
    print("|---|---|---|---|---|---|---|---|---|")
    for corpus, trees in results.items():
        medians = {tree: statistics.median(run["cpu_seconds"] for run in runs) for tree, runs in trees.items()}
        hashes = {run["rows_sha256"] for runs in trees.values() for run in runs}
        peer_median = medians[f"peer {args.peer}"]
        for tree, runs in trees.items():
            first = runs[0]
            seconds = " / ".join(f"{run['cpu_seconds']:.1f}" for run in runs)
            print(f"| {corpus} | {first['items']:,} | {first['text_mib']:.2f} | {tree} | {seconds} | {medians[tree]:.1f} | "
                  f"{first['text_mib'] / medians[tree]:.3f} | {peer_median / medians[tree]:.2f}x | {'yes' if len(hashes) == 1 else 'NO'} |")


if __name__ == "__main__":
    main()
