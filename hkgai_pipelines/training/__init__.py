"""Model chain: presets, tokenizers, packed datasets and the training entry points
(`python -m hkgai_pipelines.training.{pretrain,sft,dpo}`). No Dagster imports here except the
Pipes side of the entry points (`dagster_pipes`, the small protocol library)."""
