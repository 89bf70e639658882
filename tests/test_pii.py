import pytest

from hkgai_pipelines.curation.pii import PiiRedactor, hkid_check_digit, luhn_valid


@pytest.fixture(scope="module")
def redactor():
    return PiiRedactor()


def test_hkid_check_digit():
    assert hkid_check_digit("A", "123456") == "3"
    assert hkid_check_digit("G", "123456") == "A"
    assert hkid_check_digit("AB", "987654") == "3"


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("HKID A123456(3) please", "HKID <HKID> please"),
        ("身份證號碼A123456（3）", "身份證號碼<HKID>"),
        ("id G123456(A).", "id <HKID>."),
        ("two letters AB987654(3)", "two letters <HKID>"),
        ("電話91234567", "電話<PHONE>"),
        ("call 9123 4567 now", "call <PHONE> now"),
        ("+852 2345 6789", "<PHONE>"),
        ("(852) 3456-7890", "<PHONE>"),
        ("(+852)61234567", "<PHONE>"),
        ("00852-5123-4567", "<PHONE>"),
        ("Tel: 2123 4567.", "Tel: <PHONE>."),
        ("大陸手機 +86 138 0013 8000", "大陸手機 <PHONE>"),
        ("mobile 13800138000", "mobile <PHONE>"),
        ("電郵:chan.taiman@example.com。", "電郵:<EMAIL>。"),
        ("mail a_b+c@mail.gov.hk today", "mail <EMAIL> today"),
        ("card 4111 1111 1111 1111 lost", "card <CREDIT_CARD> lost"),
        ("amex 3782-822463-10005", "amex <CREDIT_CARD>"),
    ],
)
def test_every_pii_type_is_found(redactor, text, expected):
    assert redactor.redact(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "A123456(4) has a wrong check digit",  # no ID label: the check digit decides
        "card 4111 1111 1111 1112 fails Luhn",
        "In 1997 Hong Kong returned to China.",
        "The flat costs HK$ 23456789.",
        "售價$12345678",
        "人口 74131000 人",
        "Date 20240115",
        "Order no. 23456789",
        "編號：34567890",
        "The number 12345678 starts with 1.",
        "一九九七年七月一日",
        "2024-01-15 and 15/01/2024",
        "3.14159265358979",
        "GDP was 2,867,000,000,000",
        "版本 1.2.3.4",
        "version user@host missing tld",
        "總部喺杜老誌道6號羣策大廈2302–2303室",  # a room range, dashes folded or not
        "成交額 2345 6789 億",
        "樓價 3456 7890 萬",
        "code x1234567 is lower case without brackets",
    ],
)
def test_near_misses_are_left_alone(redactor, text):
    assert redactor.redact(text).text == text


def test_counts_by_type(redactor):
    result = redactor.redact("A123456(3) 9123 4567 x@y.hk 4111111111111111 6123 4567")
    assert dict(result.counts) == {"HKID": 1, "PHONE": 2, "EMAIL": 1, "CREDIT_CARD": 1}


# Written forms of PII met in real Hong Kong text (shared/field-cases 06, 07, 08, 15): each is
# redacted in place, and every character outside the span stays as it was.
@pytest.mark.parametrize(
    "text, expected",
    [
        ("如有查詢請致電：９１２３ ４５６７。", "如有查詢請致電：<PHONE>。"),
        ("申請人身份證號碼：Ａ１２３４５６（３）。", "申請人身份證號碼：<HKID>。"),
        ("電郵 ｃｈａｎ．ｔａｉｍａｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", "電郵 <EMAIL>"),
        ("電郵 alice@\u200bexample.com", "電郵 <EMAIL>"),
        ("電話 9123\u00ad4567", "電話 <PHONE>"),
        ("電郵 alice\u00ad.chan@example.com", "電郵 <EMAIL>"),
        ("電話 9\u200b1\u200b2\u200b3 4567！", "電話 <PHONE>！"),
        ("call +852 9123\u20134567 now", "call <PHONE> now"),
        ("有事打 +852 4123 4567 搵我", "有事打 <PHONE> 搵我"),
        ("我個新手機號碼係 4123 4567", "我個新手機號碼係 <PHONE>"),
        ("聯絡：_taiman@example.com", "聯絡：<EMAIL>"),
        ("mail +tag.x@example.org", "mail <EMAIL>"),
        ("卡號 ４１１１ １１１１ １１１１ １１１１", "卡號 <CREDIT_CARD>"),
        ("HKID: c668668(9)", "HKID: <HKID>"),
        ("身份證號碼 ab987654(3)", "身份證號碼 <HKID>"),
        ("身份證 A 123456 (3)", "身份證 <HKID>"),
        # Digits written to slip past a filter: circled, superscript, subscript. The view
        # folds them (NFKC) and the independent gate read them all along; the redactor's
        # pre-scan counted only decimal digits (\d) and let them through.
        ("加我微信 ⑨①②③ ④⑤⑥⑦ 傾", "加我微信 <PHONE> 傾"),
        ("電話 ⁹¹²³⁴⁵⁶⁷", "電話 <PHONE>"),
        ("電話 ₉₁₂₃-₄₅₆₇", "電話 <PHONE>"),
        ("身份證 Ａ①②③④⑤⑥(③)", "身份證 <HKID>"),
        # Digit forms NFKC leaves alone (dingbat, double-circled) or expands ("(9)", "9."):
        # one digit each in the view by their digit value.
        ("電話 ❾❶❷❸ ❹❺❻❼", "電話 <PHONE>"),
        ("WhatsApp ➒➊➋➌-➍➎➏➐", "WhatsApp <PHONE>"),
        ("聯絡 ⓽⓵⓶⓷ ⓸⓹⓺⓻", "聯絡 <PHONE>"),
        ("電話 ⑼⑴⑵⑶⑷⑸⑹⑺", "電話 <PHONE>"),
        ("電話 ⒐⒈⒉⒊⒋⒌⒍⒎", "電話 <PHONE>"),
        ("身份證 Ａ❶❷❸❹❺❻（❸）", "身份證 <HKID>"),
        # Numbers in Chinese numerals, after a phone cue.
        ("有興趣請致電 九一二三 四五六七，多謝", "有興趣請致電 <PHONE>，多謝"),
        ("WhatsApp：六〇一二三四五六", "WhatsApp：<PHONE>"),
        ("联系电话 一三八 一二三四 五六七八", "联系电话 <PHONE>"),
        ("微信：幺三九零零零零幺幺幺幺", "微信：<PHONE>"),
    ],
)
def test_written_forms_are_redacted_in_place(redactor, text, expected):
    assert redactor.redact(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "二〇二四年十二月三日",  # a date
        "一二三四五六七八九十，齊齊數",  # counting, no phone cue
        "電話簿有一二三四五六七八頁",  # starts with 一 and no mainland shape
        "致電查詢，截止日期為二〇二五年一月",  # a cue, but a year
        "九一二三四五六七八",  # nine numerals, no cue
        # Found by a fresh check: cues that are not phone words, or numbers that are years,
        # amounts and counts.
        "政府打算將二〇二三-二〇二四年度預算提交立法會",
        "立法會秘書處聯絡組二〇二三 二〇二四年度工作報告",
        "電話費二〇一九-二〇二〇年度上升",
        "Hotel 二〇二三-二〇二四年度報告",
        "iPhone 二三四五 六七八九",
        "跟住打拍子：一二三四 二二三四 三二三四 四二三四",
        "請打九折，共二三四五六七八九元",
        "號碼牌：二三四五六七八九號",
        "致電熱線查詢五六七八 九〇一二號訂單",
        "聯絡我哋\n\n二〇二三 二〇二四",
    ],
)
def test_chinese_numerals_that_are_not_phone_numbers_are_left_alone(redactor, text):
    assert redactor.redact(text).text == text


def test_the_pre_scan_counts_every_character_the_view_reads_as_a_digit():
    from hkgai_pipelines.curation.pii import _fold_table, _view_digit_re, normalized_view

    digits = [chr(code) for code, folded in _fold_table().items() if folded.isdigit()]
    assert len(digits) > 600  # decimal digits of every script, and the compatibility ones
    assert all(_view_digit_re().fullmatch(char) for char in digits)
    # Nothing else: what it matches, the view reads as 0-9.
    assert all(normalized_view(char)[0].isascii() and normalized_view(char)[0].isdigit() for char in digits)


def _find_without_pre_scan(text):
    from hkgai_pipelines.curation.pii import normalized_view

    view, offsets = normalized_view(text)
    spans = PiiRedactor()._find_in_view(view)
    return [(s.start, s.end, s.kind) if offsets is None else (offsets[s.start], offsets[s.end - 1] + 1, s.kind) for s in spans]


@pytest.mark.parametrize(
    "text",
    [
        "shard-00003.jsonl:120#id=r4-1234",  # eleven digits, no run: skipped
        "shard-000.jsonl:20001#id=r0-20000",  # six joined by a hyphen, no letter before them: skipped
        "news/2024-05-01/20240501-1.html",  # eight joined: detectors run, a date is no phone
        "Ａ\u200b１２３４５６\u200b（３）",  # an HKID with format characters inside
        "id c 668668(9)",  # lower case, a space before the digits
        "HKID A" + "\u200b" * 20 + "123456(3)",  # any number of format characters after the letter
        "電話九一二\u00ad三 四五六\u00ad七",  # Chinese numerals, a format character inside each group
        "tel 一三八\u200b一二三\u200b四五六\u200b七八",
        "手機 幺\u2060三八 一二三\u200b四 五六七\u200b八",
        "９１２３\u00ad　４５６７",  # full-width digits, a soft hyphen and an ideographic space inside
        "電話 9\u200b1\u200b2\u200b3 4567",  # zero-width spaces between digits
        "A１２３４５６（３）",
        "⑨①②③ ④⑤⑥⑦",
        "4111\u20131111\u20131111\u20131111",  # en dashes between a card's groups
    ],
)
def test_the_pre_scan_skips_only_text_without_pii(redactor, text):
    assert [(s.start, s.end, s.kind) for s in redactor.find(text)] == _find_without_pre_scan(text)


@pytest.mark.parametrize("locator", ["shard-00003.jsonl:120#id=r4-1234", "shard-000.jsonl:120001#id=r0-120000", "corpus/part-7.jsonl:99"])
def test_the_pre_scan_skips_locators_without_a_number_that_could_be_pii(locator):
    from hkgai_pipelines.curation.pii import _could_hold_digit_pii

    assert not _could_hold_digit_pii(locator)


@pytest.mark.parametrize(
    "digits, others",
    [
        # digits of several scripts, joiners the view reads as a space or hyphen, format
        # characters, letters of both widths, brackets and punctuation
        ("0123456789０１２３４５６７８９⑨①٣", [*" -‐–\u3000\u00a0\u00ad\u200b\ufeffAZazＡｚ()（）.,:+#電話", "852", "+852 "]),
        ("0123456789", [*" -AZaz().,:+#/=", "852", "+852 ", "tel "]),  # ASCII only: the pre-scan's ASCII patterns
        ("〇一二三四五六七八九幺", [*" -\u00ad\u200b\u2060，", "電話", "tel "]),  # Chinese numerals after a cue
    ],
)
def test_the_pre_scan_agrees_with_the_detectors_on_random_digit_text(redactor, digits, others):
    # Wherever the detectors find PII, the run the pre-scan looks for is there.
    import random

    from hkgai_pipelines.curation.pii import _could_hold_digit_pii

    rng = random.Random(7)
    found = skipped = 0
    for _ in range(20_000):
        text = "".join(rng.choice(digits if rng.random() < 0.7 else others) for _ in range(rng.randint(6, 24)))
        expected = _find_without_pre_scan(text)
        found += bool(expected)
        skipped += not _could_hold_digit_pii(text)
        assert [(s.start, s.end, s.kind) for s in redactor.find(text)] == expected, text
    # Both outcomes are common enough for the check to mean something.
    assert found > 50 and skipped > 1_000


def test_text_around_a_span_is_unchanged_byte_for_byte(redactor):
    # Full-width punctuation, a zero-width space outside PII and an ideographic space are
    # not PII: redaction must not normalise them away.
    text = "通知：\u200b請於　三月一日前致電９１２３\u00ad４５６７，謝謝！"
    assert redactor.redact(text).text == "通知：\u200b請於　三月一日前致電<PHONE>，謝謝！"


def test_normalized_view_maps_offsets():
    from hkgai_pipelines.curation.pii import normalized_view

    assert normalized_view("9123\u00ad４５６７") == ("91234567", [0, 1, 2, 3, 5, 6, 7, 8])
    assert normalized_view("abc") == ("abc", None)


def test_cli_and_pipeline_agree_on_format_characters():
    """`hkgai redact` and the pipeline run one redactor: a zero-width space inside a number
    gives <PHONE> both ways."""
    from typer.testing import CliRunner

    from hkgai_pipelines.cli import app
    from hkgai_pipelines.curation.repair import repair_text

    text = "電話 9123\u200b4567"
    cli = CliRunner().invoke(app, ["redact"], input=text).output
    assert cli == "電話 <PHONE>"
    assert PiiRedactor().redact(repair_text(text)).text == cli


@pytest.mark.parametrize(
    "text, expected",
    [
        # A wrong check digit beside an identity-card label: a mistyped number is still someone's.
        ("身份證號碼：Y123456(7)", "身份證號碼：<HKID>"),
        ("HKID: Z 683365(5)", "HKID: <HKID>"),
        ("身份証 A123456(7)", "身份証 <HKID>"),
        ("我嘅身份證係 A１２３４５６（７）", "我嘅身份證係 <HKID>"),
        # Without a label the check digit still decides: a product or reference code stays.
        ("產品編號 A123456(7)", "產品編號 A123456(7)"),
        ("Model AB123456(7) 機", "Model AB123456(7) 機"),
    ],
)
def test_an_hkid_with_a_wrong_check_digit_is_redacted_only_after_an_id_label(redactor, text, expected):
    assert redactor.redact(text).text == expected
