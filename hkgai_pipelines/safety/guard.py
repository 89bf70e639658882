"""Rule-based guardrail over the policy taxonomy: input validation and output moderation.

Per-language rules (English, Traditional and Simplified Chinese, Cantonese) from the YAML
taxonomy. Text is judged in its normalised form (`normalise_for_judging`: NFKC, format
characters removed), so a zero-width space inside "b\u200bomb" or full-width letters do not
hide a word from the rules or the classifier. `allow` patterns (benign homonyms such as "kill
a Python process") exempt only their own span: it is removed and the rest of the text is
still judged, so a benign phrase in front of a harmful request does not let it through. The
verdict is `{"verdict": "allow"|"block", "category": str | None}` (the `hkgai guard`
contract). Empty or invalid input is an error the caller reports, never a silent allow.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

MAX_PROMPT_CHARS = 100_000


@dataclass(frozen=True)
class GuardVerdict:
    verdict: str
    category: str | None = None
    rule: str | None = None

    @property
    def blocked(self) -> bool:
        return self.verdict == "block"

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "category": self.category}


class GuardInputError(ValueError):
    pass


def normalise_for_judging(text: str) -> str:
    """The one form every judge reads (rules, classifier, benchmark judge, output moderation):
    NFKC (full-width letters and digits to ASCII), then Unicode format characters (category
    Cf: U+200B zero-width space, U+00AD soft hyphen, U+2060 word joiner, bidi controls)
    removed, since they render as nothing and only serve to split a word."""
    return "".join(char for char in unicodedata.normalize("NFKC", text) if unicodedata.category(char) != "Cf")


class RuleGuard:
    def __init__(self, taxonomy_path: Path | None = None) -> None:
        text = (
            Path(taxonomy_path).read_text(encoding="utf-8")
            if taxonomy_path
            else resources.files("hkgai_pipelines").joinpath("data", "safety", "taxonomy.yaml").read_text(encoding="utf-8")
        )
        taxonomy = yaml.safe_load(text)
        self.version = taxonomy["version"]
        self._allow = [re.compile(p, re.IGNORECASE) for p in taxonomy.get("allow", [])]
        self._rules = [
            (category, re.compile(pattern, re.IGNORECASE))
            for category, spec in taxonomy["categories"].items()
            for pattern in spec["rules"]
        ]
        self.categories = list(taxonomy["categories"])

    def to_judge(self, text: str) -> str:
        """What the rules and the classifier judge: the normalised text with the spans of
        allow patterns (benign homonyms) blanked out, and only those spans."""
        cleaned = normalise_for_judging(text)
        for pattern in self._allow:
            cleaned = pattern.sub(" ", cleaned)
        return cleaned

    def check(self, text: str) -> GuardVerdict:
        if not isinstance(text, str) or not text.strip():
            raise GuardInputError("empty prompt")
        if len(text) > MAX_PROMPT_CHARS:
            raise GuardInputError(f"prompt of {len(text)} characters exceeds the {MAX_PROMPT_CHARS}-character limit")
        cleaned = self.to_judge(text)
        for category, pattern in self._rules:
            if pattern.search(cleaned):
                return GuardVerdict("block", category, pattern.pattern)
        return GuardVerdict("allow")
