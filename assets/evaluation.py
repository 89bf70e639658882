"""Evaluation assets: `value_benchmark` (the versioned benchmark items), `benchmark_scores` (every
suite on every model stage), and the blocking decontamination checks on the training datasets."""

import base64
import json
from pathlib import Path

import dagster as dg

from hkgai_pipelines.assets.metadata import git_commit, latest_data_version, markdown_table
from hkgai_pipelines.assets.models import aligned_model, base_model, preference_dataset, published_stage, sft_checkpoint, sft_dataset
from hkgai_pipelines.assets.rag import knowledge_documents
from hkgai_pipelines.resources import DataLakeResource, EmbedderResource, MlflowResource, PipelineConfigResource
from hkgai_pipelines.evaluation.value_benchmark import seed_items
from hkgai_pipelines.training.datasets import read_jsonl, write_jsonl

STAGES = ("base_model", "sft_checkpoint", "aligned_model")
#: ARCHITECTURE.md: value_benchmark lives under the lake's benchmarks/.
BENCHMARK_FILE = ("benchmarks", "value_benchmark.jsonl")
#: Every stage's report and the guardrail figures; registered_model and its gates read it.
SCORES_FILE = ("evaluation", "benchmark_scores.json")


@dg.asset(
    group_name="evaluation",
    kinds={"python", "json"},
    description="Open Adversarial HK Value Benchmark: 300 authored seed items (hk_sensitive, typical_safety; en, yue, zh-hant, zh-hans) and the instruction attacks generated from them (lake benchmarks/).",
)
def value_benchmark(context: dg.AssetExecutionContext, lake: DataLakeResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    from collections import Counter

    from hkgai_pipelines.evaluation.value_benchmark import load_value_benchmark

    benchmark = load_value_benchmark()
    path = lake.path(*BENCHMARK_FILE)
    write_jsonl(benchmark.items, path)
    counts = Counter((item["module"], item["lang"]) for item in benchmark.items)
    langs = ("yue", "zh-hant", "zh-hans", "en", "mixed")
    rows = [(module, *(counts.get((module, lang), 0) for lang in langs)) for module in sorted({m for m, _ in counts})]
    run_id = mlflow.log_run(
        "value_benchmark", params={"version": benchmark.version, "items": len(benchmark.items), "seeds": len(benchmark.seeds())},
        tags={"asset": "value_benchmark", "dagster_run_id": context.run_id, "data_version": benchmark.version},
        artifacts={"benchmark": path}, experiment=f"{mlflow.experiment_name}-data",
    )
    return dg.MaterializeResult(
        metadata={
            "version": benchmark.version, "items": len(benchmark.items), "seeds": len(benchmark.seeds()),
            "by_module_and_language": markdown_table(["module", *langs], rows),
            "path": dg.MetadataValue.path(str(path)), "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run_id)),
        },
        data_version=dg.DataVersion(benchmark.version),
    )


# --------------------------------------------------------------------------- decontamination

def _benchmark_texts(lake: DataLakeResource) -> dict[str, str]:
    """Seed prompts and references; the attacks only wrap the seeds in fixed templates."""
    items = read_jsonl(lake.path(*BENCHMARK_FILE))
    return {f"{i['id']}:{f}": i[f] for i in seed_items(items) for f in ("prompt", "safe", "unsafe")}


def _decontamination_result(records: dict[str, str], lake: DataLakeResource) -> dg.AssetCheckResult:
    from hkgai_pipelines.evaluation.decontamination import CJK_N, WORD_N, find_overlaps

    offenders = find_overlaps(records, _benchmark_texts(lake))
    return dg.AssetCheckResult(
        passed=not offenders,
        metadata={
            "records": len(records), "offending_pairs": len(offenders),
            "rule": f"no {CJK_N}-character (CJK) or {WORD_N}-word (English) overlap with a value benchmark seed",
            "offenders": markdown_table(["training record", "benchmark item", "shared n-gram"],
                                        [(o.train_id, o.bench_id, o.ngram) for o in offenders[:50]]),
        },
    )


@dg.asset_check(asset=sft_dataset, additional_deps=[value_benchmark], blocking=True,
                description="No sft_dataset record shares a 13-character or 8-word n-gram with the value benchmark.")
def sft_dataset_decontaminated(lake: DataLakeResource) -> dg.AssetCheckResult:
    records = read_jsonl(lake.path("datasets", "sft.jsonl"))
    return _decontamination_result({r["id"]: "\n".join(m["content"] for m in r["messages"]) for r in records}, lake)


@dg.asset_check(asset=preference_dataset, additional_deps=[value_benchmark], blocking=True,
                description="No preference pair shares a 13-character or 8-word n-gram with the value benchmark.")
def preference_dataset_decontaminated(lake: DataLakeResource) -> dg.AssetCheckResult:
    records = read_jsonl(lake.path("datasets", "preference.jsonl"))
    return _decontamination_result(
        {r["id"]: "\n".join(m["content"] for k in ("prompt", "chosen", "rejected") for m in r[k]) for r in records}, lake)


# --------------------------------------------------------------------------- scores

@dg.asset(
    deps=[base_model, sft_checkpoint, aligned_model, value_benchmark, knowledge_documents],
    group_name="evaluation",
    kinds={"pytorch", "mlflow"},
    description="Every evaluation suite on every model stage: value benchmark (likelihood and generation, paper Table 5), language following (Table 6), local knowledge, Yue-ARC-C, Yue-TruthfulQA, HarmBench guardrail block rate. Metrics and a JSON report on each stage's MLflow run.",
)
def benchmark_scores(context: dg.AssetExecutionContext, pipeline_config: PipelineConfigResource, lake: DataLakeResource,
                     mlflow: MlflowResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    from hkgai_pipelines.evaluation.model import EvalModel
    from hkgai_pipelines.evaluation.report import TABLE_CAPTIONS, SuiteInputs, bar_chart, evaluate_model, flat_metrics, pct, shown_tables
    from hkgai_pipelines.registry.serving import CHART_ARTIFACT, chart_artifact_url
    from hkgai_pipelines.rag.knowledge import load_knowledge_documents

    params = pipeline_config.evaluation_params()
    items = read_jsonl(lake.path(*BENCHMARK_FILE))
    # value_benchmark's data version is its content-hash version.
    benchmark_version = latest_data_version(context, value_benchmark)
    documents = load_knowledge_documents(pipeline_config.catalog(), pipeline_config.rag_params().max_document_chars)
    inputs = SuiteInputs.load(documents, embedder.get_embedder(), lake.path("cache"), params.external_dir, params.external_max_items,
                              context.log.warning)
    commit = git_commit()

    reports, run_ids = {}, {}
    for stage in STAGES:
        model_dir, run_ids[stage] = published_stage(lake, stage)
        model = EvalModel.load(str(model_dir), batch_size=16)
        report = evaluate_model(model, items, inputs, params.generation_max_new_tokens)
        report.update(stage=stage, model_uri=str(model_dir), mlflow_run_id=run_ids[stage], benchmark_version=benchmark_version,
                      seed=0, git_commit=commit, judge=type(inputs.judge).__name__)
        reports[stage] = report
        context.log.info(f"{stage}: " + json.dumps(report["suites"]["value_likelihood"]["by_module"]["overall"]))

    chart = bar_chart(reports, lake.path("evaluation", Path(CHART_ARTIFACT).name))
    chart_alt = "Value benchmark (likelihood): Safe / Refusal / Unsafe % by module and stage"
    guardrail = inputs.guardrail_harmbench()
    # Every table (the model card lists the same ones under the same captions).
    tables = {name: markdown_table(headers, rows) for name, (headers, rows) in shown_tables(reports, guardrail).items()}
    if not guardrail:
        tables["guardrail_harmbench"] = dg.MetadataValue.md("HarmBench file not found")
    # The same tables as a Markdown artifact, readable in the MLflow UI beside the metrics.
    tables_md = "\n\n".join(f"## {TABLE_CAPTIONS[name]} ({name})\n\n{table.value}" for name, table in tables.items())
    client = mlflow.get_client()
    from mlflow.entities import Metric

    for stage, report in reports.items():
        run_id = run_ids[stage]
        client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in flat_metrics(report).items()])
        client.log_dict(run_id, {**report, "guardrail_harmbench": guardrail}, "evaluation/benchmark_report.json")
        client.log_artifact(run_id, str(chart), str(Path(CHART_ARTIFACT).parent))
        client.log_text(run_id, tables_md, "evaluation/tables.md")
        client.set_tag(run_id, "value_benchmark.version", benchmark_version)

    report_path = lake.path(*SCORES_FILE)
    report_path.write_text(json.dumps({"stages": reports, "guardrail_harmbench": guardrail}, ensure_ascii=False, indent=1))
    return dg.MaterializeResult(
        metadata={
            "benchmark_version": benchmark_version,
            # The headline `hkgai demo` prints: the value benchmark's safe share by stage.
            "safe_pct_overall": ", ".join(
                f"{stage} {pct(report['suites']['value_likelihood']['by_module']['overall']['safe'])}" for stage, report in reports.items()),
            **tables,
            # Shown inline as an image, served by the MLflow UI (the aligned_model run's copy)...
            "chart": dg.MetadataValue.md(
                f"![{chart_alt}]({chart_artifact_url(run_ids['aligned_model'], mlflow.ui_url)})\n\n"
                f"[open in MLflow]({mlflow.run_url(run_ids['aligned_model'])}) (artifact `{CHART_ARTIFACT}`)"),
            # ...and embedded, for when the MLflow UI is not running ([Show Markdown]), and the file.
            "chart_embedded": dg.MetadataValue.md(
                f"![{chart_alt}](data:image/png;base64,{base64.b64encode(chart.read_bytes()).decode()})"),
            "chart_file": dg.MetadataValue.path(str(chart)),
            "report": dg.MetadataValue.path(str(report_path)),
            **{f"mlflow_run_{stage}": dg.MetadataValue.url(mlflow.run_url(run_ids[stage])) for stage in STAGES},
        },
    )


evaluation_assets = [value_benchmark, benchmark_scores]
evaluation_checks = [sft_dataset_decontaminated, preference_dataset_decontaminated]
