"""The data lake on disk: Parquet files written atomically (temp file, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord

RAW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("licence", pa.string()),
        ("locator", pa.string()),
        ("title", pa.string()),
        ("ingested_at", pa.string()),
        # Added with encoding detection; lakes written before it lack the column and still read.
        ("encoding", pa.string()),
    ]
)


def new_file_mode() -> int:
    """The mode a newly created file gets (0o666 less the umask): mkstemp's files are 0600,
    which other users of a shared volume cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(final: Path):
    """Yield a temporary path beside `final`; it replaces `final` only if the block succeeds.
    The file gets the normal mode for a new file (`new_file_mode`), not mkstemp's 0600."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(temp)
        os.chmod(temp, new_file_mode())
        os.replace(temp, final)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


@contextmanager
def held_exclusively(folder: Path, busy: Exception, on_wait: Callable[[], None] | None = None):
    """Hold an exclusive lock on `folder` (created if missing; the lock file `.lock` inside)
    for the block. When another process holds it: raises `busy` at once, or, given `on_wait`,
    calls it (to say why nothing happens) and waits until the holder lets go. The lock goes
    with the process (flock), so a killed holder never leaves it behind."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is None:
                raise busy from None
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_table_atomic(table: pa.Table, final: Path) -> None:
    with atomic_path(final) as temp:
        pq.write_table(table, temp, compression="zstd")


def write_raw_records(records: Iterable[RawRecord], final: Path) -> pa.Table:
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=RAW_SCHEMA)
    write_table_atomic(table, final)
    return table


def write_quarantine(records: Iterable[QuarantineRecord], final: Path) -> int:
    count = 0
    with atomic_path(final) as temp:
        with open(temp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record.to_row(), ensure_ascii=False) + "\n")
                count += 1
    return count


def read_quarantine(path: Path) -> list[QuarantineRecord]:
    if not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [QuarantineRecord(**json.loads(line)) for line in handle if line.strip()]
