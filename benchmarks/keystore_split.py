"""Peak memory of the key store's split (`keystore.SortedRuns.split`) at the 1 GiB decision's
shape, against a peer commit, in one command.

The 1 GiB curation run spilled 113 runs of LSH band rows (2.6 GB on disk) and split them into
171 ranges. This builds the same shape from random band rows (`--runs` runs of `--rows` rows),
then splits it, in a child process per tree: this working tree and `--peer` (a commit checked
out with `git worktree` into a temporary folder). Printed per tree: the child's peak RSS during
the split above its RSS before it (Linux: peak reset through /proc/self/clear_refs), the
split's seconds, and the ratio against the peer.

    python benchmarks/keystore_split.py --peer f437bcd
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


def child(runs: int, rows: int, ranges: int, folder: Path) -> None:
    """Build and split in this process; print one JSON line."""
    import gc

    from peer_tree import reset_peak, status_kib

    import numpy as np
    import pyarrow as pa

    from hkgai_pipelines.curation.dedup import BAND_ROWS
    from hkgai_pipelines.curation.keystore import SortedRuns, bucket_of

    rng = np.random.default_rng(0)
    store = SortedRuns(BAND_ROWS, folder, flush_bytes=1, memory_bytes=0)  # every append a run, on disk
    for run in range(runs):
        hashes = rng.integers(0, 2**63, rows, dtype=np.uint64)
        store.append(pa.table({"bucket": bucket_of(hashes), "band": rng.integers(0, 16, rows, dtype=np.int16),
                               "hash": hashes, "order": np.arange(run * rows, (run + 1) * rows, dtype=np.int64)}))
    del hashes
    gc.collect()
    before = status_kib("VmRSS")
    reset_peak()
    started = time.perf_counter()
    got = store.ranges(max(1, runs * rows // ranges))
    seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"ranges": len(got), "before_mib": before / 1024, "peak_mib": status_kib("VmHWM") / 1024,
                      "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default="f437bcd", help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=113)
    parser.add_argument("--rows", type=int, default=1_770_000, help="band rows per run (about 33 MB of Arrow)")
    parser.add_argument("--ranges", type=int, default=171)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.runs, args.rows, args.ranges, args.folder)
        return

    from peer_tree import print_peak_table, run_in_trees

    with tempfile.TemporaryDirectory(prefix="keystore-split-") as folder:
        results = run_in_trees(Path(__file__).resolve(), ["--runs", str(args.runs), "--rows", str(args.rows),
                                                          "--ranges", str(args.ranges), "--folder", str(Path(folder) / "runs")], args.peer)
    print()
    print(f"{args.runs} runs x {args.rows:,} band rows split into {results['this tree']['ranges']} ranges")
    print_peak_table(results, args.peer, "the split")


if __name__ == "__main__":
    main()
