"""Per-language quality signals every stage reports before and after training: perplexity on
the held-out documents of cleaned_corpus and on the assistant answers of sft_dataset's eval
split. The same two measures across base_model, sft_checkpoint and aligned_model make the
stages comparable in one table."""

from __future__ import annotations

from pathlib import Path


def corpus_heldout_blocks(corpus: str | Path, tokenizer, seq_len: int, blocks_per_lang: int = 8) -> dict:
    """{lang: (n, seq_len) blocks}: the first `blocks_per_lang` blocks of each language's
    held-out documents, in corpus order. The corpus streams past; a language stops growing
    once its blocks are full."""
    from hkgai_pipelines.training.data import _blocks, is_held_out, iter_corpus_documents

    wanted = blocks_per_lang * seq_len
    streams: dict[str, list[int]] = {}
    for doc in iter_corpus_documents(corpus):
        if not is_held_out(doc["id"]) or len(streams.get(doc["lang"], ())) >= wanted:
            continue
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"]
        streams.setdefault(doc["lang"], []).extend(ids + [tokenizer.eos_token_id])
    return {lang: b for lang, ids in streams.items() if len(b := _blocks(ids, seq_len)[:blocks_per_lang])}


def stage_perplexities(model, tokenizer, seq_len: int, corpus: str | None, sft_dataset: str | None) -> dict[str, dict[str, float]]:
    """{"corpus": {lang: ppl}, "sft_eval": {lang: ppl}} for the inputs that are given."""
    from hkgai_pipelines.training.data import perplexity_by_language

    out: dict[str, dict[str, float]] = {}
    if corpus and Path(corpus).exists():
        out["corpus"] = perplexity_by_language(model, corpus_heldout_blocks(corpus, tokenizer, seq_len))
    if sft_dataset and Path(sft_dataset).exists():
        from hkgai_pipelines.training.datasets import read_jsonl
        from hkgai_pipelines.training.sft import ConversationCollator, answer_perplexity_by_language, encode_conversation

        held = [r for r in read_jsonl(Path(sft_dataset)) if r["split"] == "eval"]
        encoded = [encode_conversation(tokenizer, r["messages"], seq_len) for r in held]
        out["sft_eval"] = answer_perplexity_by_language(model, encoded, [r["lang"] for r in held], ConversationCollator(tokenizer.pad_token_id))
    return out


def perplexity_rows(before: dict, after: dict) -> list[tuple]:
    """Rows (measure, lang, before, after) for a Markdown table, perplexities to 4 significant
    digits."""
    from hkgai_pipelines.training.runs import significant

    return [
        (measure, lang, significant(before[measure][lang]), significant(after.get(measure, {}).get(lang)))
        for measure in sorted(before)
        for lang in sorted(before[measure])
    ]
