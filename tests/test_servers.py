"""Slow: the Dagster webserver and the MLflow server answer their real clients."""

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from hkgai_pipelines.platform import dagster_ui_command, mlflow_ui_command, prepare_home
from hkgai_pipelines.settings import HkgaiSettings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[:4]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout}s")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _post_json(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dagster_and_mlflow_servers_answer(hkgai_home):
    settings = HkgaiSettings()
    prepare_home(settings)
    env = dict(os.environ, DAGSTER_HOME=str(settings.dagster_home))
    dagster_port, mlflow_port = _free_port(), _free_port()
    processes = [
        subprocess.Popen(dagster_ui_command(dagster_port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(mlflow_ui_command(settings, mlflow_port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        _wait_for(f"http://127.0.0.1:{dagster_port}/server_info", 180, processes[0])
        graphql = None
        for _ in range(60):  # the code location loads after the server starts answering
            graphql = _post_json(f"http://127.0.0.1:{dagster_port}/graphql", {"query": "{ assetNodes { assetKey { path } groupName } }"})
            if graphql.get("data", {}).get("assetNodes"):
                break
            time.sleep(2)
        keys = {tuple(node["assetKey"]["path"]) for node in graphql["data"]["assetNodes"]}
        assert {("raw_documents",), ("cleaned_corpus",)} <= keys

        _wait_for(f"http://127.0.0.1:{mlflow_port}/health", 120, processes[1])
        search = _post_json(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search", {"max_results": 10})
        assert [e["name"] for e in search["experiments"]] == ["Default"]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
