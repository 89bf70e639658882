"""The model architectures an `init` preset can build: DeepSeek-V3 (the default) and DeepSeek-V4.

A preset picks one with `model.architecture` (`deepseek_v3` when absent, so the V3 presets are
unchanged); every other key under `model` is a field of that architecture's transformers config
(`DeepseekV3Config` / `DeepseekV4Config`). Checkpoints record their `model_type`, so the later
stages, evaluation and serving load either with `AutoModelForCausalLM`.

DeepSeek-V4 as transformers implements it (models/deepseek_v4/modeling_deepseek_v4.py) runs in
eager PyTorch on CPU and GPU alike. Two things this module adds for training it from scratch:

* Hash-routed MoE layers (`mlp_layer_types: hash_moe`) route each token by a frozen table
  `tid2eid[token id]` that transformers initialises to zeros, which would send every token of
  those layers to expert 0 only. `init_model` fills the table with a seeded random choice of
  `num_experts_per_tok` distinct experts per token id; it is a persistent buffer, so it is saved
  with the checkpoint and never trained.
* The compressors of compressed sparse / heavily compressed attention pool fixed windows of the
  whole row and decide what a query may see from its `position_ids` only, so in a packed SFT row
  (position_ids restarting at every conversation, training/packing.py) a conversation would
  attend to the compressed entries of the conversations before it.
  `isolate_packed_sequences` makes them compress each packed conversation on its own.
"""

from __future__ import annotations

import torch

DEFAULT_ARCHITECTURE = "deepseek_v3"
ARCHITECTURES = ("deepseek_v3", "deepseek_v4")
#: The two V4 attention layer types with a compressor (the third, sliding_attention, has none).
COMPRESSED_LAYER_TYPES = ("compressed_sparse_attention", "heavily_compressed_attention")


def architecture_of(model: dict) -> str:
    return model.get("architecture", DEFAULT_ARCHITECTURE)


def config_fields(model: dict) -> dict:
    """The preset's `model` section without `architecture`: the transformers config fields."""
    return {k: v for k, v in model.items() if k != "architecture"}


def _classes(architecture: str):
    import transformers

    names = {"deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM"),
             "deepseek_v4": ("DeepseekV4Config", "DeepseekV4ForCausalLM")}
    if architecture not in names:
        raise ValueError(f"unknown model.architecture {architecture!r}; one of {', '.join(ARCHITECTURES)}")
    config_name, model_name = names[architecture]
    return getattr(transformers, config_name), getattr(transformers, model_name)


def model_config(model: dict, **extra):
    """The transformers config of a preset's `model` section (`extra`: e.g. the token ids)."""
    config_class, _ = _classes(architecture_of(model))
    return config_class(**config_fields(model), **extra)


def init_model(preset, tokenizer):
    """A freshly initialised model of the preset's architecture and shape (seeded), with the
    tokenizer's special-token ids and, for V4, a hash-routing table."""
    _, model_class = _classes(architecture_of(preset.model))
    torch.manual_seed(preset.training.seed)
    config = model_config(preset.model, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    model = model_class(config)
    init_hash_routing(model, preset.training.seed)
    return model


def init_hash_routing(model, seed: int) -> int:
    """Fill every hash-MoE router's `tid2eid` with `num_experts_per_tok` distinct experts per
    token id, drawn uniformly (seeded; a different table per layer). Returns the layers filled."""
    generator = torch.Generator().manual_seed(seed)
    filled = 0
    for module in model.modules():
        table = getattr(module, "tid2eid", None)
        if not isinstance(table, torch.Tensor) or table.is_meta:
            continue
        vocab, top_k = table.shape
        experts = module.num_experts
        choice = torch.rand(vocab, experts, generator=generator).argsort(dim=-1)[:, :top_k]
        table.copy_(choice.to(table.dtype))
        filled += 1
    return filled


def parameter_counts(model: dict) -> dict[str, int]:
    """{"total", "active"} parameters of a preset's `model` section, counted on the real
    transformers model built on the `meta` device (no memory). `active`: per token, with
    `num_experts_per_tok` of the routed experts of each MoE layer. Buffers (the hash-routing
    tables, the router score-correction biases) are not parameters and are not counted."""
    config = model_config(model)
    _, model_class = _classes(architecture_of(model))
    with torch.device("meta"):
        built = model_class(config)
    total = sum(p.numel() for p in built.parameters())
    idle = 0
    for module in built.modules():
        if type(module).__name__.endswith("Experts") and hasattr(module, "gate_up_proj"):
            per_expert = (module.gate_up_proj.numel() + module.down_proj.numel()) // module.num_experts
            idle += per_expert * (module.num_experts - config.num_experts_per_tok)
    return {"total": total, "active": total - idle}


# ---------------------------------------------------------------- packed rows and V4 compressors


def has_compressed_attention(config) -> bool:
    """True for a DeepSeek-V4 config with a compressed sparse or heavily compressed layer."""
    return any(t in COMPRESSED_LAYER_TYPES for t in (getattr(config, "layer_types", None) or ()))


def segment_bounds(position_ids: torch.Tensor) -> list[int]:
    """[0, ..., len] of one row: a segment starts wherever the position does not follow the one
    before (as transformers' `find_packed_sequence_indices` reads packed rows)."""
    starts = (torch.diff(position_ids) != 1).nonzero().flatten() + 1
    return [0, *starts.tolist(), int(position_ids.shape[0])]


def _per_segment(forward, head_dim: int):
    """Wrap a V4 compressor's forward so that, without a KV cache and on rows whose position_ids
    restart (packed conversations), each segment is compressed on its own and a query sees only
    its own segment's compressed entries, at the positions it would have alone."""

    def wrapped(hidden_states, q_residual, position_ids, cache=None, layer_idx=None, **kwargs):
        if cache is not None or position_ids is None or hidden_states.shape[1] < 2:
            return forward(hidden_states, q_residual, position_ids, cache, layer_idx, **kwargs)
        batch, seq_len = hidden_states.shape[:2]
        positions = position_ids.expand(batch, -1)
        bounds = [segment_bounds(positions[b]) for b in range(batch)]
        if all(len(b) == 2 for b in bounds):
            return forward(hidden_states, q_residual, position_ids, cache, layer_idx, **kwargs)
        rows = []
        for b, row_bounds in enumerate(bounds):
            pieces = []
            for start, end in zip(row_bounds[:-1], row_bounds[1:]):
                kv, bias = forward(hidden_states[b:b + 1, start:end], q_residual[b:b + 1, start:end],
                                   positions[b:b + 1, start:end], None, layer_idx, **kwargs)
                pieces.append((start, end, kv[0, 0], None if bias is None else bias[0, 0]))
            rows.append(pieces)
        width = max(sum(kv.shape[0] for _, _, kv, _ in pieces) for pieces in rows)
        dtype = hidden_states.dtype
        if width == 0:
            return hidden_states.new_zeros((batch, 1, 0, head_dim)), None
        entries, biases = [], []
        for pieces in rows:
            row_kv = [kv for _, _, kv, _ in pieces]
            count = sum(kv.shape[0] for kv in row_kv)
            row_kv.append(hidden_states.new_zeros((width - count, head_dim)))
            entries.append(torch.cat(row_kv).to(dtype))
            bias = hidden_states.new_full((seq_len, width), float("-inf"))
            offset = 0
            for start, end, kv, piece_bias in pieces:
                n = kv.shape[0]
                if n:
                    bias[start:end, offset:offset + n] = 0.0 if piece_bias is None else piece_bias
                offset += n
            biases.append(bias)
        return torch.stack(entries)[:, None], torch.stack(biases)[:, None]

    return wrapped


def isolate_packed_sequences(model):
    """Make a DeepSeek-V4 model's compressors respect packed-row boundaries (see the module
    docstring); any other model is returned unchanged. In place; the state dict is untouched."""
    if not has_compressed_attention(model.config):
        return model
    for module in model.modules():
        compressor = getattr(module, "compressor", None)
        if compressor is not None and not getattr(compressor, "_per_segment", False):
            compressor.forward = _per_segment(compressor.forward, compressor.head_dim)
            compressor._per_segment = True
    return model
