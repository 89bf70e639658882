"""An independent PII detector for the blocking residual-PII gate.

A gate that re-runs the redactor passes exactly what the redactor missed. This detector is
built differently on purpose, so that the two do not share blind spots:

- its own normalisation: NFKC of the whole text, every character of Unicode category Cf
  (format) or Mn (combining marks) dropped, every separator between digits ignored;
- phone numbers from Google's libphonenumber (the `phonenumbers` package) with its published
  numbering-plan metadata for Hong Kong and mainland China, not from our patterns: it knows
  which prefixes are allocated, and any grouping or punctuation between the digits;
- payment cards and HKIDs from digit runs regardless of grouping, validated by Luhn and the
  HKID check digit (the redactor's `luhn_valid`/`hkid_check_digit`: definitions, not
  heuristics); an HKID whose check digit fails counts when the words before it name an
  identity document (its own list, read on its own view);
- e-mail addresses by splitting on "@" and parsing both sides (RFC 5322 dot-atom local part,
  LDH domain labels), not by one regular expression.

It is tuned for recall. A bare run of eight digits that Hong Kong's plan allows is reported
as `certain=False`: amounts and counts look the same, so the gate lists such findings for a
reader instead of blocking on them. `audit_text` returns findings;
`expectations.check_no_residual_pii` turns them into the gate.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# The check-digit rules are shared with the redactor: they are the definitions of a valid
# card number and HKID, not a way of finding them, so sharing them shares no blind spot.
from hkgai_pipelines.curation.pii import hkid_check_digit, luhn_valid

#: The redactor's placeholders are redaction, not PII.
_PLACEHOLDER_RE = re.compile(r"<(?:HKID|PHONE|EMAIL|CREDIT_CARD)>")
_DIGIT_RUN_RE = re.compile(r"\d(?:[^\w\n]{0,2}\d)*")
# The closing bracket of "A123456(3)" is part of the finding's value, so a report shows the
# number as written.
_HKID_RE = re.compile(r"(?<![A-Za-z])([A-Za-z]{1,2})[^\w\n]{0,2}((?:\d[^\w\n]{0,1}){6})[^\w\n]{0,2}([0-9Aa])(?![0-9A-Za-z])\)?")
_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!$%'*+^_`{|}~-]+$")
_DOMAIN_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
# Around an "@", the characters an address can be made of (CJK, spaces and the URL delimiters
# / ? = & # end it).
_ADDRESS_CHARS = re.compile(r"[A-Za-z0-9!$%'*+^_`{|}~.@-]")
#: libphonenumber regions whose numbers are personal data in this corpus.
REGIONS = ("HK", "CN")
# "+852", "00852", "(+86)": a country code written out makes a number a phone number.
_COUNTRY_CODE_RE = re.compile(r"^(?:\(?(?:\+|00)\s*(?:852|86)(?!\d)|\((?:852|86)\))")
# A number followed by a unit is a quantity or an address part ("2302-2303室", "12345678 元").
_UNIT_AFTER_RE = re.compile(r"^\s*(?:室|樓|楼|號|号|元|蚊|億|亿|萬|万|千|百|人|個|个|平方|呎|%|km|kg|sq|million|billion)", re.IGNORECASE)
_PRICE_BEFORE_RE = re.compile(r"(?:\$|HK\$|港元|元)\s*$")


def _grouped_as_in_plan(number, raw: str) -> bool:
    """The digit groups of `raw` are those of the number's national format (libphonenumber)."""
    import phonenumbers

    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    groups = [len(g) for g in re.findall(r"\d+", national)]
    raw = re.sub(r"^\(?(?:852|86)\)?[^\d]+", "", raw)  # "852 6789 0123": the code, then the number
    return [len(g) for g in re.findall(r"\d+", raw)] == groups


@dataclass(frozen=True)
class PiiFinding:
    """A piece of PII in the audited text. `certain` is False only for a bare run of digits
    that a numbering plan allows but nothing marks as a phone (no prefix, no grouping):
    "23456789" in a budget line is as likely an amount."""

    kind: str
    value: str
    certain: bool = True


def audit_view(text: str) -> str:
    """Other-number characters with a digit value read as that digit (❾ ⓽ ⑼ ⒐ ①: category
    No, which NFKC leaves alone or expands to "(9)" and "9."), then NFKC, then format
    characters (Cf) and combining marks (Mn) removed."""
    if not text.isascii():
        text = "".join(str(unicodedata.digit(char)) if unicodedata.category(char) == "No" and unicodedata.digit(char, None) is not None
                       else char for char in text)
    text = unicodedata.normalize("NFKC", text)
    return "".join(char for char in text if unicodedata.category(char) not in ("Cf", "Mn"))


def _phones(text: str) -> list[PiiFinding]:
    """Numbers libphonenumber finds: valid in Hong Kong's plan (an allocated block), a
    mainland mobile, or written with an explicit country code (+852, 00852, +86), which makes
    any number of a possible length a phone number whatever its block. Unprefixed mainland
    fixed lines are not looked for: ten digits with an area code read like any reference
    number ("Policy no. 2345-6789-01")."""
    import phonenumbers

    found: dict[tuple[int, int], PiiFinding] = {}
    for region in REGIONS:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
            raw = match.raw_string
            explicit = bool(_COUNTRY_CODE_RE.match(raw))
            if not explicit:
                if not phonenumbers.is_valid_number(match.number):
                    continue
                if region == "CN" and phonenumbers.number_type(match.number) != phonenumbers.PhoneNumberType.MOBILE:
                    continue
                # Digits grouped as the plan writes them (9123 4567, 9123.4567), not a
                # catalogue code such as "TYC 3541-945-1" that happens to be valid.
                if not raw.isdigit() and not _grouped_as_in_plan(match.number, raw):
                    continue
                if _UNIT_AFTER_RE.match(text[match.end:match.end + 6]) or _PRICE_BEFORE_RE.search(text[max(0, match.start - 4):match.start]):
                    continue
                digits = re.sub(r"\D", "", raw)
                # An eight-digit YYYYMMDD date is a date in any plan.
                if len(digits) == 8 and digits[:2] in ("19", "20") and "01" <= digits[4:6] <= "12" and "01" <= digits[6:] <= "31":
                    continue
            found.setdefault((match.start, match.end), PiiFinding("PHONE", raw, certain=explicit or not raw.isdigit()))
    return [found[span] for span in sorted(found)]


def _cards(text: str) -> list[PiiFinding]:
    found = []
    for match in _DIGIT_RUN_RE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits):
            found.append(PiiFinding("CREDIT_CARD", match.group()))
    return found


# Words naming an identity document. An HKID shape whose check digit fails counts when one of
# them ends at most ID_LABEL_GAP characters before it, with no digit between (a mistyped number
# beside its label is still personal data). A wider window read any HKID-shaped code in a
# text that mentions identity cards ("我遺失咗身份證，補領時買咗部相機，型號 AB1234567") as one,
# and a certain finding blocks the corpus.
_ID_DOCUMENT_WORDS = ("身份", "身分", "證件", "证件", "hkid", "hk id", "id card", "identity", "id no", "i.d.")
ID_LABEL_GAP = 12


def _labelled(text: str, start: int) -> bool:
    """Whether an identity-document word ends within ID_LABEL_GAP digit-free characters before `start`."""
    before = text[max(0, start - ID_LABEL_GAP - 12):start].lower()
    ends = [before.rfind(word) + len(word) for word in _ID_DOCUMENT_WORDS if word in before]
    if not ends:
        return False
    gap = before[max(ends):]
    return len(gap) <= ID_LABEL_GAP and not any(char.isdigit() for char in gap)


def _hkids(text: str) -> list[PiiFinding]:
    found = []
    for match in _HKID_RE.finditer(text):
        letters, digits, check = match.group(1).upper(), re.sub(r"\D", "", match.group(2)), match.group(3).upper()
        if hkid_check_digit(letters, digits) == check or _labelled(text, match.start()):
            found.append(PiiFinding("HKID", match.group()))
    return found


def _emails(text: str) -> list[PiiFinding]:
    found = []
    for at in (index for index, char in enumerate(text) if char == "@"):
        start, end = at, at + 1
        while start > 0 and _ADDRESS_CHARS.match(text[start - 1]):
            start -= 1
        while end < len(text) and _ADDRESS_CHARS.match(text[end]):
            end += 1
        local, _, domain = text[start:end].strip(".-").partition("@")
        labels = domain.rstrip(".").split(".")
        if (
            local
            and all(_LOCAL_ATOM.match(atom) for atom in local.split("."))
            and len(labels) >= 2
            and all(_DOMAIN_LABEL.match(label) for label in labels)
            and labels[-1].isalpha()
            and len(labels[-1]) >= 2
        ):
            found.append(PiiFinding("EMAIL", text[start:end]))
    return found


def audit_text(text: str) -> list[PiiFinding]:
    """PII that this detector sees in `text` (placeholders excluded), in detector order.

    Example: `audit_text("WhatsApp 9123.4567")` -> `[PiiFinding("PHONE", "9123.4567")]`.
    """
    view = _PLACEHOLDER_RE.sub(" ", audit_view(text))
    return _emails(view) + _cards(view) + _hkids(view) + _phones(view)
