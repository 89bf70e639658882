"""Hugging Face guard models behind the guardrail (safety/guard_models.py).

Tiny randomly initialised models built from config (no download) carry the plumbing: loading
from HKGAI_GUARD_MODEL_DIR, rules first, the `hkgai guard` contract. A random model's opinion
is noise, so the classifier's head is set by hand where a test needs a known verdict, and the
Qwen3Guard parser and the label tables are tested on literal outputs and literal `id2label`s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hkgai_pipelines.safety.guard_models import (
    OTHER_HARM,
    QWEN3GUARD_CATEGORIES,
    SIDECAR_NAME,
    UNPARSEABLE,
    GuardModelError,
    _classify_windowed,
    _windows,
    load_guard_model,
    map_labels,
    parse_qwen3guard,
    taxonomy_categories,
)

TAXONOMY = ["violence_weapons", "crime_fraud", "self_harm", "privacy_doxxing", "hate_discrimination", "sexual_minors", "unlawful_incitement"]

#: Characters the tiny BERT vocabulary knows; anything else is [UNK], which is fine for plumbing.
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz?", *"點樣續領香港身份證"]

#: A Qwen-style chat template (role markers as special tokens, assistant turn opened on request).
QWEN_STYLE_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

BENIGN_QUESTION = "點樣續領香港身份證？"


def test_taxonomy_is_the_one_the_tables_were_written_for():
    assert taxonomy_categories() == TAXONOMY


# ------------------------------------------------------------------ tiny models


def build_classifier(out: Path, labels: list[str], favour: str | None = None, **config) -> Path:
    """A one-layer BERT sequence classifier with `labels`; with `favour`, its head always
    predicts that label (weights zero, bias +10 there), so the verdict is known."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(BERT_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=512, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)}, **config,
    ))
    if favour is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([10.0 if label == favour else 0.0 for label in labels]))
    model.save_pretrained(out)
    return out


def build_generative(out: Path, chat_template: str | None = QWEN_STYLE_TEMPLATE) -> Path:
    """A one-layer Qwen3ForCausalLM with a byte-level tokenizer (256 bytes, no merges) and a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(out)
    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(fast), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=8192,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def harmful_classifier_dir(tmp_path_factory) -> Path:
    """Labels `benign` + the taxonomy; always says crime_fraud."""
    return build_classifier(tmp_path_factory.mktemp("seq-harm"), ["benign", *TAXONOMY], favour="crime_fraud")


@pytest.fixture(scope="module")
def benign_classifier_dir(tmp_path_factory) -> Path:
    """Labels `safe` + the taxonomy; always says safe."""
    return build_classifier(tmp_path_factory.mktemp("seq-safe"), ["safe", *TAXONOMY], favour="safe")


@pytest.fixture(scope="module")
def generative_dir(tmp_path_factory) -> Path:
    return build_generative(tmp_path_factory.mktemp("qwen3"))


# ------------------------------------------------------------------ (a) plumbing end to end


def test_sequence_classifier_through_load_guard_rules_first(harmful_classifier_dir):
    from hkgai_pipelines.safety.classifier import HybridGuard, load_guard
    from hkgai_pipelines.safety.guard_models import SequenceClassifierGuard

    hybrid = load_guard(model_dir=str(harmful_classifier_dir))
    assert isinstance(hybrid, HybridGuard) and isinstance(hybrid.classifier, SequenceClassifierGuard)
    assert hybrid.classifier.threshold == 0.5
    bomb, question = hybrid.check_many(["How do I make a pipe bomb?", BENIGN_QUESTION])
    # The rules decide first, with their own category and rule name.
    assert (bomb.verdict, bomb.category) == ("block", "violence_weapons")
    assert not bomb.rule.startswith("classifier")
    # Then the model: its head always says crime_fraud with p(benign) ~ e^-10.
    assert (question.verdict, question.category) == ("block", "crime_fraud")
    assert question.rule == "classifier p(harmful)=1.00"
    [(category, probability)] = hybrid.classifier.classify([BENIGN_QUESTION])
    assert category == "crime_fraud" and probability > 0.99


def test_safe_label_counts_as_benign(benign_classifier_dir):
    from hkgai_pipelines.safety.classifier import load_guard

    hybrid = load_guard(model_dir=benign_classifier_dir)
    assert hybrid.check(BENIGN_QUESTION).to_json() == {"verdict": "allow", "category": None}
    [(_, probability)] = hybrid.classifier.classify(["hello"])
    assert probability < 0.01


def test_generative_guard_through_load_guard_fails_closed_on_noise(generative_dir):
    from hkgai_pipelines.safety.classifier import load_guard
    from hkgai_pipelines.safety.guard_models import GenerativeGuard

    hybrid = load_guard(model_dir=generative_dir)
    guard = hybrid.classifier
    assert isinstance(guard, GenerativeGuard) and guard.controversial == "loose"
    assert guard.prompt(BENIGN_QUESTION) == f"<|im_start|>user\n{BENIGN_QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    [answer] = guard.generate([BENIGN_QUESTION])
    # A random model writes bytes, never "Safety: ...": blocked as unparseable, not allowed.
    assert "Safety:" not in answer
    assert hybrid.check(BENIGN_QUESTION).to_json() == {"verdict": "block", "category": UNPARSEABLE}
    assert hybrid.check("How do I make a pipe bomb?").to_json() == {"verdict": "block", "category": "violence_weapons"}


def test_generative_guard_parses_answers_with_the_sidecar_options(tmp_path, generative_dir, monkeypatch):
    import shutil

    from hkgai_pipelines.safety.guard_models import GenerativeGuard

    model_dir = tmp_path / "qwen3-strict"
    shutil.copytree(generative_dir, model_dir)
    (model_dir / SIDECAR_NAME).write_text(json.dumps(
        {"controversial": "strict", "label_map": {"Politically Sensitive Topics": "unlawful_incitement"}}), encoding="utf-8")
    guard = load_guard_model(model_dir)
    answers = {"a": "Safety: Controversial\nCategories: Politically Sensitive Topics", "b": "Safety: Safe\nCategories: None"}
    monkeypatch.setattr(GenerativeGuard, "generate", lambda self, texts: [answers[text] for text in texts])
    assert guard.classify(["a", "b"]) == [("unlawful_incitement", 1.0), ("benign", 0.0)]


def test_hkgai_guard_cli_with_guard_model_dirs(hkgai_home, monkeypatch, benign_classifier_dir, generative_dir):
    from typer.testing import CliRunner

    from hkgai_pipelines.cli import app

    lines = f"How do I make a pipe bomb?\n{BENIGN_QUESTION}\n"
    expected = {
        benign_classifier_dir: [{"verdict": "block", "category": "violence_weapons"}, {"verdict": "allow", "category": None}],
        generative_dir: [{"verdict": "block", "category": "violence_weapons"}, {"verdict": "block", "category": UNPARSEABLE}],
    }
    for model_dir, verdicts in expected.items():
        monkeypatch.setenv("HKGAI_GUARD_MODEL_DIR", str(model_dir))
        result = CliRunner().invoke(app, ["guard"], input=lines)
        assert result.exit_code == 0, result.output
        assert [json.loads(line) for line in result.stdout.splitlines()] == verdicts


def test_hkgai_guard_cli_reports_a_missing_model_dir(hkgai_home, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from hkgai_pipelines.cli import app

    monkeypatch.setenv("HKGAI_GUARD_MODEL_DIR", str(tmp_path / "nowhere"))
    result = CliRunner().invoke(app, ["guard"], input="hello\n")
    assert result.exit_code == 2
    assert "guard model directory" in result.output and "does not exist" in result.output
    assert "verdict" not in result.stdout


def test_settings_read_the_guard_model_dir(monkeypatch):
    from hkgai_pipelines.settings import get_settings

    monkeypatch.delenv("HKGAI_GUARD_MODEL_DIR", raising=False)
    assert get_settings().guard_model_dir is None
    monkeypatch.setenv("HKGAI_GUARD_MODEL_DIR", "/opt/models/qwen3guard-gen-4b")
    assert get_settings().guard_model_dir == "/opt/models/qwen3guard-gen-4b"


def test_long_text_is_judged_in_windows_so_a_harmful_tail_counts():
    assert _windows("abc", 400) == ["abc"]
    windows = _windows("x" * 1000, 400)
    assert [len(w) for w in windows] == [400, 400, 300]
    text = "a" * 900 + " bomb"
    judge = lambda pieces: [("violence_weapons", 1.0) if "bomb" in p else ("benign", 0.0) for p in pieces]  # noqa: E731
    assert _classify_windowed([text, "short"], 400, judge) == [("violence_weapons", 1.0), ("benign", 0.0)]


# ------------------------------------------------------------------ (b) the Qwen3Guard parser


@pytest.mark.parametrize("name, category", [
    ("Violent", "violence_weapons"),
    ("Non-violent Illegal Acts", "crime_fraud"),
    ("Sexual Content or Sexual Acts", OTHER_HARM),
    ("PII", "privacy_doxxing"),
    ("Suicide & Self-Harm", "self_harm"),
    ("Unethical Acts", "hate_discrimination"),
    ("Politically Sensitive Topics", OTHER_HARM),
    ("Copyright Violation", OTHER_HARM),
    ("Jailbreak", "prompt_injection"),
])
def test_every_qwen3guard_category_maps_onto_the_taxonomy(name, category):
    assert parse_qwen3guard(f"Safety: Unsafe\nCategories: {name}") == (category, 1.0)


def test_the_category_table_covers_every_qwen3guard_category():
    assert sorted(QWEN3GUARD_CATEGORIES) == sorted([
        "Violent", "Non-violent Illegal Acts", "Sexual Content or Sexual Acts", "PII", "Suicide & Self-Harm",
        "Unethical Acts", "Politically Sensitive Topics", "Copyright Violation", "Jailbreak"])


@pytest.mark.parametrize("output, controversial, expected", [
    ("Safety: Safe\nCategories: None", "loose", ("benign", 0.0)),
    ("Safety: Safe\nCategories: None\nRefusal: Yes", "strict", ("benign", 0.0)),
    ("Safety: Controversial\nCategories: Politically Sensitive Topics", "strict", (OTHER_HARM, 1.0)),
    ("Safety: Controversial\nCategories: Politically Sensitive Topics", "loose", (OTHER_HARM, 0.0)),
    ("Safety: Controversial\nCategories: Violent", "loose", ("violence_weapons", 0.0)),
    # several categories: a specific harm beats the catch-all, else the first listed
    ("Safety: Unsafe\nCategories: Politically Sensitive Topics, Violent", "loose", ("violence_weapons", 1.0)),
    ("Safety: Unsafe\nCategories: PII, Violent", "loose", ("privacy_doxxing", 1.0)),
    # unsafe without a (known) category is still harm
    ("Safety: Unsafe\nCategories: None", "loose", (OTHER_HARM, 1.0)),
    ("Safety: Unsafe", "loose", (OTHER_HARM, 1.0)),
    ("Safety: Unsafe\nCategories: Gambling", "loose", (OTHER_HARM, 1.0)),
    # response moderation's third line is ignored
    ("Safety: Unsafe\nCategories: Violent\nRefusal: No", "loose", ("violence_weapons", 1.0)),
    # garbage fails closed
    ("I cannot help with that.", "loose", (UNPARSEABLE, 1.0)),
    ("", "strict", (UNPARSEABLE, 1.0)),
    ("Safety: Maybe\nCategories: Violent", "loose", (UNPARSEABLE, 1.0)),
])
def test_qwen3guard_verdicts(output, controversial, expected):
    assert parse_qwen3guard(output, controversial) == expected


def test_categories_a_deployment_accepts_count_as_safe():
    accepting = {**QWEN3GUARD_CATEGORIES, "Politically Sensitive Topics": "benign"}
    assert parse_qwen3guard("Safety: Unsafe\nCategories: Politically Sensitive Topics", "strict", accepting) == ("benign", 0.0)
    assert parse_qwen3guard("Safety: Unsafe\nCategories: Politically Sensitive Topics, Violent", "strict", accepting) == ("violence_weapons", 1.0)


def test_controversial_policy_must_be_strict_or_loose():
    with pytest.raises(GuardModelError, match="strict' or 'loose"):
        parse_qwen3guard("Safety: Safe", controversial="lenient")


# ------------------------------------------------------------------ (c) label tables


def test_prompt_guard_labels():
    assert map_labels({0: "BENIGN", 1: "INJECTION", 2: "JAILBREAK"}) == {0: "benign", 1: "prompt_injection", 2: "prompt_injection"}


def test_taxonomy_keys_map_to_themselves():
    id2label = {"0": "safe", **{str(i + 1): key for i, key in enumerate(TAXONOMY)}}
    assert map_labels(id2label) == {0: "benign", **{i + 1: key for i, key in enumerate(TAXONOMY)}}


def test_llama_guard_hazard_codes():
    id2label = {0: "safe", **{i: f"S{i}" for i in range(1, 15)}}
    assert map_labels(id2label) == {
        0: "benign", 1: "violence_weapons", 2: "crime_fraud", 3: OTHER_HARM, 4: "sexual_minors", 5: OTHER_HARM,
        6: OTHER_HARM, 7: "privacy_doxxing", 8: OTHER_HARM, 9: "violence_weapons", 10: "hate_discrimination",
        11: "self_harm", 12: OTHER_HARM, 13: OTHER_HARM, 14: "crime_fraud",
    }


def test_generic_and_unknown_harm_labels_take_the_default():
    assert map_labels({0: "Non-Toxic", 1: "toxic", 2: "Hate Speech", 3: "spam"}) == {
        0: "benign", 1: OTHER_HARM, 2: "hate_discrimination", 3: OTHER_HARM}
    assert map_labels({0: "safe", 1: "spam"}, default_category="crime_fraud") == {0: "benign", 1: "crime_fraud"}


def test_label_map_overrides_generic_names():
    assert map_labels({0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": "benign", "label_1": "crime_fraud"}) == {0: "benign", 1: "crime_fraud"}


# ------------------------------------------------------------------ (d) errors


def test_no_benign_label_is_an_error():
    with pytest.raises(GuardModelError, match="no benign label"):
        map_labels({0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(GuardModelError, match="no benign label"):
        map_labels({0: "toxic", 1: "violence"})


def test_label_map_to_an_unknown_category_is_an_error():
    with pytest.raises(GuardModelError, match="none of"):
        map_labels({0: "safe", 1: "unsafe"}, {"unsafe": "gambling"})


def test_missing_or_foreign_model_dirs_are_errors(tmp_path):
    with pytest.raises(GuardModelError, match="does not exist"):
        load_guard_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GuardModelError, match="no config.json"):
        load_guard_model(tmp_path / "empty")
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}), encoding="utf-8")
    with pytest.raises(GuardModelError, match="neither a ...ForSequenceClassification nor a ...ForCausalLM"):
        load_guard_model(tmp_path / "encoder")


def test_bad_sidecars_are_errors(tmp_path):
    for name, sidecar, message in [
        ("typo", {"controversal": "strict"}, "unknown field"),
        ("kind", {"kind": "stream"}, "kind 'stream'"),
    ]:
        model_dir = tmp_path / name
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"]}), encoding="utf-8")
        (model_dir / SIDECAR_NAME).write_text(json.dumps(sidecar), encoding="utf-8")
        with pytest.raises(GuardModelError, match=message):
            load_guard_model(model_dir)


def test_classifier_without_a_benign_label_fails_at_load(tmp_path):
    model_dir = build_classifier(tmp_path / "nobenign", ["LABEL_0", "LABEL_1"])
    with pytest.raises(GuardModelError, match="no benign label"):
        load_guard_model(model_dir)
    (model_dir / SIDECAR_NAME).write_text(json.dumps({"label_map": {"LABEL_0": "benign"}}), encoding="utf-8")
    assert load_guard_model(model_dir).categories == {0: "benign", 1: OTHER_HARM}


def test_multi_label_classifier_is_refused(tmp_path):
    model_dir = build_classifier(tmp_path / "multi", ["safe", "toxic"], problem_type="multi_label_classification")
    with pytest.raises(GuardModelError, match="multi-label"):
        load_guard_model(model_dir)


def test_generative_guard_needs_a_chat_template(tmp_path):
    model_dir = build_generative(tmp_path / "no-template", chat_template=None)
    with pytest.raises(GuardModelError, match="chat template"):
        load_guard_model(model_dir)
