"""Every bad-input kind becomes a quarantine record with a precise error."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hkgai_pipelines.sources.files import read_files
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord


def _read(path, **kwargs):
    return list(read_files([path], source="t", licence="CC0-1.0", root=path.parent, **kwargs))


def test_invalid_utf8_line_is_quarantined_and_the_rest_kept(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe bad"}\n{"text": "fine"}\n')
    items = _read(path)
    assert [i.text for i in items if isinstance(i, RawRecord)] == ["ok", "fine"]
    assert items[1] == QuarantineRecord("x.jsonl", 2, "invalid UTF-8 at byte 10: b'\\xff\\xfe b'", "t")


def test_binary_file(tmp_path):
    path = tmp_path / "blob.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert _read(path) == [QuarantineRecord("blob.txt", None, "binary file (NUL bytes) where text was expected", "t")]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert _read(path) == [QuarantineRecord("empty.jsonl", None, "empty file", "t")]


def test_fifty_megabyte_single_line(tmp_path):
    path = tmp_path / "huge.txt"
    path.write_bytes(b"a" * (50 * 1024 * 1024))
    assert _read(path) == [QuarantineRecord("huge.txt", 1, "record of 52428800 bytes exceeds the 10485760-byte limit", "t")]


def test_jsonl_wrong_schema_and_truncated_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"body": "x"}\n{"text": 3}\n[1, 2]\n{"text": "cut', encoding="utf-8")
    assert _read(path) == [
        QuarantineRecord("bad.jsonl", 1, "field 'text' is missing; expected a string", "t"),
        QuarantineRecord("bad.jsonl", 2, "field 'text' is of type int; expected a string", "t"),
        QuarantineRecord("bad.jsonl", 3, "expected a JSON object, got list", "t"),
        QuarantineRecord("bad.jsonl", 4, "truncated JSON record: Unterminated string starting at at column 10", "t"),
    ]


def test_parquet_without_text_column(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["a"], "lang": ["en"]}), path)
    assert _read(path) == [QuarantineRecord("t.parquet", None, "Parquet has no 'text' column (columns: body, lang)", "t")]


def test_parquet_null_text_row_and_corrupt_file(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a sentence", None]}), path)
    items = _read(path)
    assert items[0].text == "a sentence"
    assert items[1] == QuarantineRecord("t.parquet", 2, "row has no text (null or not a string)", "t")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    (item,) = _read(broken)
    assert item.error.startswith("not a readable Parquet file")


def test_html_keeps_visible_text_and_title(tmp_path):
    path = tmp_path / "p.html"
    path.write_text("<html><head><title>標題</title><script>x()</script></head><body><nav>menu</nav><p>正文一</p><p>正文二</p></body></html>", encoding="utf-8")
    (item,) = _read(path)
    assert (item.title, item.text) == ("標題", "正文一\n正文二")


def test_unsupported_extension_and_missing_input(tmp_path):
    path = tmp_path / "doc.pdf"
    path.write_bytes(b"%PDF")
    assert _read(path) == [QuarantineRecord("doc.pdf", None, "unsupported file type '.pdf'; expected .jsonl, .txt, .parquet, .html, .htm", "t")]
    with pytest.raises(FileNotFoundError, match="input not found"):
        list(read_files([tmp_path / "absent"], source="t", licence="x"))
