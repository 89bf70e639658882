"""Versioned outputs: every curation of the lake writes a new version folder, and one atomic
step makes it current.

Layout in the lake (the path readers use, `lake/cleaned/cleaned.parquet`, is unchanged)::

    cleaned -> cleaned.versions/v20261201T150102123456Z      a relative symlink: the current version
    cleaned.versions/v20261201T150102123456Z/                 cleaned.parquet/ rejected.parquet/ quarantine.jsonl stats.json
    cleaned.versions/v20261130T...Z/                          previous versions, kept for rollback and
                                                              for readers still reading them
    cleaned.versions/.curate-staging-resume-<fingerprint>/    a stopped run's part files (engine.py)

The four outputs of a version change together: the symlink is replaced by `rename(2)` of a new
symlink over it, which POSIX makes atomic, so a reader opening `cleaned/...` sees the old
version or the new one, never a mix (the pattern of Kubernetes' atomic writer for ConfigMap
volumes, and of release folders in deployment tools). A version folder is complete before it
can become current; a run killed half-way leaves a version folder that never became current,
removed by the next `prune`. A reader that resolves the link once (`Path.resolve()`) keeps
reading the same version while a newer one is published; `prune` keeps the last
`KEEP_PREVIOUS` versions besides the current one for such readers and for rollback
(`make_current(older)`).

Plain Python, no Dagster or DVC here: `assets/corpora.py` orders the steps (curate into a new
version, DVC push, MLflow run, then `make_current`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

#: Versions kept besides the current one: rollback targets and versions a long reader (a
#: training job that resolved the link at its start) may still be reading.
KEEP_PREVIOUS = 2
#: A version folder's name: "v" and the UTC time it was created to the microsecond, so names
#: sort in creation order.
VERSION_PREFIX = "v"
#: The file a complete version always has (written last by the engine's `replace_outputs`).
COMPLETE_MARKER = "stats.json"


class PublishBusyError(RuntimeError):
    """Another process is curating or publishing into the same versions folder."""


class OutputVersions:
    """The versions of one lake output (`root/name` and `root/name.versions/`).

    `root/name` is created as a symlink on the first `make_current`; a real folder there (a
    lake written before outputs were versioned) is moved into the versions folder then.
    """

    def __init__(self, root: Path, name: str):
        self.root = Path(os.path.abspath(root))
        self.name = name
        self.link = self.root / name
        self.folder = self.root / f"{name}.versions"

    def current(self) -> Path | None:
        """The current version folder (resolved), or None before the first publish. A real
        folder at `root/name` (the layout before versions) is its own current version."""
        if self.link.is_symlink():
            return self.link.resolve()
        return self.link if self.link.is_dir() else None

    def is_versioned(self) -> bool:
        """Whether `root/name` is a link into the versions folder (published by `make_current`)."""
        return self.link.is_symlink() and Path(os.path.realpath(self.link)).parent == Path(os.path.realpath(self.folder))

    def versions(self) -> list[Path]:
        """Every version folder, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and p.name.startswith(VERSION_PREFIX))

    def new_version(self) -> Path:
        """A new, empty version folder named by the time now (UTC); not current until
        `make_current`. Raises FileExistsError in the (sub-microsecond) case of a clash."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{VERSION_PREFIX}{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
        path.mkdir()
        return path

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the versions folder for one curation and publish. Raises PublishBusyError at
        once (rather than waiting) when another process holds it: two runs would otherwise
        interleave their versions, DVC records and links."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PublishBusyError(f"another run is curating or publishing into {self.folder}") from None
            yield

    def make_current(self, version: Path) -> None:
        """Make `version` (a complete folder in the versions folder) current with one atomic
        rename of a new relative symlink over `root/name`.

        Raises ValueError for a folder outside the versions folder or without `stats.json`,
        OSError from the file system.
        """
        version = Path(os.path.abspath(version))
        if version.parent != self.folder or not (version / COMPLETE_MARKER).is_file():
            raise ValueError(f"{version} is not a complete version of {self.link}")
        if self.link.exists() and not self.link.is_symlink():
            # The layout before versions: a one-time move of the old folder into the versions
            # folder (the only moment `root/name` is briefly absent).
            os.replace(self.link, self.folder / f"{VERSION_PREFIX}0-unversioned-{int(self.link.stat().st_mtime)}")
        temporary = self.root / f".{self.name}.{os.getpid()}.link.tmp"
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.symlink(os.path.relpath(version, self.root), temporary)
        os.replace(temporary, self.link)
        _fsync_folder(self.root)

    def prune(self, keep_previous: int = KEEP_PREVIOUS) -> list[Path]:
        """Remove version folders other than the current one and the `keep_previous` newest
        complete ones, incomplete ones (a killed or failed run's) included, with any
        `<version>.dvc` beside them. Call it under `lock`. Returns what was removed."""
        current = self.current()
        complete = [v for v in self.versions() if v != current and (v / COMPLETE_MARKER).is_file()]
        keep = set(complete[-keep_previous:]) if keep_previous > 0 else set()
        removed = []
        for version in self.versions():
            if version == current or version in keep:
                continue
            shutil.rmtree(version, ignore_errors=True)
            Path(f"{version}.dvc").unlink(missing_ok=True)
            removed.append(version)
        return removed


def _fsync_folder(folder: Path) -> None:
    # The rename is atomic at once; the fsync makes it survive a power cut too.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
