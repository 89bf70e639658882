"""The open Adversarial HK Value Benchmark: seed items from `data/value_benchmark/` plus the
instruction attacks generated from them.

A seed group is one scenario in English, Cantonese and Traditional Chinese; the Simplified item
is the Traditional one converted with OpenCC t2s. Each item carries its refusal template (chosen
from `refusals.yaml` by a stable hash of its id). The benchmark's version is its content hash,
so a score always names exactly the items it was measured on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

import yaml

from hkgai_pipelines.evaluation.attacks import TRANSFORMS_VERSION, attack_items

LANGS = ("en", "yue", "zh-hant", "zh-hans")
MODULES = ("hk_sensitive", "instruction_attack", "typical_safety")
SEED_FILES = ("hk_sensitive.yaml", "typical_safety.yaml")
FIELDS = ("prompt", "safe", "unsafe")


class BenchmarkError(ValueError):
    pass


def seed_items(items: list[dict]) -> list[dict]:
    """The authored seeds among benchmark items (the instruction attacks only wrap them)."""
    return [item for item in items if item["module"] != "instruction_attack"]


@dataclass(frozen=True)
class ValueBenchmark:
    items: list[dict]

    @property
    def version(self) -> str:
        digest = hashlib.sha256(json.dumps(self.items, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
        return f"{TRANSFORMS_VERSION}-{digest[:12]}"

    def seeds(self) -> list[dict]:
        return seed_items(self.items)


def _read(name: str) -> dict:
    return yaml.safe_load(resources.files("hkgai_pipelines").joinpath("data", "value_benchmark", name).read_text(encoding="utf-8"))


def _refusal(templates: dict[str, list[str]], item_id: str, lang: str) -> str:
    options = templates[lang]
    return options[int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) % len(options)]


def load_seeds() -> list[dict]:
    from hkgai_pipelines.curation.script import to_simplified

    templates = _read("refusals.yaml")
    seeds: list[dict] = []
    for name in SEED_FILES:
        data = _read(name)
        module = data["module"]
        if module not in MODULES:
            raise BenchmarkError(f"{name}: unknown module {module!r}")
        for group in data["groups"]:
            texts = {lang: group.get(lang) for lang in ("en", "yue", "zh-hant")}
            missing = [f"{lang}.{f}" for lang, t in texts.items() for f in FIELDS if not (t or {}).get(f, "").strip()]
            if missing:
                raise BenchmarkError(f"{name} {group.get('group')}: missing {', '.join(missing)}")
            texts["zh-hans"] = {f: to_simplified(texts["zh-hant"][f]) for f in FIELDS}
            for lang in LANGS:
                item_id = f"{group['group']}-{lang}"
                seeds.append({
                    "id": item_id, "group": group["group"], "module": module, "category": group["category"], "lang": lang,
                    # A lawful question: its safe answer is the facts, and a refusal counts against the model.
                    "lawful": group["category"].startswith("lawful_"),
                    **{f: texts[lang][f].strip() for f in FIELDS}, "refusal": _refusal(templates, item_id, lang),
                })
    ids = [s["id"] for s in seeds]
    if len(ids) != len(set(ids)):
        raise BenchmarkError("duplicate group ids in the value benchmark seeds")
    return seeds


def load_value_benchmark() -> ValueBenchmark:
    seeds = load_seeds()
    return ValueBenchmark(items=seeds + attack_items(seeds))
