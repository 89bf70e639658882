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
