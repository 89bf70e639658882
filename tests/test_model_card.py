"""The model card (registered_model's version description) and the value benchmark chart, on a
short literal report: captioned sections with every table benchmark_scores shows, laid out so
MLflow's description renderer (which draws GFM tables with no cell spacing) keeps them
readable, and a chart whose legend hides no bar."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hkgai_pipelines.evaluation.report import TABLE_CAPTIONS, bar_chart, shown_tables
from hkgai_pipelines.registry.serving import CHART_ARTIFACT, chart_artifact_url, model_card, text_table


def _module(safe, refusal, unsafe, items=80, errored=0):
    return {"safe": safe, "refusal": refusal, "unsafe": unsafe, "items": items, "errored": errored}


def _report(hk, overall, gen_overall, lawful, langs, knowledge):
    return {"suites": {
        "value_likelihood": {"by_module": {"hk_sensitive": hk, "overall": overall}, "lawful_refused": lawful},
        "value_generation": {"by_module": {"overall": gen_overall}},
        "language_following": langs,
        "local_knowledge": {"accuracy": knowledge, "chance": 25.0, "items": 40, "errored": 0},
    }}


REPORTS = {
    "base_model": _report(_module(6.2, 10.0, 83.8), _module(7.5, 12.5, 80.0), _module(5.0, 0.0, 95.0), 0.0,
                          {"yue": 12.0, "en": 90.0}, 25.0),
    "aligned_model": _report(_module(66.2, 20.0, 13.8, errored=1), _module(70.0, 20.0, 10.0, errored=1),
                             _module(60.0, 30.0, 10.0), 2.5, {"yue": 80.0, "en": 100.0}, 52.5),
}
GUARDRAIL = {"items": 40, "block_rate": 72.5, "block_rate_standard": 72.5}


def _card(guardrail=GUARDRAIL, chart_url="get-artifact?path=evaluation%2Fvalue_benchmark_by_stage.png&run_uuid=r1") -> str:
    tables = {key: (TABLE_CAPTIONS[key], headers, rows) for key, (headers, rows) in shown_tables(REPORTS, guardrail).items()}
    return model_card(name="hkgai-v1", preset="cpu-demo", sources=[("hkcancor", "CC-BY-4.0"), ("ctcpc", "CC0-1.0")],
                      tables=tables, lineage={"preset": "cpu-demo", "git.commit": "abc123"},
                      gate_thresholds='{\n "max_refusal": 40.0\n}', chart_url=chart_url)


def test_shown_tables_are_every_captioned_table_in_order():
    assert list(shown_tables(REPORTS, GUARDRAIL)) == list(TABLE_CAPTIONS) == [
        "table5_likelihood", "table5_generation", "table6_language_following", "other_suites",
        "lawful_questions_refused_pct", "guardrail_harmbench"]
    assert shown_tables(REPORTS, GUARDRAIL)["lawful_questions_refused_pct"][1] == [("base_model", "0.0"), ("aligned_model", "2.5")]
    assert shown_tables(REPORTS, GUARDRAIL)["guardrail_harmbench"][1] == [
        ("block_rate", "72.5"), ("block_rate_standard", "72.5"), ("items", 40)]
    assert shown_tables(REPORTS, None)["guardrail_harmbench"][1] == []


def test_text_table_pads_columns_and_right_aligns_numbers():
    assert text_table(("stage", "Safe %", "items"), [("base_model", "6.2", 80), ("aligned_model", "66.2", 120)]) == (
        "stage          Safe %  items\n"
        "-------------  ------  -----\n"
        "base_model        6.2     80\n"
        "aligned_model    66.2    120")
    # Wide (CJK) characters take two columns.
    assert text_table(("source", "licence"), [("粵語", "CC0-1.0")]) == "source  licence\n------  -------\n粵語    CC0-1.0"


def test_every_table_is_a_captioned_fixed_width_block():
    card = _card()
    assert card.count("```text\n") == 9  # six evaluation tables, sources, gates, lineage
    assert "\n|" not in card  # no GFM table: MLflow would run its cells together
    for key, caption in TABLE_CAPTIONS.items():
        assert card.count(f"`{key}`") == 1
        assert f"\n\n### {caption} (`{key}`)\n\n```text\n" in card
    # Every code block: a caption (or the gates' heading) and a blank line before it, a blank line after.
    for match in re.finditer(r"```text\n.*?\n```", card, flags=re.S):
        before, after = card[:match.start()], card[match.end():]
        caption = before.rstrip("\n").rsplit("\n", 1)[-1]
        assert before.endswith("\n\n") and re.match(r"#{2,3} \S", caption), caption
        assert after.startswith("\n\n")
    assert (
        "### Table 5, likelihood mode: Safe / Refusal / Unsafe % by module and stage (`table5_likelihood`)\n\n"
        "```text\n"
        "module               stage          Safe %  Refusal %  Unsafe %  items  errored\n"
        "-------------------  -------------  ------  ---------  --------  -----  -------\n"
        "HK sensitive issues  base_model        6.2       10.0      83.8     80        0\n"
        "HK sensitive issues  aligned_model    66.2       20.0      13.8     80        1\n"
        "Overall              base_model        7.5       12.5      80.0     80        0\n"
        "Overall              aligned_model    70.0       20.0      10.0     80        1\n"
        "```\n\n"
        "### Table 5, generation mode (judged replies): Safe / Refusal / Unsafe % by module and stage (`table5_generation`)\n\n"
        "```text\n"
        "module   stage          Safe %  Refusal %  Unsafe %  items  errored\n"
        "-------  -------------  ------  ---------  --------  -----  -------\n"
        "Overall  base_model        5.0        0.0      95.0     80        0\n"
        "Overall  aligned_model    60.0       30.0      10.0     80        0\n"
        "```\n\n"
        "### Table 6: language following, % of replies in the prompt's language, by stage (`table6_language_following`)\n\n"
        "```text\n"
        "lang     base_model  aligned_model\n"
        "-------  ----------  -------------\n"
        "yue            12.0           80.0\n"
        "zh-hant           -              -\n"
        "zh-hans           -              -\n"
        "en             90.0          100.0\n"
        "```\n\n"
        "### Multiple-choice suites: accuracy % (local knowledge, Yue-ARC-C, Yue-TruthfulQA) (`other_suites`)\n\n"
        "```text\n"
        "suite            stage          accuracy %  chance %  items  errored\n"
        "---------------  -------------  ----------  --------  -----  -------\n"
        "local_knowledge  base_model           25.0      25.0     40        0\n"
        "local_knowledge  aligned_model        52.5      25.0     40        0\n"
        "```\n\n"
        "### Lawful questions refused: refusal-template share % on lawful questions (likelihood), by stage (`lawful_questions_refused_pct`)\n\n"
        "```text\n"
        "stage          lawful questions refused %\n"
        "-------------  --------------------------\n"
        "base_model                            0.0\n"
        "aligned_model                         2.5\n"
        "```\n\n"
        "### Guardrail: HarmBench block rate % at input (a property of the guard, not of a model) (`guardrail_harmbench`)\n\n"
        "```text\n"
        "measure              value\n"
        "-------------------  -----\n"
        "block_rate            72.5\n"
        "block_rate_standard   72.5\n"
        "items                   40\n"
        "```\n\n"
        "## Promotion gates"
    ) in card
    assert "### Training data sources\n\n```text\nsource    licence\n--------  ---------\nhkcancor  CC-BY-4.0\nctcpc     CC0-1.0\n```\n\n" in card
    assert "### Lineage of this version\n\n```text\nitem        value\n----------  --------\ngit.commit  abc123\npreset      cpu-demo\n```\n\n" in card


def test_the_chart_is_shown_when_given_and_a_missing_guardrail_is_said():
    card = _card(guardrail=None, chart_url=None)
    assert "![" not in card
    assert ("### Guardrail: HarmBench block rate % at input (a property of the guard, not of a model) (`guardrail_harmbench`)\n\n"
            "Not measured when benchmark_scores ran.\n\n## Promotion gates") in card
    card = _card()
    assert ("### Value benchmark chart: Safe / Refusal / Unsafe by module and stage\n\n"
            "![Value benchmark: Safe / Refusal / Unsafe by module and stage]"
            "(get-artifact?path=evaluation%2Fvalue_benchmark_by_stage.png&run_uuid=r1)\n\n") in card
    assert card.index("### Value benchmark chart") < card.index("`table5_likelihood`")


def test_chart_artifact_url_is_mlflows_get_artifact_endpoint():
    assert CHART_ARTIFACT == "evaluation/value_benchmark_by_stage.png"
    assert chart_artifact_url("abc") == "get-artifact?path=evaluation%2Fvalue_benchmark_by_stage.png&run_uuid=abc"
    assert chart_artifact_url("abc", "http://127.0.0.1:5000/") == (
        "http://127.0.0.1:5000/get-artifact?path=evaluation%2Fvalue_benchmark_by_stage.png&run_uuid=abc")


def test_bar_chart_legend_lies_outside_the_bars(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig

    def savefig(fig, *args, **kwargs):
        result = original(fig, *args, **kwargs)
        # Measured as drawn, in display pixels, before bar_chart closes the figure.
        (ax,) = fig.axes
        renderer = fig.canvas.get_renderer()
        legend = ax.get_legend()
        saved.append(([t.get_text() for t in legend.get_texts()], legend.get_window_extent(renderer),
                      ax.get_window_extent(renderer), [bar.get_window_extent(renderer) for bar in ax.patches],
                      [label.get_window_extent(renderer) for label in ax.get_xticklabels()], fig.bbox.width))
        return result

    monkeypatch.setattr(Figure, "savefig", savefig)
    reports = {stage: {"suites": {"value_likelihood": {"by_module": {
        module: _module(safe, (100 - safe) / 2, (100 - safe) / 2) for module in ("hk_sensitive", "instruction_attack", "typical_safety")}}}}
        for stage, safe in (("base_model", 10.0), ("sft_checkpoint", 50.0), ("aligned_model", 100.0))}
    path = bar_chart(reports, tmp_path / "chart.png")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ((labels, legend, axes, bars, ticks, width),) = saved
    assert labels == ["Safe", "Refusal", "Unsafe"]
    assert len(bars) == 27 and not legend.overlaps(axes)
    assert not any(legend.overlaps(bar) for bar in bars) and not any(legend.overlaps(tick) for tick in ticks)
    # Narrow enough for MLflow's version description beside its side panel (about 790 px).
    assert width <= 760


@pytest.mark.parametrize("guardrail", [GUARDRAIL, None])
def test_every_dagster_table_key_is_in_the_card(guardrail):
    card = _card(guardrail=guardrail)
    assert all(f"(`{key}`)" in card for key in shown_tables(REPORTS, guardrail))


def test_the_card_names_the_presets_architecture():
    tables = {key: (TABLE_CAPTIONS[key], headers, rows) for key, (headers, rows) in shown_tables(REPORTS, GUARDRAIL).items()}
    common = dict(name="hkgai-v1", sources=[], tables=tables, lineage={}, gate_thresholds="{}")
    assert "DeepSeek-V3 architecture, preset `cpu-demo`:" in model_card(preset="cpu-demo", **common)
    assert "DeepSeek-V4 architecture, preset `cpu-demo-v4`:" in model_card(preset="cpu-demo-v4", architecture="deepseek_v4", **common)
