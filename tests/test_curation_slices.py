"""Reading a large file in slices (`sources.files.plan_spans`, `curation.inputs.plan_tasks`):
the spans of a file read one after the other give what the whole file gives (line numbers,
ids, encodings, counts), and the engine curating a corpus cut into many slices gives what
the single-process path gives, with 1 and 2 Ray workers and locally."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hkgai_pipelines.curation import engine, expectations, inputs
from hkgai_pipelines.curation.inputs import SLICE_ITEM_BITS, InputSlice, file_units, plan_tasks
from hkgai_pipelines.curation.pipeline import run_curation
from hkgai_pipelines.sources.files import MAX_QUARANTINE_PER_FILE, Span, fold_file_quarantine, plan_spans, read_file
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord
from tests.curation_corpus import read_outputs, write_corpus


def _read(path: Path, span: Span | None = None) -> list:
    """The items, with `ingested_at` (the time of reading, to the second) left out."""
    return [replace(item, ingested_at="") if isinstance(item, RawRecord) else item
            for item in read_file(path, source="s", licence="l", root=path.parent, span=span)]


def _in_spans(path: Path, target: int) -> tuple[list[Span], list]:
    spans = plan_spans(path, target, 65_536)
    assert spans is not None
    return spans, [item for span in spans for item in _read(path, span)]


def test_jsonl_spans_cut_after_newlines_and_keep_the_files_line_numbers(tmp_path):
    lines = ['{"id": 0, "text": "香港"}', "", '{"id": 1, "text": "九龍"}', "{bad", '{"id": 2, "text": "新界"}',
             '{"id": 3, "text": "離島"}']
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8"))  # a BOM; no newline at the end
    spans, items = _in_spans(path, 20)
    data = path.read_bytes()
    assert spans[0].start == 0 and spans[-1].stop == len(data)
    assert all(a.stop == b.start and data[b.start - 1:b.start] == b"\n" for a, b in zip(spans, spans[1:]))
    assert [span.lines_before for span in spans] == [data[:span.start].count(b"\n") for span in spans]
    assert items == _read(path)
    assert [item.locator for item in items if isinstance(item, RawRecord)] == ["a.jsonl:1#id=0", "a.jsonl:3#id=1",
                                                                               "a.jsonl:5#id=2", "a.jsonl:6#id=3"]
    assert {item.encoding for item in items if isinstance(item, RawRecord)} == {"utf-8-sig"}
    assert [item.line for item in items if isinstance(item, QuarantineRecord)] == [4]


def test_big5_spans_read_as_the_whole_file_and_utf16_is_read_whole(tmp_path):
    text = "\n".join(json.dumps({"id": n, "text": f"第{n}段：電梯維修，𨋢暫停服務。"}, ensure_ascii=False) for n in range(400))
    big5 = tmp_path / "big5.jsonl"
    big5.write_bytes(text.encode("big5hkscs"))
    spans, items = _in_spans(big5, 4096)
    assert len(spans) > 3 and items == _read(big5) and len(items) == 400
    assert items[-1].locator == "big5.jsonl:400#id=399" and items[-1].encoding == "big5hkscs"
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes(text.encode("utf-16"))  # its newline is two bytes: read whole
    assert plan_spans(utf16, 4096, 65_536) is None
    assert plan_spans(tmp_path / "big5.jsonl", 1 << 30, 65_536) is None  # small: read whole


def test_a_span_lists_its_own_quarantine_and_the_counts_add_up(tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_text("".join(f"not json {n}\n" for n in range(3 * MAX_QUARANTINE_PER_FILE)), encoding="utf-8")
    whole = _read(path)
    spans, items = _in_spans(path, path.stat().st_size // 2 + 1)
    assert len(spans) == 2
    assert sum(item.count for item in whole) == sum(item.count for item in items) == 3 * MAX_QUARANTINE_PER_FILE
    data = path.read_bytes()
    summaries = [item.error for item in items if item.error.startswith("...")]
    lines = [data[span.start:span.stop].count(b"\n") for span in spans]
    assert summaries == [f"... and {count - MAX_QUARANTINE_PER_FILE} more quarantined in bytes {span.start}-{span.stop} of this "
                         f"file (only the first {MAX_QUARANTINE_PER_FILE} are listed)" for span, count in zip(spans, lines)]


def test_folding_a_files_spans_lists_one_summary_with_the_counts_total():
    limit = MAX_QUARANTINE_PER_FILE

    def line(row: dict) -> bytes:
        return json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"

    # File a.jsonl read in two spans, each listing `limit` lines and a summary of its own.
    span = [line({"file": "a.jsonl", "line": n, "error": "not JSON", "source": "s"}) for n in range(1, limit + 1)]
    summary = line({"file": "a.jsonl", "line": None, "error": "... and 7 more quarantined in bytes 0-9 of this file "
                    f"(only the first {limit} are listed)", "source": "s", "count": 7})
    other = line({"file": "b.jsonl", "line": 3, "error": "not JSON", "source": "s"})
    folded = list(fold_file_quarantine(span + [summary] + span[:2] + [summary, other]))
    assert folded[:limit] == span and folded[limit + 1:] == [other]
    assert json.loads(folded[limit]) == {
        "file": "a.jsonl", "line": None, "error": f"... and 16 more quarantined in this file (only the first {limit} are listed)",
        "source": "s", "count": 16}  # 7 + 2 lines + 7
    assert list(fold_file_quarantine([other, b"\n", other.rstrip(b"\n")])) == [other, other]  # short runs pass through


@pytest.mark.parametrize("workers", [None, 2])
def test_a_garbage_file_in_many_slices_lists_the_limit_once_and_the_gate_counts_the_rest(
        curation_params, tmp_path, monkeypatch, ray_session, workers):
    """3 x the limit of bad lines over 30 slices: quarantine.jsonl lists the file's first
    `limit` lines and one summary, as when the file is read whole, and the GX gate passes."""
    limit = MAX_QUARANTINE_PER_FILE
    path = tmp_path / "garbage.jsonl"
    path.write_text("".join(f"not json {n}\n" for n in range(3 * limit)), encoding="utf-8")
    monkeypatch.setattr(inputs, "TASK_BYTES", path.stat().st_size // 30 + 1)
    out = tmp_path / "out"
    run = engine.curate_files([path], curation_params, out, licence="x", workers=workers,
                              executor="local" if workers is None else "ray")
    rows = [json.loads(line) for line in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["line"] for row in rows] == list(range(1, limit + 1)) + [None]
    assert rows[-1]["count"] == 2 * limit and rows[-1]["error"].startswith(f"... and {2 * limit} more quarantined in this file")
    output = expectations.OutputReader(out)
    assert run.stats.quarantined == output.quarantine_records() == 3 * limit
    assert expectations.check_counts_add_up(output.stats(), output.rows("cleaned.parquet"), output.rows("rejected.parquet"),
                                            output.quarantine_records()).passed


def test_parquet_spans_cross_row_groups_and_a_bad_column_counts_each_spans_rows(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": [str(n) for n in range(1000)], "text": [f"第{n}段" * (n % 7 + 1) for n in range(1000)]}),
                   path, row_group_size=128)
    spans, items = _in_spans(path, 2000)
    assert len(spans) > 2 and all(a.stop == b.start for a, b in zip(spans, spans[1:]))
    assert items == _read(path) and items[-1].locator == "rows.parquet:1000#id=999"
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": [[n] for n in range(1000)], "text": ["文字" * 20] * 1000}), bad, row_group_size=128)
    spans, items = _in_spans(bad, 2000)
    assert len(spans) > 2 and items == _read(bad)  # one record for the file, from the first span
    assert len(items) == 1 and items[0].count == 1000 and items[0].error.startswith("Parquet column types not usable")


def test_a_file_changed_after_planning_is_quarantined_by_each_span_not_misread(tmp_path):
    path = tmp_path / "grows.jsonl"
    path.write_text("".join(json.dumps({"id": n, "text": f"記錄{n}"}) + "\n" for n in range(20)), encoding="utf-8")
    spans = plan_spans(path, 100, 65_536)
    with open(path, "a", encoding="utf-8") as handle:  # appended to between planning and reading
        handle.write(json.dumps({"id": 20, "text": "後來"}) + "\n")
    items = [item for span in spans for item in _read(path, span)]
    assert [type(item) for item in items] == [QuarantineRecord] * len(spans)
    assert items[0].error == (f"changed since it was planned ({spans[0].file_size} bytes then, {path.stat().st_size} now): "
                              f"bytes 0-{spans[0].stop} not read")


def test_slices_number_their_items_in_file_order_and_group_small_files(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "big.jsonl").write_text("".join(json.dumps({"id": n, "text": f"記錄{n}"}) + "\n" for n in range(50)), encoding="utf-8")
    for n in range(3):
        (folder / f"small-{n}.jsonl").write_text(json.dumps({"id": n, "text": "細"}) + "\n", encoding="utf-8")
    units = file_units([folder], source="s", licence="l")
    tasks = plan_tasks(units, 200)
    big = [piece for task in tasks for piece in task if piece.unit.name.endswith("big.jsonl")]
    assert len(big) > 3 and [piece.index for piece in big] == list(range(len(big)))
    assert all(len(task) == 1 or sum(piece.size for piece in task) <= 200 for task in tasks)
    # The small files go together (with the big file's last slice when it leaves room).
    assert [piece.unit.name for piece in tasks[-1][-3:]] == ["data/small-0.jsonl", "data/small-1.jsonl", "data/small-2.jsonl"]
    orders = [order for task in tasks for piece in task for order, _ in piece.numbered_items()]
    assert orders == sorted(orders) and len(orders) == 53
    second = big[1]
    assert next(second.numbered_items())[0] == inputs.order_key(second.unit.index, 1 << SLICE_ITEM_BITS)
    assert InputSlice.from_row(json.loads(json.dumps(second.to_row()))) == second
    assert plan_tasks(units, 1 << 20) == [[InputSlice(unit, 0, None, unit.size()) for unit in units]]


@pytest.mark.parametrize("workers", [None, 1, 2])
def test_a_corpus_in_many_slices_curates_as_the_single_process_path(curation_params, tmp_path, monkeypatch, ray_session,
                                                                    workers):
    """Every line of the planted-duplicates corpus in a slice of its own (64-byte tasks), the
    slices spread over the workers: the same rows, quarantine and counts as one process."""
    corpus = write_corpus(tmp_path / "shards" / "corpus")
    single = tmp_path / "single"
    from hkgai_pipelines.sources.files import read_files

    run_curation(read_files([corpus], source="local_files", licence="x"), curation_params, single)
    monkeypatch.setattr(inputs, "TASK_BYTES", 64)
    assert len(plan_tasks(file_units([corpus], source="local_files", licence="x"))) > 10
    out = tmp_path / "out"
    run = engine.curate_files([corpus], curation_params, out, licence="x", workers=workers, batch_size=2,
                              executor="local" if workers is None else "ray")
    assert read_outputs(out) == read_outputs(single)
    assert run.stats.input_records == 13


def test_lake_partitions_in_row_slices_curate_as_whole_partitions(curation_params, tmp_path, monkeypatch, ray_session):
    """A raw lake partition cut into row slices (several row groups; 64-byte tasks) over 2
    workers: the same outputs as the partitions read whole, one task each."""
    from hkgai_pipelines.sources.lake import RAW_SCHEMA
    from tests.curation_corpus import FOOD, LEGCO, LEGCO_NEAR, MTR, OPENING, WEATHER

    lake = tmp_path / "lake"
    (lake / "raw").mkdir(parents=True)
    rows = {"s1": [("x1", LEGCO), ("shared", WEATHER), ("x2", MTR), ("x3", FOOD)],
            "s2": [("y1", OPENING), ("shared", FOOD), ("y2", LEGCO_NEAR), ("y3", "你好")]}
    for source, records in rows.items():
        table = pa.Table.from_pylist([{"id": i, "text": t, "source": source, "licence": "x", "locator": f"{source}:{n}"}
                                      for n, (i, t) in enumerate(records)], schema=RAW_SCHEMA)
        pq.write_table(table, lake / "raw" / f"{source}.parquet", row_group_size=2)
    whole = engine.curate_lake(lake, ["s1", "s2"], curation_params, tmp_path / "whole", workers=2, batch_size=3)
    monkeypatch.setattr(inputs, "TASK_BYTES", 64)
    sliced = [piece for task in plan_tasks(inputs.lake_units(lake, ["s1", "s2"])) for piece in task if piece.span is not None]
    assert len(sliced) >= 4
    run = engine.curate_lake(lake, ["s1", "s2"], curation_params, tmp_path / "sliced", workers=2, batch_size=3)
    assert read_outputs(tmp_path / "sliced") == read_outputs(tmp_path / "whole")
    assert run.stats.to_dict() == whole.stats.to_dict() and run.stats.input_records == 8


def test_slices_found_in_ray_tasks_give_the_plan_found_here(tmp_path, ray_session):
    """`engine._ray_slicer`: the large files' slices found by Ray tasks (one a file, two at a
    time), the small file left to the driver: the same plan as in this process."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name, lines in (("a.jsonl", 40), ("b.jsonl", 3), ("c.jsonl", 60)):
        (folder / name).write_text("".join(json.dumps({"id": n, "text": f"{name}第{n}行"}) + "\n" for n in range(lines)),
                                   encoding="utf-8")
    units = file_units([folder], source="s", licence="l")
    asked: list[str] = []

    def slicer(units, target_bytes):
        asked.extend(Path(unit.path).name for unit in units)
        return engine._ray_slicer(2)(units, target_bytes)

    calls = []
    on_ray = plan_tasks(units, 300, slice_units=engine._reporting(slicer, lambda *call: calls.append(call)))
    assert asked == ["a.jsonl", "c.jsonl"]  # b.jsonl (3 lines) is under 300 bytes
    assert on_ray == plan_tasks(units, 300) and len(on_ray) > 5
    assert calls == [("plan", 0, 2), ("plan", 1, 2), ("plan", 2, 2)]
    assert engine.describe_progress(*calls[1]) == "plan: 1 of 2 large files (50%)"


def test_big5_after_an_ascii_head_reads_the_same_in_spans(tmp_path):
    """Each span of a file decided UTF-8 from an all-ASCII head decides again at its own first
    line that is not UTF-8: the spans give what the whole file gives."""
    from tests.test_decoding import ctcpc_big5_lines

    english = [json.dumps({"id": f"a{i}", "text": f"English line {i} about the harbour and the weather."}).encode()
               for i in range(1500)]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(english + ctcpc_big5_lines(3000)) + b"\n")
    spans, items = _in_spans(path, 40_000)
    assert len(spans) > 5 and items == _read(path)
    assert not any(isinstance(item, QuarantineRecord) for item in items)
    assert {item.encoding for item in items if not item.text.isascii()} == {"big5hkscs"}
