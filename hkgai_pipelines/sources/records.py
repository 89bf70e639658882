"""The record types every source reader produces."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone


def stable_record_id(source: str, locator: str, text: str) -> str:
    """Hash of (source, locator, content): the same input always gets the same id."""
    digest = hashlib.sha256()
    for part in (source, locator, text):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")  # separator so ("ab", "c") and ("a", "bc") differ
    return digest.hexdigest()[:20]


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601 ("2026-12-02T14:37:00+00:00").

    Every record takes one, and formatting a datetime cost more than reading the record:
    the text of the current second is made once and reused until the clock moves on."""
    second = int(time.time())
    if _NOW[0] != second:
        _NOW[:] = [second, datetime.fromtimestamp(second, timezone.utc).isoformat(timespec="seconds")]
    return _NOW[1]


_NOW: list = [None, ""]


@dataclass(frozen=True)
class RawRecord:
    """One ingested document."""

    text: str
    source: str
    licence: str
    locator: str
    title: str | None = None
    id: str = ""
    ingested_at: str = field(default_factory=utc_now)
    #: The text encoding the record was decoded from ("utf-8", "utf-8-sig", "big5hkscs",
    #: "gb18030", "utf-16", ...); None where the source is not bytes (a packaged corpus).
    encoding: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", stable_record_id(self.source, self.locator, self.text))

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QuarantineRecord:
    """Input that could not be read as a record, with where it was and why."""

    file: str
    line: int | None
    error: str
    source: str = ""
    #: How many input records this record stands for: 1, except for a record that sums up
    #: the rest of a file's quarantine (files.MAX_QUARANTINE_PER_FILE) or quarantines a whole
    #: Parquet file by its row count, so that input = kept + rejected + quarantined still holds.
    count: int = 1

    def to_row(self) -> dict:
        """The quarantine.jsonl row; `count` is written only when it is not 1, so ordinary
        rows stay (file, line, error, source) and rows written before it existed read back."""
        row = asdict(self)
        if self.count == 1:
            del row["count"]
        return row


#: What a reader yields for each input it meets: a record, or a quarantine record saying why not.
FileItem = RawRecord | QuarantineRecord
