"""What goes into the registry: a pyfunc that serves the aligned checkpoint directory, and the
model card written beside it.

The pyfunc takes a DataFrame with a `prompt` column (or a list of prompts) and returns one reply
per prompt, generated greedily with the checkpoint's own chat template; the checkpoint travels
as the model's artifact, so `models:/hkgai-v1@champion` is self-contained.

It is logged as MLflow *models from code* (`log_chat_model`): the model's artifacts hold the
source of `chat_model.py` (three lines that import `HkgaiChatModel` from this installed package
and call `mlflow.models.set_model`) instead of a cloudpickled object, so loading a version never
unpickles anything; a `python_model.pkl` planted beside it is ignored. What loading still runs
is that logged source file: write access to the artifact store remains code execution for
whoever loads the model, as it is for every MLflow flavour.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc

INPUT_EXAMPLE_PROMPTS = ["點樣續領香港身份證？", "How is the Chief Executive elected?"]
#: The models-from-code entry point logged with every version.
CHAT_MODEL_CODE = Path(__file__).with_name("chat_model.py")


class HkgaiChatModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from hkgai_pipelines.evaluation.model import EvalModel

        self.model = EvalModel.load(context.artifacts["checkpoint"], batch_size=8)

    def predict(self, context, model_input, params=None):
        prompts = list(model_input["prompt"]) if hasattr(model_input, "columns") else list(model_input)
        max_new_tokens = int((params or {}).get("max_new_tokens", 64))
        return [g.text if not g.error else f"[error: {g.error}]" for g in self.model.generate(prompts, max_new_tokens=max_new_tokens)]


def log_chat_model(checkpoint: Path, name: str = "model"):
    """Log the checkpoint as the chat pyfunc, from code (no pickle), with a signature and input
    example, in the active MLflow run; returns MLflow's ModelInfo. MLflow errors propagate."""
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"prompt": INPUT_EXAMPLE_PROMPTS})
    return mlflow.pyfunc.log_model(
        name=name, python_model=str(CHAT_MODEL_CODE), artifacts={"checkpoint": str(checkpoint)},
        signature=infer_signature(example, ["reply"] * len(example)), input_example=example,
    )


#: The chart benchmark_scores writes to the lake and logs on every stage's run and on the
#: registered model's run, under this artifact path.
CHART_ARTIFACT = "evaluation/value_benchmark_by_stage.png"


def chart_artifact_url(run_id: str, base_url: str = "") -> str:
    """The chart on `run_id` as served by the MLflow server's `get-artifact` endpoint: relative
    (resolved against the MLflow UI page showing it, wherever that is served) when `base_url`
    is empty, else absolute under `base_url` (for links from elsewhere, e.g. Dagster)."""
    from urllib.parse import urlencode

    query = urlencode({"path": CHART_ARTIFACT, "run_uuid": run_id})
    return f"{base_url.rstrip('/')}/get-artifact?{query}" if base_url else f"get-artifact?{query}"


def _width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def text_table(headers, rows) -> str:
    """A fixed-width table (columns two spaces apart, numeric columns right-aligned) for a code
    block: MLflow's description renderer shows GFM tables without any cell spacing."""

    def cell(value: object) -> str:
        return (f"{value:.4f}" if isinstance(value, float) else str(value)).replace("\n", " ")

    grid = [[str(h) for h in headers], *([cell(v) for v in row] for row in rows)]
    widths = [max(_width(line[i]) for line in grid) for i in range(len(headers))]

    def numeric(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return text == "-"
        return True

    right = [bool(grid[1:]) and all(numeric(line[i]) for line in grid[1:]) for i in range(len(headers))]

    def fmt(line: list[str]) -> str:
        pads = [" " * (w - _width(t)) for t, w in zip(line, widths)]
        return "  ".join(p + t if r else t + p for t, p, r in zip(line, pads, right)).rstrip()

    return "\n".join([fmt(grid[0]), "  ".join("-" * w for w in widths), *(fmt(line) for line in grid[1:])])


def card_section(title: str, headers, rows, empty: str = "Nothing recorded.") -> str:
    """A captioned table: a level-3 heading, a blank line, the table in a `text` code block (or
    `empty` when there are no rows)."""
    body = f"```text\n{text_table(headers, rows)}\n```" if rows else empty
    return f"### {title}\n\n{body}"


#: The preset's `model.architecture` as the card names it.
ARCHITECTURE_NAMES = {"deepseek_v3": "DeepSeek-V3", "deepseek_v4": "DeepSeek-V4"}


def model_card(*, name: str, preset: str, sources: list[tuple[str, str]],
               tables: dict[str, tuple[str, tuple[str, ...], list[tuple]]], lineage: dict[str, str], gate_thresholds: str,
               chart_url: str | None = None, architecture: str = "deepseek_v3") -> str:
    """The Markdown model card. `tables`: every table benchmark_scores shows, by its metadata key,
    as (caption, headers, rows); each becomes a captioned section (heading, blank line, table),
    in a fixed-width code block so MLflow's description renderer keeps the columns apart.
    `chart_url`: where the Safe / Refusal / Unsafe chart is served (`chart_artifact_url`), or
    None for no chart."""
    chart = (f"### Value benchmark chart: Safe / Refusal / Unsafe by module and stage\n\n"
             f"![Value benchmark: Safe / Refusal / Unsafe by module and stage]({chart_url})\n\n"
             f"Artifact `{CHART_ARTIFACT}` of this version's run.\n\n") if chart_url else ""
    evaluation = "\n\n".join(
        card_section(f"{caption} (`{key}`)", headers, rows, empty="Not measured when benchmark_scores ran.")
        for key, (caption, headers, rows) in tables.items())
    return f"""# {name}: model card

## Intended use

A Hong Kong assistant: questions on Hong Kong law, government services, history and daily life,
in written Cantonese, Traditional Chinese, Simplified Chinese and English, grounded by the
retrieval index (`hkgai ask`) and guarded at input and output. Not for legal, medical or
financial advice, nor for decisions about people.

## Languages

Cantonese (yue), Traditional Chinese (zh-hant), Simplified Chinese (zh-hans), English (en).

## Model

{ARCHITECTURE_NAMES.get(architecture, architecture)} architecture, preset `{preset}`: continued pretraining on the curated corpus,
full-parameter SFT, DPO alignment to the project's value principles.

## Data sources and licences

{card_section("Training data sources", ("source", "licence"), sources)}

## Evaluation (benchmark_scores)

Every table the Dagster asset `benchmark_scores` shows (its metadata key in brackets), for the
base, SFT and aligned stages; figures are percentages unless the column says otherwise. The
guardrail's benign false-block rate is in the README.

{chart}{evaluation}

## Promotion gates (params.yaml `registry.gates`)

```text
{gate_thresholds}
```

## Lineage

{card_section("Lineage of this version", ("item", "value"), sorted(lineage.items()))}

## Known limitations

- The value benchmark and the training data were written by the same team: scores are a
  regression signal for this pipeline, not a comparison with other models.
- Small presets (cpu-demo) produce fluent-looking noise; their scores test the plumbing.
- The guardrail's classifier misses most harm that lies in a long context, and the rules block
  some questions about doxxing law.
"""
