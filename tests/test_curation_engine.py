"""The curation engine on Ray (curation/engine.py): the same kept ids for 1, 2 and 3
workers and for the single-process path, global duplicate decisions across shards and
batches, counts that add up, outputs every reader takes, and `hkgai curate --workers`.

One Ray session serves the whole module (`ray_session`); batches of two records spread the
small corpus over many tasks, so every cross-batch decision is exercised."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from typer.testing import CliRunner

from hkgai_pipelines.cli import app
from hkgai_pipelines.curation import engine, expectations, pair_join
from hkgai_pipelines.curation.pipeline import OUTPUT_NAMES, run_curation
from hkgai_pipelines.sources.files import read_files
from hkgai_pipelines.sources.lake import RAW_SCHEMA
from hkgai_pipelines.training.data import load_corpus_documents
from tests.curation_corpus import FOOD, KEPT, LEGCO, LEGCO_NEAR, MTR, OPENING, REJECTED, WEATHER, read_outputs, summary, write_corpus

pytestmark = pytest.mark.usefixtures("ray_session")

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("shards") / "corpus")


@pytest.fixture(scope="module")
def single_process(corpus, curation_params, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    run_curation(read_files([corpus], source="local_files", licence="x"), curation_params, out)
    return out


def test_single_process_path_keeps_the_first_of_each_global_cluster(single_process):
    kept, rejected, quarantine, stats = read_outputs(single_process)
    assert summary(kept, rejected) == (KEPT, REJECTED)
    assert [json.loads(line)["line"] for line in quarantine] == [4]
    assert (stats["input_records"], stats["kept"], stats["rejected"], stats["quarantined"]) == (13, 5, 7, 1)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_engine_keeps_the_same_ids_for_any_number_of_workers(corpus, curation_params, single_process, tmp_path, workers):
    out = tmp_path / "out"
    run = engine.curate_files([corpus], curation_params, out, licence="x", workers=workers, batch_size=2)
    kept, rejected, quarantine, stats = read_outputs(out)
    assert summary(kept, rejected) == (KEPT, REJECTED)
    single_kept, single_rejected, single_quarantine, single_stats = read_outputs(single_process)
    # Not only the same ids: the same rows, quarantine and counts as the single-process path.
    assert (kept, rejected, quarantine, stats) == (single_kept, single_rejected, single_quarantine, single_stats)
    assert run.stats.to_dict() == stats and run.workers == workers
    assert {k: run.dedup[k] for k in ("duplicate_ids", "candidates", "exact_duplicates", "near_duplicates")} == {
        "duplicate_ids": 1, "candidates": 9, "exact_duplicates": 1, "near_duplicates": 3}
    # Part files, one per batch that kept something, sorted by the order key of their first row.
    parts = sorted(os.listdir(out / "cleaned.parquet"))
    assert len(parts) > 1 and all(name.startswith("part-") for name in parts)
    assert sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)


def test_pairs_verified_on_ray_in_many_ranges_decide_the_same(corpus, curation_params, tmp_path, monkeypatch):
    """A decision budget of one row: every range of pairs named, routed by Ray tasks (of a
    few named records each, so several) and verified apart."""
    monkeypatch.setattr(engine, "DECIDE_MEMORY_BYTES", 1)
    monkeypatch.setattr(engine, "ROUTE_TASK_ROWS", 3)
    groups = []

    def counted(jobs, rows):
        for group in pair_join.route_groups(jobs, rows):
            groups.append(group)
            yield group

    monkeypatch.setattr(engine, "route_groups", counted)
    run = engine.curate_files([corpus], curation_params, tmp_path / "out", licence="x", workers=2, batch_size=2)
    assert summary(*read_outputs(tmp_path / "out")[:2]) == (KEPT, REJECTED)
    assert run.dedup["candidate_pairs"] > 1 and len(groups) > 1


def test_outputs_are_read_by_the_pretraining_loader_and_the_gx_gates(corpus, curation_params, tmp_path):
    out = tmp_path / "out"
    run = engine.curate_files([corpus], curation_params, out, licence="x", workers=2, batch_size=2)
    documents = load_corpus_documents(out / "cleaned.parquet")
    assert [d["id"] for d in documents] == pq.read_table(out / "cleaned.parquet").column("id").to_pylist()
    assert len(documents) == 5 and all(d["text"] and d["lang"] for d in documents)
    output = expectations.OutputReader(out, batch_rows=2)
    counts = (output.rows("cleaned.parquet"), output.rows("rejected.parquet"), output.quarantine_records())
    assert counts == (5, 7, 1)
    columns = expectations.WRITTEN_TEXT_COLUMNS
    for outcome in (
        expectations.check_ids_unique(output.column("id")),
        expectations.check_text_non_empty(output.frames(["text"])),
        expectations.check_counts_add_up(output.stats(), *counts),
        expectations.check_no_residual_pii(output.frames(columns), output.frames(columns, "rejected.parquet")),
    ):
        assert outcome.passed, outcome.description
    assert run.outputs.content_hash == run_curation(read_files([corpus], source="local_files", licence="x"), curation_params,
                                                     tmp_path / "single")[1].content_hash


def test_duplicate_ids_across_lake_partitions_are_decided_over_the_whole_corpus(curation_params, tmp_path):
    """The lake keeps ids as ingested: the same id in two sources' partitions is one record
    repeated, and the later source's copy is rejected, whichever batch either is in."""
    lake = tmp_path / "lake"
    (lake / "raw").mkdir(parents=True)
    rows = {"s1": [("x1", LEGCO), ("shared", WEATHER), ("x2", MTR)], "s2": [("y1", OPENING), ("shared", FOOD), ("y2", LEGCO_NEAR)]}
    for source, records in rows.items():
        table = pa.Table.from_pylist([{"id": i, "text": t, "source": source, "licence": "x", "locator": f"{source}:{n}"}
                                      for n, (i, t) in enumerate(records)], schema=RAW_SCHEMA)
        pq.write_table(table, lake / "raw" / f"{source}.parquet")
    run = engine.curate_lake(lake, ["s1", "s2"], curation_params, tmp_path / "out", workers=2, batch_size=1)
    kept, rejected, _, _ = read_outputs(tmp_path / "out")
    assert [row["id"] for row in kept] == ["x1", "shared", "x2", "y1"]
    assert [(row["id"], row["text"], row["reason"], row["cluster_id"]) for row in rejected] == [
        ("shared", FOOD, "duplicate_id", None), ("y2", LEGCO_NEAR, "near_duplicate", "x1"),
    ]
    assert run.stats.kept == 4
    with pytest.raises(FileNotFoundError, match="raw partition 's3' not materialized"):
        engine.curate_lake(lake, ["s1", "s3"], curation_params, tmp_path / "out2")


def test_a_failed_run_leaves_the_previous_outputs_untouched(corpus, curation_params, tmp_path, monkeypatch):
    out = tmp_path / "out"
    engine.curate_files([corpus], curation_params, out, licence="x", workers=2, batch_size=4)
    before = {path.relative_to(out): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}
    # A task fails on a worker: a script action the converter refuses.
    broken = replace(curation_params, script_policy={"zh-hans": "to-klingon"})
    with pytest.raises(ray.exceptions.RayTaskError, match="unknown script actions"):
        engine.curate_files([corpus], broken, out, licence="x", workers=2, batch_size=4)
    # The driver fails after every task finished, while writing stats.json.
    monkeypatch.setattr(engine, "write_stats", lambda *_: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left on device"):
        engine.curate_files([corpus], curation_params, out, licence="x", workers=2, batch_size=4)
    after = {path.relative_to(out): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}
    assert {path: data for path, data in after.items() if path.parts[0] in OUTPUT_NAMES} == before
    # Besides the outputs, only the failed run's part files, kept for a rerun on the same
    # input: no staging folder, no half-written output.
    (left,) = set(os.listdir(out)) - set(OUTPUT_NAMES)
    assert left.startswith(engine.RESUME_PREFIX)
    assert {path.name for path in (out / left).iterdir()} <= {".lock"} | {p.name for p in (out / left).glob("part-*.parquet")}


def test_a_single_file_output_is_replaced_by_a_folder_and_back(corpus, curation_params, tmp_path):
    out = tmp_path / "out"
    run_curation(read_files([corpus], source="local_files", licence="x"), curation_params, out)
    assert (out / "cleaned.parquet").is_file()
    engine.curate_files([corpus], curation_params, out, licence="x", workers=1, batch_size=3)
    assert (out / "cleaned.parquet").is_dir() and sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)
    run_curation(read_files([corpus], source="local_files", licence="x"), curation_params, out)
    assert (out / "cleaned.parquet").is_file() and sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)


def test_hkgai_curate_with_two_workers_end_to_end(corpus, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(out), "--licence", "x", "--workers", "2", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "input 13 = kept 5 + rejected 7 + quarantined 1" in result.output
    assert "2 workers" in result.output
    kept, rejected, _, _ = read_outputs(out)
    assert summary(kept, rejected) == (KEPT, REJECTED)
    # Not a terminal: a line as each phase starts and ends (the corpus's 5 files are one task;
    # its 13 records in batches of 2, 7 part files).
    progress = [line for line in result.output.splitlines() if line.startswith("curating: ")]
    assert progress[:3] == ["curating: read and steps: 0 of 1 tasks (0%)", "curating: read and steps: 1 of 1 tasks (100%)",
                            "curating: decide ..."]
    assert progress[3:] == ["curating: settle: 0 of 7 part files (0%)", "curating: settle: 7 of 7 part files (100%)"]


@pytest.mark.parametrize("workers", [None, 2])
def test_progress_counts_every_task_and_part_in_order(corpus, curation_params, tmp_path, workers):
    """`curate(progress=...)` on both executors: each phase from 0 to its total, one call per
    task and per settled part (settle tasks on Ray carry several parts each)."""
    from hkgai_pipelines.curation.inputs import file_units, plan_tasks

    calls = []
    units = file_units([corpus], source="local_files", licence="x")
    engine.curate(units, curation_params, tmp_path / "out", workers=workers, batch_size=2,
                  progress=lambda *call: calls.append(call))
    tasks = len(plan_tasks(units))
    reading = [call for call in calls if call[0] == "read and steps"]
    assert reading == [("read and steps", done, tasks) for done in range(tasks + 1)]
    assert [call for call in calls if call[0] == "decide"] == [("decide", 0, 0)]
    settling = [call for call in calls if call[0] == "settle"]
    # 13 records in batches of 2: 7 part files.
    assert settling[0] == ("settle", 0, 7) and settling[-1] == ("settle", 7, 7)
    assert [done for _, done, _ in settling] == sorted(done for _, done, _ in settling)
    assert [phase for phase, _, _ in calls] == sorted((phase for phase, _, _ in calls), key=["read and steps", "decide", "settle"].index)
    if workers is None:
        assert len(settling) == 8  # one call per part in this process


def test_progress_lines_say_a_phase_start_and_end_and_at_most_every_interval():
    now = [0.0]
    lines: list[str] = []
    report = engine.progress_lines(lines.append, every_s=30, clock=lambda: now[0])
    for done, at in [(0, 0), (1, 10), (2, 31), (3, 40), (4, 61.5), (5, 62)]:
        now[0] = at
        report("read and steps", done, 5)
    now[0] = 63
    report("decide", 0, 0)
    report("settle", 0, 1_200)
    assert lines == ["read and steps: 0 of 5 tasks (0%)", "read and steps: 2 of 5 tasks (40%)",
                     "read and steps: 4 of 5 tasks (80%)", "read and steps: 5 of 5 tasks (100%)",
                     "decide ...", "settle: 0 of 1,200 part files (0%)"]


def test_no_input_records_still_writes_readable_outputs(curation_params, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = engine.curate_files([empty], curation_params, tmp_path / "out", workers=1)
    kept, rejected, quarantine, stats = read_outputs(tmp_path / "out")
    assert (kept, rejected, quarantine, stats["input_records"]) == ([], [], [], 0)
    assert pq.read_schema(next((tmp_path / "out" / "cleaned.parquet").iterdir())).names[0] == "id"
    assert run.stats.input_records == 0 and ray.is_initialized()  # the module's session stays up


def test_a_stopped_local_run_resumes_on_ray(corpus, curation_params, tmp_path, monkeypatch):
    """The part files are the same whichever executor wrote them: a run stopped on one machine
    resumes on Ray. Parts Ray cuts differently are done again, never counted twice."""
    from tests.test_curation_local import _StopAfter

    out = tmp_path / "out"
    monkeypatch.setattr(engine, "_process_batch", _StopAfter(engine._process_batch, 3))
    with pytest.raises(KeyboardInterrupt):
        engine.curate_files([corpus], curation_params, out, licence="x", batch_size=2, executor="local")
    monkeypatch.undo()
    calls = []
    run = engine.curate_files([corpus], curation_params, out, licence="x", workers=2, batch_size=2,
                              progress=lambda *call: calls.append(call))
    assert run.executor == "ray" and run.resumed_records == 6
    # Said before any task runs, not only in the run's result.
    assert calls[0] == ("resume", 3, 0) and calls[1] == ("read and steps", 0, 1)
    assert engine.describe_progress(*calls[0]) == (
        "resume: 3 part files of a stopped run found; their records are read back, not processed again")
    assert summary(*read_outputs(out)[:2]) == (KEPT, REJECTED)
    assert run.stats.input_records == 13 and sorted(os.listdir(out)) == sorted(OUTPUT_NAMES)


def test_in_flight_gives_results_in_order_with_at_most_limit_running_and_window_taken(tmp_path):
    """`engine._in_flight` on real Ray tasks: a slow first task does not hold the others back
    (they run and wait, finished, within the window), results come in submission order, and
    never more than `limit` run at once, nor more than `window` are started and not taken."""
    import time

    @ray.remote(num_cpus=0)
    def sleep_then(index: int, seconds: float, folder: str) -> int:
        Path(folder, f"start-{index}").write_text(str(time.time()))
        time.sleep(seconds)
        Path(folder, f"end-{index}").write_text(str(time.time()))
        return index

    started: list[int] = []

    def submission(index: int, seconds: float):
        def submit():
            started.append(index)
            return sleep_then.remote(index, seconds, str(tmp_path))
        return submit

    durations = [1.5, 0.1, 0.1, 0.1, 0.1, 0.1]
    taken = []
    for result in engine._in_flight((submission(i, s) for i, s in enumerate(durations)), 2, window=4):
        taken.append(result)
        # Started and not yet taken: at most the window.
        assert len(started) - len(taken) <= 4
    assert taken == list(range(6))
    times = {name.name: float(name.read_text()) for name in tmp_path.iterdir()}
    spans = [(times[f"start-{i}"], times[f"end-{i}"]) for i in range(6)]
    # Tasks 1 to 3 ran and finished while task 0 (1.5 s) still ran; task 4 had to wait for
    # task 0 to be taken (four started and not taken).
    assert all(spans[i][1] < spans[0][1] for i in (1, 2, 3)) and spans[4][0] >= spans[0][1]
    # At most two at once: at any task's start, fewer than two others were running.
    for start, _ in spans:
        assert sum(1 for other_start, other_end in spans if other_start < start < other_end) <= 1


@pytest.mark.timeout(300)
def test_workers_dying_past_the_retries_stop_the_run_with_one_line_and_it_resumes(corpus, curation_params, tmp_path, monkeypatch):
    """Every try of a steps task dies with its worker (Ray retries it three times): the run
    raises WorkersLost, `hkgai curate` says so in one line (exit 1), and the same run again
    gives the outputs of an undisturbed run."""
    def dies(*args, **kwargs):
        os._exit(1)

    monkeypatch.setattr(engine, "_read_and_process", dies)
    with pytest.raises(engine.WorkersLost, match="the same run again resumes"):
        engine.curate_files([corpus], curation_params, tmp_path / "out", licence="x", workers=2, batch_size=2)
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(tmp_path / "cli"), "--licence", "x", "--workers", "2",
                                      "--batch-size", "2"])
    assert result.exit_code == 1
    # One line of its own (Ray's own lines on each retry may follow: Ray prints them).
    assert [line for line in result.output.splitlines() if line.startswith("curation stopped")] == [
        "curation stopped: Ray workers died and a task's retries ran out (WorkerCrashedError); the finished part files are "
        "kept, so the same run again resumes from them"]
    assert "Traceback" not in result.output
    monkeypatch.undo()
    engine.curate_files([corpus], curation_params, tmp_path / "out", licence="x", workers=2, batch_size=2)
    assert summary(*read_outputs(tmp_path / "out")[:2]) == (KEPT, REJECTED)


@pytest.mark.timeout(300)
def test_a_ray_worker_killed_mid_run_is_retried_and_nothing_counted_twice(curation_params, tmp_path):
    """kill -9 of the worker process running a steps task: Ray runs the task again (its part
    file is renamed into place whole, so a second write replaces, never adds), and the run
    gives what an undisturbed run gives."""
    import signal
    import threading
    import time

    import psutil

    from tests.curation_corpus import write_numbered_corpus

    data = tmp_path / "data"
    write_numbered_corpus(data / "big.jsonl", 3000)
    outcome = {}

    def curate():
        try:
            outcome["run"] = engine.curate_files([data], curation_params, tmp_path / "out", licence="x", workers=2, batch_size=50)
        except BaseException as error:  # noqa: BLE001 - reported below
            outcome["error"] = error

    thread = threading.Thread(target=curate)
    thread.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        if list((tmp_path / "out").glob(f"{engine.RESUME_PREFIX}*/part-*.parquet")):
            for process in psutil.Process().children(recursive=True):
                try:
                    if "_read_and_process" in " ".join(process.cmdline()):
                        process.send_signal(signal.SIGKILL)
                        killed = process.pid
                        break
                except psutil.Error:
                    continue
        time.sleep(0.05)
    thread.join(240)
    assert killed is not None, "no worker was running a steps task"
    assert "error" not in outcome, outcome.get("error")
    run = outcome["run"]
    reference = engine.curate_files([data], curation_params, tmp_path / "reference", licence="x", batch_size=50, executor="local")
    assert read_outputs(tmp_path / "out") == read_outputs(tmp_path / "reference")
    assert run.stats.to_dict() == reference.stats.to_dict() and run.stats.input_records == 3000


def test_incremental_curation_on_ray_adds_a_unit_as_a_full_run_would(corpus, curation_params, tmp_path):
    """Part files kept by a local run are taken by a Ray run (two workers), which processes
    only the added unit, splitting batches that span units into one part file per unit."""
    from hkgai_pipelines.curation.inputs import file_units

    def units(*names):
        return file_units([corpus / name for name in names], source="local_files", licence="x")

    parts = tmp_path / "parts"
    engine.curate(units("a/part-0.jsonl", "a/part-1.jsonl"), curation_params, tmp_path / "v1", batch_size=4, parts_dir=parts,
                  executor="local")
    run = engine.curate(units("a/part-0.jsonl", "a/part-1.jsonl", "b/part-0.jsonl"), curation_params, tmp_path / "v2",
                        batch_size=4, parts_dir=parts, workers=2)
    assert (run.executor, run.processed_units, run.cached_units) == ("ray", 1, 2)
    full = engine.curate(units("a/part-0.jsonl", "a/part-1.jsonl", "b/part-0.jsonl"), curation_params, tmp_path / "full",
                         batch_size=4, executor="local")
    assert read_outputs(tmp_path / "v2") == read_outputs(tmp_path / "full")
    assert run.outputs.content_hash == full.outputs.content_hash
    # A Ray run from scratch writes complete unit folders too.
    ray_parts = tmp_path / "ray-parts"
    engine.curate(units("a/part-0.jsonl", "a/part-1.jsonl", "b/part-0.jsonl"), curation_params, tmp_path / "v3", batch_size=4,
                  parts_dir=ray_parts, workers=2)
    assert read_outputs(tmp_path / "v3") == read_outputs(tmp_path / "full")
    assert len(list(ray_parts.glob(f"*/{engine.UNIT_COMPLETE}"))) == 3


def test_an_interrupted_curate_says_it_resumes_and_exits_130(corpus, tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt in the driver) ends `hkgai curate` with one line, not a
    traceback, and the shell's exit status for SIGINT."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "curate", interrupted)
    result = CliRunner().invoke(app, ["curate", str(corpus), "--out", str(tmp_path / "out"), "--licence", "x"])
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert result.output.splitlines()[-1] == ("curation interrupted: the previous outputs are unchanged and any finished part "
                                              "files are kept, so the same command again resumes from them")


def test_ray_shutdown_is_not_broken_off_by_a_second_ctrl_c():
    """SIGINT is ignored while the session shuts down (a second Ctrl-C there left Ray's agents
    running and exited 1), then handled as before."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    with engine._sigint_deferred():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("put_back_fails", [False, True])
def test_a_failed_rename_puts_the_previous_outputs_back(corpus, curation_params, tmp_path, monkeypatch, put_back_fails):
    """A fresh-user trial made out/stats.json immutable: the new cleaned.parquet and
    rejected.parquet were in place beside the old stats.json. Now the outputs already moved
    are put back; when that fails too, the error says the folder holds two runs' outputs."""
    from hkgai_pipelines.curation import pipeline

    out = tmp_path / "out"
    engine.curate_files([corpus], curation_params, out, licence="x", batch_size=2)
    before = read_outputs(out), (out / "stats.json").read_bytes()
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "n", "text": "沙田區議會今日討論新的單車徑計劃，居民反應熱烈。"}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    real_replace = os.replace

    def refusing(source, target):
        target = Path(target)
        if target == out / "stats.json" or (put_back_fails and target.name.startswith(".failed-")):
            raise PermissionError(1, "Operation not permitted", str(target))
        return real_replace(source, target)

    monkeypatch.setattr(pipeline.os, "replace", refusing)
    with pytest.raises(OSError) as raised:
        engine.curate_files([corpus, extra], curation_params, out, licence="x", batch_size=2)
    monkeypatch.undo()
    if put_back_fails:
        assert "now holds outputs of two runs, and running the same command again replaces them" in str(raised.value)
    else:
        assert isinstance(raised.value, PermissionError) and str(raised.value).endswith("stats.json'")
        assert (read_outputs(out), (out / "stats.json").read_bytes()) == before
        assert sorted(name for name in os.listdir(out) if not name.startswith(".")) == sorted(OUTPUT_NAMES)
    # The same command again finishes from the kept part files.
    run = engine.curate_files([corpus, extra], curation_params, out, licence="x", batch_size=2)
    assert run.stats.input_records == 14 and run.resumed_records == 14
