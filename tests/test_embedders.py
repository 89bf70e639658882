import numpy as np
import pytest

from hkgai_pipelines.rag.embedders import TransformerMeanPoolEmbedder


def test_use_embeddings_are_normalised_and_multilingual(use_embedder):
    vectors = use_embedder.embed(["點樣續領香港身份證？", "How do I renew my Hong Kong identity card?", "今日天氣好好"])
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the Cantonese and English questions are closer to each other than to the weather
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert use_embedder.embed([]).shape == (0, 512)


def test_sentence_transformers_directory_with_a_tiny_model(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hong": 4, "kong": 5, "mtr": 6}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    fast.save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    embedder = TransformerMeanPoolEmbedder(tmp_path)
    vectors = embedder.embed(["hong kong", "mtr"])
    assert (embedder.name, embedder.dim, vectors.shape) == (f"st:{tmp_path.name}", 16, (2, 16))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        TransformerMeanPoolEmbedder(tmp_path)
