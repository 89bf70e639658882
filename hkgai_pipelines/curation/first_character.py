"""Alternations rewritten so that Python's regex engine skips to where one can start.

CPython's `re` searches a pattern that begins with one character or one character class by
scanning the text for that class in C (sre's INFO "charset" prefix, built by
`re._compiler._compile_info`) and trying the whole pattern only where it finds one. An
alternation of words gets that scan only when every branch begins with a plain literal: one
that begins with a class (cantonesedetect's `[嘅嗰啲咗...]|唔[係得會...]|...`) or with a
lookbehind (`(?<![關維聯派])係(?!數)|咩|...`) gets none, and every branch is tried at every
position of the text. Language ID runs five such alternations over every Chinese record.

`first_character_scan` rewrites `A1 rest1 | A2 rest2 | ...`, where each branch begins with
one character item Ai (a character, an escape such as \\d, or a class) after any lookbehinds
Li, into

    [A1 A2 ...](?:(?<=A1)L1' rest1|(?<=A2)L2' rest2|...)

which begins with a class, so the scan applies (its members are the items' characters, ranges
and categories as `re`'s parser reads them, each character a \\U escape). The match is the same match: at a position
where the original matches branch k (the first branch, in order, that matches there), the
class takes that position's character, `(?<=Ai)` rejects the branches whose first item does
not take it, exactly as Ai did, and the rest is matched from the next position as before. A
lookbehind `(?<=X)` or `(?<!X)` that stood before Ai is moved after it as `(?<=(?:X)(?s:.))`
or `(?<!(?:X)(?s:.))`: the same text, looked at from one character later. The span, the
groups inside the branches and so `findall`, `sub` and `subn` are unchanged (the tests compare
them on the training corpora and on random text from the patterns' own characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
# The regex parser of the standard library (re._parser, sre_parse before 3.11): a first item
# is read exactly as `re` reads it.
from re import _parser

#: Characters that make a one-character item something else when they follow it.
_QUANTIFIERS = "*+?{"
#: Escapes that are not one character: anchors, word boundaries and back-references.
_NOT_ONE_CHARACTER = set("AbBZz0123456789g")
#: Hex digits after the escapes of one code point (\xhh, \uhhhh, \Uhhhhhhhh).
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}
#: How the class categories `re`'s parser reads are written again.
_CATEGORY_ESCAPES = {_parser.CATEGORY_DIGIT: r"\d", _parser.CATEGORY_NOT_DIGIT: r"\D", _parser.CATEGORY_SPACE: r"\s",
                     _parser.CATEGORY_NOT_SPACE: r"\S", _parser.CATEGORY_WORD: r"\w", _parser.CATEGORY_NOT_WORD: r"\W"}


def first_character_scan(pattern: re.Pattern) -> re.Pattern:
    """`pattern` (compiled) rewritten as the module docstring says, compiled with the same
    flags (its first items are read under them too). An alternation wrapped whole in one capturing group
    keeps the group around the rewritten alternation (`findall` returns the same strings).
    Raises ValueError when a branch does not begin with one character item (after any
    lookbehinds), or the pattern has inline flags, comments, re.VERBOSE or is of bytes: the
    caller keeps the original then."""
    if not isinstance(pattern.pattern, str) or pattern.flags & re.VERBOSE:
        raise ValueError("only str patterns without re.VERBOSE are rewritten (whitespace and comments would split wrongly)")
    text, grouped = pattern.pattern, False
    if text.startswith("(") and not text.startswith("(?") and _closing(text, 0) == len(text) - 1:
        text, grouped = text[1:-1], True
    firsts, alternatives = [], []
    for branch in _branches(text):
        behinds, at = [], 0
        while branch.startswith(("(?<=", "(?<!"), at):
            end = _closing(branch, at)
            behinds.append(f"(?<{branch[at + 3]}(?:{branch[at + 4:end]})(?s:.))")
            at = end + 1
        item_end = _item_end(branch, at)
        item = branch[at:item_end]
        if item_end < len(branch) and branch[item_end] in _QUANTIFIERS:
            raise ValueError(f"branch {branch!r}: its first item is quantified")
        firsts.append(_union_member(item, pattern.flags))
        alternatives.append(f"(?<={item})" + "".join(behinds) + branch[item_end:])
    rewritten = f"[{''.join(firsts)}](?:{'|'.join(alternatives)})"
    return re.compile(f"({rewritten})" if grouped else rewritten, pattern.flags)


def _union_member(item: str, flags: int) -> str:
    """The one-character item `item` written to stand inside the class of all first items:
    what `re`'s own parser reads it as (characters, ranges, categories such as \\d), each
    character written as a fixed-length \\U escape. Written as they are, joined members could
    read as one: a class ending in an octal escape and a member starting with a digit
    (`[\\1]` + `2` -> `\\12`), a trailing `-` and the next member (a range). Raises ValueError
    for what is not such an item (a negated class)."""
    parsed = _parser.parse(item, flags).data
    if len(parsed) != 1:
        raise ValueError(f"{item!r} is not one character item")
    op, value = parsed[0]
    members = [(op, value)] if op is _parser.LITERAL else value if op is _parser.IN else None
    if members is None:
        raise ValueError(f"{item!r} does not begin a branch with characters to scan for")
    written = []
    for member, value in members:
        if member is _parser.LITERAL:
            written.append(f"\\U{value:08x}")
        elif member is _parser.RANGE:
            written.append(f"\\U{value[0]:08x}-\\U{value[1]:08x}")
        elif member is _parser.CATEGORY and value in _CATEGORY_ESCAPES:
            written.append(_CATEGORY_ESCAPES[value])
        else:  # NEGATE and anything newer
            raise ValueError(f"{item!r}: a class member that cannot join the scan's class")
    return "".join(written)


def _branches(text: str) -> list[str]:
    """The top-level branches of `text` (split at each `|` outside groups and classes).
    Raises ValueError for inline flags and comments (`_check_group`)."""
    branches, start = [], 0
    for at, char, depth in _structure(text):
        if char == "|" and depth == 0:
            branches.append(text[start:at])
            start = at + 1
    branches.append(text[start:])
    return branches


def _item_end(branch: str, at: int) -> int:
    """Where the one-character item that begins at `at` ends. Raises ValueError for anything
    else (a group, an anchor, a dot, an empty branch, a multi-character escape)."""
    if at >= len(branch):
        raise ValueError(f"branch {branch!r} has no character item")
    char = branch[at]
    if char == "[":
        if branch.startswith("[^", at):
            raise ValueError(f"branch {branch!r} begins with a negated class, which matches too much to scan for")
        return _class_end(branch, at)
    if char == "\\":
        if at + 1 >= len(branch) or branch[at + 1] in _NOT_ONE_CHARACTER:
            raise ValueError(f"branch {branch!r} begins with an escape that is not one character")
        if branch[at + 1] == "N":  # \N{NAME}
            return branch.index("}", at) + 1
        return at + 2 + _HEX_DIGITS.get(branch[at + 1], 0)
    if char in "()|.^$*+?{}":
        raise ValueError(f"branch {branch!r} does not begin with one character item")
    return at + 1


def _class_end(text: str, at: int) -> int:
    """Index after the character class that opens at `at` (`]` first in a class is a member)."""
    end = at + 1
    if end < len(text) and text[end] == "^":
        end += 1
    if end < len(text) and text[end] == "]":
        end += 1
    while end < len(text) and text[end] != "]":
        end += 2 if text[end] == "\\" else 1
    if end >= len(text):
        raise ValueError(f"unclosed class in {text!r}")
    return end + 1


def _closing(text: str, at: int) -> int:
    """Index of the `)` closing the group that opens at `at`. Raises ValueError for an
    unclosed group, inline flags and comments (`_check_group`)."""
    for index, char, depth in _structure(text, at):
        if char == ")" and depth == 0:
            return index
    raise ValueError(f"unclosed group in {text!r}")


def _check_group(text: str, at: int) -> None:
    """Raise ValueError for a group opening at `at` that the rewrite cannot carry: inline flags
    (`(?i)`, `(?a:`), whose reach would change, and comments, whose text is not pattern
    ("(?#[)" would open a class)."""
    if text.startswith("(?#", at):
        raise ValueError("comments are not rewritten")
    if text.startswith("(?", at) and at + 2 < len(text) and text[at + 2] in "aiLmsux-":
        raise ValueError("inline flags are not rewritten")


def _structure(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(index, character, depth) of each `(`, `)` and `|` of `text` from `start` that is
    pattern structure (escapes and character classes are stepped over); depth: how many groups
    opened since `start` are open after the character. Each group is checked (`_check_group`)."""
    at, depth = start, 0
    while at < len(text):
        char = text[at]
        if char == "\\":
            at += 2
            continue
        if char == "[":
            at = _class_end(text, at)
            continue
        if char == "(":
            _check_group(text, at)
            depth += 1
        elif char == ")":
            depth -= 1
        if char in "()|":
            yield at, char, depth
        at += 1
