"""The benchmark's peer configurations do the work they claim: datatrove running our steps
(benchmarks/datatrove_steps.py) keeps, drops and rewrites exactly as `CurationPipeline.steps`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("datatrove")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from datatrove.data import Document  # noqa: E402
from datatrove_steps import CurationSteps  # noqa: E402


def test_datatrove_filter_runs_our_steps():
    steps = CurationSteps()
    # Kept, redacted: the text datatrove writes is the one our steps left.
    kept = Document(text="請致電 9123 4567 查詢，我哋聽日會喺中環開會。", id="a")
    assert steps.filter(kept) is True
    assert kept.text == "請致電 <PHONE> 查詢，我哋聽日會喺中環開會。"
    # Simplified Mandarin is converted to Traditional, as the engine writes it.
    converted = Document(text="香港特别行政区政府今日公布新的房屋政策，市民可以上网查询。", id="b")
    assert steps.filter(converted) is True
    assert converted.text == "香港特別行政區政府今日公佈新的房屋政策，市民可以上網查詢。"
    # Dropped with the step's reason: too short for the quality step, and a language not kept;
    # a record the engine would quarantine (not valid Unicode) as "quarantine".
    assert steps.filter(Document(text="好", id="c")) == (False, "quality:too_short")
    assert steps.filter(Document(text="こんにちは、今日はいい天気ですね。散歩に行きましょう。", id="d")) == (False, "langid:language_other")
    assert steps.filter(Document(text="好 \ud83d 你好嗎，今日天氣幾好。", id=None)) == (False, "quarantine")
