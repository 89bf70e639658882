"""Model presets (configs/presets/*.yaml) as validated dataclasses.

A preset fixes the model shape, the tokenizer and the training hyperparameters of every stage.
Impossible shapes are refused before any training starts, with the field named. The preset's
hash (of its parsed content) goes to MLflow with every hyperparameter, so a run says exactly
what it trained.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml


class PresetError(ValueError):
    pass


@dataclass(frozen=True)
class StageConfig:
    """Hyperparameters of one training stage (pretrain, sft or dpo)."""

    steps: int
    #: Sequences per optimizer step (per device; no gradient accumulation on CPU).
    batch_size: int
    learning_rate: float
    warmup_steps: int = 0
    #: Checkpoint every N steps; resume starts from the newest one.
    save_steps: int = 50
    #: DPO only: the KL-penalty strength (trl's default is 0.1 as well).
    beta: float = 0.1
    #: SFT only: pack whole conversations into rows of seq_len tokens (training/packing.py)
    #: instead of padding each batch to its longest conversation; a row then counts as one sequence.
    pack: bool = False


@dataclass(frozen=True)
class TrainingConfig:
    seq_len: int
    dtype: str
    seed: int
    pretrain: StageConfig
    sft: StageConfig
    dpo: StageConfig
    #: Sampling weights of the corpus languages for continued pretraining.
    language_mix: dict[str, float] = field(default_factory=dict)
    #: DeepSpeed config used whenever CUDA is present (None: plain Trainer).
    deepspeed: str | None = None
    #: How the routed experts run: `eager` (a Python loop over experts), `grouped_mm` (one
    #: grouped GEMM, CUDA) or `batched_mm` (see transformers' ExpertsInterface).
    experts_implementation: str = "eager"
    #: Chunked linear + cross-entropy instead of materialising the full logits (losses.py).
    fused_cross_entropy: bool = False
    #: torch.compile each decoder layer (CUDA only; the first steps pay the compilation).
    compile_layers: bool = False


@dataclass(frozen=True)
class ModelPreset:
    name: str
    #: `init` builds `model` from scratch; `pretrained` loads `checkpoint`.
    mode: str
    tokenizer: dict
    training: TrainingConfig
    model: dict = field(default_factory=dict)
    checkpoint: str | None = None

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def flat_params(self) -> dict[str, str]:
        """Every field as `section.key` strings, for MLflow params."""
        out: dict[str, str] = {"preset": self.name, "preset_hash": self.hash, "mode": self.mode}

        def walk(prefix: str, value) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), inner)
            else:
                out[prefix] = str(value)

        walk("model", self.model)
        walk("tokenizer", self.tokenizer)
        walk("training", asdict(self.training))
        if self.checkpoint:
            out["checkpoint"] = self.checkpoint
        return out


def validate_model_shape(model: dict, where: str, seq_len: int | None = None) -> None:
    """Refuse impossible shapes, naming the field. `model.architecture` picks the rules:
    `deepseek_v3` (the default) or `deepseek_v4` (training/architectures.py)."""
    from hkgai_pipelines.training.architectures import ARCHITECTURES, architecture_of

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise PresetError(f"{where}: {message}")

    architecture = architecture_of(model)
    need(architecture in ARCHITECTURES, f"model.architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    if architecture == "deepseek_v4":
        _validate_v4_shape(model, need, seq_len)
        return
    hidden, heads = model.get("hidden_size", 0), model.get("num_attention_heads", 0)
    need(hidden > 0 and heads > 0, "hidden_size and num_attention_heads must be positive")
    need(hidden % heads == 0, f"num_attention_heads ({heads}) must divide hidden_size ({hidden})")
    experts, per_token = model.get("n_routed_experts", 0), model.get("num_experts_per_tok", 0)
    need(0 < per_token <= experts, f"num_experts_per_tok ({per_token}) must be between 1 and n_routed_experts ({experts})")
    groups, topk_groups = model.get("n_group", 1), model.get("topk_group", 1)
    need(experts % groups == 0, f"n_group ({groups}) must divide n_routed_experts ({experts})")
    need(topk_groups <= groups, f"topk_group ({topk_groups}) must not exceed n_group ({groups})")
    need(model.get("qk_rope_head_dim", 0) % 2 == 0, "qk_rope_head_dim must be even (rotary pairs)")
    need(model.get("kv_lora_rank", 0) > 0, "kv_lora_rank must be positive (multi-head latent attention)")
    layers, dense = model.get("num_hidden_layers", 0), model.get("first_k_dense_replace", 0)
    need(0 <= dense <= layers, f"first_k_dense_replace ({dense}) must be within num_hidden_layers ({layers})")


#: DeepSeek-V4's attention and MoE layer types (transformers' configuration_deepseek_v4.py).
V4_LAYER_TYPES = ("sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention")
V4_MLP_LAYER_TYPES = ("hash_moe", "moe")


def _validate_v4_shape(model: dict, need, seq_len: int | None) -> None:
    """DeepSeek-V4: shared-KV multi-query attention with partial RoPE, a grouped low-rank output
    projection, per-layer sliding / compressed sparse (CSA, with the lightning indexer) /
    heavily compressed (HCA) attention, hyper-connections, and MoE layers routed by a learned
    top-k or by a token-id hash. Every key must be a DeepseekV4Config field: V3 fields such as
    kv_lora_rank or first_k_dense_replace would otherwise be accepted and silently ignored."""
    from transformers import DeepseekV4Config

    known = set(DeepseekV4Config.__dataclass_fields__) | {"architecture"}
    unknown = sorted(set(model) - known)
    need(not unknown, f"model.{', model.'.join(unknown)}: not DeepSeek-V4 config field(s)")
    defaults = DeepseekV4Config.__dataclass_fields__

    def get(key: str):
        return model.get(key, defaults[key].default)

    hidden, heads, head_dim = get("hidden_size"), get("num_attention_heads"), get("head_dim")
    need(hidden > 0 and heads > 0 and head_dim > 0, "hidden_size, num_attention_heads and head_dim must be positive")
    need(get("num_key_value_heads") == 1, "num_key_value_heads must be 1 (DeepSeek-V4 attention shares one KV head)")
    factor = model.get("partial_rotary_factor", DeepseekV4Config.default_partial_rotary_factor)
    rope = head_dim * factor
    need(rope == int(rope) and int(rope) % 2 == 0 and 0 < rope <= head_dim,
         f"head_dim x partial_rotary_factor ({head_dim} x {factor}) must be an even number of rotary channels, at most head_dim")
    groups = get("o_groups")
    need(groups > 0 and heads % groups == 0, f"o_groups ({groups}) must divide num_attention_heads ({heads})")
    experts, per_token = get("n_routed_experts"), get("num_experts_per_tok")
    need(0 < per_token <= experts, f"num_experts_per_tok ({per_token}) must be between 1 and n_routed_experts ({experts})")
    layers = get("num_hidden_layers")
    need(layers > 0, "num_hidden_layers must be positive")
    for key, allowed in (("layer_types", V4_LAYER_TYPES), ("mlp_layer_types", V4_MLP_LAYER_TYPES)):
        types = model.get(key)
        if types is None:
            continue
        need(isinstance(types, list) and len(types) == layers, f"{key} must list one entry per layer ({layers})")
        bad = sorted(set(types) - set(allowed))
        need(not bad, f"{key}: {', '.join(bad)} not one of {', '.join(allowed)}")
    need(get("sliding_window") > 0, "sliding_window must be positive")
    rates = {**DeepseekV4Config.default_compress_rates, **(model.get("compress_rates") or {})}
    need(set(rates) <= set(V4_LAYER_TYPES[1:]), "compress_rates keys must be compressed_sparse_attention, heavily_compressed_attention")
    need(all(isinstance(r, int) and r >= 2 for r in rates.values()), "compress_rates must be integers of at least 2")
    used = set(model.get("layer_types") or V4_LAYER_TYPES[1:])
    if "compressed_sparse_attention" in used:
        need(get("index_topk") > 0 and get("index_n_heads") > 0, "index_topk and index_n_heads must be positive")
        need(get("index_head_dim") >= rope, f"index_head_dim ({get('index_head_dim')}) must hold the {int(rope)} rotary channels")
    if seq_len:
        for layer_type in sorted(used & set(rates)):
            need(rates[layer_type] <= seq_len, f"compress_rates.{layer_type} ({rates[layer_type]}) exceeds training.seq_len "
                 f"({seq_len}): those layers would train without a single compressed entry")
    need(get("hc_mult") >= 1 and get("hc_sinkhorn_iters") >= 1, "hc_mult and hc_sinkhorn_iters must be at least 1")
    # No stage adds a load-balancing loss (the Trainer never asks for router logits, as with V3);
    # trl's DPOTrainer would add one whenever this is non-zero, reading config.num_experts, which
    # DeepseekV4Config does not have (trl 1.16: AttributeError).
    need(model.get("router_aux_loss_coef") == 0, "router_aux_loss_coef must be set to 0.0 (no stage trains a "
         "load-balancing loss; DPO would otherwise fail in trl reading config.num_experts)")


def load_preset(name_or_path: str, config_dir: Path | None = None) -> ModelPreset:
    path = Path(name_or_path)
    if not path.suffix:
        path = Path(config_dir or Path(__file__).resolve().parents[2] / "configs") / "presets" / f"{name_or_path}.yaml"
    if not path.exists():
        raise PresetError(f"preset not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    where = str(path)
    try:
        training_data = dict(data["training"])
        stages = {stage: StageConfig(**training_data.pop(stage)) for stage in ("pretrain", "sft", "dpo")}
        training = TrainingConfig(**training_data, **stages)
        preset = ModelPreset(
            name=data["name"], mode=data["mode"], tokenizer=dict(data["tokenizer"]), training=training,
            model=dict(data.get("model") or {}), checkpoint=data.get("checkpoint"),
        )
    except (KeyError, TypeError) as error:
        raise PresetError(f"{where}: {error}") from None
    if preset.training.experts_implementation not in ("eager", "grouped_mm", "batched_mm"):
        raise PresetError(f"{where}: training.experts_implementation must be eager, grouped_mm or batched_mm")
    if preset.mode not in ("init", "pretrained"):
        raise PresetError(f"{where}: mode must be 'init' or 'pretrained', got {preset.mode!r}")
    if preset.mode == "init":
        validate_model_shape(preset.model, where, preset.training.seq_len)
        if preset.tokenizer.get("vocab_size") != preset.model.get("vocab_size"):
            raise PresetError(
                f"{where}: tokenizer.vocab_size ({preset.tokenizer.get('vocab_size')}) differs from "
                f"model.vocab_size ({preset.model.get('vocab_size')})"
            )
    elif not preset.checkpoint:
        raise PresetError(f"{where}: mode 'pretrained' needs a checkpoint path or URI")
    return preset
