"""PII redaction for Hong Kong and neighbours: HKID, phone numbers, e-mail, credit cards.

PII is written in many forms: full-width digits and letters from Chinese input methods
(`９１２３ ４５６７`, `Ａ１２３４５６（３）`), invisible format characters inside a number or an
address (a zero-width space, a soft hyphen from a word processor), typographic dashes. The
detectors therefore run on a *normalised view* of the text (`normalized_view`: NFKC's
one-character folds to ASCII, decimal digits of every script to 0-9, Unicode format
characters removed) and the spans they find are mapped back to the original text, which is
redacted in place: every character outside a PII span stays byte for byte. `PiiRedactor` is
the one implementation behind `hkgai redact`, the curation pipeline and the rejected text.

Precision matters as much as recall in a corpus full of years, prices and dates, so every
detector validates what it matched: HKIDs by their check digit (or, with a wrong one, by an ID
label just before: a mistyped number is still a person's), card numbers by Luhn and
issuer prefix, Hong Kong numbers by their leading digit, and an unprefixed 8-digit number is
left alone when it reads as a date (YYYYMMDD), a price or a count. Boundaries are ASCII
look-arounds rather than `\\b`, because `\\b` sees no boundary between a Chinese character
and a digit ("電話91234567").
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

PLACEHOLDERS = {
    "HKID": "<HKID>",
    "PHONE": "<PHONE>",
    "EMAIL": "<EMAIL>",
    "CREDIT_CARD": "<CREDIT_CARD>",
}

# RFC 5322 section 3.2.3 `atext`: a local part is dot-separated runs of these, so it may start
# with "_" or "+" ("_taiman@example.com"). Less the URL delimiters / ? = & #, which in running
# text and in crawled URIs ("profile?email=chan@example.com") end an address, not belong to it.
_ATEXT = r"A-Za-z0-9!$%'*+^_`{|}~\-"
email_pattern = re.compile(
    rf"(?<![{_ATEXT}.])[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![A-Za-z0-9-])"
)
# 13-19 digits, optionally grouped by single spaces or hyphens.
credit_card_pattern = re.compile(r"(?<![0-9A-Za-z.,])\d(?:[ -]?\d){12,18}(?![0-9A-Za-z]|[.,]\d)")
# One or two letters, six digits, a check digit 0-9 or A, usually in (half- or full-width) brackets.
# Typed by hand an HKID is also written in lower case ("c668668(9)") or with spaces
# ("A 123456 (3)"); lower case is taken only with the check digit in brackets, since a bare
# letter and seven digits is common in codes.
hkid_pattern = re.compile(
    r"(?<![A-Za-z0-9])(?:([A-Z]{1,2}) ?(\d{6}) ?(?:\(([0-9A])\)|（([0-9A])）|([0-9A]))"
    r"|([a-z]{1,2}) ?(\d{6}) ?(?:\(([0-9aA])\)|（([0-9aA])）))(?![A-Za-z0-9])"
)
# +852 / 00852 / (852) / (+852) / "852 " prefixes; 8 digits as 4+4. The leading digit follows
# OFCA's numbering plan for Hong Kong (Numbering Plan for Telecommunications Services):
# 2 and 3 fixed lines; 4 (opened to mobile services in 2018), 5, 6, 7, 8 and 9 mobile and
# other personal services; 1 is reserved for special services (999, 1823).
# Not a slice of a run of 4-digit groups ("4111 1111 1111 1112", a card that fails Luhn).
hk_phone_pattern = re.compile(
    r"(?<![0-9A-Za-z+])(?<!(?<!\d)\d{4}[ -])"
    r"(?P<prefix>(?:\+|00)852[ -]?|\(\+?852\)[ -]?|852[ -])?"
    r"(?P<number>[2-9]\d{3}[ -]?\d{4})"
    r"(?![0-9A-Za-z]|[.,]\d|[ -]\d{4}(?!\d))"
)
# Mainland mobile: 1[3-9]x xxxx xxxx, optionally +86 / 0086.
mainland_mobile_pattern = re.compile(
    r"(?<![0-9A-Za-z+])(?P<prefix>(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?![0-9A-Za-z]|[.,]\d)"
)

#: Phone numbers written in Chinese numerals ("九一二三 四五六七"; mainland "一三八…", with 幺 for
#: 1 as a number is read out), as people write them to slip past filters. The Hong Kong and
#: mainland shapes of the patterns above. Chinese numerals fill ordinary text (二〇二四年, 一一),
#: so such a number counts only after a phone cue on its line (`_NUMERAL_PHONE_CUE_BEFORE`),
#: grouped or not, and not where it reads as an amount, a count, a date or two years.
_CN_DIGITS = "〇零一二三四五六七八九幺"
chinese_numeral_phone_pattern = re.compile(
    rf"(?<![{_CN_DIGITS}])(?:[二三四五六七八九][{_CN_DIGITS}]{{3}}[ -]?[{_CN_DIGITS}]{{4}}"
    rf"|[一幺][三四五六七八九][{_CN_DIGITS}](?:[ -]?[{_CN_DIGITS}]{{4}}){{2}})(?![{_CN_DIGITS}])"
)
_CN_TO_ARABIC = str.maketrans({**{char: str(value) for value, char in enumerate("〇一二三四五六七八九")}, "零": "0", "幺": "1"})
#: The cues a number in Chinese numerals needs: words that name a phone, on the same line. The
#: bare verbs of `_PHONE_CUE_BEFORE` (打, 找, 搵) are left out, and its Latin words must stand
#: alone: 打算, 打折, iPhone and Hotel stand before years and amounts written in numerals.
_NUMERAL_PHONE_CUE_BEFORE = re.compile(
    r"(?:電話|电话|致電|致电|打俾|打畀|打比|手機|手机|手提|聯絡|聯繫|联系|联络|微信|短訊|短讯|熱線|热线|傳真|传真|號碼|号码|"
    r"(?<![A-Za-z])(?:call|tel|phone|mobile|cell|contact|whatsapp|wechat|signal|sms|hotline|fax)(?![A-Za-z]))"
    r"[^0-9\n]{0,12}$",
    re.IGNORECASE,
)

_CURRENCY_BEFORE = re.compile(r"(?:HK\$|US\$|NT\$|RMB|HKD|USD|CNY|[$＄¥￥€£]|港幣|港元|人民幣|美元)\s*$", re.IGNORECASE)
_UNIT_AFTER = re.compile(
    r"^\s*(?:元|蚊|港元|港幣|億|亿|萬|万|千|百|人|名|個|位|次|年|日|米|公里|平方|呎|噸|件|份|室|樓|楼|號|号|%|％|km|kg|m\b|people|dollars|HKD|years|million|billion)",
    re.IGNORECASE,
)
_COUNT_BEFORE = re.compile(r"(?:人口|population|編號|訂單|order|ref(?:erence)?|no\.|#)\s*[:：]?\s*$", re.IGNORECASE)

_AT_SIGN_RE = re.compile("[@\uff20\ufe6b]")  # @, full-width ＠, small ﹫ (NFKC folds both to @)

# Dashes a word processor or an input method puts between digit groups; read as "-".
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"


@cache
def _fold_table() -> dict[int, str]:
    """One character to one ASCII character: NFKC's width and compatibility folds (full-width
    `９` and `Ａ`, mathematical digits), decimal digits of every script, every other character
    with a digit value (`unicodedata.digit`: ❾ ➒ ⓽ ⑼ ⒐), dashes.

    One-to-one on purpose: the view keeps the offsets of the original text, so a span found in
    the view is the same span of the original. Other compatibility characters that NFKC expands
    to several (`⑩` to two) are left as they are.
    """
    table: dict[int, str] = {}
    for code in (*range(0x80, 0x20000), *range(0xE0000, 0xE0080)):
        char = chr(code)
        folded = unicodedata.normalize("NFKC", char)
        if folded != char and len(folded) == 1 and folded.isascii():
            table[code] = folded
        elif unicodedata.category(char) == "Nd":
            table[code] = str(unicodedata.decimal(char))
        elif unicodedata.digit(char, None) is not None:
            # Digits NFKC leaves alone or expands: dingbat and double-circled ❾ ➒ ⓽ ⓿,
            # parenthesised ⑼ ("(9)") and with a full stop ⒐ ("9."). Written to slip a number
            # past a filter, as circled ones are, and one digit each to a reader.
            table[code] = str(unicodedata.digit(char))
    table.update({ord(dash): "-" for dash in _DASHES})
    return table


@cache
def _view_digit_re() -> re.Pattern:
    """Characters the normalised view reads as a digit: ASCII digits and every character
    `_fold_table` folds to one. That is the decimal digits of every script (what `\\d`
    matches) and also compatibility digits `\\d` does not match: circled ①, superscript ²,
    subscript ₃. A phone number written "⑨①②③ ④⑤⑥⑦" to slip past a marketplace's filter
    is a phone number to the detectors, so the cheap scan before them must count it too."""
    # `\d` (every decimal digit, a fast built-in class) and the hundred or so others; a class
    # listing all 700 one by one made the scan 3x slower.
    others = sorted(code for code, folded in _fold_table().items()
                    if folded.isdigit() and unicodedata.category(chr(code)) != "Nd")
    # Written as ranges of consecutive code points (⑴-⑼, ❶-❾ ...): a class of 128 single
    # characters made the scan 2.6x slower than one of 34.
    return re.compile(r"[\d" + _class_ranges(others) + "]")


def _class_ranges(codes) -> str:
    """The body of a regex character class holding `codes`, runs of consecutive code points
    written as ranges ("0-9" rather than ten characters)."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)


@cache
def _digit_run_res(ascii_only: bool) -> tuple[re.Pattern, re.Pattern, re.Pattern, frozenset[str], frozenset[str]]:
    """What `_could_hold_digit_pii` reads: (a run of six or more digits, one digit, six digits
    in a row, the joiners, the letters). A digit is a character the view reads as one
    (`_view_digit_re`); a run's digits are joined only by joiners, characters the view reads
    as a space or a hyphen or removes (format characters, Cf); in a row, only by format
    characters; a letter is a character the view reads as a Latin letter. `ascii_only`: the
    same for ASCII text, where those classes are 0-9, space and hyphen, nothing, and A-Z a-z
    (a pattern of small classes scans a locator three times as fast)."""
    letters = {*range(ord("A"), ord("Z") + 1), *range(ord("a"), ord("z") + 1)}
    joiners = {ord(" "), ord("-")}
    if ascii_only:
        return (re.compile("[0-9](?:[ -]*[0-9]){5,}"), re.compile("[0-9]"), re.compile("[0-9]{6}"),
                frozenset(map(chr, joiners)), frozenset(map(chr, letters)))
    joiners |= {code for code, folded in _fold_table().items() if folded in (" ", "-")} | _format_codes()
    letters |= {code for code, folded in _fold_table().items() if folded.isalpha()}
    digit, joiner, formatting = _view_digit_re().pattern, f"[{_class_ranges(joiners)}]", f"[{_class_ranges(_format_codes())}]"
    return (re.compile(f"{digit}(?:{joiner}*{digit}){{5,}}"), _view_digit_re(), re.compile(f"{digit}(?:{formatting}*{digit}){{5}}"),
            frozenset(map(chr, joiners)), frozenset(map(chr, letters)))


@cache
def _cn_digit_run_re() -> re.Pattern:
    """Four Chinese numerals (`_CN_DIGITS`) with at most format characters between them: what
    `chinese_numeral_phone_pattern` needs in the view, which removes those characters. Four in
    a row in the raw text let "電話九一二\u00ad三 四五六\u00ad七" through unredacted."""
    return re.compile(f"[{_CN_DIGITS}](?:[{_class_ranges(_format_codes())}]*[{_CN_DIGITS}]){{3}}")


def _could_hold_digit_pii(text: str) -> bool:
    """Whether `text` holds what every detector but the e-mail and the Chinese-numeral one
    needs, as `_digit_run_res` reads characters: a run of at least eight digits, for a Hong
    Kong phone number (4+4, at most one space or hyphen between the groups), a mainland one
    (3+4+4) or a card number (13 to 19 in groups); or, for an HKID, a run that starts with six
    digits in a row after a Latin letter and any number of joiners. Looser than the detectors
    on purpose (any joiners, either case): it only decides whether they run. A locator
    ("shard-000.jsonl:20001#id=r0-20000") has eleven digits and neither, and building the view
    and running the detectors for the locator of every record was a tenth of the steps' time
    (benchmarks/curation_scale.py)."""
    run_re, digit_re, in_a_row_re, joiners, letters = _digit_run_res(text.isascii())
    for run in run_re.finditer(text):
        if len(digit_re.findall(run.group())) >= 8:
            return True
        if in_a_row_re.match(text, run.start()):
            before = run.start()
            while before and text[before - 1] in joiners:  # as many as there are: the view removes format characters
                before -= 1
            if before and text[before - 1] in letters:
                return True
    return False


@cache
def _format_codes() -> frozenset[int]:
    """Code points of the Unicode format characters (category Cf): U+00AD soft hyphen, U+200B
    zero-width space, U+200C/D joiners, U+2060 word joiner, U+FEFF, bidi controls, tag
    characters. They render as nothing, so a number or address with one inside reads the same
    to a person."""
    return frozenset(code for code in (*range(0x20000), *range(0xE0000, 0xE0080)) if unicodedata.category(chr(code)) == "Cf")


@cache
def _format_char_re() -> re.Pattern:
    """One format character (`_format_codes`)."""
    return re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(_format_codes())) + "]")


def normalized_view(text: str) -> tuple[str, list[int] | None]:
    """The text as PII detectors read it, and where each of its characters came from.

    Returns `(view, offsets)`: `view` is `text` with `_fold_table`'s one-to-one folds applied
    and format characters (Cf) removed; `offsets[i]` is the index in `text` of `view[i]`, or
    `offsets` is None when nothing was removed (then the indices are the same).
    Example: `"9123\u00ad４５６７"` -> `("91234567", [0, 1, 2, 3, 5, 6, 7, 8])`.
    """
    view = text.translate(_fold_table())
    pattern = _format_char_re()
    if not pattern.search(view):
        return view, None
    offsets = [index for index, char in enumerate(view) if not pattern.match(char)]
    return "".join(view[index] for index in offsets), offsets


# Words that introduce a phone number. An eight-digit number written without a prefix and
# without the 4+4 grouping of Hong Kong numbers is a phone only after one of these (context
# words raising a pattern's confidence, as Microsoft Presidio's recognizers do): bare
# eight-digit runs are as often amounts, volumes and counts ("volume 23456789").
_PHONE_CUE_BEFORE = re.compile(
    r"(?:電話|电话|致電|致电|打俾|打畀|打比|打|call|tel|phone|mobile|cell|手機|手机|手提|聯絡|聯繫|联系|联络|"
    r"contact|whatsapp|wechat|微信|signal|sms|短訊|短讯|熱線|热线|hotline|fax|傳真|传真|號碼|号码|搵|揾|找)"
    r"[^0-9]{0,12}$",
    re.IGNORECASE,
)

# Labels of an identity card number. An HKID-shaped number whose check digit fails is still
# redacted after one of these ("身份證號碼：Y123456(7)", "HKID: Z 683365(5)"): a number mistyped
# or misread by OCR next to its label is still someone's identity card number, while without
# a label the check digit is what tells an HKID from a product or reference code.
_HKID_CUE_BEFORE = re.compile(
    r"(?:身[份分][證证証]|身份[號号][碼码]|[證证]件[號号][碼码]|HK ?ID|ID ?card|identity card|ID no|I\.D\.)"
    r"[^0-9]{0,12}$",
    re.IGNORECASE,
)


def _cue_before(text: str, start: int, cues: re.Pattern = _PHONE_CUE_BEFORE) -> bool:
    """Whether a cue (`cues`: by default a phone cue, `_PHONE_CUE_BEFORE`; `_HKID_CUE_BEFORE`
    for an ID label) ends within the 24 characters before `start`."""
    return bool(cues.search(text[max(0, start - 24):start]))


def _amount_count_or_unit(text: str, start: int, end: int) -> bool:
    """Whether the number at text[start:end] reads as an amount (a currency before it), a
    count or reference (人口, 編號, order no. before it) or a quantity (a unit after it)."""
    before, after = text[max(0, start - 12):start], text[end:end + 8]
    return bool(_CURRENCY_BEFORE.search(before) or _UNIT_AFTER.match(after) or _COUNT_BEFORE.search(before))


_HKID_LETTER_VALUES = {chr(code): code - ord("A") + 10 for code in range(ord("A"), ord("Z") + 1)}


def hkid_check_digit(letters: str, digits: str) -> str:
    """The check digit of an HKID: weights 9..2 over (space-padded) letters and six digits."""
    padded = letters.rjust(2)
    values = [36 if ch == " " else _HKID_LETTER_VALUES[ch] for ch in padded] + [int(d) for d in digits]
    total = sum(value * weight for value, weight in zip(values, range(9, 1, -1)))
    check = (11 - total % 11) % 11
    return "A" if check == 10 else str(check)


def luhn_valid(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|35|36|38|6011|65|62)")


def is_credit_card(candidate: str) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def _looks_like_date(digits: str) -> bool:
    if len(digits) != 8:
        return False
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    return 1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31


@dataclass(frozen=True)
class PiiSpan:
    start: int
    end: int
    kind: str


@dataclass
class RedactionResult:
    text: str
    counts: Counter = field(default_factory=Counter)
    spans: list[PiiSpan] = field(default_factory=list)


class PiiRedactor:
    """Finds PII spans and replaces them with typed placeholders."""

    def find(self, text: str) -> list[PiiSpan]:
        """PII spans of `text` (indices into `text` itself), sorted by start, not overlapping.

        Detection runs on `normalized_view(text)`; a span of the view maps back to the
        original characters from its first to its last, format characters inside included.
        """
        # Every kind needs a run of digits (as the view reads them, `_could_hold_digit_pii`), an
        # at-sign or a run of Chinese numerals: most text has none, and a plain scan is
        # cheaper than building the view.
        if not _could_hold_digit_pii(text) and not _AT_SIGN_RE.search(text) and not _cn_digit_run_re().search(text):
            return []
        view, offsets = normalized_view(text)
        spans = self._find_in_view(view)
        if offsets is None:
            return spans
        return [PiiSpan(offsets[s.start], offsets[s.end - 1] + 1, s.kind) for s in spans]

    def _find_in_view(self, text: str) -> list[PiiSpan]:
        spans: list[PiiSpan] = []

        def add(start: int, end: int, kind: str) -> None:
            if not any(s.start < end and start < s.end for s in spans):
                spans.append(PiiSpan(start, end, kind))

        # Order matters: e-mails and card numbers first, so their digits are not re-read as phones.
        for match in email_pattern.finditer(text):
            add(match.start(), match.end(), "EMAIL")
        for match in credit_card_pattern.finditer(text):
            if is_credit_card(match.group()):
                add(match.start(), match.end(), "CREDIT_CARD")
        for match in hkid_pattern.finditer(text):
            letters = (match.group(1) or match.group(6)).upper()
            digits = match.group(2) or match.group(7)
            check = (match.group(3) or match.group(4) or match.group(5) or match.group(8) or match.group(9)).upper()
            if hkid_check_digit(letters, digits) == check or _cue_before(text, match.start(), _HKID_CUE_BEFORE):
                add(match.start(), match.end(), "HKID")
        for match in mainland_mobile_pattern.finditer(text):
            add(match.start(), match.end(), "PHONE")
        for match in hk_phone_pattern.finditer(text):
            if match.group("prefix") or self._unprefixed_number_is_phone(text, match):
                add(match.start(), match.end(), "PHONE")
        for match in chinese_numeral_phone_pattern.finditer(text):
            if self._numeral_number_is_phone(text, match):
                add(match.start(), match.end(), "PHONE")
        return sorted(spans, key=lambda s: s.start)

    @staticmethod
    def _unprefixed_number_is_phone(text: str, match: re.Match) -> bool:
        number = match.group("number")
        digits = re.sub(r"[ -]", "", number)
        if _amount_count_or_unit(text, match.start(), match.end()):
            return False
        if number == digits:
            # Bare: a date is never a phone, and anything else needs a cue before it.
            if _looks_like_date(digits):
                return False
            return _cue_before(text, match.start())
        return True

    @staticmethod
    def _numeral_number_is_phone(text: str, match: re.Match) -> bool:
        """A number in Chinese numerals is a phone after a cue on its line, unless what stands
        around it makes it an amount, a count or a unit (as for Arabic digits), or it reads as
        a date or as two years (二〇二三-二〇二四年度)."""
        digits = re.sub(r"[ -]", "", match.group()).translate(_CN_TO_ARABIC)
        if _amount_count_or_unit(text, match.start(), match.end()):
            return False
        if _looks_like_date(digits) or (len(digits) == 8 and all(1900 <= int(year) <= 2099 for year in (digits[:4], digits[4:]))):
            return False
        return _cue_before(text, match.start(), _NUMERAL_PHONE_CUE_BEFORE)

    def redact(self, text: str) -> RedactionResult:
        """`text` with each PII span replaced by its placeholder (`PLACEHOLDERS`); the
        characters outside the spans are unchanged."""
        spans = self.find(text)
        counts: Counter = Counter()
        pieces: list[str] = []
        cursor = 0
        for span in spans:
            pieces.append(text[cursor:span.start])
            pieces.append(PLACEHOLDERS[span.kind])
            counts[span.kind] += 1
            cursor = span.end
        pieces.append(text[cursor:])
        return RedactionResult("".join(pieces), counts, spans)
