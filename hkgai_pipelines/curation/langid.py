"""Language identification for Hong Kong text: yue, zh-hant, zh-hans, en, mixed, other.

Written Cantonese versus Standard Written Chinese (SWC) cannot be told apart by script, and
general-purpose detectors label both "Chinese". The decision therefore combines:

1. script statistics: counts of Han, kana, Hangul and Latin letters;
2. Simplified versus Traditional: characters that OpenCC's t2s (or s2t) would change are
   evidence of Traditional (or Simplified) script;
3. Cantonese versus SWC: cantonesedetect (CanCLID, Lau et al. 2024), whose feature lists of
   Cantonese-only characters/particles (嘅 咗 喺 哋 …) and SWC-only ones (的 是 在 了 …) were
   built and evaluated on written Cantonese corpora;
4. code-switching: English words (not all-caps acronyms such as MTR or HKID) that make up a
   real share of the letters of a Chinese text mark it `mixed`;
5. text without Han characters: lingua (offline n-gram models) decides English or other.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

LANGUAGES = ("yue", "zh-hant", "zh-hans", "en", "mixed", "other")

HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
KANA_RE = re.compile(r"[\u3040-\u30ff]")
HANGUL_RE = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
LATIN_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’\-]*")
# Placeholders written by the PII redactor are not language evidence.
PLACEHOLDER_RE = re.compile(r"<[A-Z_]+>")


@dataclass(frozen=True)
class LanguageResult:
    lang: str
    score: float

    def to_json(self) -> dict:
        return {"lang": self.lang, "score": round(self.score, 4)}


class LanguageIdentifier:
    """Labels a text with one of `LANGUAGES` and a confidence in [0, 1]."""

    def __init__(
        self,
        # Share of letters that must be English (outside acronyms) for a Chinese text to
        # count as code-switched; "我今日去咗 shopping" is 62%, a lone "Orlando" in a long
        # Cantonese turn ~25%, an English name in brackets in an English text is not Chinese.
        code_switch_min_share: float = 0.15,
        # Below this share of Han among letters, a text is treated as non-Chinese.
        min_han_share: float = 0.15,
        # Kana above this share of CJK characters means Japanese, which is `other`.
        max_kana_share: float = 0.1,
    ) -> None:
        import opencc
        from cantonesedetect import CantoneseDetector

        self.code_switch_min_share = code_switch_min_share
        self.min_han_share = min_han_share
        self.max_kana_share = max_kana_share
        self._t2s = opencc.OpenCC("t2s")
        self._s2t = opencc.OpenCC("s2t")
        self._cantonese = CantoneseDetector()
        self._latin_detector = None
        self._lock = threading.Lock()

    def identify(self, text: str) -> LanguageResult:
        text = PLACEHOLDER_RE.sub(" ", text)
        han = len(HAN_RE.findall(text))
        kana = len(KANA_RE.findall(text))
        hangul = len(HANGUL_RE.findall(text))
        words = LATIN_WORD_RE.findall(text)
        latin = sum(len(w) for w in words)
        # Acronyms (MTR, HKID, CEO) are used inside any Chinese sentence; only words with a
        # lower-case letter are evidence of switching into English.
        english = sum(len(w) for w in words if not w.isupper())
        other_letters = sum(1 for ch in text if ch.isalpha()) - han - kana - hangul - latin
        letters = han + kana + hangul + latin + max(other_letters, 0)
        if letters == 0:
            return LanguageResult("other", 1.0)
        if kana and kana / (han + kana) > self.max_kana_share:
            return LanguageResult("other", kana / (han + kana))
        if hangul / letters > 0.3:
            return LanguageResult("other", hangul / letters)
        han_share = han / letters
        if han_share < self.min_han_share:
            if latin / letters >= 0.5:
                return self._latin_language(text)
            return LanguageResult("other", 1.0 - latin / letters)
        english_share = english / (han + english)
        if english >= 3 and english_share >= self.code_switch_min_share and han >= 2:
            return LanguageResult("mixed", min(english_share, 1 - english_share) * 2)
        return self._chinese_variety(text)

    def _chinese_variety(self, text: str) -> LanguageResult:
        traditional = sum(a != b for a, b in zip(text, self._t2s.convert(text)))
        simplified = sum(a != b for a, b in zip(text, self._s2t.convert(text)))
        if simplified > traditional:
            return LanguageResult("zh-hans", simplified / (simplified + traditional))
        from cantonesedetect.Detector import (
            CANTO_EXCLUDE_RE,
            CANTO_FEATURE_RE,
            SWC_EXCLUDE_RE,
            SWC_FEATURE_RE,
        )

        judgement = str(self._cantonese.judge(text))
        canto = max(len(CANTO_FEATURE_RE.findall(text)) - len(CANTO_EXCLUDE_RE.findall(text)), 0)
        swc = max(len(SWC_FEATURE_RE.findall(text)) - len(SWC_EXCLUDE_RE.findall(text)), 0)
        evidence = canto + swc
        if judgement in ("cantonese", "mixed", "cantonese_quotes_in_swc", "mixed_quotes_in_swc") and canto:
            # cantonesedetect's "mixed" is Cantonese and SWC features together: written
            # Cantonese in practice, since SWC never uses 嘅/咗/喺.
            return LanguageResult("yue", canto / evidence)
        if evidence == 0:
            # No feature either way ("香港特別行政區政府"): neutral text is SWC by convention.
            script_evidence = traditional / (traditional + simplified) if traditional + simplified else 0.5
            return LanguageResult("zh-hant", 0.5 * script_evidence + 0.25)
        return LanguageResult("zh-hant", swc / evidence)

    def _latin_language(self, text: str) -> LanguageResult:
        detector = self._get_latin_detector()
        values = detector.compute_language_confidence_values(text)
        if not values:
            return LanguageResult("other", 0.0)
        best = values[0]
        from lingua import Language

        if best.language == Language.ENGLISH:
            return LanguageResult("en", best.value)
        return LanguageResult("other", best.value)

    def _get_latin_detector(self):
        with self._lock:
            if self._latin_detector is None:
                from lingua import Language, LanguageDetectorBuilder

                # Latin-script languages met in Hong Kong text; anything not English is `other`.
                candidates = [
                    Language.ENGLISH, Language.FRENCH, Language.GERMAN, Language.SPANISH,
                    Language.PORTUGUESE, Language.ITALIAN, Language.DUTCH, Language.INDONESIAN,
                    Language.MALAY, Language.TAGALOG, Language.VIETNAMESE, Language.TURKISH,
                ]
                self._latin_detector = LanguageDetectorBuilder.from_languages(*candidates).build()
            return self._latin_detector


_default: LanguageIdentifier | None = None


def identify_language(text: str) -> LanguageResult:
    """Module-level convenience with one shared identifier."""
    global _default
    if _default is None:
        _default = LanguageIdentifier()
    return _default.identify(text)
