"""Text repair: mojibake (ftfy), Unicode NFC, control characters and whitespace runs.

NFC, not NFKC: NFKC would rewrite full-width CJK punctuation (，→ ,) and change meaning-bearing
compatibility characters; NFC only composes canonically equivalent sequences.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

# C0/C1 controls except tab and newline, plus zero-width and bidi controls that only hide text.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_INLINE_SPACE_RE = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
# UTF-8 read as Latin-1/cp1252 always leaves characters from U+0080-U+00FF (lead bytes
# 0xC2-0xF4), and HTML entities need "&": text with neither has nothing for ftfy to fix,
# which lets the common all-CJK or all-ASCII record skip its (comparatively slow) analysis.
_FTFY_CANDIDATE_RE = re.compile(r"[\x80-\xff&\ud800-\udfff]")


def repair_text(text: str) -> str:
    # ftfy's own normalisation is NFC; keep its width fixes off so full-width text stays.
    if _FTFY_CANDIDATE_RE.search(text):
        text = ftfy.fix_text(text, normalization="NFC", fix_character_width=False, uncurl_quotes=False)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_RE.sub("", text)
    # The ideographic space U+3000 is layout, not content; one ASCII space is enough.
    text = _INLINE_SPACE_RE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES_RE.sub("\n\n", text)
    return text.strip()
