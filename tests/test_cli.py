"""`hkgai langid`, `redact` and `curate` follow the contract of ARCHITECTURE.md."""

import json
import os

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


def test_curate_incremental_with_a_report_and_a_held_parts_folder(tmp_path):
    """What the curation RayJob runs: --parts-dir keeps each input's part files (a second run
    processes nothing), --report writes the run, and a parts folder another run holds is refused."""
    import fcntl

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "佢哋聽日會去旺角食飯，你嚟唔嚟呀？"}\n', encoding="utf-8")
    (folder / "b.jsonl").write_text('{"text": "天文台預測明日天氣炎熱，最高氣溫約三十四度。"}\n', encoding="utf-8")
    parts, report = tmp_path / "parts", tmp_path / "reports" / "run.json"
    args = ["curate", str(folder), "--parts-dir", str(parts), "--work-dir", str(tmp_path / "work"), "--report", str(report)]
    for out, processed in (("v1", 2), ("v2", 0)):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        output = " ".join(result.output.split())
        assert f"incremental: {processed} input file(s) processed, {2 - processed} taken from" in output
        # The second run brings nothing new: its decision is the first run's index, extended by nothing.
        assert ("nothing new: the verdicts of the last run's dedup index" if processed == 0 else "decided over every record") in output
        written = json.loads(report.read_text())
        assert (written["processed_units"], written["cached_units"], written["kept"]) == (processed, 2 - processed, 2)
        assert written["out_dir"] == str(tmp_path / out) and len(written["content_hash"]) == 16
        assert "catalog" not in written  # files, not --lake
    with open(parts / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "v3")])
    assert result.exit_code == 1 and "another incremental curation with the parts folder" in result.output
    assert not list((tmp_path / "v3").glob(".curate-staging-*"))  # refused before the resume folder is made


def test_curate_refuses_a_file_for_a_folder_and_a_folder_for_the_report_before_any_work(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "佢哋聽日會去旺角食飯，你嚟唔嚟呀？"}\n', encoding="utf-8")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    for extra, said in ((["--parts-dir", str(tmp_path / "a-file")], "--parts-dir"), (["--work-dir", str(tmp_path / "a-file")], "--work-dir"),
                        (["--report", str(tmp_path / "a-folder")], "--report")):
        result = runner.invoke(app, ["curate", str(source), "--out", str(tmp_path / "out"), *extra])
        assert result.exit_code == 2 and said in result.output, result.output
        assert not (tmp_path / "out").exists()


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


def test_corpus_rollback_moves_the_link_and_cleaned_dvc_back(tmp_path, monkeypatch):
    import yaml

    from hkgai_pipelines.curation.versions import OutputVersions

    monkeypatch.setenv("HKGAI_HOME", str(tmp_path / "home"))
    from hkgai_pipelines.settings import get_settings

    lake = get_settings().lake_dir
    versions = OutputVersions(lake, "cleaned")
    made = []
    for kept, md5 in ((5, "a" * 32 + ".dir"), (6, "b" * 32 + ".dir")):
        version = versions.new_version()
        (version / "stats.json").write_text(json.dumps({"kept": kept, "rejected": 1, "quarantined": 0}))
        record = {"outs": [{"md5": md5, "size": 10, "nfiles": 1, "hash": "md5", "path": version.name}]}
        versions.make_current(version, record)
        made.append(version)
    (lake / "cleaned.dvc").write_text(yaml.safe_dump({"outs": [{"md5": "b" * 32 + ".dir", "path": f"cleaned.versions/{made[1].name}"}]}))

    listed = runner.invoke(app, ["corpus", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [
        f"  {made[0].name}  published  5 kept, 1 rejected, 0 quarantined  dvc {'a' * 32}.dir",
        f"* {made[1].name}  published  6 kept, 1 rejected, 0 quarantined  dvc {'b' * 32}.dir",
    ]
    result = runner.invoke(app, ["corpus", "rollback"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"cleaned: {made[1].name} -> {made[0].name}; cleaned.dvc records {made[0].name}\n"
    assert versions.current() == made[0] and json.loads((lake / "cleaned" / "stats.json").read_text())["kept"] == 5
    pointer = yaml.safe_load((lake / "cleaned.dvc").read_text())["outs"][0]
    assert (pointer["md5"], pointer["path"]) == ("a" * 32 + ".dir", f"cleaned.versions/{made[0].name}")
    assert runner.invoke(app, ["corpus", "list"]).stdout.splitlines()[1].startswith(f"  {made[1].name}  rolled back from  6 kept")
    refused = runner.invoke(app, ["corpus", "rollback", "--to", made[0].name])
    assert refused.exit_code == 1 and "it is already current" in refused.output


def test_corpus_commands_on_a_lake_from_before_versions_and_on_none(tmp_path, monkeypatch):
    monkeypatch.setenv("HKGAI_HOME", str(tmp_path / "home"))
    from hkgai_pipelines.settings import get_settings

    lake = get_settings().lake_dir
    refused = runner.invoke(app, ["corpus", "rollback"])
    assert refused.exit_code == 1 and "no versions to roll back to" in refused.output
    assert not (lake / "cleaned.versions").exists()  # refusing leaves nothing behind
    (lake / "cleaned").mkdir(parents=True)
    (lake / "cleaned" / "stats.json").write_text("{}")
    listed = runner.invoke(app, ["corpus", "list"])
    assert listed.exit_code == 0 and listed.stdout.startswith(f"* {lake / 'cleaned'} (a folder from before versions")


def test_corpus_restore_takes_only_a_version_and_mends_a_dangling_link(tmp_path, monkeypatch):
    """A fresh-user trial: `path: cleaned.versions/..` in cleaned.dvc made the lake itself the
    current corpus; a dangling `cleaned` link was taken for a current version."""
    import yaml

    monkeypatch.setenv("HKGAI_HOME", str(tmp_path / "home"))
    from hkgai_pipelines.settings import get_settings

    lake = get_settings().lake_dir
    version = lake / "cleaned.versions" / "v20261202T000000000000Z"
    version.mkdir(parents=True)
    (version / "stats.json").write_text(json.dumps({"kept": 3, "rejected": 0, "quarantined": 0}))
    (lake / "stats.json").write_text("{}")
    for path, message in (("cleaned.versions/..", "not a version in cleaned.versions/"),
                          ("../../etc", "not a version in cleaned.versions/")):
        (lake / "cleaned.dvc").write_text(yaml.safe_dump({"outs": [{"md5": "a" * 32 + ".dir", "path": path}]}))
        refused = runner.invoke(app, ["corpus", "restore"])
        assert refused.exit_code == 1 and message in refused.output and not (lake / "cleaned").exists(), refused.output
    (lake / "cleaned.dvc").unlink()
    (lake / "cleaned.dvc").mkdir()
    refused = runner.invoke(app, ["corpus", "restore"])
    assert refused.exit_code == 1 and "cannot be read" in refused.output and "Traceback" not in refused.output
    (lake / "cleaned.dvc").rmdir()
    (lake / "cleaned.dvc").write_text(yaml.safe_dump({"outs": [{"md5": "a" * 32 + ".dir", "path": f"cleaned.versions/{version.name}"}]}))
    not_a_repo = runner.invoke(app, ["corpus", "restore"])
    assert not_a_repo.exit_code == 1 and "is not a DVC repository" in not_a_repo.output, not_a_repo.output
    # A real record of the folder (what `dvc pull` leaves: the data and its cache).
    from hkgai_pipelines import versioning

    target = f"cleaned.versions/{version.name}"
    (lake / "cleaned.dvc").unlink()  # DVC refuses two records of one folder
    versioning.track_and_push(lake, target, str(tmp_path / "remote"))
    versioning.point(lake, "cleaned", target, versioning.read_record(lake, target))
    (lake / "cleaned").symlink_to("cleaned.versions/gone")
    restored = runner.invoke(app, ["corpus", "restore"])
    assert restored.exit_code == 0, restored.output
    assert (lake / "cleaned").resolve() == version.resolve()


def test_a_bad_params_section_read_by_any_command_is_one_line(tmp_path):
    """A fresh-user trial: `rag.alpha: abc` ended `hkgai index list` and `hkgai ask` in a
    traceback; the entry point prints the parameters error in one line, exit 2."""
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    params.write_text("rag: {alpha: abc}\n", encoding="utf-8")
    env = {**os.environ, "HKGAI_HOME": str(tmp_path / "home"), "HKGAI_PARAMS_FILE": str(params), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "hkgai_pipelines.cli", "index", "list"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "rag.alpha: 'abc' is not a number" in result.stdout + result.stderr and "Traceback" not in result.stderr
