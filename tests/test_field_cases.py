"""The field cases in ../shared/field-cases/ (real-world inputs that once failed), each through
the command its README names, with its right result. Skipped where shared/ is not beside
the project; the unit tests hold the same classes on literal inputs."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hkgai_pipelines.cli import app

FIELD_CASES = Path(__file__).resolve().parents[2] / "shared" / "field-cases"
pytestmark = pytest.mark.skipif(not FIELD_CASES.is_dir(), reason="no ../shared/field-cases beside the project")


def _curate(tmp_path, name):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["curate", str(FIELD_CASES / name), "--out", str(out)])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["input_records"] == stats["kept"] + stats["rejected"] + stats["quarantined"]
    kept = pq.read_table(out / "cleaned.parquet").to_pylist()
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    return stats, kept, rejected


def _lines(name):
    return [line for line in (FIELD_CASES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_01_bom_jsonl(tmp_path):
    stats, kept, _ = _curate(tmp_path, "01_bom.jsonl")
    assert (stats["kept"], stats["quarantined"]) == (2, 0)
    assert kept[0]["text"].startswith("今日")


def test_02_shards_reusing_ids(tmp_path):
    stats, kept, _ = _curate(tmp_path, "02_shards")
    assert stats["kept"] == 4
    assert len({row["id"] for row in kept}) == 4


def test_03_big5_hkscs_page(tmp_path):
    stats, kept, _ = _curate(tmp_path, "03_notice_big5hkscs.html")
    assert (stats["kept"], stats["quarantined"]) == (1, 0)
    assert "𨋢" in kept[0]["text"]
    assert kept[0]["encoding"] == "big5hkscs"


@pytest.mark.parametrize("name", ["04_short_cantonese.txt", "05_simplified_cantonese.txt"])
def test_cantonese_lines_are_yue(name):
    lines = _lines(name)
    output = CliRunner().invoke(app, ["langid"], input="\n".join(lines) + "\n").output
    labels = [json.loads(line)["lang"] for line in output.splitlines()]
    assert labels == ["yue"] * len(lines)


@pytest.mark.parametrize(
    "name, placeholders",
    [
        ("06_pii_fullwidth.txt", [["<PHONE>"], ["<HKID>"], ["<EMAIL>"]]),
        ("07_pii_invisible.txt", [["<EMAIL>"], ["<PHONE>"], ["<EMAIL>"]]),
        ("08_pii_hk_prefix4.txt", [["<PHONE>"], ["<PHONE>"]]),
        ("15_pii_email_underscore.txt", [["<EMAIL>"]]),
    ],
)
def test_pii_written_forms_are_redacted(name, placeholders):
    output = CliRunner().invoke(app, ["redact"], input=(FIELD_CASES / name).read_text(encoding="utf-8")).output
    lines = [line for line in output.splitlines() if line.strip()]
    assert [[p for p in ("<PHONE>", "<HKID>", "<EMAIL>") if p in line] for line in lines] == placeholders
    assert not any(ch.isdigit() for ch in output)


def test_15_underscore_email_exact():
    output = CliRunner().invoke(app, ["redact"], input=(FIELD_CASES / "15_pii_email_underscore.txt").read_text(encoding="utf-8")).output
    assert output.strip() == "聯絡：<EMAIL>"


@pytest.mark.parametrize("name", ["06_pii_fullwidth.txt", "07_pii_invisible.txt"])
def test_pii_does_not_reach_the_curated_corpus(tmp_path, name):
    _, kept, rejected = _curate(tmp_path, name)
    texts = [row["text"] for row in kept + rejected]
    assert texts and not any(ch.isdigit() or "@" in text for text in texts for ch in text)


def test_12_gbk_mojibake_repaired_or_rejected(tmp_path):
    stats, kept, rejected = _curate(tmp_path, "12_gbk_mojibake.jsonl")
    assert [row["text"] for row in kept] == ["我哋今日去咗飲茶"]
    assert [(row["step"], row["reason"]) for row in rejected] == [("repair", "mojibake")]


def test_13_news_page_main_content(tmp_path):
    stats, kept, _ = _curate(tmp_path, "13_news_page.html")
    assert stats["kept"] == 1
    text = kept[0]["text"]
    assert text.splitlines()[0] == "天文台：明日天氣炎熱"
    assert "天文台預測" in text and "紫外線指數" in text
    for furniture in ("首頁", "港聞", "分享到", "版權所有", "私隱政策", "WhatsApp"):
        assert furniture not in text
