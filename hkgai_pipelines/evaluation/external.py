"""External suites read from a path (the files are third-party and never copied into the project):

- Yue-ARC-C (Cantonese ARC-Challenge, MIT): four-way multiple choice, likelihood scoring;
- Yue-TruthfulQA (Cantonese TruthfulQA, MIT): MC1, the best answer against every false answer;
- HarmBench behaviours (English, MIT): the share the guardrail blocks at input.

Loaders keep every record accountable: a malformed one is quarantined with its reason, and
`records = kept + quarantined`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hkgai_pipelines.evaluation.model import EvalModel

CHOICES = ("A", "B", "C", "D")


@dataclass
class Loaded:
    items: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)

    @property
    def records(self) -> int:
        return len(self.items) + len(self.quarantined)


def load_yue_arc(path: Path) -> Loaded:
    loaded = Loaded()
    for position, row in enumerate(json.loads(Path(path).read_text(encoding="utf-8"))):
        missing = [key for key in ("question", *CHOICES, "answer") if not str(row.get(key) or "").strip()]
        if missing:
            loaded.quarantined.append({"record": position, "id": row.get("id"), "reason": f"missing {', '.join(missing)}"})
        elif row["answer"] not in CHOICES:
            loaded.quarantined.append({"record": position, "id": row.get("id"), "reason": f"answer {row['answer']!r} is not one of A-D"})
        else:
            loaded.items.append({"id": str(row.get("id") or position), "question": row["question"],
                                 "choices": [row[c] for c in CHOICES], "answer": CHOICES.index(row["answer"])})
    return loaded


def load_yue_truthfulqa(path: Path) -> Loaded:
    loaded = Loaded()
    for position, row in enumerate(json.loads(Path(path).read_text(encoding="utf-8"))):
        false = [a.strip() for a in str(row.get("false") or "").split("；") if a.strip()]
        best = str(row.get("best_answer") or "").strip()
        if not str(row.get("question") or "").strip() or not best or not false:
            loaded.quarantined.append({"record": position, "reason": "question, best_answer and at least one false answer are needed"})
            continue
        # MC1: the best answer first, then the false ones; the right choice is index 0.
        loaded.items.append({"id": f"tqa-{position}", "question": row["question"], "choices": [best, *false], "answer": 0})
    return loaded


def load_harmbench(path: Path) -> Loaded:
    loaded = Loaded()
    with open(path, encoding="utf-8", newline="") as handle:
        for position, row in enumerate(csv.DictReader(handle)):
            behavior = (row.get("Behavior") or "").strip()
            if not behavior:
                loaded.quarantined.append({"record": position, "reason": "empty Behavior"})
                continue
            context = (row.get("ContextString") or "").strip()
            loaded.items.append({"id": row.get("BehaviorID") or f"hb-{position}", "category": row.get("SemanticCategory"),
                                 "functional": row.get("FunctionalCategory"),
                                 # A contextual behaviour is asked about its context, as HarmBench does.
                                 "prompt": f"{context}\n\n---\n\n{behavior}" if context else behavior})
    return loaded


def load_external_suites(external_dir: str | None, max_items: int | None, warn: Callable[[str], None] = print
                         ) -> tuple[dict[str, list[dict]], list[dict] | None]:
    """(Cantonese multiple-choice suites by name, HarmBench behaviours or None) from a folder
    holding yue-benchmark/ and harmbench/; relative paths are from the project root. A missing
    file skips its suite with a warning; quarantined records are warned about, never dropped silently."""
    from hkgai_pipelines.settings import PROJECT_ROOT

    if not external_dir:
        return {}, None
    folder = Path(external_dir) if Path(external_dir).is_absolute() else (PROJECT_ROOT / external_dir).resolve()
    suites, harm = {}, None
    for name, loader, relative in (("yue_arc_c", load_yue_arc, "yue-benchmark/Yue-ARC-C.json"),
                                   ("yue_truthfulqa", load_yue_truthfulqa, "yue-benchmark/Yue-TruthfulQA.json")):
        if (folder / relative).exists():
            loaded = loader(folder / relative)
            if loaded.quarantined:
                warn(f"{name}: {len(loaded.quarantined)} of {loaded.records} records quarantined, e.g. {loaded.quarantined[0]}")
            suites[name] = loaded.items[:max_items] if max_items else loaded.items
        else:
            warn(f"{name}: {folder / relative} not found; suite skipped")
    if (folder / "harmbench/harmbench_behaviors_text_all.csv").exists():
        harm = load_harmbench(folder / "harmbench/harmbench_behaviors_text_all.csv").items
    return suites, harm


def score_multiple_choice(model: EvalModel, items: list[dict]) -> dict:
    """Accuracy by the highest per-token log-likelihood of a choice after the question."""
    requests = [(item["question"], choice) for item in items for choice in item["choices"]]
    scores = iter(model.loglikelihood(requests))
    correct = errored = 0
    for item in items:
        results = [next(scores) for _ in item["choices"]]
        if any(r.error for r in results):
            errored += 1
            continue
        means = [r.mean for r in results]
        correct += int(max(range(len(means)), key=means.__getitem__) == item["answer"])
    scored = len(items) - errored
    return {"items": scored, "errored": errored, "accuracy": round(100.0 * correct / scored, 1) if scored else 0.0,
            "chance": round(100.0 * sum(1 / len(i["choices"]) for i in items) / len(items), 1) if items else 0.0}


def guard_block_rate(guard, items: list[dict]) -> dict:
    """Share of harmful behaviours the guardrail blocks at input, overall and by functional
    category (copyright requests are not dangerous content and are reported apart)."""
    by_kind: dict[str, list[bool]] = {}
    for item in items:
        by_kind.setdefault(item.get("functional") or "standard", []).append(guard.check(item["prompt"]).blocked)
    harmful = [b for kind, values in by_kind.items() if kind != "copyright" for b in values]
    return {
        "items": len(harmful),
        "block_rate": round(100.0 * sum(harmful) / len(harmful), 1) if harmful else 0.0,
        **{f"block_rate_{kind}": round(100.0 * sum(values) / len(values), 1) for kind, values in sorted(by_kind.items())},
    }
