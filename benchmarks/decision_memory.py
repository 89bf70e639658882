"""Peak memory of the corpus-wide dedup decision when it finds millions of duplicates, against
a peer commit, in one command.

The 1 GiB curation run (12.6 million records, half of them near-duplicates) peaked at the
end of its decision, where what was found (verified pairs, components, the verdicts and the
kept records' ids) is held at once. Running the steps takes over an hour here, so this
builds keys of that shape directly: `--records` records with ids like the engine's, one LSH
band whose hash is shared by each run of `--cluster` consecutive records (so each cluster's
first record anchors the others), every 50th record an exact copy of the one before, and a
verifier that finds every candidate pair similar. Then `dedup.decide_duplicates` runs with
the engine's 256 MiB budget in a child process per tree (this working tree and `--peer`).
Printed: the child's RSS before the decision, its peak above that, seconds, and what it found
(the counts and a SHA-256 of every array of the decisions).

    python benchmarks/decision_memory.py --peer de44d58
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 100_000


def child(records: int, cluster: int, folder: Path) -> None:
    """Build the keys and decide in this process; print one JSON line."""
    import gc

    import numpy as np
    import pyarrow as pa

    from hkgai_pipelines.curation.dedup import KeyStore, decide_duplicates
    from peer_tree import reset_peak, status_kib

    keys = KeyStore(1, folder, 256 * 1024 * 1024)
    rng = np.random.default_rng(0)
    for start in range(0, records, BATCH):
        orders = np.arange(start, min(start + BATCH, records), dtype=np.int64)
        keys.add_ids(orders, pa.array([f"bench/shard-{order % 8:03d}.jsonl:{order}" for order in orders.tolist()]))
        exact = rng.bytes(20 * len(orders))
        exact = np.frombuffer(exact, dtype="S20").copy()
        copies = orders % 50 == 49
        exact[copies] = np.r_[exact[:1], exact][:-1][copies]  # the record before's key (within the batch)
        keys.add_candidates(orders, exact, (orders // cluster).astype(np.uint64).reshape(-1, 1) * np.uint64(0x9E3779B97F4A7C15))
    gc.collect()
    before = status_kib("VmRSS")
    reset_peak()

    def similar(anchor, member):
        # MinHash estimates k/128 at or above the 0.8 threshold, varied so that each record's
        # best similarity matters.
        return anchor, member, (103 + (anchor + member) % 26) / 128

    started = time.perf_counter()
    decisions = decide_duplicates(keys, 0.8, similar)
    seconds = time.perf_counter() - started
    summary = dict(decisions.summary)
    peak = status_kib("VmHWM")
    import hashlib

    digest = hashlib.sha256()
    for array in (decisions.duplicate_id_orders, decisions.dropped_orders, decisions.dropped_exact, decisions.dropped_cluster,
                  decisions.dropped_similarity, decisions.kept_id_bytes, decisions.kept_id_offsets):
        digest.update(np.ascontiguousarray(array).tobytes())
    summary["decisions_sha256"] = digest.hexdigest()[:16]
    del decisions
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"before_mib": before / 1024, "peak_mib": peak / 1024, "seconds": seconds, "summary": summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default="de44d58", help="the commit to compare with")
    parser.add_argument("--records", type=int, default=12_640_000)
    parser.add_argument("--cluster", type=int, default=3, help="records sharing a band hash")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.records, args.cluster, args.folder)
        return

    from peer_tree import print_peak_table, run_in_trees

    with tempfile.TemporaryDirectory(prefix="decision-memory-") as folder:
        results = run_in_trees(Path(__file__).resolve(), ["--records", str(args.records), "--cluster", str(args.cluster),
                                                          "--folder", str(Path(folder) / "keys")], args.peer)
    print()
    found = results["this tree"]["summary"]
    print(f"{args.records:,} records: {found['candidate_pairs']:,} candidate pairs, {found['verified_pairs']:,} verified, "
          f"{found['near_duplicates']:,} near and {found['exact_duplicates']:,} exact duplicates dropped")
    print_peak_table(results, args.peer, "the decision")
    print(f"same findings: {results['this tree']['summary'] == results[f'peer {args.peer}']['summary']}")


if __name__ == "__main__":
    main()
