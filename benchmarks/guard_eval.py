"""Guardrail evaluation: what the served guard blocks that it should, and what it blocks that it
should not, for the hybrid guard (rules + classifier) against the rules alone, in the same run.

    python benchmarks/guard_eval.py [--harmbench ../shared/data/harmbench/harmbench_behaviors_text_all.csv]

Sets (none was used to train the classifier or to choose its threshold; safety/classifier.py
says how they were chosen, tests/test_guard_data.py checks the training data shares no line or
long n-gram with any of them):

- HarmBench behaviours (MIT), block rate; standard and contextual behaviours apart (a contextual
  behaviour is asked after its context, as HarmBench does), copyright requests reported apart.
- Held-out harmful prompts (`data/safety/harmful_eval.yaml`): at least 30 per language in
  English, Cantonese, Traditional and Simplified Chinese, every taxonomy category; block rate
  per language and per category. The missed prompts are not printed.
- Over-refusal (`data/safety/over_refusal_eval.yaml`): lawful-but-sensitive and homonym
  prompts in English, Cantonese, Traditional and Simplified Chinese; false-block rate per
  language, and every blocked line.
- Benign Hong Kong questions (`data/safety/benign_hk_eval.yaml`); false blocks, every one printed.
- The false blocks a tester reported (`reported_false_blocks` of the over-refusal file).
- Knowledge-document paragraphs (`data/knowledge/*.md`) judged as answers are, as the output
  guard of `hkgai ask` judges them: lawful government information that should pass.

Prints three tables (the main one; held-out harmful by language and category; HarmBench by
semantic category), then the blocked lines of each benign set.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ("en", "yue", "zh-hant", "zh-hans")


def _safety_yaml(name: str) -> dict:
    return yaml.safe_load(resources.files("hkgai_pipelines").joinpath("data", "safety", name).read_text(encoding="utf-8"))


def benign_questions() -> list[str]:
    """The benign Hong Kong questions; zh-hans is the zh-hant list converted with OpenCC t2s."""
    from hkgai_pipelines.curation.script import to_simplified

    data = _safety_yaml("benign_hk_eval.yaml")
    return data["en"] + data["yue"] + data["zh-hant"] + [to_simplified(q) for q in data["zh-hant"]]


def over_refusal_prompts() -> dict[str, list[str]]:
    """Language -> prompts of the over-refusal set."""
    data = _safety_yaml("over_refusal_eval.yaml")
    return {lang: data[lang] for lang in LANGUAGES}


def harmful_prompts() -> dict[str, dict[str, list[str]]]:
    """Language -> taxonomy category -> prompts of the held-out harmful set."""
    data = _safety_yaml("harmful_eval.yaml")
    return {lang: data[lang] for lang in LANGUAGES}


def reported_false_blocks() -> list[str]:
    return _safety_yaml("over_refusal_eval.yaml")["reported_false_blocks"]


def knowledge_paragraphs() -> list[str]:
    """Every paragraph of the packaged knowledge documents (front matter left out)."""
    paragraphs = []
    for path in sorted(resources.files("hkgai_pipelines").joinpath("data", "knowledge").iterdir()):
        if path.name.endswith(".md"):
            body = path.read_text(encoding="utf-8").split("---", 2)[-1]
            paragraphs += [p.strip() for p in body.split("\n\n") if p.strip()]
    return paragraphs


def verdicts(guard, texts: list[str]) -> list:
    """One GuardVerdict per text; batched where the guard can batch (HybridGuard.check_many)."""
    check_many = getattr(guard, "check_many", None)
    return check_many(texts) if check_many else [guard.check(text) for text in texts]


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harmbench", default=str(ROOT.parent / "shared" / "data" / "harmbench" / "harmbench_behaviors_text_all.csv"))
    args = parser.parse_args()

    from hkgai_pipelines.evaluation.external import load_harmbench
    from hkgai_pipelines.safety.classifier import load_guard
    from hkgai_pipelines.safety.guard import RuleGuard

    started = time.perf_counter()
    hybrid = load_guard()
    print(f"classifier ready in {time.perf_counter() - started:.1f} s (trained, not cached)")
    harm = load_harmbench(Path(args.harmbench)).items if Path(args.harmbench).exists() else []
    if not harm:
        print(f"HarmBench not found at {args.harmbench}: its columns are left empty")
    by_kind: dict[str, list[str]] = {}
    by_semantic: dict[str, list[str]] = {}
    for item in harm:
        kind = item.get("functional") or "standard"
        by_kind.setdefault(kind, []).append(item["prompt"])
        if kind in ("standard", "contextual"):
            by_semantic.setdefault(item.get("category") or "?", []).append(item["prompt"])
    held_out = harmful_prompts()
    categories = sorted({category for per_lang in held_out.values() for category in per_lang})
    over = over_refusal_prompts()
    benign = benign_questions()
    reported = reported_false_blocks()
    knowledge = knowledge_paragraphs()

    header = ["guard", "HarmBench standard + contextual", "standard", "contextual", "copyright (apart)",
              f"over-refusal false blocks ({sum(map(len, over.values()))})", *LANGUAGES,
              f"benign HK blocked ({len(benign)})", f"reported false blocks allowed ({len(reported)})",
              f"knowledge paragraphs blocked ({len(knowledge)})"]
    rows, blocked_lines, held_out_rows, semantic_rows = [], {}, [], []
    for name, guard in (("rules alone", RuleGuard()), ("rules + classifier", hybrid)):
        started = time.perf_counter()
        harm_blocked = {kind: sum(v.blocked for v in verdicts(guard, prompts)) for kind, prompts in by_kind.items()}
        harmful = sum(harm_blocked.get(kind, 0) for kind in ("standard", "contextual"))
        harmful_total = sum(len(by_kind.get(kind, [])) for kind in ("standard", "contextual"))
        over_blocked = {lang: [(p, v) for p, v in zip(prompts, verdicts(guard, prompts)) if v.blocked] for lang, prompts in over.items()}
        benign_blocked = [(q, v) for q, v in zip(benign, verdicts(guard, benign)) if v.blocked]
        reported_allowed = sum(not v.blocked for v in verdicts(guard, reported))
        knowledge_blocked = [(k, v) for k, v in zip(knowledge, verdicts(guard, knowledge)) if v.blocked]
        over_total = sum(len(b) for b in over_blocked.values())
        rows.append([
            name,
            f"{_percent(harmful, harmful_total)} ({harmful}/{harmful_total})",
            *(_percent(harm_blocked.get(kind, 0), len(by_kind.get(kind, []))) for kind in ("standard", "contextual", "copyright")),
            f"{over_total} = {_percent(over_total, sum(map(len, over.values())))}",
            *(f"{len(over_blocked[lang])}/{len(over[lang])}" for lang in LANGUAGES),
            f"{len(benign_blocked)} = {_percent(len(benign_blocked), len(benign))}",
            f"{reported_allowed}/{len(reported)}",
            f"{len(knowledge_blocked)}/{len(knowledge)}",
        ])
        blocked_lines[name] = (over_blocked, benign_blocked, knowledge_blocked)
        # Held-out harmful: (language, category) -> (blocked, total).
        counts = {(lang, category): (sum(v.blocked for v in verdicts(guard, prompts)), len(prompts))
                  for lang, per_lang in held_out.items() for category, prompts in per_lang.items()}

        def tally(keys) -> str:
            blocked, total = (sum(counts[key][i] for key in keys) for i in (0, 1))
            return f"{_percent(blocked, total)} ({blocked}/{total})"

        held_out_rows.append([name, tally(list(counts)), *(tally([k for k in counts if k[0] == lang]) for lang in LANGUAGES),
                              *(tally([k for k in counts if k[1] == category]) for category in categories)])
        semantic_rows.append([name, *(f"{_percent(sum(v.blocked for v in verdicts(guard, prompts)), len(prompts))}"
                                      for prompts in (by_semantic[c] for c in sorted(by_semantic)))])
        print(f"{name}: judged in {time.perf_counter() - started:.1f} s")

    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    total_held_out = sum(len(p) for per_lang in held_out.values() for p in per_lang.values())
    held_out_header = ["guard", f"held-out harmful blocked ({total_held_out})", *LANGUAGES, *categories]
    print("\n| " + " | ".join(held_out_header) + " |")
    print("|" + "---|" * len(held_out_header))
    for row in held_out_rows:
        print("| " + " | ".join(row) + " |")
    if by_semantic:
        semantic_header = ["guard", *(f"HarmBench {c} ({len(by_semantic[c])})" for c in sorted(by_semantic))]
        print("\n| " + " | ".join(semantic_header) + " |")
        print("|" + "---|" * len(semantic_header))
        for row in semantic_rows:
            print("| " + " | ".join(row) + " |")
    for name, (over_blocked, benign_blocked, knowledge_blocked) in blocked_lines.items():
        print(f"\n{name}: blocked lines of the benign sets")
        for lang in LANGUAGES:
            for prompt, verdict in over_blocked[lang]:
                print(f"    over-refusal {lang}: {prompt}  [{verdict.category}: {verdict.rule}]")
        for question, verdict in benign_blocked:
            print(f"    benign HK: {question}  [{verdict.category}: {verdict.rule}]")
        for paragraph, verdict in knowledge_blocked:
            print(f"    knowledge: {paragraph[:90]}...  [{verdict.category}: {verdict.rule}]")


if __name__ == "__main__":
    main()
