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
        "HKID A123456(4) has a wrong check digit",
        "card 4111 1111 1111 1112 fails Luhn",
        "In 1997 Hong Kong returned to China.",
        "The flat costs HK$ 23456789.",
        "售價$12345678",
        "人口 74131000 人",
        "Date 20240115",
        "Order no. 23456789",
        "編號：34567890",
        "The number 12345678 starts with 1.",
        "40123456 starts with 4",
        "一九九七年七月一日",
        "2024-01-15 and 15/01/2024",
        "3.14159265358979",
        "GDP was 2,867,000,000,000",
        "版本 1.2.3.4",
        "version user@host missing tld",
    ],
)
def test_near_misses_are_left_alone(redactor, text):
    assert redactor.redact(text).text == text


def test_counts_by_type(redactor):
    result = redactor.redact("A123456(3) 9123 4567 x@y.hk 4111111111111111 6123 4567")
    assert dict(result.counts) == {"HKID": 1, "PHONE": 2, "EMAIL": 1, "CREDIT_CARD": 1}
