"""sft_dataset and preference_dataset: chat-format records built from project-authored data.

SFT records come from the authored Hong Kong Q&A (`data/sft/hk_qa.yaml`), general
instructions, and one pair per knowledge document ("tell me about <title>" -> its opening
sentences). Preference records are (prompt, chosen = correction, rejected = original) from
the Q-A-C items in `data/preference/qac.yaml`. Both are split into train and eval by a stable
hash of the record id, so a record never moves between splits.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import yaml

from hkgai_pipelines.rag.chunking import split_sentences
from hkgai_pipelines.rag.knowledge import KnowledgeDocument

ABOUT_PROMPT = {
    "en": "Tell me about: {title}",
    "yue": "講下「{title}」。",
    "zh-hant": "請介紹「{title}」。",
    "zh-hans": "请介绍「{title}」。",
}


def record_id(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


def split_of(identifier: str, eval_share: float) -> str:
    bucket = int(hashlib.sha256(identifier.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if bucket < eval_share else "train"


def _data(*parts: str) -> dict:
    return yaml.safe_load(resources.files("hkgai_pipelines").joinpath("data", *parts).read_text(encoding="utf-8"))


def _authored_sft() -> tuple[list[dict], list[dict]]:
    """(Hong Kong Q&A items, general instructions) from every data/sft/hk_qa*.yaml."""
    folder = resources.files("hkgai_pipelines").joinpath("data", "sft")
    items: list[dict] = []
    general: list[dict] = []
    for name in sorted(entry.name for entry in folder.iterdir() if entry.name.startswith("hk_qa") and entry.name.endswith(".yaml")):
        data = _data("sft", name)
        items.extend(data.get("items") or [])
        general.extend(data.get("general") or [])
    return items, general


def sft_records(documents: list[KnowledgeDocument], eval_share: float = 0.1) -> list[dict]:
    items, general = _authored_sft()
    rows = []
    for kind, entries in (("hk_qa", items), ("general", general)):
        for item in entries:
            rows.append({"source": kind, "lang": item["lang"], "doc": item.get("doc"), "prompt": item["q"], "answer": item["a"]})
    for doc in documents:
        sentences = split_sentences(doc.body)
        answer = (" " if doc.lang == "en" else "").join(sentences[:2])
        prompt = ABOUT_PROMPT.get(doc.lang, ABOUT_PROMPT["en"]).format(title=doc.title)
        rows.append({"source": "knowledge", "lang": doc.lang, "doc": doc.doc_id, "prompt": prompt, "answer": answer})
    records = []
    for row in rows:
        rid = record_id(row["source"], row["prompt"], row["answer"])
        records.append({
            "id": rid, **row, "split": split_of(rid, eval_share),
            "messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["answer"]}],
        })
    return records


def _authored_qac() -> list[dict]:
    folder = resources.files("hkgai_pipelines").joinpath("data", "preference")
    items: list[dict] = []
    for name in sorted(entry.name for entry in folder.iterdir() if entry.name.startswith("qac") and entry.name.endswith(".yaml")):
        items.extend(_data("preference", name)["items"])
    return items


def preference_records(eval_share: float = 0.1) -> list[dict]:
    records = []
    for item in _authored_qac():
        rid = record_id("qac", item["q"], item["a"], item["c"])
        records.append({
            "id": rid, "lang": item["lang"], "kind": item["kind"], "split": split_of(rid, eval_share),
            "prompt": [{"role": "user", "content": item["q"]}],
            "chosen": [{"role": "assistant", "content": item["c"]}],
            "rejected": [{"role": "assistant", "content": item["a"]}],
        })
    return records


def write_jsonl(records: list[dict], path: Path) -> None:
    from hkgai_pipelines.sources.lake import atomic_path

    with atomic_path(Path(path)) as temp:
        temp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
