"""Pair verification at scale: the join (`curation/pair_join.py`) against per-range lookups.

The corpus-wide decision verifies its LSH candidate pairs one range at a time. The peer,
`per_range_lookup` below, is how the engine verified them before the join: each range makes
its own passes over every part file, reading the order keys, hashing the texts of the
records its pairs name, as many passes as keep the signatures under a budget. The join reads
each part file once for all ranges.

A 1 GiB corpus takes the steps over an hour on 2 cores, so this benchmark reproduces the
1 GiB decision's shape on a smaller corpus instead: the number of ranges grows with the pairs
over the decision's budget, so `--budget-mib 256 / (1024 / mb)` gives a corpus of `--mb` MiB
the ranges a 1 GiB corpus has at the engine's 256 MiB (default: that scaling).

Steps: build the corpus (curation_scale.py's `build_corpus`, near-duplicates across shards),
curate it once with a parts folder (untimed; what the steps leave), gather the keys from the
part files into a key store with the budget, then decide twice in this process, timed:
with `per_range_lookup` (with the budgets the engine gave it: signatures up to the decision's
budget, ranges of pairs cut like ranges of keys) and with `JoinedPairVerifier`. Printed: seconds, part-file reads,
ranges, the ratio, and whether both decided the same.

    python benchmarks/pair_verification.py --mb 40
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ReadCounter:
    """Counts reads of part files through `pyarrow.parquet.read_table` in the given modules."""

    def __init__(self, *modules) -> None:
        self.reads = 0
        self._modules = modules
        self._original = pq.read_table

    def __enter__(self):
        def counted(path, *args, **kwargs):
            if Path(str(path)).name.startswith("part-"):
                self.reads += 1
            return self._original(path, *args, **kwargs)
        for module in self._modules:
            module.read_table = counted
        return self

    def __exit__(self, *exc) -> None:
        for module in self._modules:
            module.read_table = self._original


def per_range_lookup(parts: list[str], hasher, budget_bytes: int, read_table):
    """The peer: a verifier that finds each range's records in every part file, in passes
    that hold at most `budget_bytes` of signatures."""
    from hkgai_pipelines.curation.dedup import pair_similarities
    from hkgai_pipelines.curation.keystore import fibonacci_mix

    def verify(anchor: np.ndarray, member: np.ndarray):
        records = len(np.unique(np.concatenate([anchor, member])))
        passes = max(1, -(-records * hasher.num_perm * 4 // budget_bytes))
        bucket = (fibonacci_mix(anchor) >> np.uint64(32)) % np.uint64(passes)
        got = [], [], []
        for current in range(passes):
            chosen = bucket == current
            pass_anchor, pass_member = anchor[chosen], member[chosen]
            wanted = np.unique(np.concatenate([pass_anchor, pass_member]))
            signatures = np.zeros((len(wanted), hasher.num_perm), dtype=np.uint32)
            for part in parts:
                orders = read_table(part, columns=["order"]).column("order").to_numpy()
                position = np.minimum(np.searchsorted(wanted, orders), len(wanted) - 1)
                hit = wanted[position] == orders
                if hit.any():
                    texts = read_table(part, columns=["text"]).column("text").filter(pa.array(hit)).to_pylist()
                    signatures[position[hit]] = hasher.signatures(texts)
            similarity = pair_similarities(signatures[np.searchsorted(wanted, pass_anchor)], signatures[np.searchsorted(wanted, pass_member)])
            for into, values in zip(got, (pass_anchor, pass_member, similarity)):
                into.append(values)
        return tuple(np.concatenate(values) for values in got)
    return verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=40.0, help="input size in MiB")
    parser.add_argument("--budget-mib", type=float, default=None, help="decision budget (default: 256 * mb / 1024)")
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--skip-peer", action="store_true", help="time the join only")
    args = parser.parse_args()

    from curation_scale import build_corpus

    from hkgai_pipelines.curation import engine, pair_join
    from hkgai_pipelines.curation.dedup import KeyStore, MinHasher, decide_duplicates
    from hkgai_pipelines.curation.inputs import file_units
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT

    params = load_curation_params(PROJECT_ROOT / "params.yaml")
    budget = int((args.budget_mib if args.budget_mib is not None else 256 * args.mb / 1024) * 2**20)
    work = Path(tempfile.mkdtemp(prefix="pair-verification-"))
    try:
        documents, size = build_corpus(work / "corpus", args.mb, args.shards)
        units = file_units(sorted((work / "corpus").glob("shard-*.jsonl")), source="bench", licence="mixed")
        started = time.perf_counter()
        run = engine.curate(units, params, work / "out", executor="local", parts_dir=work / "parts")
        print(f"corpus: {documents:,} documents, {size / 2**20:.1f} MiB; steps and a full run {time.perf_counter() - started:.0f} s; "
              f"{run.dedup['candidate_pairs']:,} candidate pairs, {run.dedup['near_duplicates']:,} near-duplicates", flush=True)
        parts = sorted(map(str, (work / "parts").glob("*/part-*.parquet")), key=lambda path: Path(path).name)
        hasher = MinHasher.from_params(params.dedup)

        def decide(name: str, make_verifier, pair_ranges_like_keys: bool = False):
            folder = work / f"keys-{name}"
            keys = KeyStore(params.dedup.num_bands, folder, budget)
            if pair_ranges_like_keys:  # how the engine cut ranges of pairs before the join
                keys.max_pairs = keys.max_rows
            progress = engine._Progress()
            for part in parts:
                engine._collect(engine._keys_of(pq.read_table(part, columns=engine.PART_KEY_COLUMNS), params.dedup.num_bands, False),
                                keys, progress)
            with ReadCounter(pq, pair_join.pq) as counter:
                started = time.perf_counter()
                decisions = decide_duplicates(keys, params.dedup.threshold, make_verifier(keys, folder, counter))
                seconds = time.perf_counter() - started
            shutil.rmtree(folder, ignore_errors=True)
            return decisions, seconds, counter.reads

        results = {}
        if not args.skip_peer:
            # The engine's budgets before the join: 256 MiB of signatures, pair ranges cut like key ranges.
            results["per-range lookup (peer)"] = decide("peer", lambda keys, folder, counter: per_range_lookup(parts, hasher, budget, pq.read_table),
                                                        pair_ranges_like_keys=True)
        results["join (pair_join)"] = decide("join", lambda keys, folder, counter: pair_join.JoinedPairVerifier(
            parts, hasher, folder / "verify", memory_bytes=keys.held_bytes, flush_bytes=keys.flush_bytes, max_rows=keys.max_rows))
        print()
        print(f"budget {budget / 2**20:.1f} MiB, {len(parts):,} part files, "
              f"{-(-results['join (pair_join)'][0].summary['candidate_pairs'] // KeyStore(1, None, budget).max_pairs)} or more ranges of pairs")
        print("| verifier | decision seconds | part-file reads | ratio to the peer |")
        print("|---|---|---|---|")
        base = next(iter(results.values()))[1]
        for name, (decisions, seconds, reads) in results.items():
            print(f"| {name} | {seconds:.1f} | {reads:,} | {base / seconds:.2f}x |")
        summaries = [decisions.summary for decisions, *_ in results.values()]
        dropped = [decisions.dropped_orders.tolist() for decisions, *_ in results.values()]
        print(f"same decisions: {all(s == summaries[0] for s in summaries) and all(d == dropped[0] for d in dropped)}; {summaries[-1]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
