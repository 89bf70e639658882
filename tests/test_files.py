"""Every bad-input kind becomes a quarantine record with a precise error."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hkgai_pipelines.sources.files import read_files
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord, stable_record_id


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
        QuarantineRecord("bad.jsonl", 4, "truncated JSON record: Unterminated string starting at column 10", "t"),
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
    assert _read(path) == [QuarantineRecord("doc.pdf", None, "unsupported file type '.pdf'; expected .jsonl, .txt, .parquet, .html, .htm, .warc, .warc.gz", "t")]
    with pytest.raises(FileNotFoundError, match="input not found"):
        list(read_files([tmp_path / "absent"], source="t", licence="x"))


# --- encodings: one per file, declared or detected, recorded on every record ---------------

NOTICE_PAGE = "<html><head>{meta}<title>屋苑通告</title></head><body><p>各位住戶：由於𨋢要維修，本週六上午九時至下午五時暫停服務，不便之處，敬請原諒。</p></body></html>"
NOTICE_TEXT = "各位住戶：由於𨋢要維修，本週六上午九時至下午五時暫停服務，不便之處，敬請原諒。"


def _records(items):
    return [(i.locator, i.encoding, i.title, i.text) for i in items]


@pytest.mark.parametrize("meta", ['<meta charset="big5-hkscs">', '<meta http-equiv="Content-Type" content="text/html; charset=big5">', ""])
def test_big5hkscs_page_declared_or_detected(tmp_path, meta):
    path = tmp_path / "notice.html"
    path.write_bytes(NOTICE_PAGE.format(meta=meta).encode("big5hkscs"))
    assert _records(_read(path)) == [("notice.html", "big5hkscs", "屋苑通告", NOTICE_TEXT)]


@pytest.mark.parametrize(("encoding", "recorded"), [("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be"), ("gb18030", "gb18030")])
def test_utf16_and_gb18030_text_files(tmp_path, encoding, recorded):
    path = tmp_path / "notes.txt"
    path.write_bytes("第一段：電梯維修。\r\n仍然係第一段。\r\n\r\n第二段：𠵱家返屋企。\r\n".encode(encoding))
    assert _records(_read(path)) == [
        ("notes.txt:1", recorded, None, "第一段：電梯維修。\n仍然係第一段。"),
        ("notes.txt:4", recorded, None, "第二段：𠵱家返屋企。"),
    ]


def test_bom_jsonl_with_crlf_line_ends(tmp_path):
    path = tmp_path / "excel.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + '{"text": "今日天氣好好"}\r\n{"text": "The MTR"}\r\n'.encode())
    assert _records(_read(path)) == [("excel.jsonl:1", "utf-8-sig", None, "今日天氣好好"), ("excel.jsonl:2", "utf-8-sig", None, "The MTR")]


def test_big5_jsonl_line_that_fails_is_quarantined_alone(tmp_path):
    path = tmp_path / "big5.jsonl"
    good = '{"text": "各位住戶：由於𨋢要維修，本週六暫停服務。"}\n'.encode("big5hkscs")
    path.write_bytes(good * 3 + b'{"text": "\xff\xff"}\n' + good)
    items = _read(path)
    assert [type(i).__name__ for i in items] == ["RawRecord"] * 3 + ["QuarantineRecord", "RawRecord"]
    assert items[3] == QuarantineRecord("big5.jsonl", 4, "invalid big5hkscs at byte 10: b'\\xff\\xff\"}'", "t")
    assert {i.encoding for i in items if isinstance(i, RawRecord)} == {"big5hkscs"}


def test_large_file_is_decided_from_its_head_and_streamed(tmp_path):
    # over 64 KiB: the encoding is decided from the head, a bad line far past it is quarantined
    lines = [f"第{n}段：電梯維修，𨋢暫停服務。" for n in range(3000)]
    data = "\n\n".join(lines[:2500]).encode("big5hkscs") + b"\n\n\xff\xfe\n\n" + "\n\n".join(lines[2500:]).encode("big5hkscs")
    assert len(data) > 64 * 1024
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    items = _read(path)
    assert len(items) == 3001
    assert items[2500] == QuarantineRecord("big.txt", 5001, "invalid big5hkscs at byte 0: b'\\xff\\xfe'", "t")
    assert (items[-1].locator, items[-1].text, items[-1].encoding) == ("big.txt:6001", "第2999段：電梯維修，𨋢暫停服務。", "big5hkscs")


def test_undecodable_page_is_quarantined_with_the_encodings_tried(tmp_path):
    path = tmp_path / "bad.html"
    path.write_bytes(b"<html><body><p>\xff\xff\xff</p></body></html>")
    assert _read(path) == [QuarantineRecord("bad.html", None, "undecodable: tried utf-8, big5hkscs, gb18030", "t")]


# --- record identity: input ids are scoped to source and file; 0 is an id -------------------

def test_shards_reusing_ids_get_distinct_record_ids(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "shard-00000.jsonl").write_text('{"id": 0, "text": "甲"}\n{"id": 1, "text": "乙"}\n', encoding="utf-8")
    (folder / "shard-00001.jsonl").write_text('{"id": "0", "text": "丙"}\n{"id": 1, "text": "丁"}\n', encoding="utf-8")
    items = list(read_files([folder], source="t", licence="x", root=folder))
    assert [i.locator for i in items] == ["shard-00000.jsonl:1#id=0", "shard-00000.jsonl:2#id=1", "shard-00001.jsonl:1#id=0", "shard-00001.jsonl:2#id=1"]
    assert len({i.id for i in items}) == 4
    assert items[0].id == stable_record_id("t", "shard-00000.jsonl#id=0", "")
    # the id names the record: the same input id in the same file keeps its record id
    assert items[2].id == stable_record_id("t", "shard-00001.jsonl#id=0", "")


def test_null_or_empty_id_is_missing_and_odd_ids_are_quarantined(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": null, "text": "甲"}\n{"id": "", "text": "乙"}\n{"id": [1], "text": "丙"}\n{"id": true, "text": "丁"}\n', encoding="utf-8")
    first, second, listed, boolean = _read(path)
    assert (first.locator, first.id) == ("ids.jsonl:1", stable_record_id("t", "ids.jsonl:1", "甲"))
    assert (second.locator, second.id) == ("ids.jsonl:2", stable_record_id("t", "ids.jsonl:2", "乙"))
    assert listed == QuarantineRecord("ids.jsonl", 3, "field 'id' is of type list; expected a string or an integer", "t")
    assert boolean == QuarantineRecord("ids.jsonl", 4, "field 'id' is of type bool; expected a string or an integer", "t")


def test_parquet_ids_scoped_for_user_files_kept_for_the_lake(tmp_path):
    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"id": [0, 1], "text": ["甲", "乙"]}), path)
    scoped = _read(path)
    assert [(i.locator, i.id) for i in scoped] == [
        ("part.parquet:1#id=0", stable_record_id("t", "part.parquet#id=0", "")),
        ("part.parquet:2#id=1", stable_record_id("t", "part.parquet#id=1", "")),
    ]
    assert [i.id for i in _read(path, scope_ids=False)] == ["0", "1"]


def test_raw_lake_round_trips_encoding_and_ids(tmp_path):
    from hkgai_pipelines.sources.ingest import iter_raw_lake, raw_paths
    from hkgai_pipelines.sources.lake import write_quarantine, write_raw_records

    page = tmp_path / "in" / "notice.html"
    page.parent.mkdir()
    page.write_bytes(NOTICE_PAGE.format(meta="").encode("big5hkscs"))
    (record,) = read_files([page], source="web", licence="x", root=page.parent)
    raw, quarantine = raw_paths(tmp_path / "lake", "web")
    write_raw_records([record, RawRecord(text="舊", source="web", licence="x", locator="a", id="kept-as-is")], raw)
    write_quarantine([], quarantine)
    back = list(iter_raw_lake(tmp_path / "lake", ["web"]))
    assert [(r.id, r.encoding, r.title, r.text) for r in back] == [
        (record.id, "big5hkscs", "屋苑通告", NOTICE_TEXT), ("kept-as-is", None, None, "舊")]
    # a lake written before the encoding column still reads
    pq.write_table(pa.table({"id": ["x1"], "text": ["舊湖"], "source": ["web"], "licence": ["x"], "locator": ["l"]}), raw)
    (old,) = list(iter_raw_lake(tmp_path / "lake", ["web"]))
    assert (old.id, old.encoding, old.text) == ("x1", None, "舊湖")


# --- the field cases, read where they live (never copied into the project) -----------------

FIELD_CASES = Path(__file__).resolve().parents[2] / "shared" / "field-cases"


def _field_cases():
    if not FIELD_CASES.is_dir():
        pytest.skip(f"field cases not present at {FIELD_CASES}")
    return FIELD_CASES


def test_field_case_01_bom_jsonl():
    items = list(read_files([_field_cases() / "01_bom.jsonl"], source="u", licence="x", root=FIELD_CASES))
    assert [(i.locator, i.encoding) for i in items] == [("01_bom.jsonl:1", "utf-8-sig"), ("01_bom.jsonl:2", "utf-8-sig")]
    assert items[0].text == "今日天氣好好，我哋去咗海灘玩咗成日。"


def test_field_case_02_shards():
    items = list(read_files([_field_cases() / "02_shards"], source="u", licence="x", root=FIELD_CASES))
    assert all(isinstance(i, RawRecord) for i in items)
    assert [i.locator for i in items] == [
        "02_shards/shard-00000.jsonl:1#id=0", "02_shards/shard-00000.jsonl:2#id=1",
        "02_shards/shard-00001.jsonl:1#id=0", "02_shards/shard-00001.jsonl:2#id=1",
    ]
    assert len({i.id for i in items}) == 4


def test_field_case_03_big5hkscs_notice():
    (item,) = read_files([_field_cases() / "03_notice_big5hkscs.html"], source="u", licence="x", root=FIELD_CASES)
    assert (item.encoding, item.title, item.text) == ("big5hkscs", "屋苑通告", NOTICE_TEXT)


def test_field_case_13_news_page_main_content():
    (item,) = read_files([_field_cases() / "13_news_page.html"], source="u", licence="x", root=FIELD_CASES)
    assert item.title == "港聞"
    assert item.text == (
        "天文台：明日天氣炎熱\n"
        "天文台預測，明日天氣炎熱，最高氣溫約三十四度，市民應避免長時間在戶外活動。\n"
        "另外，本港紫外線指數會達到甚高水平，天文台提醒市民做好防曬措施。"
    )


def test_whole_float_ids_are_ids_and_nan_is_missing(tmp_path):
    """pandas writes a nullable integer id column as floats."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [2.0, float("nan"), 1.5], "text": ["甲", "乙", "丙"]}), path)
    items = _read(path)
    assert [item.locator for item in items] == ["t.parquet:1#id=2", "t.parquet:2", "t.parquet:3#id=1.5"]


def test_a_file_is_named_the_same_however_its_path_is_typed(tmp_path, monkeypatch):
    shard = tmp_path / "s2" / "shard-00000.jsonl"
    shard.parent.mkdir()
    shard.write_text('{"id": 0, "text": "佢哋聽日去旺角。"}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    by_folder = list(read_files([Path("s2")], source="t", licence="x"))
    by_file = list(read_files([shard.resolve()], source="t", licence="x"))
    both = list(read_files([Path("s2"), shard.resolve(), Path("s2/shard-00000.jsonl")], source="t", licence="x"))
    assert [r.locator for r in by_folder] == [r.locator for r in by_file] == ["s2/shard-00000.jsonl:1#id=0"]
    assert by_folder[0].id == by_file[0].id
    assert len(both) == 1  # the same file given three ways is read once


def test_two_files_of_one_name_from_two_folders_keep_apart(tmp_path, monkeypatch):
    """A fresh-user trial: `curate dupA/data dupB/data` named both files `data/x.jsonl`, so
    both records with input id 0 got one record id and the second was rejected as a duplicate
    id. Names are made relative to the common folder only when they would clash."""
    for folder, text in (("dupA", "香港天文台發出黃色暴雨警告。"), ("dupB", "立法會三讀通過條例草案。")):
        (tmp_path / folder / "data").mkdir(parents=True)
        (tmp_path / folder / "data" / "x.jsonl").write_text(f'{{"id": 0, "text": "{text}"}}\n', encoding="utf-8")
    (tmp_path / "dupA" / "data" / "y.jsonl").write_text('{"id": 0, "text": "九龍"}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    both = list(read_files([Path("dupA/data"), Path("dupB/data")], source="t", licence="x"))
    assert [r.locator for r in both] == ["dupA/data/x.jsonl:1#id=0", "dupA/data/y.jsonl:1#id=0", "dupB/data/x.jsonl:1#id=0"]
    assert len({r.id for r in both}) == 3
    alone = list(read_files([Path("dupA/data")], source="t", licence="x"))  # no clash: names as before
    assert [r.locator for r in alone] == ["data/x.jsonl:1#id=0", "data/y.jsonl:1#id=0"]
    # A file given by name beside a folder whose file has the same name.
    mixed = list(read_files([Path("dupA/data/x.jsonl"), Path("dupB/data")], source="t", licence="x"))
    assert [r.locator for r in mixed] == ["dupA/data/x.jsonl:1#id=0", "dupB/data/x.jsonl:1#id=0"]


def test_utf8_lines_in_a_big5_file_are_read_as_utf8(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        '{"text": "第一行係UTF-8嘅"}\n'.encode("utf-8")
        + '{"text": "第二行係Big5嘅𨋢"}\n'.encode("big5hkscs")
        + '{"text": "第三行又係UTF-8"}\n'.encode("utf-8")
    )
    items = _read(path)
    assert [(item.text, item.encoding) for item in items] == [
        ("第一行係UTF-8嘅", "utf-8"), ("第二行係Big5嘅𨋢", "big5hkscs"), ("第三行又係UTF-8", "utf-8"),
    ]
