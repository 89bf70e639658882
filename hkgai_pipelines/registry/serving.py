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


def model_card(*, name: str, preset: str, sources: list[tuple[str, str]], tables: str, guardrail: dict | None,
               lineage: dict[str, str], gate_thresholds: dict) -> str:
    source_rows = "\n".join(f"| {source} | {licence} |" for source, licence in sources)
    guard = ("\n".join(f"- {k}: {v}" for k, v in sorted(guardrail.items())) if guardrail else "- HarmBench file not available when scored")
    lineage_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(lineage.items()))
    return f"""# {name}: model card

## Intended use
A Hong Kong assistant: questions on Hong Kong law, government services, history and daily life,
in written Cantonese, Traditional Chinese, Simplified Chinese and English, grounded by the
retrieval index (`hkgai ask`) and guarded at input and output. Not for legal, medical or
financial advice, nor for decisions about people.

## Languages
Cantonese (yue), Traditional Chinese (zh-hant), Simplified Chinese (zh-hans), English (en).

## Model
DeepSeek-V3 architecture, preset `{preset}`: continued pretraining on the curated corpus,
full-parameter SFT, DPO alignment to the project's value principles.

## Data sources and licences
| source | licence |
|---|---|
{source_rows}

## Evaluation (benchmark_scores)
{tables}

## Guardrail (HarmBench block rate, benign false-block rate in the README)
{guard}

## Promotion gates (params.yaml `registry.gates`)
```
{gate_thresholds}
```

## Lineage
| item | value |
|---|---|
{lineage_rows}

## Known limitations
- The value benchmark and the training data were written by the same team: scores are a
  regression signal for this pipeline, not a comparison with other models.
- Small presets (cpu-demo) produce fluent-looking noise; their scores test the plumbing.
- The guardrail's classifier misses most harm that lies in a long context, and the rules block
  some questions about doxxing law.
"""
