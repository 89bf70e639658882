"""The source catalog (configs/sources.yaml): which sources exist, their kind and licence.

A `local_files` source reads a folder, and so does any source whose options carry a `path`
(`hk_knowledge`). Its `options.path` is relative to the project
directory (or absolute), and it must resolve (symlinks followed) inside the project or inside
one of the folders the catalog lists under a top-level `allowed_roots:` key: a catalog is
configuration that travels with the repository, and a path such as `../..` or `/home` in it
would otherwise ingest whatever lies there into the lake. The check runs when the catalog
is loaded and again when the folder is read (the folder may have become a link since).
Paths given to `hkgai curate` on the command line are the user's own choice and are not
subject to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hkgai_pipelines.settings import PROJECT_ROOT

#: Kinds a source may have; each has a reader in `hkgai_pipelines.sources.readers`.
SOURCE_KINDS = ("hkcancor", "ctcpc", "hsk_sentences", "hk_knowledge", "local_files")

#: The top-level key of sources.yaml listing folders outside the project that `local_files`
#: sources may read; relative entries are resolved against the project directory.
ALLOWED_ROOTS_KEY = "allowed_roots"


class CatalogError(ValueError):
    """sources.yaml is malformed; the message names the file and the entry."""


class RootNotAllowedError(CatalogError):
    """A source's folder (`options.path`) lies outside the project and outside every allowed root."""


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    licence: str
    options: dict = field(default_factory=dict)
    #: Also serves as RAG material (knowledge_documents reads these sources).
    rag: bool = False
    #: Folders outside the project a `local_files` source may read (the catalog's
    #: `allowed_roots`, resolved); empty: the project directory only.
    allowed_roots: tuple[Path, ...] = ()


@dataclass(frozen=True)
class SourceCatalog:
    path: Path
    sources: tuple[SourceSpec, ...]
    allowed_roots: tuple[Path, ...] = ()

    @property
    def names(self) -> list[str]:
        return [source.name for source in self.sources]

    def get(self, name: str) -> SourceSpec:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"source {name!r} is not in {self.path} (known: {', '.join(self.names)})")


def source_root(spec: SourceSpec, default: Path | None = None) -> Path:
    """The folder a source reads from its `options.path` (any kind that has one:
    `local_files`, `hk_knowledge`), relative to the project directory unless absolute,
    resolved (symlinks followed), so that a link cannot lead out. `default` is used when
    the options carry no path (hk_knowledge's packaged folder); it is checked the same way.

    Raises CatalogError when there is neither a path nor a default, and RootNotAllowedError
    when the folder is neither inside the project directory nor inside one of
    `spec.allowed_roots`. Whether the folder exists is the reader's concern.
    """
    raw = spec.options.get("path")
    if raw in (None, "") and default is not None:
        raw = str(default)
    if not raw or not isinstance(raw, str):
        raise CatalogError(f"source {spec.name}: {spec.kind} needs options.path (a folder)")
    resolved = _resolve(raw)
    allowed = (_resolve(str(PROJECT_ROOT)), *spec.allowed_roots)
    if not any(resolved.is_relative_to(root) for root in allowed):
        raise RootNotAllowedError(
            f"source {spec.name}: {spec.kind} path {raw!r} resolves to {resolved}, outside the project "
            f"directory {PROJECT_ROOT}; to read it, list it (or a folder above it) under "
            f"'{ALLOWED_ROOTS_KEY}:' in the source catalog"
        )
    return resolved


def local_files_root(spec: SourceSpec) -> Path:
    """The folder a `local_files` source reads (`source_root` without a default)."""
    return source_root(spec)


def _allowed_roots(path: Path, document: dict) -> tuple[Path, ...]:
    entries = document.get(ALLOWED_ROOTS_KEY)
    if entries is None:
        return ()
    if not isinstance(entries, list) or not all(isinstance(entry, str) and entry for entry in entries):
        raise CatalogError(f"{path}: '{ALLOWED_ROOTS_KEY}' must be a list of folder paths")
    return tuple(_resolve(entry) for entry in entries)


def _resolve(entry: str) -> Path:
    """`entry` relative to the project directory unless absolute, with every symlink
    followed. realpath, not Path.resolve: a symlink loop does not raise here; the reader
    then finds no folder there and says so."""
    path = Path(entry)
    return Path(os.path.realpath(path if path.is_absolute() else PROJECT_ROOT / path))


def load_catalog(path: Path) -> SourceCatalog:
    """The catalog in `path`. Raises CatalogError (naming the file and the entry) for a
    missing or malformed file, and RootNotAllowedError for a source (`local_files`, or any
    with an `options.path`) whose folder is outside the project and outside every `allowed_roots` entry."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: source catalog not found") from None
    except yaml.YAMLError as error:
        raise CatalogError(f"{path}: not valid YAML: {error}") from None
    if document is not None and not isinstance(document, dict):
        raise CatalogError(f"{path}: expected a mapping with 'sources'")
    allowed_roots = _allowed_roots(path, document or {})
    entries = (document or {}).get("sources")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{path}: expected a non-empty list under 'sources'")
    specs: list[SourceSpec] = []
    for position, entry in enumerate(entries, start=1):
        where = f"{path}: source #{position}"
        if not isinstance(entry, dict):
            raise CatalogError(f"{where}: expected a mapping, got {type(entry).__name__}")
        missing = [key for key in ("name", "kind", "licence") if not entry.get(key)]
        if missing:
            raise CatalogError(f"{where}: missing {', '.join(missing)}")
        if entry["kind"] not in SOURCE_KINDS:
            raise CatalogError(
                f"{where} ({entry['name']}): unknown kind {entry['kind']!r}; "
                f"expected one of {', '.join(SOURCE_KINDS)}"
            )
        spec = SourceSpec(
            name=str(entry["name"]),
            kind=entry["kind"],
            licence=str(entry["licence"]),
            options=dict(entry.get("options") or {}),
            rag=bool(entry.get("rag", False)),
            allowed_roots=allowed_roots,
        )
        if spec.kind == "local_files" or spec.options.get("path") not in (None, ""):
            try:
                source_root(spec)
            except CatalogError as error:
                raise type(error)(f"{path}: {error}") from None
        specs.append(spec)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CatalogError(f"{path}: duplicate source names {', '.join(duplicates)}")
    return SourceCatalog(path=path, sources=tuple(specs), allowed_roots=allowed_roots)
