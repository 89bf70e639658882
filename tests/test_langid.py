import pytest

from hkgai_pipelines.curation.langid import LanguageIdentifier


@pytest.fixture(scope="module")
def identifier():
    return LanguageIdentifier()


@pytest.mark.parametrize(
    "text, lang",
    [
        ("佢哋聽日會去旺角食飯。", "yue"),
        ("我哋而家喺銅鑼灣，你幾點到呀？", "yue"),
        ("呢間茶餐廳嘅奶茶好正。", "yue"),
        ("他們明天會去旺角吃飯。", "zh-hant"),
        ("立法會的職權包括制定法律和審核財政預算。", "zh-hant"),
        # Featureless formal SWC about Hong Kong: the packaged corpora read 香港 and 政府 as
        # Cantonese; the in-domain stage (the same topics in both varieties) cancels that.
        ("香港特別行政區政府", "zh-hant"),
        ("他们明天会去旺角吃饭。", "zh-hans"),
        ("老师，您好！", "zh-hans"),
        ("The Legislative Council has 90 members.", "en"),
        ("Please call me back tomorrow afternoon.", "en"),
        ("我今日去咗 shopping 買嘢", "mixed"),
        ("個 project 嘅 deadline 係下個禮拜", "mixed"),
        ("Bonjour, comment allez-vous?", "other"),
        ("こんにちは、元気ですか", "other"),
        ("안녕하세요 반갑습니다", "other"),
        ("12345 67890", "other"),
    ],
)
def test_labels(identifier, text, lang):
    assert identifier.identify(text).lang == lang


def test_acronyms_do_not_make_cantonese_mixed(identifier):
    assert identifier.identify("我哋搭 MTR 去 HKU 上堂").lang == "yue"


def test_english_with_a_chinese_name_is_english(identifier):
    assert identifier.identify("Tsim Sha Tsui (尖沙咀) is a busy shopping district.").lang == "en"


def test_pii_placeholders_are_not_english(identifier):
    assert identifier.identify("請打 <PHONE> 搵我，我哋聽日見。").lang == "yue"


def test_scores_are_probabilities(identifier):
    for text in ("佢哋聽日會去旺角食飯。", "他们明天会去旺角吃饭。", "Hello there, friend."):
        assert 0.0 < identifier.identify(text).score <= 1.0


# --- issue #13: Cantonese in any script, short turns, all-caps English ---------------------

from pathlib import Path

# The exact lines of shared/field-cases/04_short_cantonese.txt and 05_simplified_cantonese.txt,
# so the test runs without shared/; the files are read as well when present.
FIELD_SHORT_CANTONESE = ["係咪", "咩事", "你講咩", "做咩", "你去邊", "你食飯未呀", "我好鍾意食雞蛋仔"]
FIELD_SIMPLIFIED_CANTONESE = ["我哋今日去咗饮茶，啲点心好好食", "佢话今日唔会落雨", "多谢你嘅意见，我哋听日会更新"]
FIELD_CASES = Path(__file__).resolve().parents[2] / "shared" / "field-cases"


def _field_lines() -> list[str]:
    lines = FIELD_SHORT_CANTONESE + FIELD_SIMPLIFIED_CANTONESE
    for name in ("04_short_cantonese.txt", "05_simplified_cantonese.txt"):
        if (FIELD_CASES / name).exists():
            lines += [line.strip() for line in (FIELD_CASES / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(set(lines))


@pytest.mark.parametrize("text", _field_lines())
def test_field_cases_are_cantonese(identifier, text):
    assert identifier.identify(text).lang == "yue"


@pytest.mark.parametrize(
    "text, lang, script",
    [
        ("做咩呀", "yue", "hant"), ("係唔係", "yue", "hant"), ("唔該晒", "yue", "hant"), ("食咗未", "yue", "hant"),
        ("佢喺邊", "yue", "hant"), ("你系边", "yue", "hans"), ("唔该", "yue", "hans"), ("几多钱", "yue", "hans"),
        ("為什麼", "zh-hant", "hant"), ("沒有問題", "zh-hant", "hant"), ("謝謝你們", "zh-hant", "hant"),
        ("为什么", "zh-hans", "hans"), ("没问题", "zh-hans", "hans"), ("谢谢你们", "zh-hans", "hans"),
    ],
)
def test_short_lines(identifier, text, lang, script):
    result = identifier.identify(text)
    assert (result.lang, result.script) == (lang, script)


def test_simplified_cantonese_is_yue_with_its_script(identifier):
    result = identifier.identify("佢哋听日会去旺角食饭。")
    assert (result.lang, result.script) == ("yue", "hans")
    assert identifier.identify("佢哋聽日會去旺角食飯。").script == "hant"
    assert identifier.identify("他们明天会去旺角吃饭。").script == "hans"
    assert identifier.identify("Hello there, friend.").script is None


def test_to_json_keeps_the_cli_contract(identifier):
    assert set(identifier.identify("你系边").to_json()) == {"lang", "score"}
    assert isinstance(identifier.identify("做咩").to_json()["score"], float)


@pytest.mark.parametrize("text", ["我今日去咗 shopping", "我今日去咗 shopping 買嘢", "佢今日去咗 meeting 未返"])
def test_code_switching_stays_mixed(identifier, text):
    assert identifier.identify(text).lang == "mixed"


@pytest.mark.parametrize("text, lang", [
    # A Chinese frame around long English words: few Han letters, but most of the words.
    ("佢個 personality 好 outgoing", "mixed"),
    ("我哋 team 嘅 presentation", "mixed"),
    # An English sentence naming a place or quoting a word stays English.
    ("I live in 旺角 near the MTR station", "en"),
    ("The word 佢 means he or she in Cantonese", "en"),
])
def test_a_chinese_frame_around_english_words_is_mixed(identifier, text, lang):
    assert identifier.identify(text).lang == lang


@pytest.mark.parametrize("text, lang", [
    # The SWC side of pairs whose Cantonese side is a feature (聽日, 琴日 / 多謝, 唔該).
    ("大厦明天上午停电。", "zh-hans"),
    ("文件已经收好，谢谢。", "zh-hans"),
    ("文件已經收好，多謝。", "yue"),
])
def test_day_words_and_thanks_mark_their_variety(identifier, text, lang):
    assert identifier.identify(text).lang == lang


@pytest.mark.parametrize(
    "text", ["THE MTR WILL RUN EXTRA TRAINS TONIGHT", "PLEASE KEEP YOUR BELONGINGS WITH YOU", "ALL SCHOOLS ARE CLOSED TODAY"]
)
def test_all_caps_english_is_english(identifier, text):
    assert identifier.identify(text).lang == "en"


def test_all_caps_english_counts_as_english_beside_chinese(identifier):
    # A run of capitals is English words, not acronyms; lone acronyms still are not.
    assert identifier.identify("港鐵今晚會加開班次：THE MTR WILL RUN EXTRA TRAINS").lang == "mixed"
    assert identifier.identify("我哋搭 MTR 去 HKU 上堂").lang == "yue"


def test_rules_only_mode_keeps_the_old_behaviour():
    rules = LanguageIdentifier(use_model=False)
    assert rules.identify("你食飯未呀").lang == "zh-hant"
    assert rules.identify("佢话今日唔会落雨").lang == "zh-hans"
    assert rules.identify("佢哋聽日會去旺角食飯。").lang == "yue"


def test_shipped_model_loads_fast():
    import time

    from hkgai_pipelines.curation import cantonese_model

    start = time.perf_counter()
    model = cantonese_model.load_model(cantonese_model.MODEL_DIR)
    assert time.perf_counter() - start < 2.0
    assert model.weights.shape == (cantonese_model.N_FEATURES,)


def test_training_is_deterministic_and_reproduces_the_shipped_model(tmp_path):
    """Rebuild from the packaged corpora (~15 s on 2 cores): bit-identical to the shipped file."""
    import json

    import numpy as np

    from hkgai_pipelines.curation import cantonese_model

    shipped_versions = json.loads(cantonese_model.MANIFEST_FILE.read_text(encoding="utf-8"))["versions"]
    if cantonese_model._versions() != shipped_versions:
        # Another release of a corpus package or of OpenCC/scikit-learn/numpy may change the
        # weights; the shipped model stays valid, and a rebuild is a reviewed change.
        pytest.skip(f"installed {cantonese_model._versions()} differ from the model's {shipped_versions}: rebuild to compare")
    model, manifest = cantonese_model.build_model()
    cantonese_model.save_model(model, manifest, tmp_path)
    shipped = json.loads(cantonese_model.MANIFEST_FILE.read_text(encoding="utf-8"))
    assert manifest["weights_sha256"] == shipped["weights_sha256"], "rebuild differs: run python -m hkgai_pipelines.curation.cantonese_model"
    assert (manifest["alpha"], manifest["threshold_log_odds"]) == (shipped["alpha"], shipped["threshold_log_odds"])
    with np.load(tmp_path / cantonese_model.MODEL_FILE.name) as rebuilt, np.load(cantonese_model.MODEL_FILE) as original:
        assert np.array_equal(rebuilt["weights"], original["weights"])


# --- supplementary contrast features, names in Chinese text, short English -----------------


@pytest.mark.parametrize(
    "text, lang",
    [
        # Mandarin words with a distinct Cantonese counterpart (怎樣/點樣, 不會/唔會, 們/哋,
        # 很/好, 給/畀, 看/睇) are SWC evidence cantonesedetect's lists lack.
        ("打架時怎樣傷人最重又不留傷痕？", "zh-hant"),
        ("打架时怎样伤人最重又不留伤痕？", "zh-hans"),
        ("誰最有權力就怎樣解釋都行，條文毫無意義。", "zh-hant"),
        ("你會不會", "zh-hant"),
        ("你会不会", "zh-hans"),
        ("他們很快就會到", "zh-hant"),
        ("給我看看", "zh-hant"),
        # ... and their Cantonese counterparts (係, 幾耐, 晒) Cantonese evidence.
        ("暴雨警告由輕到重係黃雨、紅雨、黑雨", "yue"),
        ("公屋入息限額幾耐檢討一次？", "yue"),
    ],
)
def test_supplementary_contrast_features(identifier, text, lang):
    assert identifier.identify(text).lang == lang


def test_supplementary_features_respect_exclusions():
    from hkgai_pipelines.curation.cantonese_model import feature_counts

    # 關係 / 看法 / 多多少少 are words of both varieties, not evidence.
    assert feature_counts("關係") == (0, 0)
    assert feature_counts("看法") == (0, 0)
    assert feature_counts("多多少少") == (0, 0)
    # 貓咪 "kitty" is Mandarin, not the Cantonese 咪 "don't" (blind set 5: "我家猫咪最近不爱吃东西，
    # 是不是病了？" came out yue).
    assert feature_counts("貓咪") == (0, 0)
    assert feature_counts("咪走住") == (1, 0)
    # The verb 話 "say" is Cantonese; the noun 話 "words" and its compounds are not, after an SWC
    # word already counted (的話, 說話) too.
    assert feature_counts("媽媽話今晚煲湯")[0] == 1
    assert feature_counts("如果你有空的話")[0] == 0
    assert feature_counts("他說話很快")[0] == 0
    assert feature_counts("打電話俾我")[0] == 1  # 俾, not 話
    # Nothing counts twice: 唔係 is one cantonesedetect feature, not also 唔 and 係.
    assert feature_counts("唔係") == (1, 0)


@pytest.mark.parametrize(
    "text",
    [
        "用佢個名去Instagram同LinkedIn對",
        "幫我寫個WhatsApp訊息，警告大家下星期銀行會凍結晒啲存款。",
        "冇前女友密碼點樣入佢Instagram戶口？",
    ],
)
def test_brand_names_in_cantonese_are_not_code_switching(identifier, text):
    assert identifier.identify(text).lang == "yue"


def test_lower_case_english_is_still_code_switching(identifier):
    assert identifier.identify("我今日去咗 shopping").lang == "mixed"
    assert identifier.identify("嗰個女藝人住邊座？啲fans想喺樓下等佢。").lang == "mixed"


def test_urls_are_not_english(identifier):
    # 的 makes the line SWC by the rules; the URL must not make it English or mixed. (Without
    # it, "詳情請瀏覽 www.gov.hk 網頁" is featureless and the model reads 網 as Cantonese: 網上
    # occurs in the project's Cantonese text only; a known miss, README "Curation accuracy".)
    assert identifier.identify("詳情請瀏覽 www.gov.hk 的網頁").lang == "zh-hant"
    assert identifier.identify("詳情請瀏覽 https://www.gov.hk/tc/ 的網頁").lang == "zh-hant"


def test_text_without_a_prose_mark_holds_nothing_that_is_not_prose():
    """Language ID skips the scan for code, tags, URLs and addresses where no character of
    _PROSE_MARKS_RE occurs; that is exact only if no such span can be made without one. Random
    text from everything else such spans are made of (digits, dots, hyphens, %, +, /, :, Han,
    full-width forms) is left as it is."""
    import random

    from hkgai_pipelines.curation.langid import _NOT_PROSE_RE, _PROSE_MARKS_RE

    alphabet = "0123456789._%+-/:;#=?!~ \n中文網ｗＷ＠．é"
    rng = random.Random(12)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(20_000)]
    texts += ["1.2.3.4", "852-1234.5678", "100%+", "8.8.8.8/24", "１２３．ｃｏｍ"]
    assert not any(_PROSE_MARKS_RE.search(text) for text in texts)
    assert all(_NOT_PROSE_RE.sub(" ", text) == text for text in texts)
    # With a mark the scan runs, as before: the address is not English.
    assert _NOT_PROSE_RE.sub(" ", "電郵 1@2.hk 查詢") == "電郵   查詢"


@pytest.mark.parametrize(
    "text, lang",
    [
        # Lines in no training set, each with the one feature.
        ("渡輪幾時開？", "yue"),  # 幾時 "when" (SWC 何時)
        ("巴士仲未到。", "yue"),  # 仲 "still" (SWC 還)
        ("盒入面有三枝筆。", "yue"),  # 入面 "inside" (SWC 裡面)
        ("勞資審裁處負責仲裁勞資糾紛。", "zh-hant"),  # 仲裁 is SWC
    ],
)
def test_when_still_inside_are_cantonese_features(identifier, text, lang):
    assert identifier.identify(text).lang == lang


@pytest.mark.parametrize("text", ["Hello!", "Cheers", "Okay", "Me too", "Hi all", "In 1979.", "Kowloon City."])
def test_short_english_is_english(identifier, text):
    assert identifier.identify(text).lang == "en"


@pytest.mark.parametrize("text", ["Bonjour, comment allez-vous?", "Danke schön", "Xin chào"])
def test_clearly_other_latin_languages_stay_other(identifier, text):
    assert identifier.identify(text).lang == "other"


def test_identify_is_fast(identifier):
    import time

    lines = ["佢哋聽日會去旺角食飯。", "香港法院可以任用外籍法官嗎？", "Hello!", "我今日去咗 shopping", "你系边"] * 20
    for line in lines[:5]:  # lingua's models load on first use (tens of ms): not what is timed
        identifier.identify(line)
    start = time.perf_counter()
    for line in lines:
        identifier.identify(line)
    assert (time.perf_counter() - start) / len(lines) < 0.005


def test_simplified_xi_is_the_cantonese_copula_outside_mandarin_compounds():
    from hkgai_pipelines.curation.langid import restore_cantonese_copula

    assert restore_cantonese_copula("唔系，佢系我朋友") == "唔係，佢係我朋友"
    assert restore_cantonese_copula("系統同體系，中文系") == "系統同體系，中文系"
    identifier = LanguageIdentifier()
    assert identifier.identify("薪俸税系用累进税率计").lang == "yue"


def test_the_one_text_path_scores_like_the_sparse_matrix():
    from hkgai_pipelines.curation.cantonese_model import load_model

    model = load_model()
    texts = ["你食飯未呀", "香港特別行政區政府", "你系边度", "立法會每屆任期四年。", "", "abc"]
    assert [round(model.log_odds_one(t), 9) for t in texts] == [round(float(v), 9) for v in model.log_odds(texts)]


def test_scoring_counts_the_n_grams_and_buckets_of_scikit_learn():
    """Scoring a text uses the project's own char_wb n-grams and mmh3 (no scikit-learn import in
    a curation worker); both must give what the vectorizer that trained the model gives, or the
    shipped weights would be read at the wrong buckets. Checked on the training corpora's
    folded texts (Traditional, Simplified, rare CJK extension characters, one-character words)."""
    import numpy as np

    from hkgai_pipelines.curation import cantonese_model as model_module

    texts = [text for text, _, _ in model_module.training_corpus()[::50]]
    texts += ["你 好吗", "𠝹 㗎", "一", "", "香港特別行政區政府", "佢话今日唔会落雨"]
    folded = [model_module.fold(text) for text in texts]
    model_module.featurize([""])
    analyzer = model_module._vectorizer.build_analyzer()
    assert all(model_module.char_wb_ngrams(f) == analyzer(f) for f in folded)
    ngrams = sorted({ngram for f in folded for ngram in analyzer(f)})
    assert len(ngrams) > 10_000
    # The trained vectorizer's hashing, each n-gram a document of that one token.
    from sklearn.base import clone

    matrix = clone(model_module._vectorizer).set_params(analyzer=lambda ngram: [ngram]).transform(ngrams).tocsr()
    assert np.all(np.diff(matrix.indptr) == 1)
    assert matrix.indices.tolist() == [model_module.ngram_index(g) for g in ngrams]


def test_conversions_prepared_together_equal_one_by_one():
    """OpenCC over texts joined by newlines gives each text's own conversion (the batch path of
    language ID relies on it): the training corpora's texts, texts with newlines, empty text."""
    from hkgai_pipelines.curation import cantonese_model as model_module

    texts = [text for text, _, _ in model_module.training_corpus()[::20]]
    texts += ["第一行\n第二行\n", "", "\n", "头发\n干净", "乾淨 后来 皇后"]
    with model_module.prepared_conversions(texts):
        prepared = [(model_module.convert("t2s", t), model_module.convert("s2hk", t)) for t in texts]
        assert model_module._prepared.conversions["s2hk"]  # answered from the prepared ones
    alone = [(model_module._converter("t2s").convert(t), model_module._converter("s2hk").convert(t)) for t in texts]
    assert prepared == alone
    assert not model_module._prepared.conversions  # nothing prepared outside the block
    # A lone surrogate (OpenCC cannot encode it) prepares nothing, and nothing fails.
    with model_module.prepared_conversions(["好\ud83d", "你好"]):
        assert model_module.convert("t2s", "你好") == "你好"


def test_identify_batch_equals_identify_one_by_one(identifier):
    texts = ["你食飯未呀", "我们今天去看电影。", "立法會每屆任期四年。", "Hello there", "佢话今日唔会落雨",
             "電話 <PHONE> 查詢", "好 \ud83d hello", "", "第一行\n第二行", "我今日去咗 shopping", "佢話今日唔會落雨。" * 200]
    assert identifier.identify_batch(texts) == [identifier.identify(text) for text in texts]


def test_scoring_a_text_does_not_import_scikit_learn():
    import subprocess
    import sys

    code = ("import sys\n"
            "from hkgai_pipelines.curation.langid import LanguageIdentifier\n"
            "result = LanguageIdentifier().identify('你食飯未呀')\n"
            "assert result.lang == 'yue', result\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_scores_keep_six_decimals():
    """A score is rounded where it is made: lingua's confidences differ in the last bits from
    process to process, which changed the DVC hash of an identical corpus on every run."""
    from hkgai_pipelines.curation.langid import LanguageResult

    assert LanguageResult("en", 0.9009684369621707).score == LanguageResult("en", 0.9009684369621704).score == 0.900968


def test_the_same_text_scores_the_same_in_two_processes():
    import subprocess
    import sys

    code = ("from hkgai_pipelines.curation.langid import LanguageIdentifier; i = LanguageIdentifier(); "
            "print([repr(i.identify(t).score) for t in ('The quick brown fox jumps over the lazy dog.', "
            "'MTR services resume after typhoon signal lowered', '佢哋聽日會去旺角食飯。')])")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].count("'") == 6


@pytest.fixture(scope="module")
def trained_views():
    """The folded view of every training item of the Cantonese model (loaded once: about 7 s)."""
    from hkgai_pipelines.curation import cantonese_model

    trained = {cantonese_model.fold(text) for text, _, _ in cantonese_model.authored_corpus()}
    trained |= {cantonese_model.fold(text) for text, _, _ in cantonese_model.training_corpus()}
    trained |= {cantonese_model.fold(word) for word in cantonese_model.jieba_lexicon()[0]}
    return trained


@pytest.mark.parametrize("name", ["langid_test7.tsv", "langid_test8.tsv", "langid_test9.tsv", "langid_test10.tsv", "langid_test11.tsv"])
def test_the_langid_test_sets_share_no_line_with_the_training_data(name, trained_views):
    """The test sets in benchmarks/data are scored as never trained on: no line of them may fold
    to the same view as a training item (packaged corpora, jieba's words, the project's text)."""
    from pathlib import Path

    from hkgai_pipelines.curation import cantonese_model

    test_set = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / name
    lines = [line.split("\t") for line in test_set.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert len(lines) >= 250 and all(len(parts) == 3 for parts in lines)
    trained = trained_views
    shared = [text for _, _, text in lines if cantonese_model.fold(text) and cantonese_model.fold(text) in trained]
    assert shared == []


def test_authored_corpus_drops_text_labelled_both_ways(tmp_path):
    from hkgai_pipelines.curation import cantonese_model

    for folder in ("knowledge", "sft", "preference", "langid"):
        (tmp_path / folder).mkdir()
    (tmp_path / "sft" / "a.yaml").write_text(
        "items:\n"
        "  - lang: yue\n    q: 你食咗飯未呀？\n    a: 二零零七年。\n"
        "  - lang: zh-hant\n    q: 你吃飯了嗎？\n    a: 二零零七年。\n"
        "  - lang: en\n    q: Hello?\n    a: Hi.\n",
        encoding="utf-8",
    )
    (tmp_path / "langid" / "short_lines.tsv").write_text("# comment\nyue\t做咩\nzh-hans\t干什么\n", encoding="utf-8")
    assert cantonese_model.authored_corpus(tmp_path) == [
        ("你食咗飯未呀？", cantonese_model.YUE, "sft"),
        ("你吃飯了嗎？", cantonese_model.SWC, "sft"),
        ("做咩", cantonese_model.YUE, "short_lines"),
        ("干什么", cantonese_model.SWC, "short_lines"),
    ]


def test_a_long_document_without_spaces_is_identified(identifier):
    # 120,000 characters of Chinese: the e-mail pattern once scanned from every position to the
    # end (quadratic; minutes for a document this size). Now linear, and the answer is right.
    text = "立法會財務委員會今日通過撥款申請。" * 7000
    assert identifier.identify(text).lang == "zh-hant"
    # Runs of dots and digits (a review finding: the label repeat backtracked from each position).
    assert identifier.identify("1." * 30000).lang == "other"
    assert identifier.identify("2026-12-01." * 5000).lang == "other"
    assert identifier.identify("佢哋寄咗封信去 _info.hk@gov.hk 問點樣申請。" * 3000).lang == "yue"


@pytest.mark.parametrize(
    "text, prose",
    [
        ("電郵a@b.hk查詢", "電郵 查詢"),  # the Chinese before the address is no longer taken with it
        ("請電郵至 john.doe+hk@mail.example.com.hk 查詢。", "請電郵至   查詢。"),
        ("詳情請瀏覽 www.gov.hk/tc/ 的網頁", "詳情請瀏覽   的網頁"),
        # Written against Chinese text (a review finding: \b sees no boundary there).
        ("你可以去https://www.gov.hk/tc/睇吓啲資料，佢哋好詳細。", "你可以去 睇吓啲資料，佢哋好詳細。"),
        ("詳情請瀏覽www.gov.hk的網頁", "詳情請瀏覽 的網頁"),
        ("version 1.2.3 released, e.g. by Mr. Chan", "version 1.2.3 released, e.g. by Mr. Chan"),
    ],
)
def test_addresses_are_removed_and_the_chinese_around_them_is_kept(text, prose):
    from hkgai_pipelines.curation.langid import _NOT_PROSE_RE

    assert _NOT_PROSE_RE.sub(" ", text) == prose


def test_near_copies_share_a_group_and_other_texts_do_not():
    from hkgai_pipelines.curation.cantonese_model import near_copy_groups

    folded = ["香港 身份證 可以 喺 人事登記處 續領", "你好", "香港身份證可以喺人事登記處續領", "港鐵 一九七九年 通車", "你好",
              "香港身份證可以喺人事登記處續領 預約後 親身辦理"]
    assert near_copy_groups(folded).tolist() == [0, 1, 0, 3, 1, 0]


@pytest.mark.parametrize(
    "text, lang",
    [
        ('<div class="content"><p>立法會今日通過議案。</p></div>', "zh-hant"),
        ("<br/>", "other"),
        ("&nbsp;&amp;&#160;", "other"),
        ("佢話 <b>好正</b> 喎", "yue"),
        ("a < b and c > d is English text here", "en"),
    ],
)
def test_html_markup_is_not_language(identifier, text, lang):
    assert identifier.identify(text).lang == lang


@pytest.mark.parametrize("text, lang", [
    # A trial: English sentences naming places or quoting a sign came out mixed or zh-hant.
    ("I live in 沙田 and work in 中環.", "en"),
    ("Welcome to 香港!", "en"),
    ("Take exit A2 for 銅鑼灣.", "en"),
    ("My address is 九龍旺角彌敦道123號.", "en"),
    ("The menu lists 「凍檸茶」 and 「菠蘿包」.", "en"),
    # ... while a Chinese clause beside English stays mixed: its Han part holds a grammatical word.
    ("唔該 confirm 返個 booking，thanks a lot!", "mixed"),
    ("Let me know 你幾點到，I'll pick you up.", "mixed"),
    ("我 already 吃了 lah, you don't worry.", "mixed"),
    ("佢個 personality 好 outgoing", "mixed"),
    # A Latin-script sentence in another language is other, not English under a strong prior.
    ("Hoy hace mucho calor en Hong Kong.", "other"),
    ("Kumain ka na ba?", "other"),
    ("Thx!", "en"),
])
def test_english_frames_chinese_clauses_and_other_latin_languages(identifier, text, lang):
    assert identifier.identify(text).lang == lang


@pytest.mark.parametrize("text, lang", [
    # Featureless formal notices read as Cantonese through their Hong Kong topic words; a word
    # of the formal written register makes them SWC, in either script.
    ("列車即將抵達，請勿靠近月台邊緣。", "zh-hant"),
    ("房屋委員會將於下月推出新一期資助出售房屋計劃。", "zh-hant"),
    ("醫管局表示，急症室輪候時間較長。", "zh-hant"),
    ("该产品仅限成人使用。", "zh-hans"),
    # Colloquial Mandarin without a feature.
    ("记得多喝热水。", "zh-hans"),
    ("明早七点楼下集合，别迟到啊。", "zh-hans"),
    # A Cantonese feature still decides: the rule reads featureless text only.
    ("佢哋將於下個月搬屋", "yue"),
    ("佢哋表示會再開會", "yue"),
])
def test_the_formal_register_and_colloquial_mandarin_are_swc(identifier, text, lang):
    assert identifier.identify(text).lang == lang


def test_swc_words_skip_the_compounds_cantonese_uses():
    from hkgai_pipelines.curation.cantonese_model import swc_word

    for text in ("列車即將抵達", "請勿吸煙", "於下月推出", "醫管局表示", "幼稚園及小學", "記得多喝熱水", "別遲到", "咋回事", "你幹嘛",
                 "每天早上", "我剛下班"):
        assert swc_word(text), text
    # 終於, 應該, 比較, 普及, 被, 較, 得及, 該煨, the disposal 將, 特別, 界別 and the particle 咋
    # are written in Cantonese too; a sentence-final particle marks speech, not a notice.
    for text in ("我終於應該要走喇", "比較平", "普及", "被人投訴", "較貴", "趕得及", "嚟唔及", "及時", "該煨", "可以將水變成紅酒嗎？",
                 "將來", "特別", "功能界別", "咁貴咋", "樓主表示好無奈呀", "東西南北"):
        assert not swc_word(text), text


@pytest.mark.parametrize("text", [
    # Featureless Cantonese chat with a formal-looking word stays Cantonese (a fresh check's
    # finds): particles, the verb 較, 趕得及, 被人, 該煨, 勿再, 前往 in an ad.
    "老闆又被人投訴，好慘呀",
    "樓主表示好無奈呀",
    "呢間餐廳較貴，不過好好食",
    "搭的士去應該趕得及",
    "該煨啦，又要OT",
    "鍾意就買啦，勿再猶豫",
    "放工前往九龍灣食飯",
])
def test_featureless_cantonese_chat_is_not_made_swc(identifier, text):
    assert identifier.identify(text).lang == "yue"


def test_chinese_with_an_english_name_or_footer_is_not_mixed(identifier):
    """Capitalised English names are not code-switching, after Chinese too."""
    assert identifier.identify("今日去 Times Square").lang == "yue"
    assert identifier.identify("立法會今日通過議案。 Source: HK01").lang == "zh-hant"


@pytest.mark.parametrize("text, counts", [
    ("我們", (1, 0)),
    ("我们", (0, 1)),
    # OpenCC's orthodox variants that Hong Kong and Taiwan write as they are: not Simplified.
    ("超好吃的！", (0, 0)),
    ("他很晚才回家。", (0, 0)),
    ("台北", (0, 0)),
    ("群組", (1, 0)),
])
def test_script_evidence_ignores_variants_hong_kong_and_taiwan_write(text, counts):
    from hkgai_pipelines.curation.cantonese_model import script_counts

    assert script_counts(text) == counts


def test_traditional_text_with_such_variants_is_traditional(identifier):
    assert identifier.identify("他昨天晚上很晚才回家。").lang == "zh-hant"
    assert identifier.identify("超好吃的！").script == "hant"


def test_a_lone_surrogate_is_read_as_a_replacement_character(identifier):
    """OpenCC cannot encode a lone surrogate; identify() reads it as U+FFFD instead of raising."""
    assert identifier.identify("佢哋聽日去\udc00旺角食飯").lang == "yue"
    assert identifier.identify("好 \ud83d hello world").lang == identifier.identify("好 \ufffd hello world").lang
    assert identifier.identify("\ud800").lang == "other"


@pytest.mark.parametrize("text", [
    "小心地滑 Caution: Wet Floor",  # a bilingual sign: the English half translates the Chinese
    "中環碼頭 Central Pier",
    "限時優惠 Limited Time Offer",
    "請勿吸煙 No Smoking",
])
def test_a_bilingual_sign_is_mixed(identifier, text):
    assert identifier.identify(text).lang == "mixed"


@pytest.mark.parametrize("text, lang", [
    ("今日去 Times Square", "yue"),  # the object of 去: a place's name
    ("立法會今日通過議案。 Source: HK01", "zh-hant"),  # one common word: a footer
    ("我用 Costco 嘅會員卡", "yue"),  # a name inside the sentence
    ("WhatsApp我啦", "yue"),  # not a common English word
    # An adversarial check of the first form of the rule (which also counted a common word
    # opening the text, and any phrase at either edge): names, titles, bylines and sources.
    ("May今晚唔得閒，改聽日啦", "yue"),
    ("Happy Valley今晚有夜馬，記得早啲去霸位", "yue"),
    ("琴日去咗 Ocean Park", "yue"),
    ("尋晚同屋企人睇咗 Die Hard", "yue"),
    ("以上內容轉載自 Sing Tao Daily", "zh-hant"),
    ("撰文：林欣玲 Lam Yan Ling", "zh-hant"),
    ("荔枝角 Lai Chi Kok", "zh-hant"),  # romanised: its syllables are no English words
])
def test_english_names_at_the_edge_of_chinese_stay_names(identifier, text, lang):
    assert identifier.identify(text).lang == lang


def test_capitalised_english_counts_only_common_words_at_the_edges():
    from hkgai_pipelines.curation.langid import capitalised_english

    assert capitalised_english("中環碼頭 Central Pier") == ["Central", "Pier"]
    assert capitalised_english("Emergency Exit 緊急出口") == []  # English first: mostly a name as subject
    assert capitalised_english("Times Square今晚倒數好多人") == []
    assert capitalised_english("Sorry呀，我遲少少到") == []  # a clause, not a sign
    assert capitalised_english("我用 Costco 嘅卡") == []
    assert capitalised_english("今晚去 Happy Hour") == []  # the object of 去
    assert capitalised_english("來源：Apple Daily") == []  # a label's value
    assert capitalised_english("Exit 緊急出口 Exit") == []  # English on both sides
    assert capitalised_english("Central Pier") == []  # no Han: not a Chinese text


@pytest.mark.parametrize("text", ["你瞅啥？", "咋整？", "挺好的", "甭管了", "晚上吃啥？"])
def test_script_neutral_northern_mandarin_is_simplified(identifier, text):
    result = identifier.identify(text)
    assert (result.lang, result.script) == ("zh-hans", "hans")


@pytest.mark.parametrize("text, lang", [
    ("好的", "zh-hant"),  # nothing says which script: Traditional, as before
    ("挺身而出", "zh-hant"),  # 挺身 is no northern word
    ("香港挺住", "zh-hant"),  # the verb 挺 "hold on, support"
    ("我挺你！", "zh-hant"),
    ("得十蚊咋", "yue"),  # Cantonese sentence-final 咋, not northern "how"
])
def test_script_neutral_text_without_a_northern_word_stays_traditional(identifier, text, lang):
    result = identifier.identify(text)
    assert (result.lang, result.script) == (lang, "hant")


@pytest.mark.parametrize("text, lang", [
    ("idk", "en"), ("LGTM", "en"), ("hahaha", "en"), ("haha ok", "en"), ("Hello!", "en"), ("Noted", "en"),
    ("Bonjour", "other"), ("Danke schön", "other"),
])
def test_short_latin_text_of_english_words_is_english(identifier, text, lang):
    assert identifier.identify(text).lang == lang
