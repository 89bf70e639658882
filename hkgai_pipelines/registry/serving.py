"""What goes into the registry: a pyfunc that serves the aligned checkpoint directory, and the
model card written beside it.

The pyfunc takes a DataFrame with a `prompt` column (or a list of prompts) and returns one reply
per prompt, generated greedily with the checkpoint's own chat template; the checkpoint travels
as the model's artifact, so `models:/hkgai-v1@champion` is self-contained.
"""

from __future__ import annotations

import mlflow.pyfunc

INPUT_EXAMPLE_PROMPTS = ["點樣續領香港身份證？", "How is the Chief Executive elected?"]


class HkgaiChatModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from hkgai_pipelines.evaluation.model import EvalModel

        self.model = EvalModel.load(context.artifacts["checkpoint"], batch_size=8)

    def predict(self, context, model_input, params=None):
        prompts = list(model_input["prompt"]) if hasattr(model_input, "columns") else list(model_input)
        max_new_tokens = int((params or {}).get("max_new_tokens", 64))
        return [g.text if not g.error else f"[error: {g.error}]" for g in self.model.generate(prompts, max_new_tokens=max_new_tokens)]


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
