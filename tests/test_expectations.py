"""The GX gates pass on clean data and fail on each planted violation."""

import pandas as pd
import pytest

from hkgai_pipelines.curation import expectations

ALLOWED = ["yue", "zh-hant", "zh-hans", "en", "mixed"]


@pytest.fixture
def clean() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "text": ["佢哋聽日去旺角。", "立法會每屆任期四年。", "The MTR opened in 1979.", "請打 <PHONE> 搵我。"],
            "lang": ["yue", "zh-hant", "en", "yue"],
        }
    )


def test_all_gates_pass_on_clean_data(clean):
    assert expectations.check_ids_unique(clean).passed
    assert expectations.check_text_non_empty(clean).passed
    assert expectations.check_lang_allowed(clean, ALLOWED).passed
    assert expectations.check_no_residual_pii(clean).passed
    assert expectations.check_length_bounds(clean, 6, 1000).passed
    assert expectations.check_language_mix(clean, {"yue": 0.25, "en": 0.25}).passed


def test_duplicate_id_fails(clean):
    clean.loc[1, "id"] = "a"
    outcome = expectations.check_ids_unique(clean)
    assert not outcome.passed
    assert outcome.metadata["gx_results"][0]["unexpected_count"] == 2


def test_blank_text_fails(clean):
    clean.loc[2, "text"] = "   "
    assert not expectations.check_text_non_empty(clean).passed


def test_unknown_language_fails(clean):
    clean.loc[0, "lang"] = "other"
    outcome = expectations.check_lang_allowed(clean, ALLOWED)
    assert not outcome.passed
    assert outcome.metadata["gx_results"][0]["partial_unexpected_list"] == ["other"]


@pytest.mark.parametrize("leak", ["聯絡 chan@example.com", "Call +852 2345 6789", "HKID A123456(3)", "卡號 4111 1111 1111 1111"])
def test_planted_pii_fails(clean, leak):
    clean.loc[3, "text"] = leak
    assert not expectations.check_no_residual_pii(clean).passed


def test_length_bounds_fail(clean):
    clean.loc[0, "text"] = "短"
    assert not expectations.check_length_bounds(clean, 6, 1000).passed


def test_language_below_minimum_share_fails(clean):
    outcome = expectations.check_language_mix(clean, {"zh-hans": 0.05})
    assert not outcome.passed
    assert outcome.metadata["shares"] == {"zh-hans": 0.0}


def test_counts_that_do_not_add_up_fail():
    stats = {"input_records": 10, "kept": 6, "rejected": 3, "quarantined": 0}
    assert not expectations.check_counts_add_up(stats, 6, 3, 0).passed
    stats["quarantined"] = 1
    assert expectations.check_counts_add_up(stats, 6, 3, 1).passed
    assert not expectations.check_counts_add_up(stats, 5, 3, 1).passed


# --- the same gates over a sharded output, batch by batch ----------------------------------

@pytest.fixture
def sharded(tmp_path, clean):
    """A curation output of three part files; the last part plants a repeated id, an empty
    text, an unknown language, a phone number and an over-long text."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    (out / "cleaned.parquet").mkdir(parents=True)
    (out / "rejected.parquet").mkdir()
    bad = pd.DataFrame({"id": ["e", "a", "f", "g"], "text": ["  ", "好。" * 10, "電話 9123 4567 搵我。", "x" * 200],
                        "lang": ["yue", "yue", "ja", "en"]})
    for number, frame in enumerate([clean.iloc[:2], clean.iloc[2:], bad]):
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / "cleaned.parquet" / f"part-{number:020d}.parquet")
    pq.write_table(pa.table({"text": ["hello"], "locator": ["page?mail=chan.taiman@example.com&tel=91234567"]}),
                   out / "rejected.parquet" / "part-0.parquet")
    (out / "quarantine.jsonl").write_text("", encoding="utf-8")
    (out / "stats.json").write_text(json.dumps({"input_records": 9, "kept": 8, "rejected": 1, "quarantined": 0}), encoding="utf-8")
    return expectations.OutputReader(out, batch_rows=2)


def test_batches_cover_every_part_and_counts_add_up_across_them(sharded):
    assert [len(frame) for frame in sharded.frames(["text"])] == [2, 2, 2, 2]
    ids = expectations.check_ids_unique(sharded.column("id"))
    assert not ids.passed and ids.metadata["gx_results"][0]["unexpected_count"] == 2  # "a" twice, parts apart
    assert ids.metadata["ids"] == 8
    empty = expectations.check_text_non_empty(sharded.frames(["text"]))
    assert not empty.passed and empty.metadata["gx_results"][1]["unexpected_count"] == 1
    langs = expectations.check_lang_allowed(sharded.frames(["lang"]), ALLOWED)
    assert not langs.passed and langs.metadata["gx_results"][0]["partial_unexpected_list"] == ["ja"]
    columns = expectations.WRITTEN_TEXT_COLUMNS
    pii = expectations.check_no_residual_pii(sharded.frames(columns), sharded.frames(columns, "rejected.parquet"))
    assert not pii.passed and pii.metadata["gx_results"][0]["unexpected_count"] == 2  # the text and the locator
    assert pii.metadata["findings"] == ["PHONE: 9123 4567", "EMAIL: chan.taiman@example.com"]
    assert pii.metadata["possible_phone_numbers"] == {"count": 1, "examples": ["91234567"]}  # no cue: listed, not blocking
    bounds = expectations.check_length_bounds(sharded.frames(["text"]), 1, 100)
    assert not bounds.passed and bounds.metadata["gx_results"][0]["unexpected_count"] == 2  # blank and 200 x
    mix = expectations.check_language_mix(sharded.column("lang"), {"yue": 0.5})
    assert mix.passed and mix.metadata["shares"] == {"yue": 0.5}
    counts = expectations.check_counts_add_up(sharded.stats(), sharded.rows("cleaned.parquet"), sharded.rows("rejected.parquet"),
                                              sharded.quarantine_records())
    assert counts.passed


def test_gates_on_an_output_without_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    (out / "cleaned.parquet").mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string()), "lang": pa.array([], pa.string())}),
                   out / "cleaned.parquet" / "part-0.parquet")
    reader = expectations.OutputReader(out)
    assert [len(frame) for frame in reader.frames(["text"])] == [0]
    assert expectations.check_text_non_empty(reader.frames(["text"])).passed
    assert expectations.check_ids_unique(reader.column("id")).passed
