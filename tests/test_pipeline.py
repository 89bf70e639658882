import json

import pyarrow.parquet as pq
import pytest

from hkgai_pipelines.curation.pipeline import run_curation
from hkgai_pipelines.sources.files import read_files
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord


def _record(text, i, source="s"):
    return RawRecord(text=text, source=source, licence="CC0-1.0", locator=f"l{i}")


def test_every_record_ends_in_exactly_one_output(tmp_path, curation_params):
    items = [
        _record("佢哋聽日會去旺角食飯，你嚟唔嚟呀？", 1),
        _record("佢哋聽日會去旺角食飯，你嚟唔嚟呀？", 2),  # exact duplicate of 1
        _record("他们明天会去旺角吃饭，你来不来？", 3),  # simplified -> s2hk
        _record("Please call me on +852 2345 6789 about the appointment.", 4),
        _record("こんにちは、元気ですか、今日は", 5),  # other language
        _record("你好", 6),  # too short
        _record("\x00\x01", 7),  # empty after repair
        QuarantineRecord("f.jsonl", 3, "invalid JSON", "s"),
    ]
    result, outputs = run_curation(items, curation_params, tmp_path)
    stats = result.stats
    assert (stats.input_records, stats.kept, stats.rejected, stats.quarantined) == (8, 3, 4, 1)
    assert dict(stats.by_reason) == {
        "dedup:exact_duplicate": 1, "langid:language_other": 1, "quality:too_short": 1, "repair:empty_after_repair": 1,
    }
    kept = pq.read_table(outputs.cleaned).to_pylist()
    assert [(r["lang"], r["text"]) for r in kept] == [
        ("yue", "佢哋聽日會去旺角食飯，你嚟唔嚟呀？"),
        ("zh-hans", "他們明天會去旺角吃飯，你來不來？"),
        ("en", "Please call me on <PHONE> about the appointment."),
    ]
    assert kept[1]["original_text"] == "他们明天会去旺角吃饭，你来不来？"
    assert kept[2]["pii_phone"] == 1
    rejected = pq.read_table(outputs.rejected).to_pylist()
    duplicate = next(r for r in rejected if r["reason"] == "exact_duplicate")
    assert (duplicate["step"], duplicate["cluster_id"]) == ("dedup", kept[0]["id"])
    quarantine = [json.loads(line) for line in outputs.quarantine.read_text().splitlines()]
    assert quarantine == [{"file": "f.jsonl", "line": 3, "error": "invalid JSON", "source": "s"}]
    written = json.loads(outputs.stats.read_text())
    assert written["input_records"] == written["kept"] + written["rejected"] + written["quarantined"]
    assert written["by_source"]["s"] == {"input": 8, "kept": 3, "rejected": 4, "quarantined": 1}


def test_rejected_text_is_redacted_too(tmp_path, curation_params):
    result, outputs = run_curation([_record("Bonjour, appelez-moi: jean@example.fr", 1)], curation_params, tmp_path)
    (row,) = pq.read_table(outputs.rejected).to_pylist()
    assert row["text"] == "Bonjour, appelez-moi: <EMAIL>"


def test_bad_files_flow_into_quarantine_and_counts_add_up(tmp_path, curation_params):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jsonl").write_text('{"text": "立法會每屆任期四年，主席由議員互選產生。"}\n{"text": "trunc', encoding="utf-8")
    (folder / "bin.txt").write_bytes(b"\x00\x01\x02")
    (folder / "empty.txt").write_bytes(b"")
    items = read_files([folder], source="u", licence="x", root=folder)
    result, _ = run_curation(items, curation_params, tmp_path / "out")
    assert (result.stats.input_records, result.stats.kept, result.stats.quarantined) == (4, 1, 3)


def test_content_hash_is_stable(tmp_path, curation_params):
    items = [_record("立法會每屆任期四年，主席由議員互選產生。", 1)]
    _, first = run_curation(items, curation_params, tmp_path / "a")
    _, second = run_curation(items, curation_params, tmp_path / "b")
    assert first.content_hash == second.content_hash


def test_every_rejection_writes_redacted_text(tmp_path, curation_params):
    """Rejections before the language step (duplicate id, mojibake, replacement characters)
    come after redaction: rejected.parquet never holds a phone number."""
    items = [
        RawRecord(text="請打 9123 4567 搵陳生，佢今日喺公司。", source="s", licence="x", locator="a", id="same"),
        RawRecord(text="請打 6123 4567 搵李小姐，佢聽日先返。", source="s", licence="x", locator="b", id="same"),
        _record("浠婂ぉ涓嬪崍鍙戝竷鏂扮殑閫氱煡锛岀郴缁熺淮鎶ら\ufffd氱煡 9123 4567", 3),
        _record("\ufffd\ufffd\ufffd\ufffd 電話 5123 4567", 4),
    ]
    result, outputs = run_curation(items, curation_params, tmp_path)
    rejected = pq.read_table(outputs.rejected).to_pylist()
    assert [(r["step"], r["reason"]) for r in rejected] == [
        ("repair", "duplicate_id"), ("repair", "mojibake"), ("repair", "replacement_characters"),
    ]
    assert [r["text"] for r in rejected] == [
        "請打 <PHONE> 搵李小姐，佢聽日先返。",
        "浠婂ぉ涓嬪崍鍙戝竷鏂扮殑閫氱煡锛岀郴缁熺淮鎶ら\ufffd氱煡 <PHONE>",
        "\ufffd\ufffd\ufffd\ufffd 電話 <PHONE>",
    ]


def test_mojibake_is_repaired_and_simplified_cantonese_converted(tmp_path, curation_params):
    items = [_record("鎴戝搵浠婃棩鍘诲挆椋茶尪", 1)]
    result, outputs = run_curation(items, curation_params, tmp_path)
    (kept,) = pq.read_table(outputs.cleaned).to_pylist()
    assert (kept["lang"], kept["text"]) == ("yue", "我哋今日去咗飲茶")
    assert result.stats.steps["repair"]["mojibake_repaired"] == 1


def test_titles_locators_and_quarantine_names_are_redacted(tmp_path, curation_params):
    items = [
        RawRecord(text="佢哋聽日會去旺角食飯，你嚟唔嚟呀？", source="s", licence="x",
                  locator="https://forum.example.hk/profile?email=chan.taiman@example.com&tel=91234567",
                  title="陳大文 9123 4567 chan@example.com A123456(3)"),
        QuarantineRecord("https://forum.example.hk/u?tel=+852 9123 4567", None, "HTTP 404 for https://forum.example.hk/u?tel=+852 9123 4567", "s"),
    ]
    result, outputs = run_curation(items, curation_params, tmp_path)
    (kept,) = pq.read_table(outputs.cleaned).to_pylist()
    assert kept["title"] == "陳大文 <PHONE> <EMAIL> <HKID>"
    assert kept["locator"] == "https://forum.example.hk/profile?email=<EMAIL>&tel=<PHONE>"
    (quarantined,) = [json.loads(line) for line in outputs.quarantine.read_text().splitlines()]
    assert quarantined["file"] == "https://forum.example.hk/u?tel=<PHONE>"
    assert quarantined["error"] == "HTTP 404 for https://forum.example.hk/u?tel=<PHONE>"


def test_stats_of_every_outcome_are_exact(tmp_path, curation_params):
    """The settle phase's counters on one item of each outcome (a quarantine summary standing
    for five inputs with no source, a repeated id, every step's rejection, a Mandarin line
    converted, a mojibake line repaired): a counter a reached step adds to is listed even at
    0 (boilerplate_lines_removed), as the per-row settle listed it."""
    items = [
        _record("佢哋聽日會去旺角食飯，你嚟唔嚟呀？", 1), _record("佢哋聽日會去旺角食飯，你嚟唔嚟呀？", 2),
        _record("他们明天会去旺角吃饭，你来不来？", 3), _record("Please call me on +852 2345 6789 about the appointment.", 4, "t"),
        _record("こんにちは、元気ですか、今日は", 5), _record("你好", 6), _record("\x00\x01", 7),
        QuarantineRecord("f.jsonl", 3, "invalid JSON", "s"), QuarantineRecord("g.jsonl", None, "summary", "", 5),
        RawRecord(text="請打 9123 4567 搵陳生，佢今日喺公司。", source="s", licence="x", locator="l8", id="same"),
        RawRecord(text="請打 6123 4567 搵李小姐，佢聽日先返。", source="s", licence="x", locator="l9", id="same"),
        _record("鎴戝搵浠婃棩鍘诲挆椋茶尪", 10),
    ]
    result, outputs = run_curation(items, curation_params, tmp_path)
    assert json.loads(outputs.stats.read_text()) == {
        "input_records": 16, "kept": 5, "rejected": 5, "quarantined": 6,
        "by_reason": {"dedup:exact_duplicate": 1, "langid:language_other": 1, "quality:too_short": 1,
                      "repair:duplicate_id": 1, "repair:empty_after_repair": 1},
        "by_lang": {"en": 1, "yue": 3, "zh-hans": 1},
        "by_source": {"(unknown)": {"input": 5, "quarantined": 5}, "s": {"input": 10, "kept": 4, "rejected": 5, "quarantined": 1},
                      "t": {"input": 1, "kept": 1}},
        "steps": {"repair": {"dropped": 2, "kept": 8, "mojibake_repaired": 1}, "pii": {"kept": 8, "redacted_docs": 2},
                  "langid": {"dropped": 1, "kept": 7}, "script": {"converted": 1, "kept": 7},
                  "quality": {"boilerplate_lines_removed": 0, "dropped": 1, "kept": 6}, "dedup": {"dropped": 1, "kept": 5}},
        "pii": {"PHONE": 3}, "script_converted": 1,
    }
    assert outputs.content_hash == "5be6bddb7cd26d29"
    rejected = pq.read_table(outputs.rejected).to_pylist()
    assert [(r["step"], r["reason"], r["similarity"] is None) for r in rejected] == [
        ("dedup", "exact_duplicate", False), ("langid", "language_other", True), ("quality", "too_short", True),
        ("repair", "empty_after_repair", True), ("repair", "duplicate_id", True),
    ]


@pytest.mark.parametrize("field_name", ["id", "title", "locator", "source", "licence"])
def test_a_handed_in_record_with_a_lone_surrogate_is_quarantined(tmp_path, curation_params, field_name):
    """The file readers quarantine such a record; a caller handing records to `run_curation`
    directly got a UnicodeEncodeError from Arrow instead. Now the same quarantine record, the
    name escaped, and the other record kept; counts add up and the outputs are written."""
    fields = {"text": "佢哋聽日會去旺角食飯，你嚟唔嚟呀？", "source": "s", "licence": "x", "locator": "f:1", "id": "a"}
    fields[field_name] = fields.get(field_name, "t") + "\ud83d"
    good = RawRecord(text="今日天氣好好，我哋去飲茶。", source="s", licence="x", locator="f:2", id="b")
    result, _ = run_curation([RawRecord(**fields), good], curation_params, tmp_path)
    assert (result.stats.input_records, result.stats.kept, result.stats.quarantined) == (2, 1, 1)
    [quarantined] = result.quarantined
    locator = "f:1\\ud83d" if field_name == "locator" else "f:1"
    assert quarantined.error == f"{locator}: field {field_name!r} is not valid Unicode (lone surrogate)"
    assert quarantined.source == ("s\\ud83d" if field_name == "source" else "s")
    assert (tmp_path / "quarantine.jsonl").read_text(encoding="utf-8").count("lone surrogate") == 1
