"""Language-ID accuracy of `LanguageIdentifier` against its rules-only predecessor.

The evaluation lines come from the project's own authored, language-labelled data, never
from the corpora the Cantonese model trains on (CTCPC, HKCanCor, HSK), and nothing here was
used to fit or to choose a threshold (those were chosen on a held-out split of the training
corpora, see hkgai_pipelines/curation/cantonese_model.py):

- value benchmark seeds (data/value_benchmark/*.yaml): prompt, safe and unsafe texts in en,
  yue and zh-hant; zh-hans is the zh-hant text through OpenCC t2s (as the README says);
  refusals.yaml templates in all four;
- SFT items (data/sft/*.yaml) and Q-A-C preference items (data/preference/*.yaml): q, a
  (and c) with the item's `lang`;
- knowledge documents (data/knowledge/*.md): each body paragraph with the front matter's
  `lang` (Markdown headings dropped);
- data/langid/short_lines.tsv: authored lines of 6 characters or fewer;
- benchmarks/data/langid_labelled.tsv: the curation benchmark's labelled lines (the only
  source of `mixed` and `other`);
- derived: every yue line above through OpenCC t2s (Cantonese in Simplified characters,
  still labelled yue), and every English SFT question in capitals (labelled en).
- optional, reported apart: the questions of Yue-TruthfulQA (`<shared>/yue-benchmark/
  Yue-TruthfulQA.json`, MIT), labelled yue, when `shared_data` is given and the file exists.

    python benchmarks/langid_accuracy.py [SHARED_DATA_DIR]
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "hkgai_pipelines" / "data"
CLASSES = ("yue", "zh-hant", "zh-hans", "en", "mixed", "other")
SHORT = 6  # characters, whitespace stripped


def _value_benchmark(t2s) -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted((DATA / "value_benchmark").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if path.name == "refusals.yaml":
            rows += [("value_benchmark", lang, text) for lang, texts in doc.items() for text in texts]
            continue
        for group in doc.get("groups", []):
            for lang in ("en", "yue", "zh-hant"):
                for field in ("prompt", "safe", "unsafe"):
                    text = (group.get(lang) or {}).get(field)
                    if isinstance(text, str):
                        rows.append(("value_benchmark", lang, text))
                        if lang == "zh-hant":
                            rows.append(("value_benchmark", "zh-hans", t2s.convert(text)))
    return rows


def _items(folder: str, fields: tuple[str, ...]) -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted((DATA / folder).glob("*.yaml")):
        for item in yaml.safe_load(path.read_text(encoding="utf-8")).get("items", []):
            rows += [(folder, item["lang"], item[f]) for f in fields if isinstance(item.get(f), str)]
    return rows


def _knowledge() -> list[tuple[str, str, str]]:
    from hkgai_pipelines.sources.readers import parse_knowledge_document

    rows = []
    for path in sorted((DATA / "knowledge").glob("*.md")):
        meta, body = parse_knowledge_document(path)
        for paragraph in re.split(r"\n\s*\n", body):
            paragraph = paragraph.strip()
            if paragraph and not paragraph.startswith("#"):
                rows.append(("knowledge", meta["lang"], paragraph))
    return rows


def _tsv(path: Path, source: str) -> list[tuple[str, str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            lang, text = line.split("\t", 1)
            rows.append((source, lang, text))
    return rows


def evaluation_lines() -> list[tuple[str, str, str]]:
    """(source, gold lang, text), deduplicated on text, in a fixed order."""
    import opencc

    t2s = opencc.OpenCC("t2s")
    rows = _value_benchmark(t2s) + _items("sft", ("q", "a")) + _items("preference", ("q", "a", "c")) + _knowledge()
    derived = [("yue-t2s", "yue", t2s.convert(text)) for source, lang, text in rows if lang == "yue"]
    derived += [("en-caps", "en", text.upper()) for source, lang, text in _items("sft", ("q",)) if lang == "en"]
    rows += _tsv(DATA / "langid" / "short_lines.tsv", "short_lines")
    rows += _tsv(ROOT / "benchmarks" / "data" / "langid_labelled.tsv", "curation_labelled")
    rows += derived
    seen: set[str] = set()
    out = []
    for source, lang, text in rows:
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            out.append((source, lang, text))
    return out


def _truthfulqa(shared_data: Path | None) -> list[tuple[str, str, str]]:
    if shared_data is None:
        return []
    path = Path(shared_data) / "yue-benchmark" / "Yue-TruthfulQA.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    items = data if isinstance(data, list) else next(v for v in data.values() if isinstance(v, list))
    return [("yue-truthfulqa", "yue", item["question"].strip()) for item in items if isinstance(item, dict) and isinstance(item.get("question"), str)]


def _score(identifier, lines) -> list[str]:
    return [identifier.identify(text).lang for _, _, text in lines]


def langid_report(shared_data: Path | None) -> dict:
    """Accuracy of the new identifier and the rules-only one on the evaluation lines.

    Returns {"lines": n, "rows": {row: {"n", "model", "rules"}}, "confusions": {...},
    "truthfulqa": {...} or None, "seconds": {...}}; accuracies are fractions in [0, 1].
    """
    from hkgai_pipelines.curation.langid import LanguageIdentifier

    lines = evaluation_lines()
    extra = _truthfulqa(shared_data)
    seconds = {}
    start = time.perf_counter()
    model_id = LanguageIdentifier()
    seconds["model_load"] = time.perf_counter() - start
    rules_id = LanguageIdentifier(use_model=False)
    predictions = {}
    for name, identifier in (("model", model_id), ("rules", rules_id)):
        start = time.perf_counter()
        predictions[name] = _score(identifier, lines + extra)
        seconds[f"{name}_identify"] = time.perf_counter() - start

    rows: dict[str, dict] = defaultdict(lambda: {"n": 0, "model": 0, "rules": 0})
    confusions: dict[str, Counter] = {"model": Counter(), "rules": Counter()}
    han = re.compile(r"[\u3400-\u9fff]")
    for index, (source, gold, text) in enumerate(lines):
        keys = [gold, "overall"]
        if len(text) <= SHORT:
            keys += ["short (<=6 chars)", f"short {gold}"]
        if gold == "yue" and han.search(text):
            keys.append("yue, Simplified script" if source == "yue-t2s" or _is_simplified(text) else "yue, Traditional script")
        if source == "en-caps":
            keys.append("en, all capitals")
        for key in keys:
            rows[key]["n"] += 1
        for name in ("model", "rules"):
            right = predictions[name][index] == gold
            for key in keys:
                rows[key][name] += right
            if not right:
                confusions[name][(gold, predictions[name][index])] += 1
    report = {
        "lines": len(lines),
        "rows": {key: {"n": v["n"], "model": v["model"] / v["n"], "rules": v["rules"] / v["n"]} for key, v in rows.items()},
        "confusions": {name: {f"{g} -> {p}": n for (g, p), n in c.most_common()} for name, c in confusions.items()},
        "misses": [(gold, predictions["model"][i], text) for i, (_, gold, text) in enumerate(lines) if predictions["model"][i] != gold],
        "truthfulqa": None,
        "seconds": seconds,
    }
    if extra:
        offset = len(lines)
        report["truthfulqa"] = {
            "n": len(extra),
            **{name: sum(predictions[name][offset + i] == "yue" for i in range(len(extra))) / len(extra) for name in ("model", "rules")},
        }
    return report


def _is_simplified(text: str) -> bool:
    from hkgai_pipelines.curation.cantonese_model import script_counts

    traditional, simplified = script_counts(text)
    return simplified > traditional


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
    report = langid_report(shared if shared.exists() else None)
    if not shared.exists():
        print(f"(Yue-TruthfulQA row skipped: {shared} not found)")
    order = ["yue", "yue, Traditional script", "yue, Simplified script", "zh-hant", "zh-hans", "en", "en, all capitals", "mixed", "other",
             "overall", "short (<=6 chars)"] + [f"short {c}" for c in CLASSES]
    print(f"language ID on {report['lines']} labelled lines (model = rules + Cantonese model; rules = before issue #13)")
    print(f"{'row':26s} {'n':>5s} {'model':>8s} {'rules':>8s}")
    for key in order:
        row = report["rows"].get(key)
        if row:
            print(f"{key:26s} {row['n']:5d} {row['model']:8.1%} {row['rules']:8.1%}")
    if report["truthfulqa"]:
        row = report["truthfulqa"]
        print(f"{'Yue-TruthfulQA questions':26s} {row['n']:5d} {row['model']:8.1%} {row['rules']:8.1%}  (separate; labelled yue)")
    for name in ("model", "rules"):
        print(f"confusions ({name}): " + ", ".join(f"{k}: {v}" for k, v in report["confusions"][name].items()))
    print("misses (model): " + "; ".join(f"{g}->{p} {t[:30]}" for g, p, t in report["misses"][:40]))
    s = report["seconds"]
    print(f"model load {s['model_load']:.2f} s; identify all lines: model {s['model_identify']:.2f} s, rules {s['rules_identify']:.2f} s")


if __name__ == "__main__":
    main()
