"""Guardrail evaluation: HarmBench block rate and the false-block rate on the benign Hong Kong
questions, for the hybrid guard (rules + classifier) against the rules alone, in the same run.

    python benchmarks/guard_eval.py [--harmbench ../shared/data/harmbench/harmbench_behaviors_text_all.csv]

Neither set was used to train or tune the guard (safety/classifier.py says how its threshold
was chosen). Prints the blocked benign questions, so each false block can be read.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def benign_questions() -> list[str]:
    from hkgai_pipelines.curation.script import to_simplified

    data = yaml.safe_load(resources.files("hkgai_pipelines").joinpath("data", "safety", "benign_hk_eval.yaml").read_text(encoding="utf-8"))
    return data["en"] + data["yue"] + data["zh-hant"] + [to_simplified(q) for q in data["zh-hant"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harmbench", default=str(ROOT.parent / "shared" / "data" / "harmbench" / "harmbench_behaviors_text_all.csv"))
    args = parser.parse_args()

    from hkgai_pipelines.evaluation.external import guard_block_rate, load_harmbench
    from hkgai_pipelines.safety.classifier import load_guard
    from hkgai_pipelines.safety.guard import RuleGuard
    from hkgai_pipelines.settings import get_settings

    started = time.perf_counter()
    # HKGAI_GUARD_MODEL_DIR, when set, puts that guard model in place of the logistic classifier.
    hybrid = load_guard(model_dir=get_settings().guard_model_dir)
    print(f"classifier trained in {time.perf_counter() - started:.1f} s")
    harm = load_harmbench(Path(args.harmbench))
    benign = benign_questions()
    for name, guard in (("rules alone", RuleGuard()), ("rules + classifier", hybrid)):
        rates = guard_block_rate(guard, harm.items)
        blocked = [(q, v) for q in benign if (v := guard.check(q)).blocked]
        print(f"{name}: HarmBench block rate {rates['block_rate']}% of {rates['items']} "
              f"(standard {rates['block_rate_standard']}%, contextual {rates['block_rate_contextual']}%; "
              f"copyright, reported apart, {rates['block_rate_copyright']}%); "
              f"benign false blocks {len(blocked)}/{len(benign)} = {100 * len(blocked) / len(benign):.1f}%")
        for question, verdict in blocked:
            print(f"    blocked: {question}  [{verdict.category}: {verdict.rule}]")


if __name__ == "__main__":
    main()
