"""Run every suite on one model, and lay the results out as the paper does: Table 5 (Safe /
Refusal / Unsafe by module), Table 6 (language following by language), a bar chart, and flat
metrics for MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hkgai_pipelines.evaluation.external import guard_block_rate, load_external_suites, score_multiple_choice
from hkgai_pipelines.evaluation.model import EvalModel
from hkgai_pipelines.evaluation.suites import (
    LANG_ORDER, MODULE_ORDER, SUITE_VERSIONS, judge_from_env, knowledge_choice_items, language_following, value_generation,
    value_likelihood,
)
from hkgai_pipelines.evaluation.value_benchmark import seed_items

MODULE_TITLES = {"hk_sensitive": "HK sensitive issues", "instruction_attack": "Instruction attacks",
                 "typical_safety": "Typical safety scenarios", "overall": "Overall"}


@dataclass(frozen=True)
class SuiteInputs:
    """Everything a model is evaluated with besides the value benchmark items: the same for every
    model, so benchmark_scores loads it once for all stages and `hkgai bench` for its one."""

    judge: object
    guard: object
    knowledge_items: list[dict]
    external: dict[str, list[dict]]
    harmbench: list[dict] | None

    @classmethod
    def load(cls, documents, embedder, guard_cache_dir: Path, external_dir: str | None, external_max_items: int | None,
             warn: Callable[[str], None]) -> SuiteInputs:
        """`documents`: the knowledge documents (local knowledge questions are built from them)."""
        from hkgai_pipelines.safety.classifier import load_guard

        from hkgai_pipelines.settings import get_settings

        # The guard the deployment serves: HKGAI_GUARD_MODEL_DIR's model when one is set.
        guard = load_guard(embedder, cache_dir=guard_cache_dir, model_dir=get_settings().guard_model_dir)
        external, harmbench = load_external_suites(external_dir, external_max_items, warn)
        return cls(judge_from_env(embedder, guard), guard, knowledge_choice_items(documents), external, harmbench)

    def guardrail_harmbench(self) -> dict | None:
        """The guardrail's HarmBench block rates (a property of the guard, not of a model)."""
        return guard_block_rate(self.guard, self.harmbench) if self.harmbench else None


def evaluate_model(model: EvalModel, items: list[dict], inputs: SuiteInputs, max_new_tokens: int = 32) -> dict:
    seeds = seed_items(items)
    generation, replies = value_generation(model, seeds, inputs.judge, max_new_tokens)
    suites = {
        "value_likelihood": value_likelihood(model, items),
        "value_generation": generation,
        "language_following": language_following(seeds, replies),
        "local_knowledge": score_multiple_choice(model, inputs.knowledge_items),
        **{name: score_multiple_choice(model, suite_items) for name, suite_items in inputs.external.items()},
    }
    return {"model": model.name, "suite_versions": {k: SUITE_VERSIONS[k] for k in suites},
            "suites": suites, "sample_replies": [{"id": s["id"], "prompt": s["prompt"], "reply": r} for s, r in list(zip(seeds, replies))[:8]]}


def pct(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else str(value)


def table5_rows(reports: dict[str, dict], suite: str = "value_likelihood") -> list[tuple]:
    rows = []
    for module in (*MODULE_ORDER, "overall"):
        for stage, report in reports.items():
            r = report["suites"][suite]["by_module"].get(module)
            if r:
                rows.append((MODULE_TITLES[module], stage, pct(r["safe"]), pct(r["refusal"]), pct(r["unsafe"]), r["items"], r["errored"]))
    return rows


TABLE5_HEADERS = ("module", "stage", "Safe %", "Refusal %", "Unsafe %", "items", "errored")
OTHER_HEADERS = ("suite", "stage", "accuracy %", "chance %", "items", "errored")


def report_tables(reports: dict[str, dict]) -> dict[str, tuple[tuple[str, ...], list[tuple]]]:
    """(headers, rows) of every table, by name, for reports keyed by stage: Table 5 in both
    modes, Table 6, and the multiple-choice suites."""
    return {
        "table5_likelihood": (TABLE5_HEADERS, table5_rows(reports, "value_likelihood")),
        "table5_generation": (TABLE5_HEADERS, table5_rows(reports, "value_generation")),
        "table6_language_following": (("lang", *reports), table6_rows(reports)),
        "other_suites": (OTHER_HEADERS, other_rows(reports)),
    }


def table6_rows(reports: dict[str, dict]) -> list[tuple]:
    stages = list(reports)
    return [(lang, *(pct(reports[s]["suites"]["language_following"].get(lang, "-")) for s in stages)) for lang in LANG_ORDER]


def other_rows(reports: dict[str, dict]) -> list[tuple]:
    rows = []
    for suite in ("local_knowledge", "yue_arc_c", "yue_truthfulqa"):
        for stage, report in reports.items():
            result = report["suites"].get(suite)
            if result:
                rows.append((suite, stage, pct(result["accuracy"]), pct(result["chance"]), result["items"], result["errored"]))
    return rows


def flat_metrics(report: dict) -> dict[str, float]:
    """`eval.<suite>.<module>.<label>` and friends, for MLflow. No "/" in these names: MLflow's
    run page shows the keys without one in its last section, below the training curves
    (`train/...`, see training/common.py); an `eval/` section would come before them."""
    metrics: dict[str, float] = {}
    for suite in ("value_likelihood", "value_generation"):
        for module, r in report["suites"][suite]["by_module"].items():
            for label in ("safe", "refusal", "unsafe"):
                metrics[f"eval.{suite}.{module}.{label}"] = r[label]
    metrics["eval.value_likelihood.lawful_refused"] = report["suites"]["value_likelihood"]["lawful_refused"]
    for lang, value in report["suites"]["language_following"].items():
        metrics[f"eval.language_following.{lang}"] = value
    for suite in ("local_knowledge", "yue_arc_c", "yue_truthfulqa"):
        if suite in report["suites"]:
            metrics[f"eval.{suite}.accuracy"] = report["suites"][suite]["accuracy"]
    return metrics


def bar_chart(reports: dict[str, dict], path: Path, suite: str = "value_likelihood") -> Path:
    """Stacked Safe / Refusal / Unsafe bars: one group per module, one bar per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(reports)
    # About 750 px wide: the width MLflow gives a version description beside its side panel.
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    width = 0.8 / max(len(stages), 1)
    colours = {"safe": "#2e7d32", "refusal": "#f9a825", "unsafe": "#c62828"}
    for m, module in enumerate(MODULE_ORDER):
        for s, stage in enumerate(stages):
            r = reports[stage]["suites"][suite]["by_module"].get(module)
            if not r:
                continue
            x, bottom = m + (s - (len(stages) - 1) / 2) * width, 0.0
            for label in ("safe", "refusal", "unsafe"):
                ax.bar(x, r[label], width * 0.9, bottom=bottom, color=colours[label], label=label.title() if m == s == 0 else None)
                bottom += r[label]
            ax.text(x, 101, stage.replace("_", "\n"), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(MODULE_ORDER)), [MODULE_TITLES[m] for m in MODULE_ORDER])
    ax.set_ylabel("% of items")
    ax.set_ylim(0, 118)
    ax.set_title(f"Value benchmark ({suite.replace('_', ' ')}):\nSafe / Refusal / Unsafe by module and stage", fontsize=11)
    # Below the axes and their module names, so no bar, whatever its height, lies under it.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=9, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


#: The caption of every table benchmark_scores shows (its metadata keys), in the order the model
#: card lists them.
TABLE_CAPTIONS = {
    "table5_likelihood": "Table 5, likelihood mode: Safe / Refusal / Unsafe % by module and stage",
    "table5_generation": "Table 5, generation mode (judged replies): Safe / Refusal / Unsafe % by module and stage",
    "table6_language_following": "Table 6: language following, % of replies in the prompt's language, by stage",
    "other_suites": "Multiple-choice suites: accuracy % (local knowledge, Yue-ARC-C, Yue-TruthfulQA)",
    "lawful_questions_refused_pct": "Lawful questions refused: refusal-template share % on lawful questions (likelihood), by stage",
    "guardrail_harmbench": "Guardrail: HarmBench block rate % at input (a property of the guard, not of a model)",
}
LAWFUL_HEADERS = ("stage", "lawful questions refused %")
GUARDRAIL_HEADERS = ("measure", "value")


def lawful_refused_rows(reports: dict[str, dict]) -> list[tuple]:
    return [(stage, pct(report["suites"]["value_likelihood"]["lawful_refused"])) for stage, report in reports.items()]


def shown_tables(reports: dict[str, dict], guardrail: dict | None) -> dict[str, tuple[tuple[str, ...], list[tuple]]]:
    """(headers, rows) of every table benchmark_scores shows, by its metadata key (the keys of
    TABLE_CAPTIONS, in that order): `report_tables`, the lawful questions refused, and the
    guardrail's HarmBench figures (no rows when no HarmBench file was scored). The model card
    (registered_model) lists the same tables under these captions."""
    return {
        **report_tables(reports),
        "lawful_questions_refused_pct": (LAWFUL_HEADERS, lawful_refused_rows(reports)),
        "guardrail_harmbench": (GUARDRAIL_HEADERS, [(k, v if isinstance(v, int) else pct(v)) for k, v in sorted((guardrail or {}).items())]),
    }
