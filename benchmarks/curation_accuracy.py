"""Language-ID accuracy and PII precision/recall on the labelled sets in benchmarks/data/.

The sets were written for evaluation only: nothing in the identifier or the redactor was
tuned on them. Prints per-label accuracy, the confusion pairs, and span-level precision and
recall per PII type (a predicted span counts when its type and exact text match a gold span).

    python benchmarks/curation_accuracy.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from hkgai_pipelines.curation.langid import LanguageIdentifier
from hkgai_pipelines.curation.pii import PiiRedactor

DATA = Path(__file__).resolve().parent / "data"


def language_id() -> None:
    identifier = LanguageIdentifier()
    rows = [line.split("\t", 1) for line in (DATA / "langid_labelled.tsv").read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    per_label: dict[str, Counter] = {}
    errors: Counter = Counter()
    for label, text in rows:
        predicted = identifier.identify(text).lang
        per_label.setdefault(label, Counter())["right" if predicted == label else "wrong"] += 1
        if predicted != label:
            errors[(label, predicted)] += 1
            print(f"  miss: {label} -> {predicted}: {text}")
    right = sum(c["right"] for c in per_label.values())
    print(f"language ID: {right}/{len(rows)} correct = {right / len(rows):.1%}")
    for label, counts in sorted(per_label.items()):
        total = counts["right"] + counts["wrong"]
        print(f"  {label:8s} {counts['right']}/{total} = {counts['right'] / total:.1%}")
    for (gold, predicted), n in errors.most_common():
        print(f"  confusion {gold} -> {predicted}: {n}")


def pii() -> None:
    redactor = PiiRedactor()
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    lines = [json.loads(line) for line in (DATA / "pii_labelled.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    for item in lines:
        text = item["text"]
        gold = Counter((kind, value) for kind, value in item["pii"])
        found = Counter((span.kind, text[span.start:span.end]) for span in redactor.find(text))
        for key in gold | found:
            hit = min(gold[key], found[key])
            tp[key[0]] += hit
            fp[key[0]] += found[key] - hit
            fn[key[0]] += gold[key] - hit
            if found[key] > hit:
                print(f"  false positive {key}: {text}")
            if gold[key] > hit:
                print(f"  missed {key}: {text}")
    kinds = sorted(set(tp) | set(fp) | set(fn))
    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    print(f"PII on {len(lines)} lines ({sum(1 for i in lines if i['pii'])} with PII, {total_tp + total_fn} gold spans):")
    print(f"  all     precision {total_tp / max(total_tp + total_fp, 1):.1%} recall {total_tp / max(total_tp + total_fn, 1):.1%}")
    for kind in kinds:
        p = tp[kind] / max(tp[kind] + fp[kind], 1)
        r = tp[kind] / max(tp[kind] + fn[kind], 1)
        print(f"  {kind:12s} precision {p:.1%} recall {r:.1%} (tp {tp[kind]}, fp {fp[kind]}, fn {fn[kind]})")


if __name__ == "__main__":
    language_id()
    pii()
