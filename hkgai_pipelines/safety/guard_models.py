"""Hugging Face guard models behind the guardrail's classifier interface.

`HKGAI_GUARD_MODEL_DIR` names a local model directory (baked into the image; nothing is
downloaded). `load_guard_model(model_dir)` returns one of two guards, both with the contract of
`classifier.GuardClassifier`: `classify(texts) -> [(category, p_harmful)]` and a `threshold`;
`HybridGuard` runs the rules first and blocks when `p_harmful >= threshold`.

- `SequenceClassifierGuard`: an `AutoModelForSequenceClassification` (one softmax over its
  labels). `p_harmful` is one minus the probability of its benign labels; the category is its
  most likely harmful label, mapped onto the taxonomy by `map_labels` (table `LABEL_CATEGORIES`).
- `GenerativeGuard`: an `AutoModelForCausalLM` with a chat template, such as Qwen3Guard-Gen,
  decoded greedily and parsed by `parse_qwen3guard`. Its verdict is a word, not a score, so
  `p_harmful` is 1.0 (block) or 0.0 (allow).

Which kind a directory holds comes from an optional `hkgai_guard.json` next to `config.json`
(`SIDECAR_NAME`; its fields are described in `GuardModelOptions`), else from
`config.json`'s `architectures` (`...ForSequenceClassification` or `...ForCausalLM`).

Categories a guard model can name that the taxonomy has no key for are reported as
`other_harm` (`OTHER_HARM`); override attempts as the rules' `prompt_injection`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from hkgai_pipelines.safety.guard import INJECTION_CATEGORY

BENIGN = "benign"

#: Harm a guard model reports that no taxonomy category describes (for example Qwen3Guard's
#: "Copyright Violation", or a binary model's "unsafe"). Blocked like any other harm.
OTHER_HARM = "other_harm"

#: A generative guard's output without a "Safety:" line. The guard fails closed: the text is
#: blocked under this category, so a misconfigured model shows up as blocks, not as silence.
UNPARSEABLE = "guard_unparseable"

SIDECAR_NAME = "hkgai_guard.json"


class GuardModelError(ValueError):
    """A guard model directory that cannot serve: missing, unsupported, or unmappable labels."""


def taxonomy_categories() -> list[str]:
    """The seven harm categories of `data/safety/taxonomy.yaml`, in file order."""
    text = resources.files("hkgai_pipelines").joinpath("data", "safety", "taxonomy.yaml").read_text(encoding="utf-8")
    return list(yaml.safe_load(text)["categories"])


# ------------------------------------------------------------------ sequence-classification labels

#: Labels (normalised by `normalise_label`) that mean "nothing harmful".
BENIGN_LABELS = frozenset({"benign", "safe", "harmless", "neutral", "normal", "ok", "non_toxic", "not_toxic", "nontoxic"})

#: Common guard-model labels and where they land; taxonomy keys map to themselves as well.
#: The S1..S14 codes are Llama Guard 3's hazard categories (MLCommons hazard taxonomy plus
#: code-interpreter abuse), as listed on its model card.
LABEL_CATEGORIES: dict[str, str] = {
    # binary or generic harm labels: no category to say which harm
    "unsafe": OTHER_HARM, "harmful": OTHER_HARM, "toxic": OTHER_HARM, "toxicity": OTHER_HARM,
    # instruction override (Prompt Guard's INJECTION / JAILBREAK)
    "injection": INJECTION_CATEGORY, "jailbreak": INJECTION_CATEGORY, "prompt_injection": INJECTION_CATEGORY,
    # named harms
    "violence": "violence_weapons", "violent": "violence_weapons", "weapons": "violence_weapons",
    "crime": "crime_fraud", "fraud": "crime_fraud", "scam": "crime_fraud", "illegal": "crime_fraud",
    "self_harm": "self_harm", "suicide": "self_harm",
    "privacy": "privacy_doxxing", "pii": "privacy_doxxing", "doxxing": "privacy_doxxing",
    "hate": "hate_discrimination", "hate_speech": "hate_discrimination", "identity_hate": "hate_discrimination",
    "discrimination": "hate_discrimination",
    "csam": "sexual_minors", "child_sexual_exploitation": "sexual_minors",
    "incitement": "unlawful_incitement",
    # Llama Guard 3 hazard codes
    "s1": "violence_weapons",  # Violent Crimes
    "s2": "crime_fraud",  # Non-Violent Crimes
    "s3": OTHER_HARM,  # Sex-Related Crimes (not specific to minors)
    "s4": "sexual_minors",  # Child Sexual Exploitation
    "s5": OTHER_HARM,  # Defamation
    "s6": OTHER_HARM,  # Specialized Advice
    "s7": "privacy_doxxing",  # Privacy
    "s8": OTHER_HARM,  # Intellectual Property
    "s9": "violence_weapons",  # Indiscriminate Weapons
    "s10": "hate_discrimination",  # Hate
    "s11": "self_harm",  # Suicide & Self-Harm
    "s12": OTHER_HARM,  # Sexual Content
    "s13": OTHER_HARM,  # Elections
    "s14": "crime_fraud",  # Code Interpreter Abuse
}


def normalise_label(label: str) -> str:
    """'Hate Speech', 'hate-speech' and 'HATE_SPEECH' are the same label: 'hate_speech'."""
    return re.sub(r"[\s\-]+", "_", str(label).strip().lower())


def _allowed_targets() -> set[str]:
    """What a label may be mapped to: `benign`, a taxonomy key, `prompt_injection`, `other_harm`."""
    return {*taxonomy_categories(), INJECTION_CATEGORY, OTHER_HARM, BENIGN}


def map_labels(id2label: dict, overrides: dict[str, str] | None = None,
               default_category: str = OTHER_HARM) -> dict[int, str]:
    """Class index -> `benign` or a guardrail category, for a classifier's `id2label`.

    Order of lookup for each label (normalised): `overrides` (from the sidecar's `label_map`,
    keys normalised too), `benign` for `BENIGN_LABELS`, the label itself when it is a taxonomy
    key, `LABEL_CATEGORIES`, else `default_category` (an unknown label is taken to be harmful:
    a guard's extra classes are kinds of harm). Raises GuardModelError when an override names
    no known category, or when no label is benign: without one there is no P(benign) to
    subtract from, and a generic `LABEL_0` is not assumed to be it (say so in `label_map`).
    """
    taxonomy = set(taxonomy_categories())
    targets = _allowed_targets()
    normalised_overrides = {normalise_label(k): v for k, v in (overrides or {}).items()}
    for label, target in normalised_overrides.items():
        if target not in targets:
            raise GuardModelError(f"label_map sends {label!r} to {target!r}, which is none of {sorted(targets)}")
    mapping: dict[int, str] = {}
    for index, label in id2label.items():
        name = normalise_label(label)
        if name in normalised_overrides:
            mapping[int(index)] = normalised_overrides[name]
        elif name in BENIGN_LABELS:
            mapping[int(index)] = BENIGN
        elif name in taxonomy:
            mapping[int(index)] = name
        else:
            mapping[int(index)] = LABEL_CATEGORIES.get(name, default_category)
    if BENIGN not in mapping.values():
        raise GuardModelError(
            f"no benign label among {sorted(map(str, id2label.values()))}: name one of {sorted(BENIGN_LABELS)}, "
            f"or map the model's safe label to 'benign' in {SIDECAR_NAME} 'label_map'"
        )
    return mapping


# ------------------------------------------------------------------ Qwen3Guard-Gen output

#: Qwen3Guard-Gen's unsafe-content categories (QwenLM/Qwen3Guard README, "Safety Policy"; the
#: model card's own parser uses the same names) and where they land in our taxonomy.
QWEN3GUARD_CATEGORIES: dict[str, str] = {
    "Violent": "violence_weapons",
    # hacking, unauthorised drug production, stealing
    "Non-violent Illegal Acts": "crime_fraud",
    # any sexual content; the taxonomy's only sexual category is about minors, which the model
    # does not tell apart (the rules' sexual_minors patterns run first)
    "Sexual Content or Sexual Acts": OTHER_HARM,
    "PII": "privacy_doxxing",
    "Suicide & Self-Harm": "self_harm",
    # bias, discrimination, stereotype, hate speech, harassment, insults, threats
    "Unethical Acts": "hate_discrimination",
    # defined there as deliberate false information about government actions, history or public
    # figures: misinformation, which the taxonomy has no key for. Lawful political questions are
    # not in it (and must be answered: data/value_principles.md, principle 3).
    "Politically Sensitive Topics": OTHER_HARM,
    "Copyright Violation": OTHER_HARM,
    # "content that explicitly attempts to override the model's system prompt": what the rules'
    # InjectionDetector reports as prompt_injection
    "Jailbreak": INJECTION_CATEGORY,
}

_SAFETY_LINE = re.compile(r"Safety:\s*(Safe|Unsafe|Controversial)\b", re.IGNORECASE)
_CATEGORIES_LINE = re.compile(r"Categories:\s*([^\n]*)", re.IGNORECASE)


def parse_qwen3guard(output: str, controversial: str = "loose",
                     categories: dict[str, str] | None = None) -> tuple[str, float]:
    """(category, p_harmful) from one Qwen3Guard-Gen answer.

    The format, as the model card (https://huggingface.co/Qwen/Qwen3Guard-Gen-4B) and the
    QwenLM/Qwen3Guard README give it for prompt moderation:

        Safety: Unsafe
        Categories: Violent

    The first line is one of `Safety: Safe|Unsafe|Controversial`; the second lists categories
    separated by commas, or `Categories: None`. Response moderation adds `Refusal: Yes|No`,
    which is ignored here.

    - Safe -> (`benign`, 0.0).
    - Unsafe -> (category, 1.0): the first listed category that maps to a taxonomy key or
      `prompt_injection`, else `other_harm` (also for `None` or unknown names). When every
      listed category maps to `benign` (a deployment's choice, through `categories`), the
      answer counts as Safe.
    - Controversial ("harmfulness may be context-dependent"): `strict` blocks it like Unsafe,
      `loose` allows it (p 0.0, the category still reported).
    - No Safety line -> (`guard_unparseable`, 1.0): fail closed.
    """
    if controversial not in ("strict", "loose"):
        raise GuardModelError(f"controversial must be 'strict' or 'loose', not {controversial!r}")
    table = {name.lower(): target for name, target in (categories or QWEN3GUARD_CATEGORIES).items()}
    safety = _SAFETY_LINE.search(output)
    if safety is None:
        return UNPARSEABLE, 1.0
    level = safety.group(1).lower()
    if level == "safe":
        return BENIGN, 0.0
    listed = _CATEGORIES_LINE.search(output, safety.end())
    names = [name.strip().lower() for name in listed.group(1).split(",")] if listed else []
    mapped = [table[name] for name in names if name in table]
    if mapped and all(c == BENIGN for c in mapped):
        # Every category it names is one the deployment's label_map declared acceptable.
        return BENIGN, 0.0
    # A specific harm beats the catch-all when the model lists several.
    category = next((c for c in mapped if c not in (OTHER_HARM, BENIGN)), OTHER_HARM)
    if level == "controversial" and controversial == "loose":
        return category, 0.0
    return category, 1.0


# ------------------------------------------------------------------ options and loading


@dataclass(frozen=True)
class GuardModelOptions:
    """The optional `hkgai_guard.json` next to the model's `config.json`. Every field may be left out."""

    #: `sequence_classification` or `generative`; left out: read from config.json `architectures`.
    kind: str | None = None
    #: Block when p_harmful >= threshold. 0.5: harm more likely than not (no evaluation set was
    #: used to choose it); a generative guard's p is 0 or 1, so any value in (0, 1] means
    #: "block what it calls harmful".
    threshold: float = 0.5
    #: Generative only: `loose` allows Qwen3Guard's Controversial, `strict` blocks it. Loose by
    #: default because the tier is by definition context-dependent and a refused lawful question
    #: is a failure in this project (data/value_principles.md, principle 3).
    controversial: str = "loose"
    #: Model label (or Qwen3Guard category name) -> `benign` / a taxonomy key /
    #: `prompt_injection` / `other_harm`, applied before the built-in tables. A Qwen3Guard
    #: category sent to `benign` is not a reason to block.
    label_map: dict[str, str] = field(default_factory=dict)
    #: Generative only: tokens to decode; the two answer lines take about 10-20.
    max_new_tokens: int = 32
    #: Longer texts are judged in overlapping windows of this many characters and the most
    #: harmful window decides, so harm at the end of a long text is not truncated away. Left out:
    #: 400 for classifiers (512-token encoders; CJK is about a token a character), 4000 for
    #: generative guards.
    window_chars: int | None = None

    @classmethod
    def read(cls, model_dir: Path) -> GuardModelOptions:
        path = Path(model_dir) / SIDECAR_NAME
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise GuardModelError(f"{path} is not valid JSON: {error}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            # A misspelt "controversial" would otherwise silently keep the default.
            raise GuardModelError(f"{path}: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


def _windows(text: str, size: int) -> list[str]:
    """`text` in windows of `size` characters overlapping by an eighth, so a phrase cut by one
    window boundary is whole in the next window."""
    if len(text) <= size:
        return [text]
    step = size - size // 8
    return [text[start:start + size] for start in range(0, len(text) - size // 8, step)]


def _classify_windowed(texts: list[str], size: int, judge) -> list[tuple[str, float]]:
    """Split each text into windows, judge them all in one call, keep each text's worst window."""
    pieces = [(row, window) for row, text in enumerate(texts) for window in _windows(text, size)]
    worst: list[tuple[str, float] | None] = [None] * len(texts)
    for (row, _), (category, probability) in zip(pieces, judge([window for _, window in pieces])):
        if worst[row] is None or probability > worst[row][1]:
            worst[row] = (category, probability)
    return worst


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SequenceClassifierGuard:
    """A sequence-classification guard model: softmax over its labels, mapped by `map_labels`."""

    def __init__(self, model_dir: Path, options: GuardModelOptions | None = None, batch_size: int = 16) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        options = options or GuardModelOptions()
        self.model_dir = Path(model_dir)
        self.threshold = options.threshold
        self.window_chars = options.window_chars or 400
        self.batch_size = batch_size
        self.device = _device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).to(self.device).eval()
        if getattr(self.model.config, "problem_type", None) == "multi_label_classification":
            # Independent sigmoids have no P(benign) to subtract from one.
            raise GuardModelError(f"{self.model_dir}: multi-label classifiers are not supported (one softmax over labels is)")
        #: class index -> `benign` or a category
        self.categories = map_labels(self.model.config.id2label, options.label_map)
        #: a window no longer than the model can read (some tokenizers report a huge sentinel)
        self.max_length = min(getattr(self.tokenizer, "model_max_length", 512) or 512, 512)

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(most likely harmful category, 1 - P(benign labels)) per text."""
        return _classify_windowed(texts, self.window_chars, self._classify_windows)

    def _classify_windows(self, texts: list[str]) -> list[tuple[str, float]]:
        import torch

        benign = [i for i, c in self.categories.items() if c == BENIGN]
        harmful = [i for i, c in self.categories.items() if c != BENIGN]
        out: list[tuple[str, float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
                probabilities = torch.softmax(self.model(**batch).logits.float(), dim=-1).cpu()
            for row in probabilities:
                p_benign = float(row[benign].sum())
                # With every class benign there is nothing to block: p is 0.
                category = self.categories[harmful[int(row[harmful].argmax())]] if harmful else OTHER_HARM
                out.append((category, max(0.0, 1.0 - p_benign)))
        return out


class GenerativeGuard:
    """A generative safety model (Qwen3Guard-Gen): the text as the user's turn of its chat
    template, greedy decoding, `parse_qwen3guard` on the answer.

    Answers are judged the same way as prompts (as a user turn): the `classify(texts)`
    interface carries no question to pair an answer with, so Qwen3Guard's response mode (user
    turn plus assistant turn, with a Refusal line) is not used.
    """

    def __init__(self, model_dir: Path, options: GuardModelOptions | None = None, batch_size: int = 8) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = options or GuardModelOptions()
        self.model_dir = Path(model_dir)
        self.threshold = options.threshold
        self.controversial = options.controversial
        if self.controversial not in ("strict", "loose"):
            raise GuardModelError(f"{self.model_dir / SIDECAR_NAME}: controversial must be 'strict' or 'loose', not {self.controversial!r}")
        targets = _allowed_targets()
        for name, target in options.label_map.items():
            if target not in targets:
                raise GuardModelError(f"label_map sends {name!r} to {target!r}, which is none of {sorted(targets)}")
        self.category_table = {**QWEN3GUARD_CATEGORIES, **options.label_map}
        self.max_new_tokens = options.max_new_tokens
        self.window_chars = options.window_chars or 4000
        self.batch_size = batch_size
        self.device = _device()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if not getattr(self.tokenizer, "chat_template", None):
            raise GuardModelError(f"{self.model_dir}: a generative guard needs the tokenizer's chat template (Qwen3Guard-Gen ships one)")
        # Decoder-only batches are padded on the left so every prompt ends where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = "auto" if self.device == "cuda" else "float32"
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype).to(self.device).eval()

    def prompt(self, text: str) -> str:
        """The chat-templated input for one text. Qwen3Guard-Gen's template wraps the turn in
        its safety policy and ends with the assistant's turn; add_generation_prompt asks the
        same of a plain chat template."""
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)

    def generate(self, texts: list[str]) -> list[str]:
        """The decoded answer per text (special tokens removed)."""
        import torch

        answers: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            prompts = [self.prompt(text) for text in texts[start:start + self.batch_size]]
            # The rendered template already holds its special tokens; no second BOS in front.
            batch = self.tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt").to(self.device)
            with torch.no_grad():
                output = self.model.generate(**batch, do_sample=False, max_new_tokens=self.max_new_tokens,
                                             pad_token_id=self.tokenizer.pad_token_id)
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            answers.extend(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return answers

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(category, p_harmful) per text; p is 1.0 or 0.0 (see `parse_qwen3guard`)."""
        return _classify_windowed(texts, self.window_chars, self._classify_windows)

    def _classify_windows(self, texts: list[str]) -> list[tuple[str, float]]:
        return [parse_qwen3guard(answer, self.controversial, self.category_table) for answer in self.generate(texts)]


GUARD_KINDS = {"sequence_classification": SequenceClassifierGuard, "generative": GenerativeGuard}


def guard_model_kind(model_dir: Path, options: GuardModelOptions) -> str:
    """`options.kind`, else what config.json's `architectures` names."""
    if options.kind is not None:
        if options.kind not in GUARD_KINDS:
            raise GuardModelError(f"{Path(model_dir) / SIDECAR_NAME}: kind {options.kind!r} is none of {sorted(GUARD_KINDS)}")
        return options.kind
    config_path = Path(model_dir) / "config.json"
    if not config_path.exists():
        raise GuardModelError(f"{model_dir} has no config.json: not a Hugging Face model directory")
    architectures = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
    for name in architectures:
        if name.endswith("ForSequenceClassification"):
            return "sequence_classification"
        if name.endswith("ForCausalLM"):
            return "generative"
    raise GuardModelError(
        f"{config_path}: architectures {architectures} is neither a ...ForSequenceClassification nor a ...ForCausalLM; "
        f"set 'kind' in {SIDECAR_NAME} if the model is one of those"
    )


def load_guard_model(model_dir: str | Path) -> SequenceClassifierGuard | GenerativeGuard:
    """The guard model in `model_dir` (the value of HKGAI_GUARD_MODEL_DIR), ready to classify.

    Raises GuardModelError for a missing directory, an unsupported architecture, a bad
    sidecar, or labels with no benign class.
    """
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise GuardModelError(f"guard model directory {model_dir} does not exist (HKGAI_GUARD_MODEL_DIR)")
    options = GuardModelOptions.read(model_dir)
    return GUARD_KINDS[guard_model_kind(model_dir, options)](model_dir, options)
