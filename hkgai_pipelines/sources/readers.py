"""One reader per source kind; `read_source(spec)` dispatches on `spec.kind`.

Packaged corpora are read from the installed packages (nothing is downloaded):
HKCanCor and CTCPC from pycantonese, HSK sentences from hsk-sentences-audio, the Hong Kong
knowledge documents from this package's `data/knowledge/`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import yaml

from hkgai_pipelines.sources.catalog import SourceSpec, local_files_root, source_root
from hkgai_pipelines.sources.files import FileItem, _NotRegular, _open_regular, collect_inputs, read_files
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord

KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "data" / "knowledge"

_ASCII_WORD_EDGE = re.compile(r"[A-Za-z0-9]")


def join_tokens(words: list[str]) -> str:
    """Join segmented words: no space between CJK words, one space between Latin words."""
    out: list[str] = []
    for word in words:
        if out and _ASCII_WORD_EDGE.match(out[-1][-1]) and _ASCII_WORD_EDGE.match(word[0]):
            out.append(" ")
        out.append(word)
    return "".join(out)


def read_hkcancor(spec: SourceSpec) -> Iterator[FileItem]:
    """HKCanCor conversations, `utterances_per_record` consecutive utterances per record."""
    import pycantonese

    per_record = int(spec.options.get("utterances_per_record", 12))
    for file_path in sorted(pycantonese.hkcancor().file_paths):
        name = Path(file_path).name
        try:
            utterances = pycantonese.read_chat(file_path).utterances()
        except Exception as error:  # a corrupt CHAT file is data, not a crash
            yield QuarantineRecord(name, None, f"unreadable CHAT file: {error}", spec.name)
            continue
        lines = [join_tokens([token.word for token in u.tokens if token.word]) for u in utterances]
        for start in range(0, len(lines), per_record):
            block = [line for line in lines[start:start + per_record] if line.strip()]
            if block:
                yield RawRecord(
                    text="\n".join(block),
                    source=spec.name,
                    licence=spec.licence,
                    locator=f"{name}#u{start}-{start + per_record - 1}",
                )


def read_ctcpc(spec: SourceSpec) -> Iterator[FileItem]:
    """CTCPC Cantonese sentences shipped with pycantonese, one record per sentence."""
    resource = resources.files("pycantonese").joinpath("data", "ctcpc", "sents.json")
    sentences = json.loads(resource.read_text(encoding="utf-8"))
    limit = spec.options.get("max_records")
    for index, sentence in enumerate(sentences[: int(limit)] if limit else sentences):
        if not isinstance(sentence, str):
            yield QuarantineRecord("ctcpc/sents.json", index + 1, "entry is not a string", spec.name)
            continue
        yield RawRecord(text=sentence, source=spec.name, licence=spec.licence, locator=f"sents.json#{index}")


def read_hsk_sentences(spec: SourceSpec) -> Iterator[FileItem]:
    """HSK example sentences: the simplified Mandarin text and its English translation."""
    import hsk_sentences_audio

    fields = spec.options.get("fields", ["chinese", "en"])
    for item in hsk_sentences_audio.load_sentences():
        for field_name in fields:
            text = item.get("translation", {}).get("en") if field_name == "en" else item.get(field_name)
            if not isinstance(text, str):
                yield QuarantineRecord("hsk_sentences_audio/sentences.json", None, f"{item.get('id')}: no {field_name!r} text", spec.name)
                continue
            yield RawRecord(text=text, source=spec.name, licence=spec.licence, locator=f"{item['id']}#{field_name}")


def parse_knowledge_document(path: Path) -> tuple[dict, str]:
    """A knowledge document is Markdown with YAML front matter (title, source, lang, updated)."""
    return parse_knowledge_text(path.read_text(encoding="utf-8"), path.name)


def parse_knowledge_text(text: str, name: str) -> tuple[dict, str]:
    """(front matter, body) of a knowledge document's text; ValueError names `name`."""
    if not text.startswith("---\n"):
        raise ValueError(f"{name}: missing YAML front matter")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front) or {}
    for key in ("title", "source", "lang"):
        if not meta.get(key):
            raise ValueError(f"{name}: front matter lacks {key!r}")
    return meta, body.strip()


def read_hk_knowledge(spec: SourceSpec) -> Iterator[FileItem]:
    """Project-authored Markdown about Hong Kong (the `*.md` files directly in the folder);
    the title leads the text.

    The folder (`options.path`, default the packaged `data/knowledge/`) obeys the catalog's
    root rule (catalog.source_root: inside the project or an `allowed_roots` entry, else
    RootNotAllowedError), and it is listed by the same walk as `local_files`: only regular
    files are opened, symlinks only to targets inside the folder; a FIFO, a dangling or
    looping link or a link leading out is a quarantine record by name. Raises
    FileNotFoundError for a folder that does not exist.
    """
    folder = source_root(spec, KNOWLEDGE_DIR)
    if not folder.is_dir():
        raise FileNotFoundError(f"source {spec.name}: knowledge folder not found: {folder}")
    for entry in collect_inputs([folder], root=folder):
        if "/" in entry.name or not entry.name.endswith(".md"):
            continue  # only the folder's own .md files, as the glob("*.md") before
        if entry.problem is not None:
            yield QuarantineRecord(entry.name, None, entry.problem, spec.name)
            continue
        try:
            handle, _ = _open_regular(entry.path)
            with handle:
                text = handle.read().decode("utf-8")
            meta, body = parse_knowledge_text(text, entry.name)
        except _NotRegular as problem:  # swapped for a FIFO since it was listed
            yield QuarantineRecord(entry.name, None, str(problem), spec.name)
            continue
        except OSError as error:
            yield QuarantineRecord(entry.name, None, f"unreadable file: {error.strerror or error}", spec.name)
            continue
        except (ValueError, UnicodeDecodeError, yaml.YAMLError) as error:
            yield QuarantineRecord(entry.name, None, str(error), spec.name)
            continue
        yield RawRecord(
            text=f"{meta['title']}\n\n{body}",
            source=spec.name,
            licence=spec.licence,
            locator=entry.name,
            title=meta["title"],
        )


def read_local_files(spec: SourceSpec) -> Iterator[FileItem]:
    """A user folder of .jsonl/.txt/.parquet/.html/.warc(.gz) files (sources/files.py).

    Raises CatalogError without options.path, RootNotAllowedError for a folder outside the
    project and the catalog's allowed_roots (catalog.local_files_root), FileNotFoundError for
    a folder that does not exist.
    """
    folder = local_files_root(spec)
    if not folder.exists():
        raise FileNotFoundError(f"source {spec.name}: folder not found: {folder}")
    yield from read_files([folder], source=spec.name, licence=spec.licence, root=folder)


READERS: dict[str, Callable[[SourceSpec], Iterator[FileItem]]] = {
    "hkcancor": read_hkcancor,
    "ctcpc": read_ctcpc,
    "hsk_sentences": read_hsk_sentences,
    "hk_knowledge": read_hk_knowledge,
    "local_files": read_local_files,
}


def read_source(spec: SourceSpec) -> Iterator[FileItem]:
    return READERS[spec.kind](spec)
