"""The embedded platform under HKGAI_HOME: the home itself, the persistent Dagster instance,
run monitoring, and the UI servers.

A home is self-contained: `open_home` notices a home that was moved or copied (the marker
file `.hkgai-home` names where it was last opened) and points the locations MLflow and DVC
stored into the new place, so a copy never writes into the original. The local instance's
`dagster.yaml` turns on Dagster's run monitoring with `LocalRunLauncher`, which can tell
whether a run's process is still alive; `fail_dead_runs` does the same check when `hkgai demo`
or `hkgai ui` starts, for runs no daemon was watching.

This module (with `demo.py` and `cli.py`) is the command-line side of the project; like
`definitions.py` it imports Dagster, unlike the domain subpackages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import dagster as dg
from dagster import DagsterEventType, DagsterRun, DagsterRunStatus, DefaultRunLauncher, RunsFilter
# Where dagster-k8s's K8sRunLauncher takes them from too; Dagster exports them nowhere else.
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus

from hkgai_pipelines.settings import HkgaiSettings

log = logging.getLogger(__name__)

#: First line of every `dagster.yaml` hkgai writes. A file that starts with it is rewritten
#: when hkgai's version changes (so existing homes get run monitoring); delete the line to keep
#: a hand-edited file as it is.
DAGSTER_YAML_HEADER = "# Written by hkgai (hkgai_pipelines/platform.py); delete this line to keep your own edits."

DAGSTER_YAML = f"""\
{DAGSTER_YAML_HEADER}
# The persistent local Dagster instance (SQLite under this folder).
telemetry:
  enabled: false
# Dagster's DefaultRunLauncher, which can also tell the daemon whether a run's process is alive.
run_launcher:
  module: hkgai_pipelines.platform
  class: LocalRunLauncher
# The daemon (`hkgai ui` runs it) fails a STARTED run whose process is gone (kill -9, the OOM
# killer, a reboot) instead of leaving it STARTED forever, a run that never started after
# start_timeout_seconds, and a cancellation that never finished. Nothing resumes a dead local
# worker: materializing the asset again resumes training from its newest checkpoint.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 30
# Concurrency pools: one step of a pool at a time across all runs unless a limit is set for it
# (`dagster instance concurrency set POOL N`). `cleaned_corpus` is in pool `cleaned_corpus`: a
# second materialization waits ("blocked by limit for pool") instead of curating into the same
# folder at once.
concurrency:
  pools:
    default_limit: 1
"""

#: In the home: the absolute path the home had when it was last opened.
HOME_MARKER = ".hkgai-home"
#: Run tags of the runs `hkgai demo` executes in its own process (no run launcher records it).
PID_TAG = "hkgai/pid"
HOST_TAG = "hkgai/host"


# --- the home -------------------------------------------------------------------------------


def prepare_home(settings: HkgaiSettings) -> Path:
    """Create HKGAI_HOME's folders, relocate a moved home (`open_home`), write the local Dagster
    instance config, and export DAGSTER_HOME; returns the Dagster instance folder.

    On the production profile the Dagster instance is the Helm chart's (Postgres, DAGSTER_HOME
    set by the chart) and never a folder of the lake volume. Raises RuntimeError if DAGSTER_HOME
    is unset there or lies inside HKGAI_HOME.
    """
    if settings.profile == "production":
        dagster_home = os.environ.get("DAGSTER_HOME")
        if not dagster_home:
            raise RuntimeError(
                "profile 'production' uses the Dagster instance of the Helm chart (Postgres); "
                "DAGSTER_HOME must name its folder (the chart sets /opt/dagster/dagster_home)"
            )
        if Path(dagster_home).resolve().is_relative_to(settings.home_dir):
            raise RuntimeError(
                f"DAGSTER_HOME={dagster_home} lies inside HKGAI_HOME={settings.home_dir}, the lake volume: "
                "the production Dagster instance must be kept apart from it"
            )
        settings.home_dir.mkdir(parents=True, exist_ok=True)
        open_home(settings)
        os.environ["HKGAI_HOME"] = str(settings.home_dir)
        return Path(dagster_home)
    for folder in (settings.dagster_home, settings.lake_dir, settings.mlartifacts_dir):
        folder.mkdir(parents=True, exist_ok=True)
    open_home(settings)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists() or _written_by_hkgai(config) and config.read_text(encoding="utf-8") != DAGSTER_YAML:
        config.write_text(DAGSTER_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    os.environ["HKGAI_HOME"] = str(settings.home_dir)
    return settings.dagster_home


def _written_by_hkgai(config: Path) -> bool:
    # Earlier versions began "# Written by hkgai: the persistent local Dagster instance ...".
    with config.open(encoding="utf-8") as handle:
        return handle.readline().startswith("# Written by hkgai")


def open_home(settings: HkgaiSettings) -> Path | None:
    """Make the home's stored locations point into the home, wherever it is now.

    The marker `.hkgai-home` records the absolute path the home was last opened at (a home from
    before the marker: the path its MLflow store names). When that differs from HKGAI_HOME the
    home was moved or copied, and every location recorded inside it that still names the old
    path is rewritten with a warning naming both paths: the MLflow SQLite store's artifact
    locations (MLflow has no command for this), the lake's DVC remote, absolute `latest` links.
    Without that, a copy's new MLflow runs would write their artifacts into the original.
    Returns the old path when the home had moved, else None; a home folder that does not exist
    yet, or that this user cannot write, is left alone. Concurrent processes (webserver, daemon,
    code server) serialise on a lock file beside the marker.

    Raises sqlite3.Error if the MLflow store cannot be rewritten, and versioning.DvcError if the
    DVC remote cannot be reset.
    """
    home = settings.home_dir
    # Not made yet, or read-only (an archived home, only read): nothing to rewrite.
    if not home.is_dir() or not os.access(home, os.W_OK):
        return None
    with _locked(home / f"{HOME_MARKER}.lock"):
        marker = home / HOME_MARKER
        recorded = _recorded_home(settings, marker)
        moved = recorded is not None and recorded != home
        if moved:
            log.warning("HKGAI_HOME moved from %s to %s: pointing the MLflow store, the DVC remote and the model links at the new place", recorded, home)
            if settings.mlflow_tracking_uri is None:
                counts = relocate_mlflow_store(home / "mlflow.db", recorded, home)
                log.warning("MLflow store %s: %s", home / "mlflow.db", ", ".join(f"{n} {what}" for what, n in counts.items()) or "nothing to rewrite")
            _relocate_dvc_remote(settings, recorded)
        relink_models(settings.lake_dir, recorded)
        if not marker.exists() or moved:
            marker.write_text(json.dumps({"path": str(home)}) + "\n", encoding="utf-8")
    return recorded if moved else None


@contextlib.contextmanager
def _locked(path: Path):
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _recorded_home(settings: HkgaiSettings, marker: Path) -> Path | None:
    if marker.exists():
        return Path(json.loads(marker.read_text(encoding="utf-8"))["path"])
    # A home made before the marker existed: the local MLflow store names it in the artifact
    # location of every experiment the resources created (<home>/mlartifacts/<name>).
    store = settings.home_dir / "mlflow.db"
    if settings.mlflow_tracking_uri is not None or not store.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        try:
            locations = [row[0] for row in db.execute("SELECT artifact_location FROM experiments")]
        except sqlite3.OperationalError:  # an empty database: no tables yet
            return None
    for location in locations:
        path = _uri_path(location or "")
        if path is not None and path.parent.name == "mlartifacts":
            return path.parent.parent
    return None


def _uri_path(location: str) -> Path | None:
    from urllib.parse import unquote, urlparse

    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    if location.startswith("/"):
        return Path(location)
    return None


#: Columns of the MLflow SQLite store that hold artifact locations (MLflow 3 schema).
MLFLOW_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
    ("workspaces", "default_artifact_root"),
)


def relocate_mlflow_store(store: Path, old: Path, new: Path) -> dict[str, int]:
    """Rewrite the locations under `old` in an MLflow SQLite store to the same places under
    `new`, in one transaction; returns the rows changed per `table.column`.

    Only where artifacts live changes (experiments, runs, model versions, logged models, the
    artifact location of traces); params and tags that recorded a path keep what the run saw.
    Raises sqlite3.Error if the store cannot be written.
    """
    if not store.exists():
        return {}
    old_uri, new_uri = old.as_uri(), new.as_uri()
    prefixes = [(old_uri, new_uri), (str(old), str(new))]
    counts: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(store)) as db, db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        targets = [(table, column, "1 = 1") for table, column in MLFLOW_LOCATION_COLUMNS if table in tables]
        if "trace_tags" in tables:
            targets.append(("trace_tags", "value", "key = 'mlflow.artifactLocation'"))
        for table, column, where in targets:
            changed = 0
            for before, after in prefixes:
                # Exact prefix match on a path boundary (LIKE would treat `_` in paths as a wildcard).
                changed += db.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE {where} AND "
                    f"({column} = ? OR substr({column}, 1, ?) = ?)",
                    (after, len(before) + 1, before, len(before) + 1, before + "/"),
                ).rowcount
            if changed:
                counts[f"{table}.{column}"] = changed
    return counts


def _relocate_dvc_remote(settings: HkgaiSettings, old: Path) -> None:
    from hkgai_pipelines import versioning

    config = settings.lake_dir / ".dvc" / "config"
    if settings.dvc_remote is None and config.exists() and str(old) in config.read_text(encoding="utf-8"):
        versioning.ensure_repo(settings.lake_dir, settings.dvc_remote_url)


def relink_models(lake_dir: Path, old_home: Path | None = None) -> list[Path]:
    """Make every absolute `models/<stage>/latest` link relative (`runs/<run_id>/final`); a link
    into `old_home` is first moved to the same place in this home. Returns the links changed."""
    home = lake_dir.parent
    changed = []
    for latest in sorted(lake_dir.glob("models/*/latest")):
        if not latest.is_symlink():
            continue
        target = Path(os.readlink(latest))
        if not target.is_absolute():
            continue
        if old_home is not None and target.is_relative_to(old_home):
            target = home / target.relative_to(old_home)
        if not target.is_relative_to(latest.parent):
            continue
        relative_link(latest, target)
        changed.append(latest)
    return changed


def relative_link(link: Path, target: Path) -> None:
    """Point `link` at `target` with a relative symlink, replacing it atomically."""
    staged = link.with_name(f".{link.name}.tmp")
    staged.unlink(missing_ok=True)
    staged.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
    os.replace(staged, link)


def get_instance(settings: HkgaiSettings) -> dg.DagsterInstance:
    """The Dagster instance of this home (`prepare_home` first).

    On the local profile the instance is opened under a lock file in DAGSTER_HOME: Dagster
    creates the SQLite tables of a new instance on open, checking first and creating after, so
    two processes opening a fresh home at once (`hkgai demo` and `dagster asset materialize`,
    two test workers) both tried CREATE TABLE and one failed with "table ... already exists".
    """
    dagster_home = prepare_home(settings)
    if settings.profile == "production":
        return dg.DagsterInstance.get()
    with _locked(dagster_home / ".instance.lock"):
        return dg.DagsterInstance.get()


# --- run monitoring -------------------------------------------------------------------------


def process_tags() -> dict[str, str]:
    """Tags for a run executed in this process (`execute_in_process`): which process to check."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


@dataclass(frozen=True)
class RunProcess:
    """The process that executes a run, as the instance recorded it."""

    pid: int
    #: When the instance saw the process (run creation for tagged runs, else the pid's event).
    seen_at: float
    host: str | None

    def is_alive(self) -> bool:
        """Whether the process still runs. A pid is reused once its process is gone, so a process
        that started after the instance saw this pid is another one."""
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return process.create_time() <= self.seen_at + 1.0
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:  # someone else's process with that pid: cannot tell, assume alive
            return True

    def is_local(self) -> bool:
        return self.host is None or self.host == socket.gethostname()


def run_process(instance, record) -> RunProcess | None:
    """The process of a run record: the `hkgai/pid` tag `hkgai demo` sets, else the pid of the
    first engine event that carries one (the run worker a launcher started, or the process
    `dagster asset materialize` executed it in). None if nothing recorded a pid yet."""
    run = record.dagster_run
    if PID_TAG in run.tags:
        return RunProcess(int(run.tags[PID_TAG]), record.create_timestamp.timestamp(), run.tags.get(HOST_TAG))
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data and data.metadata else None
        if pid is not None:
            return RunProcess(int(pid.value), entry.timestamp, run.tags.get(HOST_TAG))
    return None


def fail_dead_runs(instance) -> list[str]:
    """Report failed every unfinished run of this instance whose process on this machine is
    gone (killed, crashed, or the machine rebooted); returns their run ids.

    Runs `hkgai demo` executes in its own process are not launched by a run launcher, so the
    daemon's monitoring sees them only while `hkgai ui` runs; `hkgai demo` and `hkgai ui` call
    this first. A run with no recorded process, or one on another host, is left alone.
    """
    statuses = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=statuses)):
        process = run_process(instance, record)
        if process is None or not process.is_local() or process.is_alive():
            continue
        instance.report_run_failed(record.dagster_run, _dead_message(process))
        failed.append(record.dagster_run.run_id)
    return failed


def _dead_message(process: RunProcess) -> str:
    return (
        f"The process of this run (pid {process.pid} on {process.host or socket.gethostname()}) is gone: "
        "it was killed or crashed before the run finished. Marked failed by hkgai's run monitoring."
    )


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's DefaultRunLauncher (a process per run on this machine) that also tells the
    daemon's run monitoring whether a run's process is alive. The DefaultRunLauncher cannot, so
    with it monitoring never fails a STARTED run whose worker was killed."""

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {HOST_TAG: socket.gethostname()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        record = self._instance.get_run_record_by_id(run.run_id)
        process = run_process(self._instance, record) if record else None
        # Monitoring fails a run on any status but RUNNING or SUCCESS, so what cannot be told
        # from here (no pid recorded yet, another machine) must read RUNNING.
        if process is None or not process.is_local() or process.is_alive():
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, _dead_message(process))


# --- the UI servers -------------------------------------------------------------------------

#: Seconds the UI servers get to stop after SIGTERM before whatever is left of their process
#: trees is killed with SIGKILL.
UI_STOP_TIMEOUT = 10.0
#: Signals on which `hkgai ui` stops its servers and exits 0. SIGHUP too: the servers run in
#: their own sessions, so closing the terminal reaches only `hkgai ui`.
UI_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` on `host` is taken: something answers there, or a socket is bound to it
    (or to the wildcard address), so a server could not bind it."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket() as probe:
        # As the servers bind: connections of a stopped server (TIME_WAIT) do not make it busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def mlflow_ui_url(port: int) -> str:
    """The MLflow UI `hkgai ui` starts on `port`, as run links in asset metadata name it."""
    return f"http://127.0.0.1:{port}"


def ui_environment(settings: HkgaiSettings, dagster_home: Path, mlflow_port: int, environ=None) -> dict[str, str]:
    """The environment of the UI servers: this one, with the instance and home, and with
    HKGAI_MLFLOW_UI_URL naming the MLflow UI started on `mlflow_port` (so the run links the
    Dagster code server and its run workers put in asset metadata open it), unless the user
    set HKGAI_MLFLOW_UI_URL (any case, as the settings read it) to keep their own."""
    environ = dict(os.environ if environ is None else environ)
    env = dict(environ, DAGSTER_HOME=str(dagster_home), HKGAI_HOME=str(settings.home_dir))
    if not any(name.upper() == "HKGAI_MLFLOW_UI_URL" for name in environ):
        env["HKGAI_MLFLOW_UI_URL"] = mlflow_ui_url(mlflow_port)
    return env


def dagster_ui_command(port: int) -> list[str]:
    # `dagster dev` runs the webserver and the daemon (schedules, sensors) together.
    return [sys.executable, "-m", "dagster", "dev", "-m", "hkgai_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)]


def mlflow_ui_command(settings: HkgaiSettings, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", settings.tracking_uri,
        "--default-artifact-root", settings.mlartifacts_dir.as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]


def run_ui(settings: HkgaiSettings, dagster_port: int, mlflow_port: int, say=print, on_started=None) -> int:
    """Run the Dagster UI (with its daemon) and the MLflow UI until a stop signal or until one
    of them exits, after failing the runs whose process died while nothing watched them;
    returns the exit code (`supervise`). The ports are the caller's to check first."""
    dagster_home = prepare_home(settings)
    for run_id in fail_dead_runs(get_instance(settings)):
        log.warning("run %s: its process is gone; marked failed", run_id)
    servers = {
        "the Dagster UI (dagster dev)": dagster_ui_command(dagster_port),
        "the MLflow UI (mlflow server)": mlflow_ui_command(settings, mlflow_port),
    }
    return supervise(servers, ui_environment(settings, dagster_home, mlflow_port), say=say, on_started=on_started)


def supervise(servers: dict[str, list[str]], env: dict[str, str] | None = None, say=print,
              stop_timeout: float = UI_STOP_TIMEOUT, on_started=None) -> int:
    """Start each command of `servers` (name -> argv) in its own session and wait.

    On SIGTERM, SIGINT or SIGHUP every server is stopped with all it started (`stop_trees`)
    and 0 is returned; a second signal while they stop kills them at once. When a server exits
    by itself, the others are stopped the same way and 1 is returned, after a message naming
    it. Must run in the main thread (it sets signal handlers, restored on return).
    """
    received: list[int] = []

    def on_signal(signum, _frame) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in UI_STOP_SIGNALS}
    processes: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        for name, command in servers.items():
            if received:
                break
            processes[name] = subprocess.Popen(command, env=env, start_new_session=True)
        if on_started is not None and not received:
            on_started(processes)
        while not received:
            ended = next(((name, p) for name, p in processes.items() if p.poll() is not None), None)
            if ended is not None:
                name, process = ended
                others = [other for other in processes if other != name]
                say(f"{name} exited with code {process.returncode}; stopping {' and '.join(others) or 'nothing else'}")
                code = 1
                break
            time.sleep(0.2)
        else:
            say(f"{signal.Signals(received[0]).name}: stopping {' and '.join(processes) or 'nothing (nothing started yet)'}")
    finally:
        # First, whatever went wrong above: a server must never outlive `hkgai ui`.
        count = len(received)
        left = stop_trees(list(processes.values()), stop_timeout, hurry=lambda: len(received) > count)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if left:
        say(f"could not stop processes {', '.join(str(pid) for pid in left)}")
        code = 1
    return code


def _tree(roots: list[psutil.Process]) -> list[psutil.Process]:
    found = {}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found[root.pid] = root
            for child in root.children(recursive=True):
                found.setdefault(child.pid, child)
    return list(found.values())


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_members(groups: set[int]) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) in groups and process.pid != os.getpid() and _running(process):
                members.append(process)
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_trees(processes: list[subprocess.Popen], timeout: float = UI_STOP_TIMEOUT, hurry=lambda: False) -> list[int]:
    """Stop `processes` (each started with start_new_session=True, so it leads its own process
    group) with everything they started; returns the pids still running after all (none).

    The descendants are listed first: a grandchild whose parent exits is reparented and drops
    out of the tree. Each process group gets SIGTERM (`dagster dev` takes it as Ctrl-C and
    stops its webserver, daemon and code server; uvicorn under `mlflow server` shuts down
    gracefully), and so does every descendant in another group (one that started a session of
    its own, as MLflow's job runners do) and every descendant started while they stop; what
    still runs after half of `timeout` gets SIGTERM once more. Whatever still runs after
    `timeout` seconds, or as soon as `hurry()` is true, is killed with SIGKILL: the processes
    of the trees and every member left in the groups.
    """
    # A server that exited may have left processes in its group (a group outlives its leader).
    groups = {process.pid for process in processes}
    roots = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            roots.append(psutil.Process(process.pid))
    tree = _tree(roots)
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    signalled: set[int] = set()

    def terminate_outsiders() -> None:
        for member in tree:
            if member.pid in signalled:
                continue
            signalled.add(member.pid)
            with contextlib.suppress(OSError, psutil.Error):
                if os.getpgid(member.pid) not in groups:
                    member.terminate()

    terminate_outsiders()
    started = time.monotonic()
    reminded = False
    while time.monotonic() < started + timeout and not hurry():
        if not reminded and time.monotonic() > started + timeout / 2:
            # Half the time gone: a second SIGTERM cuts a slow clean-up short (Dagster's code
            # server waits on its gRPC server), which still beats SIGKILL.
            reminded = True
            for pgid in groups:
                _signal_group(pgid, signal.SIGTERM)
            signalled.clear()
        for process in processes:
            process.poll()  # reap our children, so they do not linger as zombies
        alive = [p for p in tree if _running(p)]
        if not alive:
            break
        # A server may still start processes while it stops.
        known = {p.pid for p in tree}
        tree += [p for p in _tree(alive) if p.pid not in known]
        terminate_outsiders()
        time.sleep(0.1)
    leftovers = {p.pid: p for p in _tree([p for p in tree if _running(p)]) + _group_members(groups) if _running(p)}
    if leftovers:
        log.warning("killing %d processes that did not stop in %.0fs: %s", len(leftovers), time.monotonic() - started,
                    ", ".join(str(pid) for pid in leftovers))
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        for process in leftovers.values():
            with contextlib.suppress(psutil.Error):
                process.kill()
    deadline = time.monotonic() + 5.0
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    while any(_running(p) for p in leftovers.values()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the killed ones' parents (or init) reap them
    return [pid for pid, p in leftovers.items() if _running(p)]
