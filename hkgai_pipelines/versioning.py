"""Data versioning with DVC: track an output folder, record its hash, push to the remote.

DVC is a program here, never imported: its hydra-core/omegaconf pin antlr4-python3-runtime
4.9, which breaks Dagster's asset-selection parser, so it lives in a tool environment of its
own (`<venv>/tools/dvc`, built by `make venv` from constraints-dvc.txt) and `dvc_command()`
finds it; `HKGAI_DVC` overrides. The asset and `dvc repro` run the same binary, so both paths
produce identical `.dvc` files. The repository is the lake folder itself
(`dvc init --no-scm`): the lake is not a git repository, and the hash in `<folder>.dvc` is
what the asset metadata and MLflow record.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

#: Environment variable naming the DVC command (a path, or a command line such as
#: `/opt/dvc/bin/python -m dvc`); unset, `dvc_command()` looks for the tool environment.
DVC_ENV_VAR = "HKGAI_DVC"


class DvcError(RuntimeError):
    pass


@dataclass(frozen=True)
class TrackedData:
    path: Path
    md5: str
    files: int
    size: int
    remote: str


def tool_env_dvc() -> Path:
    """Where `make venv` (and the image) put the DVC binary: `<this venv>/tools/dvc/bin/dvc`."""
    return Path(sys.prefix) / "tools" / "dvc" / "bin" / "dvc"


def dvc_command() -> list[str]:
    """The command that runs DVC: `$HKGAI_DVC` if set, else the tool environment's binary,
    else `dvc` on the PATH.

    Raises DvcError if none of them exists, naming how to install it.
    """
    configured = os.environ.get(DVC_ENV_VAR, "").strip()
    if configured:
        return shlex.split(configured)
    if tool_env_dvc().is_file():
        return [str(tool_env_dvc())]
    on_path = shutil.which("dvc")
    if on_path:
        return [on_path]
    raise DvcError(
        f"DVC not found: no {tool_env_dvc()} and no `dvc` on PATH. Run `make venv` (it builds the DVC "
        f"tool environment from constraints-dvc.txt), or set {DVC_ENV_VAR} to a DVC executable."
    )


def _dvc(repo_dir: Path, *args: str) -> str:
    completed = subprocess.run(
        [*dvc_command(), *args],
        cwd=repo_dir, capture_output=True, text=True,
    )
    if completed.returncode != 0:
        raise DvcError(f"dvc {' '.join(args)} failed in {repo_dir} (exit {completed.returncode}): {completed.stderr.strip() or completed.stdout.strip()}")
    return completed.stdout


REMOTE_SCHEMES = ("s3://", "gs://", "azure://", "http://", "https://", "ssh://")


def remote_config_url(repo_dir: Path, remote_url: str) -> str:
    """The remote as `.dvc/config` should record it: a local remote inside the folder that holds
    the repository (HKGAI_HOME holds `lake/` and `dvc-remote/`) relative to the repository, so a
    moved or copied home pushes to its own remote and never to the original's; anything else
    as given."""
    if remote_url.startswith(REMOTE_SCHEMES):
        return remote_url
    repo_dir, remote = Path(repo_dir).resolve(), Path(remote_url).resolve()
    if remote.is_relative_to(repo_dir.parent):
        return os.path.relpath(remote, repo_dir)
    return str(remote)


#: What a tracked folder may hold that is not data: the temporary files `atomic_path` writes
#: beside an output before renaming it (`.cleaned.parquet.k2j3.tmp`), which a run killed
#: between writing and renaming leaves behind, and a curation run's staging folder. DVC must
#: never hash or push them: the corpus's hash would then depend on how the last run ended.
DVC_IGNORE = """# Written by hkgai_pipelines.versioning: temporary files and staging folders are not data.
.*.tmp
.curate-staging-*/
"""


def ensure_repo(repo_dir: Path, remote_url: str, remote_name: str = "lake") -> None:
    """A DVC repository in `repo_dir` whose default remote is `remote_url`, set on every call
    (so the config follows HKGAI_DVC_REMOTE), ignoring `DVC_IGNORE`. Raises DvcError if a DVC
    command fails."""
    repo_dir = Path(repo_dir)
    repo_dir.mkdir(parents=True, exist_ok=True)
    if not (repo_dir / ".dvc").is_dir():
        _dvc(repo_dir, "init", "--no-scm", "--quiet")
        _dvc(repo_dir, "config", "core.analytics", "false")
    ignore = repo_dir / ".dvcignore"
    if not ignore.exists() or ignore.read_text(encoding="utf-8") != DVC_IGNORE:
        ignore.write_text(DVC_IGNORE, encoding="utf-8")
    if not remote_url.startswith(REMOTE_SCHEMES):
        Path(remote_url).mkdir(parents=True, exist_ok=True)
    # DVC reads a relative path against its working directory (repo_dir) and stores it relative
    # to .dvc/config (`../../dvc-remote`).
    _dvc(repo_dir, "remote", "add", "--force", "--default", remote_name, remote_config_url(repo_dir, remote_url))


def track_and_push(repo_dir: Path, target: str, remote_url: str) -> TrackedData:
    """`dvc add` the target (a folder relative to repo_dir), then `dvc push` it.

    Raises DvcError if DVC is missing or one of its commands fails (a missing target included).
    """
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


def read_record(repo_dir: Path, target: str) -> dict:
    """The DVC record `track_and_push` wrote for `target` (`<target>.dvc`, as a dict).
    Raises DvcError when it is missing or records no output."""
    source = Path(repo_dir) / f"{target}.dvc"
    try:
        record = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise DvcError(f"no DVC record {source}: {error}") from None
    if not record.get("outs"):
        raise DvcError(f"{source} records no output")
    return record


def point(repo_dir: Path, name: str, target: str, record: dict) -> Path:
    """Make `<name>.dvc` the record of `target` (a folder relative to repo_dir; `record` as
    `read_record` gave it), its output path rewritten relative to the repository, so `dvc
    pull <name>.dvc` restores what `name` points at (a versioned output's current version,
    see `curation/versions.py`), and remove `<target>.dvc`: DVC refuses two records of one
    output. Written atomically. Returns the path of `<name>.dvc`."""
    repo_dir = Path(repo_dir)
    pointer = repo_dir / f"{name}.dvc"
    record = {**record, "outs": [{**record["outs"][0], "path": Path(target).as_posix()}, *record["outs"][1:]]}
    temporary = pointer.with_name(f".{pointer.name}.tmp")
    temporary.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    os.replace(temporary, pointer)
    (repo_dir / f"{target}.dvc").unlink(missing_ok=True)
    return pointer


def record_md5(record: dict | None) -> str | None:
    """The hash a DVC record (a `.dvc` file's content as a dict) names, or None."""
    return (((record or {}).get("outs") or [{}])[0] or {}).get("md5")


def recorded_md5(repo_dir: Path, name: str) -> str | None:
    """The hash `<name>.dvc` records, or None when there is no such record."""
    pointer = Path(repo_dir) / f"{name}.dvc"
    if not pointer.is_file():
        return None
    return record_md5(yaml.safe_load(pointer.read_text(encoding="utf-8")))


def _file_md5(path: Path) -> str:
    import hashlib

    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ignored(relpath: str) -> bool:
    """Whether DVC_IGNORE leaves `relpath` (inside a tracked folder) out of the folder's hash:
    a file pattern matches the name, a folder pattern (ending in "/") any folder on the way."""
    import fnmatch

    patterns = [line for line in DVC_IGNORE.splitlines() if line and not line.startswith("#")]
    *folders, name = relpath.split("/")
    return any(fnmatch.fnmatch(part, pattern.rstrip("/")) for pattern in patterns if pattern.endswith("/") for part in folders) \
        or any(fnmatch.fnmatch(name, pattern) for pattern in patterns if not pattern.endswith("/"))


def check_workspace_matches(repo_dir: Path, name: str) -> None:
    """Raises DvcError unless the folder `<name>.dvc` records holds exactly the bytes it records.

    DVC keeps a tracked folder's listing in its cache as `<md5>.dir`, a JSON list of {"md5",
    "relpath"} whose own md5 is the record's (DVC's cache structure:
    https://dvc.org/doc/user-guide/project-structure/internal-files). `dvc pull` brings it;
    every file of the folder is then hashed here and compared with it, and the file sets must
    be equal. Not `dvc status`: it trusts DVC's per-file state (inode, size, mtime), so an edit
    that kept size and mtime passed. Reads every file once. Raises DvcError when `repo_dir` is
    not a DVC repository, when the listing is not in the cache (the folder did not come through
    `dvc pull`), or on any difference, naming the first few."""
    import json

    repo_dir = Path(repo_dir)
    if not (repo_dir / ".dvc").is_dir():
        raise DvcError(f"{repo_dir} is not a DVC repository: nothing can check the folder {name}.dvc records")
    record = yaml.safe_load((repo_dir / f"{name}.dvc").read_text(encoding="utf-8"))["outs"][0]
    md5, folder = str(record.get("md5", "")), repo_dir / record["path"]
    listing = repo_dir / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if not md5.endswith(".dir") or not listing.is_file() or _file_md5(listing) != md5[:-len(".dir")]:
        raise DvcError(f"DVC's cache holds no listing of {md5 or 'the record'} (the folder did not come through "
                       f"`dvc pull`), so it cannot be checked: run `dvc pull {name}.dvc` in {repo_dir}")
    expected = {entry["relpath"]: entry["md5"] for entry in json.loads(listing.read_text(encoding="utf-8"))}
    found = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}
    found = {relpath: path for relpath, path in found.items() if not _ignored(relpath)}
    differences = [f"{relpath} missing" for relpath in sorted(set(expected) - set(found))]
    differences += [f"{relpath} not recorded" for relpath in sorted(set(found) - set(expected))]
    differences += [f"{relpath} changed" for relpath in sorted(set(found) & set(expected)) if _file_md5(found[relpath]) != expected[relpath]]
    if differences:
        shown = ", ".join(differences[:5]) + (f" and {len(differences) - 5} more" if len(differences) > 5 else "")
        # Not `dvc pull --force`: DVC trusts its state for a file that kept size and mtime.
        raise DvcError(f"the folder differs from what {name}.dvc records ({shown}): remove {folder} and run "
                       f"`dvc pull {name}.dvc` in {repo_dir} again")
