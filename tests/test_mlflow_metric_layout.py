"""Metric names on a stage's MLflow run: the loss and learning-rate curves come first on the run
page, the evaluation metrics last, and the end-of-training figures are Dagster's, by name."""

from types import SimpleNamespace

from hkgai_pipelines.evaluation.report import flat_metrics
from hkgai_pipelines.training.common import MetricsCallback, history_summary, mlflow_metric_key


def run_page_layout(keys) -> list[tuple[str, list[str]]]:
    """(section, chart titles) in the order MLflow 3.17's run page ("Model metrics" tab) shows
    them, as its bundle does it (RunsChartsCardConfig.getBaseChartAndSectionConfigs): the section
    is the key up to its last "/", named sections come first sorted, the keys without a "/" last
    under "Model metrics", and charts are sorted by key within a section."""
    sections: dict[str, list[str]] = {}
    for key in sorted(keys):
        section, _, title = key.rpartition("/")
        sections.setdefault(section, []).append(title)
    named = sorted(s for s in sections if s)
    return [(s, sections[s]) for s in named] + ([("Model metrics", sections[""])] if "" in sections else [])


class FakeClient:
    def __init__(self):
        self.logged: list = []

    def log_batch(self, run_id, metrics=()):
        self.logged += metrics

    def latest(self) -> dict[str, float]:
        return {m.key: m.value for m in sorted(self.logged, key=lambda m: m.step)}


def _callback(tokens_per_step=64):
    quiet = SimpleNamespace(log=SimpleNamespace(info=lambda *a: None))
    return MetricsCallback(FakeClient(), "run", quiet, tokens_per_step=tokens_per_step)


def _train(callback, lines):
    """Feed Trainer-like log lines (`(step, logs)`) and end the training."""
    callback.on_train_begin(None, SimpleNamespace(global_step=0), None)
    for step, logs in lines:
        callback.on_log(None, SimpleNamespace(global_step=step), None, logs=logs)
    callback.on_train_end(None, SimpleNamespace(global_step=lines[-1][0]), None)


STEP_LINES = [(step, {"loss": 8.0 - step / 10, "grad_norm": 1.5, "learning_rate": 1e-3, "epoch": step / 20}) for step in (1, 2, 3)]
# Hugging Face's last line: totals over the whole train() call, `train_loss` the mean over all steps.
SUMMARY_LINE = (3, {"train_runtime": 2.0, "train_samples_per_second": 12.0, "train_steps_per_second": 1.5, "total_flos": 1e9,
                    "train_loss": 7.8, "epoch": 0.15})


def test_trainer_lines_get_sectioned_names():
    assert [mlflow_metric_key(k) for k in ("loss", "learning_rate", "grad_norm", "rewards/margins")] == [
        "train/loss", "train/learning_rate", "train/details/grad_norm", "train/details/rewards/margins"]
    assert mlflow_metric_key("train_loss", summary_line=True) == "train_summary/mean_loss_all_steps"
    assert mlflow_metric_key("train_runtime", summary_line=True) == "train_summary/runtime_seconds"
    assert mlflow_metric_key("train_samples_per_second", summary_line=True) == "train_summary/samples_per_second"


def test_summary_figures_are_dagsters_and_the_mean_loss_is_labelled():
    callback = _callback()
    _train(callback, [*STEP_LINES, SUMMARY_LINE])
    logged = callback.client.latest()
    dagster = history_summary(callback)
    assert logged["train_summary/first_loss"] == dagster["first_loss"] == 7.9
    assert logged["train_summary/final_loss"] == dagster["final_loss"] == 7.7
    assert logged["train_summary/tokens_per_second_median"] == dagster["tokens_per_second"] > 0
    assert logged["train_summary/mean_loss_all_steps"] == 7.8
    # At step 0, so that MLflow draws each as a bar labelled with its value (a later step: a dot).
    assert {m.step for m in callback.client.logged if m.key.startswith("train_summary/")} == {0}
    assert not any(key in logged for key in ("loss", "train_loss", "tokens_per_second"))
    # tokens/s only between step lines: the summary line's interval holds the last checkpoint save.
    assert len([h for h in callback.history if "tokens_per_second" in h]) == 3


def test_no_tokens_per_second_when_the_stage_cannot_count_them():
    callback = _callback(tokens_per_step=None)  # DPO
    _train(callback, [*STEP_LINES, SUMMARY_LINE])
    logged = callback.client.latest()
    assert history_summary(callback)["tokens_per_second"] is None
    assert not [k for k in logged if "tokens_per_second" in k]
    assert logged["train_summary/final_loss"] == 7.7


def _report() -> dict:
    by_module = {m: {"safe": 80.0, "refusal": 10.0, "unsafe": 10.0} for m in ("hk_sensitive", "instruction_attacks", "overall")}
    return {"suites": {"value_likelihood": {"by_module": by_module, "lawful_refused": 2.0},
                       "value_generation": {"by_module": by_module},
                       "language_following": {"yue": 90.0, "en": 95.0},
                       "local_knowledge": {"accuracy": 0.5}}}


def test_loss_and_learning_rate_come_first_and_evaluation_last_on_the_run_page():
    callback = _callback()
    dpo_line = (3, {"loss": 0.6, "learning_rate": 1e-4, "rewards/chosen": 0.1, "rewards/margins": 0.2, "logps/chosen": -40.0})
    _train(callback, [*STEP_LINES, dpo_line, SUMMARY_LINE])
    evaluation = flat_metrics(_report())
    assert "eval.value_likelihood.hk_sensitive.safe" in evaluation
    stage_figures = {"heldout_ppl_yue": 400.0}  # finish_stage's
    layout = run_page_layout([*callback.client.latest(), *evaluation, *stage_figures])
    assert layout[0] == ("train", ["learning_rate", "loss"])
    names = [section for section, _ in layout]
    assert names[-1] == "Model metrics" and set(evaluation) <= set(layout[-1][1])
    assert names.index("train_summary") == len(names) - 2
    assert all(name.startswith("train") for name in names[:-1])
