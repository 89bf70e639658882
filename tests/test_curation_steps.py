"""Exact outputs of the repair, script, quality and dedup steps on short literal inputs."""

import numpy as np
import pytest

from hkgai_pipelines.curation.dedup import MinHasher, bucket_anchor_pairs, exact_digest, exact_key, find_duplicates, pair_similarities, shingles
from hkgai_pipelines.curation.quality import QualityFilter, QualityThresholds, score_quality
from hkgai_pipelines.curation.repair import repair_text
from hkgai_pipelines.curation.script import ScriptConverter


def test_repair_fixes_mojibake():
    assert repair_text("cafÃ©") == "café"


def test_repair_uses_nfc_and_keeps_full_width_punctuation():
    assert repair_text("e\u0301") == "é"
    assert repair_text("你好，世界！") == "你好，世界！"  # NFKC would turn ，！ into ,!


def test_repair_strips_controls_and_collapses_whitespace():
    assert repair_text("a\x00b\u200bc\t\t d\u3000e\r\n\n\n\nf ") == "abc d e\n\nf"


def test_script_policy_converts_simplified_to_hk_traditional():
    converter = ScriptConverter({"zh-hans": "s2hk", "yue": "keep"})
    assert converter.convert("香港的公共图书馆", "zh-hans") == "香港的公共圖書館"
    assert converter.convert("图书馆", "yue") == "图书馆"
    with pytest.raises(ValueError, match="unknown script actions"):
        ScriptConverter({"zh-hans": "t2s"})


QUALITY = QualityFilter(QualityThresholds())


@pytest.mark.parametrize(
    "text, reason",
    [
        ("你好", "too_short"),
        ("x" * 100_001, "too_long"),
        ("!!!!!!?????....", "low_letter_ratio"),
        ("呢度啲嘢食好正😋😋😋😋😋", "high_symbol_ratio"),
        ("第1234號巴士路線", "high_digit_ratio"),
        ("版權所有 © 2026 本網站\n私隱政策 使用條款", "boilerplate"),
        ("\n".join(["買一送一大減價今日最後一日"] * 6), "duplicate_lines"),
        ("香港" * 40, "repeated_2gram"),
    ],
)
def test_quality_drop_reasons(text, reason):
    assert QUALITY.decide(score_quality(text)) == reason


@pytest.mark.parametrize(
    "text",
    [
        "老師，您好！",
        "係呀\n係呀\n係呀\n好呀",  # short repetition is conversation, not spam
        "立法會共有九十名議員，其中選舉委員會界別選出四十名、功能界別選出三十名、地方選區直接選舉產生二十名。",
        "The Legislative Council has 90 members and a term of four years.",
    ],
)
def test_quality_keeps_real_text(text):
    assert QUALITY.decide(score_quality(text)) is None


def test_scores_count_characters_not_whitespace_words():
    scores = score_quality("港鐵 於 1979 年通車")
    assert scores["chars"] == 10
    assert scores["digit_ratio"] == pytest.approx(4 / 10)


def test_character_classes_and_ngram_fractions_exact_values():
    # Letters (價錢ＡＢabc), digits (① is one: str.isdigit, Numeric_Type=Digit; ½ is not),
    # symbols (＄€😋: category S*); ½ and "_" are none of them; the no-break space is space.
    scores = score_quality("價錢½①_\u00a0ＡＢ＄€😋 abc 123")
    assert scores["chars"] == 16
    assert (scores["letter_ratio"], scores["digit_ratio"], scores["symbol_ratio"]) == (7 / 16, 4 / 16, 3 / 16)
    # No 2-gram repeats, so no longer one does: every fraction 0.
    once = score_quality("立法會共有九十名議員")
    assert [once[f"top_{k}gram_fraction"] for k in (2, 3, 4)] == [0.0, 0.0, 0.0]
    # "香港人" three times: the 2-, 3- and 4-gram fractions counted.
    again = score_quality("香港人愛香港人愛香港人")
    assert [again[f"top_{k}gram_fraction"] for k in (2, 3, 4)] == [6 / 11, 9 / 11, 8 / 11]
    assert (again["dup_line_fraction"], score_quality("好呀\n好呀\n唔好")["dup_line_fraction"]) == (0.0, 2 / 3)


def test_replacement_character_share():
    from hkgai_pipelines.curation.repair import replacement_char_share

    assert replacement_char_share("你好") == 0.0
    assert replacement_char_share("") == 0.0
    assert replacement_char_share("\ufffd\ufffd 你好") == 0.5


def test_exact_key_ignores_punctuation_case_and_spacing():
    assert exact_key("你好！") == exact_key("你好 !")
    assert exact_key("Hello, World") == exact_key("hello world")
    assert exact_key("你好") != exact_key("您好")


def test_shingles_use_characters_for_chinese_and_words_for_english():
    assert shingles("香港人口", 3) == ["香港人", "港人口"]
    assert shingles("the MTR opened in 1979", 3) == ["the mtr opened", "mtr opened in", "opened in 1979"]
    assert shingles("你好", 3) == ["你好"]


def test_dedup_keeps_first_and_records_cluster():
    verdicts = find_duplicates([
        ("a", "香港特別行政區的行政長官由選舉委員會選出，任期五年。"),
        ("b", "香港特別行政區的行政長官由選舉委員會選出，任期為五年。"),
        ("c", "香港特別行政區的行政長官由選舉委員會選出 任期五年"),
        ("d", "立法會每屆任期四年，主席由議員互選產生。"),
        ("e", "The MTR opened its first line between Shek Kip Mei and Kwun Tong in October 1979."),
        ("f", "The MTR opened its first line between Shek Kip Mei and Kwun Tong in October, 1979!"),
        ("g", "The MTR opened its first line between Shek Kip Mei and Kwun Tong in October 1979 as planned."),
    ])
    assert sorted(verdicts) == ["b", "c", "f", "g"]
    assert (verdicts["b"].kind, verdicts["b"].duplicate_of) == ("near", "a") and verdicts["b"].similarity >= 0.8
    assert (verdicts["c"].kind, verdicts["c"].duplicate_of, verdicts["c"].similarity) == ("exact", "a", 1.0)
    assert (verdicts["f"].kind, verdicts["f"].duplicate_of) == ("exact", "e")
    assert (verdicts["g"].kind, verdicts["g"].duplicate_of) == ("near", "e")


def test_dedup_clusters_are_connected_components_kept_by_order():
    """A chain a ~ b ~ c with a and c below the threshold (0.73) is one cluster: a is kept and
    c goes too. The greedy check of before compared c with kept records only and kept it."""
    a = "立法會由九十名議員組成每屆任期四年主席由議員互選產生負責制定法律審核公共開支及批准稅收"
    b = a[:-2] + "政府"
    c = "香港特別" + b[4:]
    hasher = MinHasher()
    signatures = hasher.signatures([a, b, c])
    assert pair_similarities(signatures[0], signatures[1:]).tolist() == [0.890625, 0.734375]  # a~b, a~c
    assert pair_similarities(signatures[1], signatures[2:]).tolist() == [0.8359375]  # b~c
    verdicts = find_duplicates([("a", a), ("b", b), ("c", c)], threshold=0.8)
    assert {k: (v.kind, v.duplicate_of, v.similarity) for k, v in verdicts.items()} == {
        "b": ("near", "a", 0.890625), "c": ("near", "a", 0.8359375),
    }


def test_bucket_anchor_pairs_pair_each_bucket_member_with_the_first():
    """Records 10, 11, 12, 13 with band hashes [1, 7], [2, 9], [1, 8], [1, 9], rows given out
    of order: band 0 buckets {10, 12, 13}, band 1 {11, 13}."""
    orders = np.array([10, 11, 12, 13], dtype=np.int64)
    bands = np.array([[1, 7], [2, 9], [1, 8], [1, 9]], dtype=np.uint64)
    shuffled = np.array([7, 0, 5, 2, 1, 6, 3, 4])
    anchor, member = bucket_anchor_pairs(np.tile([0, 1], 4)[shuffled], bands.ravel()[shuffled], np.repeat(orders, 2)[shuffled])
    assert sorted(zip(anchor.tolist(), member.tolist())) == [(10, 12), (10, 13), (11, 13)]


def test_batch_keys_equal_one_record_at_a_time():
    """`MinHasher.keys` (rensa's batch call, one fold per text) gives what one RMinHash per
    text and `exact_digest` gave, so part files and persisted LSH indexes keep their values."""
    from rensa import RMinHash

    hasher = MinHasher()
    texts = ["唔該晒你幫我哋托一托啲嘢啊！", "The MTR will run extra trains tonight.", "", "a", "好", "你好 !"]
    exact, bands = hasher.keys(texts)
    for text, digest, row in zip(texts, exact, bands):
        one = RMinHash(num_perm=hasher.num_perm, seed=hasher.seed)
        one.update(shingles(text, hasher.ngram))
        assert digest == exact_digest(text)
        assert np.array_equal(row, hasher.band_hashes(np.asarray(one.digest(), dtype=np.uint32)[None, :])[0])
    assert exact[5] == exact_digest("你好！")
    assert hasher.signatures([]).shape == (0, 128)


def test_signatures_are_the_same_across_digest_chunks(monkeypatch):
    """`MinHasher.signatures` hashes DIGEST_CHUNK texts at a time (bounding the Python ints
    rensa's rows come back as): the rows are those of one call, in input order, across chunk
    boundaries and with a last partial chunk."""
    from hkgai_pipelines.curation import dedup

    hasher = MinHasher()
    texts = [f"第{i}句：我哋聽日去飲茶，順便買啲嘢。" if i % 3 else f"Sentence {i} of the MTR notice." for i in range(11)]
    whole = hasher.signatures(texts)
    monkeypatch.setattr(dedup, "DIGEST_CHUNK", 4)
    chunked = hasher.signatures(iter(texts))
    assert chunked.shape == (11, 128) and chunked.dtype == np.uint32
    assert np.array_equal(chunked, whole)
    assert np.array_equal(chunked[7], hasher.signature(texts[7]))


def test_band_hashes_depend_on_every_row_of_the_band():
    hasher = MinHasher(num_perm=8, num_bands=2)
    signatures = np.array([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 9]], dtype=np.uint32)
    hashes = hasher.band_hashes(signatures)
    assert hashes[0, 0] == hashes[1, 0] and hashes[0, 1] != hashes[1, 1]


@pytest.mark.parametrize(
    "text, expected",
    [
        # UTF-8 decoded as GBK and saved again (shared/field-cases/12): the round trip is exact.
        ("鎴戝搵浠婃棩鍘诲挆椋茶尪", ("我哋今日去咗飲茶", "repaired")),
        # The same with full-width punctuation, whose bytes were lost: mojibake, not repairable.
        ("浠婂ぉ涓嬪崍鍙戝竷鏂扮殑閫氱煡锛岀郴缁熺淮鎶ら\ufffd氱煡", ("浠婂ぉ涓嬪崍鍙戝竷鏂扮殑閫氱煡锛岀郴缁熺淮鎶ら\ufffd氱煡", "mojibake")),
        # Genuine Chinese in either script, and Hong Kong characters, are left alone.
        ("今天天气很好，我们去公园。", ("今天天气很好，我们去公园。", None)),
        ("立法會共有九十名議員。", ("立法會共有九十名議員。", None)),
        ("𨋢壞咗，𠵱家行樓梯。", ("𨋢壞咗，𠵱家行樓梯。", None)),
        # Genuine text whose GBK bytes happen to form UTF-8 ("靚仔靚女" -> "谥J谤k") is not mojibake.
        ("靚仔靚女", ("靚仔靚女", None)),
        ("靚唔靚呀？", ("靚唔靚呀？", None)),
        # Mojibake pasted into correct text is repaired in place, or rejected when bytes were lost.
        ("今日新聞：浠婂ぉ涓嬪崍鍙戝竷鏂扮殑閫氱煡。請留意。", ("今日新聞：今天下午发布新的通知。請留意。", "repaired")),
        ("今日新聞：浠婂ぉ涓嬪崍鍙戝竷鏂扮殑閫氱煡锛岀郴缁熺淮鎶\ufffd。請留意。",
         ("今日新聞：浠婂ぉ涓嬪崍鍙戝竷鏂扮殑閫氱煡锛岀郴缁熺淮鎶\ufffd。請留意。", "mojibake")),
        # Exact mojibake in English text is repaired although the whole text's lossy round trip
        # looks plausible (its ASCII survives): it was rejected whole as mojibake.
        ("Sha Tin is big.鎴戝搵浠婃棩鍘诲挆椋茶尪。", ("Sha Tin is big.我哋今日去咗飲茶。", "repaired")),
        ("Café — 鎴戝搵浠婃棩鍘诲挆椋茶尪", ("Café — 我哋今日去咗飲茶", "repaired")),
        # UTF-8 read as Big5 with errors replaced lost half its bytes: mojibake, even inside a page
        # whose share of U+FFFD stays below the replacement-character limit.
        ("立法會共有九十名議員。今日天氣好好，我哋去飲茶。������隞���亙�餃��憌脰��。請留意。",
         ("立法會共有九十名議員。今日天氣好好，我哋去飲茶。������隞���亙�餃��憌脰��。請留意。", "mojibake")),
        # A stray bad byte or two in genuine text is not mojibake.
        ("今日��天氣好好，𨋢壞咗", ("今日��天氣好好，𨋢壞咗", None)),
    ],
)
def test_chinese_mojibake(text, expected):
    from hkgai_pipelines.curation.repair import repair_chinese_mojibake

    assert repair_chinese_mojibake(text) == expected


def test_mojibake_in_a_long_page_is_found_among_its_segments():
    """A page of genuine lines whose whole-text round trip leaves stray Han characters (so
    the segments are judged) repairs the one mojibake line and leaves the others byte for
    byte; the segments whose joined round trip shows nothing are skipped (`_worth_judging`)."""
    from hkgai_pipelines.curation.repair import _worth_judging, repair_chinese_mojibake

    genuine = "立法會共有九十名議員。\n今日天氣好好，我哋去飲茶。\n𨋢壞咗，𠵱家行樓梯。\n"
    page = genuine * 20 + "鎴戝搵浠婃棩鍘诲挆椋茶尪\n" + genuine
    assert repair_chinese_mojibake(page) == (genuine * 20 + "我哋今日去咗飲茶\n" + genuine, "repaired")
    assert list(_worth_judging(["鎴戝搵浠婃棩鍘诲挆椋茶尪", "今日天氣好好", "好\ufffd嘢"])) == [True, False, True]


def test_script_policy_follows_the_script_of_cantonese():
    converter = ScriptConverter({"zh-hans": "s2hk", "yue": "keep", "yue-hans": "s2hk"})
    assert converter.convert("我哋今日去咗饮茶", "yue", "hans") == "我哋今日去咗飲茶"
    assert converter.convert("我哋今日去咗飲茶", "yue", "hant") == "我哋今日去咗飲茶"


def test_boilerplate_lines_are_removed_not_the_document():
    from hkgai_pipelines.curation.quality import strip_boilerplate_lines

    page = "首頁\n分享到 Facebook\n天文台預測，明日天氣炎熱。\n版權所有 © 2024 某某新聞\n私隱政策"
    assert strip_boilerplate_lines(page) == ("首頁\n天文台預測，明日天氣炎熱。", 3)
    # A sentence that mentions cookies is content.
    sentence = "Bake the cookies for ten minutes, then let them cool."
    assert strip_boilerplate_lines(sentence) == (sentence, 0)
    assert strip_boilerplate_lines("版權所有 © 2026 本網站\n私隱政策 使用條款") == ("", 2)
    # A forum thread: the reply bar under every post goes, the posts stay.
    thread = "樓主：今晚邊度食飯好？\n回覆 引用 讚好\n去旺角啦，多嘢揀。\n回覆 引用 讚好\nReply · Quote · Like"
    assert strip_boilerplate_lines(thread) == ("樓主：今晚邊度食飯好？\n去旺角啦，多嘢揀。", 3)
    assert strip_boilerplate_lines("I like it") == ("I like it", 0)


def test_sketches_hold_the_signatures_and_compare_as_numpy_does(monkeypatch):
    """`MinHasher.sketches` (rensa objects, for verification) hold `signatures`' values, and
    `sketch_similarities` equals `pair_similarities` exactly, across a digest chunk boundary."""
    from hkgai_pipelines.curation import dedup
    from hkgai_pipelines.curation.dedup import sketch_similarities

    hasher = MinHasher()
    a = "立法會由九十名議員組成每屆任期四年主席由議員互選產生負責制定法律審核公共開支及批准稅收"
    texts = [a, a[:-2] + "政府", "香港特別" + a[4:], "The MTR will run extra trains tonight.", "", "好"] * 3
    signatures = hasher.signatures(texts)
    monkeypatch.setattr(dedup, "DIGEST_CHUNK", 4)
    sketches = hasher.sketches(iter(texts))
    assert np.array_equal(np.array([s.digest() for s in sketches], dtype=np.uint32), signatures)
    pairs = [(i, j) for i in range(len(texts)) for j in range(len(texts))]
    got = sketch_similarities([sketches[i] for i, _ in pairs], [sketches[j] for _, j in pairs])
    want = np.array([pair_similarities(signatures[i], signatures[j:j + 1])[0] for i, j in pairs])
    assert np.array_equal(got, want) and {0.890625, 0.734375, 1.0} <= set(got.tolist())


def test_a_batch_gives_the_rows_of_its_records_one_by_one():
    """process_batch runs language ID for the whole batch at once (identify_batch); every row
    must be what `steps` gives the record alone: kept, rejected at each step, quarantined."""
    from hkgai_pipelines.curation.pipeline import CurationPipeline
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT
    from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord

    pipeline = CurationPipeline(load_curation_params(PROJECT_ROOT / "params.yaml"))
    texts = ["你食飯未呀，今晚一齊去旺角食飯好唔好？", "我们今天去看电影，然后一起吃饭。", "Hello there, this is an English sentence.",
             "Bonjour tout le monde, comment allez-vous aujourd'hui ?", "請致電 9123 4567 查詢詳情，謝謝。", "", "好",
             "鎴戝搵浠婃棩鍘诲挆椋茶尪", "第一行係咁\n第二行都係咁"]
    items = [RawRecord(text=text, source="s", licence="l", locator=f"f:{n}", id=f"r{n}") for n, text in enumerate(texts)]
    items.append(QuarantineRecord("f", 3, "bad line", "s", 1))
    batch = pipeline.process_batch((item, order) for order, item in enumerate(items))
    alone = [pipeline.steps(item, order) for order, item in enumerate(items)]
    for row in batch:
        row.pop("exact", None), row.pop("bands", None)
    assert batch == alone
    assert {row.get("step") for row in batch} >= {None, "langid", "repair", "quality"}
