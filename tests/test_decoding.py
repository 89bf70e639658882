"""Encoding decisions: byte-order marks, declared charsets, UTF-8, detected legacy encodings."""

import io

import pytest

from hkgai_pipelines.sources.decoding import (
    canonical_candidates,
    declared_charset,
    decode_document,
    decode_line,
    detect,
    header_charset,
    iter_encoded_lines,
)

# Hong Kong text with HKSCS-only characters (𨋢 U+2820B lift, 𠵱 U+20D71 now): plain Big5 and
# cp950 cannot encode them.
NOTICE = "各位住戶：由於𨋢要維修，本週六暫停服務。\n我哋𠵱家去飲茶，跟住返屋企。\n"


@pytest.mark.parametrize(
    ("encoding", "recorded", "bom_length"),
    [
        ("utf-8-sig", "utf-8-sig", 3),
        ("utf-16", "utf-16", 2),
        ("utf-32", "utf-32", 4),
        ("utf-16-le", "utf-16-le", 0),
        ("utf-16-be", "utf-16-be", 0),
        ("utf-32-le", "utf-32-le", 0),
        ("utf-8", "utf-8", 0),
        ("big5hkscs", "big5hkscs", 0),
        ("gb18030", "gb18030", 0),
    ],
)
def test_detects_and_round_trips_hong_kong_text(encoding, recorded, bom_length):
    data = NOTICE.encode(encoding)
    detection = detect(data, final=True, line_based=True)
    assert (detection.encoding, detection.bom_length) == (recorded, bom_length)
    assert data[detection.bom_length:].decode(detection.codec) == NOTICE


def ctcpc_big5_lines(count: int) -> list[bytes]:
    """The first `count` CTCPC sentences (packaged, CC0) that Big5 encodes, as JSONL lines the
    way the benchmark corpus writes them (a fresh user's trial file)."""
    import json

    from hkgai_pipelines.sources.catalog import SourceSpec
    from hkgai_pipelines.sources.readers import read_source

    lines = []
    for index, item in enumerate(read_source(SourceSpec("ctcpc", "ctcpc", "CC0-1.0"))):
        try:
            lines.append(json.dumps({"id": f"r0-{index}", "text": f"{item.text} (0)"}, ensure_ascii=False).encode("big5"))
        except UnicodeEncodeError:
            continue
        if len(lines) == count:
            return lines
    raise AssertionError(f"fewer than {count} lines")


def _records(path) -> list:
    from hkgai_pipelines.sources.files import read_file

    return list(read_file(path, source="s", licence="l", root=path.parent))


def test_big5_jsonl_of_short_lines_is_read_as_big5_where_the_detector_gives_up(tmp_path):
    """A fresh-user trial: 3,000 CTCPC lines in Big5 (158 KB). From its first 64 KiB
    charset-normalizer's default threshold ranks no candidate (it did from 16, 50 and 100 KB),
    and the file was read as UTF-8 with 2,967 of 3,000 lines quarantined."""
    from hkgai_pipelines.sources.records import RawRecord

    data = b"\n".join(ctcpc_big5_lines(3000)) + b"\n"
    assert detect(data[:65536], final=False, line_based=True).codec == "big5hkscs"
    path = tmp_path / "big5.jsonl"
    path.write_bytes(data)
    items = _records(path)
    assert len(items) == 3000 and all(isinstance(item, RawRecord) and item.encoding == "big5hkscs" for item in items)


def test_big5_after_an_ascii_head_decides_again_at_its_first_chinese_line(tmp_path):
    """A fresh-user trial: 800 English lines (82 KB, more than the 64 KiB head), then the same
    Big5 lines: decided UTF-8 from the head, 2,967 of them were quarantined. Damaged UTF-8
    after an ASCII head stays damaged UTF-8."""
    import json

    from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord

    english = [json.dumps({"id": f"a{i}", "text": f"This is English sentence number {i} about the harbour and the weather today."})
               .encode() for i in range(800)]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(english + ctcpc_big5_lines(3000)) + b"\n")
    items = _records(path)
    assert [type(item) for item in items] == [RawRecord] * 3800
    assert {item.encoding for item in items[:800]} == {"utf-8"}
    assert {item.encoding for item in items[800:] if not item.text.isascii()} == {"big5hkscs"}
    damaged = tmp_path / "damaged.jsonl"
    # Chinese in UTF-8 with one character cut short (a lone byte like "caf\\xe9" would be
    # cp1252, after an ASCII head as in one).
    cut = '{"id": "x", "text": "香港'.encode() + b"\xe6\xb8" + '天文台今日發出暴雨警告"}'.encode()
    damaged.write_bytes(b"\n".join(english + [cut] + english[:5]) + b"\n")
    items = _records(damaged)
    assert [type(item) for item in items] == [RawRecord] * 800 + [QuarantineRecord] + [RawRecord] * 5
    assert items[800].error.startswith("invalid UTF-8") and {item.encoding for item in items[801:]} == {"utf-8"}


def test_big5_without_declaration_is_not_taken_for_gb18030():
    # GB18030 decodes nearly any Big5 byte pair, so "it decodes" is not enough: the detector
    # must rank the readings, and Big5-HKSCS keeps 𨋢.
    data = "各位住戶：由於𨋢要維修，本週六上午九時至下午五時暫停服務，不便之處，敬請原諒。".encode("big5hkscs")
    text, detection = decode_document(data)
    assert detection.encoding == "big5hkscs"
    assert "𨋢" in text


def test_declared_big5_uses_the_hkscs_superset():
    page = '<html><head><meta charset="big5"></head><body><p>𨋢</p></body></html>'.encode("big5hkscs")
    text, detection = decode_document(page, markup=True)
    assert (detection.encoding, detection.tried) == ("big5hkscs", ("big5hkscs",))
    assert "<p>𨋢</p>" in text


def test_http_header_charset_wins_over_the_page():
    page = '<html><head><meta charset="utf-8"></head><body><p>電梯</p></body></html>'.encode("gb18030")
    text, detection = decode_document(page, declared=("GBK",), markup=True)
    assert detection.encoding == "gb18030"
    assert "<p>電梯</p>" in text


def test_a_declaration_the_bytes_contradict_falls_through_to_detection():
    page = '<html><head><meta charset="utf-8"></head><body><p>各位住戶：由於𨋢要維修，本週六暫停服務。</p></body></html>'.encode("big5hkscs")
    text, detection = decode_document(page, markup=True)
    assert detection.encoding == "big5hkscs"
    assert detection.tried == ("utf-8", "big5hkscs", "gb18030")
    assert "𨋢" in text


@pytest.mark.parametrize(
    ("head", "charset"),
    [
        (b'<html><head><meta charset="Big5-HKSCS"><title>x', "Big5-HKSCS"),
        (b"<meta http-equiv='Content-Type' content='text/html; charset=gb2312'>", "gb2312"),
        (b'<?xml version="1.0" encoding="big5"?><html>', "big5"),
        (b"<html><body>no declaration</body></html>", None),
    ],
)
def test_declared_charset_in_markup(head, charset):
    assert declared_charset(head) == charset


def test_charset_aliases_map_to_superset_decoders():
    assert canonical_candidates("big5")[0] == "big5hkscs"
    assert canonical_candidates("BIG5-HKSCS")[0] == "big5hkscs"
    assert canonical_candidates("gb2312") == ("gb18030",)
    assert canonical_candidates("GBK") == ("gb18030",)
    assert canonical_candidates("no-such-charset") == ()
    assert header_charset('text/html; charset="Big5"') == "Big5"
    assert header_charset("image/png") is None


def test_binary_bytes_are_not_utf16_text():
    detection = detect(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", final=True, line_based=True)
    assert (detection.encoding, detection.error) == (None, "binary file (NUL bytes) where text was expected")


def test_a_stray_nul_in_utf8_text_does_not_make_it_utf16():
    """A fresh-user trial: an even-length English line with one NUL byte was read as UTF-16-BE
    and kept as CJK-looking garbage ("剥獩摥湴猠潦...")."""
    line = "Residents of Sha Tin say the new cycling track along the river is crowded at weekends and x\x00 and more text.\n"
    assert len(line.encode()) % 2 == 0
    assert detect(line.encode(), final=True, line_based=True).encoding == "utf-8"
    chinese = ("佢哋聽日會去旺角食飯，你嚟唔嚟呀？\x00天文台預測明日天氣炎熱。\n" * 3).encode()
    assert detect(chinese, final=True, line_based=True).encoding == "utf-8"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_still_utf16(codec):
    """Chinese UTF-16 has a NUL only at each ASCII character, fewer than the stray-NUL share
    allows, but without its NULs it is not UTF-8."""
    assert detect(NOTICE.encode(codec), final=True, line_based=True).encoding == codec
    assert detect("The MTR opened in 1979.\n".encode(codec), final=True, line_based=True).encoding == codec


def test_english_saved_as_cp1252_is_read_after_the_chinese_candidates():
    """A fresh-user trial: "Caf\xe9 au lait" was quarantined as invalid UTF-8."""
    data = "Café au lait at the Star Ferry pier, “fresh” every morning — HK$38.\nNext line.\n".encode("cp1252")
    detection = detect(data, final=True, line_based=True)
    assert detection.encoding == "cp1252" and detection.tried == ("utf-8", "big5hkscs", "gb18030", "cp1252")
    assert decode_line(data.splitlines()[0], detection)[0] == "Café au lait at the Star Ferry pier, “fresh” every morning — HK$38."


def test_damaged_big5_is_never_read_as_cp1252():
    data = NOTICE.encode("big5hkscs") + b"\xff\xfe broken\n"
    assert detect(data, final=True, line_based=True).encoding == "big5hkscs"


def test_undecodable_names_the_encodings_tried():
    text, detection = decode_document(b"<html><body><p>\xff\xff\xff</p></body></html>", markup=True)
    assert text is None
    assert detection.error == "undecodable: tried utf-8, big5hkscs, gb18030"


def test_utf8_with_one_bad_byte_stays_utf8_and_is_not_read_as_gb18030():
    good = "今日天氣好好，我哋去咗海灘玩。\n".encode() * 5
    data = good + b"\xe4\xbb bad\n" + good
    detection = detect(data, final=True, line_based=True)
    assert detection.encoding == "utf-8"
    assert decode_line(b"\xe4\xbb bad", detection) == (None, "invalid UTF-8 at byte 0: b'\\xe4\\xbb b'", None)
    # a whole document must decode entirely: quarantined with the byte named
    _, whole = decode_document(data)
    assert whole.error == "invalid UTF-8 at byte 230: b'\\xe4\\xbb b'"


def test_a_head_cut_inside_a_character_is_not_an_error():
    data = ("電梯維修\n" * 20).encode("big5hkscs")
    detection = detect(data[:-2], final=False, line_based=True)  # cut inside the last 維修
    assert detection.encoding == "big5hkscs"


def test_lines_split_on_code_unit_boundaries_across_chunks():
    # U+0A41 followed by U+3000 holds the bytes 0A 00 at an odd offset in UTF-16-LE: not a newline
    text = "ੁ　甲\n乙𨋢\r\n\n丙"
    data = text.encode("utf-16")
    detection = detect(data, final=True, line_based=True)
    lines = list(iter_encoded_lines(io.BytesIO(data), detection, limit=1000, chunk_size=3))
    assert [decode_line(line.raw, detection)[0] for line in lines] == ["ੁ　甲", "乙𨋢\r", "", "丙"]
    assert [(line.number, line.complete) for line in lines] == [(1, True), (2, True), (3, True), (4, False)]


def test_over_long_line_is_counted_not_held():
    data = b"short\n" + b"x" * 5000 + b"\nafter"
    detection = detect(data, final=True, line_based=True)
    lines = list(iter_encoded_lines(io.BytesIO(data), detection, limit=100, chunk_size=64))
    assert [(line.number, line.raw, line.size) for line in lines] == [(1, b"short", 5), (2, None, 5000), (3, b"after", 5)]


def test_valid_utf8_beats_a_mislabelled_declaration():
    # servers that add charset=ISO-8859-1 to every response, templates that kept charset=big5
    page = '<html><head><meta charset="big5"></head><body><p>港鐵新線今日通車。</p></body></html>'.encode()
    for header in ("ISO-8859-1", None):
        text, detection = decode_document(page, declared=(header,), markup=True)
        assert (detection.encoding, "<p>港鐵新線今日通車。</p>" in text) == ("utf-8", True)


def test_over_long_utf16_line_is_counted_not_held():
    data = ("short\n" + "長" * 3000 + "\nafter").encode("utf-16")
    detection = detect(data, final=True, line_based=True)
    lines = list(iter_encoded_lines(io.BytesIO(data), detection, limit=100, chunk_size=64))
    assert [(line.number, line.raw, line.size) for line in lines] == [
        (1, "short".encode("utf-16-le"), 10), (2, None, 6000), (3, "after".encode("utf-16-le"), 10)]
