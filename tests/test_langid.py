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
