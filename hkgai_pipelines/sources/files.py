"""Read user files (.jsonl, .txt, .parquet, .html, .warc, .warc.gz) into records, quarantining
what is unreadable.

Shared by the `local_files` source kind and `hkgai curate`. Every problem becomes a
`QuarantineRecord(file, line, error)` instead of an exception, so one bad file never stops a
run and the counts still add up. Only a path that does not exist raises: that is a usage
error, not bad data.

Text files may be in any encoding Hong Kong input comes in (UTF-8 with or without a BOM,
UTF-16/32, Big5-HKSCS, GB18030): `decoding` decides one encoding per file from its first
64 KiB, and lines are then decoded one at a time, so a damaged line is quarantined alone.
Web pages and crawls go through `web` (main-content extraction, WARC records).

Record identity: an input's own `id` is only unique inside its file (two shards both number
their records from 0), so it is scoped: the record id hashes (source, file, input id) and
the locator keeps the input id readable (`shard-00000.jsonl:1#id=0`). Without an input id the
id hashes (source, locator, text) as for every other source.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hkgai_pipelines.sources.decoding import HEAD_BYTES, Detection, decode_line, detect, iter_encoded_lines
from hkgai_pipelines.sources.records import FileItem, QuarantineRecord, RawRecord, stable_record_id
from hkgai_pipelines.sources.web import html_record, read_warc

#: File name endings read, matched against the whole name so that `.warc.gz` is one kind.
SUPPORTED_SUFFIXES = (".jsonl", ".txt", ".parquet", ".html", ".htm", ".warc", ".warc.gz")

#: A single record above this size is quarantined: no real document in these corpora is
#: anywhere near 10 MB, and one such line would dominate a training batch.
DEFAULT_MAX_RECORD_BYTES = 10 * 1024 * 1024



def expand_inputs(paths: Iterable[Path]) -> list[Path]:
    """Files under the given files/folders, in sorted (stable) order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        else:
            files.append(path)
    return files


def read_files(
    paths: Iterable[Path],
    *,
    source: str,
    licence: str,
    root: Path | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    scope_ids: bool = True,
) -> Iterator[FileItem]:
    for path, name in named_inputs(paths, root):
        yield from read_file(
            path, source=source, licence=licence, root=root, max_record_bytes=max_record_bytes, scope_ids=scope_ids,
            name=name,
        )


def named_inputs(paths: Iterable[Path], root: Path | None = None) -> list[tuple[Path, str]]:
    """Each file under the given files/folders once (the same file given twice, or a folder
    and a file inside it, is read once), with the name its records are located and scoped by.

    The name is the path relative to `root` when one is given; otherwise a folder's files are
    `<folder name>/<path inside it>` and a file is `<its folder's name>/<file name>`, so a
    record gets the same id however its path was typed (`curate s2`, `curate /data/s2/a.jsonl`)
    and on any machine. Raises FileNotFoundError for a path that does not exist.
    """
    named: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for given in map(Path, paths):
        # What names are relative to: the root, or the folder above the given folder or file's folder.
        base = root if root is not None else given.resolve().parent if given.is_dir() else given.resolve().parent.parent
        for path in expand_inputs([given]):
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            named.append((path, _display_name(path, base)))
    return named


def read_file(
    path: Path,
    *,
    source: str,
    licence: str,
    root: Path | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    scope_ids: bool = True,
    name: str | None = None,
) -> Iterator[FileItem]:
    """Records of one file.

    `scope_ids=False` keeps Parquet ids as they are: for the raw lake's own partitions, whose
    ids are already final and scoped (an input id is scoped when it is first read).
    """
    name = name or _display_name(path, root)

    def quarantine(line: int | None, error: str) -> QuarantineRecord:
        return QuarantineRecord(file=name, line=line, error=error, source=source)

    kind = file_kind(path)
    if kind is None:
        yield quarantine(None, f"unsupported file type {_suffix(path)!r}; expected {', '.join(SUPPORTED_SUFFIXES)}")
        return
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as error:
        yield quarantine(None, f"unreadable file: {error.strerror or error}")
        return
    if size == 0:
        yield quarantine(None, "empty file")
        return
    if kind == ".parquet":
        yield from _read_parquet(path, name, source, licence, max_record_bytes, scope_ids)
        return
    if kind in (".warc", ".warc.gz"):
        yield from read_warc(path, name, source, licence, max_record_bytes)
        return
    if kind in (".html", ".htm"):
        yield from _read_html(path, name, source, licence, max_record_bytes, size)
        return
    # One encoding per file, from its head (the whole file when it is small). A file whose
    # head has NUL bytes and is not UTF-16/32 text is binary.
    detection = detect(head, final=size <= len(head), line_based=True)
    if not detection.ok:
        yield quarantine(None, detection.error or "undecodable")
        return
    reader = {".jsonl": _read_jsonl, ".txt": _read_txt}[kind]
    yield from reader(path, detection, name, source, licence, max_record_bytes)


def file_kind(path: Path) -> str | None:
    """The supported ending the file name has (`.warc.gz` before `.gz`), or None."""
    lowered = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            return suffix
    return None


def _suffix(path: Path) -> str:
    return path.suffix.lower() or "(none)"


def _display_name(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return str(path)


def _too_large(size: int, limit: int) -> str:
    return f"record of {size} bytes exceeds the {limit}-byte limit"


def input_id(value: object) -> tuple[str | None, str | None]:
    """(the input's own id as text, or None when it has none; an error for an unusable id).

    0 is an id; null, "" and NaN are not. Integers and strings are what id fields hold; a
    float is one too when it is whole, since pandas writes a nullable integer column as
    floats (2.0 is the id "2", NaN a missing one), and any other finite float keeps its text
    ("1.5"). A boolean or an object as an id is a schema error, not something to guess a
    text form for.
    """
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None, None
    if isinstance(value, float) and math.isfinite(value):
        return (str(int(value)) if value.is_integer() else repr(value)), None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"field 'id' is of type {type(value).__name__}; expected a string or an integer"
    return str(value), None


def scoped_id(source: str, file: str, value: str) -> str:
    """The record id for input id `value` of `file`: unique across files and sources."""
    return stable_record_id(source, f"{file}#id={value}", "")


def _read_jsonl(path: Path, detection: Detection, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    with path.open("rb") as handle:
        for line in iter_encoded_lines(handle, detection, limit=limit):
            if line.raw is None or line.size > limit:
                yield QuarantineRecord(name, line.number, _too_large(line.size, limit), source)
                continue
            text, error, encoding = decode_line(line.raw, detection)
            if error:
                yield QuarantineRecord(name, line.number, error, source)
                continue
            # A byte-order mark inside the file: shards with BOMs concatenated with `cat`.
            text = text.rstrip("\r").lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                kind = "truncated JSON record" if not line.complete else "invalid JSON"
                yield QuarantineRecord(name, line.number, f"{kind}: {exc.msg} at column {exc.colno}", source)
                continue
            if not isinstance(obj, dict):
                yield QuarantineRecord(name, line.number, f"expected a JSON object, got {type(obj).__name__}", source)
                continue
            body = obj.get("text")
            if not isinstance(body, str):
                found = "missing" if "text" not in obj else f"of type {type(body).__name__}"
                yield QuarantineRecord(name, line.number, f"field 'text' is {found}; expected a string", source)
                continue
            own_id, id_error = input_id(obj.get("id"))
            if id_error:
                yield QuarantineRecord(name, line.number, id_error, source)
                continue
            record_source = str(obj.get("source") or source)
            locator = f"{name}:{line.number}"
            yield RawRecord(
                text=body,
                source=record_source,
                licence=str(obj.get("licence") or licence),
                locator=f"{locator}#id={own_id}" if own_id is not None else locator,
                title=obj.get("title") if isinstance(obj.get("title"), str) else None,
                id=scoped_id(record_source, name, own_id) if own_id is not None else "",
                encoding=encoding,
            )


def _read_txt(path: Path, detection: Detection, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    """One record per paragraph (blank-line separated); the locator is its first line."""
    paragraph: list[str] = []
    encodings: set[str] = set()
    start = 0

    def flush() -> FileItem:
        # A paragraph whose lines came in two encodings says so ("big5hkscs+utf-8").
        return _paragraph_record(paragraph, name, start, source, licence, limit, "+".join(sorted(encodings)))

    with path.open("rb") as handle:
        for line in iter_encoded_lines(handle, detection, limit=limit):
            if line.raw is None or line.size > limit:
                yield QuarantineRecord(name, line.number, _too_large(line.size, limit), source)
                continue
            text, error, encoding = decode_line(line.raw, detection)
            if error:
                yield QuarantineRecord(name, line.number, error, source)
                continue
            text = text.rstrip("\r")
            if text.strip():
                if not paragraph:
                    start = line.number
                paragraph.append(text)
                encodings.add(encoding)
                continue
            if paragraph:
                yield flush()
                paragraph, encodings = [], set()
    if paragraph:
        yield flush()


def _paragraph_record(
    lines: list[str], name: str, start: int, source: str, licence: str, limit: int, encoding: str | None
) -> FileItem:
    text = "\n".join(lines)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        return QuarantineRecord(name, start, _too_large(size, limit), source)
    return RawRecord(text=text, source=source, licence=licence, locator=f"{name}:{start}", encoding=encoding)


def _read_html(path: Path, name: str, source: str, licence: str, limit: int, size: int) -> Iterator[FileItem]:
    """A page is one document: decoded as a whole (its `<meta charset>` counts), main content only."""
    if size > limit:
        yield QuarantineRecord(name, None, _too_large(size, limit), source)
        return
    yield html_record(path.read_bytes(), name=name, locator=name, source=source, licence=licence)


def _read_parquet(path: Path, name: str, source: str, licence: str, limit: int, scope_ids: bool) -> Iterator[FileItem]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        yield QuarantineRecord(name, None, f"not a readable Parquet file: {error}", source)
        return
    columns = parquet.schema_arrow.names
    if "text" not in columns:
        yield QuarantineRecord(name, None, f"Parquet has no 'text' column (columns: {', '.join(columns)})", source)
        return
    wanted = [c for c in ("id", "text", "source", "licence", "locator", "title", "ingested_at", "encoding") if c in columns]
    row_number = 0
    for batch in parquet.iter_batches(columns=wanted, batch_size=4096):
        for row in batch.to_pylist():
            row_number += 1
            text = row.get("text")
            if not isinstance(text, str):
                yield QuarantineRecord(name, row_number, "row has no text (null or not a string)", source)
                continue
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > limit:
                yield QuarantineRecord(name, row_number, _too_large(size, limit), source)
                continue
            own_id, id_error = input_id(row.get("id"))
            if id_error:
                yield QuarantineRecord(name, row_number, id_error, source)
                continue
            record_source = row.get("source") or source
            locator = row.get("locator") or f"{name}:{row_number}"
            if own_id is not None and scope_ids:
                record_id = scoped_id(record_source, name, own_id)
                if not row.get("locator"):
                    locator = f"{locator}#id={own_id}"
            else:
                record_id = own_id or ""
            extra = {"ingested_at": row["ingested_at"]} if row.get("ingested_at") else {}
            yield RawRecord(
                text=text,
                source=record_source,
                licence=row.get("licence") or licence,
                locator=locator,
                title=row.get("title"),
                id=record_id,
                # Parquet text is Unicode already; an "encoding" column (the raw lake's) says
                # what the original bytes were.
                encoding=row.get("encoding"),
                **extra,
            )
