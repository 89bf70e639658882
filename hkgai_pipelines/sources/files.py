"""Read user files (.jsonl, .txt, .parquet, .html, .warc, .warc.gz) into records, quarantining
what is unreadable.

Shared by the `local_files` source kind and `hkgai curate`. Every problem becomes a
`QuarantineRecord(file, line, error)` instead of an exception, so one bad file never stops a
run and the counts still add up. Only a path that does not exist raises: that is a usage
error, not bad data.

Input folders may hold anything, so they are walked without trusting them:

* Only regular files are opened. A FIFO, socket or device would block `open()` forever (or
  stream without end), so it is never opened: it becomes a quarantine record naming it and
  its kind, as does a file that turns into one between the check and the open.
* A symlink inside a given folder is followed only when its target lies inside that folder
  (the input root), and then once: a file or folder reached twice is read once. A link that
  leaves the root, a dangling link, a symlink loop and a folder that cannot be listed each
  become a quarantine record by name. Names starting with "." (`.git`, `.DS_Store`) are not
  inputs and are skipped.
* A name that is not valid UTF-8 (bytes from another system's file name encoding) is read
  all the same and shown with its bad bytes escaped (`bad\\xff.jsonl`), so no output ever
  carries a lone surrogate; neither does a record: a JSON string with a lone `\\ud800` escape
  is quarantined.
* A JSON line nested deeper than Python's recursion limit is quarantined alone.
* A blank line (whitespace only) in a JSONL file is no input record, as for jq and pandas'
  `read_json(lines=True)`: it is not counted, and the line numbers of the lines after it
  still count it.
* A Parquet column of a type that cannot be taken (an `id` that is not a string or a number,
  a `title` that is not a string) quarantines the file, with one record counting its rows.
* At most `MAX_QUARANTINE_PER_FILE` quarantine records are listed for one file (for one
  span of a file read in spans); one summary record carries the count of the rest, so a file
  of garbage cannot flood the quarantine. `fold_file_quarantine` folds the spans' lists of a
  file read in spans into one list of the same length when the quarantine is joined.

A large JSONL or Parquet file can be read in *spans* (`plan_spans`, `read_file(span=...)`):
byte ranges cut after a newline, with the lines before each counted so that line numbers
stay those of the whole file, or row ranges. The curation engine reads the spans in
parallel tasks; reading every span of a file in order yields what reading it whole yields,
up to the quarantine summary records.

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

import errno
import io
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from hkgai_pipelines.sources.decoding import HEAD_BYTES, Detection, decode_line, detect, iter_encoded_lines, redetect
from hkgai_pipelines.sources.records import FileItem, QuarantineRecord, RawRecord, stable_record_id
from hkgai_pipelines.sources.web import html_record, read_warc

#: File name endings read, matched against the whole name so that `.warc.gz` is one kind.
SUPPORTED_SUFFIXES = (".jsonl", ".txt", ".parquet", ".html", ".htm", ".warc", ".warc.gz")

#: A single record above this size is quarantined: no real document in these corpora is
#: anywhere near 10 MB, and one such line would dominate a training batch.
DEFAULT_MAX_RECORD_BYTES = 10 * 1024 * 1024

#: Quarantine records listed one by one for a single file; the rest are counted in one
#: summary record. A 1 GiB file of garbage once produced 4.2 million quarantine lines
#: (634 MB): nobody reads past the first screenful, and the file's problem is clear from
#: the first hundred.
MAX_QUARANTINE_PER_FILE = 100

#: Columns read from a Parquet input: `id` (a string or a number) and these strings.
_TEXT_COLUMNS = ("text", "source", "licence", "locator", "title", "ingested_at", "encoding")
_READ_COLUMNS = ("id",) + _TEXT_COLUMNS

#: Open flags for an input: O_NONBLOCK so that a file swapped for a FIFO after it was checked
#: does not block the open (it is then refused by the fstat that follows); O_NOCTTY so that a
#: terminal device never becomes the controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Span:
    """A part of one file read on its own. `unit` "bytes": bytes [start, stop) of a JSONL
    file, `start` 0 or the byte after a newline, `lines_before` the lines before `start`;
    "rows": rows [start, stop) of a Parquet file (0-based). `file_size`, `file_mtime_ns`: the
    file as it was planned (-1: not checked); a file that differs when a span is read is not
    read by that span (see `read_file`)."""

    unit: str
    start: int
    stop: int
    lines_before: int = 0
    file_size: int = -1
    file_mtime_ns: int = -1


@dataclass(frozen=True)
class InputEntry:
    """A file to read (`problem` None), or a path met while expanding the inputs that is not
    read, with why (`problem`). `name` is what records and quarantine records call it."""

    path: Path
    name: str
    problem: str | None = None


def expand_inputs(paths: Iterable[Path], exclude: Iterable[Path] = ()) -> list[Path]:
    """Regular files under the given files/folders, in sorted (stable) order; what is not read
    (special files, links leaving a folder, ...) is left out here and quarantined by
    `read_files`. Raises FileNotFoundError for a path that does not exist."""
    return [entry.path for entry in collect_inputs(paths, exclude=exclude) if entry.problem is None]


def read_files(
    paths: Iterable[Path],
    *,
    source: str,
    licence: str,
    root: Path | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    scope_ids: bool = True,
    exclude: Iterable[Path] = (),
) -> Iterator[FileItem]:
    """Records and quarantine records of every file under the given files/folders, less the
    folders in `exclude` (see `collect_inputs`).

    Raises FileNotFoundError for a given path that does not exist (before anything is read);
    every other problem is a quarantine record.
    """
    for entry in collect_inputs(paths, root, exclude=exclude):
        if entry.problem is not None:
            yield QuarantineRecord(entry.name, None, entry.problem, source)
            continue
        yield from read_file(
            entry.path, source=source, licence=licence, root=root, max_record_bytes=max_record_bytes,
            scope_ids=scope_ids, name=entry.name,
        )


def named_inputs(paths: Iterable[Path], root: Path | None = None, exclude: Iterable[Path] = ()) -> list[tuple[Path, str]]:
    """(path, name) of each regular file under the given files/folders; see `collect_inputs`,
    which also says what is not read. Raises FileNotFoundError for a path that does not exist."""
    return [(entry.path, entry.name) for entry in collect_inputs(paths, root, exclude) if entry.problem is None]


def collect_inputs(paths: Iterable[Path], root: Path | None = None, exclude: Iterable[Path] = ()) -> list[InputEntry]:
    """Each file under the given files/folders once (the same file given twice, or a folder
    and a file inside it, is read once), with the name its records are located and scoped by,
    and an entry with a `problem` for each path met that is not read.

    The name is the path relative to `root` when one is given; otherwise a folder's files are
    `<folder name>/<path inside it>` and a file is `<its folder's name>/<file name>`, so a
    record gets the same id however its path was typed (`curate s2`, `curate /data/s2/a.jsonl`)
    and on any machine. Bytes of a name that are not UTF-8 are shown escaped.

    A given folder is the input root of its walk: symlinks inside it are followed only to
    targets inside it. A given path is the caller's own choice and is followed wherever it
    points. Nothing is opened here.

    `exclude`: folders and files met in a walk that are not input at all (`hkgai curate`'s
    own output folder inside its input, or its outputs when it writes into an input folder):
    neither listed nor quarantined, nor entered through a link.

    Two different files of one call never share a name: when the rule above gives one name to
    two (`dupA/data/x.jsonl` and `dupB/data/x.jsonl` are both `data/x.jsonl`), every name of
    the call is made relative to the folder all the given paths' folders share
    (`_distinct_names`): the same input ids in both would otherwise give both files' records
    the same record ids, and the second file's were rejected as duplicate ids.

    Raises FileNotFoundError for a given path that does not exist (a dangling or looping
    symlink given by name exists, and is a quarantine record).
    """
    given_paths = [Path(p) for p in paths]
    for given in given_paths:  # usage errors first, before any walking
        if not os.path.lexists(given):
            raise FileNotFoundError(f"input not found: {given}")
    entries: list[tuple[InputEntry, Path]] = []  # each with the folder its name is relative to
    seen_files: set[Path] = set()
    # A folder already "walked" is skipped silently, which is what an excluded folder needs.
    walked: set[Path] = {Path(os.path.realpath(folder)) for folder in exclude}
    for given in given_paths:
        try:
            st = os.stat(given)
        except OSError as error:
            entries.append((InputEntry(given, printable(str(given)), _unresolvable(error)), Path(os.path.abspath(given)).parent))
            continue
        real = Path(os.path.realpath(given))
        # What names are relative to: the root, or the folder above the given folder or file's folder.
        base = Path(root).resolve() if root is not None else real.parent if stat.S_ISDIR(st.st_mode) else real.parent.parent
        if stat.S_ISDIR(st.st_mode):
            found = _walk(real, base, walked)
        elif stat.S_ISREG(st.st_mode):
            found = [InputEntry(real, _display_name(given, base))]
        else:
            found = [InputEntry(given, _display_name(given, base), _not_regular(st.st_mode))]
        for entry in found:
            if entry.problem is None:
                if entry.path in seen_files:
                    continue
                seen_files.add(entry.path)
            entries.append((entry, base))
    return _distinct_names(entries)


def _distinct_names(entries: list[tuple[InputEntry, Path]]) -> list[InputEntry]:
    """The entries, renamed when two different paths have one name: each relative name then
    gets its folder's path relative to the folder common to all of them in front. Without a
    clash the names stay as they are, so a file's ids do not depend on what else is given."""
    paths_by_name: dict[str, set[Path]] = {}
    for entry, _ in entries:
        paths_by_name.setdefault(entry.name, set()).add(entry.path)
    if all(len(paths) == 1 for paths in paths_by_name.values()):
        return [entry for entry, _ in entries]
    common = Path(os.path.commonpath([str(base) for _, base in entries]))
    renamed = []
    for entry, base in entries:
        prefix = base.relative_to(common) if base.is_relative_to(common) else Path()
        if prefix.parts and not os.path.isabs(entry.name):
            entry = replace(entry, name=f"{printable(str(prefix))}/{entry.name}")
        renamed.append(entry)
    return renamed


#: Names that mark a folder below a given input folder as `hkgai curate`'s outputs.
CURATION_OUTPUT_MARKERS = frozenset({"cleaned.parquet", "stats.json"})
#: A file `hkgai curate --parts-dir` writes into its parts folder: the part files and keys of
#: an incremental run read as input by a later run (one without --parts-dir, or with another)
#: came back as records and as quarantined key files.
CURATION_PARTS_MARKER = ".hkgai-curation-parts"


def _walk(top: Path, base: Path, walked: set[Path]) -> list[InputEntry]:
    """Entries under the real folder `top` (its input root), sorted by path as `rglob` was.

    An explicit stack, not recursion: a hostile tree can be deeper than the recursion limit.
    `walked` holds the real folders already listed (by this or an earlier given folder), so a
    folder reached again through a link is not listed twice; a link to a folder above it is
    a loop and is quarantined by name.
    """
    found: list[InputEntry] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        if folder in walked:
            continue
        walked.add(folder)
        try:
            with os.scandir(folder) as listing:
                names = sorted(item.name for item in listing)
        except OSError as error:
            found.append(InputEntry(folder, _walk_name(folder, base), f"unreadable folder: {error.strerror or error}"))
            continue
        if folder != top and CURATION_OUTPUT_MARKERS <= set(names):
            # Another curation's outputs inside the input would come back as input (its kept
            # records as duplicates of themselves): named in the quarantine, not read.
            found.append(InputEntry(folder, _walk_name(folder, base), "a curation output folder (cleaned.parquet, stats.json): not read as input"))
            continue
        if folder != top and CURATION_PARTS_MARKER in names:
            found.append(InputEntry(folder, _walk_name(folder, base), "a curation parts folder (hkgai curate --parts-dir): not read as input"))
            continue
        for item_name in names:
            if item_name.startswith("."):
                continue
            path = folder / item_name
            try:
                st = os.lstat(path)
            except OSError as error:  # removed while we looked
                found.append(InputEntry(path, _walk_name(path, base), f"unreadable entry: {error.strerror or error}"))
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    st = os.stat(path)
                except OSError as error:
                    found.append(InputEntry(path, _walk_name(path, base), _unresolvable(error)))
                    continue
                target = Path(os.path.realpath(path))
                if not target.is_relative_to(top):
                    found.append(InputEntry(path, _walk_name(path, base), "symlink leaves the input root"))
                    continue
                if stat.S_ISDIR(st.st_mode) and folder.is_relative_to(target):
                    # A link to a folder that contains it would be walked forever.
                    found.append(InputEntry(path, _walk_name(path, base), "symlink loop (points to a folder above it)"))
                    continue
                path = target
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
            elif stat.S_ISREG(st.st_mode):
                if path not in walked:  # an excluded file (see collect_inputs)
                    found.append(InputEntry(path, _walk_name(path, base)))
            else:
                found.append(InputEntry(path, _walk_name(path, base), _not_regular(st.st_mode)))
    found.sort(key=lambda entry: entry.path)
    return found


def _walk_name(path: Path, base: Path) -> str:
    """The name of a path met in a walk: relative to `base` as it stands (both are real
    folders, and a link is named by where it sits, not by where it points)."""
    try:
        relative = path.relative_to(base)
    except ValueError:
        return printable(str(path))
    return printable(str(relative) if relative.parts else str(path))


def _unresolvable(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "dangling symlink (its target does not exist)"
    return f"unresolvable symlink: {error.strerror or error}"


def _not_regular(mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"),
    ]
    kind = next((label for test, label in kinds if test(mode)), "a special file")
    return f"not a regular file ({kind}); not opened"


def read_file(
    path: Path,
    *,
    source: str,
    licence: str,
    root: Path | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    scope_ids: bool = True,
    name: str | None = None,
    span: Span | None = None,
) -> Iterator[FileItem]:
    """Records of one file; never raises for what the file holds or is (a missing, unreadable
    or special file is a quarantine record).

    `scope_ids=False` keeps Parquet ids as they are: for the raw lake's own partitions, whose
    ids are already final and scoped (an input id is scoped when it is first read).
    `span`: only that part of the file (`plan_spans`), its quarantine records listed up to
    MAX_QUARANTINE_PER_FILE on their own. A file whose size or modification time is no longer
    the span's is one quarantine record for the span ("changed since it was planned"): its cuts
    no longer fall after newlines, nor its rows where they were.
    """
    name = printable(name or _display_name(path, root))
    where = "in this file" if span is None else f"in {span.unit} {span.start}-{span.stop} of this file"
    yield from _guarded(_read_file(Path(path), name, source, licence, max_record_bytes, scope_ids, span), name, source, where)


def plan_spans(path: Path, target_bytes: int, max_spans: int) -> list[Span] | None:
    """The spans to read a large file in, each about `target_bytes` (more when the file would
    otherwise need over `max_spans`), or None when it is read whole: a file of at most
    `target_bytes`, or one not readable in spans (a kind other than JSONL and Parquet, an
    encoding whose newline is not one byte, a file that cannot be opened or parsed; the reader
    then says why). JSONL: one pass over the bytes counting newlines (about 1 GB/s, against
    about 0.3 MB/s a core for the curation steps). Parquet: from its footer, rows in
    proportion to the uncompressed size."""
    kind = file_kind(path)
    try:
        if kind == ".jsonl":
            return _line_spans(path, target_bytes, max_spans)
        if kind == ".parquet":
            return _row_spans(path, target_bytes, max_spans)
    except (OSError, _NotRegular, pa.ArrowException):
        return None
    return None


#: Bytes read at once when counting a file's newlines.
_COUNT_CHUNK = 4 * 1024 * 1024


def _line_spans(path: Path, target_bytes: int, max_spans: int) -> list[Span] | None:
    handle, size = _open_regular(path)
    with handle:
        mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
        target = max(target_bytes, -(-size // max_spans))
        if size <= target:
            return None
        head = handle.read(HEAD_BYTES)
        detection = detect(head, final=size <= len(head), line_based=True)
        if not detection.ok or detection.unit != 1:
            return None
        handle.seek(0)
        spans, start, lines_before = [], 0, 0
        position, lines, cut_from = 0, 0, target
        while chunk := handle.read(_COUNT_CHUNK):
            # Cuts in this chunk: after the first newline at or past each target point.
            while cut_from < position + len(chunk):
                newline = chunk.find(b"\n", max(cut_from - position, 0))
                if newline == -1:
                    break
                cut = position + newline + 1
                spans.append(Span("bytes", start, cut, lines_before, size, mtime_ns))
                start, lines_before = cut, lines + chunk.count(b"\n", 0, newline + 1)
                cut_from = cut + target
            lines += chunk.count(b"\n")
            position += len(chunk)
        if position != size:
            return None  # changed while counted: read whole, as it is when read
        if start < position:
            spans.append(Span("bytes", start, position, lines_before, size, mtime_ns))
    return spans if len(spans) > 1 else None


def _row_spans(path: Path, target_bytes: int, max_spans: int) -> list[Span] | None:
    handle, size = _open_regular(path)
    with handle:
        mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
        metadata = pq.ParquetFile(handle).metadata
    rows = metadata.num_rows
    uncompressed = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if uncompressed <= target_bytes or rows < 2:
        return None
    per_span = max(1, rows * target_bytes // uncompressed, -(-rows // max_spans))
    spans = [Span("rows", start, min(start + per_span, rows), 0, size, mtime_ns) for start in range(0, rows, per_span)]
    return spans if len(spans) > 1 else None


class _Window(io.RawIOBase):
    """Bytes [start, stop) of an open file as a stream of their own (read with `os.pread`).
    Not the span's bytes in memory: a slice ends at the first newline past its target, so one
    over-long line makes it as long as that line, which the line reader skips in chunks."""

    def __init__(self, fd: int, start: int, stop: int) -> None:
        super().__init__()
        self._fd, self._start, self._length, self._position = fd, start, stop - start, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._length - self._position)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._start + self._position)
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)


def _read_file(path: Path, name: str, source: str, licence: str, max_record_bytes: int, scope_ids: bool,
               span: Span | None = None) -> Iterator[FileItem]:
    def quarantine(line: int | None, error: str) -> QuarantineRecord:
        return QuarantineRecord(file=name, line=line, error=error, source=source)

    kind = file_kind(path)
    if kind is None:
        yield quarantine(None, f"unsupported file type {printable(_suffix(path))!r}; expected {', '.join(SUPPORTED_SUFFIXES)}")
        return
    try:
        handle, size = _open_regular(path)
    except _NotRegular as problem:
        yield quarantine(None, str(problem))
        return
    except OSError as error:
        yield quarantine(None, f"unreadable file: {error.strerror or error}")
        return
    with handle:
        if span is not None and span.file_size >= 0 and (size, os.fstat(handle.fileno()).st_mtime_ns) != (span.file_size, span.file_mtime_ns):
            yield quarantine(None, f"changed since it was planned ({span.file_size} bytes then, {size} now): {span.unit} "
                                   f"{span.start}-{span.stop} not read")
            return
        try:
            yield from _read_open_file(handle, path, kind, size, name, source, licence, max_record_bytes, scope_ids, span)
        except OSError as error:
            # A disk error half-way (EIO) or a file truncated under us: what was read stands.
            yield quarantine(None, f"unreadable file: {error.strerror or error}")


def _read_open_file(
    handle: BinaryIO, path: Path, kind: str, size: int, name: str, source: str, licence: str, max_record_bytes: int, scope_ids: bool,
    span: Span | None = None,
) -> Iterator[FileItem]:
    head = handle.read(HEAD_BYTES)
    if size == 0:
        yield QuarantineRecord(name, None, "empty file", source)
        return
    if kind == ".parquet":
        yield from _read_parquet(handle, name, source, licence, max_record_bytes, scope_ids, span)
        return
    if kind in (".warc", ".warc.gz"):
        # warcio reads by path; the path was just checked to be a regular file.
        yield from read_warc(path, name, source, licence, max_record_bytes)
        return
    if kind in (".html", ".htm"):
        yield from _read_html(handle, name, source, licence, max_record_bytes, size)
        return
    # One encoding per file, from its head (the whole file when it is small). A file whose
    # head has NUL bytes and is not UTF-16/32 text is binary.
    detection = detect(head, final=size <= len(head), line_based=True)
    if not detection.ok:
        yield QuarantineRecord(name, None, detection.error or "undecodable", source)
        return
    if span is not None and kind == ".jsonl" and detection.unit == 1:
        # The span's bytes as a stream of their own; a byte-order mark is only at the start.
        handle = io.BufferedReader(_Window(handle.fileno(), span.start, span.stop))
        if span.start:
            detection = replace(detection, bom_length=0)
        yield from _read_jsonl(handle, detection, name, source, licence, max_record_bytes, span.lines_before)
        return
    reader = {".jsonl": _read_jsonl, ".txt": _read_txt}[kind]
    yield from reader(handle, detection, name, source, licence, max_record_bytes)


class _NotRegular(Exception):
    """The path is not a regular file; the message says what it is."""


def _open_regular(path: Path) -> tuple[BinaryIO, int]:
    """A binary handle on `path` and its size, opened only if it is a regular file: checked
    before the open (a FIFO blocks in open(), a device may stream forever) and again on the
    open descriptor (the path may have been swapped in between). Raises _NotRegular or OSError."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _NotRegular(_not_regular(st.st_mode))
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(_not_regular(st.st_mode))
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _guarded(items: Iterator[FileItem], name: str, source: str, where: str = "in this file") -> Iterator[FileItem]:
    """The file's items with at most MAX_QUARANTINE_PER_FILE quarantine records listed, then
    one record counting the rest; and no lone surrogate in any string (the Parquet and JSON
    writers cannot encode one): a record with one is quarantined, an error message escaped."""
    listed = 0
    unlisted = 0
    for item in items:
        if isinstance(item, RawRecord):
            field_name = field_with_surrogate(item)
            if field_name is None:
                yield item
                continue
            item = QuarantineRecord(name, None, f"{printable(item.locator)}: field {field_name!r} is not valid Unicode (lone surrogate)", source)
        elif field_with_surrogate(item) is not None:
            item = replace(item, **{f.name: printable(getattr(item, f.name)) for f in fields(item) if isinstance(getattr(item, f.name), str)})
        if listed < MAX_QUARANTINE_PER_FILE:
            listed += 1
            yield item
        else:
            unlisted += item.count
    if unlisted:
        yield QuarantineRecord(name, None, _unlisted_error(unlisted, where), source, count=unlisted)


def _unlisted_error(unlisted: int, where: str) -> str:
    return f"... and {unlisted} more quarantined {where} (only the first {MAX_QUARANTINE_PER_FILE} are listed)"


def fold_file_quarantine(lines: Iterable[bytes]) -> Iterator[bytes]:
    """quarantine.jsonl lines (`QuarantineRecord.to_row` as JSON, in input order) with at most
    MAX_QUARANTINE_PER_FILE listed for each run of consecutive lines of one (file, source); the
    lines past them, summary lines included, are folded into one summary line at the end of
    the run whose `count` is the sum of theirs. The counts' total is unchanged.

    Why: a file read in spans lists up to the limit for each span (the spans are read apart),
    so a 1 GiB file of garbage in 1 MiB spans would list about 100,000 lines. A run is
    consecutive because a file's spans are consecutive in input order. A file's lines
    listed apart (a record quarantined by a step, keyed by its locator, in between) start a
    run of their own. Raises json.JSONDecodeError on a line that is not JSON."""
    run: tuple | None = None
    listed = 0
    unlisted = 0
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        key = (row.get("file"), row.get("source", ""))
        if key != run:
            if unlisted:
                yield _unlisted_line(run, unlisted)
            run, listed, unlisted = key, 0, 0
        if listed < MAX_QUARANTINE_PER_FILE:
            listed += 1
            yield line if line.endswith(b"\n") else line + b"\n"
        else:
            unlisted += int(row.get("count", 1))
    if unlisted:
        yield _unlisted_line(run, unlisted)


def _unlisted_line(run: tuple, unlisted: int) -> bytes:
    file, source = run
    row = QuarantineRecord(file, None, _unlisted_error(unlisted, "in this file"), source, count=unlisted).to_row()
    return json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def field_with_surrogate(item: FileItem) -> str | None:
    """The name of the first str field of `item` holding a lone surrogate, or None."""
    strings = [value for value in vars(item).values() if isinstance(value, str)]
    if not _has_surrogate("".join(strings)):  # one encode for the common case (no surrogate)
        return None
    for f in fields(item):
        value = getattr(item, f.name)
        if isinstance(value, str) and _has_surrogate(value):
            return f.name
    return None


def printable(text: str) -> str:
    """`text` with what cannot be written as UTF-8 escaped: a file name's undecodable bytes
    (surrogate-escaped by os.fsdecode) as `\\xff`, any other lone surrogate as `\\udc80`."""
    if not _has_surrogate(text):
        return text
    try:
        raw = os.fsencode(text)  # the name's original bytes
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


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
            return printable(str(Path(os.path.realpath(path)).relative_to(Path(root).resolve())))
        except ValueError:
            pass
    return printable(str(path))


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


def _json_text_field(obj: dict, key: str, default: str | None) -> tuple[str | None, str | None]:
    """(the value of a metadata field as text, or `default` when absent/empty; an error)."""
    value = obj.get(key)
    if value is None or value == "":
        return default, None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None, f"field {key!r} is of type {type(value).__name__}; expected a string"
    return str(value), None


def _decoded_lines(handle: BinaryIO, detection: Detection, name: str, source: str, limit: int, lines_before: int = 0):
    """Each line as (line, text, encoding), or a QuarantineRecord for a line over the size
    limit or one that does not decode (the text and JSONL readers share this). Line numbers
    count from `lines_before` + 1 (a span of a file).

    A file decided UTF-8 from an all-ASCII head (`Detection.from_ascii`) decides again at its
    first non-ASCII line: valid UTF-8 settles it; otherwise that line and those after it, up
    to HEAD_BYTES, are the sample (`decoding.redetect`) for the rest of the file (a span: the
    rest of the span, from the same kind of sample)."""
    lines = iter_encoded_lines(handle, detection, limit=limit)
    if lines_before:
        lines = (line._replace(number=line.number + lines_before) for line in lines)
    pending: list = []  # lines read ahead for a sample, to be decoded with its decision
    while True:
        line = pending.pop(0) if pending else next(lines, None)
        if line is None:
            return
        if line.raw is None or line.size > limit:
            yield QuarantineRecord(name, line.number, _too_large(line.size, limit), source)
            continue
        text, error, encoding = decode_line(line.raw, detection)
        if detection.from_ascii and not line.raw.isascii():
            if error:  # decided again from here, and this line decoded with that decision
                pending = [line, *_read_ahead(lines, HEAD_BYTES - len(line.raw))]
                sample = b"\n".join(ahead.raw for ahead in pending if ahead.raw is not None and ahead.size <= limit)
                detection = redetect(sample, detection)
                continue
            detection = replace(detection, from_ascii=False)  # valid UTF-8: settled
        if error:
            yield QuarantineRecord(name, line.number, error, source)
            continue
        yield line, text, encoding


def _read_ahead(lines: Iterator, budget: int) -> list:
    """Lines from `lines` until about `budget` bytes are taken (at least none)."""
    taken = []
    while budget > 0:
        line = next(lines, None)
        if line is None:
            break
        taken.append(line)
        budget -= line.size + 1
    return taken


def _read_jsonl(handle: BinaryIO, detection: Detection, name: str, source: str, licence: str, limit: int,
                lines_before: int = 0) -> Iterator[FileItem]:
    for item in _decoded_lines(handle, detection, name, source, limit, lines_before):
        if isinstance(item, QuarantineRecord):
            yield item
            continue
        line, text, encoding = item
        # A byte-order mark inside the file: shards with BOMs concatenated with `cat`.
        text = text.rstrip("\r").lstrip("\ufeff")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            kind = "truncated JSON record" if not line.complete else "invalid JSON"
            # Some of json's messages end in "at" ("Unterminated string starting at").
            yield QuarantineRecord(name, line.number, f"{kind}: {exc.msg.removesuffix(' at')} at column {exc.colno}", source)
            continue
        except RecursionError:
            # The parser recurses once per level; the rest of the file is still read.
            yield QuarantineRecord(name, line.number, "JSON nested too deep (beyond Python's recursion limit)", source)
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
        record_source, source_error = _json_text_field(obj, "source", source)
        record_licence, licence_error = _json_text_field(obj, "licence", licence)
        field_error = id_error or source_error or licence_error
        if field_error:
            yield QuarantineRecord(name, line.number, field_error, source)
            continue
        title = obj.get("title") if isinstance(obj.get("title"), str) else None
        # "\ud800" is valid JSON but not valid Unicode: no writer can store it.
        bad = next((key for key, value in (("text", body), ("id", own_id), ("source", record_source),
                                          ("licence", record_licence), ("title", title))
                    if value is not None and _has_surrogate(value)), None)
        if bad:
            yield QuarantineRecord(name, line.number, f"field {bad!r} has a lone surrogate escape (not valid Unicode)", source)
            continue
        locator = f"{name}:{line.number}"
        yield RawRecord(
            text=body,
            source=record_source,
            licence=record_licence,
            locator=f"{locator}#id={own_id}" if own_id is not None else locator,
            title=title,
            id=scoped_id(record_source, name, own_id) if own_id is not None else "",
            encoding=encoding,
        )


def _read_txt(handle: BinaryIO, detection: Detection, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    """One record per paragraph (blank-line separated); the locator is its first line."""
    paragraph: list[str] = []
    encodings: set[str] = set()
    start = 0

    def flush() -> FileItem:
        # A paragraph whose lines came in two encodings says so ("big5hkscs+utf-8").
        return _paragraph_record(paragraph, name, start, source, licence, limit, "+".join(sorted(encodings)))

    for item in _decoded_lines(handle, detection, name, source, limit):
        if isinstance(item, QuarantineRecord):
            yield item
            continue
        line, text, encoding = item
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


def _read_html(handle: BinaryIO, name: str, source: str, licence: str, limit: int, size: int) -> Iterator[FileItem]:
    """A page is one document: decoded as a whole (its `<meta charset>` counts), main content only."""
    if size > limit:
        yield QuarantineRecord(name, None, _too_large(size, limit), source)
        return
    handle.seek(0)
    yield html_record(handle.read(limit + 1), name=name, locator=name, source=source, licence=licence)


def _column_type_error(name: str, column_type: pa.DataType) -> str | None:
    """Why a Parquet column of this type cannot be read, or None when it can."""
    if pa.types.is_dictionary(column_type):
        column_type = column_type.value_type
    string_view = getattr(pa.types, "is_string_view", lambda _: False)  # pyarrow >= 16
    if any(test(column_type) for test in (pa.types.is_null, pa.types.is_string, pa.types.is_large_string, string_view)):
        return None
    if name == "id" and (pa.types.is_integer(column_type) or pa.types.is_floating(column_type)):
        return None
    expected = "a string or a number" if name == "id" else "a string"
    return f"'{name}' is {column_type}, expected {expected}"


def _read_parquet(handle: BinaryIO, name: str, source: str, licence: str, limit: int, scope_ids: bool,
                  span: Span | None = None) -> Iterator[FileItem]:
    try:
        parquet = pq.ParquetFile(handle)
        schema = parquet.schema_arrow
        total_rows = parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as error:
        yield QuarantineRecord(name, None, f"not a readable Parquet file: {error}", source)
        return
    first, stop = (0, total_rows) if span is None else (min(span.start, total_rows), min(span.stop, total_rows))
    columns = schema.names
    if "text" not in columns:
        if not first:  # one record for the file, from its first span
            yield QuarantineRecord(name, None, f"Parquet has no 'text' column (columns: {', '.join(columns)})", source)
        return
    wanted = [c for c in _READ_COLUMNS if c in columns]
    # A column of the wrong type would put an int into a string field (or a struct into a
    # title) for every row alike: one record for the file, counting its rows (from the first
    # span when read in spans).
    type_errors = [e for e in (_column_type_error(c, schema.field(c).type) for c in wanted) if e]
    if type_errors:
        if not first:
            yield QuarantineRecord(name, None, f"Parquet column types not usable: {'; '.join(type_errors)}", source,
                                   count=max(total_rows, 1))
        return
    # The row groups that hold the span's rows, and the rows of the first one to skip.
    groups, skip, at = [], 0, 0
    for index in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(index).num_rows
        if at + rows > first and at < stop:
            if not groups:
                skip = first - at
            groups.append(index)
        at += rows
    row_number = first
    if not groups:
        return
    try:
        for batch in parquet.iter_batches(columns=wanted, batch_size=4096, row_groups=groups):
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            batch, skip = batch.slice(skip, stop - row_number), 0
            for row in batch.to_pylist():
                row_number += 1
                yield from _parquet_row(row, row_number, name, source, licence, limit, scope_ids)
            if row_number >= stop:
                break
    except (pa.ArrowException, OSError) as error:
        # A corrupt page: the rows not read are counted, so the totals still add up.
        yield QuarantineRecord(name, row_number + 1, f"Parquet data unreadable from row {row_number + 1} on: {error}", source,
                               count=max(stop - row_number, 1))


def _parquet_row(row: dict, row_number: int, name: str, source: str, licence: str, limit: int, scope_ids: bool) -> Iterator[FileItem]:
    text = row.get("text")
    if not isinstance(text, str):
        yield QuarantineRecord(name, row_number, "row has no text (null or not a string)", source)
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        yield QuarantineRecord(name, row_number, _too_large(size, limit), source)
        return
    own_id, id_error = input_id(row.get("id"))
    if id_error:
        yield QuarantineRecord(name, row_number, id_error, source)
        return
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
