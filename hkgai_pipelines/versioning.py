"""Data versioning with DVC: track an output folder, record its hash, push to the remote.

DVC runs as a subprocess of this interpreter (`python -m dvc`), the same way `dvc repro`
runs outside Dagster, so both paths produce identical `.dvc` files. The repository is the
lake folder itself (`dvc init --no-scm`): the lake is not a git repository, and the hash in
`<folder>.dvc` is what the asset metadata and MLflow record.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml


class DvcError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrackedData:
    path: Path
    md5: str
    files: int
    size: int
    remote: str


def _dvc(repo_dir: Path, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo_dir, capture_output=True, text=True,
        env=None,
    )
    if completed.returncode != 0:
        raise DvcError(f"dvc {' '.join(args)} failed in {repo_dir} (exit {completed.returncode}): {completed.stderr.strip() or completed.stdout.strip()}")
    return completed.stdout


def ensure_repo(repo_dir: Path, remote_url: str, remote_name: str = "lake") -> None:
    repo_dir = Path(repo_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    if not (repo_dir / ".dvc").is_dir():
        _dvc(repo_dir, "init", "--no-scm", "--quiet")
        _dvc(repo_dir, "config", "core.analytics", "false")
    if not remote_url.startswith(("s3://", "gs://", "azure://", "http://", "https://", "ssh://")):
        Path(remote_url).mkdir(parents=True, exist_ok=True)
    _dvc(repo_dir, "remote", "add", "--force", "--default", remote_name, remote_url)


def track_and_push(repo_dir: Path, target: str, remote_url: str) -> TrackedData:
    """`dvc add` the target (a folder relative to repo_dir), then `dvc push` it."""
    repo_dir = Path(repo_dir)
    ensure_repo(repo_dir, remote_url)
    _dvc(repo_dir, "add", "--quiet", target)
    _dvc(repo_dir, "push", "--quiet", f"{target}.dvc")
    entry = yaml.safe_load((repo_dir / f"{target}.dvc").read_text())["outs"][0]
    return TrackedData(
        path=repo_dir / target,
        md5=entry["md5"],
        files=int(entry.get("nfiles", 1)),
        size=int(entry.get("size", 0)),
        remote=remote_url,
    )
