"""Text repair: mojibake (ftfy), Unicode NFC, control characters and whitespace runs.

NFC, not NFKC: NFKC would rewrite full-width CJK punctuation (，→ ,) and change meaning-bearing
compatibility characters; NFC only composes canonically equivalent sequences.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

from hkgai_pipelines.curation.langid import HAN_RE

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


# --- Chinese mojibake -------------------------------------------------------------------
# UTF-8 Chinese takes three bytes a character; read as GBK/GB18030 or Big5 (two bytes a
# character) and saved again it becomes about 1.5 times as many, mostly rare, Han characters
# ("今天" -> "浠婂ぉ"). ftfy repairs UTF-8 read as Latin-1/cp1252 but not these. The round
# trip (encode with the wrong codec, decode as UTF-8) undoes it; genuine Chinese put through
# the same round trip gives almost no Han characters, since GBK/Big5 byte pairs rarely form
# the E4-E9 lead byte + two continuation bytes of a UTF-8 Han character.
MOJIBAKE_CODECS = ("gb18030", "big5hkscs")
#: A lossy round trip still proves mojibake when at least this share of its non-ASCII
#: characters are Han (the rest U+FFFD where bytes were lost, typically full-width
#: punctuation): genuine text measures near 0 here, the field case 0.79.
MOJIBAKE_MIN_HAN_SHARE = 0.6
#: An exact round trip repairs only when nearly all of what it yields is Han (the rest
#: full-width punctuation or kana of the original text).
MOJIBAKE_STRICT_HAN_SHARE = 0.9
#: A round trip repairs or rejects only when it yields at least this many Han characters, so
#: a one-character coincidence cannot rewrite a text.
MOJIBAKE_MIN_HAN = 2


def _round_trip(text: str, codec: str, errors: str) -> str | None:
    try:
        return text.encode(codec, errors=errors).decode("utf-8", errors=errors)
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


_ASCII_ALNUM_RE = re.compile(r"[A-Za-z0-9]")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")


def _plausible(original: str, candidate: str, share_needed: float) -> bool:
    """Whether `candidate` reads as the Chinese text `original` was mojibake of: Han text
    (at least `share_needed` of its non-ASCII characters), fewer Han characters than the
    mojibake (three UTF-8 bytes became two-byte GBK/Big5 characters), and no letter or digit
    that the original did not have (genuine Chinese put through the round trip yields ASCII
    and Latin characters: "靚仔靚女" -> "谥J谤k")."""
    han = len(HAN_RE.findall(candidate))
    if han < MOJIBAKE_MIN_HAN:  # the common case for genuine text, decided first
        return False
    non_ascii = len(_NON_ASCII_RE.findall(candidate))
    return (
        han / non_ascii >= share_needed
        and han < len(HAN_RE.findall(original))
        and len(_ASCII_ALNUM_RE.findall(candidate)) <= len(_ASCII_ALNUM_RE.findall(original))
    )


def _judge_round_trip(text: str) -> tuple[str, str | None]:
    for codec in MOJIBAKE_CODECS:
        repaired = _round_trip(text, codec, "strict")
        if repaired is not None and repaired != text and _plausible(text, repaired, MOJIBAKE_STRICT_HAN_SHARE):
            return repaired, "repaired"
        # U+FFFD marks bytes already lost; encoded, it would add bytes of its own.
        lossy = _round_trip(text.replace("\ufffd", ""), codec, "replace")
        if lossy is not None and lossy != text and _plausible(text, lossy, MOJIBAKE_MIN_HAN_SHARE):
            return text, "mojibake"
    return text, None


# Mojibake pasted into correct text ("今日新聞：浠婂ぉ涓嬪崍。請留意。") is judged piece by piece:
# runs between spaces, ASCII and CJK punctuation, which mojibake of Chinese text never
# produces itself (its full-width punctuation turns into Han characters such as 锛).
_SEGMENT_SPLIT_RE = re.compile(r"[\s\x00-\x7f，。！？：；、「」『』（）《》〈〉【】…—～·]+")
#: A segment shorter than this is not judged alone: a few characters can round-trip by chance.
MOJIBAKE_MIN_SEGMENT = 4
#: A segment holding Han characters and at least this many U+FFFD, making up at least this
#: share of it, is Chinese whose bytes a wrong decode lost: UTF-8 Chinese read as Big5 with
#: errors replaced loses about half its characters ("我哋今日去咗飲茶" -> "������隞���亙�餃��憌脰��",
#: 14 of 24), which no round trip can undo. Inside a page its share of the whole text stays
#: below the replacement-character limit, so it is looked for run by run. A genuine text with
#: a stray bad byte has one or two.
MOJIBAKE_LOST_MIN_FFFD = 3
MOJIBAKE_LOST_MIN_SHARE = 0.3


def repair_chinese_mojibake(text: str) -> tuple[str, str | None]:
    """Undo UTF-8 Chinese that was decoded as GB18030/GBK or Big5-HKSCS and saved again.

    Returns `(text, verdict)`: verdict None when the text is not mojibake (returned as is),
    `"repaired"` with the repaired text when the round trip is exact, `"mojibake"` with the
    text unchanged when the round trip shows mojibake but lost bytes (a caller rejects it).
    The whole text is judged first, then each run between punctuation, so mojibake pasted
    into correct text is repaired in place; a run of Han characters and U+FFFD (bytes lost,
    `MOJIBAKE_LOST_MIN_FFFD`) makes the text mojibake.
    Example: "鎴戝搵浠婃棩鍘诲挆椋茶尪" -> ("我哋今日去咗飲茶", "repaired").
    """
    if text.isascii() or not HAN_RE.search(text):
        return text, None
    if "\ufffd" in text and _has_lost_bytes_run(text):
        return text, "mojibake"
    # Mojibake anywhere in the text leaves Han characters in the whole text's lossy round
    # trip; genuine text almost never does, so most text stops here.
    stripped = text.replace("\ufffd", "")
    if not any(
        len(HAN_RE.findall(_round_trip(stripped, codec, "replace") or "")) >= MOJIBAKE_MIN_HAN
        for codec in MOJIBAKE_CODECS
    ):
        return text, None
    whole, whole_verdict = _judge_round_trip(text)
    if whole_verdict == "repaired":
        return whole, whole_verdict
    # A whole-text "mojibake" is judged again run by run: mostly-ASCII text ("Sha Tin is big.
    # 鎴戝搵浠婃棩鍘诲挆椋茶尪。") survives a lossy round trip as plausible, so one non-ASCII
    # character elsewhere made the whole text mojibake when its one Chinese run repairs exactly.
    # The runs' repair stands then only if every run that could be mojibake was repaired.
    pieces: list[str] = []
    verdict = None
    unresolved = False
    padded = text + "\n"
    separators = list(_SEGMENT_SPLIT_RE.finditer(padded))
    segments = [padded[start:separator.start()] for start, separator in zip([0] + [m.end() for m in separators], separators)]
    long_enough = [index for index, segment in enumerate(segments) if len(segment) >= MOJIBAKE_MIN_SEGMENT]
    worth = {index for index, flag in zip(long_enough, _worth_judging([segments[i] for i in long_enough])) if flag}
    for index, (separator, segment) in enumerate(zip(separators, segments)):
        if index in worth:
            repaired, segment_verdict = _judge_round_trip(segment)
            if segment_verdict == "mojibake":
                return text, "mojibake"
            if segment_verdict == "repaired":
                segment, verdict = repaired, "repaired"
            else:
                unresolved = True
        pieces.append(segment)
        pieces.append(padded[separator.start():separator.end()])
    if verdict is None or (whole_verdict == "mojibake" and unresolved):
        return text, whole_verdict
    return "".join(pieces)[:-1], verdict  # without the "\n" added to close the last segment


def _has_lost_bytes_run(text: str) -> bool:
    """Whether a run of `text` between separators is Chinese with lost bytes (see
    MOJIBAKE_LOST_MIN_FFFD)."""
    for segment in _SEGMENT_SPLIT_RE.split(text):
        lost = segment.count("\ufffd")
        if lost >= MOJIBAKE_LOST_MIN_FFFD and lost >= MOJIBAKE_LOST_MIN_SHARE * len(segment) and HAN_RE.search(segment):
            return True
    return False


def _worth_judging(segments: list[str]) -> list[bool]:
    """For each segment, whether `_judge_round_trip` could find it mojibake: False only when
    it has no U+FFFD and no codec's lossy round trip leaves MOJIBAKE_MIN_HAN Han characters
    in it (then neither candidate is `_plausible`). The round trips are taken once over the
    segments joined by newlines: a segment holds no whitespace, an encoded newline is the
    byte 0x0A in both codecs (their trail bytes start at 0x40) and UTF-8 decodes that byte
    alone, so the joined round trip is the segments' round trips joined. A long page has
    hundreds of segments, and judging each was most of this step's time on long text."""
    worth = ["\ufffd" in segment for segment in segments]
    joined = "\n".join(segments)
    for codec in MOJIBAKE_CODECS:
        pieces = (_round_trip(joined, codec, "replace") or "").split("\n")
        if len(pieces) != len(segments):  # not expected; judge every segment then
            return [True] * len(segments)
        worth = [flag or len(HAN_RE.findall(piece)) >= MOJIBAKE_MIN_HAN for flag, piece in zip(worth, pieces)]
    return worth


def replacement_char_share(text: str) -> float:
    """Share of U+FFFD (the decoder's "unknown character") among non-space characters."""
    replaced = text.count("\ufffd")
    if not replaced:  # almost every text: no need to count the rest
        return 0.0
    return replaced / (len(text) - sum(map(str.isspace, text)))
