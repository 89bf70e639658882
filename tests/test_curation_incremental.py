"""Incremental curation: only new or changed units go through the steps, and the outputs are
those of a full run over the same units (same kept ids, rejects, quarantine and stats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hkgai_pipelines.curation import engine, pair_join
from hkgai_pipelines.curation.inputs import file_units
from tests.curation_corpus import FOOD, LEGCO, read_outputs, write_corpus

A0, A1, B0 = "a/part-0.jsonl", "a/part-1.jsonl", "b/part-0.jsonl"


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def full_decisions():
    """Every run decides over all keys (the dedup index is never extended): for what that
    decision reads and remembers. Its own patch, so a test's `monkeypatch.undo()` keeps it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine.DedupIndex, "open", classmethod(lambda cls, *args: None))
        yield


def _units(corpus, *names):
    return file_units([corpus / name for name in names], source="local_files", licence="x")


def _counting(calls: list):
    """`CurationPipeline.process_batch` (what the engine runs the steps through) noting each item."""
    process_batch = engine.CurationPipeline.process_batch

    def counted(self, numbered):
        numbered = list(numbered)
        calls.extend(item.locator if hasattr(item, "locator") else item for item, _ in numbered)
        return process_batch(self, numbered)
    return counted


def _full(corpus, curation_params, out, *names):
    run = engine.curate(_units(corpus, *names), curation_params, out, batch_size=2)
    return read_outputs(out), run


def test_an_added_unit_is_the_only_one_processed_and_the_outputs_equal_a_full_run(corpus, curation_params, tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    first = engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    assert (first.processed_units, first.cached_units) == (2, 0)
    assert read_outputs(tmp_path / "v1") == _full(corpus, curation_params, tmp_path / "full-a", A0, A1)[0]

    calls = []
    monkeypatch.setattr(engine.CurationPipeline, "process_batch", _counting(calls))
    second = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    monkeypatch.undo()
    assert (second.processed_units, second.cached_units) == (1, 2)
    assert len(calls) == 3 and all(locator.startswith("b/part-0.jsonl") for locator in calls)  # b's three records only
    assert second.cached_records == 10  # a's 6 + 4 lines (a quarantined line included)
    # b's records were decided against the first run's dedup index: no pair between a's
    # records was asked again, and the counts are those of a full decision.
    assert (first.dedup["index_extended"], second.dedup["index_extended"]) == (0, 1)
    assert second.dedup["pairs_remembered"] == 0
    full, full_run = _full(corpus, curation_params, tmp_path / "full-ab", A0, A1, B0)
    assert read_outputs(tmp_path / "v2") == full
    assert second.outputs.content_hash == full_run.outputs.content_hash
    assert second.dedup == {**full_run.dedup, "index_extended": 1}
    # The new unit's near-duplicates of records already kept are rejected against them.
    rejected = {row["locator"]: row for row in full[1]}
    assert rejected["b/part-0.jsonl:1#id=0"]["reason"] == "near_duplicate"
    assert sorted(p.name for p in parts.iterdir() if p.is_dir()) == sorted(
        [engine.DEDUP_INDEX_DIR, *(engine.unit_fingerprint(u, curation_params, 2) for u in _units(corpus, A0, A1, B0))])


def test_a_removed_unit_takes_its_records_along_and_its_duplicates_come_back(corpus, curation_params, tmp_path):
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    # Without a/part-0, LEGCO_NEAR (a/part-1) is no longer the duplicate of LEGCO: it is kept.
    run = engine.curate(_units(corpus, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert read_outputs(tmp_path / "v2") == _full(corpus, curation_params, tmp_path / "full", A1, B0)[0]
    kept_texts = {row["text"] for row in read_outputs(tmp_path / "v2")[0]}
    assert LEGCO not in kept_texts and FOOD not in kept_texts
    assert "a/part-1.jsonl:1#id=0" in {row["locator"] for row in read_outputs(tmp_path / "v2")[0]}
    # A unit's position in the input order is part of what its part files depend on: the
    # units after a removed one are processed again.
    assert (run.processed_units, run.cached_units) == (2, 0)
    assert run.dedup["index_extended"] == 0  # its units are not those the index was made with
    assert len([p for p in parts.iterdir() if p.is_dir() and p.name != engine.DEDUP_INDEX_DIR]) == 2  # the removed unit's folder went


def test_a_changed_file_is_processed_again_and_the_others_are_not(corpus, curation_params, tmp_path):
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    with open(corpus / A1, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": 9, "text": "港鐵於一九七九年通車，第一段是觀塘線。"}, ensure_ascii=False) + "\n")
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert (run.processed_units, run.cached_units) == (1, 2)
    assert read_outputs(tmp_path / "v2") == _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]
    # Unchanged input: nothing is processed, the outputs are the same.
    again = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v3", batch_size=2, parts_dir=parts)
    assert (again.processed_units, again.cached_units) == (0, 3)
    assert read_outputs(tmp_path / "v3") == read_outputs(tmp_path / "v2")


def _stopped_in_settle(corpus, curation_params, out, parts, monkeypatch) -> None:
    """An incremental run over A0, A1, B0 stopped in its settle phase (after its decision)."""
    def stop(*args, **kwargs):
        raise KeyboardInterrupt("stopped")

    monkeypatch.setattr(engine, "settle_part", stop)
    with pytest.raises(KeyboardInterrupt):
        engine.curate(_units(corpus, A0, A1, B0), curation_params, out, batch_size=2, parts_dir=parts)
    monkeypatch.undo()


def test_a_stopped_incremental_run_leaves_no_unit_marked_complete(corpus, curation_params, tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    _stopped_in_settle(corpus, curation_params, tmp_path / "v1", parts, monkeypatch)
    assert not list(parts.glob(f"*/{engine.UNIT_COMPLETE}"))
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    assert run.processed_units == 3 and run.resumed_records == 13  # every part file was written: resumed
    assert read_outputs(tmp_path / "v1") == _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]


def test_a_verification_that_fails_leaves_the_last_runs_pairs_and_no_partial_file(corpus, curation_params, tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    saved = (parts / engine.PAIRS_FILE).read_bytes()

    compare, calls = pair_join.range_similarities, []

    def fail_second(*args, **kwargs):  # the first range's answers are written, then the disk fills
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return compare(*args, **kwargs)

    monkeypatch.setattr(pair_join, "range_similarities", fail_second)
    monkeypatch.setattr(engine, "DECIDE_MEMORY_BYTES", 1)  # a range per bucket: several verifications
    with pytest.raises(OSError, match="disk full"):
        engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert (parts / engine.PAIRS_FILE).read_bytes() == saved
    assert not (parts / f"{engine.PAIRS_FILE}.partial").exists()


def _counting_settle(calls: list):
    settle = engine.settle_table

    def counted(table, decisions):
        calls.append(table.num_rows)
        return settle(table, decisions)
    return counted


def test_settled_rows_are_reused_where_the_verdicts_did_not_change(corpus, curation_params, tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    calls = []
    monkeypatch.setattr(engine, "settle_table", _counting_settle(calls))
    engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert calls == [2, 1]  # b's two parts only: its records' verdicts are new, a's are the same
    # The kept rows of a's parts are the same files (hard links), not copies.
    old, new = tmp_path / "v1" / "cleaned.parquet", tmp_path / "v2" / "cleaned.parquet"
    for part in old.iterdir():
        assert (new / part.name).stat().st_ino == part.stat().st_ino


def test_an_added_record_that_joins_two_clusters_settles_the_old_part_again(curation_params, tmp_path, monkeypatch):
    """LEGCO_CHAIN is below the threshold with LEGCO and kept; LEGCO_NEAR, added later, is a
    near-duplicate of both, so the full run makes LEGCO_CHAIN a duplicate of LEGCO: the old
    part's verdicts changed, and the incremental run must settle it again."""
    from tests.curation_corpus import LEGCO_CHAIN, LEGCO_NEAR

    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in (("1.jsonl", LEGCO), ("2.jsonl", LEGCO_CHAIN), ("3.jsonl", LEGCO_NEAR)):
        (folder / name).write_text(json.dumps({"id": name, "text": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    parts = tmp_path / "parts"
    first = engine.curate(_units(folder, "1.jsonl", "2.jsonl"), curation_params, tmp_path / "v1", parts_dir=parts)
    assert first.stats.kept == 2
    calls = []
    monkeypatch.setattr(engine, "settle_table", _counting_settle(calls))
    run = engine.curate(_units(folder, "1.jsonl", "2.jsonl", "3.jsonl"), curation_params, tmp_path / "v2", parts_dir=parts)
    monkeypatch.undo()
    assert run.stats.kept == 1 and len(calls) == 2  # 2.jsonl's part again, and 3.jsonl's
    full = engine.curate(_units(folder, "1.jsonl", "2.jsonl", "3.jsonl"), curation_params, tmp_path / "full")
    assert read_outputs(tmp_path / "v2") == read_outputs(tmp_path / "full")


def test_a_stopped_units_settled_rows_are_not_reused(corpus, curation_params, tmp_path):
    """A review finding: a stopped run's settled rows, kept under a verdict digest that does
    not say which rows a part covered, could be linked into a run that cut the unit elsewhere."""
    parts = tmp_path / "parts"
    (unit,) = _units(corpus, A0)
    stale = parts / engine.unit_fingerprint(unit, curation_params, 2) / engine.SETTLED_DIR / "part-00000000000000000000-abc"
    stale.mkdir(parents=True)
    (stale / "result.json").write_text("{}")
    plan = engine.plan_units([unit], curation_params, 2, parts)
    assert plan.todo == [unit] and not stale.parent.exists()


def test_pairs_are_remembered_range_by_range(corpus, curation_params, tmp_path, full_decisions, monkeypatch):
    """With the decision cut into one range of anchor buckets per pair, each range reads its
    own remembered pairs: as many are reused as with one range, and the outputs are the same."""
    from tests.curation_corpus import write_numbered_corpus

    numbered = write_numbered_corpus(corpus / "n" / "numbered.jsonl", 30)  # near-duplicates of five texts
    parts = tmp_path / "parts"

    def units(*paths):
        return file_units(list(paths), source="local_files", licence="x")

    monkeypatch.setattr(engine, "DECIDE_MEMORY_BYTES", 1)
    first = engine.curate(units(numbered), curation_params, tmp_path / "v1", batch_size=4, parts_dir=parts)
    second = engine.curate(units(numbered, corpus / B0), curation_params, tmp_path / "v2", batch_size=4, parts_dir=parts)
    assert second.dedup["pairs_remembered"] == first.dedup["candidate_pairs"] > 10
    monkeypatch.undo()
    engine.curate(units(numbered, corpus / B0), curation_params, tmp_path / "full", batch_size=4)
    assert read_outputs(tmp_path / "v2") == read_outputs(tmp_path / "full")


def test_remembered_pairs_are_used_only_between_units_with_the_fingerprints_they_were_saved_with(corpus, curation_params, tmp_path, full_decisions):
    import pyarrow.parquet as pq

    parts = tmp_path / "parts"
    first = engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    saved = pq.read_table(parts / engine.PAIRS_FILE)
    fingerprints = json.loads(saved.schema.metadata[b"unit_fingerprints"])
    assert sorted(fingerprints) == ["0", "1"]
    # As if a failed run had saved the pairs while another file stood at position 0.
    pq.write_table(saved.replace_schema_metadata({"unit_fingerprints": json.dumps({**fingerprints, "0": "another"})}),
                   parts / engine.PAIRS_FILE)
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert first.dedup["candidate_pairs"] > 0 and run.dedup["pairs_remembered"] == 0
    assert read_outputs(tmp_path / "v2") == _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]


def test_a_moved_lake_keeps_its_part_files(curation_params, tmp_path):
    """A trial: a copied home re-processed every unit, because the fingerprint held the
    absolute path. Lake units are fingerprinted by their path relative to the lake."""
    import shutil

    from hkgai_pipelines.curation.inputs import lake_units
    from hkgai_pipelines.sources.ingest import raw_paths
    from hkgai_pipelines.sources.lake import write_raw_records
    from hkgai_pipelines.sources.records import RawRecord

    lake = tmp_path / "home" / "lake"
    raw, _ = raw_paths(lake, "s")
    raw.parent.mkdir(parents=True)
    write_raw_records([RawRecord(text=LEGCO, source="s", licence="x", locator="l:1", id="s:1")], raw)
    parts = tmp_path / "home" / "parts"
    engine.curate(lake_units(lake, ["s"]), curation_params, tmp_path / "home" / "v1", parts_dir=parts)
    shutil.copytree(tmp_path / "home", tmp_path / "moved")
    run = engine.curate(lake_units(tmp_path / "moved" / "lake", ["s"]), curation_params, tmp_path / "moved" / "v2",
                        parts_dir=tmp_path / "moved" / "parts")
    assert (run.processed_units, run.cached_units) == (0, 2)


def test_a_cached_unit_gives_its_keys_from_one_file_and_a_damaged_one_from_its_parts(corpus, curation_params, tmp_path, full_decisions, monkeypatch):
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    key_files = sorted(parts.glob(f"*/{engine.UNIT_KEYS}"))
    assert len(key_files) == 2  # one per unit, beside its several part files
    full = _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]

    read, key_reads = engine.pq.read_table, []

    def counted(path, *args, **kwargs):
        if kwargs.get("columns") == engine.PART_KEY_COLUMNS:
            key_reads.append(Path(path).parent)
        return read(path, *args, **kwargs)

    monkeypatch.setattr(engine.pq, "read_table", counted)
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    monkeypatch.undo()
    assert run.cached_records == 10 and read_outputs(tmp_path / "v2") == full
    # a's keys came from its key files; only b's new parts were read for their key columns
    # (to write b's key file).
    assert key_reads and not {folder.parent for folder in key_files} & set(key_reads)

    # Damaged: that unit's parts give its keys. Rows missing (each part's first row kept, so
    # the file still names every part): the row counts UNIT_COMPLETE lists tell.
    key_files[0].write_bytes(b"not parquet")
    keys = engine.pq.read_table(key_files[1])
    engine.pq.write_table(keys.filter(keys.column("first")), key_files[1])
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v3", batch_size=2, parts_dir=parts)
    assert run.cached_records == 13 and read_outputs(tmp_path / "v3") == full  # b cached too now
    full_dedup = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v4", batch_size=2).dedup
    assert {**run.dedup, "pairs_remembered": 0} == full_dedup
    # The run wrote both files again (a trial found a damaged one read around on every run).
    for key_file in key_files:
        listed = json.loads((key_file.parent / engine.UNIT_COMPLETE).read_text(encoding="utf-8"))
        assert engine._unit_keys(key_file.parent, [str(key_file.parent / name) for name in listed["parts"]],
                                 curation_params.dedup.num_bands) is not None
    key_reads.clear()
    monkeypatch.setattr(engine.pq, "read_table", counted)
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v5", batch_size=2, parts_dir=parts)
    monkeypatch.undo()
    assert key_reads == [] and read_outputs(tmp_path / "v5") == full

    # A unit listed before row counts were recorded: its key file is found stale once, and the
    # counts are written with it, so the next run reads no part file for keys.
    for key_file in key_files:
        listed = json.loads((key_file.parent / engine.UNIT_COMPLETE).read_text(encoding="utf-8"))
        del listed["rows"]
        (key_file.parent / engine.UNIT_COMPLETE).write_text(json.dumps(listed), encoding="utf-8")
    engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v6", batch_size=2, parts_dir=parts)
    key_reads.clear()
    monkeypatch.setattr(engine.pq, "read_table", counted)
    engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v7", batch_size=2, parts_dir=parts)
    monkeypatch.undo()
    assert key_reads == [] and read_outputs(tmp_path / "v7") == full


def test_a_key_file_with_a_flipped_bit_is_not_used(corpus, curation_params, tmp_path, full_decisions):
    """A trial: Parquet checks no page by default, so a flipped bit in a unit's key file read
    back as other keys (a record rejected as a duplicate id, another run failing). The file's
    SHA-256 in the unit's listing catches it; the keys come from the part files instead."""
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    key_file = sorted(parts.glob(f"*/{engine.UNIT_KEYS}"))[0]
    listed = json.loads((key_file.parent / engine.UNIT_COMPLETE).read_text(encoding="utf-8"))
    names = [str(key_file.parent / name) for name in listed["parts"]]
    assert engine._unit_keys(key_file.parent, names, curation_params.dedup.num_bands) is not None
    data = bytearray(key_file.read_bytes())
    data[len(data) // 2] ^= 1
    key_file.write_bytes(bytes(data))
    assert engine._unit_keys(key_file.parent, names, curation_params.dedup.num_bands) is None
    engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert read_outputs(tmp_path / "v2") == _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]
    assert engine._unit_keys(key_file.parent, names, curation_params.dedup.num_bands) is not None  # written again


def test_an_output_edited_in_place_is_not_linked_into_the_next_corpus(corpus, curation_params, tmp_path):
    """Settled files are hard-linked into the outputs: rewriting an output part in place
    rewrites the kept settled file too. The next run sees its hash differ and settles the part
    again, so its corpus equals a full run's."""
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    edited = sorted((tmp_path / "v2" / "cleaned.parquet").glob("part-*.parquet"))[0]
    table = engine.pq.read_table(edited)
    engine.pq.write_table(table.slice(0, table.num_rows - 1), edited)  # same path, same inode: one row fewer
    assert any(path.stat().st_ino == edited.stat().st_ino for path in parts.glob("*/settled/*/cleaned.parquet"))
    engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v3", batch_size=2, parts_dir=parts)
    assert read_outputs(tmp_path / "v3") == _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]


def test_a_truncated_part_file_makes_its_unit_processed_again(corpus, curation_params, tmp_path):
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    damaged = sorted(parts.glob("*/part-*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert (run.processed_units, run.cached_units) == (2, 1)  # the damaged unit and the new one
    assert read_outputs(tmp_path / "v2") == _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]


def test_a_settle_task_run_again_relinks_what_it_linked(curation_params, tmp_path):
    """Ray runs a task again when its worker dies; a settle task of an incremental run that
    had already linked a part's settled files into the outputs must do it again, not fail
    on the link that is there (it did: os.link, then copyfile of a file onto itself)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hkgai_pipelines.curation.dedup import DuplicateDecisions
    from hkgai_pipelines.curation.pipeline import PROCESSED_SCHEMA, CurationPipeline
    from hkgai_pipelines.sources.records import RawRecord

    row = CurationPipeline(curation_params).process(RawRecord(text=LEGCO, source="s", licence="x", locator="f:1"), 0)
    unit = tmp_path / "unit"
    unit.mkdir()
    part = unit / engine.part_name(0)
    pq.write_table(pa.Table.from_pylist([row], schema=PROCESSED_SCHEMA), part)
    out, quarantine = tmp_path / "staging", tmp_path / "quarantine"
    for folder in (out / "cleaned.parquet", out / "rejected.parquet", quarantine):
        folder.mkdir(parents=True)
    none = np.zeros(0, dtype=np.int64)
    decisions = DuplicateDecisions(none, none, np.zeros(0, bool), np.zeros(0, np.int32), np.zeros(0), np.zeros(0, np.uint8),
                                   np.zeros(1, np.int64))
    first = engine._settle_parts([(str(part), 1)], decisions, str(out), str(quarantine))
    again = engine._settle_parts([(str(part), 1)], decisions, str(out), str(quarantine))
    assert [stats.kept for stats, _ in first] == [stats.kept for stats, _ in again] == [1]
    (settled,) = unit.glob(f"{engine.SETTLED_DIR}/*/cleaned.parquet")
    assert (out / "cleaned.parquet" / part.name).stat().st_ino == settled.stat().st_ino


def test_appended_units_extend_the_dedup_index_until_it_is_compacted(corpus, curation_params, tmp_path, monkeypatch):
    """Each run that appends a unit decides its records against the index alone (the earlier
    units' keys are not read); past MAX_GENERATIONS a full decision writes one generation
    again. Every run's outputs equal a full run's."""
    from hkgai_pipelines.curation import dedup_index

    monkeypatch.setattr(dedup_index, "MAX_GENERATIONS", 1)
    parts = tmp_path / "parts"
    read, key_reads = engine.pq.read_table, []

    def counted(path, *args, **kwargs):
        if kwargs.get("columns") == engine.PART_KEY_COLUMNS or Path(path).name == engine.UNIT_KEYS:
            key_reads.append(Path(path).parent.name)
        return read(path, *args, **kwargs)

    monkeypatch.setattr(engine.pq, "read_table", counted)
    extended, generations = [], []
    for step, names in enumerate([(A0,), (A0, A1), (A0, A1, B0), (A0, A1, B0)]):
        key_reads.clear()
        run = engine.curate(_units(corpus, *names), curation_params, tmp_path / f"v{step}", batch_size=2, parts_dir=parts)
        extended.append(run.dedup["index_extended"])
        listing = dedup_index.read_listing(parts / engine.DEDUP_INDEX_DIR / "current.json")
        generations.append(len(listing["generations"]))
        new = {engine.unit_fingerprint(unit, curation_params, 2) for unit in _units(corpus, *names)[-1:]} if step < 3 else set()
        if run.dedup["index_extended"]:
            assert set(key_reads) <= new  # only a new unit's parts, for its own key file
        full, full_run = _full(corpus, curation_params, tmp_path / f"full{step}", *names)
        assert read_outputs(tmp_path / f"v{step}") == full
        assert run.dedup == {**full_run.dedup, "index_extended": run.dedup["index_extended"]}
    # The last run brings nothing new: the index's verdicts, and the index as it was (a trial saw
    # each such run add an empty generation, so eight reruns forced a full decision).
    assert extended == [0, 1, 0, 1] and generations == [1, 2, 1, 1]


def test_a_damaged_or_unfinished_dedup_index_is_not_extended(corpus, curation_params, tmp_path, monkeypatch):
    """A bit flipped in an index file: the run decides over every key. A run stopped after its
    decision leaves the index of the last finished run current, which the next run extends."""
    from hkgai_pipelines.curation import dedup_index

    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    root = parts / engine.DEDUP_INDEX_DIR
    listing = dedup_index.read_listing(root / "current.json")
    bands = root / next(name for name in listing["files"] if "/bands-" in name)
    data = bytearray(bands.read_bytes())
    data[len(data) - 20] ^= 1
    bands.write_bytes(bytes(data))
    _stopped_in_settle(corpus, curation_params, tmp_path / "v2", parts, monkeypatch)
    assert dedup_index.read_listing(root / "current.json") == listing  # still the first run's
    full = _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert run.dedup["index_extended"] == 0 and read_outputs(tmp_path / "v2") == full
    # The finished run's index is whole again, and the next run extends it.
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v3", batch_size=2, parts_dir=parts)
    assert run.dedup["index_extended"] == 1 and read_outputs(tmp_path / "v3") == full
    assert len(list(root.glob("pending-*"))) == 0 and len(list(root.glob("state-*"))) == 1


def test_units_listed_before_row_counts_were_recorded_extend_the_index(corpus, curation_params, tmp_path):
    """A trial: the index path counted the cached records from UNIT_COMPLETE's `rows`, which a
    unit listed before the counts were recorded lacks (KeyError on every run); the full
    decision's path accepts such a unit."""
    parts = tmp_path / "parts"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    for listed_file in parts.glob(f"*/{engine.UNIT_COMPLETE}"):
        listed = json.loads(listed_file.read_text(encoding="utf-8"))
        del listed["rows"]
        listed_file.write_text(json.dumps(listed), encoding="utf-8")
    run = engine.curate(_units(corpus, A0, A1, B0), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert run.dedup["index_extended"] == 1 and run.cached_records == 10
    assert read_outputs(tmp_path / "v2") == _full(corpus, curation_params, tmp_path / "full", A0, A1, B0)[0]


def test_units_out_of_input_order_are_refused(corpus, curation_params, tmp_path):
    """A trial: units passed as [u0, u2, u1] failed deep in pair verification."""
    u0, u1, u2 = _units(corpus, A0, A1, B0)
    with pytest.raises(ValueError, match="units must come in input order .*unit 1 after unit 2"):
        engine.curate([u0, u2, u1], curation_params, tmp_path / "out", batch_size=2)


def test_a_rerun_with_nothing_new_or_an_empty_file_adds_no_generation(corpus, curation_params, tmp_path):
    from hkgai_pipelines.curation import dedup_index

    parts, current = tmp_path / "parts", tmp_path / "parts" / engine.DEDUP_INDEX_DIR / "current.json"
    engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / "v1", batch_size=2, parts_dir=parts)
    listing = current.read_bytes()
    for step in range(3):
        run = engine.curate(_units(corpus, A0, A1), curation_params, tmp_path / f"r{step}", batch_size=2, parts_dir=parts)
        assert run.dedup["index_extended"] == 1 and current.read_bytes() == listing
    assert read_outputs(tmp_path / "r2") == read_outputs(tmp_path / "v1")
    (corpus / "z.jsonl").write_text("", encoding="utf-8")
    run = engine.curate(_units(corpus, A0, A1, "z.jsonl"), curation_params, tmp_path / "v2", batch_size=2, parts_dir=parts)
    assert run.dedup["index_extended"] == 1
    assert len(dedup_index.read_listing(current)["generations"]) == 1  # a new unit, but no new entries
    assert len(list(current.parent.glob("gen-*"))) == 1
