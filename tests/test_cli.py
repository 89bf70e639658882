"""`hkgai langid`, `redact` and `curate` follow the contract of ARCHITECTURE.md."""

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from hkgai_pipelines.cli import app

runner = CliRunner()


def test_langid_one_json_object_per_line():
    result = runner.invoke(app, ["langid"], input="佢哋聽日去旺角。\nThe MTR opened in 1979.\n他们明天去旺角。\n")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["lang"] for line in lines] == ["yue", "en", "zh-hans"]
    assert all(set(line) == {"lang", "score"} and 0 <= line["score"] <= 1 for line in lines)


def test_langid_invalid_utf8_line_still_answers():
    result = runner.invoke(app, ["langid"], input=b"\xff\xfe\n")
    assert result.exit_code == 0
    assert json.loads(result.stdout.splitlines()[0])["lang"] == "other"


def test_redact_replaces_pii_and_keeps_the_rest():
    text = "請致電 +852 2345 6789 或電郵 a@b.hk，身份證 A123456(3)，1997年回歸。\n"
    result = runner.invoke(app, ["redact"], input=text)
    assert result.exit_code == 0
    assert result.stdout == "請致電 <PHONE> 或電郵 <EMAIL>，身份證 <HKID>，1997年回歸。\n"


def test_curate_writes_the_four_outputs(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "佢哋聽日會去旺角食飯，你嚟唔嚟呀？"}\n{"text": "你好"}\nnot json\n', encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["curate", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["input_records"], stats["kept"], stats["rejected"], stats["quarantined"]) == (3, 1, 1, 1)
    assert pq.read_table(out / "cleaned.parquet").column("lang").to_pylist() == ["yue"]
    assert pq.read_table(out / "rejected.parquet").column("reason").to_pylist() == ["too_short"]
    (quarantined,) = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert (quarantined["file"].endswith("in.jsonl"), quarantined["line"]) == (True, 3)
    assert quarantined["error"].startswith("invalid JSON")


def test_curate_missing_input_exits_2(tmp_path):
    result = runner.invoke(app, ["curate", str(tmp_path / "absent"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2


def test_registry_commands_give_one_line_errors(hkgai_home):
    """An unknown or malformed version is one line naming the model and version, exit 1."""
    for args, expected in [
        (["approve", "99", "--reviewer", "x"], "hkgai-v1 v99: no such version"),
        (["approve", "v1", "--reviewer", "x"], "hkgai-v1: version must be a number such as 3, got 'v1'"),
        (["rollback", "--to", "99", "--by", "x"], "hkgai-v1 v99: no such version"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert expected in result.output
        assert "Traceback" not in result.output
