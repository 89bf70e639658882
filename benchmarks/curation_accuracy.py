"""Language-ID accuracy and PII precision/recall on the labelled sets in benchmarks/data/.

The sets were written for evaluation only: nothing in the identifier or the redactor was
tuned on them. Prints per-label accuracy, the confusion pairs, and span-level precision and
recall per PII type (a predicted span counts when its type and exact text match a gold span).

PII is also scored on every written form real Hong Kong text uses (shared/field-cases 06-08,
15): each gold span of the labelled set rewritten full-width, with a zero-width space, with a
soft hyphen, and each phone moved to the 4 prefix OFCA opened to mobiles. A form counts as
redacted when the line comes back with the span replaced by its placeholder and nothing else
changed; the negatives (lines without PII) must come back unchanged. The residual-PII gate's
independent detector (pii_audit) is scored on the same positives, and the lines that only it
catches are printed: that is the gate seeing what the redactor misses.

Language ID is scored twice: on the 110 lines of benchmarks/data/langid_labelled.tsv, and
by benchmarks/langid_accuracy.py on the 691-line test set written apart from the identifier
(benchmarks/data/langid_test.tsv) and on held-out project lines (per class, Simplified-script
Cantonese, lines without a variety marker and lines of 6 characters or fewer apart) against
the rules-only identifier in the same process.

    python benchmarks/curation_accuracy.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from hkgai_pipelines.curation.langid import LanguageIdentifier
from hkgai_pipelines.curation.pii import PLACEHOLDERS, PiiRedactor
from hkgai_pipelines.curation.pii_audit import audit_text

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


def _full_width(value: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else ("\u3000" if c == " " else c) for c in value)


def _insert(value: str, mark: str) -> str:
    middle = len(value) // 2
    return value[:middle] + mark + value[middle:]


def _prefix4(value: str) -> str | None:
    digits = [i for i, c in enumerate(value) if c.isdigit()]
    # The subscriber number's first digit: after +852 / (852) / 00852 when present.
    skip = 3 if value.lstrip("(+0").startswith("852") else 0
    if value.lstrip("(+").startswith("00852"):
        skip = 5
    if len(digits) != skip + 8:  # Hong Kong numbers only: eight digits after any 852
        return None
    first = digits[skip]
    return value[:first] + "4" + value[first + 1:]


WRITTEN_FORMS = {
    "plain": lambda kind, v: v,
    "full-width": lambda kind, v: _full_width(v),
    "zero-width space": lambda kind, v: _insert(v, "\u200b"),
    "soft hyphen": lambda kind, v: _insert(v, "\u00ad"),
    "4 prefix": lambda kind, v: _prefix4(v) if kind == "PHONE" else None,
}


def pii_written_forms() -> dict:
    """Recall per written form, negatives untouched, and the independent gate's recall."""
    redactor = PiiRedactor()
    lines = [json.loads(line) for line in (DATA / "pii_labelled.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    positives = [item for item in lines if len(item["pii"]) == 1]
    negatives = [item["text"] for item in lines if not item["pii"]]
    report: dict = {}
    print("PII by written form (lines with one gold span; redacted = placeholder in place, rest unchanged):")
    print(f"  {'form':18s} {'redactor':>14s} {'gate (blocking)':>14s}")
    gate_only: list[str] = []
    for form, rewrite in WRITTEN_FORMS.items():
        hits = gate_hits = total = 0
        for item in positives:
            (kind, value), text = item["pii"][0], item["text"]
            new_value = rewrite(kind, value)
            if new_value is None:
                continue
            variant = text.replace(value, new_value, 1)
            total += 1
            redacted = redactor.redact(variant).text == text.replace(value, PLACEHOLDERS[kind], 1)
            caught = any(f.kind == kind and f.certain for f in audit_text(variant))
            hits += redacted
            gate_hits += caught
            if caught and not redacted:
                gate_only.append(variant)
            if not redacted:
                print(f"    missed ({form}): {variant!r}")
        report[form] = (hits, gate_hits, total)
        print(f"  {form:18s} {hits:>4d}/{total:<4d} {hits / total:6.1%} {gate_hits:>4d}/{total:<4d} {gate_hits / total:6.1%}")
    hits = sum(h for h, _, _ in report.values())
    gate = sum(g for _, g, _ in report.values())
    total = sum(t for _, _, t in report.values())
    untouched = sum(redactor.redact(text).text == text for text in negatives)
    gate_quiet = sum(not any(f.certain for f in audit_text(text)) for text in negatives)
    print(f"  {'all forms':18s} {hits:>4d}/{total:<4d} {hits / total:6.1%} {gate:>4d}/{total:<4d} {gate / total:6.1%}  (goal: redactor >= 99%)")
    print(f"  negatives untouched: redactor {untouched}/{len(negatives)} = {untouched / len(negatives):.1%} (goal >= 97%); "
          f"gate detector quiet on {gate_quiet}/{len(negatives)} = {gate_quiet / len(negatives):.1%}")
    # Forms outside the redactor's patterns, planted to show the gate does not share its
    # blind spots (tests/test_pii_audit.py asserts the same lines).
    planted = ["WhatsApp 9123.4567", "Call +852 91 234 567", "身份證 A-123456-3", "卡號 4111.1111.1111.1111"]
    for text in planted:
        if redactor.redact(text).text == text and any(f.certain for f in audit_text(text)):
            gate_only.append(text)
    print(f"  leaks the redactor missed and the gate's detector caught: {len(gate_only)}")
    for text in gate_only:
        print(f"    {text!r}")
    report.update(recall=hits / total, negatives_untouched=untouched / len(negatives), gate_recall=gate / total)
    return report


def field_cases(folder: Path) -> int:
    """Each field case of this issue class (README in `folder`) through the library call its
    command makes, against its right result; returns how many are right."""
    import tempfile

    import pyarrow.parquet as pq

    from hkgai_pipelines.curation.pipeline import run_curation
    from hkgai_pipelines.params import load_curation_params
    from hkgai_pipelines.settings import PROJECT_ROOT
    from hkgai_pipelines.sources.files import read_files

    params = load_curation_params(PROJECT_ROOT / "params.yaml")
    identifier, redactor = LanguageIdentifier(), PiiRedactor()

    def curate(name):
        with tempfile.TemporaryDirectory() as out:
            result, outputs = run_curation(read_files([folder / name], source="local_files", licence="unknown"), params, Path(out))
            return result.stats, pq.read_table(outputs.cleaned).to_pylist(), pq.read_table(outputs.rejected).to_pylist()

    def lines(name):
        return [line for line in (folder / name).read_text(encoding="utf-8").splitlines() if line.strip()]

    def redacted(name, *placeholders):
        out = [line for line in redactor.redact((folder / name).read_text(encoding="utf-8")).text.splitlines() if line.strip()]
        return all(p in line for p, line in zip(placeholders, out)) and not any(c.isdigit() for line in out for c in line)

    checks = {
        "01_bom.jsonl: 2 kept, 0 quarantined": lambda: (lambda st: (st.kept, st.quarantined) == (2, 0))(curate("01_bom.jsonl")[0]),
        "02_shards: 4 kept, 4 ids": lambda: (lambda r: r[0].kept == 4 and len({x["id"] for x in r[1]}) == 4)(curate("02_shards")),
        "03 Big5-HKSCS page: 1 kept with 𨋢": lambda: (lambda r: r[0].kept == 1 and "𨋢" in r[1][0]["text"])(curate("03_notice_big5hkscs.html")),
        "04 short Cantonese: all yue": lambda: all(identifier.identify(t).lang == "yue" for t in lines("04_short_cantonese.txt")),
        "05 Simplified Cantonese: all yue": lambda: all(identifier.identify(t).lang == "yue" for t in lines("05_simplified_cantonese.txt")),
        "06 full-width PII": lambda: redacted("06_pii_fullwidth.txt", "<PHONE>", "<HKID>", "<EMAIL>"),
        "07 invisible characters in PII": lambda: redacted("07_pii_invisible.txt", "<EMAIL>", "<PHONE>", "<EMAIL>"),
        "08 4-prefix mobiles": lambda: redacted("08_pii_hk_prefix4.txt", "<PHONE>", "<PHONE>"),
        "15 e-mail starting with _": lambda: redactor.redact(lines("15_pii_email_underscore.txt")[0]).text == "聯絡：<EMAIL>",
        "12 GBK mojibake: repaired or rejected": lambda: (lambda r: [x["text"] for x in r[1]] == ["我哋今日去咗飲茶"]
                                                           and [x["reason"] for x in r[2]] == ["mojibake"])(curate("12_gbk_mojibake.jsonl")),
        "13 news page: headline + 2 paragraphs": lambda: (lambda r: r[0].kept == 1 and len(r[1][0]["text"].splitlines()) == 3
                                                           and "分享" not in r[1][0]["text"])(curate("13_news_page.html")),
    }
    right = 0
    print(f"field cases in {folder}:")
    for name, check in checks.items():
        ok = bool(check())
        right += ok
        print(f"  {'right' if ok else 'WRONG'}  {name}")
    print(f"  {right}/{len(checks)} right")
    return right


if __name__ == "__main__":
    import langid_accuracy  # beside this script: the test set and held-out lines, per class

    language_id()
    print()
    langid_accuracy.main()
    print()
    pii()
    print()
    pii_written_forms()
    cases = Path(__file__).resolve().parents[2] / "shared" / "field-cases"
    print()
    if cases.is_dir():
        field_cases(cases)
    else:
        print(f"field cases: {cases} not found (shared/ is not beside this checkout); skipped")
