"""The DVC stage and the asset share one implementation; `dvc repro` reproduces the corpus."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hkgai_pipelines import versioning

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_dvc_yaml_curate_stage_runs_hkgai_curate_with_params():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["curate"]["cmd"].startswith("hkgai curate --lake data/lake")
    assert stages["curate"]["params"] == ["curation"]
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    assert "curation" in params
    assert stages["ingest"]["outs"] == ["data/lake/raw"]


def test_track_and_push_records_hash_and_fills_remote(tmp_path):
    repo = tmp_path / "lake"
    (repo / "cleaned").mkdir(parents=True)
    (repo / "cleaned" / "stats.json").write_text('{"kept": 1}')
    tracked = versioning.track_and_push(repo, "cleaned", str(tmp_path / "remote"))
    assert tracked.md5.endswith(".dir")
    assert (tracked.files, tracked.size) == (1, 11)
    assert any((tmp_path / "remote").rglob("*"))
    # Same content, same hash: re-tracking is idempotent.
    assert versioning.track_and_push(repo, "cleaned", str(tmp_path / "remote")).md5 == tracked.md5


def test_dvc_failure_is_a_clear_error(tmp_path):
    (tmp_path / "lake").mkdir()
    with pytest.raises(versioning.DvcError, match="dvc add"):
        versioning.track_and_push(tmp_path / "lake", "missing-folder", str(tmp_path / "remote"))


@pytest.mark.slow
def test_dvc_repro_reproduces_the_curation(tmp_path):
    work = tmp_path / "project"
    def ignore(folder, names):
        skipped = {".venv", ".hkgai", ".git", "__pycache__", ".pytest_cache"}
        return [
            n for n in names
            if n in skipped
            or (Path(folder) == PROJECT_ROOT and n in {"data", "dvc.lock"})
            or (Path(folder).name == ".dvc" and n in {"cache", "tmp"})  # no run-cache: really run it
        ]

    shutil.copytree(PROJECT_ROOT, work, ignore=ignore)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", HKGAI_CONFIG_DIR=str(work / "configs"))
    completed = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    stats = yaml.safe_load((work / "data" / "cleaned" / "stats.json").read_text())
    assert stats["input_records"] == stats["kept"] + stats["rejected"] + stats["quarantined"]
    assert (work / "dvc.lock").exists()
