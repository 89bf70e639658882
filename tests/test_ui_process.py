"""`hkgai ui` as a process: a busy port is refused before anything starts, a stop signal stops
every process the servers started, one server exiting stops the other, and the run links in
asset metadata follow --mlflow-port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from hkgai_pipelines.platform import mlflow_ui_url, port_in_use, supervise, ui_environment
from hkgai_pipelines.settings import HkgaiSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HKGAI = [sys.executable, "-m", "hkgai_pipelines.cli"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(processes, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in processes if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in processes if not _gone(p)]


def _describe(processes) -> str:
    described = []
    for process in processes:
        try:
            described.append(f"{process.pid} {' '.join(process.cmdline())[:150]}")
        except psutil.Error:
            described.append(str(process.pid))
    return "; ".join(described)


# --- a busy port ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["dagster", "mlflow"])
def test_busy_port_is_refused_before_anything_starts(which, hkgai_home):
    ports = {"dagster": _free_port(), "mlflow": _free_port()}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[which]))
        if which == "mlflow":
            holder.listen()  # a server answering there; the other case only binds the port
        started = time.monotonic()
        result = subprocess.run(
            [*HKGAI, "ui", "--dagster-port", str(ports["dagster"]), "--mlflow-port", str(ports["mlflow"])],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    # One line (whatever the terminal width) naming the port and how to choose another.
    line = next((line for line in result.stderr.splitlines() if f"port {ports[which]}" in line), None)
    assert line is not None, result.stderr
    assert "in use" in line and f"--{which}-port" in line and f"HKGAI_{which.upper()}_PORT" in line, line
    # Nothing started: not even the home was made, and the other port is still free.
    assert not hkgai_home.exists()
    other = ports["mlflow" if which == "dagster" else "dagster"]
    assert not port_in_use(other)
    assert elapsed < 30, f"refused after {elapsed:.1f}s"


def test_port_in_use_sees_bound_and_listening_sockets():
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        assert port_in_use(bound.getsockname()[1])
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert port_in_use(listening.getsockname()[1])
    assert not port_in_use(_free_port())


# --- the run links follow --mlflow-port -----------------------------------------------------


def test_mlflow_links_follow_the_mlflow_port(hkgai_home, monkeypatch):
    settings = HkgaiSettings()
    environ = {"PATH": os.environ.get("PATH", "")}
    env = ui_environment(settings, hkgai_home / "dagster", 5123, environ=environ)
    assert env["HKGAI_MLFLOW_UI_URL"] == "http://127.0.0.1:5123" == mlflow_ui_url(5123)
    assert env["DAGSTER_HOME"] == str(hkgai_home / "dagster") and env["HKGAI_HOME"] == str(settings.home_dir)
    # What the Dagster code server reads from that environment: the resource's run links.
    from hkgai_pipelines.resources import resources_for

    monkeypatch.setenv("HKGAI_MLFLOW_UI_URL", env["HKGAI_MLFLOW_UI_URL"])
    assert resources_for(settings=HkgaiSettings())["mlflow"].ui_url == "http://127.0.0.1:5123"
    # A URL the user set (a proxy, another host) is kept, whatever the port.
    for name in ("HKGAI_MLFLOW_UI_URL", "hkgai_mlflow_ui_url"):
        kept = ui_environment(settings, hkgai_home / "dagster", 5123, environ={**environ, name: "https://mlflow.example.org"})
        assert kept[name] == "https://mlflow.example.org"
        assert kept.get("HKGAI_MLFLOW_UI_URL", "https://mlflow.example.org") == "https://mlflow.example.org"


# --- stopping process trees (stand-in servers, fast) ----------------------------------------

#: A server that starts a grandchild ignoring SIGINT and SIGTERM (only SIGKILL stops it) and
#: one in a session of its own (outside the server's process group), then waits.
STUBBORN_SERVER = """
import subprocess, sys, time
stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", stubborn])
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
time.sleep(600)
"""
#: A server that leaves a grandchild behind (still in its process group) and exits with 3.
CRASHING_SERVER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
time.sleep(1.5)
sys.exit(3)
"""
SLEEPER = "import time; time.sleep(600)"


def _wait_for_descendants(process: subprocess.Popen, count: int, timeout: float = 30) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(process.pid).children(recursive=True)
        if len(children) >= count:
            return children
        time.sleep(0.05)
    raise AssertionError(f"{process.args} did not start {count} processes in {timeout}s")


def _ignores_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_stops_every_process_of_every_server(signum):
    seen: list[psutil.Process] = []
    messages: list[str] = []

    def started(processes):
        for process in processes.values():
            seen.append(psutil.Process(process.pid))
        grandchildren = _wait_for_descendants(processes["stubborn"], 2)
        seen.extend(grandchildren)
        deadline = time.monotonic() + 30
        while not any(_ignores_sigterm(p.pid) for p in grandchildren):  # its handlers are set
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(os.getpid(), signum)  # handled by supervise (main thread), as from outside

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    began = time.monotonic()
    code = supervise({"stubborn": [sys.executable, "-c", STUBBORN_SERVER], "sleeper": [sys.executable, "-c", SLEEPER]},
                     say=messages.append, stop_timeout=2.0, on_started=started)
    elapsed = time.monotonic() - began
    assert code == 0, messages
    assert len(seen) == 4
    assert not _wait_gone(seen, 0), _describe(p for p in seen if not _gone(p))
    assert messages == [f"{signum.name}: stopping stubborn and sleeper"]
    assert 2.0 <= elapsed < 15  # the stubborn grandchild was killed when the 2 s had passed
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # supervise put them back


@pytest.mark.timeout(120)
def test_a_server_that_exits_stops_the_other_and_fails():
    seen: list[psutil.Process] = []
    messages: list[str] = []

    def started(processes):
        seen.extend(psutil.Process(p.pid) for p in processes.values())
        seen.extend(_wait_for_descendants(processes["crashing"], 1))

    code = supervise({"crashing": [sys.executable, "-c", CRASHING_SERVER], "sleeper": [sys.executable, "-c", SLEEPER]},
                     say=messages.append, stop_timeout=5.0, on_started=started)
    assert code == 1
    assert messages == ["crashing exited with code 3; stopping sleeper"]
    # Its orphaned grandchild too (reparented, found through the process group).
    assert not _wait_gone(seen, 0), _describe(p for p in seen if not _gone(p))


# --- the real servers (slow) ----------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_hkgai_ui_stop_signal_stops_dagster_and_mlflow(signum, hkgai_home, tmp_path, monkeypatch):
    monkeypatch.delenv("HKGAI_MLFLOW_UI_URL", raising=False)
    dagster_port, mlflow_port = _free_port(), _free_port()
    log = tmp_path / "ui.log"
    descendants: list[psutil.Process] = []
    with log.open("wb") as output:
        ui = subprocess.Popen([*HKGAI, "ui", "--dagster-port", str(dagster_port), "--mlflow-port", str(mlflow_port)],
                              cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT)
    try:
        began = time.monotonic()
        deadline = began + 240
        urls = [f"http://127.0.0.1:{dagster_port}/server_info", f"http://127.0.0.1:{mlflow_port}/health"]
        while not all(_answers(url) for url in urls):
            assert ui.poll() is None, f"hkgai ui exited with {ui.returncode}:\n{_log_tail(log)}"
            assert time.monotonic() < deadline, f"the UIs did not answer in 240s:\n{_log_tail(log)}"
            time.sleep(1)
        up = time.monotonic() - began
        time.sleep(3)  # let dagster dev finish starting its code server
        descendants = [p for p in psutil.Process(ui.pid).children(recursive=True) if not _gone(p)]
        names = _describe(descendants)
        assert "dagster" in names and "mlflow" in names, names
        # The links the Dagster side puts in asset metadata name this MLflow port.
        dagster_dev = next(p for p in descendants if "dagster" in p.cmdline() and "dev" in p.cmdline())
        assert dagster_dev.environ()["HKGAI_MLFLOW_UI_URL"] == f"http://127.0.0.1:{mlflow_port}"
        # The registry's own address: it opens whatever MLflow workspace the browser is in.
        assert f"review models: http://127.0.0.1:{mlflow_port}/#/models/hkgai-v1 " in log.read_text()

        signalled = time.monotonic()
        ui.send_signal(signum)
        assert ui.wait(timeout=60) == 0, _log_tail(log)
        left = _wait_gone(descendants, 30)
        stopped = time.monotonic() - signalled
        assert not left, f"still running: {_describe(left)}\n{_log_tail(log)}"
        assert not port_in_use(dagster_port) and not port_in_use(mlflow_port)
        assert stopped < 30
        print(f"{signum.name}: {len(descendants)} processes up in {up:.0f}s, all gone {stopped:.1f}s after the signal")
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
        for process in descendants:  # whatever a failed test left behind
            if not _gone(process):
                process.kill()
