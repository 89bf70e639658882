"""Script policy: keep a language's script, or convert Simplified to Hong Kong Traditional."""

from __future__ import annotations

from functools import lru_cache

SCRIPT_ACTIONS = ("keep", "s2hk")


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional -> Simplified (OpenCC t2s), one converter shared by the whole process."""
    return _t2s().convert(text)


class ScriptConverter:
    """Applies the per-language action from params.yaml (`keep` or OpenCC `s2hk`)."""

    def __init__(self, policy: dict[str, str]) -> None:
        unknown = {lang: action for lang, action in policy.items() if action not in SCRIPT_ACTIONS}
        if unknown:
            raise ValueError(f"unknown script actions {unknown}; expected one of {SCRIPT_ACTIONS}")
        self.policy = dict(policy)
        self._s2hk = None

    def convert(self, text: str, lang: str, script: str | None = None) -> str:
        """Apply the policy of `lang`, or of `"{lang}-{script}"` when the policy names it
        (`yue-hans`: Cantonese written in Simplified characters)."""
        action = self.policy.get(f"{lang}-{script}") if script else None
        if (action or self.policy.get(lang, "keep")) == "keep":
            return text
        if self._s2hk is None:
            import opencc

            self._s2hk = opencc.OpenCC("s2hk")
        return self._s2hk.convert(text)
