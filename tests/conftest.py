"""Shared fixtures: a temporary HKGAI_HOME and the project's own params."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hkgai_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HKGAI_HOME", str(home))
    monkeypatch.delenv("HKGAI_PROFILE", raising=False)
    return home


@pytest.fixture(scope="session")
def curation_params():
    from hkgai_pipelines.params import load_curation_params

    return load_curation_params(PROJECT_ROOT / "params.yaml")


@pytest.fixture(scope="module")
def ray_session():
    """One embedded Ray for a test module: starting Ray takes seconds, and the curation engine
    (`hkgai curate`, `cleaned_corpus`) uses a running session instead of starting its own.
    Three CPUs, so that runs with 1, 2 and 3 workers all get theirs."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def use_embedder():
    from hkgai_pipelines.rag.embedders import UniversalSentenceEncoder

    return UniversalSentenceEncoder()


class CountingEmbedder:
    """Wraps a real embedder and counts the texts it embeds."""

    def __init__(self, inner, fail_after: int | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.texts = 0
        self.fail_after = fail_after

    def embed(self, texts):
        if self.fail_after is not None and self.texts + len(texts) > self.fail_after:
            raise RuntimeError("embedder failed half-way")
        self.texts += len(texts)
        return self.inner.embed(texts)


@pytest.fixture
def counting_embedder(use_embedder):
    return CountingEmbedder(use_embedder)


#: A DeepSeek-V3 model small enough for CPU tests (MLA attention, 4 routed experts + 1 shared).
TINY_DEEPSEEK = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8,
    qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
    n_group=1, topk_group=1, first_k_dense_replace=0,
)


@pytest.fixture
def tiny_deepseek():
    def build(**changes):
        import torch
        from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

        torch.manual_seed(0)
        return DeepseekV3ForCausalLM(DeepseekV3Config(**{**TINY_DEEPSEEK, **changes}))

    return build
