"""Rule-based guardrail over the policy taxonomy: input validation and output moderation.

Per-language rules (English, Traditional and Simplified Chinese, Cantonese) from the YAML
taxonomy; `allow` patterns are removed before the rules run, so benign homonyms pass. The
verdict is `{"verdict": "allow"|"block", "category": str | None}` (the `hkgai guard`
contract). Empty or invalid input is an error the caller reports, never a silent allow.
"""

from __future__ import annotations

import re
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

    def allowed(self, text: str) -> bool:
        """Whether an allow pattern (a benign homonym) occurs in the text."""
        return any(pattern.search(text) for pattern in self._allow)

    def check(self, text: str) -> GuardVerdict:
        if not isinstance(text, str) or not text.strip():
            raise GuardInputError("empty prompt")
        if len(text) > MAX_PROMPT_CHARS:
            raise GuardInputError(f"prompt of {len(text)} characters exceeds the {MAX_PROMPT_CHARS}-character limit")
        cleaned = text
        for pattern in self._allow:
            cleaned = pattern.sub(" ", cleaned)
        for category, pattern in self._rules:
            if pattern.search(cleaned):
                return GuardVerdict("block", category, pattern.pattern)
        return GuardVerdict("allow")
