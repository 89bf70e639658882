"""A copied or moved HKGAI_HOME is self-contained: working in the copy never writes into the
original, and the copy's MLflow artifacts, model links and DVC remote resolve inside the copy.

The fault: MLflow experiments kept absolute artifact locations, `models/*/latest` were absolute
links and the lake's DVC remote an absolute path, so a copy used as home wrote its new MLflow
artifacts into the original's `mlartifacts/` and read the original's models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg
import mlflow
import pytest

from hkgai_pipelines import platform, versioning
from hkgai_pipelines.assets.evaluation import value_benchmark
from hkgai_pipelines.assets.models import publish, published_stage
from hkgai_pipelines.rag.models import REGISTERED_MODEL, _champion_dir
from hkgai_pipelines.resources import resources_for
from hkgai_pipelines.settings import HkgaiSettings


@pytest.fixture(autouse=True)
def _restore_mlflow_uris(monkeypatch):
    # The serving path sets MLflow's process-wide URIs to the home's store; undo it afterwards.
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", mlflow.tracking._tracking_service.utils._tracking_uri)
    monkeypatch.setattr(mlflow.tracking._model_registry.utils, "_registry_uri", mlflow.tracking._model_registry.utils._registry_uri)


class Home:
    """A home opened the way every entry point opens it (prepare_home, then the resources)."""

    def __init__(self, path: Path, monkeypatch) -> None:
        monkeypatch.setenv("HKGAI_HOME", str(path))
        monkeypatch.setenv("DAGSTER_HOME", str(path / "dagster"))
        monkeypatch.delenv("HKGAI_PROFILE", raising=False)
        self.path = path.resolve()
        self.settings = HkgaiSettings()
        self.instance = platform.get_instance(self.settings)
        self.resources = resources_for("local", self.settings)
        self.lake = self.resources["lake"]

    def materialize_and_publish(self, run_id: str) -> str:
        """An asset run (value_benchmark: an MLflow run with an artifact), a DVC push of new data,
        and a published training stage; returns the MLflow run's artifact URI."""
        result = dg.materialize([value_benchmark], instance=self.instance, resources=self.resources)
        assert result.success
        (self.lake.path("benchmarks") / f"{run_id}.txt").write_text(run_id)
        self.resources["dvc"].track_and_push("benchmarks")
        folder = self.lake.path("models", "base_model", "current")
        (folder / "final").mkdir(parents=True)
        (folder / "final" / "config.json").write_text(json.dumps({"run": run_id}))
        (folder / "summary.json").write_text(json.dumps({"mlflow_run_id": run_id}))
        publish(self.lake, "base_model", folder, run_id)
        client = self.resources["mlflow"].get_client()
        (run,) = client.search_runs([self.resources["mlflow"].experiment_id("hkgai-v1-data")], max_results=1, order_by=["start_time DESC"])
        return run.info.artifact_uri

    def register_champion(self) -> None:
        """A registered model version (an MLflow logged model holding the checkpoint) as champion."""
        mlflow.set_tracking_uri(self.settings.tracking_uri)  # the registry resolves models:/ through it
        client = self.resources["mlflow"].get_client()
        experiment = self.resources["mlflow"].experiment_id()
        run = client.create_run(experiment)
        model = client.create_logged_model(experiment, name="model", source_run_id=run.info.run_id)
        client.log_model_artifacts(model.model_id, str(published_stage(self.lake, "base_model")[0]))
        client.create_registered_model(REGISTERED_MODEL)
        version = client.create_model_version(REGISTERED_MODEL, f"models:/{model.model_id}", run_id=run.info.run_id, model_id=model.model_id)
        client.set_registered_model_alias(REGISTERED_MODEL, "champion", version.version)

    def close(self) -> None:
        self.instance.dispose()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: links by target, files by mtime, size and content hash."""
    entries = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            entries[relative] = ("link", os.readlink(path))
        elif path.is_file():
            info = path.stat()
            entries[relative] = ("file", info.st_mtime_ns, info.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            entries[relative] = ("dir",)
    return entries


def stored_locations(home: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(home / "mlflow.db")) as db:
        return [
            value
            for table, column in platform.MLFLOW_LOCATION_COLUMNS
            for (value,) in db.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
            if value.startswith(("file:", "/")) and "/mlruns/" not in value  # MLflow's unused Default experiment
        ]


@contextlib.contextmanager
def read_only(root: Path):
    """chmod -R a-w (which stops writes unless this runs as root; the snapshot catches those)."""
    paths = [root, *root.rglob("*")]
    modes = {p: p.lstat().st_mode for p in paths if not p.is_symlink()}
    for path, mode in modes.items():
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def copy_and_work(original: Path, copy: Path, monkeypatch, caplog, run_id: str) -> Home:
    """Copy the home, work in the copy, and check the original was not touched."""
    shutil.copytree(original, copy, symlinks=True)
    before = snapshot(original)
    with read_only(original):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hkgai_pipelines.platform"):
            home = Home(copy, monkeypatch)
        assert f"HKGAI_HOME moved from {original} to {copy}" in caplog.text
        artifact_uri = home.materialize_and_publish(run_id)
    assert snapshot(original) == before
    # The copy's new run logged its artifact into the copy.
    artifacts = Path(unquote(urlparse(artifact_uri).path))
    assert artifacts.is_relative_to(copy / "mlartifacts") and any(artifacts.rglob("*.jsonl"))
    # Every location MLflow stored, every model link and the DVC remote resolve inside the copy.
    locations = stored_locations(copy)
    assert locations and all(str(copy) in location and str(original) not in location for location in locations), locations
    for latest in copy.glob("lake/models/*/latest"):
        assert not os.readlink(latest).startswith("/")
        assert latest.resolve().is_relative_to(copy)
    assert published_stage(home.lake, "base_model")[0] == copy / "lake" / "models" / "base_model" / "runs" / run_id / "final"
    assert "url = ../../dvc-remote" in (copy / "lake" / ".dvc" / "config").read_text()
    assert json.loads((copy / platform.HOME_MARKER).read_text()) == {"path": str(copy)}
    return home


def serves_from_itself(home: Home, original: Path) -> None:
    """With the original out of the way, the copy still serves its champion (`hkgai ask`'s path)."""
    away = original.with_name(original.name + "-away")
    original.rename(away)
    try:
        model_dir, label = _champion_dir(home.settings)
        assert Path(model_dir).is_relative_to(home.path) and label == f"{REGISTERED_MODEL}/1 (champion)"
    finally:
        away.rename(original)


@pytest.mark.timeout(600)
def test_a_copied_home_writes_only_into_itself(tmp_path, monkeypatch, caplog):
    original = (tmp_path / "a" / "home").resolve()
    home = Home(original, monkeypatch)
    home.materialize_and_publish("run-a")
    home.register_champion()
    home.close()
    assert not os.readlink(original / "lake" / "models" / "base_model" / "latest").startswith("/")

    # A home made by this version (the marker names where it was).
    copy = copy_and_work(original, (tmp_path / "b" / "home").resolve(), monkeypatch, caplog, "run-b")
    serves_from_itself(copy, original)
    copy.close()

    # A home made before the fix: no marker, an absolute `latest` link, an absolute DVC remote.
    legacy = copy.path
    (legacy / platform.HOME_MARKER).unlink()
    latest = legacy / "lake" / "models" / "base_model" / "latest"
    target = latest.resolve()
    latest.unlink()
    latest.symlink_to(target, target_is_directory=True)
    subprocess.run([*versioning.dvc_command(), "remote", "add", "--force", "--default", "lake", str(legacy / "dvc-remote")],
                   cwd=legacy / "lake", check=True, capture_output=True)
    moved = copy_and_work(legacy, (tmp_path / "c" / "home").resolve(), monkeypatch, caplog, "run-c")
    serves_from_itself(moved, legacy)
    moved.close()


def test_opening_a_home_in_place_changes_nothing(tmp_path, monkeypatch):
    home = Home(tmp_path / "home", monkeypatch)
    home.close()
    before = snapshot(home.path)
    assert platform.open_home(home.settings) is None
    assert snapshot(home.path) == before


def test_relocate_rewrites_locations_on_a_path_boundary_only(tmp_path):
    store = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(store)) as db, db:
        db.execute("CREATE TABLE experiments (artifact_location TEXT)")
        db.execute("CREATE TABLE runs (artifact_uri TEXT)")
        db.executemany("INSERT INTO experiments VALUES (?)", [("file:///data/home/mlartifacts/x",), ("file:///data/home2/mlartifacts/y",), (None,)])
        db.executemany("INSERT INTO runs VALUES (?)", [("/data/home/mlartifacts/x/1/artifacts",), ("/data/home_other/z",)])
    counts = platform.relocate_mlflow_store(store, Path("/data/home"), Path("/new place/home"))
    assert counts == {"experiments.artifact_location": 1, "runs.artifact_uri": 1}
    with contextlib.closing(sqlite3.connect(store)) as db:
        assert [r[0] for r in db.execute("SELECT artifact_location FROM experiments")] == [
            "file:///new%20place/home/mlartifacts/x", "file:///data/home2/mlartifacts/y", None]
        assert [r[0] for r in db.execute("SELECT artifact_uri FROM runs")] == ["/new place/home/mlartifacts/x/1/artifacts", "/data/home_other/z"]
