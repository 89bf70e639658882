"""Read user files (.jsonl, .txt, .parquet, .html) into records, quarantining what is unreadable.

Shared by the `local_files` source kind and `hkgai curate`. Every problem becomes a
`QuarantineRecord(file, line, error)` instead of an exception, so one bad file never stops a
run and the counts still add up. Only a path that does not exist raises: that is a usage
error, not bad data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord

SUPPORTED_SUFFIXES = (".jsonl", ".txt", ".parquet", ".html", ".htm")

#: A single record above this size is quarantined: no real document in these corpora is
#: anywhere near 10 MB, and one such line would dominate a training batch.
DEFAULT_MAX_RECORD_BYTES = 10 * 1024 * 1024

# Bytes read to decide whether a file is binary (the same heuristic git uses: a NUL byte).
_BINARY_SNIFF_BYTES = 8192

FileItem = RawRecord | QuarantineRecord


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
) -> Iterator[FileItem]:
    for path in expand_inputs(paths):
        yield from read_file(path, source=source, licence=licence, root=root, max_record_bytes=max_record_bytes)


def read_file(
    path: Path,
    *,
    source: str,
    licence: str,
    root: Path | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[FileItem]:
    name = _display_name(path, root)

    def quarantine(line: int | None, error: str) -> QuarantineRecord:
        return QuarantineRecord(file=name, line=line, error=error, source=source)

    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        yield quarantine(None, f"unsupported file type {suffix or '(none)'!r}; expected {', '.join(SUPPORTED_SUFFIXES)}")
        return
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(_BINARY_SNIFF_BYTES)
    except OSError as error:
        yield quarantine(None, f"unreadable file: {error.strerror or error}")
        return
    if size == 0:
        yield quarantine(None, "empty file")
        return
    if suffix == ".parquet":
        yield from _read_parquet(path, name, source, licence, max_record_bytes)
        return
    if b"\x00" in head:
        yield quarantine(None, "binary file (NUL bytes) where text was expected")
        return
    reader = {".jsonl": _read_jsonl, ".txt": _read_txt, ".html": _read_html, ".htm": _read_html}[suffix]
    yield from reader(path, name, source, licence, max_record_bytes)


def _display_name(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return str(path)


def _too_large(size: int, limit: int) -> str:
    return f"record of {size} bytes exceeds the {limit}-byte limit"


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return None, f"invalid UTF-8 at byte {error.start}: {raw[error.start:error.start + 4]!r}"


def _read_jsonl(path: Path, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            complete = raw.endswith(b"\n")
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            if len(raw) > limit:
                yield QuarantineRecord(name, number, _too_large(len(raw), limit), source)
                continue
            line, error = _decode(raw)
            if error:
                yield QuarantineRecord(name, number, error, source)
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                kind = "truncated JSON record" if not complete else "invalid JSON"
                yield QuarantineRecord(name, number, f"{kind}: {exc.msg} at column {exc.colno}", source)
                continue
            if not isinstance(obj, dict):
                yield QuarantineRecord(name, number, f"expected a JSON object, got {type(obj).__name__}", source)
                continue
            text = obj.get("text")
            if not isinstance(text, str):
                found = "missing" if "text" not in obj else f"of type {type(text).__name__}"
                yield QuarantineRecord(name, number, f"field 'text' is {found}; expected a string", source)
                continue
            yield RawRecord(
                text=text,
                source=str(obj.get("source") or source),
                licence=str(obj.get("licence") or licence),
                locator=f"{name}:{number}",
                title=obj.get("title") if isinstance(obj.get("title"), str) else None,
                id=str(obj["id"]) if obj.get("id") else "",
            )


def _read_txt(path: Path, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    """One record per paragraph (blank-line separated); the locator is its first line."""
    paragraph: list[str] = []
    start = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > limit:
                yield QuarantineRecord(name, number, _too_large(len(raw), limit), source)
                continue
            line, error = _decode(raw.rstrip(b"\r\n"))
            if error:
                yield QuarantineRecord(name, number, error, source)
                continue
            if line.strip():
                if not paragraph:
                    start = number
                paragraph.append(line)
                continue
            if paragraph:
                yield _paragraph_record(paragraph, name, start, source, licence, limit)
                paragraph = []
    if paragraph:
        yield _paragraph_record(paragraph, name, start, source, licence, limit)


def _paragraph_record(lines: list[str], name: str, start: int, source: str, licence: str, limit: int) -> FileItem:
    text = "\n".join(lines)
    size = len(text.encode("utf-8"))
    if size > limit:
        return QuarantineRecord(name, start, _too_large(size, limit), source)
    return RawRecord(text=text, source=source, licence=licence, locator=f"{name}:{start}")


def _read_html(path: Path, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    from bs4 import BeautifulSoup

    raw = path.read_bytes()
    if len(raw) > limit:
        yield QuarantineRecord(name, None, _too_large(len(raw), limit), source)
        return
    markup, error = _decode(raw)
    if error:
        yield QuarantineRecord(name, None, error, source)
        return
    soup = BeautifulSoup(markup, "html.parser")
    for element in soup(["script", "style", "noscript", "nav", "footer"]):
        element.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    body = soup.body or soup
    text = "\n".join(line.strip() for line in body.get_text("\n").splitlines() if line.strip())
    if not text:
        yield QuarantineRecord(name, None, "HTML has no visible text", source)
        return
    yield RawRecord(text=text, source=source, licence=licence, locator=name, title=title)


def _read_parquet(path: Path, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        yield QuarantineRecord(name, None, f"not a readable Parquet file: {error}", source)
        return
    columns = parquet.schema_arrow.names
    if "text" not in columns:
        yield QuarantineRecord(name, None, f"Parquet has no 'text' column (columns: {', '.join(columns)})", source)
        return
    wanted = [c for c in ("id", "text", "source", "licence", "locator", "title", "ingested_at") if c in columns]
    row_number = 0
    for batch in parquet.iter_batches(columns=wanted, batch_size=4096):
        for row in batch.to_pylist():
            row_number += 1
            text = row.get("text")
            if not isinstance(text, str):
                yield QuarantineRecord(name, row_number, "row has no text (null or not a string)", source)
                continue
            size = len(text.encode("utf-8"))
            if size > limit:
                yield QuarantineRecord(name, row_number, _too_large(size, limit), source)
                continue
            extra = {"ingested_at": row["ingested_at"]} if row.get("ingested_at") else {}
            yield RawRecord(
                text=text,
                source=row.get("source") or source,
                licence=row.get("licence") or licence,
                locator=row.get("locator") or f"{name}:{row_number}",
                title=row.get("title"),
                id=row.get("id") or "",
                **extra,
            )
