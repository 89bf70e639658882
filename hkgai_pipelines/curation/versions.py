"""Versioned outputs: every curation of the lake writes a new version folder, and one atomic
step makes it current.

Layout in the lake (the path readers use, `lake/cleaned/cleaned.parquet`, is unchanged)::

    cleaned -> cleaned.versions/v20261201T150102123456Z      a relative symlink: the current version
    cleaned.versions/v20261201T150102123456Z/                 cleaned.parquet/ rejected.parquet/ quarantine.jsonl stats.json
    cleaned.versions/v20261130T...Z/                          previous versions, kept for rollback and
                                                              for readers still reading them
    cleaned.versions/.curate-staging-resume-<fingerprint>/    a stopped run's part files (engine.py)
    cleaned.versions/.curate-staging-parts/                   incremental curation's part files (engine.py)
    cleaned.versions/.curate-staging-parts/dedup-index/       and the last decision's dedup index (dedup_index.py)
    cleaned.versions/published.jsonl                          every version made current, with its DVC record

The four outputs of a version change together: the symlink is replaced by `rename(2)` of a new
symlink over it, which POSIX makes atomic, so a reader opening `cleaned/...` sees the old
version or the new one, never a mix (the pattern of Kubernetes' atomic writer for ConfigMap
volumes, and of release folders in deployment tools). A version folder is complete before it
can become current; a run killed half-way leaves a version folder that never became current,
removed by the next `prune`. A reader that resolves the link once (`Path.resolve()`) keeps
reading the same version while a newer one is published; `prune` keeps, besides the current
version, the version current just before it (for such readers) and the first `KEEP_PREVIOUS`
rollback targets (`hkgai corpus rollback`: `rollback_target`, `make_current(older,
rolled_back_from=...)`, then `cleaned.dvc` is re-pointed from the logged record).

Plain Python, no Dagster or DVC here: `assets/corpora.py` orders the steps (curate into a new
version, the GX gates on it, DVC push, MLflow run, then `make_current`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from hkgai_pipelines.sources.lake import held_exclusively

#: Versions kept besides the current one: rollback targets and versions a long reader (a
#: training job that resolved the link at its start) may still be reading.
KEEP_PREVIOUS = 2
#: A version folder's name: "v" and the UTC time it was created to the microsecond, so names
#: sort in creation order.
VERSION_PREFIX = "v"
#: The file a complete version always has (written last by the engine's `replace_outputs`).
COMPLETE_MARKER = "stats.json"
#: In the versions folder: one JSON line per `make_current` ({"version", "record"}: the
#: version's DVC record). Only versions named here were ever published; `prune` keeps no
#: other as a rollback target, and a rollback re-points `<name>.dvc` from its record.
PUBLISHED_LOG = "published.jsonl"
#: Prefix a version folder is renamed to before it is deleted, so a half-deleted folder is
#: never taken for a version.
TRASH_PREFIX = ".trash-"


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
        """The current version folder (`self.folder / <name>`, the path `versions()` lists), or
        None before the first publish. A real folder at `root/name` (the layout before
        versions) is its own current version."""
        if self.link.is_symlink():
            return self.folder / Path(os.readlink(self.link)).name
        return self.link if self.link.is_dir() else None

    def published(self) -> dict[str, dict | None]:
        """Version name -> its DVC record, for every version `make_current` published."""
        return {name: record for name, record, _ in self._log()}

    def recently_current(self) -> list[str]:
        """Published version names, the most recently made current first, each once."""
        order: list[str] = []
        for name, _, _ in reversed(self._log()):
            if name not in order:
                order.append(name)
        return order

    def rolled_back(self) -> set[str]:
        """Versions a rollback moved away from and that were not made current again since:
        not rollback targets (a second rollback walks further back instead of undoing the
        first)."""
        flagged: set[str] = set()
        for name, _, rolled_back_from in self._log():
            flagged.discard(name)
            if rolled_back_from:
                flagged.add(rolled_back_from)
        return flagged

    def rollback_chain(self) -> list[Path]:
        """The versions a rollback can go back to, the first choice first: published and
        complete, older than the current one (version names sort by creation time), not
        rolled back from (`rolled_back`), and not a copy of the current content (the same DVC
        hash: a later run that curated the same inputs again). Newest first."""
        from hkgai_pipelines.versioning import record_md5  # the record's format, no DVC run

        current = self.current()
        published, flagged = self.published(), self.rolled_back()

        def md5(name: str | None) -> str | None:
            return record_md5(published.get(name)) if name else None

        current_name = current.name if current is not None else None
        chain = []
        for name in sorted(published, reverse=True):
            version = self.folder / name
            if (name == current_name or name in flagged or not (version / COMPLETE_MARKER).is_file()
                    or (current_name and current != self.link and name > current_name)):
                continue
            if md5(current_name) is not None and md5(name) == md5(current_name):
                continue
            chain.append(version)
        return chain

    def _log(self) -> list[tuple[str, dict | None, str | None]]:
        """(version, record, rolled back from) of every PUBLISHED_LOG line, in the order
        written; a version's record is the last non-null one logged for it."""
        entries, records = [], {}
        try:
            with open(self.folder / PUBLISHED_LOG, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                        name = entry["version"]
                    except (ValueError, KeyError, TypeError):  # a line cut short by a crash
                        continue
                    if entry.get("record") or name not in records:
                        records[name] = entry.get("record")
                    entries.append((name, entry.get("rolled_back_from")))
        except FileNotFoundError:
            pass
        return [(name, records[name], rolled_back_from) for name, rolled_back_from in entries]

    def is_versioned(self) -> bool:
        """Whether `root/name` is a link into the versions folder (published by `make_current`)."""
        return self.link.is_symlink() and Path(os.path.realpath(self.link)).parent == Path(os.path.realpath(self.folder))

    @classmethod
    def holding(cls, path: Path) -> OutputVersions | None:
        """The versioned output whose link or *published* version `path` is (symlinks
        resolved), or None. A new, never-published version folder is not held: a curation run
        may write into it (the RayJob does)."""
        real = Path(os.path.realpath(path))
        if real.parent.name.endswith(".versions"):
            versions = cls(real.parent.parent, real.parent.name[: -len(".versions")])
            if versions.link.is_symlink() and (real.name in versions.published() or versions.current() == versions.folder / real.name):
                return versions
        link = cls(Path(path).parent, Path(path).name)
        return link if link.is_versioned() else None

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
    def lock(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the versions folder for one curation and publish: two runs would otherwise
        interleave their versions, DVC records and links. When another process holds it:
        raises PublishBusyError at once, or, given `on_wait`, calls it with a message saying
        who is waited for and waits until that process lets go."""
        busy = f"another run is curating or publishing into {self.folder}"
        waiting = None if on_wait is None else (lambda: on_wait(f"{busy}: waiting for it to finish"))
        with held_exclusively(self.folder, PublishBusyError(busy), waiting):
            yield

    def make_current(self, version: Path, record: dict | None = None, legacy_record: dict | None = None,
                     rolled_back_from: str | None = None) -> None:
        """Make `version` (a complete folder in the versions folder) current with one atomic
        rename of a new relative symlink over `root/name`, after noting it in PUBLISHED_LOG
        with `record` (its DVC record; for a rollback to a published version, None keeps the
        record logged for it). `legacy_record`: the DVC record of a folder from before
        versions at `root/name` (moved into the versions folder here), so a rollback to it can
        point `<name>.dvc` at it. `rolled_back_from`: for a rollback, the version it moves
        away from (logged, so it is no rollback target until made current again).

        Raises ValueError for a folder outside the versions folder or without `stats.json`,
        OSError from the file system.
        """
        version = self.folder / Path(version).name
        if os.path.realpath(Path(version).parent) != os.path.realpath(self.folder) or not (version / COMPLETE_MARKER).is_file():
            raise ValueError(f"{version} is not a complete version of {self.link}")
        if record is None:
            record = self.published().get(version.name)
        entries = []
        legacy = None
        if self.link.exists() and not self.link.is_symlink():
            # The layout before versions: the old folder was current, so it is logged first
            # (it reads as the version current before this one: a rollback target, kept by
            # prune) and before it is moved, so a crash cannot leave it unlogged.
            legacy = f"{VERSION_PREFIX}0-unversioned-{int(self.link.stat().st_mtime)}"
            entries.append({"version": legacy, "record": legacy_record})
        entries.append({"version": version.name, "record": record, **({"rolled_back_from": rolled_back_from} if rolled_back_from else {})})
        with open(self.folder / PUBLISHED_LOG, "a", encoding="utf-8") as log:
            log.write("".join(json.dumps(entry) + "\n" for entry in entries))
            log.flush()
            os.fsync(log.fileno())
        if legacy is not None:
            # A one-time move into the versions folder (the only moment `root/name` is
            # briefly absent).
            os.replace(self.link, self.folder / legacy)
        temporary = self.root / f".{self.name}.{os.getpid()}.link.tmp"
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.symlink(os.path.relpath(version, self.root), temporary)
        os.replace(temporary, self.link)
        _fsync_folder(self.root)

    def rollback_target(self, to: str | None = None) -> Path:
        """The version a rollback makes current: `to` (a version name; any published,
        complete version but the current one, a newer one too: a roll forward), or by default
        the first of `rollback_chain`.

        Raises ValueError with the reason when `to` is unknown, never published, incomplete or
        already current, or when there is no version to roll back to.
        """
        current = self.current()
        if to is not None:
            version = self.folder / Path(to).name
            if not to or Path(to).name != to or not version.is_dir():
                reason = "no such version"
            elif version == current:
                reason = "it is already current"
            elif to not in self.published():
                reason = "it was never published (a failed or killed run's)"
            elif not (version / COMPLETE_MARKER).is_file():
                reason = "it is incomplete"
            else:
                return version
            raise ValueError(f"cannot roll {self.link} back to {to!r}: {reason}")
        chain = self.rollback_chain()
        if not chain:
            raise ValueError(f"{self.link} has no older published version with other content to roll back to")
        return chain[0]

    def discard(self, version: Path) -> None:
        """Remove a version that was never made current, with its `<version>.dvc` (first: a
        record whose folder is gone would make `dvc checkout` bring the folder back)."""
        Path(f"{version}.dvc").unlink(missing_ok=True)
        shutil.rmtree(version, ignore_errors=True)

    def prune(self, keep_previous: int = KEEP_PREVIOUS) -> list[Path]:
        """Remove every version folder but the current one, the first `keep_previous` of
        `rollback_chain` and the version current just before this one: versions a failed or killed run left (never current, complete
        or not) go too, with any `<version>.dvc` beside them and records whose folder is gone.
        Call it under `lock`. Returns the versions removed."""
        current = self.current()
        # The rollback targets (not merely the newest names: a version rolled back from is not
        # one), and the version current just before this one, which a reader that resolved the
        # link a moment ago may still be reading.
        keep = {current, *(self.rollback_chain()[:keep_previous] if keep_previous > 0 else [])}
        before = [name for name in self.recently_current() if self.folder / name != current]
        if before:
            keep.add(self.folder / before[0])
        removed = []
        for version in self.versions():
            if version in keep:
                continue
            # Out of the versions' names first: a deletion that fails half-way leaves a folder
            # nothing takes for a version (and the next prune tries again).
            trash = self.folder / f"{TRASH_PREFIX}{version.name}"
            os.replace(version, trash)
            Path(f"{version}.dvc").unlink(missing_ok=True)
            removed.append(version)
        for record in self.folder.glob(f"{VERSION_PREFIX}*.dvc"):
            if not record.with_suffix("").is_dir():
                record.unlink()
        for trash in self.folder.glob(f"{TRASH_PREFIX}*"):
            shutil.rmtree(trash, ignore_errors=True)
        return removed


def _fsync_folder(folder: Path) -> None:
    # The rename is atomic at once; the fsync makes it survive a power cut too.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
