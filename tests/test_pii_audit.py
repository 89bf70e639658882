"""The residual-PII gate's detector is independent of the redactor: it catches what the
redactor misses, and it does not flag ordinary numbers."""

import pandas as pd
import pytest

from hkgai_pipelines.curation import expectations
from hkgai_pipelines.curation.pii import PiiRedactor
from hkgai_pipelines.curation.pii_audit import PiiFinding, audit_text

# Forms the redactor does not read as PII (dot separators, 2-3-3 grouping, spaced digits,
# an HKID without its brackets split by a space): the gate must still see them.
PLANTED_LEAKS = [
    ("WhatsApp 9123.4567", PiiFinding("PHONE", "9123.4567")),
    ("Call +852 91 234 567", PiiFinding("PHONE", "+852 91 234 567")),
    ("身份證 A-123456-3", PiiFinding("HKID", "A-123456-3")),
    ("卡號 4111.1111.1111.1111", PiiFinding("CREDIT_CARD", "4111.1111.1111.1111")),
]


def test_an_hkid_finding_keeps_its_closing_bracket():
    assert audit_text("身份證 A123456(3)") == [PiiFinding("HKID", "A123456(3)")]
    assert audit_text("身份證 Ａ❶❷❸❹❺❻（❸）") == [PiiFinding("HKID", "A123456(3)")]


@pytest.mark.parametrize("text, finding", PLANTED_LEAKS)
def test_planted_leak_missed_by_the_redactor_is_caught(text, finding):
    assert PiiRedactor().redact(text).text == text  # the redactor's blind spot
    assert audit_text(text) == [finding]


@pytest.mark.parametrize(
    "text, kinds",
    [
        ("如有查詢請致電：９１２３ ４５６７。", ["PHONE"]),
        ("申請人身份證號碼：Ａ１２３４５６（３）。", ["HKID"]),
        ("電郵 alice@\u200bexample.com", ["EMAIL"]),
        ("電話 9123\u00ad4567", ["PHONE"]),
        ("有事打 +852 4123 4567 搵我", ["PHONE"]),
        ("聯絡：_taiman@example.com", ["EMAIL"]),
        ("大陸手機 +86 138 0013 8000", ["PHONE"]),
        ("HKID: c668668(9)", ["HKID"]),
        # Digit forms NFKC leaves alone or expands: read by their digit value first.
        ("電話 ❾❶❷❸ ❹❺❻❼", ["PHONE"]),
        ("Call ⑼⑴⑵⑶ ⑷⑸⑹⑺", ["PHONE"]),
        ("身份證 Ａ❶❷❸❹❺❻（❸）", ["HKID"]),
    ],
)
def test_field_case_forms_are_found(text, kinds):
    assert [f.kind for f in audit_text(text)] == kinds


@pytest.mark.parametrize(
    "text",
    [
        "請打 <PHONE> 搵我，或電郵 <EMAIL>。",
        "Date 20240115",
        "售價$12345678",
        "In 1997 Hong Kong returned to China.",
        "version user@host missing tld",
        "立法會共有九十名議員。",
        "call 999 or 1823",
    ],
)
def test_ordinary_text_is_not_flagged(text):
    assert audit_text(text) == []


def test_gate_fails_on_a_leak_in_rejected_text():
    cleaned = pd.DataFrame({"id": ["a"], "text": ["佢哋聽日去旺角。"], "lang": ["yue"]})
    rejected = pd.DataFrame({"text": ["WhatsApp 9123.4567"]})
    assert expectations.check_no_residual_pii(cleaned).passed
    outcome = expectations.check_no_residual_pii(cleaned, rejected)
    assert not outcome.passed
    assert outcome.metadata["findings"] == ["PHONE: 9123.4567"]


@pytest.mark.parametrize(
    "text",
    [
        # Seen in CTCPC: catalogue codes, stock codes and ranges that a plan happens to allow.
        "恆星TYC 3541-945-1命名",
        "聯交所股份編號：00020",
        "深交所：000861 ）",
        "每二十萬人就要起一間面積大約12，000-15，000平方呎嘅圖書館",
        "羣策大廈2302–2303室",
    ],
)
def test_codes_and_ranges_are_not_certain_phones(text):
    assert not [f for f in audit_text(text) if f.certain]


def test_gate_reads_titles_and_locators():
    cleaned = pd.DataFrame({"id": ["a"], "text": ["佢哋聽日去旺角。"], "title": ["WhatsApp 9123.4567"], "locator": ["x.html"]})
    outcome = expectations.check_no_residual_pii(cleaned)
    assert not outcome.passed
    assert outcome.metadata["findings"] == ["PHONE: 9123.4567"]


@pytest.mark.parametrize("text", ["身份證號碼：Y123456(7)", "HKID: Z 683365(5)", "身份証 A123456(7)", "ID card no. A 123456 (7)"])
def test_a_labelled_hkid_with_a_wrong_check_digit_is_found(text):
    assert [finding.kind for finding in audit_text(text)] == ["HKID"]


@pytest.mark.parametrize("text", ["產品編號 A123456(7)", "我遺失咗身份證，補領時買咗部相機，型號 AB1234567"])
def test_an_unlabelled_code_with_a_wrong_check_digit_is_not_flagged(text):
    # The second names identity cards, but far from the code: a certain finding would block the corpus.
    assert audit_text(text) == []
