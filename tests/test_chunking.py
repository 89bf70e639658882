from hkgai_pipelines.rag.chunking import chunk_document, chunk_id, chunk_text, split_sentences


def test_sentences_split_on_cjk_and_english_punctuation():
    assert split_sentences("香港有十八區。沙田最多人！你知唔知？Sha Tin is largest. Really? Yes.") == [
        "香港有十八區。", "沙田最多人！", "你知唔知？", "Sha Tin is largest.", "Really?", "Yes.",
    ]
    assert split_sentences("佢話：「聽日見。」之後就走咗；冇再講。") == ["佢話：「聽日見。」", "之後就走咗；", "冇再講。"]
    # decimals and abbreviations without a following space do not end a sentence
    assert split_sentences("Fare is HK$5.20 today.") == ["Fare is HK$5.20 today."]


def test_chunks_respect_target_and_overlap():
    text = "第一句話很長很長。第二句話也很長。第三句。第四句話。第五句話結束。"
    assert chunk_text(text, target_chars=12, overlap_chars=5) == [
        "第一句話很長很長。", "第二句話也很長。第三句。", "第三句。第四句話。", "第四句話。第五句話結束。",
    ]


def test_english_sentences_are_joined_with_spaces():
    assert chunk_text("One two. Three four. Five six.", target_chars=20, overlap_chars=0) == ["One two. Three four.", "Five six."]


def test_title_is_carried_into_every_chunk_and_ids_are_stable():
    body = "佢哋聽日會去旺角食飯。你嚟唔嚟呀？我哋七點喺地鐵站等。"
    chunks = chunk_document("kb/a", "約食飯", body, source="kb", lang="yue", licence="x", updated_at="t", target_chars=12, overlap_chars=0)
    assert [c.text for c in chunks] == ["佢哋聽日會去旺角食飯。", "你嚟唔嚟呀？", "我哋七點喺地鐵站等。"]
    assert all(c.content.startswith("約食飯\n") for c in chunks)
    again = chunk_document("kb/a", "約食飯", body, source="kb", lang="yue", licence="x", updated_at="later", target_chars=12, overlap_chars=0)
    assert [c.id for c in chunks] == [c.id for c in again]
    assert chunks[0].id == chunk_id("kb/a", "佢哋聽日會去旺角食飯。")
    assert chunk_id("kb/b", "佢哋聽日會去旺角食飯。") != chunks[0].id
