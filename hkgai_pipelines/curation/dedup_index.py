"""A persisted LSH index of the curated corpus, so that a run which appends records decides only them.

`dedup.decide_duplicates` decides over the keys of every record: at 40 MiB of input that
decision (LSH bands, components) took 5.4 s of an incremental run that added 1% of the
records, against 132 s for the full run, and it grows with the corpus, not with the change.
Incremental curation mostly appends (a new source, a new partition at the end of the
catalog). Records appended after every record decided so far (order keys above all of
theirs) cannot change which record of a bucket, an exact group or an id comes first, so the
decision over old and new records is the old one plus what the new records bring:

- a new record whose id an old or earlier new record has is a repeat (`repair:duplicate_id`);
- a new record whose exact key an old representative has links to it, else to the first new
  record of its key;
- each band row of a new representative pairs with the anchor of its LSH bucket (the bucket's
  first record): an old anchor when the bucket already exists, else the first new record;
- the new pairs are verified, and the verified ones and the exact links are joined into the
  old components restored, in which each component's root is still its first record. A new
  record can join two old clusters; then the later cluster's kept record is dropped, as in a
  full decision.

So the index keeps, after each decision: every id (by a 64-bit hash, with the id to confirm a
hit), each exact group's representative, each bucket's anchor (one-record buckets too: a new
record may join one), the components (each candidate's root and best similarity), the exact
links, the repeated ids, the kept records' ids and the decision's counts. Tests compare every
output of a run decided on the index with a full run's.

Layout under `<parts_dir>/DEDUP_INDEX_DIR/`: immutable *generations* of lookup tables (one a
full decision writes, in segments by `keystore` bucket range as the decision reads them; one
per appending run with its new entries), a *state* folder written whole by each run, and
`current.json` naming them with every file's SHA-256 and its own (a flipped bit would change
decisions silently), replaced in one step after the run's units are complete (`commit`). A full
decision is made instead, and writes a new index, when the index is missing or damaged, the
units taken from earlier runs are not exactly those it was made with, a new unit comes before
an old one, or it has MAX_GENERATIONS generations (that full decision is its compaction).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hkgai_pipelines.curation.dedup import (
    EXACT_KEY_BYTES,
    Components,
    DuplicateDecisions,
    KeyStore,
    PairVerifier,
    _exact_links,
    _ids_of,
    _members_of,
    _unique_pairs,
    bucket_anchors,
    decisions_from,
    duplicate_id_orders,
    exact_buckets,
    exact_key_array,
    exact_keys_of,
    id_hashes,
    join_verified,
)
from hkgai_pipelines.curation.keystore import FINE_BUCKETS, bucket_of

logger = logging.getLogger(__name__)

#: The index's folder inside an incremental run's parts folder.
DEDUP_INDEX_DIR = "dedup-index"
CURRENT = "current.json"
#: Generations of lookup tables before the next run makes a full decision instead (and
#: writes one generation again): each lookup searches every generation.
MAX_GENERATIONS = 8
#: Index format: a change makes an older index unusable (a full decision writes a new one).
INDEX_FORMAT = 1
#: Nodes' order keys converted to int64 and written at a time (`IndexWriter.set_state`).
NODE_CHUNK = 1 << 20

ID_SEGMENT = pa.schema([("hash", pa.uint64()), ("id", pa.string())])
EXACT_SEGMENT = pa.schema([("exact", pa.binary(EXACT_KEY_BYTES)), ("order", pa.int64())])
BAND_SEGMENT = pa.schema([("hash", pa.uint64()), ("band", pa.int16()), ("anchor", pa.int64())])
KEPT_IDS = pa.schema([("order", pa.int64()), ("id", pa.large_string())])
STATE_ARRAYS = ("nodes", "parent", "best", "exact_member", "exact_rep", "repeated")
#: Looked-up ids: the old kept ids, the new records' ids, and a callback for any other
#: earlier record (an old record that was alone until a new record joined it).
IdsOf = Callable[[np.ndarray], list[str]]


class IndexWriter:
    """Writes one generation of lookup tables and the state of a decision into `root`, named
    by a new token; `stage` lists them in a pending file that `commit` makes current.
    `decide_duplicates` (a full decision) gives it every range's rows; `extend_decisions`
    its new entries. Raises OSError when the folder cannot be written."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.token = f"{time.time_ns():x}-{os.getpid()}"
        self.generation = self.root / f"gen-{self.token}"
        self.state = self.root / f"state-{self.token}"
        self.generation.mkdir(parents=True)
        self.state.mkdir()
        self.segments: dict[str, list[dict]] = {"ids": [], "exact": [], "bands": []}
        self.counts: dict = {}

    def _write(self, kind: str, low: int, high: int, table: pa.Table) -> None:
        if not table.num_rows:
            return
        name = f"{kind}-{low:04d}-{high:04d}.arrow"
        _write_arrow(self.generation / name, table)
        self.segments[kind].append({"file": name, "low": low, "high": high})

    def add_ids(self, low: int, high: int, ids: pa.Array) -> None:
        """Ids (strings, no nulls) of the records in buckets [low, high); kept once each."""
        ids = pc.unique(ids.cast(pa.string()))
        hashes = id_hashes(ids)
        by_hash = np.argsort(hashes, kind="stable")
        self._write("ids", low, high, pa.table({"hash": hashes[by_hash], "id": ids.take(by_hash)}, schema=ID_SEGMENT))

    def add_exact(self, low: int, high: int, exact: np.ndarray, orders: np.ndarray) -> None:
        """The representatives (exact keys S20, orders int64) of the exact groups in [low, high)."""
        by_key = np.argsort(exact, kind="stable")
        self._write("exact", low, high, pa.table({"exact": exact_key_array(exact[by_key]), "order": orders[by_key]},
                                                 schema=EXACT_SEGMENT))

    def add_bands(self, low: int, high: int, band: np.ndarray, hashes: np.ndarray, anchors: np.ndarray) -> None:
        """Each bucket's (band int16, hash uint64, anchor order int64) in [low, high), by hash."""
        by_hash = np.argsort(hashes, kind="stable")
        self._write("bands", low, high, pa.table({"hash": hashes[by_hash], "band": band[by_hash], "anchor": anchors[by_hash]},
                                                 schema=BAND_SEGMENT))

    def set_state(self, components: Components, exact_member: np.ndarray, exact_rep: np.ndarray, repeated: np.ndarray,
                  counts: dict) -> None:
        """The decision's components before `decisions_from` gives them up, its exact links,
        repeated ids and counts."""
        narrow, parent, best = components.state()
        # The nodes' order keys written a chunk at a time: as int64 they would be a second
        # copy of the nodes, 8 bytes each (12 million candidates at 1 GiB of input).
        nodes = np.lib.format.open_memmap(self.state / "nodes.npy", mode="w+", dtype=np.int64, shape=(len(narrow.values),))
        for start in range(0, len(nodes), NODE_CHUNK):
            nodes[start:start + NODE_CHUNK] = narrow.wide(narrow.values[start:start + NODE_CHUNK])
        nodes.flush()
        del nodes
        for name, values in zip(STATE_ARRAYS[1:], (parent, best, exact_member, exact_rep, repeated)):
            np.save(self.state / f"{name}.npy", values)
        self.counts = {key: int(value) for key, value in counts.items()}

    def set_kept(self, decisions: DuplicateDecisions) -> None:
        """The kept records' (order, id), from the decisions."""
        _write_arrow(self.state / "kept.arrow", pa.table({"order": decisions.kept_orders, "id": _id_array(decisions)},
                                                         schema=KEPT_IDS))

    def stage(self, units: list[tuple[int, str]], earlier: list[dict]) -> Path:
        """Write the pending listing: the `earlier` generations (those of the index this run
        extended, else none) and this run's, the state, the run's units (index, fingerprint)
        in input order and every file's SHA-256. Returns its path, for `commit`."""
        this = {"folder": self.generation.name, "segments": self.segments,
                "files": {f"{self.generation.name}/{segment['file']}": _sha256(self.generation / segment["file"])
                          for segments in self.segments.values() for segment in segments}}
        generations = [*earlier, this]
        if earlier and not this["files"]:  # new units without candidates: no generation of their own
            shutil.rmtree(self.generation, ignore_errors=True)
            generations = list(earlier)
        files = {f"{self.state.name}/{path.name}": _sha256(path) for path in sorted(self.state.iterdir())}
        for generation in generations:  # each generation carries its own files' digests
            files.update(generation["files"])
        listing = {"format": INDEX_FORMAT, "units": [list(unit) for unit in units], "generations": generations,
                   "state": self.state.name, "counts": self.counts, "files": files}
        pending = self.root / f"pending-{self.token}.json"
        pending.write_text(json.dumps(_sealed(listing)), encoding="utf-8")
        return pending

    def abandon(self) -> None:
        """Remove what this writer wrote (a failed run)."""
        for path in (self.generation, self.state):
            shutil.rmtree(path, ignore_errors=True)
        (self.root / f"pending-{self.token}.json").unlink(missing_ok=True)


def commit(pending: Path) -> None:
    """Make a staged listing current (one rename), then remove the generations and states no
    longer named and any other pending listing."""
    root = pending.parent
    os.replace(pending, root / CURRENT)
    listing = read_listing(root / CURRENT)
    named = {listing["state"], *(generation["folder"] for generation in listing["generations"]), CURRENT}
    for path in root.iterdir():
        if path.name not in named:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


class DedupIndex:
    """The current index of `root`, read for `extend_decisions` (see the module docstring)."""

    def __init__(self, root: Path, listing: dict):
        self.root, self.listing = root, listing
        self.units = [tuple(unit) for unit in listing["units"]]
        self.counts = listing["counts"]
        state = root / listing["state"]
        self.arrays = {name: np.load(state / f"{name}.npy") for name in STATE_ARRAYS}
        self.kept = _read_arrow(state / "kept.arrow")
        self.tables: dict[str, list[tuple[int, int, pa.Table]]] = {"ids": [], "exact": [], "bands": []}
        for generation in listing["generations"]:
            for kind, segments in generation["segments"].items():
                for segment in segments:
                    table = _read_arrow(root / generation["folder"] / segment["file"])
                    self.tables[kind].append((segment["low"], segment["high"], table))

    @classmethod
    def open(cls, root: Path, cached: list[tuple[int, str]], todo: list[int]) -> "DedupIndex | None":
        """The index when this run may extend it: its units are exactly `cached` (index,
        fingerprint, in input order), every unit of `todo` (indices) comes after them, it has
        at most MAX_GENERATIONS generations and every file has the SHA-256 it was written
        with. Else None (the reason is logged), and the run makes a full decision."""
        try:
            listing = read_listing(root / CURRENT)
            why = None
            if listing.get("format") != INDEX_FORMAT:
                why = "another index format"
            elif [tuple(unit) for unit in listing["units"]] != list(cached):
                why = "the units taken from earlier runs are not those it was made with"
            elif todo and cached and min(todo) <= max(index for index, _ in cached):
                why = "a new unit comes before a unit already decided"
            elif len(listing["generations"]) > MAX_GENERATIONS:
                why = f"it has {len(listing['generations'])} generations (compacted by a full decision)"
            else:
                bad = [name for name, digest in listing["files"].items() if _sha256(root / name) != digest]
                why = f"{len(bad)} damaged file(s), e.g. {bad[0]}" if bad else None
            if why is None:
                return cls(root, listing)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException) as error:
            why = f"unreadable ({type(error).__name__}: {error})"
        logger.info("dedup index not used (%s): a full decision", why)
        return None

    def _lookup(self, kind: str, column: str, queries: np.ndarray, buckets: np.ndarray, match: Callable,
                value: str | None = None) -> np.ndarray:
        """Per query (its keystore bucket in `buckets`), the `value` column of its row in the
        `kind` tables, int64 (1 when `value` is None), -1 where none holds it. Each table holds
        `column` sorted; among its rows with the query's value, `match(table, rows, positions
        of the queries)` says which are the query's (a hash shared by other bands or ids)."""
        found = np.full(len(queries), -1, dtype=np.int64)
        for low, high, table in self.tables[kind]:
            asked = np.flatnonzero((buckets >= low) & (buckets < high) & (found < 0))
            if not len(asked):
                continue
            values = _column_numpy(table, column)
            answers = _column_numpy(table, value) if value is not None else None
            start = np.searchsorted(values, queries[asked], side="left")
            stop = np.searchsorted(values, queries[asked], side="right")
            step = 0
            while True:
                open_ = np.flatnonzero(start + step < stop)
                if not len(open_):
                    break
                rows, positions = start[open_] + step, asked[open_]
                newly = match(table, rows, positions) & (found[positions] < 0)
                found[positions[newly]] = 1 if answers is None else answers[rows[newly]]
                step += 1
        return found

    def known_ids(self, ids: pa.Array) -> np.ndarray:
        """bool (n,): does an indexed record have each id (strings, no nulls)."""
        hashes = id_hashes(ids)
        texts = np.asarray(ids.to_pylist(), dtype=object)

        def same(table: pa.Table, rows: np.ndarray, asked: np.ndarray) -> np.ndarray:
            return np.asarray(table.column("id").take(pa.array(rows)).to_pylist(), dtype=object) == texts[asked]

        return self._lookup("ids", "hash", hashes, bucket_of(hashes), same) >= 0

    def exact_representatives(self, exact: np.ndarray) -> np.ndarray:
        """The order (int64, -1: none) of the indexed representative of each exact key (S20)."""
        exact = np.ascontiguousarray(exact, dtype=f"S{EXACT_KEY_BYTES}")
        return self._lookup("exact", "exact", exact, exact_buckets(exact), lambda table, rows, asked: np.ones(len(rows), dtype=bool),
                            value="order")

    def bucket_anchors(self, band: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """The anchor order (int64, -1: none) of each (band, hash) bucket already indexed."""
        def same_band(table: pa.Table, rows: np.ndarray, asked: np.ndarray) -> np.ndarray:
            return _column_numpy(table, "band")[rows] == band[asked]

        return self._lookup("bands", "hash", hashes, bucket_of(hashes), same_band, value="anchor")

    def kept_ids(self, orders: np.ndarray) -> tuple[np.ndarray, pa.Array]:
        """(bool per order (int64): is it a kept record of the indexed decision, its id (large strings) for those)."""
        kept_orders = self.kept.column("order").to_numpy()
        known = _members_of(kept_orders, orders)
        texts = self.kept.column("id").take(pa.array(np.searchsorted(kept_orders, orders[known]), type=pa.int64()))
        return known, texts.combine_chunks()


def extend_decisions(index: DedupIndex, keys: KeyStore, threshold: float, verify: PairVerifier, ids_of: IdsOf,
                     writer: IndexWriter | None) -> DuplicateDecisions:
    """The decision over the indexed records and the records in `keys`, which all come after
    them: equal to `decide_duplicates` over both (see the module docstring), with work in
    proportion to the new records and the lookups. `verify`: as for `decide_duplicates`,
    asked only the new pairs (ranges of at most `keys.max_pairs`); `ids_of(orders)`: the ids
    of indexed records that were in no cluster (a list of str, in order). `writer` gets the
    new lookup entries and the new state (None: the index stays as it is, as when nothing is new). Memory: one range of the new records' keys at a
    time (`KeyStore`), their candidate pairs and the index's state arrays (20 bytes a
    candidate). Raises what `verify` raises, ValueError when a kept record has no id or a new
    record does not come after every indexed one."""
    empty = np.zeros(0, dtype=np.int64)
    # 1. Repeated ids: of an indexed record, or of an earlier new record (an id's rows share a bucket).
    repeated_parts = [empty]
    for low, high in keys.ids.ranges(keys.max_rows):
        table = keys.ids.read(low, high)
        ids, orders = table.column("id").combine_chunks().cast(pa.string()), table.column("order").to_numpy()
        known = index.known_ids(ids) if len(ids) else np.zeros(0, dtype=bool)
        repeated_parts += [duplicate_id_orders(orders, ids), orders[known]]
        if writer is not None:
            writer.add_ids(low, high, ids.filter(pa.array(~known)))
    new_repeated = np.unique(np.concatenate(repeated_parts))

    # 2. Exact links: to an indexed representative, else to the first new record of the key.
    node_parts, member_parts, rep_parts = [empty], [empty], [empty]
    for low, high in keys.exact.ranges(keys.max_rows):
        table = keys.exact.read(low, high)
        orders = table.column("order").to_numpy()
        alive = ~_members_of(new_repeated, orders)
        exact, orders = exact_keys_of(table.column("exact"))[alive], orders[alive]
        node_parts.append(orders)
        old_rep = index.exact_representatives(exact) if len(exact) else empty
        indexed = old_rep >= 0
        member, rep = _exact_links(exact[~indexed], orders[~indexed])
        representative = ~_members_of(member, orders[~indexed])
        if writer is not None:
            writer.add_exact(low, high, exact[~indexed][representative], orders[~indexed][representative])
        member_parts += [orders[indexed], member]
        rep_parts += [old_rep[indexed], rep]
    new_nodes = np.sort(np.concatenate(node_parts))
    old_nodes = index.arrays["nodes"]
    if len(old_nodes) and len(new_nodes) and new_nodes[0] <= old_nodes[-1]:
        raise ValueError("a new record does not come after every indexed record: the index cannot be extended")
    new_member, new_rep = np.concatenate(member_parts), np.concatenate(rep_parts)
    by_member = np.argsort(new_member)
    new_member, new_rep = new_member[by_member], new_rep[by_member]

    # 3. Candidate pairs: with an indexed bucket's anchor, else within the new buckets.
    excluded = np.union1d(new_repeated, new_member)
    anchor_parts, member_parts = [empty], [empty]
    for low, high in keys.bands.ranges(keys.max_rows):
        table = keys.bands.read(low, high)
        orders = table.column("order").to_numpy()
        keep = ~_members_of(excluded, orders)
        band, hashes, orders = table.column("band").to_numpy()[keep], table.column("hash").to_numpy()[keep], orders[keep]
        old_anchor = index.bucket_anchors(band, hashes) if len(orders) else empty
        indexed = old_anchor >= 0
        band, hashes, unindexed = band[~indexed], hashes[~indexed], orders[~indexed]
        anchor, member, anchors = bucket_anchors(band, hashes, unindexed)
        if writer is not None:
            writer.add_bands(low, high, band[anchors], hashes[anchors], unindexed[anchors])
        anchor_parts += [old_anchor[indexed], anchor]
        member_parts += [orders[indexed], member]
    anchor, member = _unique_pairs(np.concatenate(anchor_parts), np.concatenate(member_parts))
    del anchor_parts, member_parts

    # 4. The indexed components with the new records, their exact links and verified pairs.
    components = Components.restored(np.concatenate([old_nodes, new_nodes]), index.arrays["parent"], index.arrays["best"])
    components.union(new_member, new_rep)
    step = keys.max_pairs or max(1, len(anchor))
    ranges = [(anchor[i:i + step], member[i:i + step]) for i in range(0, len(anchor), step)]
    _, verified_pairs = join_verified(components, lambda: ranges, verify, threshold)
    logger.info("dedup index: %d new candidates, %d new pairs, %d verified", len(new_nodes), len(anchor), verified_pairs)

    counts = {"candidates": index.counts["candidates"] + len(new_nodes),
              "candidate_pairs": index.counts["candidate_pairs"] + len(anchor),
              "verified_pairs": index.counts["verified_pairs"] + verified_pairs}
    repeated = np.concatenate([index.arrays["repeated"], new_repeated])
    exact_member = np.concatenate([index.arrays["exact_member"], new_member])
    exact_rep = np.concatenate([index.arrays["exact_rep"], new_rep])
    if writer is not None:
        writer.set_state(components, exact_member, exact_rep, repeated, counts)
    first_new = new_nodes[0] if len(new_nodes) else np.iinfo(np.int64).max

    def kept_ids(kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The kept records of the indexed decision, the new ones, and indexed records that
        # were alone until a new record joined them.
        found, texts = index.kept_ids(kept)
        rest = np.flatnonzero(~found)
        new = rest[kept[rest] >= first_new]
        older = rest[kept[rest] < first_new]
        utf8, offsets = _ids_of(keys, kept[new])
        pieces = [texts, pa.LargeStringArray.from_buffers(len(new), pa.py_buffer(offsets.astype(np.int64).tobytes()),
                                                          pa.py_buffer(utf8.tobytes())),
                  pa.array(ids_of(kept[older]) if len(older) else [], type=pa.large_string())]
        every = pa.concat_arrays(pieces)
        placed = np.empty(len(kept), dtype=np.int64)
        placed[np.concatenate([np.flatnonzero(found), new, older])] = np.arange(len(kept))
        return _utf8_of(every.take(pa.array(placed)))

    decisions = decisions_from(components, exact_member, exact_rep, repeated, kept_ids, counts)
    if writer is not None:
        writer.set_kept(decisions)
    return decisions


def _sealed(listing: dict) -> dict:
    """The listing with the SHA-256 of its canonical JSON: the listing names the files and
    their digests, bucket ranges and counts, so a flipped bit in it must be caught too."""
    return {"listing": listing, "sha256": hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()}


def read_listing(path: Path) -> dict:
    """The listing of a `_sealed` file. Raises OSError, ValueError (not JSON, or its digest
    does not match: damaged), KeyError or TypeError (not a sealed listing)."""
    sealed = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(sealed, dict) or not isinstance(sealed.get("listing"), dict):
        raise TypeError("not a sealed listing")
    if hashlib.sha256(json.dumps(sealed["listing"], sort_keys=True).encode()).hexdigest() != sealed["sha256"]:
        raise ValueError("its SHA-256 does not match: damaged")
    return sealed["listing"]


def _utf8_of(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes uint8, offsets int64) of large strings without nulls, as `dedup._ids_of`."""
    if ids.null_count:
        raise ValueError(f"{ids.null_count} kept record(s) of a duplicate cluster have no id")
    ids = ids.cast(pa.large_string())
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset:ids.offset + len(ids) + 1]
    data = ids.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return data[offsets[0]:offsets[-1]].copy(), offsets - offsets[0]


def _id_array(decisions: DuplicateDecisions) -> pa.Array:
    offsets, data = decisions.kept_id_offsets.astype(np.int64), decisions.kept_id_bytes.astype(np.uint8)
    return pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes()))


def _column_numpy(table: pa.Table, name: str) -> np.ndarray:
    chunks = table.column(name).chunks
    # One chunk (each file is one batch): its buffer as it is, no copy of a mapped file.
    column = chunks[0] if len(chunks) == 1 else table.column(name).combine_chunks()
    if pa.types.is_fixed_size_binary(column.type):
        return exact_keys_of(column)
    return column.to_numpy()


def _write_arrow(path: Path, table: pa.Table) -> None:
    table = table.combine_chunks()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read_arrow(path: Path) -> pa.Table:
    # Memory-mapped: a lookup touches the pages it searches, not the whole table.
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
