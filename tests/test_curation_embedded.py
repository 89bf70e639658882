"""The curation engine starting and stopping Ray itself, as `hkgai curate` and `cleaned_corpus`
do when no Ray session is running: one CPU, one worker, pairs verified through the hash
shuffle (whose aggregator actors must leave that CPU to the tasks feeding them); nothing of
Ray is left running afterwards."""

from __future__ import annotations

import time

import psutil
import pytest
import ray

from hkgai_pipelines.curation import engine
from tests.curation_corpus import KEPT, REJECTED, read_outputs, summary, write_corpus


def _ray_processes() -> list[str]:
    """Command lines of this process's descendants that belong to Ray (GCS, raylet, workers, agents)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(process.cmdline())[:120])
        except psutil.NoSuchProcess:
            continue
    return [command for command in found if "ray" in command]


@pytest.mark.slow  # Ray starts and stops inside the test: 20 to 60 s on 2 shared cores
def test_embedded_ray_with_one_worker(curation_params, tmp_path, capfd):
    assert not ray.is_initialized()
    corpus = write_corpus(tmp_path / "corpus")
    run = engine.curate_files([corpus], curation_params, tmp_path / "out", licence="x", workers=1, batch_size=2, executor="ray")
    assert summary(*read_outputs(tmp_path / "out")[:2]) == (KEPT, REJECTED)
    assert (run.workers, run.cluster) == (1, "embedded Ray")
    assert not ray.is_initialized()  # stopped at the end
    # Ray's notice that it turned token authentication on (its own stderr handler) is held back:
    # `hkgai curate` prints one line.
    assert "Token authentication" not in capfd.readouterr().err
    # ray.shutdown() has signalled its processes; give them a moment to exit.
    deadline = time.monotonic() + 15
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_processes() == []
