"""Registry assets: `registered_model` (aligned_model in the MLflow registry, with lineage and a
model card), its blocking promotion gates, `champion_model` (moved only after a reviewer's
decision) and the `model_approval_sensor` that turns decisions in MLflow into runs."""

import getpass
import json
import os
import time
from pathlib import Path

import dagster as dg

from hkgai_pipelines.assets.corpora import cleaned_corpus
from hkgai_pipelines.assets.evaluation import SCORES_FILE, STAGES, benchmark_scores, value_benchmark
from hkgai_pipelines.assets.metadata import git_commit, latest_data_version, markdown_table
from hkgai_pipelines.assets.models import aligned_model, preference_dataset, published_stage, sft_dataset
from hkgai_pipelines.resources import DataLakeResource, MlflowResource, PipelineConfigResource

LATEST_VERSION_FILE = ("registry", "latest_version.json")
#: The promotion audit log (the source of truth for gates and champions; promotion.py).
AUDIT_DIR = ("registry", "audit")


def _registry(pipeline_config: PipelineConfigResource, mlflow: MlflowResource, lake: DataLakeResource | None = None):
    """The promotion workflow; with `lake`, its audit log is `lake/registry/audit/` (the sensor
    only reads tags and needs none)."""
    from hkgai_pipelines.registry.promotion import ModelRegistry

    params = pipeline_config.registry_params()
    return ModelRegistry(mlflow.get_client(), params.model_name, tracking_uri=mlflow.tracking_uri, auth_enabled=params.auth_enabled,
                         audit_dir=lake.path(*AUDIT_DIR) if lake is not None else None)


@dg.asset(
    deps=[aligned_model, benchmark_scores, cleaned_corpus, sft_dataset, preference_dataset, value_benchmark],
    group_name="registry",
    kinds={"mlflow"},
    description="aligned_model logged to MLflow as a models-from-code pyfunc (no pickle) serving its checkpoint (signature, input example, model card) and registered as a new version of the registered model (params.yaml registry.model_name), with lineage tags.",
)
def registered_model(context: dg.AssetExecutionContext, pipeline_config: PipelineConfigResource, lake: DataLakeResource,
                     mlflow: MlflowResource) -> dg.MaterializeResult:
    import mlflow as mlflow_lib

    from hkgai_pipelines.registry.serving import log_chat_model, model_card

    params = pipeline_config.registry_params()
    name = params.model_name
    published = {stage: published_stage(lake, stage) for stage in STAGES}
    run_ids = {stage: run_id for stage, (_, run_id) in published.items()}
    checkpoint = published["aligned_model"][0]
    scores = json.loads(lake.path(*SCORES_FILE).read_text())
    aligned_report = scores["stages"]["aligned_model"]
    lineage = {
        "git.commit": git_commit(), "dagster.run_id": context.run_id, "preset": pipeline_config.preset,
        **{f"data_version.{a.key.to_user_string()}": latest_data_version(context, a) for a in (cleaned_corpus, sft_dataset, preference_dataset, value_benchmark)},
        **{f"mlflow_run.{stage}": run_id for stage, run_id in run_ids.items()},
    }
    registrant = os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    from hkgai_pipelines.evaluation.report import TABLE_CAPTIONS, shown_tables
    from hkgai_pipelines.registry.serving import CHART_ARTIFACT, chart_artifact_url
    from hkgai_pipelines.training.architectures import architecture_of
    from hkgai_pipelines.training.presets import load_preset

    # Every table benchmark_scores shows in Dagster, captioned, and its chart (lake file).
    tables = {key: (TABLE_CAPTIONS[key], headers, rows)
              for key, (headers, rows) in shown_tables(scores["stages"], scores.get("guardrail_harmbench")).items()}
    chart = lake.path("evaluation", Path(CHART_ARTIFACT).name)

    def card(chart_url: str | None) -> str:
        return model_card(name=name, preset=pipeline_config.preset,
                          sources=[(s.name, s.licence) for s in pipeline_config.catalog().sources],
                          tables=tables, lineage=lineage, gate_thresholds=json.dumps(params.gates, indent=1), chart_url=chart_url,
                          architecture=architecture_of(load_preset(pipeline_config.preset, Path(pipeline_config.config_dir)).model))

    mlflow_lib.set_tracking_uri(mlflow.tracking_uri)
    mlflow_lib.set_registry_uri(mlflow.registry_uri or mlflow.tracking_uri)
    with mlflow_lib.start_run(experiment_id=mlflow.experiment_id(), run_name="registered_model", tags=lineage) as run:
        info = log_chat_model(checkpoint)
        if chart.is_file():
            mlflow_lib.log_artifact(str(chart), str(Path(CHART_ARTIFACT).parent))
        # In MLflow the chart is this run's artifact, by a URL relative to the UI page.
        mlflow_card = card(chart_artifact_url(run.info.run_id) if chart.is_file() else None)
        mlflow_lib.log_text(mlflow_card, "model_card.md")
        mlflow_lib.log_dict(aligned_report, "benchmark_report.json")
    version = mlflow_lib.register_model(info.model_uri, name, tags={
        **lineage, "registered.by": registrant, "mlflow_run.registered_model": run.info.run_id,
        "scores": json.dumps(aligned_report["suites"]["value_likelihood"]["by_module"]["overall"]),
    })
    mlflow.get_client().update_model_version(name, version.version, description=mlflow_card)
    lake.path(*LATEST_VERSION_FILE).parent.mkdir(parents=True, exist_ok=True)
    lake.path(*LATEST_VERSION_FILE).write_text(json.dumps({"name": name, "version": str(version.version), "run_id": run.info.run_id}))
    return dg.MaterializeResult(
        metadata={
            "registered_model": name, "version": str(version.version), "model_uri": f"models:/{name}/{version.version}",
            "registered_by": registrant, "lineage": markdown_table(["item", "value"], sorted(lineage.items())),
            # The same card, its chart fetched from the MLflow UI (mlflow.ui_url).
            "model_card": dg.MetadataValue.md(card(chart_artifact_url(run.info.run_id, mlflow.ui_url) if chart.is_file() else None)),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run.info.run_id)),
        },
        data_version=dg.DataVersion(f"{name}/{version.version}"),
    )


@dg.asset_check(asset=registered_model, blocking=True, description="Promotion gates (params.yaml registry.gates): pass -> alias candidate and review.status=pending; fail -> gate=failed with the reasons and no alias.")
def registered_model_gates(pipeline_config: PipelineConfigResource, lake: DataLakeResource, mlflow: MlflowResource) -> dg.AssetCheckResult:
    from hkgai_pipelines.registry.gates import GateThresholds, evaluate_gates, gated_figures
    from hkgai_pipelines.registry.promotion import PromotionError

    registry = _registry(pipeline_config, mlflow, lake)
    latest = json.loads(lake.path(*LATEST_VERSION_FILE).read_text())
    thresholds = GateThresholds.from_dict(pipeline_config.registry_params().gates)
    report = json.loads(lake.path(*SCORES_FILE).read_text())["stages"]["aligned_model"]
    champion = registry.alias("champion")
    champion_report, untrusted = None, None
    if champion:
        # Compare with the champion's own report: its version's source run (not a settable tag),
        # and only when the audit log shows it was promoted through review.
        try:
            registry.audited_champion(champion)
        except PromotionError as error:
            untrusted = f"no-regression check impossible: `champion` points at version {champion}, not an audited champion ({error})"
        else:
            champion_run = registry.version(champion).run_id
            path = mlflow.get_client().download_artifacts(champion_run, "benchmark_report.json", str(lake.path("registry")))
            champion_report = json.loads(Path(path).read_text())
    failures = evaluate_gates(report, thresholds, champion_report) + ([untrusted] if untrusted else [])
    registry.apply_gates(latest["version"], failures)
    figures = gated_figures(report, thresholds)
    return dg.AssetCheckResult(
        passed=not failures,
        metadata={
            "version": latest["version"], "compared_with_champion": champion or "none",
            "figures": markdown_table(["figure", "value"], sorted((k, "-" if v is None else f"{v:.1f}") for k, v in figures.items())),
            "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "none"),
        },
    )


class ChampionDecision(dg.Config):
    #: The version decided on; for "restore", the version `champion` was found on ("" for none).
    version: str
    #: "promote" (an approval) or "reject" (close a rejection), set by model_approval_sensor;
    #: "restore" (undo a champion drift), set by champion_drift_sensor.
    action: str = "promote"


@dg.asset(
    deps=[registered_model],
    group_name="registry",
    kinds={"mlflow"},
    description="The reviewed decision applied: an approved candidate becomes `champion` (the previous holder keeps `previous_champion`), or a rejected one loses `candidate`; the audit record goes to the audit log (lake/registry/audit), to MLflow and here. Launched by model_approval_sensor, never by the demo.",
)
def champion_model(context: dg.AssetExecutionContext, config: ChampionDecision, pipeline_config: PipelineConfigResource,
                   mlflow: MlflowResource, lake: DataLakeResource) -> dg.MaterializeResult:
    registry = _registry(pipeline_config, mlflow, lake)
    if config.action == "promote":
        record = registry.promote(config.version, dagster_run_id=context.run_id)
    elif config.action == "reject":
        record = registry.close_rejected(config.version, dagster_run_id=context.run_id)
    elif config.action == "restore":
        record = registry.restore_champion(by="champion_drift_sensor", dagster_run_id=context.run_id)
        if record is None:  # put right by hand between the sensor's tick and this run
            return dg.MaterializeResult(metadata={"action": "restore", "incident": "none: `champion` agrees with the audit log again",
                                                  "champion": registry.alias("champion") or "-"})
        context.log.warning(f"champion drift: {record.note}")
    else:
        raise ValueError(f"unknown action {config.action!r}; expected promote, reject or restore")
    audit = record.to_json()
    if record.action == "restore":
        return dg.MaterializeResult(metadata={
            "action": "restore", "incident": record.note, "found_on": record.previous_champion or "-",
            "restored_to": record.version or "- (no champion)", "champion": registry.alias("champion") or "-", "at": record.at,
            "audit_record": dg.MetadataValue.json(audit),
        })
    return dg.MaterializeResult(
        metadata={
            "action": record.action, "version": record.version, "reviewer": record.by, "at": record.at,
            "note": record.note or "-", "previous_champion": record.previous_champion or "-",
            "champion": registry.alias("champion") or "-", "scores_seen": dg.MetadataValue.json(record.scores),
            "audit_record": dg.MetadataValue.json(audit),
        },
    )


def _clock() -> float:
    """Wall-clock seconds for the sensor's settling wait (a function so tests can move time)."""
    return time.time()


promote_champion_job = dg.define_asset_job("promote_champion", selection=[champion_model],
                                           description="Apply one reviewed decision (run by model_approval_sensor).")


@dg.sensor(job=promote_champion_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Finds versions a reviewer approved or rejected in MLflow (tags review.status, review.by, review.at, review.note) and launches one promote_champion run per decision once it is whole and its tags have stayed unchanged for registry.decision_settle_s.")
def model_approval_sensor(context: dg.SensorEvaluationContext, pipeline_config: PipelineConfigResource, mlflow: MlflowResource):
    from hkgai_pipelines.registry.review import settled_decisions

    registry = _registry(pipeline_config, mlflow)
    # Cursor: per version, the review tags' fingerprint, when it was first seen and which one was
    # launched (registry/review.py). Entries of the older cursor format (a string) are dropped:
    # the run key below still makes a repeated launch a no-op.
    cursor = json.loads(context.cursor) if context.cursor else {}
    state = {version: entry for version, entry in cursor.items() if isinstance(entry, dict)}
    ready, state, waiting = settled_decisions(registry.open_reviews(), state, _clock(),
                                              pipeline_config.registry_params().decision_settle_s)
    context.update_cursor(json.dumps(state, sort_keys=True))
    requests = [
        dg.RunRequest(
            run_key=f"{decision.action}-v{decision.review.version}-{decision.fingerprint}",
            run_config={"ops": {"champion_model": {"config": {"version": decision.review.version, "action": decision.action}}}},
            tags={"hkgai/decision": decision.action, "hkgai/model_version": decision.review.version, "hkgai/reviewer": decision.review.by},
        )
        for decision in ready
    ]
    if requests:
        return requests
    return dg.SkipReason("; ".join(f"v{version}: {why}" for version, why in waiting.items()) or "no review decisions in MLflow")


@dg.sensor(job=promote_champion_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Compares the `champion` alias with the audit log (lake/registry/audit); when the alias was moved, set or removed outside the pipeline (e.g. with the alias pencil in MLflow) and stays so for registry.drift_settle_s, launches a promote_champion run that restores the audited champion and records the incident.")
def champion_drift_sensor(context: dg.SensorEvaluationContext, pipeline_config: PipelineConfigResource, mlflow: MlflowResource,
                          lake: DataLakeResource):
    registry = _registry(pipeline_config, mlflow, lake)
    # A broken audit log raises here: the tick fails in red in the UI, which is what it deserves.
    expected, seq = registry.expected_champion()
    found = registry.alias("champion")
    if found == expected:
        context.update_cursor(None)
        return dg.SkipReason(f"`champion` ({found or 'none'}) agrees with the audit log")
    # Cursor: the drift's fingerprint and when it was first seen; a drift must persist (the
    # moment inside a promotion between its audit record and its alias move is not one).
    fingerprint = f"{found or 'none'}->{expected or 'none'}@{seq}"
    seen = json.loads(context.cursor) if context.cursor else {}
    if seen.get("fingerprint") != fingerprint:
        seen = {"fingerprint": fingerprint, "since": _clock()}
        context.update_cursor(json.dumps(seen))
    waited, settle = _clock() - seen["since"], pipeline_config.registry_params().drift_settle_s
    what = f"`champion` on {found or 'no version'}, audit log says {expected or 'none'}"
    if waited < settle:
        return dg.SkipReason(f"{what}: restoring unless put right within {settle - waited:.0f} s")
    return dg.RunRequest(
        run_key=f"restore-{fingerprint}",
        run_config={"ops": {"champion_model": {"config": {"version": found or "", "action": "restore"}}}},
        tags={"hkgai/decision": "restore", "hkgai/model_version": found or "none"},
    )


registry_assets = [registered_model, champion_model]
registry_checks = [registered_model_gates]
