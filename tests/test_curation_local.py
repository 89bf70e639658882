"""The curation engine's local executor (curation/engine.py, no Ray): the same outputs as the
single-process path and as Ray, batch after batch in this process; which executor a run gets;
`hkgai curate` without options."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from hkgai_pipelines.cli import app
from hkgai_pipelines.curation import engine
from hkgai_pipelines.curation.pipeline import OUTPUT_NAMES, run_curation
from hkgai_pipelines.curation.versions import OutputVersions
from hkgai_pipelines.sources.files import read_files
from tests.curation_corpus import KEPT, REJECTED, read_outputs, summary, write_corpus


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """These runs must not touch Ray: no session, no cluster address."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("shards") / "corpus")


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_local_executor_gives_the_single_process_outputs(corpus, curation_params, tmp_path, batch_size):
    out = tmp_path / "out"
    run = engine.curate_files([corpus], curation_params, out, licence="x", batch_size=batch_size)
    assert (run.workers, run.cluster) == (1, "this process")
    kept, rejected, quarantine, stats = read_outputs(out)
    assert summary(kept, rejected) == (KEPT, REJECTED)
    single = tmp_path / "single"
    _, outputs = run_curation(read_files([corpus], source="local_files", licence="x"), curation_params, single)
    assert (kept, rejected, quarantine, stats) == read_outputs(single)
    assert run.outputs.content_hash == outputs.content_hash
    assert (stats["input_records"], stats["kept"], stats["rejected"], stats["quarantined"]) == (13, 5, 7, 1)
    assert {k: run.dedup[k] for k in ("duplicate_ids", "exact_duplicates", "near_duplicates")} == {
        "duplicate_ids": 1, "exact_duplicates": 1, "near_duplicates": 3}
    assert sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def _output_files(out):
    return {path.relative_to(out): path.read_bytes() for name in OUTPUT_NAMES
            for path in sorted([out / name, *(out / name).rglob("*")]) if path.is_file()}


def test_a_failing_step_raises_its_own_error_and_keeps_the_previous_outputs(corpus, curation_params, tmp_path):
    out = tmp_path / "out"
    engine.curate_files([corpus], curation_params, out, licence="x", batch_size=4)
    assert sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)  # a finished run leaves nothing else
    before = _output_files(out)
    broken = replace(curation_params, script_policy={"zh-hans": "to-klingon"})
    with pytest.raises(ValueError, match="unknown script actions"):
        engine.curate_files([corpus], broken, out, licence="x", batch_size=4)
    assert _output_files(out) == before
    # It failed before finishing a part file: nothing to resume, so no resume folder is left
    # (one holding finished parts stays: test_a_stopped_run_resumes_without_redoing_finished_batches).
    assert sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)
    engine.curate_files([corpus], curation_params, out, licence="x", batch_size=4)
    assert sorted(os.listdir(out)) == sorted(OUTPUT_NAMES) and _output_files(out) == before


class _StopAfter:
    """Stands for a kill: the steps fail on the n-th batch of a run."""

    def __init__(self, process_batch, batches: int):
        self.process_batch, self.left = process_batch, batches

    def __call__(self, batch, params_blob, steps_dir, unit_folders=None):
        if self.left == 0:
            raise KeyboardInterrupt("stopped")
        self.left -= 1
        return self.process_batch(batch, params_blob, steps_dir, unit_folders)


def test_a_stopped_run_resumes_without_redoing_finished_batches(corpus, curation_params, tmp_path, monkeypatch):
    reference = engine.curate_files([corpus], curation_params, tmp_path / "reference", licence="x", batch_size=2)
    out = tmp_path / "out"
    monkeypatch.setattr(engine, "_process_batch", _StopAfter(engine._process_batch, 3))
    with pytest.raises(KeyboardInterrupt):
        engine.curate_files([corpus], curation_params, out, licence="x", batch_size=2)
    monkeypatch.undo()
    (left,) = os.listdir(out)
    parts = sorted((out / left).glob("part-*.parquet"))
    assert len(parts) == 3
    # A part no batch of this run has (a batch Ray cut elsewhere): never read, removed.
    stray = out / left / engine.part_name(1)
    stray.write_bytes(parts[0].read_bytes())

    steps_run = []
    monkeypatch.setattr(engine.CurationPipeline, "process_batch", _counting(engine.CurationPipeline.process_batch, steps_run))
    run = engine.curate_files([corpus], curation_params, out, licence="x", batch_size=2)
    assert run.resumed_records == 6  # three batches of two
    assert len(steps_run) == 13 - 6  # every other item went through the steps once
    assert read_outputs(out) == read_outputs(tmp_path / "reference")
    assert run.outputs.content_hash == reference.outputs.content_hash
    assert sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)


def _counting(process_batch, calls: list):
    """`process_batch` noting the order key of each item it is given."""
    def counted(self, numbered):
        numbered = list(numbered)
        calls.extend(order for _, order in numbered)
        return process_batch(self, numbered)
    return counted


def test_a_changed_input_is_not_resumed(corpus, curation_params, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_corpus(data)
    out = tmp_path / "out"
    monkeypatch.setattr(engine, "_process_batch", _StopAfter(engine._process_batch, 2))
    with pytest.raises(KeyboardInterrupt):
        engine.curate_files([data], curation_params, out, licence="x", batch_size=2)
    monkeypatch.undo()
    shard = data / "a" / "part-0.jsonl"
    shard.write_text(shard.read_text(encoding="utf-8").replace("立法會", "區議會"), encoding="utf-8")
    run = engine.curate_files([data], curation_params, out, licence="x", batch_size=2)
    assert run.resumed_records == 0
    assert sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)  # the stopped run's parts removed
    reference = tmp_path / "reference"
    run_curation(read_files([data], source="local_files", licence="x"), curation_params, reference)
    assert read_outputs(out) == read_outputs(reference)


@pytest.mark.parametrize(
    ("workers", "executor", "address", "chosen"),
    [(None, None, None, "local"), (1, None, None, "local"), (2, None, None, "ray"), (None, None, "ray://head:10001", "ray"),
     (1, "ray", None, "ray"), (None, "local", "ray://head:10001", "local")],
)
def test_which_executor_a_run_gets(monkeypatch, workers, executor, address, chosen):
    if address:
        monkeypatch.setenv("RAY_ADDRESS", address)
    assert engine.choose_executor(workers, executor) == chosen


def test_bad_executor_choices_are_refused():
    with pytest.raises(ValueError, match="unknown executor 'spark': one of local, ray"):
        engine.choose_executor(None, "spark")
    with pytest.raises(ValueError, match="the local executor runs one worker"):
        engine.choose_executor(2, "local")


def test_hkgai_curate_runs_in_this_process_by_default(corpus, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(out), "--licence", "x"])
    assert result.exit_code == 0, result.output
    assert "input 13 = kept 5 + rejected 7 + quarantined 1" in result.output
    assert "(this process)" in result.output
    assert summary(*read_outputs(out)[:2]) == (KEPT, REJECTED)
    refused = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(out), "--executor", "local", "--workers", "2"])
    assert refused.exit_code == 2 and "the local executor runs one worker" in refused.output


def test_small_files_are_batched_together(curation_params, tmp_path):
    """One part per batch of records, not one per file."""
    folder = tmp_path / "pages"
    folder.mkdir()
    for n in range(25):
        (folder / f"page-{n:02d}.txt").write_text(f"第{n}號告示：港鐵今日宣布新線於明年通車，詳情請參閱網站公布的時間表及票價安排。", encoding="utf-8")
    run = engine.curate_files([folder], curation_params, tmp_path / "out", licence="x", batch_size=10)
    assert run.stats.input_records == 25
    parts = set(os.listdir(tmp_path / "out" / "cleaned.parquet")) | set(os.listdir(tmp_path / "out" / "rejected.parquet"))
    assert len(parts) == 3  # batches of 10, 10 and 5 records
    single = tmp_path / "single"
    run_curation(read_files([folder], source="local_files", licence="x"), curation_params, single)
    assert read_outputs(tmp_path / "out") == read_outputs(single)


def test_a_decision_in_many_bucket_ranges_decides_the_same(corpus, curation_params, tmp_path, monkeypatch):
    """A decision budget of one key row at a time: every id, exact key, band and pair range
    decided apart (and the keys spilled to the staging folder) gives the same outputs."""
    one = engine.curate_files([corpus], curation_params, tmp_path / "one", licence="x", batch_size=2)
    monkeypatch.setattr(engine, "DECIDE_MEMORY_BYTES", 1)
    many = engine.curate_files([corpus], curation_params, tmp_path / "many", licence="x", batch_size=2)
    assert read_outputs(tmp_path / "many") == read_outputs(tmp_path / "one")
    assert many.dedup == one.dedup and many.dedup["candidate_pairs"] > 1 and many.dedup["near_duplicates"] > 0


@pytest.mark.timeout(300)
def test_hkgai_curate_killed_with_sigkill_resumes_where_it_stopped(curation_params, tmp_path):
    """kill -9 in the middle of `hkgai curate`: the previous outputs stay whole, and the next
    run reuses the part files the killed one finished."""
    import signal
    import subprocess
    import time

    from tests.curation_corpus import WEATHER, write_numbered_corpus

    data = tmp_path / "data"
    write_numbered_corpus(data / "big.jsonl", 4000)
    out = tmp_path / "out"
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "one.txt").write_text(WEATHER, encoding="utf-8")
    engine.curate_files([tmp_path / "small"], curation_params, out, licence="unknown")  # the previous outputs
    before = read_outputs(out)

    hkgai = str(Path(sys.executable).with_name("hkgai"))
    process = subprocess.Popen([hkgai, "curate", str(data), "--out", str(out), "--batch-size", "100"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while len(list(out.glob(f"{engine.RESUME_PREFIX}*/part-*.parquet"))) < 5:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no part files within 240 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert read_outputs(out) == before  # nothing of the killed run reached the outputs
    done = len(list(out.glob(f"{engine.RESUME_PREFIX}*/part-*.parquet")))
    assert 5 <= done < 40

    run = engine.curate_files([data], curation_params, out, licence="unknown", batch_size=100)
    assert run.resumed_records == done * 100  # part files are renamed into place whole
    reference = engine.curate_files([data], curation_params, tmp_path / "reference", licence="unknown", batch_size=100)
    assert reference.resumed_records == 0
    assert read_outputs(out) == read_outputs(tmp_path / "reference")
    assert sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)  # the killed run's staging went too


def test_hkgai_curate_usage_errors_are_one_line(corpus, tmp_path):
    """From a fresh-user trial: these printed a traceback or the wrong hint."""
    runner = CliRunner()
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    lake = OutputVersions(tmp_path / "lake", "cleaned")
    version = lake.new_version()
    (version / "stats.json").write_text("{}", encoding="utf-8")
    lake.make_current(version)
    cases = {
        # The lake's published corpus: writing into it would change the current version in place.
        ("curate", str(corpus), "--out", str(lake.link)): "is the current version of a versioned output",
        # A trial: the version folder itself (through the versions folder) was written in place.
        ("curate", str(corpus), "--out", str(version)): "is the current version of a versioned output",
        ("curate", str(corpus), "--out", str(tmp_path / "afile")): "is a file: give a folder",
        # A trial: said only "[Errno 17] File exists", and only after the whole run.
        ("curate", str(corpus), "--out", str(tmp_path / "o"), "--report", str(tmp_path / "afile" / "r" / "run.json")):
            "afile is a file, not a folder",
        ("curate", str(corpus), "--out", str(tmp_path / "o"), "--params", str(tmp_path / "none.yaml")): "parameters file not found",
        ("curate", "--out", str(tmp_path / "o")): "give input files/folders or --lake",
        ("curate", str(corpus), "--lake", str(tmp_path), "--out", str(tmp_path / "o")): "or --lake, not both",
    }
    for args, message in cases.items():
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, (args, result.output)
    # A new version folder nobody published yet (what the RayJob writes into) is allowed.
    assert OutputVersions.holding(lake.new_version()) is None
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["curate", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert empty.exit_code == 0 and "no input records" in empty.output


@pytest.mark.parametrize("text, message", [
    ("a: [", "is not YAML"),
    ("- 1\n- 2", "not a mapping of sections"),
    ("rag: {}", "has no curation: section"),
    ("curation: 5", "curation: 5 is not a mapping"),
    ("curation:\n  dedup: {threshold: abc}", "curation.dedup.threshold: 'abc' is not a number"),
    ("curation:\n  dedup: {threshold: 5}", "curation.dedup.threshold: 5.0 is a Jaccard similarity and must lie in (0, 1]"),
    ("curation:\n  dedup: {thresold: 0.7}", "curation.dedup: unknown keys ['thresold']"),
    ("curation:\n  dedup: {num_perm: 100}", "curation.dedup.num_perm: 100 must be a multiple of num_bands (16)"),
    ("curation:\n  quality: {min_chars: 2.5}", "curation.quality.min_chars: 2.5 is not a whole number"),
    ("curation:\n  quality: {max_digit_ratio: 3}", "curation.quality.max_digit_ratio: 3.0 is a share"),
    ("curation:\n  allowed_languages: en", "curation.allowed_languages: 'en' is not a list"),
    ("curation:\n  max_record_bytes: true", "curation.max_record_bytes: True is not a whole number"),
    ("curation:\n  max_record_bytes: 1e6", "'1e6' is not a whole number (YAML reads 1e6 as text: write 1000000 or 1.0e+06)"),
    ("curation:\n  dedup: {threshold: 8e-1}", "'8e-1' is not a number (YAML reads 8e-1 as text: write 0.8)"),
    # A second trial: these ended in tracebacks after work had started, or were accepted.
    ("curation:\n  dedup: {seed: -1}", "curation.dedup.seed: -1 must lie in [0, 2**64)"),
    ("curation:\n  quality: {max_top_ngram_fraction: {2: 0.2, 5: 0.18}}", "is not a mapping of n (2, 3 or 4) to a share"),
    ("curation:\n  script_policy: 0", "curation.script_policy: 0 is not a mapping"),
    ("curation:\n  script_policy: {zh_hans: s2hk}", "curation.script_policy: unknown languages ['zh_hans']"),
    ("curation:\n  min_language_share: {fr: 0.1}", "curation.min_language_share: unknown languages ['fr']"),
    ("curation:\n  allowed_languages: []", "curation.allowed_languages is empty"),
])
def test_hkgai_curate_names_the_bad_parameter_before_any_work(corpus, tmp_path, text, message):
    """A fresh-user trial: these ended in tracebacks (`threshold: abc` after every step had
    run) or were accepted (`threshold: 5`, a file without `curation:` curating on defaults)."""
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(tmp_path / "o"), "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_a_parts_folder_inside_the_input_is_not_read_as_input(corpus, tmp_path):
    """A fresh-user trial: `--parts-dir` inside the input folder was read back as input by the
    next run (11 -> 43 -> 161 input records over three runs)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    runner = CliRunner()
    outputs = []
    for run in range(3):
        result = runner.invoke(app, ["curate", str(data), "--out", str(tmp_path / f"out{run}"),
                                     "--parts-dir", str(data / "parts"), "--work-dir", str(data / "work")])
        assert result.exit_code == 0, result.output
        outputs.append(read_outputs(tmp_path / f"out{run}"))
    assert outputs[0] == outputs[1] == outputs[2]
    assert json.loads((tmp_path / "out2" / "stats.json").read_text())["input_records"] == \
        json.loads((tmp_path / "out0" / "stats.json").read_text())["input_records"]
    same = runner.invoke(app, ["curate", str(data), "--out", str(tmp_path / "o"), "--parts-dir", str(data)])
    assert same.exit_code == 2 and "--parts-dir" in same.output and "is an input folder" in same.output, same.output
    # A second trial: a later run without --parts-dir read the parts folder as input.
    later = runner.invoke(app, ["curate", str(data), "--out", str(tmp_path / "later")])
    assert later.exit_code == 0, later.output
    assert read_outputs(tmp_path / "later")[0] == outputs[0][0]
    quarantine = (tmp_path / "later" / "quarantine.jsonl").read_text(encoding="utf-8")
    assert "a curation parts folder" in quarantine and "keys.parquet" not in quarantine
    # ... and --report into the input replaced an input file with the report.
    shard = next(path for path in sorted(data.rglob("*.jsonl")) if "parts" not in path.parts)
    before = shard.read_bytes()
    for report in (shard, data / "run.json"):
        refused = runner.invoke(app, ["curate", str(data), "--out", str(tmp_path / "o"), "--report", str(report)])
        assert refused.exit_code == 2 and "is in the input" in refused.output, refused.output
    assert shard.read_bytes() == before


def test_hkgai_curate_on_a_full_disk_says_so_in_one_line(corpus, tmp_path, monkeypatch):
    """A fresh-user trial: a folder the run could not write ended in a long traceback."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    real = engine.settle_part
    monkeypatch.setattr(engine, "settle_part", full)
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "curation stopped: [Errno 28] No space left on device" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "stats.json").exists()
    # A report that cannot be written after the outputs were: said so, not "stopped".
    monkeypatch.setattr(engine, "settle_part", real)
    monkeypatch.setattr(engine.EngineRun, "to_report", full)  # the disk filled after the outputs
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(tmp_path / "out"), "--report", str(tmp_path / "run.json")])
    assert result.exit_code == 1 and "the outputs are written, the report is not" in result.output, result.output
    assert (tmp_path / "out" / "stats.json").exists() and "Traceback" not in result.output


def test_an_unreachable_ray_address_fails_in_seconds_with_one_line(corpus, tmp_path, monkeypatch):
    """A fresh-user trial: RAY_ADDRESS=127.0.0.1:1 hung for minutes with Ray's retry warnings."""
    import time

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:1" in result.output
    assert time.monotonic() - started < 30
    engine.check_reachable("auto")  # no port: left to Ray
    # "auto" and no cluster on this machine (Ray's own error, raised here so that another Ray
    # instance on the machine, another test process's, cannot be found instead).
    import ray

    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by setting "
                              "`--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(ray, "init", no_cluster)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.startswith("no Ray cluster found for RAY_ADDRESS=auto: start one"), result.output
    assert "--address" not in result.output
    with pytest.raises(ConnectionError, match="ray://127.0.0.1:1"):
        engine.check_reachable("ray://127.0.0.1:1")


def test_part_files_of_other_code_are_not_resumed(corpus, curation_params, tmp_path, monkeypatch):
    """An upgrade between a stopped run and the next changes how records are processed: the
    stopped run's parts are not reused."""
    out = tmp_path / "out"
    monkeypatch.setattr(engine, "_process_batch", _StopAfter(engine._process_batch, 3))
    with pytest.raises(KeyboardInterrupt):
        engine.curate_files([corpus], curation_params, out, licence="x", batch_size=2)
    monkeypatch.undo()
    monkeypatch.setattr(engine, "code_fingerprint", lambda: "another version")
    run = engine.curate_files([corpus], curation_params, out, licence="x", batch_size=2)
    assert run.resumed_records == 0 and sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)
    monkeypatch.undo()
    assert len(engine.code_fingerprint()) == 64


def test_a_run_that_fails_before_any_part_leaves_no_resume_folder(curation_params, tmp_path, monkeypatch):
    """RAY_ADDRESS names a port nobody listens on: ConnectionError before any work, and no
    empty resume folder (holding only its lock) is left in the output folder."""
    import socket

    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "text": "香港天文台發出暴雨警告。"}\n', encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=f"cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:{port}"):
        engine.curate_files([data], curation_params, tmp_path / "out", licence="x")
    assert list((tmp_path / "out").iterdir()) == []
