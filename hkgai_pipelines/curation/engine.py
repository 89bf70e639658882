"""The curation engine: the pipeline of `pipeline.py` in batch-sized tasks, run by one of two
executors (the split datatrove makes between its local and Ray executors):

- **local**: the tasks one after another in this process, no Ray. The default on one
  machine: on 2 cores Ray's worker processes (each loading the language models) and
  shuffles cost more than the second core gives (benchmarks/curation_scale.py).
- **ray**: the tasks as Ray tasks, `workers` at a time, on Ray embedded in this process or
  on the cluster RAY_ADDRESS names (KubeRay in production). Chosen by `--workers N` above 1,
  `RAY_ADDRESS`, or a Ray session this process already runs (`choose_executor`).

Both write the same part files, take the same decisions and give the same outputs.

Memory is bounded by the batch size and two budgets, not by the corpus: no task holds more
than one batch of records; the driver spills the small per-record keys it gathers
(`dedup.KeyStore`: ids, exact keys, LSH band hashes) to the staging folder by hash bucket and
decides one range of buckets at a time within DECIDE_MEMORY_BYTES, and pair verification
spills within the same budget (`pair_join`; on Ray, up to two ranges per worker are compared
at once, each task holding one range's signatures). What still grows is
the components (12 bytes a candidate) and what was found: the repeated ids, exact duplicates
and the dropped records' verdicts. Three phases, with the
corpus-wide decisions on the driver between them (on Ray, every phase's work is plain Ray
tasks submitted a few at a time, `_in_flight`):

1. **read + steps**: the input units (`inputs.py`: one per file, in the stable input order)
   are planned into tasks of about 1 MiB (`inputs.plan_tasks`: a large JSONL or Parquet file
   in slices, small files together; the same plan for every executor and worker count; on
   Ray the large files' slices, which count a JSONL file's newlines, are found in tasks). A
   task reads its own slices and runs each batch of records through
   `CurationPipeline.process_batch` (repair, PII, language ID, script, quality), writes its
   processed rows and their deduplication keys to a Parquet part file in the run's resume
   folder (`RESUME_PREFIX`: a stopped run's finished part files are read back instead of
   processed again) and returns the keys to the driver, which spills them.
2. **decide** (driver): `dedup.decide_duplicates` finds duplicate ids, exact duplicates and the
   LSH candidate pairs. Verifying the pairs needs MinHash signatures, which are not kept:
   `pair_join.JoinedPairVerifier` joins the paired records from the part files in one pass
   (each part file read once, each paired record hashed once; on Ray one task per part
   file), spilled by the range of pairs that asked for them; each range's pairs are then
   compared (on Ray one task per range, a few ranges at once) and joined into the clusters
   on the driver in range order. An incremental run that only appends units to the last
   finished run's (`parts_dir`) decides the new records against that run's dedup index
   instead (`dedup_index.extend_decisions`: lookups, the new pairs, the restored clusters),
   with the same verdicts; either way the run stages the index of its decision for the next.
3. **settle**: tasks of a few part files each apply the decisions (`pipeline.settle_table`)
   and write each part's kept, rejected and quarantined rows; the driver adds up the per-part
   counts and concatenates the quarantine in order.

Outputs: `cleaned.parquet/` and `rejected.parquet/` are folders of part files named by the
order key of their first record (`part-<20 digits>.parquet`), so reading a folder
(`pyarrow.parquet.read_table`) gives the rows in input order; `quarantine.jsonl` and
`stats.json` are single files, as from `run_curation`. Everything is written to a staging
folder first and moved into place only when complete, so a failed run leaves the previous
outputs as they were.

Where Ray runs (the ray executor): a Ray session already started in this process is used as
it is (a test module's session, a Dagster run that started one). Otherwise, with `RAY_ADDRESS` set the
engine connects to that cluster (production: KubeRay; inputs and the output folder must then
be on storage every node reads); without it Ray is started inside this process with
`workers` CPUs and stopped at the end. Nothing has to be started by hand.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import logging
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hkgai_pipelines.curation import dedup_index
from hkgai_pipelines.curation.dedup import (
    EXACT_KEY_BYTES,
    DuplicateDecisions,
    KeyStore,
    MinHasher,
    decide_duplicates,
    exact_key_array,
    exact_keys_of,
    id_buckets,
    verify_each,
)
from hkgai_pipelines.curation.dedup_index import DEDUP_INDEX_DIR, DedupIndex, IndexWriter, extend_decisions
from hkgai_pipelines.curation.inputs import (
    ITEM_BITS, InputSlice, InputUnit, SliceMapper, file_units, lake_units, plan_tasks, slice_here, unit_slices,
)
from hkgai_pipelines.curation.keystore import bucket_of
from hkgai_pipelines.curation.pair_join import JoinedPairVerifier, part_first_order, range_similarities, route_group, route_groups
from hkgai_pipelines.curation.pipeline import (
    CLEANED_SCHEMA,
    DEDUP_KEY_FIELDS,
    PROCESSED_SCHEMA,
    REJECTED_SCHEMA,
    STAGING_PREFIX,
    CurationOutputs,
    CurationPipeline,
    CurationStats,
    KeptDigest,
    replace_outputs,
    settle_table,
    write_stats,
)
from hkgai_pipelines.params import CurationParams
from hkgai_pipelines.sources.files import CURATION_PARTS_MARKER, fold_file_quarantine
from hkgai_pipelines.sources.lake import atomic_path, held_exclusively, write_quarantine
from hkgai_pipelines.sources.records import FileItem

logger = logging.getLogger(__name__)

#: Records per task. Memory per task is about this many records (a few KB each in these
#: corpora; records above `max_record_bytes` are quarantined); each task costs Ray a few
#: milliseconds of scheduling, small against ~1 ms of steps per record.
DEFAULT_BATCH_SIZE = 1000

def keys_schema(num_bands: int) -> pa.Schema:
    """What a steps task returns to the driver: per record, its id when it takes part in the
    duplicate-id decision; for a dedup candidate its exact key and band hashes (zeros for the
    others); whether it is the first row of its part file, and whether that part file was a
    stopped run's (`reused`). Fixed-size columns, so the driver reads them as arrays without a
    Python object per record."""
    return pa.schema([("order", pa.int64()), ("id", pa.string()), ("candidate", pa.bool_()),
                      ("exact", pa.binary(EXACT_KEY_BYTES)), ("bands", pa.list_(pa.uint64(), num_bands)),
                      ("first", pa.bool_()), ("reused", pa.bool_())])


def unit_keys_schema(num_bands: int) -> pa.Schema:
    """UNIT_KEYS' rows: `keys_schema` and each id's `dedup.id_buckets` (null without an id)."""
    return keys_schema(num_bands).append(pa.field("id_bucket", pa.int32()))


#: `VerifiedPairs`' file: rows sorted by the anchor's bucket (`keystore.bucket_of`).
VERIFIED_PAIRS_SCHEMA = pa.schema([("bucket", pa.int32()), ("anchor", pa.int64()), ("member", pa.int64()), ("similarity", pa.float64())])
#: `local`: the three phases in this process, one batch at a time (no Ray). `ray`: as Ray tasks.
EXECUTORS = ("local", "ray")
#: The corpus-wide decision's budget for the keys it holds at once (`dedup.KeyStore`): the
#: keys are spilled to the staging folder as they arrive and decided one range of hash
#: buckets at a time, so the driver's memory does not grow with the corpus (a first version
#: held every key: 10.2 GiB at 1 GiB of input). Chosen so that, on the 2-core machine's
#: 24 GiB, the decision stays well under the steps' own footprint (language models, a batch).
#: Pair verification (`pair_join`) spills within the same budget.
DECIDE_MEMORY_BYTES = 256 * 1024 * 1024
#: A run's part files live in `<out>/.curate-staging-resume-<run_fingerprint>/` until the run
#: finishes: a run stopped by a kill, an OOM or an error leaves them, and the next run on the
#: same input reuses every complete one. The prefix is a staging folder's, which DVC ignores.
RESUME_PREFIX = f"{STAGING_PREFIX}resume-"
#: Distributions whose versions are part of `code_fingerprint` (what the steps call).
STEP_LIBRARIES = ("ftfy", "opencc", "lingua-language-detector", "charset-normalizer", "trafilatura", "warcio", "rensa", "pycantonese",
                  "scikit-learn", "numpy", "pyarrow")
#: Version of what a part file holds; part files of another version are never reused.
PART_FORMAT = 1
#: Incremental curation (`curate(parts_dir=...)`): each unit's part files are kept between runs
#: in `<parts_dir>/<unit fingerprint>/`, and a unit whose folder is complete (UNIT_COMPLETE
#: lists its part files) is not read or processed again. The prefix is a staging folder's,
#: which DVC ignores.
PARTS_DIR_NAME = f"{STAGING_PREFIX}parts"
UNIT_COMPLETE = "complete.json"
#: A complete unit's dedup keys (`unit_keys_schema`), one row group per part file, with the
#: ids' buckets: the next run reads one file per cached unit, a part at a time, instead of
#: the key columns of every part file, and hashes no id again.
UNIT_KEYS = "keys.parquet"
#: Inside a unit folder: each part's settled rows under the digest of its verdicts.
SETTLED_DIR = "settled"
#: In the parts folder: the candidate pairs the last run verified (`VerifiedPairs`).
PAIRS_FILE = "verified-pairs.parquet"
#: The columns of a part file that `_keys_of` turns back into the driver's keys.
PART_KEY_COLUMNS = ["order", "id", "id_check", "candidate", "exact", "bands"]
#: Folder inside the staging folder for the quarantine fragments.
WORK_DIR = ".work"


class WorkersLost(RuntimeError):
    """Ray's workers died under a task more often than its retries allow (killed, out of
    memory, a node lost). The finished part files stay: the same run again resumes."""


class CurationBusy(RuntimeError):
    """Another run holds the folders this run would write (its resume or parts folder)."""


@dataclass(frozen=True)
class EngineRun:
    """What a run did: its counts, outputs, where it ran, phase times (s), dedup summary and
    how much of it a stopped run had done."""

    stats: CurationStats
    outputs: CurationOutputs
    executor: str
    workers: int
    cluster: str
    seconds: dict = field(default_factory=dict)
    dedup: dict = field(default_factory=dict)
    #: Records whose steps a stopped run had already done (read back from its part files).
    resumed_records: int = 0
    #: Incremental runs: units whose part files an earlier run left (their records were not
    #: processed again), and units processed by this run.
    cached_units: int = 0
    processed_units: int = 0
    cached_records: int = 0
    #: Sources of the processed units, in input order (incremental runs: what changed).
    processed_sources: tuple[str, ...] = ()

    def to_report(self) -> dict:
        """The run as a JSON object (`hkgai curate --report`): what `cleaned_corpus` needs of
        a run made in another process (a KubeRay job's driver). Its top-level scalars
        (counts, content hash, executor) become the Pipes materialization's metadata."""
        return {
            "input_records": self.stats.input_records, "kept": self.stats.kept, "rejected": self.stats.rejected,
            "quarantined": self.stats.quarantined, "content_hash": self.outputs.content_hash, "executor": self.executor,
            "workers": self.workers, "cluster": self.cluster, "out_dir": str(self.outputs.out_dir),
            "outputs": {name: str(getattr(self.outputs, name)) for name in ("cleaned", "rejected", "quarantine", "stats")},
            "stats": self.stats.to_dict(), "seconds": self.seconds, "dedup": self.dedup,
            "resumed_records": self.resumed_records, "cached_units": self.cached_units, "processed_units": self.processed_units,
            "cached_records": self.cached_records, "processed_sources": list(self.processed_sources),
        }

    @classmethod
    def from_report(cls, report: dict) -> "EngineRun":
        """The inverse of `to_report`. Raises KeyError or TypeError for another object."""
        outputs = CurationOutputs(Path(report["out_dir"]), *(Path(report["outputs"][name]) for name in ("cleaned", "rejected", "quarantine", "stats")),
                                  report["content_hash"])
        return cls(CurationStats.from_dict(report["stats"]), outputs, report["executor"], report["workers"], report["cluster"],
                   report["seconds"], report["dedup"], report["resumed_records"], report["cached_units"], report["processed_units"],
                   report["cached_records"], tuple(report["processed_sources"]))


def default_workers() -> int:
    """This machine's cores (those this process may run on)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def ray_session(workers: int | None = None) -> Iterator[tuple[int, str]]:
    """Yield (workers, where): Ray as the module docstring says, and how many tasks of each
    kind run at once (`workers`, or the cluster's CPUs when it is not given)."""
    import ray

    # Ray reports usage statistics by default; nothing leaves this machine.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        yield workers or _cluster_cpus(), "running Ray session"
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as error:
            # "auto" with no cluster on this machine: Ray's message names a `--address` flag
            # that `hkgai curate` does not have.
            raise ConnectionError(f"no Ray cluster found for RAY_ADDRESS={address}: start one (`ray start --head`), "
                                  f"give its address, or unset RAY_ADDRESS to start Ray in this process") from None
        where, workers = f"Ray cluster {address}", workers or _cluster_cpus()
    else:
        workers = workers or default_workers()
        # Worker output is not forwarded: errors still come back as exceptions with their
        # traceback, and the CLI's output stays readable.
        with _quiet_token_auth_notice():
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        where = "embedded Ray"
    try:
        yield workers, where
    finally:
        with _sigint_deferred():
            ray.shutdown()


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """SIGINT ignored meanwhile (in the main thread; elsewhere nothing changes). A second Ctrl-C
    during `ray.shutdown` broke it off: the command exited 1 and left Ray's dashboard and
    runtime-env agents running, deaf to SIGTERM."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: Seconds to wait for the TCP connection to a Ray cluster's address.
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConnectionError unless a TCP connection to the `host:port` of `address` (a GCS
    address, or `ray://host:port` for Ray Client) opens within `timeout_s`. `ray.init` itself
    retries an unreachable address for minutes, printing Ray's own warnings. "auto" and
    addresses without a port are left to Ray."""
    import socket

    host_port = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        raise ConnectionError(f"cannot reach the Ray cluster at RAY_ADDRESS={address}: {error.strerror or error}") from None


@contextmanager
def _quiet_token_auth_notice():
    """Ray (2.60, the pinned version) turns token authentication on for every new local
    cluster, and says so on stderr at each start unless RAY_AUTH_MODE is set. Setting the variable here would come too
    late (Ray reads it when first imported), so the notice is held back instead: the cluster
    keeps token authentication, the CLI's output keeps one line."""
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    saved = notice.level
    notice.setLevel(logging.ERROR)
    try:
        yield
    finally:
        notice.setLevel(saved)


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def curate_files(paths: Iterable[Path], params: CurationParams, out_dir: Path, *, source: str = "local_files", licence: str = "unknown",
                 exclude: Iterable[Path] = (), workers: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 executor: str | None = None, progress: ProgressCallback | None = None) -> EngineRun:
    """`hkgai curate IN...`: files and folders as `read_files` reads them. Raises
    FileNotFoundError for a given path that does not exist, before Ray starts."""
    units = file_units(paths, source=source, licence=licence, max_record_bytes=params.max_record_bytes, exclude=exclude)
    return curate(units, params, out_dir, workers=workers, batch_size=batch_size, executor=executor, progress=progress)


def curate_lake(lake_dir: Path, sources: list[str], params: CurationParams, out_dir: Path, *,
                workers: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, executor: str | None = None,
                work_dir: Path | None = None, parts_dir: Path | None = None, progress: ProgressCallback | None = None) -> EngineRun:
    """`cleaned_corpus` and `hkgai curate --lake`: the raw partitions of `sources`, in catalog
    order. Raises FileNotFoundError for a partition that is not materialized."""
    return curate(lake_units(lake_dir, sources), params, out_dir, workers=workers, batch_size=batch_size, executor=executor,
                  work_dir=work_dir, parts_dir=parts_dir, progress=progress)


def choose_executor(workers: int | None = None, executor: str | None = None) -> str:
    """Which executor runs a curation: `executor` when given ("local" or "ray"); else Ray when
    `workers` is above 1, when RAY_ADDRESS names a cluster or when this process already has
    a Ray session; else "local". Raises ValueError for an unknown executor, or for "local"
    with more than one worker."""
    if executor is not None:
        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}: one of {', '.join(EXECUTORS)}")
        if executor == "local" and (workers or 1) > 1:
            raise ValueError(f"the local executor runs one worker (this process), not {workers}: use the ray executor")
        return executor
    ray = sys.modules.get("ray")  # a session started in this process (a test, a Dagster run)
    if (workers or 1) > 1 or os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()):
        return "ray"
    return "local"


#: Told how a run goes, as (phase, done, total): "resume" once before the others when a
#: stopped run left part files (done: how many, total 0), "plan" counts the large files cut
#: into slices (over `inputs.TASK_BYTES`; none: not told), "read and steps" counts tasks (about
#: `inputs.TASK_BYTES` of input each; 0 of all when the phase starts, then after each task),
#: "decide" is told once as it starts (0, 0: its passes are not counted), "settle" counts
#: part files. Called on the driver, between tasks: it should return at once.
ProgressCallback = Callable[[str, int, int], None]


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


#: What "read and steps" and "settle" count (`ProgressCallback`).
PROGRESS_UNITS = {"plan": "large files", "read and steps": "tasks", "settle": "part files"}


def describe_progress(phase: str, done: int, total: int) -> str:
    """One line for a `ProgressCallback` call: "read and steps: 120 of 1,030 tasks (11%)",
    "decide ..." for a phase without counts, "resume: ..." naming the part files found."""
    if phase == "resume":
        return f"resume: {done:,} part files of a stopped run found; their records are read back, not processed again"
    if not total:
        return f"{phase} ..."
    return f"{phase}: {done:,} of {total:,} {PROGRESS_UNITS.get(phase, 'steps')} ({100 * done // total}%)"


def progress_lines(say: Callable[[str], None], every_s: float = 30.0, clock: Callable[[], float] = time.monotonic
                   ) -> ProgressCallback:
    """A `ProgressCallback` that passes `say` a line (`describe_progress`) when a phase starts
    and when it ends, and between those at most once every `every_s` seconds (a log, not a
    progress bar: a 1 GiB run is about a thousand tasks)."""
    last: dict = {"phase": None, "at": float("-inf")}

    def report(phase: str, done: int, total: int) -> None:
        now = clock()
        if phase != last["phase"] or (total and done == total) or now - last["at"] >= every_s:
            last.update(phase=phase, at=now)
            say(describe_progress(phase, done, total))
    return report


def curate(units: list[InputUnit], params: CurationParams, out_dir: Path, *, workers: int | None = None,
           batch_size: int = DEFAULT_BATCH_SIZE, executor: str | None = None, work_dir: Path | None = None,
           parts_dir: Path | None = None, progress: ProgressCallback | None = None) -> EngineRun:
    """Run the pipeline on `units` and write the four outputs into `out_dir`.

    `executor`, `workers`: see `choose_executor`; on Ray, `workers` is how many steps (each
    reading its own input), verification and settle tasks run at once (default: the machine's cores, or the cluster's CPUs).
    `batch_size`: records per task. `work_dir`: the folder for the resume folder of part files
    (default `out_dir`; the lake's versioned output writes each run into a new version folder,
    so its part files live in the versions folder, where the next run finds them).
    `parts_dir`: incremental curation (see `plan_units`): keep each unit's part files there
    between runs and process only the units that are new or changed; the decisions and the
    outputs are still made over every unit, so they equal a full run's. One run at a time
    per `parts_dir` and per input and output folder (CurationBusy for a second). WorkersLost
    when Ray's workers died under a task past its retries. `progress`:
    see `ProgressCallback` (`hkgai curate` shows it). On Ray a task that fails raises
    ray.exceptions.RayTaskError here, its message carrying the task's traceback (the original
    exception type does not survive Ray's wrapping); the local executor raises the
    step's own exception. Writing the outputs raises OSError. Either way the previous outputs
    are left as they were. Raises ValueError for a batch size below 1, a bad executor or units
    out of input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    disordered = [(a.index, b.index) for a, b in zip(units, units[1:]) if b.index <= a.index]
    if disordered:
        # The order keys (unit index, position) are the stable order the decisions keep the
        # first of; units out of it failed deep in pair verification.
        raise ValueError(f"units must come in input order (strictly increasing index): unit {disordered[0][1]} "
                         f"after unit {disordered[0][0]}")
    executor = choose_executor(workers, executor)
    out_dir = Path(os.path.abspath(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    steps_dir = Path(os.path.abspath(work_dir or out_dir)) / f"{RESUME_PREFIX}{run_fingerprint(units, params, batch_size)}"
    # The parts folder first: a run refused there leaves no resume folder behind.
    with _parts_locked(parts_dir), _claimed(steps_dir):
        # Inside the claimed folder, so that a killed run's staging goes with it.
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=steps_dir))
        try:
            plan = plan_units(units, params, batch_size, parts_dir)
            work = _work_folders(staging, steps_dir, plan)
            units = plan.todo
            report = progress or _no_progress
            stopped = len(work.written())  # before any task runs: a stopped run's part files
            if stopped:
                report("resume", stopped, 0)
            if executor == "ray":
                import ray.exceptions

                try:
                    with ray_session(workers) as (workers, where):
                        stats, digest, seconds, summary = _run_on_ray(units, params, work, workers, batch_size, report)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as error:
                    raise WorkersLost(f"curation stopped: Ray workers died and a task's retries ran out "
                                      f"({type(error).__name__}); the finished part files are kept, so the same "
                                      f"run again resumes from them") from error
            else:
                workers, where = 1, "this process"
                stats, digest, seconds, summary = _run_locally(units, params, work, batch_size, report)
            _finish_outputs(staging, work)
            stats.check_counts()
            write_stats(stats, staging / "stats.json")
            shutil.rmtree(staging / WORK_DIR)
            plan.mark_complete(params.dedup.num_bands)
            plan.commit_index()
            paths = replace_outputs(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        plan.remove_unused()
        # Only a finished run gives its part files up; a failed or killed one leaves them
        # for the next run on the same input.
        shutil.rmtree(steps_dir, ignore_errors=True)
    outputs = CurationOutputs(out_dir, paths["cleaned.parquet"], paths["rejected.parquet"], paths["quarantine.jsonl"],
                              paths["stats.json"], digest.hexdigest())
    resumed, cached = summary.pop("resumed_records"), summary.pop("cached_records")
    return EngineRun(stats, outputs, executor, workers, where, seconds, summary, resumed, len(plan.cached), len(plan.todo), cached,
                     tuple(dict.fromkeys(unit.source for unit in plan.todo)))


def run_fingerprint(units: list[InputUnit], params: CurationParams, batch_size: int) -> str:
    """What a run's part files depend on, as 16 hex digits: the units, each file's size and
    modification time, the parameters, the batch size, the part files' format and the code
    that made them (`code_fingerprint`). A run resumes only the part files of a run with the
    same fingerprint."""
    digest = hashlib.sha256(json.dumps(
        {"format": PART_FORMAT, "code": code_fingerprint(), "batch_size": batch_size, "params": asdict(params)},
        sort_keys=True, default=str).encode())
    for unit in units:
        try:
            status = os.stat(unit.path)
            stamp = [status.st_size, status.st_mtime_ns]
        except OSError:
            stamp = None
        digest.update(json.dumps([unit.to_row(), stamp], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of the code and data the steps run: the `curation` and `sources` modules, the
    language-ID model files and the versions of STEP_LIBRARIES. Part files of a stopped run are not reused after an upgrade
    that changed how a record is processed (a PII pattern, a threshold in code)."""
    from importlib import metadata

    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    # The libraries the steps call: an upgrade can change how a record is repaired or labelled.
    for library in STEP_LIBRARIES:
        try:
            digest.update(f"{library}=={metadata.version(library)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{library} missing\n".encode())
    # Files only: data/langid/writers/ holds the model's training lines, which reach the steps
    # through the model file.
    for path in sorted([*package.glob("curation/*.py"), *package.glob("sources/*.py"),
                        *(path for path in package.glob("data/langid/*") if path.is_file())]):
        digest.update(path.relative_to(package).as_posix().encode() + b"\x00" + path.read_bytes())
    return digest.hexdigest()


@contextmanager
def _claimed(steps_dir: Path) -> Iterator[None]:
    """Hold `steps_dir` (created if missing) for this run, and remove the part-file folders
    other runs into the same output folder left and no run holds: their input differs from
    this run's, so nothing will resume them. Raises CurationBusy when another run on the
    same input into the same folder holds it now."""
    with held_exclusively(steps_dir, CurationBusy(f"another curation of the same input into {steps_dir.parent} is running")):
        for other in steps_dir.parent.glob(f"{RESUME_PREFIX}*"):
            if other != steps_dir and _unclaimed(other):
                shutil.rmtree(other, ignore_errors=True)
        for killed in steps_dir.glob("staging-*"):  # a killed run's half-written outputs
            shutil.rmtree(killed, ignore_errors=True)
        try:
            yield
        except BaseException:
            # A run that failed before it finished any part file (Ray unreachable, an
            # unreadable parts folder) leaves nothing to resume: no empty folder behind.
            if all(path.name == ".lock" for path in steps_dir.iterdir()):
                shutil.rmtree(steps_dir, ignore_errors=True)
            raise


@contextmanager
def _parts_locked(parts_dir: Path | None) -> Iterator[None]:
    """Hold `parts_dir` for this run: two runs on one parts folder would each remove the
    other's unit folders as unused. Raises CurationBusy when another run holds it."""
    if parts_dir is None:
        yield
        return
    with held_exclusively(parts_dir, CurationBusy(f"another incremental curation with the parts folder {parts_dir} is running: "
                                                  "wait for it to finish, or use another parts folder")):
        # Marks the folder for input walks (`sources.files`): never read as input.
        (Path(parts_dir) / CURATION_PARTS_MARKER).touch()
        yield


def _unclaimed(steps_dir: Path) -> bool:
    try:
        with open(steps_dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except BlockingIOError:
        return False
    except OSError:  # no lock file: a folder this code did not make
        return False


def unit_fingerprint(unit: InputUnit, params: CurationParams, batch_size: int) -> str:
    """What a unit's part files depend on, as 24 hex digits: the unit (its position in the
    input order, path, source, ...), the file's content (BLAKE2b of its bytes: a re-ingested
    but identical partition keeps its parts), the parameters, the batch size, the part
    format and the code of the steps."""
    # The path relative to the unit's root (the lake) or its file name, not the absolute path:
    # a moved or copied home keeps its kept part files. What the records say about their file
    # (locators) comes from the root-relative path and `name`, which stay in.
    row = {**unit.to_row(), "root": None,
           "path": os.path.relpath(unit.path, unit.root) if unit.root else Path(unit.path).name}
    digest = hashlib.sha256(json.dumps(
        {"format": PART_FORMAT, "code": code_fingerprint(), "batch_size": batch_size, "params": asdict(params), "unit": row},
        sort_keys=True, default=str).encode())
    try:
        with open(unit.path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "blake2b").digest())
    except OSError as error:  # a missing quarantine file, an unreadable path: as it is now
        digest.update(f"unreadable: {type(error).__name__}".encode())
    return digest.hexdigest()[:24]


@dataclass
class UnitPlan:
    """Which units a run processes and which it takes from earlier runs' part files."""

    #: Units to read and process, in input order.
    todo: list[InputUnit]
    #: Part files of the units taken as they are (complete folders of earlier runs).
    cached_parts: list[str] = field(default_factory=list)
    cached: list[InputUnit] = field(default_factory=list)
    #: Unit index -> the folder its new part files go to (None: the run's own resume folder).
    folders: dict[int, str] | None = None
    parts_dir: Path | None = None
    #: Unit index -> its fingerprint (the name of its folder), for every unit of the run.
    fingerprints: dict[int, str] = field(default_factory=dict)
    #: Folders of cached units whose UNIT_KEYS file could not be used (missing, damaged, not
    #: what the unit lists): their keys came from the part files, and the file is written
    #: again after the run, so the next run does not read the part files again.
    stale_keys: set[str] = field(default_factory=set)
    #: Records in the cached units' part files (their footers, read when planning).
    cached_rows: int = 0
    #: The dedup index of the last finished run, when this run only appends units to it
    #: (`dedup_index.DedupIndex.open`): the decision is then made over the new records alone.
    index: DedupIndex | None = None
    #: This run's staged index listing, made current by `commit_index` once the units are complete.
    index_pending: Path | None = None

    def mark_complete(self, num_bands: int) -> None:
        """After a finished run: each processed unit's folder lists its part files, so the
        next run takes them as they are, and holds their dedup keys (UNIT_KEYS); a cached
        unit's unusable UNIT_KEYS file is written again."""
        if self.folders is None:
            return
        for unit in self.todo:
            folder = Path(self.folders[unit.index])
            _complete_unit(folder, {"unit": unit.to_row(), "parts": sorted(path.name for path in folder.glob("part-*.parquet"))},
                           num_bands)
        for folder in map(Path, sorted(self.stale_keys)):
            # A cache: a unit whose key file cannot be written now gives its keys from its
            # part files again next time, and the run still finishes. The row counts are
            # written again too: a unit listed before they were recorded would otherwise be
            # found stale on every run.
            try:
                _complete_unit(folder, json.loads((folder / UNIT_COMPLETE).read_text(encoding="utf-8")), num_bands)
            except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as error:
                logger.warning("could not write the keys of %s again: %s", folder, error)

    def commit_index(self) -> None:
        """After `mark_complete`: the index of this run's decision becomes the one the next
        run extends."""
        if self.index_pending is not None:
            dedup_index.commit(self.index_pending)
            self.index_pending = None

    def remove_unused(self) -> None:
        """Remove the part folders of units this run did not have: a removed source, a
        changed file, other parameters or code. Their records are in no output any more."""
        if self.parts_dir is None or not self.parts_dir.is_dir():
            return
        used = set(self.fingerprints.values())
        for folder in self.parts_dir.iterdir():
            if folder.is_dir() and folder.name not in used and folder.name != DEDUP_INDEX_DIR:
                shutil.rmtree(folder, ignore_errors=True)


def _complete_unit(folder: Path, listed: dict, num_bands: int) -> None:
    """Write the unit's UNIT_KEYS file from the part files `listed["parts"]` (one row group per
    part, in that order, a part read at a time), then UNIT_COMPLETE: `listed` with the parts'
    row counts and the key file's SHA-256."""
    rows = []
    with atomic_path(folder / UNIT_KEYS) as temp, pq.ParquetWriter(temp, unit_keys_schema(num_bands)) as writer:
        for name in listed["parts"]:
            keys = _keys_of(pq.read_table(folder / name, columns=PART_KEY_COLUMNS), num_bands, reused=False)
            ids = keys.column("id").combine_chunks()
            has_id = ids.is_valid().to_numpy(zero_copy_only=False)
            buckets = np.zeros(len(ids), dtype=np.int32)
            buckets[has_id] = id_buckets(ids.filter(ids.is_valid()))
            writer.write_table(keys.append_column("id_bucket", pa.array(buckets, pa.int32(), mask=~has_id)),
                               row_group_size=max(1, keys.num_rows))
            rows.append(keys.num_rows)
        writer.close()
        keys_sha256 = _file_sha256(temp)
    with atomic_path(folder / UNIT_COMPLETE) as temp:
        temp.write_text(json.dumps({**listed, "rows": rows, "keys_sha256": keys_sha256}), encoding="utf-8")


def plan_units(units: list[InputUnit], params: CurationParams, batch_size: int, parts_dir: Path | None) -> UnitPlan:
    """Without `parts_dir`, every unit is processed (part files in the run's resume folder).
    With it, each unit has a folder `<parts_dir>/<unit_fingerprint>/`: a complete one (an
    earlier finished run wrote UNIT_COMPLETE) gives its part files as they are, every other
    unit is processed into its folder (a stopped run's part files there are resumed).

    Why this gives a full run's outputs: the steps are per record, so a unit's processed rows
    depend only on what its fingerprint covers; deduplication and settling then run over the
    keys and part files of all units, old and new, in the same input order. A new source's
    near-duplicate of a record already kept is rejected, and a removed source's records are
    gone along with its folder (`remove_unused`)."""
    if parts_dir is None:
        return UnitPlan(list(units))
    parts_dir = Path(os.path.abspath(parts_dir))
    plan = UnitPlan([], folders={}, parts_dir=parts_dir)
    for unit in units:
        plan.fingerprints[unit.index] = fingerprint = unit_fingerprint(unit, params, batch_size)
        folder = parts_dir / fingerprint
        listed = _complete_parts(folder)
        if listed is not None:
            plan.cached.append(unit)
            plan.cached_parts.extend(str(folder / name) for name in listed[0])
            plan.cached_rows += listed[1]
        else:
            folder.mkdir(parents=True, exist_ok=True)
            # Settled rows of a stopped run: its parts may be cut elsewhere this time (Ray's
            # batch boundaries differ from run to run), and a part's verdict digest does not
            # say which rows it covered. Only a complete unit's settled rows are reused.
            shutil.rmtree(folder / SETTLED_DIR, ignore_errors=True)
            plan.todo.append(unit)
            plan.folders[unit.index] = str(folder)
    plan.index = DedupIndex.open(parts_dir / DEDUP_INDEX_DIR, [(unit.index, plan.fingerprints[unit.index]) for unit in plan.cached],
                                 [unit.index for unit in plan.todo])
    return plan


def _complete_parts(folder: Path) -> tuple[list[str], int] | None:
    """(the part files a complete unit folder lists, their rows), or None (incomplete, missing,
    damaged): each listed part must open as Parquet with the row count UNIT_COMPLETE records
    (a footer read each), so a truncated part makes the unit be processed again instead of
    failing a later run that reads it."""
    try:
        listed = json.loads((folder / UNIT_COMPLETE).read_text(encoding="utf-8"))
        names, rows = listed["parts"], listed.get("rows")
        counts = [pq.read_metadata(folder / name).num_rows for name in names]
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    return (names, sum(counts)) if rows is None or counts == rows else None


class VerifiedPairs:
    """Incremental curation's memory of verified candidate pairs: `<parts_dir>/PAIRS_FILE`
    holds (anchor order, member order, similarity) of every pair the last run verified. A pair
    whose two records both belong to units taken as they are (same file content, position,
    parameters and code, so the same texts at the same order keys) has the same similarity,
    so only the other pairs are verified again: those with a record of a new or changed unit.
    Without a parts folder, `verifier` returns `verify` itself.

    The decision verifies one range of anchor buckets at a time (`dedup.decide_duplicates`),
    so the file is kept sorted by the anchor's bucket: each range reads only its own rows of
    the last run's file, and this run's answers are appended range by range to the next
    file, which `save` puts in place. Memory: one range's pairs."""

    def __init__(self, plan: UnitPlan):
        self.plan = plan
        self.path = plan.parts_dir / PAIRS_FILE if plan.parts_dir is not None else None
        self.reused = 0
        self._writer: pq.ParquetWriter | None = None

    def verifier(self, verify):
        if self.path is None:
            return verify
        return _Remembered(self, verify)

    def saved_among(self, anchor: np.ndarray, member: np.ndarray):
        """The saved pairs among (anchor, member), as a DataFrame of (a, m, s, i: the pair's
        position), and the mask of the pairs to verify."""
        import pandas as pd

        known, saved_with = self._read(anchor)
        # A unit taken as it is this run, with the fingerprint it had when the pairs were
        # saved: the same texts at the same order keys.
        cached_units = np.array(sorted(unit.index for unit in self.plan.cached
                                       if saved_with.get(unit.index) == self.plan.fingerprints[unit.index]), dtype=np.int64)
        both = np.isin(anchor >> ITEM_BITS, cached_units) & np.isin(member >> ITEM_BITS, cached_units)
        asked = pd.DataFrame({"a": anchor[both], "m": member[both], "i": np.flatnonzero(both)})
        hits = asked.merge(pd.DataFrame({"a": known[0], "m": known[1], "s": known[2]}), on=["a", "m"], how="inner")
        todo = np.ones(len(anchor), dtype=bool)
        todo[hits["i"].to_numpy()] = False
        return hits, todo

    def _read(self, anchor: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], dict[int, str]]:
        """(anchor, member, similarity) arrays of the saved pairs in the buckets of `anchor`,
        and the unit fingerprints they were saved with."""
        buckets = bucket_of(anchor)
        try:
            saved_with = json.loads(pq.read_schema(self.path).metadata[b"unit_fingerprints"])
            table = pq.read_table(self.path, filters=[("bucket", ">=", int(buckets.min())), ("bucket", "<=", int(buckets.max()))])
            return (tuple(table.column(name).to_numpy() for name in ("anchor", "member", "similarity")),
                    {int(index): fingerprint for index, fingerprint in saved_with.items()})
        except (OSError, pa.ArrowException, KeyError, TypeError, ValueError):  # none yet, or damaged: verify everything
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)), {}

    def record(self, anchor: np.ndarray, member: np.ndarray, similarity: np.ndarray) -> None:
        buckets = bucket_of(anchor)
        table = pa.table({"bucket": buckets, "anchor": anchor, "member": member, "similarity": similarity}, schema=self._schema())
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._partial(), self._schema())
        self._writer.write_table(table.take(np.argsort(buckets, kind="stable")))

    def _schema(self) -> pa.Schema:
        return VERIFIED_PAIRS_SCHEMA.with_metadata({"unit_fingerprints": json.dumps(self.plan.fingerprints)})

    def _partial(self) -> Path:
        return self.path.with_name(PAIRS_FILE + ".partial")

    def abandon(self) -> None:
        """After a failed decision: close and remove this run's partial file (the last run's
        file stays for the next run)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.path is not None:
            self._partial().unlink(missing_ok=True)

    def save(self) -> None:
        """Keep this run's verified pairs for the next run (none verified: nothing kept), with
        the fingerprint of every unit, so a pair is reused only between units that are the
        same then and now (a failed run may save pairs whose order keys a later run gives to
        other records)."""
        if self.path is None:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._partial(), self._schema())
        self._writer.close()
        self._writer = None
        os.replace(self._partial(), self.path)


class _Remembered:
    """`VerifiedPairs.verifier`: the pairs saved by the last run are answered from its file,
    the others by `verify` (told of them first when it has `expect`). Every range reaches
    `verify`, with no pairs when all were saved, so its ranges are the decision's ranges."""

    def __init__(self, pairs: VerifiedPairs, verify) -> None:
        self.pairs, self.verify = pairs, verify
        if hasattr(verify, "expect"):
            self.expect = self._expect

    def _expect(self, anchor: np.ndarray, member: np.ndarray) -> None:
        _, todo = self.pairs.saved_among(anchor, member)
        self.verify.expect(anchor[todo], member[todo])

    def __call__(self, anchor: np.ndarray, member: np.ndarray):
        return next(self.map([(anchor, member)]))

    def map(self, ranges):
        """(anchor, member, similarity) of each range, in order: `verify` answers the pairs
        the saved file does not, through `dedup.verify_each` (several ranges at once where it can)."""
        saved = collections.deque()

        def to_verify():
            for anchor, member in ranges:
                hits, todo = self.pairs.saved_among(anchor, member)
                self.pairs.reused += len(hits)
                saved.append(hits)
                yield anchor[todo], member[todo]

        for _, got in verify_each(self.verify, to_verify()):
            hits = saved.popleft()
            answered = (np.concatenate([hits["a"].to_numpy(), np.asarray(got[0], np.int64)]),
                        np.concatenate([hits["m"].to_numpy(), np.asarray(got[1], np.int64)]),
                        np.concatenate([hits["s"].to_numpy(), np.asarray(got[2], np.float64)]))
            self.pairs.record(*answered)
            yield answered


@dataclass(frozen=True)
class _WorkFolders:
    staging: Path
    steps: Path  # processed part files (`part_schema`), kept until the run finishes
    quarantine: Path  # quarantine fragments, one per part
    plan: UnitPlan

    def written(self) -> list[Path]:
        """The part files in this run's folders now (a stopped run's, before any task runs)."""
        folders = [self.steps, *(Path(f) for f in (self.plan.folders or {}).values())]
        return [path for folder in folders for path in folder.glob("part-*.parquet")]

    def parts(self) -> list[str]:
        """Every part file of the run, new and taken from earlier runs, in input order (a
        part's name is its first order key)."""
        return sorted([*map(str, self.written()), *self.plan.cached_parts], key=lambda path: Path(path).name)

    def uppers(self, parts: list[str]) -> list[int | None]:
        """Per part (in input order): the first order key after it, for incremental curation's
        kept settled rows (`settle_part`); None for every part of a run without a parts folder."""
        if self.plan.folders is None:
            return [None] * len(parts)
        firsts = [int(Path(part).stem.split("-")[1]) for part in parts]
        return [*firsts[1:], np.iinfo(np.int64).max][:len(parts)]

    def keep_only(self, names: set[str]) -> None:
        """Remove part files this run did not make or reuse: a stopped run's parts cut
        into other batches (by an earlier version's batching, or a different batch size)."""
        for path in self.written():
            if path.name not in names:
                path.unlink()


def _collect_cached(work: _WorkFolders, keys: KeyStore, progress: _Progress, num_bands: int) -> None:
    """The keys of the units taken from earlier runs, a part at a time: from each unit's
    UNIT_KEYS file, or from the part file's key columns where that file is missing, does not
    match what the unit lists (parts and their row counts) or cannot be read."""
    if work.plan.index is not None:
        # The decision extends the index: the earlier units' keys are in it, not needed here.
        progress.cached_records += work.plan.cached_rows
        return
    by_folder: dict[Path, list[str]] = {}
    for part in work.plan.cached_parts:
        by_folder.setdefault(Path(part).parent, []).append(part)
    for folder, parts in by_folder.items():
        unit_keys = _unit_keys(folder, parts, num_bands)
        for index, part in enumerate(parts):
            table = None
            if unit_keys is not None:
                try:
                    table = unit_keys.read_row_group(index)
                except (OSError, pa.ArrowException):
                    table = None
            if table is None:
                work.plan.stale_keys.add(str(folder))
                table = _keys_of(pq.read_table(part, columns=PART_KEY_COLUMNS), num_bands, reused=False)
            _collect(table, keys, progress)
            progress.cached_records += table.num_rows


def _unit_keys(folder: Path, parts: list[str], num_bands: int) -> pq.ParquetFile | None:
    """The unit's UNIT_KEYS file when it is the file written (its SHA-256 in UNIT_COMPLETE:
    Parquet checks no page by default, so a flipped bit would read back as other keys and
    change the decisions) and holds one row group per listed part with that part's row count
    (UNIT_COMPLETE's `rows`), else None."""
    try:
        listed = json.loads((folder / UNIT_COMPLETE).read_text(encoding="utf-8"))
        if _file_sha256(folder / UNIT_KEYS) != listed["keys_sha256"]:
            return None
        file = pq.ParquetFile(folder / UNIT_KEYS)
        metadata = file.metadata
        matches = (file.schema_arrow.equals(unit_keys_schema(num_bands))
                   and listed["parts"] == [Path(part).name for part in parts]
                   and listed["rows"] == [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
        return file if matches else None
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError):
        return None


def _key_store(work: _WorkFolders, params: CurationParams) -> KeyStore:
    """The driver's dedup keys, spilled under the staging folder (removed with it) and decided
    within DECIDE_MEMORY_BYTES."""
    return KeyStore(params.dedup.num_bands, work.staging / WORK_DIR / "keys", DECIDE_MEMORY_BYTES)


def _work_folders(staging: Path, steps_dir: Path, plan: UnitPlan) -> _WorkFolders:
    work = _WorkFolders(staging, steps_dir, staging / WORK_DIR / "quarantine", plan)
    for folder in (work.quarantine, staging / "cleaned.parquet", staging / "rejected.parquet"):
        folder.mkdir(parents=True)
    return work


def _run_locally(units: list[InputUnit], params: CurationParams, work: _WorkFolders, batch_size: int,
                 report: ProgressCallback):
    """The three phases in this process, one batch at a time: the same task functions as on
    Ray, so the same part files, decisions and outputs."""
    seconds = {}
    started = time.perf_counter()
    keys, progress = _key_store(work, params), _Progress()
    _collect_cached(work, keys, progress, params.dedup.num_bands)
    params_blob = pickle.dumps(params)
    tasks = plan_tasks(units, slice_units=_reporting(slice_here, report))
    report("read and steps", 0, len(tasks))
    for done, task in enumerate(tasks, 1):
        for numbered in _task_batches(task, batch_size, by_unit=work.plan.folders is not None):
            _collect(_process_batch(numbered, params_blob, str(work.steps), work.plan.folders), keys, progress)
        report("read and steps", done, len(tasks))
    work.keep_only(progress.part_names)
    parts = work.parts()
    seconds["read_and_steps"] = time.perf_counter() - started

    started = time.perf_counter()
    report("decide", 0, 0)
    decisions, pairs = _decide(keys, params, work.plan, _pair_verifier(work, parts, params, keys))
    del keys  # the runs it holds in memory are not needed to settle
    seconds["dedup"] = time.perf_counter() - started

    started = time.perf_counter()
    stats, digest = CurationStats(), KeptDigest()
    report("settle", 0, len(parts))
    for done, (part, upper) in enumerate(zip(parts, work.uppers(parts)), 1):
        part_stats, part_digest = settle_part(part, decisions, str(work.staging), str(work.quarantine), upper)
        stats.merge(part_stats)
        digest.merge(part_digest)
        report("settle", done, len(parts))
    seconds["settle"] = time.perf_counter() - started
    return stats, digest, seconds, {**decisions.summary, "pairs_remembered": pairs.reused, "resumed_records": progress.reused_records,
                                    "cached_records": progress.cached_records}


def _decide(keys: KeyStore, params: CurationParams, plan: UnitPlan, verify) -> tuple[DuplicateDecisions, VerifiedPairs]:
    """Phase 2 for both executors: the corpus-wide decisions. Incremental curation extends
    the last run's dedup index when this run only appends units (`dedup_index`), else
    decides over every key, remembering the pairs an earlier run verified; either way it
    stages the index of this decision for the next run."""
    pairs = VerifiedPairs(plan)
    # Nothing new (the same units as the index's): its verdicts are extended by nothing, and
    # the index stays as it is rather than gaining an empty generation on every such run.
    stays = plan.index is not None and not plan.todo
    writer = IndexWriter(plan.parts_dir / DEDUP_INDEX_DIR) if plan.parts_dir is not None and not stays else None
    try:
        if plan.index is not None:
            decisions = extend_decisions(plan.index, keys, params.dedup.threshold, verify, lambda orders: _cached_ids(plan, orders),
                                         writer)
        else:
            decisions = decide_duplicates(keys, params.dedup.threshold, pairs.verifier(verify), index=writer)
            pairs.save()
        decisions.summary["index_extended"] = int(plan.index is not None)
        if writer is not None:
            earlier = plan.index.listing["generations"] if plan.index is not None else []
            plan.index_pending = writer.stage(sorted(plan.fingerprints.items()), earlier)
    except BaseException:
        pairs.abandon()
        if writer is not None:
            writer.abandon()
        raise
    return decisions, pairs


def _cached_ids(plan: UnitPlan, orders: np.ndarray) -> list[str]:
    """The ids of records (orders, int64, sorted) of units taken from earlier runs, read from
    their part files: `dedup_index.extend_decisions` asks for those that become the kept
    record of a cluster. Raises ValueError for an order that is in no part file."""
    found: dict[int, str] = {}
    wanted = set(orders.tolist())
    parts = sorted(plan.cached_parts, key=part_first_order)
    firsts = np.array([part_first_order(part) for part in parts], dtype=np.int64)
    for at in np.unique(np.searchsorted(firsts, orders, side="right") - 1):
        if at < 0:
            continue
        table = pq.read_table(parts[at], columns=["order", "id"])
        hit = np.isin(table.column("order").to_numpy(), orders)
        found.update(zip(table.column("order").to_numpy()[hit].tolist(), table.column("id").filter(pa.array(hit)).to_pylist()))
    missing = wanted - found.keys()
    if missing:
        raise ValueError(f"{len(missing)} kept record(s) of a duplicate cluster are in no part file (e.g. order {min(missing)})")
    return [found[order] for order in orders.tolist()]


def _task_batches(task: list[InputSlice], batch_size: int, by_unit: bool = False) -> Iterator[list[tuple[FileItem, int]]]:
    """The items of a task's slices as (item, order key) in batches of `batch_size`, across
    slice and file boundaries: ten thousand small files make
    ten parts, not ten thousand. `by_unit`: every unit starts a new batch (incremental
    curation: a unit's batches, and so its part files, do not depend on the units before it)."""
    batch: list[tuple[FileItem, int]] = []
    unit = None
    for piece in task:
        if by_unit and batch and piece.unit.index != unit:
            yield batch
            batch = []
        unit = piece.unit.index
        for order, item in piece.numbered_items():
            batch.append((item, order))
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


#: Settle tasks per worker: a few, so that parts of uneven size (a unit's last part is
#: short) still even out between the workers.
SETTLE_TASKS_PER_WORKER = 4


def _run_on_ray(units: list[InputUnit], params: CurationParams, work: _WorkFolders, workers: int, batch_size: int,
                report: ProgressCallback):
    import ray

    seconds = {}

    # 1. read + steps: one Ray task per planned task (`inputs.plan_tasks`: about 1 MiB of
    # input, a slice of a large file or small files together), which reads its slices and runs
    # the steps on them batch by batch, `workers` at a time; each worker process loads the
    # steps' models once and takes task after task. Reading in separate tasks that handed
    # records to the steps tasks through the object store cost 28 of 175 CPU seconds of a
    # 2-worker run of the 40 MiB benchmark corpus (README, "Reading where the steps run"), and
    # Ray Data's executor, which ran this phase until then, another 10 or so on the driver and
    # in its two actors (README, "Plain Ray tasks"). SPREAD: over a cluster's nodes, as Ray
    # Data's map tasks were, rather than filling the driver's node first.
    started = time.perf_counter()
    keys, progress = _key_store(work, params), _Progress()
    _collect_cached(work, keys, progress, params.dedup.num_bands)
    process = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_read_and_process)
    shared = {"batch_size": batch_size, "params_blob": ray.put(pickle.dumps(params)), "steps_dir": str(work.steps),
              "unit_folders": work.plan.folders}
    # Planning reads each large JSONL file once to count its newlines (1 TiB of JSONL: about
    # 18 minutes at 1 GB/s on one driver): in tasks, one a file, the driver adding up the plan.
    tasks = plan_tasks(units, slice_units=_reporting(_ray_slicer(workers), report))
    submissions = ((lambda task=task: process.remote(encode_task(task), **shared)) for task in tasks)
    report("read and steps", 0, len(tasks))
    # Results are taken in task order (the spilled keys, and so a run's staging, do not depend
    # on which worker was faster); finished tasks wait while an earlier one runs, up to twice
    # `workers`, and the workers go on meanwhile.
    for done, task_keys in enumerate(_in_flight(submissions, workers, window=2 * workers), 1):
        _collect(task_keys, keys, progress)
        report("read and steps", done, len(tasks))
    work.keep_only(progress.part_names)
    parts = work.parts()
    seconds["read_and_steps"] = time.perf_counter() - started

    # 2. corpus-wide decisions, verifying candidate pairs where the texts are.
    started = time.perf_counter()
    report("decide", 0, 0)
    decisions, pairs = _decide(keys, params, work.plan, _pair_verifier(work, parts, params, keys, workers))
    del keys  # the runs it holds in memory are not needed to settle
    seconds["dedup"] = time.perf_counter() - started

    # 3. settle each part with the decisions: plain tasks of several parts each. A part
    # settles in ~20 ms; as one Ray Data task per part (until 2026-12-02), the executor's per-task overhead
    # made this phase slower on two workers (8.1 s) than in one process (2.9 s) on the
    # 10 MiB benchmark corpus.
    started = time.perf_counter()
    stats, digest = CurationStats(), KeptDigest()
    report("settle", 0, len(parts))
    if parts:
        settle = ray.remote(num_cpus=1)(_settle_parts)
        decisions_ref = ray.put(decisions)
        jobs = list(zip(parts, work.uppers(parts)))
        groups = [jobs[i::SETTLE_TASKS_PER_WORKER * workers] for i in range(min(len(jobs), SETTLE_TASKS_PER_WORKER * workers))]
        # At most `workers` at once, as in the other phases (a cluster may have more CPUs).
        submissions = (lambda group=group: settle.remote(group, decisions_ref, str(work.staging), str(work.quarantine))
                       for group in groups)
        done = 0
        for settled in _in_flight(submissions, workers):
            for part_stats, part_digest in settled:
                stats.merge(part_stats)
                digest.merge(part_digest)
            done += len(settled)
            report("settle", done, len(parts))
    seconds["settle"] = time.perf_counter() - started
    return stats, digest, seconds, {**decisions.summary, "pairs_remembered": pairs.reused, "resumed_records": progress.reused_records,
                                    "cached_records": progress.cached_records}


def _finish_outputs(staging: Path, work: _WorkFolders) -> None:
    """An empty part file where no part had rows (readers need a schema even with none), and
    the quarantine fragments joined in input order, a file read in slices listing at most
    MAX_QUARANTINE_PER_FILE lines in all (`fold_file_quarantine`), as a file read whole does."""
    for name, schema in (("cleaned.parquet", CLEANED_SCHEMA), ("rejected.parquet", REJECTED_SCHEMA)):
        if not any((staging / name).iterdir()):
            pq.write_table(schema.empty_table(), staging / name / f"part-{0:020d}.parquet", compression="zstd")

    def lines() -> Iterator[bytes]:
        for fragment in sorted(work.quarantine.iterdir()):
            with open(fragment, "rb") as handle:
                yield from handle

    with atomic_path(staging / "quarantine.jsonl") as temp, open(temp, "wb") as combined:
        combined.writelines(fold_file_quarantine(lines()))


# --- tasks (run on Ray workers; plain functions of Arrow tables) ----------------------------

@lru_cache(maxsize=2)
def _pipeline(params_blob: bytes) -> CurationPipeline:
    """One pipeline (language models, OpenCC, redactor) per worker process and parameters:
    worker processes are reused from task to task."""
    return CurationPipeline(pickle.loads(params_blob))


def encode_task(task: list[InputSlice]) -> str:
    """A planned task as the JSON `_read_and_process` takes (a Ray task's argument)."""
    return json.dumps([piece.to_row() for piece in task])


def _read_and_process(encoded: str, batch_size: int, params_blob: bytes, steps_dir: str,
                      unit_folders: dict[int, str] | None = None) -> pa.Table:
    """Read one task (`encode_task`: the JSON of its slices) and run the steps on its items
    batch by batch (`_process_batch`); return the keys of all its batches (`keys_schema`)."""
    task = [InputSlice.from_row(row) for row in json.loads(encoded)]
    tables = [_process_batch(numbered, params_blob, steps_dir, unit_folders)
              for numbered in _task_batches(task, batch_size, by_unit=unit_folders is not None)]
    if not tables:  # a task whose slices hold no items (a file emptied since planning)
        return keys_schema(_pipeline(params_blob).hasher.num_bands).empty_table()
    return pa.concat_tables(tables)


def part_name(first_order: int) -> str:
    """The part file of the batch whose first order key is `first_order`."""
    return f"part-{first_order:020d}.parquet"


def part_schema(num_bands: int) -> pa.Schema:
    """A part file: processed rows (`PROCESSED_SCHEMA`) with their dedup keys (`keys_schema`:
    zeros for the records that are not candidates), so a resumed run reads the keys back
    instead of running the steps again."""
    keys = keys_schema(num_bands)
    return pa.schema(list(PROCESSED_SCHEMA) + [keys.field("exact"), keys.field("bands")])


def _process_batch(numbered: list[tuple[FileItem, int]], params_blob: bytes, steps_dir: str,
                   unit_folders: dict[int, str] | None = None) -> pa.Table:
    """The per-record steps of one batch of (item, order key): its processed rows and dedup
    keys go to a part file named by its first order key, its keys back to the driver
    (`keys_schema`). A complete part file of the same records from a stopped run is read
    instead (`reused` true). `unit_folders` (incremental curation, whose batches never span
    units): the part file goes to its unit's own folder."""
    pipeline = _pipeline(params_blob)
    num_bands = pipeline.hasher.num_bands
    orders = np.fromiter((order for _, order in numbered), dtype=np.int64, count=len(numbered))
    if not len(orders):
        return _keys_of(part_schema(num_bands).empty_table(), num_bands, reused=False)
    folder = steps_dir if unit_folders is None else unit_folders[int(orders[0] >> ITEM_BITS)]
    path = Path(folder) / part_name(int(orders[0]))
    if path.exists():  # written whole or not at all (rename below), unless damaged since
        try:
            done = pq.read_table(path, columns=PART_KEY_COLUMNS)
        except (OSError, pa.ArrowException):
            done = None  # processed again, and replaced below
        if done is not None and np.array_equal(done.column("order").to_numpy(), orders):
            return _keys_of(done, num_bands, reused=True)
    rows = pipeline.process_batch(numbered)
    exact = np.zeros(len(rows), dtype=f"S{EXACT_KEY_BYTES}")
    bands = np.zeros((len(rows), num_bands), dtype=np.uint64)
    for index, row in enumerate(rows):
        if row.get("candidate"):
            exact[index], bands[index] = row["exact"], row["bands"]
        for name in DEDUP_KEY_FIELDS:
            row.pop(name, None)
    table = pa.Table.from_pylist(rows, schema=PROCESSED_SCHEMA)
    table = table.append_column("exact", exact_key_array(exact))
    table = table.append_column("bands", pa.FixedSizeListArray.from_arrays(pa.array(bands.ravel(), pa.uint64()), num_bands))
    with atomic_path(path) as temp:
        pq.write_table(table.cast(part_schema(num_bands)), temp)
    return _keys_of(table, num_bands, reused=False)


def _keys_of(table: pa.Table, num_bands: int, reused: bool) -> pa.Table:
    """The driver's keys of a part's rows: the id only where it takes part in the duplicate-id
    decision, `candidate` false for quarantine rows."""

    ids = pc.if_else(pc.fill_null(table.column("id_check"), False), table.column("id"), pa.scalar(None, pa.string()))
    return pa.table({
        "order": table.column("order"), "id": ids, "candidate": pc.fill_null(table.column("candidate"), False),
        "exact": table.column("exact"), "bands": table.column("bands"),
        "first": pa.array(np.arange(table.num_rows) == 0), "reused": pa.array(np.full(table.num_rows, reused)),
    }, schema=keys_schema(num_bands))


@dataclass
class _Progress:
    """What phase 1 saw besides the keys: the part files of this run (by first order key)
    and how many records came from a stopped run's part files."""

    part_names: set[str] = field(default_factory=set)
    reused_records: int = 0
    #: Records of units taken from earlier runs (incremental curation).
    cached_records: int = 0


def _collect(batch: pa.Table, keys: KeyStore, progress: _Progress) -> None:
    """Add one steps task's keys (or a cached part's, with `id_bucket`) to the driver's
    collection (arrays, no object per record)."""
    orders = batch.column("order").to_numpy()
    progress.part_names.update(part_name(int(order)) for order in orders[batch.column("first").to_numpy()])
    progress.reused_records += int(batch.column("reused").to_numpy().sum())
    ids = batch.column("id").combine_chunks()
    has_id = ids.is_valid()
    present = has_id.to_numpy(zero_copy_only=False)
    buckets = pc.fill_null(batch.column("id_bucket"), 0).to_numpy()[present] if "id_bucket" in batch.column_names else None
    keys.add_ids(orders[present], ids.filter(has_id), buckets)
    candidate = batch.column("candidate").to_numpy()
    if candidate.any():
        exact = exact_keys_of(batch.column("exact"))
        bands = batch.column("bands").combine_chunks().flatten().to_numpy().reshape(len(orders), -1)
        keys.add_candidates(orders[candidate], exact[candidate], bands[candidate])


def _pair_verifier(work: _WorkFolders, parts: list[str], params: CurationParams, keys: KeyStore,
                   workers: int | None = None) -> JoinedPairVerifier:
    """The run's pair verifier: the paired records' texts joined from the part files
    (`pair_join`), spilled under the staging folder within the key store's budget. With
    `workers`, routing and comparing run as Ray tasks (the comparing of the ranges' pairs,
    hashing the short texts among them, had been half of the decision, on the driver's core)."""
    ray_mappers = ({} if workers is None else
                   {"mapper": _ray_route_mapper(workers), "compare": _ray_mapper(workers, range_similarities)})
    return JoinedPairVerifier(parts, MinHasher.from_params(params.dedup), work.staging / WORK_DIR / "verify",
                              memory_bytes=keys.held_bytes, flush_bytes=keys.flush_bytes, max_rows=keys.max_rows, **ray_mappers)


def _reporting(slice_units: SliceMapper, report: ProgressCallback) -> SliceMapper:
    """`slice_units` telling `report` how planning goes ("plan", files done, large files):
    cutting 1 TiB of JSONL reads it all once."""
    def sliced(units: list[InputUnit], target_bytes: int) -> Iterator[list[InputSlice]]:
        if units:
            report("plan", 0, len(units))
        for done, slices in enumerate(slice_units(units, target_bytes), 1):
            report("plan", done, len(units))  # before the yield: a zip takes no more after the last
            yield slices
    return sliced


def _ray_slicer(workers: int) -> SliceMapper:
    """A `inputs.SliceMapper` on Ray: `unit_slices` of each large file as a task, at most
    `workers` at once (spread over the nodes, whose reads of a shared volume or S3 add up),
    the results taken in order."""
    import ray

    remote = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(unit_slices)

    def slice_units(units: list[InputUnit], target_bytes: int) -> Iterator[list[InputSlice]]:
        return _in_flight(((lambda unit=unit: remote.remote(unit, target_bytes)) for unit in units), workers)
    return slice_units


def _ray_mapper(workers: int, function):
    """A `pair_join` mapper on Ray: one task of `function` per job (with the hasher after the
    job's own arguments), at most two per worker in flight, the results taken in order. The
    `CompareMapper` with `range_similarities` (a job: a range, tens of thousands of pairs)."""
    import ray

    task = ray.remote(num_cpus=1)(function)

    def mapper(jobs, hasher):
        hasher_ref = ray.put(hasher)
        return _in_flight(((lambda job=job: task.remote(*job, hasher_ref)) for job in jobs), 2 * workers)
    return mapper


#: Named records a routing task on Ray takes (`pair_join.route_groups`): one task per part
#: file made 511 tasks of the 40 MiB benchmark corpus, whose routing took 5.3 s on 2 workers.
ROUTE_TASK_ROWS = 32_768


def _ray_route_mapper(workers: int):
    """A `pair_join` `RouteMapper` on Ray: `_ray_mapper` of `pair_join.route_group` over
    consecutive part files' jobs grouped into about ROUTE_TASK_ROWS named records; a group's
    table holds its jobs' rows in job order, so the tables come in job order."""
    grouped = _ray_mapper(workers, route_group)
    return lambda jobs, hasher: grouped(((group,) for group in route_groups(jobs, ROUTE_TASK_ROWS)), hasher)


def _in_flight(submissions, limit: int, window: int | None = None):
    """The results of Ray tasks in the order submitted. Each submission (a callable that
    starts one task and returns its ref) is started only while fewer than `limit` of them run
    and fewer than `window` (default `limit`) are started and not yet taken: with a window
    above the limit, tasks that finish while an earlier one still runs wait for it, finished,
    and the next ones start meanwhile."""
    import ray

    window = max(window or limit, limit)
    pending = iter(submissions)
    started: collections.deque = collections.deque()  # refs in submission order, not yet taken
    running: set = set()

    def start_more() -> None:
        while len(running) < limit and len(started) < window:
            submit = next(pending, None)
            if submit is None:
                return
            ref = submit()
            started.append(ref)
            running.add(ref)

    start_more()
    while started:
        first = started[0]
        while first in running:
            finished, _ = ray.wait(list(running), num_returns=1)
            running.difference_update(finished)
            start_more()
        started.popleft()
        start_more()
        yield ray.get(first)


def _settle_parts(jobs: list[tuple[str, int | None]], decisions: DuplicateDecisions, out_dir: str,
                  quarantine_dir: str) -> list[tuple[CurationStats, KeptDigest]]:
    """Ray task: `settle_part` of each (part file, upper) of `jobs`. Safe to run again (Ray
    retries a task whose worker died): every file it writes is replaced whole."""
    return [settle_part(part, decisions, out_dir, quarantine_dir, upper) for part, upper in jobs]


def settle_part(part: str, decisions: DuplicateDecisions, out_dir: str, quarantine_dir: str,
                upper: int | None = None) -> tuple[CurationStats, KeptDigest]:
    """Apply the decisions to one processed part file: write its kept and rejected rows (part
    files of the same name) and its quarantine fragment; return its counts and digest.

    `upper` (incremental curation, a part in a unit folder): the first order key after the
    part. The settled files are then kept beside the part, under the digest of the verdicts
    on [first order, upper); when a later run has the same verdicts there, they are linked
    into its outputs instead of settled again (a hard link: no copy, and DVC finds the file's
    hash by its inode)."""
    name = Path(part).name
    kept_dir = None
    if upper is not None:
        first = int(Path(name).stem.split("-")[1])
        settled = Path(part).parent / SETTLED_DIR
        kept_dir = settled / f"{Path(name).stem}-{decisions.range_digest(first, upper)[:24]}"
        if not _settled_intact(kept_dir):
            _settle_into(part, decisions, kept_dir, settled)
        return _link_settled(kept_dir, name, Path(out_dir), Path(quarantine_dir))
    result = _settled(part, decisions, Path(out_dir) / "cleaned.parquet" / name, Path(out_dir) / "rejected.parquet" / name,
                      Path(quarantine_dir) / f"{Path(name).stem}.jsonl")
    return result.stats, result.digest


def _settled(part: str, decisions: DuplicateDecisions, cleaned: Path, rejected: Path, quarantine: Path):
    """Settle one part file and write its kept rows, rejected rows and quarantine where given
    (each only when it has rows); the CurationResult."""
    result = settle_table(pq.read_table(part, columns=PROCESSED_SCHEMA.names), decisions)
    if result.cleaned.num_rows:
        pq.write_table(result.cleaned, cleaned, compression="zstd")
    if result.rejected.num_rows:
        pq.write_table(result.rejected, rejected, compression="zstd")
    if result.quarantined:
        write_quarantine(result.quarantined, quarantine)
    return result


def _settle_into(part: str, decisions: DuplicateDecisions, kept_dir: Path, settled: Path) -> None:
    """Settle `part` into `kept_dir` (cleaned.parquet, rejected.parquet, quarantine.jsonl,
    result.json last, so a folder without it is incomplete), replacing the part's folders of
    other verdicts."""
    stem = kept_dir.name.rsplit("-", 1)[0]
    for other in settled.glob(f"{stem}-*"):
        shutil.rmtree(other, ignore_errors=True)
    kept_dir.mkdir(parents=True)
    result = _settled(part, decisions, kept_dir / "cleaned.parquet", kept_dir / "rejected.parquet", kept_dir / "quarantine.jsonl")
    files = {name: _file_sha256(kept_dir / name) for name in SETTLED_FILES if (kept_dir / name).is_file()}
    with atomic_path(kept_dir / "result.json") as temp:
        temp.write_text(json.dumps({"stats": result.stats.to_dict(), "digest": f"{result.digest.value:064x}", "files": files}),
                        encoding="utf-8")


#: What a settled folder may hold besides result.json.
SETTLED_FILES = ("cleaned.parquet", "rejected.parquet", "quarantine.jsonl")


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _settled_intact(kept_dir: Path) -> bool:
    """Whether a settled folder is complete and its files are as written. They are hard-linked
    into every output that reuses them, so an output edited in place (or a damaged parts
    folder) changes them too: a file that no longer matches its SHA-256 in result.json makes
    the part settle again instead of linking the change into the next corpus."""
    try:
        recorded = json.loads((kept_dir / "result.json").read_text(encoding="utf-8"))["files"]
        present = {name for name in SETTLED_FILES if (kept_dir / name).is_file()}
        return present == set(recorded) and all(_file_sha256(kept_dir / name) == digest for name, digest in recorded.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _link_settled(kept_dir: Path, name: str, out_dir: Path, quarantine_dir: Path) -> tuple[CurationStats, KeptDigest]:
    for kept_name, target in zip(SETTLED_FILES, (out_dir / "cleaned.parquet" / name, out_dir / "rejected.parquet" / name,
                                                 quarantine_dir / f"{Path(name).stem}.jsonl")):
        if (kept_dir / kept_name).is_file():
            _link(kept_dir / kept_name, target)
    result = json.loads((kept_dir / "result.json").read_text(encoding="utf-8"))
    return CurationStats.from_dict(result["stats"]), KeptDigest(int(result["digest"], 16))


def _link(source: Path, target: Path) -> None:
    """Hard-link `source` at `target`, replacing what is there: a settle task that Ray runs
    again after its worker died finds the links it made the first time."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)
