"""Hostile inputs to the shared file reader (`hkgai curate`, `local_files`), each the literal
fault a tester found: the run never hangs or crashes, nothing outside the input is read,
every input that is not read is a quarantine record by name, and the counts add up."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from hkgai_pipelines.cli import app
from hkgai_pipelines.curation import pipeline
from hkgai_pipelines.curation.pipeline import run_curation
from hkgai_pipelines.sources import catalog
from hkgai_pipelines.sources.catalog import CatalogError, RootNotAllowedError, SourceSpec, load_catalog, local_files_root
from hkgai_pipelines.sources.files import MAX_QUARANTINE_PER_FILE, read_file, read_files
from hkgai_pipelines.sources.ingest import ingest_source
from hkgai_pipelines.sources.lake import read_quarantine
from hkgai_pipelines.sources.readers import read_source
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord

PROJECT_ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ["cleaned.parquet", "quarantine.jsonl", "rejected.parquet", "stats.json"]
GOOD_LINE = '{"text": "立法會每屆任期四年，主席由議員互選產生。"}\n'

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_hang():
    """A reader that blocks (open() on a FIFO) fails the test instead of hanging the suite."""

    def expire(*_):
        raise TimeoutError("the reader blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _curate(out: Path, *inputs: Path):
    result = runner.invoke(app, ["curate", *map(str, inputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    return stats, quarantine


def _adds_up(stats: dict) -> bool:
    return stats["input_records"] == stats["kept"] + stats["rejected"] + stats["quarantined"]


def _quarantine(items):
    return [(q.file, q.line, q.error) for q in items if isinstance(q, QuarantineRecord)]


# --- 1. special files are never opened ----------------------------------------------------

def test_curate_of_a_fifo_is_a_quarantine_record_not_a_hang(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "fifo.jsonl")
    stats, quarantine = _curate(tmp_path / "out", folder / "fifo.jsonl")
    assert quarantine == [
        {"file": "in/fifo.jsonl", "line": None, "error": "not a regular file (a FIFO); not opened", "source": "local_files"}
    ]
    assert (stats["input_records"], stats["quarantined"]) == (1, 1)


def test_fifo_socket_and_device_in_a_folder_or_given_are_quarantined(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    os.mkfifo(folder / "pipe.jsonl")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "s.txt"))
    try:
        items = list(read_files([folder, Path("/dev/null")], source="t", licence="x", root=None))
    finally:
        server.close()
    assert [i.locator for i in items if isinstance(i, RawRecord)] == ["in/a.jsonl:1"]
    assert _quarantine(items) == [
        ("in/pipe.jsonl", None, "not a regular file (a FIFO); not opened"),
        ("in/s.txt", None, "not a regular file (a socket); not opened"),
        ("dev/null", None, "not a regular file (a character device); not opened"),
    ]


def test_read_file_itself_refuses_a_fifo(tmp_path):
    """read_file is also called directly (the raw lake); it checks before it opens."""
    os.mkfifo(tmp_path / "lake.parquet")
    assert list(read_file(tmp_path / "lake.parquet", source="t", licence="x", root=tmp_path)) == [
        QuarantineRecord("lake.parquet", None, "not a regular file (a FIFO); not opened", "t")
    ]


# --- 2. symlinks, loops, unreadable folders -------------------------------------------------

@pytest.fixture
def linked_folder(tmp_path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text('{"text": "outside the input root, never read"}\n', encoding="utf-8")
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("旺角有好多人。\n", encoding="utf-8")
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    (folder / "outdir").symlink_to(outside, target_is_directory=True)
    (folder / "dangling.jsonl").symlink_to(folder / "missing.jsonl")
    (folder / "loop.jsonl").symlink_to(folder / "loop.jsonl")
    (folder / "up").symlink_to(folder, target_is_directory=True)
    (folder / "again.jsonl").symlink_to(folder / "a.jsonl")  # inside the root: read once
    (folder / "sublink").symlink_to(folder / "sub", target_is_directory=True)  # read once
    return folder


def test_symlinks_are_followed_inside_the_root_only_and_once(linked_folder):
    items = list(read_files([linked_folder], source="t", licence="x", root=linked_folder))
    assert [i.locator for i in items if isinstance(i, RawRecord)] == ["a.jsonl:1", "sub/b.txt:1"]
    assert _quarantine(items) == [
        ("dangling.jsonl", None, "dangling symlink (its target does not exist)"),
        ("loop.jsonl", None, "symlink loop"),
        ("outdir", None, "symlink leaves the input root"),
        ("passwd.txt", None, "symlink leaves the input root"),
        ("up", None, "symlink loop (points to a folder above it)"),
    ]


def test_etc_passwd_never_reaches_the_outputs(linked_folder, tmp_path):
    stats, quarantine = _curate(tmp_path / "out", linked_folder)
    rejected = pq.read_table(tmp_path / "out" / "rejected.parquet").column("text").to_pylist()
    cleaned = pq.read_table(tmp_path / "out" / "cleaned.parquet").column("text").to_pylist()
    assert not [text for text in rejected + cleaned if "root:" in text or "outside the input root" in text]
    assert {q["file"]: q["error"] for q in quarantine}["in/passwd.txt"] == "symlink leaves the input root"
    assert (stats["input_records"], stats["quarantined"]) == (7, 5)
    assert _adds_up(stats)


def test_a_symlink_given_on_the_command_line_is_the_users_choice(tmp_path):
    (tmp_path / "real.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    (folder / "dangling.jsonl").symlink_to(tmp_path / "absent.jsonl")
    items = list(read_files([folder / "link.jsonl", folder / "dangling.jsonl"], source="t", licence="x"))
    assert [i.text for i in items if isinstance(i, RawRecord)] == ["立法會每屆任期四年，主席由議員互選產生。"]
    assert _quarantine(items) == [(str(folder / "dangling.jsonl"), None, "dangling symlink (its target does not exist)")]


def test_unreadable_folder_is_quarantined_by_name_simulated(tmp_path, monkeypatch):
    """The same as the chmod 000 test below, for runs as root (root can list anything)."""
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    (folder / "a.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items = list(read_files([folder], source="t", licence="x", root=folder))
    assert _quarantine(items) == [("locked", None, "unreadable folder: Permission denied")]
    assert len([i for i in items if isinstance(i, RawRecord)]) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod 000 folder; the simulated test covers it")
def test_unreadable_folder_is_quarantined_by_name(tmp_path):
    folder = tmp_path / "in"
    locked = folder / "locked"
    locked.mkdir(parents=True)
    (locked / "x.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    (folder / "a.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    locked.chmod(0)
    try:
        stats, quarantine = _curate(tmp_path / "out", folder)
    finally:
        locked.chmod(stat.S_IRWXU)
    assert quarantine == [{"file": "in/locked", "line": None, "error": "unreadable folder: Permission denied", "source": "local_files"}]
    assert _adds_up(stats)


# --- 3. JSON nested too deep ------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_line_is_quarantined_and_the_rest_read(tmp_path, depth):
    path = tmp_path / "deep.jsonl"
    path.write_text(GOOD_LINE + '{"text": "x", "meta": ' + "[" * depth + "]" * depth + "}\n" + GOOD_LINE, encoding="utf-8")
    items = list(read_files([path], source="t", licence="x", root=tmp_path))
    assert [i.locator for i in items if isinstance(i, RawRecord)] == ["deep.jsonl:1", "deep.jsonl:3"]
    assert _quarantine(items) == [("deep.jsonl", 2, "JSON nested too deep (beyond Python's recursion limit)")]


# --- 4. Parquet columns of the wrong type -----------------------------------------------------

def test_parquet_integer_ids_are_ids(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": pa.array([7, 8], pa.int64()), "text": ["甲", "乙"]}), path)
    items = list(read_files([path], source="t", licence="x", root=tmp_path))
    assert [i.locator for i in items] == ["t.parquet:1#id=7", "t.parquet:2#id=8"]


@pytest.mark.parametrize(
    ("columns", "error"),
    [
        ({"title": pa.array([1, 2])}, "'title' is int64, expected a string"),
        ({"title": pa.array([{"a": 1}, {"a": 2}])}, "'title' is struct<a: int64>, expected a string"),
        ({"id": pa.array([True, False])}, "'id' is bool, expected a string or a number"),
        ({"source": pa.array([1, 2]), "locator": pa.array([[1], [2]])},
         "'source' is int64, expected a string; 'locator' is list<element: int64>, expected a string"),
        ({"text": pa.array([1, 2])}, "'text' is int64, expected a string"),
    ],
)
def test_parquet_column_of_the_wrong_type_quarantines_the_file_counting_its_rows(tmp_path, curation_params, columns, error):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["佢哋聽日去旺角。", "天文台話聽日落雨。"], **columns}), path)
    items = list(read_files([path], source="t", licence="x", root=tmp_path))
    assert items == [QuarantineRecord("t.parquet", None, f"Parquet column types not usable: {error}", "t", count=2)]
    result, _ = run_curation(items, curation_params, tmp_path / "out")
    assert (result.stats.input_records, result.stats.quarantined) == (2, 2)


# --- 5. file names that are not UTF-8, strings that are not Unicode ------------------------

def test_non_utf8_file_name_is_read_with_a_printable_name(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    raw_folder = os.fsencode(folder)
    with open(os.path.join(raw_folder, b"bad\xff.jsonl"), "wb") as handle:
        handle.write(GOOD_LINE.encode() + b"not json\n")
    with open(os.path.join(raw_folder, b"bad\xfe.pdf"), "wb") as handle:
        handle.write(b"%PDF")
    stats, quarantine = _curate(tmp_path / "out", folder)
    assert pq.read_table(tmp_path / "out" / "cleaned.parquet").column("locator").to_pylist() == ["in/bad\\xff.jsonl:1"]
    assert [(q["file"], q["line"], q["error"]) for q in quarantine] == [
        ("in/bad\\xfe.pdf", None, "unsupported file type '.pdf'; expected .jsonl, .txt, .parquet, .html, .htm, .warc, .warc.gz"),
        ("in/bad\\xff.jsonl", 2, "invalid JSON: Expecting value at column 1"),
    ]
    assert (stats["input_records"], stats["kept"], stats["quarantined"]) == (3, 1, 2)


def test_json_lone_surrogate_escapes_are_quarantined_not_written(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(GOOD_LINE + '{"text": "\\ud800 broken"}\n{"text": "ok fine", "title": "\\udfff"}\n', encoding="utf-8")
    stats, quarantine = _curate(tmp_path / "out", path)
    assert [(q["line"], q["error"]) for q in quarantine] == [
        (2, "field 'text' has a lone surrogate escape (not valid Unicode)"),
        (3, "field 'title' has a lone surrogate escape (not valid Unicode)"),
    ]
    assert (stats["input_records"], stats["kept"], stats["quarantined"]) == (3, 1, 2)


# --- 6. outputs replaced only when all four are written ---------------------------------------

def test_a_failure_while_writing_leaves_the_previous_outputs_untouched(tmp_path, curation_params, monkeypatch):
    out = tmp_path / "out"
    first = [RawRecord(text="立法會每屆任期四年，主席由議員互選產生。", source="s", licence="x", locator="l1"),
             QuarantineRecord("f.jsonl", 3, "invalid JSON", "s")]
    run_curation(first, curation_params, out)
    assert sorted(os.listdir(out)) == OUTPUTS
    before = {name: (out / name).read_bytes() for name in OUTPUTS}

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    # The two Parquet files are already written (to staging) when the quarantine writer fails.
    monkeypatch.setattr(pipeline, "write_quarantine", disk_full)
    second = [RawRecord(text="天文台預測明日天氣炎熱，最高氣溫約三十四度。", source="s", licence="x", locator="l2")]
    with pytest.raises(OSError, match="No space left on device"):
        run_curation(second, curation_params, out)
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert sorted(os.listdir(out)) == OUTPUTS  # the staging folder is gone


def test_a_successful_run_leaves_only_the_four_outputs(tmp_path, curation_params):
    out = tmp_path / "out"
    for text in ("立法會每屆任期四年，主席由議員互選產生。", "天文台預測明日天氣炎熱，最高氣溫約三十四度。"):
        run_curation([RawRecord(text=text, source="s", licence="x", locator="l")], curation_params, out)
    assert sorted(os.listdir(out)) == OUTPUTS
    assert pq.read_table(out / "cleaned.parquet").column("text").to_pylist() == ["天文台預測明日天氣炎熱，最高氣溫約三十四度。"]


# --- 7. quarantine capped per file, counts kept ----------------------------------------------

def test_a_file_of_garbage_lists_at_most_the_cap_and_counts_the_rest(tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_text(GOOD_LINE + "".join(f"garbage {n} {{{{\n" for n in range(1000)) + GOOD_LINE, encoding="utf-8")
    stats, quarantine = _curate(tmp_path / "out", path)
    assert len(quarantine) == MAX_QUARANTINE_PER_FILE + 1
    assert [q["line"] for q in quarantine[:MAX_QUARANTINE_PER_FILE]] == list(range(2, 102))
    assert quarantine[-1] == {
        "file": f"{tmp_path.name}/garbage.jsonl", "line": None, "source": "local_files", "count": 900,
        "error": "... and 900 more quarantined in this file (only the first 100 are listed)",
    }
    assert (stats["input_records"], stats["quarantined"]) == (1002, 1000)
    assert _adds_up(stats)


def test_oversized_lines_are_capped_too_and_the_cap_is_per_file(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("".join("x" * 200 + "\n" for _ in range(150)), encoding="utf-8")
    items = list(read_files([tmp_path], source="t", licence="x", root=tmp_path, max_record_bytes=100))
    for name in ("a.txt", "b.txt"):
        mine = [i for i in items if i.file == name]
        assert len(mine) == MAX_QUARANTINE_PER_FILE + 1
        assert mine[0] == QuarantineRecord(name, 1, "record of 200 bytes exceeds the 100-byte limit", "t")
        assert (mine[-1].error, mine[-1].count) == ("... and 50 more quarantined in this file (only the first 100 are listed)", 50)
    assert sum(i.count for i in items) == 300


def test_ingest_counts_what_the_summary_stands_for_and_the_lake_keeps_it(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "g.jsonl").write_text("".join("garbage\n" for _ in range(250)), encoding="utf-8")
    spec = SourceSpec("mine", "local_files", "x", {"path": str(folder)}, allowed_roots=(tmp_path.resolve(),))
    result = ingest_source(spec, tmp_path / "lake")
    assert result.quarantined == 250
    back = read_quarantine(result.quarantine_path)
    assert (len(back), back[-1].count, sum(q.count for q in back)) == (101, 150, 250)


# --- 8. local_files roots outside the project need an explicit allow-list ---------------------

def _catalog(tmp_path: Path, path: str, allowed_roots: list | None = None, name: str = "mine", kind: str = "local_files") -> Path:
    document = {"sources": [{"name": name, "kind": kind, "licence": "x", "options": {"path": path}}]}
    if allowed_roots is not None:
        document["allowed_roots"] = allowed_roots
    catalog_file = tmp_path / "sources.yaml"
    catalog_file.write_text(yaml.safe_dump(document))
    return catalog_file


@pytest.mark.parametrize("path", ["../..", "/etc", "hkgai_pipelines/../.."])
def test_local_files_outside_the_project_is_refused(tmp_path, path):
    with pytest.raises(RootNotAllowedError, match=r"sources.yaml: source mine: local_files path '.*' resolves to .*, outside the project directory .*; to read it, list it \(or a folder above it\) under 'allowed_roots:'"):
        load_catalog(_catalog(tmp_path, path))


def test_an_allowed_root_admits_a_folder_outside_the_project(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "a.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    spec = load_catalog(_catalog(tmp_path, str(folder), [str(tmp_path)])).get("mine")
    assert [i.locator for i in read_source(spec)] == ["a.jsonl:1"]


def test_relative_allowed_roots_are_resolved_against_the_project(tmp_path, monkeypatch):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    monkeypatch.setattr(catalog, "PROJECT_ROOT", project)
    assert local_files_root(load_catalog(_catalog(tmp_path, "../outside", ["../outside"])).get("mine")) == outside.resolve()
    with pytest.raises(RootNotAllowedError):
        load_catalog(_catalog(tmp_path, "../outside", ["../elsewhere"]))


def test_a_link_inside_the_project_leading_out_is_refused(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "data").symlink_to(tmp_path, target_is_directory=True)
    monkeypatch.setattr(catalog, "PROJECT_ROOT", project)
    with pytest.raises(RootNotAllowedError, match="resolves to"):
        load_catalog(_catalog(tmp_path, "data"))


def test_a_spec_built_in_code_is_checked_when_read(tmp_path):
    with pytest.raises(RootNotAllowedError):
        list(read_source(SourceSpec("mine", "local_files", "x", {"path": str(tmp_path)})))


def test_malformed_allowed_roots_is_a_catalog_error(tmp_path):
    with pytest.raises(CatalogError, match="'allowed_roots' must be a list of folder paths"):
        load_catalog(_catalog(tmp_path, "hkgai_pipelines/data/local_samples", "/data"))


def test_the_project_catalog_still_loads_and_its_demo_folder_is_inside(tmp_path):
    spec = load_catalog(PROJECT_ROOT / "configs" / "sources.yaml").get("local_samples")
    assert local_files_root(spec) == (PROJECT_ROOT / "hkgai_pipelines" / "data" / "local_samples").resolve()


def test_curate_paths_are_not_subject_to_the_allow_list(tmp_path):
    """A path typed on the command line is the user's own choice."""
    (tmp_path / "a.jsonl").write_text(GOOD_LINE, encoding="utf-8")
    stats, _ = _curate(tmp_path / "out", tmp_path / "a.jsonl")
    assert stats["kept"] == 1


# --- 9. hk_knowledge folders obey the same root rule and the same safe walk ------------------

KNOWLEDGE_DOC = "---\ntitle: MTR\nsource: test\nlang: en\n---\nThe MTR opened in 1979.\n"


def _knowledge_catalog(tmp_path: Path, path: str, allowed_roots: list | None) -> Path:
    return _catalog(tmp_path, path, allowed_roots, name="kb", kind="hk_knowledge")


def test_hk_knowledge_outside_the_project_is_refused_at_load_and_at_read(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "a.md").write_text(KNOWLEDGE_DOC, encoding="utf-8")
    with pytest.raises(RootNotAllowedError, match=r"sources.yaml: source kb: hk_knowledge path '.*' resolves to .*allowed_roots:"):
        load_catalog(_knowledge_catalog(tmp_path, str(folder), []))
    with pytest.raises(RootNotAllowedError):
        list(read_source(SourceSpec("kb", "hk_knowledge", "x", {"path": str(folder)})))
    spec = load_catalog(_knowledge_catalog(tmp_path, str(folder), [str(tmp_path)])).get("kb")
    assert [i.locator for i in read_source(spec)] == ["a.md"]


def test_hk_knowledge_quarantines_passwd_links_fifos_loops_and_dangling_links(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "a.md").write_text(KNOWLEDGE_DOC, encoding="utf-8")
    (folder / "passwd.md").symlink_to("/etc/passwd")
    os.mkfifo(folder / "fifo.md")
    (folder / "loop.md").symlink_to(folder / "loop.md")
    (folder / "gone.md").symlink_to(folder / "nowhere.md")
    (folder / "inside.md").symlink_to(folder / "a.md")
    spec = SourceSpec("kb", "hk_knowledge", "x", {"path": str(folder)}, allowed_roots=(tmp_path.resolve(),))
    items = list(read_source(spec))  # the FIFO is never opened: no hang (no_hang fixture)
    records = [i for i in items if isinstance(i, RawRecord)]
    assert [r.locator for r in records] == ["a.md"]  # inside.md is the same file, read once
    problems = {q.file: q.error for q in items if isinstance(q, QuarantineRecord)}
    assert problems == {
        "passwd.md": "symlink leaves the input root",
        "fifo.md": "not a regular file (a FIFO); not opened",
        "loop.md": "symlink loop",
        "gone.md": "dangling symlink (its target does not exist)",
    }
    assert all("root:" not in r.text for r in records)


def test_hk_knowledge_fifo_does_not_hang_ingest(tmp_path, monkeypatch):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "a.md").write_text(KNOWLEDGE_DOC, encoding="utf-8")
    os.mkfifo(folder / "fifo.md")
    configs = _config_dir(tmp_path, {"sources": [{"name": "kb", "kind": "hk_knowledge", "licence": "x", "options": {"path": str(folder)}}],
                                     "allowed_roots": [str(tmp_path)]})
    monkeypatch.setenv("HKGAI_CONFIG_DIR", str(configs))
    result = runner.invoke(app, ["ingest", "--out", str(tmp_path / "lake")])
    assert result.exit_code == 0, result.output
    assert "kb: 1 records, 1 quarantined" in result.output


def test_the_packaged_knowledge_folder_still_reads():
    spec = load_catalog(PROJECT_ROOT / "configs" / "sources.yaml").get("hk_knowledge")
    items = list(read_source(spec))
    assert len(items) >= 40 and all(isinstance(i, RawRecord) for i in items)


# --- 10. curate with --out inside its input ---------------------------------------------------

def test_curate_twice_with_the_output_inside_the_input_gives_the_same_result(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text(GOOD_LINE + '{"text": "港鐵於一九七九年通車，第一段是觀塘線。"}\nnot json\n', encoding="utf-8")
    out = data / "out"
    first = runner.invoke(app, ["curate", str(data), "--out", str(out)])
    assert first.exit_code == 0, first.output
    stats1 = json.loads((out / "stats.json").read_text())
    cleaned1 = pq.read_table(out / "cleaned.parquet")
    second = runner.invoke(app, ["curate", str(data), "--out", str(out)])
    assert second.exit_code == 0, second.output
    stats2 = json.loads((out / "stats.json").read_text())
    assert (stats2["input_records"], stats2["kept"], stats2["rejected"], stats2["quarantined"]) == \
        (stats1["input_records"], stats1["kept"], stats1["rejected"], stats1["quarantined"]) == (3, 2, 0, 1)
    assert pq.read_table(out / "cleaned.parquet").equals(cleaned1)
    assert second.output.count(f"skipping the output folder {out} inside the input") == 1
    quarantine = (out / "quarantine.jsonl").read_text(encoding="utf-8")
    assert "out/" not in quarantine


def test_curate_twice_into_its_own_input_folder_gives_the_same_result(tmp_path, monkeypatch):
    """A fresh-user trial: `hkgai curate . --out .` twice read the first run's outputs as
    input (input 3217, then 6435)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text(GOOD_LINE + '{"text": "港鐵於一九七九年通車，第一段是觀塘線。"}\nnot json\n', encoding="utf-8")
    monkeypatch.chdir(data)
    runs = [runner.invoke(app, ["curate", ".", "--out", "."]) for _ in range(3)]
    assert [run.exit_code for run in runs] == [0, 0, 0], runs[-1].output
    stats = json.loads((data / "stats.json").read_text())
    assert (stats["input_records"], stats["kept"], stats["rejected"], stats["quarantined"]) == (3, 2, 0, 1)
    assert all("skipping the outputs in . inside the input" in run.output for run in runs[1:])
    assert "skipping" not in runs[0].output  # nothing to skip yet


def test_another_runs_outputs_inside_the_input_are_named_not_read(tmp_path):
    """A fresh-user trial: `curate nest --out nest/out/sub` read nest/out's earlier outputs
    as input (1608 records instead of 803)."""
    data = tmp_path / "nest"
    data.mkdir()
    (data / "a.jsonl").write_text(GOOD_LINE + '{"text": "港鐵於一九七九年通車，第一段是觀塘線。"}\n', encoding="utf-8")
    assert runner.invoke(app, ["curate", str(data), "--out", str(data / "out")]).exit_code == 0
    second = runner.invoke(app, ["curate", str(data), "--out", str(data / "out" / "sub")])
    assert second.exit_code == 0, second.output
    stats = json.loads((data / "out" / "sub" / "stats.json").read_text())
    assert (stats["input_records"], stats["kept"], stats["quarantined"]) == (3, 2, 1)
    (line,) = (data / "out" / "sub" / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["file"] == "nest/out" and "curation output folder" in json.loads(line)["error"]


# --- 11. outputs get the normal mode for new files --------------------------------------------

def test_curate_outputs_get_the_umask_mode_not_0600(tmp_path, curation_params):
    old = os.umask(0o022)
    try:
        (tmp_path / "a.jsonl").write_text(GOOD_LINE, encoding="utf-8")
        run_curation(read_files([tmp_path / "a.jsonl"], source="s", licence="x"), curation_params, tmp_path / "out")
    finally:
        os.umask(old)
    assert {name: stat.S_IMODE(os.stat(tmp_path / "out" / name).st_mode) for name in OUTPUTS} == {name: 0o644 for name in OUTPUTS}


# --- 12. a refused catalog is one red line, exit 1 --------------------------------------------

def _config_dir(tmp_path: Path, document: dict | None = None) -> Path:
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", configs)
    if document is None:
        document = yaml.safe_load((configs / "sources.yaml").read_text(encoding="utf-8"))
        document["sources"][-1]["options"]["path"] = str(tmp_path)
        document["allowed_roots"] = []
    (configs / "sources.yaml").write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return configs


def test_ingest_with_an_outside_path_is_one_line_and_exit_1(tmp_path, monkeypatch):
    monkeypatch.setenv("HKGAI_CONFIG_DIR", str(_config_dir(tmp_path)))
    result = runner.invoke(app, ["ingest", "--out", str(tmp_path / "lake")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and not isinstance(result.exception, RootNotAllowedError)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("source catalog error:")
    assert "local_files path" in lines[0] and "outside the project directory" in lines[0]
