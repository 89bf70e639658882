from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hkgai_pipelines.sources import QuarantineRecord, RawRecord, SourceSpec, load_catalog, stable_record_id
from hkgai_pipelines.sources.catalog import CatalogError
from hkgai_pipelines.sources.ingest import ingest_source, raw_paths
from hkgai_pipelines.sources.readers import join_tokens, read_source

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_stable_id_depends_on_source_locator_and_text():
    first = stable_record_id("ctcpc", "sents.json#1", "你好")
    assert first == stable_record_id("ctcpc", "sents.json#1", "你好")
    assert len(first) == 20
    assert first != stable_record_id("ctcpc", "sents.json#2", "你好")
    assert first != stable_record_id("hkcancor", "sents.json#1", "你好")
    # the separator keeps field boundaries: ("ab","c") is not ("a","bc")
    assert stable_record_id("ab", "c", "x") != stable_record_id("a", "bc", "x")


def test_utc_now_is_the_current_second_and_moves_with_the_clock(monkeypatch):
    from hkgai_pipelines.sources import records

    clock = [1_796_222_220.9]  # 2026-12-02T14:37:00.9Z
    monkeypatch.setattr(records.time, "time", lambda: clock[0])
    assert records.utc_now() == "2026-12-02T14:37:00+00:00"
    clock[0] += 0.05
    assert records.utc_now() == "2026-12-02T14:37:00+00:00"
    clock[0] += 1
    assert records.utc_now() == "2026-12-02T14:37:01+00:00"
    assert RawRecord(text="x", source="s", licence="l", locator="f:1").ingested_at == "2026-12-02T14:37:01+00:00"


def test_project_catalog_declares_every_kind():
    catalog = load_catalog(PROJECT_ROOT / "configs" / "sources.yaml")
    assert catalog.names == ["hkcancor", "ctcpc", "hsk_sentences", "hk_knowledge", "local_samples"]
    assert catalog.get("ctcpc").licence == "CC0-1.0"
    assert catalog.get("hk_knowledge").rag is True


def test_unknown_kind_names_file_and_entry(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  - {name: web, kind: crawler, licence: x}\n")
    with pytest.raises(CatalogError, match=r"sources.yaml: source #1 \(web\): unknown kind 'crawler'"):
        load_catalog(path)


def test_missing_catalog_and_missing_fields(tmp_path):
    with pytest.raises(CatalogError, match="source catalog not found"):
        load_catalog(tmp_path / "nope.yaml")
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  - {name: a, kind: ctcpc}\n")
    with pytest.raises(CatalogError, match="source #1: missing licence"):
        load_catalog(path)


def test_join_tokens_spaces_only_between_latin_words():
    assert join_tokens(["我", "聽", "朋友", "講", "Orlando", "嗰個"]) == "我聽朋友講Orlando嗰個"
    assert join_tokens(["send", "email", "俾", "佢"]) == "send email俾佢"


def test_ctcpc_first_records_exact():
    items = list(read_source(SourceSpec("ctcpc", "ctcpc", "CC0-1.0", {"max_records": 3})))
    assert [item.locator for item in items] == ["sents.json#0", "sents.json#1", "sents.json#2"]
    assert items[1].text == "\" ... 軍隊會開槍打你 ， 同埋哈馬斯會綁架你哋 。 “"
    assert all(item.licence == "CC0-1.0" for item in items)


def test_hkcancor_groups_utterances():
    items = list(read_source(SourceSpec("hkcancor", "hkcancor", "CC-BY-4.0", {"utterances_per_record": 12})))
    assert len(items) == 1381
    first = items[0]
    assert first.locator == "FC-001_v2.cha#u0-11"
    assert first.text.split("\n")[:2] == ["喂遲啲去唔去旅行啊?", "你老公有冇平機票啊?"]


def test_hsk_sentences_simplified_and_english():
    items = list(read_source(SourceSpec("hsk", "hsk_sentences", "CC-BY-SA-4.0", {"fields": ["chinese", "en"]})))
    assert len(items) == 2 * 4354
    assert (items[0].locator, items[0].text) == ("hsk1-0001#chinese", "老师，您好！")
    assert (items[1].locator, items[1].text) == ("hsk1-0001#en", "Hello, teacher!")


def _knowledge(folder: Path, name: str, front: str, body: str) -> None:
    (folder / name).write_text(f"---\n{front}---\n{body}\n", encoding="utf-8")


def test_hk_knowledge_reads_front_matter_and_quarantines_bad_docs(tmp_path):
    _knowledge(tmp_path, "a.md", "title: 港鐵\nsource: MTR\nlang: zh-hant\n", "港鐵於一九七九年通車。")
    _knowledge(tmp_path, "b.md", "title: MPF\nsource: MPFA\nlang: en\n", "MPF started in 2000.")
    (tmp_path / "c.md").write_text("no front matter", encoding="utf-8")
    # tmp_path is outside the project: it must be an allowed root (catalog.source_root).
    items = list(read_source(SourceSpec("kb", "hk_knowledge", "CC-BY-4.0", {"path": str(tmp_path)}, allowed_roots=(tmp_path.resolve(),))))
    records = [i for i in items if isinstance(i, RawRecord)]
    assert [(r.title, r.text) for r in records] == [("港鐵", "港鐵\n\n港鐵於一九七九年通車。"), ("MPF", "MPF\n\nMPF started in 2000.")]
    assert items[2] == QuarantineRecord("c.md", None, "c.md: missing YAML front matter", "kb")


def test_packaged_knowledge_documents_cover_three_languages():
    items = list(read_source(SourceSpec("hk_knowledge", "hk_knowledge", "CC-BY-4.0")))
    assert all(isinstance(i, RawRecord) for i in items)
    assert len(items) >= 40
    prefixes = {i.locator.split("-")[0] for i in items}
    assert prefixes == {"en", "zh", "yue"}


def test_local_files_counts_on_literal_fixtures(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "第一句"}\n{"text": "第二句"}\n{"nope": 1}\n', encoding="utf-8")
    (tmp_path / "b.txt").write_text("para one\nline two\n\npara two\n", encoding="utf-8")
    items = list(read_source(SourceSpec("mine", "local_files", "CC0-1.0", {"path": str(tmp_path)}, allowed_roots=(tmp_path.resolve(),))))
    records = [i for i in items if isinstance(i, RawRecord)]
    assert [(r.locator, r.text) for r in records] == [
        ("a.jsonl:1", "第一句"), ("a.jsonl:2", "第二句"), ("b.txt:1", "para one\nline two"), ("b.txt:4", "para two"),
    ]
    assert [i for i in items if isinstance(i, QuarantineRecord)] == [
        QuarantineRecord("a.jsonl", 3, "field 'text' is missing; expected a string", "mine")
    ]


def test_local_files_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="source mine: folder not found"):
        list(read_source(SourceSpec("mine", "local_files", "x", {"path": str(tmp_path / "absent")}, allowed_roots=(tmp_path.resolve(),))))


def test_ingest_writes_partition_and_ids_are_stable(tmp_path):
    spec = SourceSpec("ctcpc", "ctcpc", "CC0-1.0", {"max_records": 20})
    first = ingest_source(spec, tmp_path / "lake1")
    second = ingest_source(spec, tmp_path / "lake2")
    assert first.records == 20
    assert first.table.column("id").to_pylist() == second.table.column("id").to_pylist()
    assert first.content_hash == second.content_hash
    path, quarantine = raw_paths(tmp_path / "lake1", "ctcpc")
    assert pq.read_table(path).num_rows == 20
    assert quarantine.read_text() == ""
    # nothing half-written is left beside the partition
    assert sorted(p.name for p in path.parent.iterdir()) == ["ctcpc.parquet", "ctcpc.quarantine.jsonl"]


def test_failed_write_leaves_previous_partition(tmp_path, monkeypatch):
    spec = SourceSpec("ctcpc", "ctcpc", "CC0-1.0", {"max_records": 5})
    result = ingest_source(spec, tmp_path)
    before = result.path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("hkgai_pipelines.sources.lake.pq.write_table", explode)
    with pytest.raises(OSError, match="disk full"):
        ingest_source(SourceSpec("ctcpc", "ctcpc", "CC0-1.0", {"max_records": 9}), tmp_path)
    assert result.path.read_bytes() == before
    assert not [p for p in result.path.parent.iterdir() if p.name.endswith(".tmp")]
