"""A small corpus of three shards with planted duplicates, and what curating it must give:
shared by the curation engine's tests (one node and two)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

LEGCO = "立法會由九十名議員組成每屆任期四年主席由議員互選產生負責制定法律審核公共開支及批准稅收"
LEGCO_NEAR = LEGCO[:-2] + "政府"  # 0.89 similar to LEGCO
LEGCO_CHAIN = "香港特別" + LEGCO_NEAR[4:]  # 0.84 similar to LEGCO_NEAR, 0.73 to LEGCO
MTR = "The MTR opened its first line between Shek Kip Mei and Kwun Tong in October 1979."
MTR_NEAR = "The MTR opened its first line between Shek Kip Mei and Kwun Tong in October 1979 as planned."
FOOD = "佢哋聽日會去旺角食飯，你嚟唔嚟呀？"
FOOD_EXACT = "佢哋聽日會去旺角食飯 你嚟唔嚟呀"  # the same once spaces and punctuation go
WEATHER = "天文台預測明日天氣炎熱，最高氣溫約三十四度。"
OPENING = "港鐵於一九七九年通車，第一段是觀塘線。"

#: (file, lines): three shards of one source; `id: 0` in each is three different records.
SHARDS = {
    "a/part-0.jsonl": [{"id": 0, "text": LEGCO}, {"id": 1, "text": MTR}, {"id": 2, "text": "你好"}, "not json",
                       {"id": 0, "text": WEATHER}, {"id": 3, "text": FOOD}],
    "a/part-1.jsonl": [{"id": 0, "text": LEGCO_NEAR}, {"id": 1, "text": FOOD_EXACT}, {"id": 2, "text": WEATHER},
                       {"id": 3, "text": "こんにちは、元気ですか、今日は"}],
    "b/part-0.jsonl": [{"id": 0, "text": LEGCO_CHAIN}, {"text": MTR_NEAR}, {"id": 7, "text": OPENING}],
}
KEPT = ["corpus/a/part-0.jsonl:1#id=0", "corpus/a/part-0.jsonl:2#id=1", "corpus/a/part-0.jsonl:6#id=3",
        "corpus/a/part-1.jsonl:3#id=2", "corpus/b/part-0.jsonl:3#id=7"]
#: (locator, step:reason, locator of the kept record of its cluster)
REJECTED = [
    ("corpus/a/part-0.jsonl:3#id=2", "quality:too_short", None),
    # The same input id later in the same file; its text is kept from another shard below.
    ("corpus/a/part-0.jsonl:5#id=0", "repair:duplicate_id", None),
    ("corpus/a/part-1.jsonl:1#id=0", "dedup:near_duplicate", "corpus/a/part-0.jsonl:1#id=0"),
    ("corpus/a/part-1.jsonl:2#id=1", "dedup:exact_duplicate", "corpus/a/part-0.jsonl:6#id=3"),
    ("corpus/a/part-1.jsonl:4#id=3", "langid:language_other", None),
    # Below the threshold with LEGCO itself, a near-duplicate of LEGCO_NEAR: same cluster.
    ("corpus/b/part-0.jsonl:1#id=0", "dedup:near_duplicate", "corpus/a/part-0.jsonl:1#id=0"),
    ("corpus/b/part-0.jsonl:2", "dedup:near_duplicate", "corpus/a/part-0.jsonl:2#id=1"),
]


def write_corpus(folder: Path) -> Path:
    """Write SHARDS under `folder` (named `corpus`, as the locators expect)."""
    for name, lines in SHARDS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n" for line in lines),
                        encoding="utf-8")
    return folder


def read_outputs(out: Path) -> tuple[list[dict], list[dict], list[str], dict]:
    kept = pq.read_table(out / "cleaned.parquet").to_pylist()
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    quarantine = (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()
    return kept, rejected, quarantine, json.loads((out / "stats.json").read_text(encoding="utf-8"))


def summary(kept: list[dict], rejected: list[dict]) -> tuple[list[str], list[tuple]]:
    locator = {row["id"]: row["locator"] for row in kept}
    return [row["locator"] for row in kept], [
        (row["locator"], f"{row['step']}:{row['reason']}", locator.get(row["cluster_id"])) for row in rejected
    ]


def write_numbered_corpus(path: Path, lines: int) -> Path:
    """A JSONL file of `lines` numbered variants of the texts above (many near-duplicates of
    each other): enough batches to kill a run in the middle of."""
    texts = [LEGCO, MTR, FOOD, WEATHER, OPENING]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": n, "text": f"第{n}則：{texts[n % 5]}（{n * 7919 % 10007}）"}, ensure_ascii=False) + "\n"
                            for n in range(lines)), encoding="utf-8")
    return path
