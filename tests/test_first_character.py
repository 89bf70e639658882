"""`first_character_scan`: the rewritten alternations match exactly what the originals match."""

import random
import re

import pytest

from hkgai_pipelines.curation import cantonese_model
from hkgai_pipelines.curation.first_character import first_character_scan


def _matches(pattern: re.Pattern, text: str) -> list:
    return [(match.span(), match.groups()) for match in pattern.finditer(text)]


def test_rewrite_of_a_short_alternation():
    rewritten = first_character_scan(re.compile("[ab]c|唔[係得]|(?<!關)係(?!數)|\\d-"))
    assert rewritten.pattern == ("[\\U00000061\\U00000062\\U00005514\\U00004fc2\\d]"
                                 "(?:(?<=[ab])c|(?<=唔)[係得]|(?<=係)(?<!(?:關)(?s:.))(?!數)|(?<=\\d)-)")
    text = "ac 唔係 關係 係數 係 bc 7- 唔好"
    assert [m.group() for m in rewritten.finditer(text)] == ["ac", "唔係", "係", "bc", "7-"]
    assert _matches(rewritten, text) == _matches(re.compile("[ab]c|唔[係得]|(?<!關)係(?!數)|\\d-"), text)


def test_a_group_around_the_whole_alternation_is_kept():
    original = re.compile("(關係|吱唔|咿唔)")
    rewritten = first_character_scan(original)
    assert rewritten.pattern == "([\\U000095dc\\U00005431\\U000054bf](?:(?<=關)係|(?<=吱)唔|(?<=咿)唔))"
    assert rewritten.findall("有關係，吱唔咿唔") == original.findall("有關係，吱唔咿唔") == ["關係", "吱唔", "咿唔"]


@pytest.mark.parametrize("pattern, texts", [
    # "[a-]" then "[z]" must not become the range a-z; "]" first in a class is a member.
    ("[a-]x|[z]y|[]q]w|-v", ["ax -x zy ]w qw -v mx", "bx cy"]),
    # An octal escape ending a class must not take the next item's digit ("[\\1]" + "2" is not "\\12").
    (r"[\1]x|2y", ["\x01x 2y", "\nx"]),
    (r"[\7]x|7y|7z", ["\x07x 7y 7z"]),
    # An escaped backslash then "-" ends the class: "[\\-]" + "z" is not the range \\-z.
    (r"[\\-]x|zy", ["-x \\x zy ax"]),
    (r"[a\\-]x|Ay", ["ax -x \\x Ay"]),
])
def test_class_members_that_would_join_their_neighbours_stay_apart(pattern, texts):
    original = re.compile(pattern)
    rewritten = first_character_scan(original)
    for text in texts:
        assert _matches(rewritten, text) == _matches(original, text), text
        assert rewritten.subn("#", text) == original.subn("#", text), text


@pytest.mark.parametrize("pattern", ["a*b|c", "(?:ab)|c", ".x|c", "^a|b", "\\bword|c", "[^a]b|c", "a|", "(?i)ab|c", "a(?#[)|b|c(?#])d|e", "(a(?#[)b)|c"])
def test_what_cannot_be_rewritten_raises(pattern):
    with pytest.raises(ValueError):
        first_character_scan(re.compile(pattern))


def test_verbose_and_bytes_patterns_are_not_rewritten():
    with pytest.raises(ValueError):
        first_character_scan(re.compile("a b | c", re.VERBOSE))
    with pytest.raises(ValueError):
        first_character_scan(re.compile(b"ab|c"))


def test_flags_are_kept():
    rewritten = first_character_scan(re.compile("ab|[cd]e", re.IGNORECASE))
    assert rewritten.flags & re.IGNORECASE
    assert [m.group() for m in rewritten.finditer("AB De ce")] == ["AB", "De", "ce"]


def _rewritten_lists() -> list[tuple[str, re.Pattern, re.Pattern]]:
    from cantonesedetect import Detector

    ours = [(name, re.compile(getattr(cantonese_model, f"{name}_PATTERN")), getattr(cantonese_model, f"{name}_RE"))
            for name in ("SUPPLEMENT_CANTO", "SUPPLEMENT_SWC", "FORMAL_SWC", "COLLOQUIAL_MANDARIN")]
    names = ("CANTO_FEATURE_RE", "SWC_FEATURE_RE", "CANTO_EXCLUDE_RE", "SWC_EXCLUDE_RE")
    theirs = [(name, getattr(Detector, name), rewritten) for name, rewritten in zip(names, cantonese_model._cantonesedetect_lists())]
    return ours + theirs


def test_language_id_lists_match_as_before_on_real_and_random_text():
    """Every rewritten list of language ID against its original: the same spans, groups and
    substitutions on every 10th training text (CTCPC, HKCanCor, HSK, the project's own lines),
    and on 3,000 random strings of each pattern's own characters with the masks and
    punctuation, where the lookbehinds and lookaheads meet every neighbour they name."""
    texts = [text for text, _, _ in cantonese_model.training_corpus()[::10]]
    assert len(texts) > 10_000
    for name, original, rewritten in _rewritten_lists():
        assert rewritten.pattern != original.pattern, name  # every list was rewritten
        alphabet = sorted({char for char in original.pattern if ord(char) > 0x2000}) + ["\u25a1", "\u25a0", "，", "a", " "]
        rng = random.Random(name)
        noise = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(3_000)]
        for text in texts + noise:
            assert _matches(rewritten, text) == _matches(original, text), (name, text)
            assert rewritten.subn("\u25a1", text) == original.subn("\u25a1", text), (name, text)
