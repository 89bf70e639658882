"""The DVC stage and the asset share one implementation; `dvc repro` reproduces the corpus."""

import json
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


def test_temporary_files_left_by_a_killed_run_are_not_tracked(tmp_path):
    """A run killed between writing and renaming leaves `.<name>.<random>.tmp` (atomic_path)
    or a staging folder in the output: the hash and the remote are those of the data alone."""
    repo = tmp_path / "lake"
    (repo / "cleaned").mkdir(parents=True)
    (repo / "cleaned" / "stats.json").write_text('{"kept": 1}')
    clean = versioning.track_and_push(repo, "cleaned", str(tmp_path / "remote"))
    (repo / "cleaned" / ".cleaned.parquet.k2j3x9.tmp").write_bytes(b"half a parquet file")
    (repo / "cleaned" / ".curate-staging-123").mkdir()
    (repo / "cleaned" / ".curate-staging-123" / "stats.json").write_text('{"kept": 2}')
    dirty = versioning.track_and_push(repo, "cleaned", str(tmp_path / "remote"))
    assert (dirty.md5, dirty.files, dirty.size) == (clean.md5, 1, 11)


def test_the_current_version_is_recorded_as_cleaned_dvc(tmp_path):
    """A versioned output: each version is tracked and pushed as it is written, and
    `cleaned.dvc` then records the current one (DVC cannot track `cleaned`, a link)."""
    from hkgai_pipelines.curation.versions import OutputVersions

    repo, remote = tmp_path / "lake", str(tmp_path / "remote")
    versions = OutputVersions(repo, "cleaned")
    hashes = []
    for kept in (1, 2):
        version = versions.new_version()
        (version / "stats.json").write_text(f'{{"kept": {kept}}}')
        target = f"cleaned.versions/{version.name}"
        tracked = versioning.track_and_push(repo, target, remote)
        record = versioning.read_record(repo, target)
        versions.make_current(version, record)
        assert versioning.point(repo, "cleaned", target, record) == repo / "cleaned.dvc"
        assert not (repo / f"{target}.dvc").exists()
        record = yaml.safe_load((repo / "cleaned.dvc").read_text())["outs"][0]
        assert (record["path"], record["md5"]) == (target, tracked.md5)
        assert versioning.recorded_md5(repo, "cleaned") == tracked.md5
        hashes.append(tracked.md5)
    assert hashes[0] != hashes[1]
    status = subprocess.run([*versioning.dvc_command(), "status"], cwd=repo, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout
    # Both versions are in the remote: an older cleaned.dvc can be pulled after its folder is pruned.
    for md5 in hashes:
        assert (tmp_path / "remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    assert versioning.recorded_md5(tmp_path / "elsewhere", "cleaned") is None


def test_local_remote_inside_the_home_is_recorded_relative(tmp_path):
    """A copied or moved home pushes to its own remote, not to the original's."""
    home = tmp_path / "home"
    (home / "lake" / "cleaned").mkdir(parents=True)
    (home / "lake" / "cleaned" / "a.txt").write_text("a")
    versioning.track_and_push(home / "lake", "cleaned", str(home / "dvc-remote"))
    assert "url = ../../dvc-remote" in (home / "lake" / ".dvc" / "config").read_text()
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    before = sorted(p.relative_to(home) for p in (home / "dvc-remote").rglob("*"))
    (copy / "lake" / "cleaned" / "b.txt").write_text("b")
    # `dvc add` + `dvc push` by hand in the copy, before any asset ran there and set the remote.
    subprocess.run([*versioning.dvc_command(), "add", "--quiet", "cleaned"], cwd=copy / "lake", check=True)
    subprocess.run([*versioning.dvc_command(), "push", "--quiet"], cwd=copy / "lake", check=True)
    assert sorted(p.relative_to(home) for p in (home / "dvc-remote").rglob("*")) == before
    assert len(list((copy / "dvc-remote").rglob("*.dir"))) == 2


def test_a_remote_outside_the_home_or_on_s3_is_kept_as_given(tmp_path):
    assert versioning.remote_config_url(tmp_path / "home" / "lake", "s3://hkgai-data/dvc") == "s3://hkgai-data/dvc"
    assert versioning.remote_config_url(tmp_path / "home" / "lake", str(tmp_path / "shared")) == str(tmp_path / "shared")


def test_dvc_is_a_program_of_its_own_environment(monkeypatch, tmp_path):
    """DVC's antlr4 4.9 (hydra-core, omegaconf) must not share Dagster's interpreter."""
    command = versioning.dvc_command()
    assert not Path(command[0]).resolve().is_relative_to(Path(sys.prefix, "lib").resolve())
    completed = subprocess.run([*command, "version"], cwd=tmp_path, capture_output=True, text=True)
    assert completed.returncode == 0 and "DVC version: 3." in completed.stdout, completed.stderr
    # HKGAI_DVC overrides the lookup, as a command line.
    monkeypatch.setenv("HKGAI_DVC", f"{command[0]} --quiet")
    assert versioning.dvc_command() == [command[0], "--quiet"]
    # No DVC anywhere: a clear error saying how to get it.
    monkeypatch.delenv("HKGAI_DVC")
    monkeypatch.setattr(versioning, "tool_env_dvc", lambda: tmp_path / "missing" / "dvc")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(versioning.DvcError, match="make venv"):
        versioning.dvc_command()


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
    completed = subprocess.run([*versioning.dvc_command(), "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    stats = yaml.safe_load((work / "data" / "cleaned" / "stats.json").read_text())
    assert stats["input_records"] == stats["kept"] + stats["rejected"] + stats["quarantined"]
    assert (work / "dvc.lock").exists()


def test_a_pulled_corpus_is_made_current_by_corpus_restore(tmp_path, monkeypatch):
    """`dvc pull cleaned.dvc` into a new lake brings the version folder back but not the
    `cleaned` link or the log of published versions (a fresh-user trial): `hkgai corpus
    restore` makes the pulled version current with its DVC record."""
    from typer.testing import CliRunner

    from hkgai_pipelines.cli import app
    from hkgai_pipelines.curation.versions import OutputVersions

    repo, remote = tmp_path / "lake", str(tmp_path / "remote")
    versions = OutputVersions(repo, "cleaned")
    for kept in (1, 2):
        version = versions.new_version()
        (version / "stats.json").write_text(json.dumps({"kept": kept, "rejected": 0, "quarantined": 0}))
        target = f"cleaned.versions/{version.name}"
        versioning.track_and_push(repo, target, remote)
        record = versioning.read_record(repo, target)
        versions.make_current(version, record)
        versioning.point(repo, "cleaned", target, record)

    fresh = tmp_path / "home" / "lake"
    fresh.mkdir(parents=True)
    shutil.copytree(repo / ".dvc", fresh / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    shutil.copy(repo / "cleaned.dvc", fresh / "cleaned.dvc")
    # The local remote is recorded relative to the lake; a new checkout names it as it sees it.
    subprocess.run([*versioning.dvc_command(), "remote", "modify", "lake", "url", remote], cwd=fresh, check=True)
    monkeypatch.setenv("HKGAI_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    early = runner.invoke(app, ["corpus", "restore"])
    assert early.exit_code == 1 and "run `dvc pull cleaned.dvc`" in early.output, early.output
    subprocess.run([*versioning.dvc_command(), "pull", "cleaned.dvc"], cwd=fresh, check=True, capture_output=True)
    # A pulled folder that was then changed is not what the record says: refused, nothing current.
    pulled_stats = fresh / "cleaned.versions" / version.name / "stats.json"
    good = pulled_stats.read_bytes()
    pulled_stats.unlink()
    pulled_stats.write_text(json.dumps({"kept": 99, "rejected": 0, "quarantined": 0}))
    edited = runner.invoke(app, ["corpus", "restore"])
    assert edited.exit_code == 1 and "differs from what cleaned.dvc records (stats.json changed)" in edited.output, edited.output
    assert not (fresh / "cleaned").exists()
    # A trial: an edit in place that kept the size and the mtime passed `dvc status`.
    pulled_stats.unlink()
    pulled_stats.write_bytes(good)
    stat = pulled_stats.stat()
    subprocess.run([*versioning.dvc_command(), "status", "cleaned.dvc"], cwd=fresh, check=True, capture_output=True)
    pulled_stats.write_bytes(good.replace(b'"kept": 2', b'"kept": 9'))
    os.utime(pulled_stats, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    same_size = runner.invoke(app, ["corpus", "restore"])
    assert same_size.exit_code == 1 and "stats.json changed" in same_size.output, same_size.output
    # The advice in the refusal mends it.
    assert f"remove {pulled_stats.parent} and run `dvc pull cleaned.dvc`" in same_size.output
    shutil.rmtree(pulled_stats.parent)
    subprocess.run([*versioning.dvc_command(), "pull", "cleaned.dvc"], cwd=fresh, check=True, capture_output=True)
    assert pulled_stats.read_bytes() == good
    restored = OutputVersions(fresh, "cleaned")
    assert restored.current() is None and restored.versions() == [restored.folder / version.name]

    result = runner.invoke(app, ["corpus", "restore"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"cleaned: -> {version.name} (the version cleaned.dvc records, every file checked against its DVC listing)\n"
    assert json.loads((fresh / "cleaned" / "stats.json").read_text())["kept"] == 2
    listed = runner.invoke(app, ["corpus", "list"])
    assert listed.stdout == f"* {version.name}  published  2 kept, 0 rejected, 0 quarantined  dvc {versioning.recorded_md5(repo, 'cleaned')}\n"
    again = runner.invoke(app, ["corpus", "restore"])
    assert again.exit_code == 1 and "is current already" in again.output
