"""Quality scores and the keep/drop decision, with CJK-aware (character-based) measures.

Whitespace "words" do not exist in Chinese, so lengths are counted in characters and the
Gopher repetition measures (Rae et al. 2021, "Scaling Language Models", appendix A) run over
tokens that are one Han character or one Latin word. Scoring is separate from deciding:
`score_quality` returns numbers, `QualityFilter.decide` compares them to thresholds.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

TOKEN_RE = re.compile(r"[A-Za-z0-9']+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")

#: Lines that are site furniture rather than content (English and Chinese web boilerplate).
BOILERPLATE_RE = re.compile(
    r"(all rights reserved|cookie|privacy policy|terms of use|subscribe|sign in|log in|"
    r"click here|share on|read more|版權所有|私隱政策|私隐政策|使用條款|登入|登錄|按此|點擊|点击|"
    r"分享到|訂閱|订阅|上一頁|下一頁|返回頂部|返回主頁|"
    # Forum and comment furniture, repeated under every post of a thread.
    r"回覆|回复|引用|讚好|赞好|檢舉|舉報|举报|"
    r"^(?:reply|quote|like|share|report)(?:\s*[|·/]?\s*(?:reply|quote|like|share|report))*$)",
    re.IGNORECASE,
)
#: A boilerplate line is short and is not a sentence: site furniture ("私隱政策",
#: "分享到 Facebook", "© 2024 某某新聞 版權所有") has no sentence-final punctuation, while an
#: article sentence that mentions cookies or logging in ends in one and stays.
BOILERPLATE_MAX_LINE_CHARS = 60
_SENTENCE_END_RE = re.compile(r"[。！？.!?」』\"”]\s*$")


def is_boilerplate_line(line: str) -> bool:
    """True for a line of site furniture (menu, share links, footer), by `BOILERPLATE_RE`."""
    line = line.strip()
    return (
        0 < len(line) <= BOILERPLATE_MAX_LINE_CHARS
        and not _SENTENCE_END_RE.search(line)
        and bool(BOILERPLATE_RE.search(line))
    )


def strip_boilerplate_lines(text: str) -> tuple[str, int]:
    """`text` without its boilerplate lines, and how many were removed.

    The filter removes lines, not documents: a news page that kept its footer keeps its
    article. A text made only of boilerplate comes back empty.
    """
    lines = text.split("\n")
    kept = [line for line in lines if not is_boilerplate_line(line)]
    removed = len(lines) - len(kept)
    return ("\n".join(kept).strip() if removed else text), removed


@dataclass(frozen=True)
class QualityThresholds:
    """Each field is read from params.yaml (`curation.quality`); see the comments there."""

    min_chars: int = 6
    max_chars: int = 100_000
    min_letter_ratio: float = 0.5
    max_symbol_ratio: float = 0.25
    max_digit_ratio: float = 0.3
    repetition_min_tokens: int = 50
    max_dup_line_fraction: float = 0.30
    max_dup_line_char_fraction: float = 0.20
    max_top_ngram_fraction: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_boilerplate_line_fraction: float = 0.5


def _top_ngram_fraction(tokens: list[str], n: int) -> float:
    """Share of token characters covered by the most frequent n-gram, when it repeats (of
    n-grams equally frequent, the first to occur, as `Counter.most_common` picks)."""
    if len(tokens) < n:
        return 0.0
    grams = list(zip(*(tokens[i:] for i in range(n))))
    if len(set(grams)) == len(grams):  # none repeats (nine sentences in ten): a set is cheaper than counting
        return 0.0
    gram, count = Counter(grams).most_common(1)[0]
    if count < 2:
        return 0.0
    total = sum(map(len, tokens))
    return count * sum(map(len, gram)) / total if total else 0.0


def _char_classes(text: str) -> tuple[int, int, int, int]:
    """(non-space characters, letters, digits, symbols) in one pass."""
    n = letters = digits = symbols = 0
    for ch in text:
        if ch.isspace():
            continue
        n += 1
        if ch.isalpha():
            letters += 1
        elif ch.isdigit():
            digits += 1
        elif unicodedata.category(ch)[0] == "S":
            symbols += 1
    return n, letters, digits, symbols


def score_quality(text: str, boilerplate_free: bool = False) -> dict[str, float]:
    """The quality measures of `text` (`QUALITY_COLUMNS` of the pipeline, and "tokens"):
    counts in characters and tokens, ratios in [0, 1]. `boilerplate_free`: the text came out
    of `strip_boilerplate_lines`, so its boilerplate line fraction is 0 without looking."""
    n, letters, digits, symbols = _char_classes(text)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    dup_lines = dup_line_chars = 0
    if len(lines) > 1:  # one line cannot repeat (most records are one sentence)
        line_counts = Counter(lines)
        dup_lines = sum(c for c in line_counts.values() if c > 1)
        dup_line_chars = sum(len(line) * c for line, c in line_counts.items() if c > 1)
    line_chars = sum(len(line) for line in lines)
    tokens = TOKEN_RE.findall(text.lower())
    scores = {
        "chars": float(n),
        "tokens": float(len(tokens)),
        "letter_ratio": letters / n if n else 0.0,
        "digit_ratio": digits / n if n else 0.0,
        "symbol_ratio": symbols / n if n else 0.0,
        "dup_line_fraction": dup_lines / len(lines) if lines else 0.0,
        "dup_line_char_fraction": dup_line_chars / line_chars if line_chars else 0.0,
        "boilerplate_line_fraction": (
            sum(1 for line in lines if is_boilerplate_line(line)) / len(lines) if lines and not boilerplate_free else 0.0
        ),
    }
    # A repeated 3- or 4-gram contains a repeated 2-gram, so where no 2-gram repeats (the
    # 2-gram fraction is 0; nine sentences in ten) the longer ones are 0 without counting.
    scores["top_2gram_fraction"] = _top_ngram_fraction(tokens, 2)
    for k in (3, 4):
        scores[f"top_{k}gram_fraction"] = _top_ngram_fraction(tokens, k) if scores["top_2gram_fraction"] else 0.0
    return scores


class QualityFilter:
    def __init__(self, thresholds: QualityThresholds) -> None:
        self.t = thresholds

    def decide(self, scores: dict[str, float]) -> str | None:
        """None to keep, else the drop reason."""
        t = self.t
        if scores["chars"] < t.min_chars:
            return "too_short"
        if scores["chars"] > t.max_chars:
            return "too_long"
        if scores["letter_ratio"] < t.min_letter_ratio:
            return "low_letter_ratio"
        if scores["symbol_ratio"] > t.max_symbol_ratio:
            return "high_symbol_ratio"
        if scores["digit_ratio"] > t.max_digit_ratio:
            return "high_digit_ratio"
        if scores["boilerplate_line_fraction"] > t.max_boilerplate_line_fraction:
            return "boilerplate"
        # Gopher applies its repetition rules to documents of 50+ words; shorter texts
        # (a sentence, a reply of "係呀 係呀") are too short for repetition to mean spam.
        if scores["tokens"] >= t.repetition_min_tokens:
            if scores["dup_line_fraction"] > t.max_dup_line_fraction:
                return "duplicate_lines"
            if scores["dup_line_char_fraction"] > t.max_dup_line_char_fraction:
                return "duplicate_line_chars"
            for n, limit in sorted(t.max_top_ngram_fraction.items()):
                if scores[f"top_{n}gram_fraction"] > limit:
                    return f"repeated_{n}gram"
        return None
