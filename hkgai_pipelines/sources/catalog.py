"""The source catalog (configs/sources.yaml): which sources exist, their kind and licence."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

#: Kinds a source may have; each has a reader in `hkgai_pipelines.sources.readers`.
SOURCE_KINDS = ("hkcancor", "ctcpc", "hsk_sentences", "hk_knowledge", "local_files")


class CatalogError(ValueError):
    """sources.yaml is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    licence: str
    options: dict = field(default_factory=dict)
    #: Also serves as RAG material (knowledge_documents reads these sources).
    rag: bool = False


@dataclass(frozen=True)
class SourceCatalog:
    path: Path
    sources: tuple[SourceSpec, ...]

    @property
    def names(self) -> list[str]:
        return [source.name for source in self.sources]

    def get(self, name: str) -> SourceSpec:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(f"source {name!r} is not in {self.path} (known: {', '.join(self.names)})")


def load_catalog(path: Path) -> SourceCatalog:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: source catalog not found") from None
    except yaml.YAMLError as error:
        raise CatalogError(f"{path}: not valid YAML: {error}") from None
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
        specs.append(
            SourceSpec(
                name=str(entry["name"]),
                kind=entry["kind"],
                licence=str(entry["licence"]),
                options=dict(entry.get("options") or {}),
                rag=bool(entry.get("rag", False)),
            )
        )
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CatalogError(f"{path}: duplicate source names {', '.join(duplicates)}")
    return SourceCatalog(path=path, sources=tuple(specs))
