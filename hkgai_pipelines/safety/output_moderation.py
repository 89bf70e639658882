"""Output moderation in context: an answer is judged together with its question and the
passages it was built from, not as a text on its own.

Judged alone, lawful facts can read like harm. Answers to two English questions, on renewing
an identity card and on public holidays, were refused as `hate_discrimination`, and with
`--extractive` the identity-card document's own sentences (never share a photo of your card
with unknown parties; the example number A123456(3)) were refused as `crime_fraud`. Those
are sentences of the knowledge documents, which `hkgai ask` retrieved, screened for prompt
injection (rag/answer.py) and quoted. So `OutputModerator.judge`:

1. splits the answer into sentences (rag/chunking.py `split_sentences`, as the documents are
   split) and sets aside each sentence that is a **quotation**: at least `min_quoted_tokens`
   tokens (English words, numbers, single Chinese characters) that occur, in the same order
   and with nothing in between, in one of the passages (`is_quotation`). Text is compared in
   one form: normalised as every judge reads it (`guard.normalise_for_judging`), lower case,
   Simplified characters (OpenCC t2s per character: a Simplified Chinese answer quotes
   Traditional passages converted), punctuation, spaces and citation markers ("[1]") ignored;
2. judges every other sentence, together as the answer's own words (`remainder`), twice in
   one `check_many` call of the guard (any guard with `check`: RuleGuard, the served
   HybridGuard, used as a black box): with the question in front of it
   (`question + "\n" + remainder`) and alone. Either verdict blocks. The question is context
   that can add a reason to block, never remove one: judged only after a benign question, a
   harmful sentence is diluted in the sentence embedding ("You can steal someone's identity
   card and use the photo to open bank accounts in their name." is blocked alone and allowed
   after "How do I renew my HKID card?" by the served classifier as trained when this was
   written). An answer made only of quotations has nothing left to judge and is allowed.

What stays caught: an answer that does not quote the passages is judged as before, and a
sentence that adds even one word of its own to a quotation is judged whole, so a harmful
purpose attached to a lawful fact is read with it. A harmful question never gets this far: the
input guard refuses it. What this trusts: the passages. They come from the knowledge
documents, which are curated and screened at ingestion (rag/knowledge.py) and screened again
when retrieved; harmful text inside an index would be quoted back, as it would be cited.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from hkgai_pipelines.safety.guard import GuardVerdict, normalise_for_judging

#: The shortest quotation: eight tokens, i.e. eight English words or eight Chinese characters,
#: a clause rather than a phrase. A shorter run ("make a bomb", "開銀行戶口") can be lifted
#: from a lawful sentence and mean something else on its own, so it is judged.
MIN_QUOTED_TOKENS = 8

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
#: A token: one Chinese character, or a run of other letters and digits (an English word, a
#: number). Punctuation and spaces are not tokens, so "A123456(3)" is ["a123456", "3"].
_TOKEN_RE = re.compile(rf"[{_HAN}]|[^\W_{_HAN}]+")
#: Citation markers such as [1] or [2][3]: the answer's bookkeeping, not its words.
_CITATION_RE = re.compile(r"\[\d+\]")
_SEPARATOR = "\x1f"


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


@lru_cache(maxsize=65536)
def _token_key(token: str) -> str:
    """A token in comparable form: lower case, Simplified (per token, so a character converts
    the same way in an answer and in a passage)."""
    return _t2s().convert(token.lower())


def comparable_tokens(text: str) -> list[str]:
    """The tokens of `text` in comparable form (module docstring, step 1), citation markers
    left out: `comparable_tokens("例如 A123456(3) [1]") == ["例", "如", "a123456", "3"]`."""
    normalised = _CITATION_RE.sub(" ", normalise_for_judging(text))
    return [_token_key(match.group()) for match in _TOKEN_RE.finditer(normalised)]


def _joined(tokens: Sequence[str]) -> str:
    return _SEPARATOR + _SEPARATOR.join(tokens) + _SEPARATOR


def is_quotation(sentence: str, passages: Sequence[str], min_quoted_tokens: int = MIN_QUOTED_TOKENS) -> bool:
    """True when `sentence` has at least `min_quoted_tokens` tokens and they occur, in order
    and contiguously, in one of `passages` (compared as `comparable_tokens`)."""
    return _quoted(sentence, [_joined(comparable_tokens(p)) for p in passages], min_quoted_tokens)


def _quoted(sentence: str, joined_passages: Sequence[str], min_quoted_tokens: int) -> bool:
    tokens = comparable_tokens(sentence)
    return len(tokens) >= min_quoted_tokens and any(_joined(tokens) in passage for passage in joined_passages)


@dataclass(frozen=True)
class ModerationResult:
    """The output verdict and what it was decided on."""

    #: `to_json()` gives {"verdict", "category"}, as the input guard's.
    verdict: GuardVerdict
    #: The answer's own sentences, which the guard judged ("" when every sentence was a
    #: quotation and nothing was judged).
    remainder: str
    #: How many of the answer's sentences were quotations, and how many it has.
    quoted_sentences: int
    sentences: int


class OutputModerator:
    """Judges answers in context (module docstring) with any guard that has `check(text)`,
    through `check_many(texts)` when it has one."""

    def __init__(self, guard, min_quoted_tokens: int = MIN_QUOTED_TOKENS) -> None:
        """Raises ValueError for `min_quoted_tokens` below 1."""
        if min_quoted_tokens < 1:
            raise ValueError(f"min_quoted_tokens must be at least 1, got {min_quoted_tokens}")
        self.guard = guard
        self.min_quoted_tokens = min_quoted_tokens

    def _check_many(self, texts: list[str]) -> list[GuardVerdict]:
        if hasattr(self.guard, "check_many"):
            return self.guard.check_many(texts)
        return [self.guard.check(text) for text in texts]

    def remainder(self, answer: str, passages: Sequence[str]) -> tuple[str, int, int]:
        """(the answer's sentences that are not quotations, joined by a space; how many
        sentences were quotations; how many sentences there are)."""
        from hkgai_pipelines.rag.chunking import split_sentences

        sentences = split_sentences(answer)
        joined = [_joined(comparable_tokens(p)) for p in passages]
        own = [s for s in sentences if not _quoted(s, joined, self.min_quoted_tokens)]
        text = " ".join(own)
        # Citation markers and punctuation alone say nothing to judge.
        return (text if comparable_tokens(text) else ""), len(sentences) - len(own), len(sentences)

    def judge(self, question: str, answer: str, passages: Sequence[str]) -> ModerationResult:
        """The verdict on `answer` to `question`, made from `passages` (the screened passages
        the answer was built from: the prompt's, or the extractive answer's). An empty answer
        is allowed. The guard's own errors (GuardInputError for text over its length limit)
        are not caught."""
        return self.judge_many([(question, answer, passages)])[0]

    def judge_many(self, items: Sequence[tuple[str, str, Sequence[str]]]) -> list[ModerationResult]:
        """`judge` for several (question, answer, passages) at once, in one `check_many` call."""
        parts = [self.remainder(answer, passages) for _, answer, passages in items]
        texts = [text for (question, _, _), (own, _, _) in zip(items, parts) if own for text in (f"{question}\n{own}", own)]
        verdicts = iter(self._check_many(texts) if texts else [])
        results = []
        for own, quoted, total in parts:
            verdict = GuardVerdict("allow")
            if own:
                in_context, alone = next(verdicts), next(verdicts)
                verdict = in_context if in_context.blocked else alone
            results.append(ModerationResult(verdict, own, quoted, total))
        return results
