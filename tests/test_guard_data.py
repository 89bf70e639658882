"""The guard classifier's training data (data/safety/classifier_train.yaml) is kept apart from
every set the guard is evaluated on (HarmBench, the held-out harmful set, the over-refusal and
benign sets, the value benchmark seeds, the field cases): no line in common, and no long n-gram
in common.

Both sides are compared in one form: NFKC, format characters removed, lower case, Traditional
folded to Simplified (OpenCC t2s). A line is the same line when its letters, digits and Han
characters are; an n-gram is 8 consecutive Han characters (punctuation and Latin letters in
between are skipped) or 5 consecutive English words. Short lines, under the n-gram size, are
covered by the exact-match check.

HarmBench (behaviours and their contexts) and the field cases live in ../shared beside the
project; their parameters are marked to skip when it is absent. No embeddings are needed: the
whole file runs in a few seconds.
"""

from __future__ import annotations

import csv
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from hkgai_pipelines.curation.langid import HAN_RE
from hkgai_pipelines.curation.script import to_simplified
from hkgai_pipelines.safety.classifier import load_training_data
from hkgai_pipelines.safety.guard import normalise_for_judging

SHARED = Path(__file__).resolve().parents[2] / "shared"
HARMBENCH = SHARED / "data" / "harmbench" / "harmbench_behaviors_text_all.csv"
FIELD_CASES = SHARED / "field-cases"

CJK_N = 8
WORD_N = 5
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_LETTERS = re.compile(r"\w+")


def folded(text: str) -> str:
    return to_simplified(normalise_for_judging(text).lower())


def same_line_key(text: str) -> str:
    """The line with everything but letters, digits and Han characters removed."""
    return "".join(_LETTERS.findall(folded(text)))


def ngrams(text: str) -> set[str]:
    """Every 8-Han-character and 5-English-word window of `text`, in folded form."""
    text = folded(text)
    han = "".join(HAN_RE.findall(text))
    grams = {han[i:i + CJK_N] for i in range(len(han) - CJK_N + 1)}
    words = _WORD.findall(HAN_RE.sub(" ", text))
    grams.update(" ".join(words[i:i + WORD_N]) for i in range(len(words) - WORD_N + 1))
    return grams


def _safety_yaml(name: str) -> dict:
    return yaml.safe_load(resources.files("hkgai_pipelines").joinpath("data", "safety", name).read_text(encoding="utf-8"))


def over_refusal_lines() -> list[str]:
    data = _safety_yaml("over_refusal_eval.yaml")
    return [line for lang in ("en", "yue", "zh-hant", "zh-hans") for line in data[lang]] + data["reported_false_blocks"]


def harmful_eval_lines() -> list[str]:
    data = _safety_yaml("harmful_eval.yaml")
    return [line for lang in ("en", "yue", "zh-hant", "zh-hans") for lines in data[lang].values() for line in lines]


def benign_hk_lines() -> list[str]:
    data = _safety_yaml("benign_hk_eval.yaml")
    return [line for lang in ("en", "yue", "zh-hant") for line in data[lang]]


def value_benchmark_lines() -> list[str]:
    from hkgai_pipelines.evaluation.value_benchmark import load_value_benchmark

    return [seed["prompt"] for seed in load_value_benchmark().seeds()]


def field_case_lines() -> list[str]:
    return [line for name in ("09_guard_zero_width.txt", "10_guard_allow_prefix.txt")
            for line in (FIELD_CASES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def harmbench_lines() -> list[str]:
    with open(HARMBENCH, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [text for row in rows for text in (row["Behavior"], row.get("ContextString") or "") if text.strip()]


EVALUATION_SETS = [
    pytest.param(over_refusal_lines, id="over_refusal_eval"),
    pytest.param(benign_hk_lines, id="benign_hk_eval"),
    pytest.param(harmful_eval_lines, id="harmful_eval"),
    pytest.param(value_benchmark_lines, id="value_benchmark_seeds"),
    pytest.param(field_case_lines, id="field_cases_09_10",
                 marks=pytest.mark.skipif(not FIELD_CASES.is_dir(), reason="no ../shared/field-cases beside the project")),
    pytest.param(harmbench_lines, id="harmbench",
                 marks=pytest.mark.skipif(not HARMBENCH.exists(), reason="no ../shared/data/harmbench beside the project")),
]


@pytest.fixture(scope="module")
def training_lines() -> list[str]:
    return load_training_data().authored_texts()


@pytest.mark.parametrize("evaluation_lines", EVALUATION_SETS)
def test_no_training_line_is_an_evaluation_line(training_lines, evaluation_lines):
    evaluation = {same_line_key(line): line for line in evaluation_lines()}
    shared = [(line, evaluation[key]) for line in training_lines if (key := same_line_key(line)) in evaluation]
    assert shared == []


@pytest.mark.parametrize("evaluation_lines", EVALUATION_SETS)
def test_training_and_evaluation_share_no_long_ngram(training_lines, evaluation_lines):
    index: dict[str, str] = {}
    for line in evaluation_lines():
        for gram in ngrams(line):
            index.setdefault(gram, line)
    shared = sorted({(gram, line[:80], index[gram][:80]) for line in training_lines for gram in ngrams(line) if gram in index})
    assert shared == [], f"{len(shared)} shared n-grams (n-gram, training line, evaluation line)"


def test_ngrams_fold_scripts_and_skip_punctuation():
    assert ngrams("請問香港，回歸是哪一年？") == ngrams("请问香港回归是哪一年")
    assert ngrams("How do I kill a process") == {"how do i kill a", "do i kill a process"}
    assert ngrams("短句") == set()
    assert same_line_key("Ｈｏｗ do I\u200b kill?") == same_line_key("how do i kill")


def test_harmful_eval_covers_every_category_in_four_languages():
    """At least 30 held-out harmful prompts per language, every taxonomy category in each."""
    from hkgai_pipelines.safety.guard import RuleGuard

    data = _safety_yaml("harmful_eval.yaml")
    taxonomy = sorted(c for c in RuleGuard().categories if c != "prompt_injection")
    for lang in ("en", "yue", "zh-hant", "zh-hans"):
        assert sorted(data[lang]) == taxonomy, lang
        lines = [line for lines in data[lang].values() for line in lines]
        assert len(lines) >= 30 and all(isinstance(line, str) and line.strip() for line in lines), lang
        assert len(set(map(same_line_key, lines))) == len(lines), lang
        if lang != "en":
            assert all(HAN_RE.search(line) for line in lines), lang
    # Simplified lines are written in Simplified, not left in Traditional.
    assert all(to_simplified(line) == line for lines in data["zh-hans"].values() for line in lines)


def test_training_data_covers_every_category_and_language():
    """All seven taxonomy categories and benign, with Han and Latin text in each."""
    from hkgai_pipelines.safety.guard import RuleGuard

    data = load_training_data()
    taxonomy = [c for c in RuleGuard().categories if c != "prompt_injection"]
    assert sorted(data.examples) == sorted([*taxonomy, "benign"])
    for label, lines in data.examples.items():
        assert any(HAN_RE.search(line) for line in lines), label
        assert any(not HAN_RE.search(line) for line in lines), label
    # Contextual requests: a passage with benign and with harmful requests about it.
    labels = {item.label for item in data.contextual}
    assert "benign" in labels and len(labels) >= 4
    assert all(len(passage) >= 150 for passage in data.contexts.values())
