"""DeepSeek-V4 presets: shapes and parameter counts, what the project adds to transformers' V4
(hash-routing table, packed conversations kept apart, one-at-a-time generation), and the whole
chain on a tiny V4 model: pretraining, SFT with packing, DPO, evaluation, the registry and
`hkgai ask` answering from the registered champion."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from hkgai_pipelines.training.architectures import (
    has_compressed_attention, init_hash_routing, init_model, isolate_packed_sequences, model_config, parameter_counts,
)
from hkgai_pipelines.training.presets import PresetError, load_preset

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: as quick for these tiny matrices, and on CPU cores shared with other
    jobs two OpenMP threads waiting on each other made the steps up to 10 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _v4_preset_dir(tmp_path: Path, **changes) -> Path:
    """A config dir holding cpu-demo-v4 with `changes` ("section.key": value) applied."""
    data = yaml.safe_load((PROJECT_ROOT / "configs" / "presets" / "cpu-demo-v4.yaml").read_text())
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split(".")
        for key in path:
            target = target[key]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    folder = tmp_path / "configs" / "presets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu-demo-v4.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "configs"


def _tiny_v4(vocab_size: int = 64, **changes):
    """The cpu-demo-v4 shape with a small vocabulary, randomly initialised (seeded)."""
    from transformers import DeepseekV4ForCausalLM

    shape = {**load_preset("cpu-demo-v4").model, "vocab_size": vocab_size, **changes}
    torch.manual_seed(0)
    model = DeepseekV4ForCausalLM(model_config(shape, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    init_hash_routing(model, 0)
    return model


# ------------------------------------------------------------------ presets


def test_v4_presets_load_with_their_counted_parameters():
    cpu, gpu = load_preset("cpu-demo-v4"), load_preset("gpu-h100-v4")
    assert cpu.model["architecture"] == gpu.model["architecture"] == "deepseek_v4"
    assert cpu.flat_params()["model.architecture"] == "deepseek_v4"
    # The figures in the presets' comments, counted on the real model built on the meta device.
    assert parameter_counts(cpu.model) == {"total": 815_747, "active": 742_019}
    gpu_counts = parameter_counts(gpu.model)
    assert gpu_counts == {"total": 1_141_852_301, "active": 646_400_141}
    assert 0.8e9 < gpu_counts["total"] < 1.3e9
    # The V3 presets are untouched: no architecture key (so the same preset hash), V3 models.
    for name in ("cpu-demo", "gpu-h100"):
        preset = load_preset(name)
        assert "architecture" not in preset.model and "model.architecture" not in preset.flat_params()
        assert model_config(preset.model).model_type == "deepseek_v3"
    assert 0.8e9 < parameter_counts(load_preset("gpu-h100").model)["total"] < 1.3e9  # V3 and V4 GPU sizes match


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model.architecture": "deepseek_v5"}, "model.architecture must be one of deepseek_v3, deepseek_v4"),
        ({"model.kv_lora_rank": 16}, r"model.kv_lora_rank: not DeepSeek-V4 config field"),
        ({"model.num_key_value_heads": 4}, "num_key_value_heads must be 1"),
        ({"model.o_groups": 3}, r"o_groups \(3\) must divide num_attention_heads \(4\)"),
        ({"model.partial_rotary_factor": 0.3}, "must be an even number of rotary channels"),
        ({"model.layer_types": ["sliding_attention"]}, r"layer_types must list one entry per layer \(3\)"),
        ({"model.mlp_layer_types": ["hash_moe", "moe", "dense"]}, "mlp_layer_types: dense not one of hash_moe, moe"),
        ({"model.index_head_dim": 4}, r"index_head_dim \(4\) must hold the 8 rotary channels"),
        ({"training.seq_len": 12}, r"compress_rates.heavily_compressed_attention \(16\) exceeds training.seq_len \(12\)"),
        ({"model.router_aux_loss_coef": None}, "router_aux_loss_coef must be set to 0.0"),
        ({"model.num_experts_per_tok": 5}, r"num_experts_per_tok \(5\) must be between 1 and n_routed_experts \(4\)"),
    ],
)
def test_impossible_v4_presets_are_refused(tmp_path, changes, message):
    with pytest.raises(PresetError, match=message):
        load_preset("cpu-demo-v4", _v4_preset_dir(tmp_path, **changes))


# ------------------------------------------------------------------ what the project adds


def test_hash_routing_table_is_seeded_spread_and_distinct():
    from hkgai_pipelines.training.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["佢哋聽日會去旺角食飯。", "The MTR opened in 1979."] * 80, vocab_size=300)
    preset = load_preset("cpu-demo-v4")
    model = init_model(preset, tokenizer)
    routers = [m for m in model.modules() if hasattr(m, "tid2eid")]
    assert len(routers) == preset.model["mlp_layer_types"].count("hash_moe") == 1
    table = routers[0].tid2eid
    # transformers leaves zeros (every token to expert 0); each token now has 2 distinct experts,
    # and every expert takes about a quarter x 2 of the vocabulary.
    assert all(len(set(row)) == 2 for row in table.tolist())
    counts = torch.bincount(table.flatten(), minlength=4)
    assert counts.min() > 0.4 * table.shape[0] and counts.max() < 0.6 * table.shape[0]
    assert torch.equal(table, init_model(preset, tokenizer).model.layers[0].mlp.gate.tid2eid)  # seeded


def test_packed_conversations_do_not_see_each_other_through_the_compressors():
    """transformers' CSA/HCA compressors pool windows of the whole row: in a packed row a
    conversation would read the compressed entries of the one before. Per segment, each
    conversation's logits are those it has alone."""
    model = _tiny_v4().eval()
    torch.manual_seed(1)
    first, second, third = (torch.randint(3, 64, (1, n)) for n in (40, 52, 5))
    row = torch.cat([first, second, third], 1)
    positions = torch.cat([torch.arange(40), torch.arange(52), torch.arange(5)])[None]
    with torch.no_grad():
        alone = model(input_ids=second, use_cache=False).logits[0]
        leaky = model(input_ids=row, position_ids=positions, use_cache=False).logits[0, 40:92]
        isolate_packed_sequences(model)
        packed = model(input_ids=torch.cat([row, row.flip(1)]), position_ids=torch.cat([positions, positions]), use_cache=False).logits
    assert (leaky - alone).abs().max() > 1e-3  # what transformers alone does
    assert torch.allclose(packed[0, 40:92], alone, atol=1e-5)
    assert torch.allclose(packed[0, :40], model(input_ids=first, use_cache=False).logits[0], atol=1e-5)


def test_every_weight_trains_except_the_lightning_indexer():
    """The indexer's top-k only masks the compressed entries: no gradient reaches its weights in
    transformers' implementation (the README says so; this pins it)."""
    model = _tiny_v4()
    batch = torch.randint(3, 64, (2, 64))
    model(input_ids=batch, labels=batch, use_cache=False).loss.backward()
    untrained = {name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()}
    assert untrained and all(".compressor.indexer." in name for name in untrained)
    assert not any(".compressor.indexer." in name for name, p in model.named_parameters() if name not in untrained)


def test_speed_settings_apply_to_v4():
    from dataclasses import replace

    from hkgai_pipelines.training.common import prepare_for_training

    model = _tiny_v4()
    batch = torch.randint(3, 64, (2, 48))
    with torch.no_grad():
        expected = model(input_ids=batch, labels=batch, use_cache=False).loss
    gpu = load_preset("gpu-h100-v4")
    prepare_for_training(model, replace(gpu, training=replace(gpu.training, experts_implementation="batched_mm")))
    with torch.no_grad():
        fused = model(input_ids=batch, labels=batch, use_cache=False)
    assert fused.logits is None and torch.allclose(fused.loss, expected, atol=1e-5)


def test_generation_is_one_prompt_at_a_time_where_left_padding_would_change_it(tiny_deepseek):
    from hkgai_pipelines.evaluation.model import left_padding_is_exact

    assert has_compressed_attention(_tiny_v4().config) and not left_padding_is_exact(_tiny_v4())
    assert left_padding_is_exact(_tiny_v4(layer_types=["sliding_attention"] * 3))
    assert left_padding_is_exact(tiny_deepseek())  # V3: batched as before


# ------------------------------------------------------------------ the chain


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The cpu-demo-v4 preset trained through the three stages (a few steps each) into the MLflow
    store of an HKGAI_HOME."""
    from hkgai_pipelines.rag.knowledge import load_knowledge_documents
    from hkgai_pipelines.sources.catalog import load_catalog
    from hkgai_pipelines.training.datasets import preference_records, sft_records, write_jsonl
    from hkgai_pipelines.training.dpo import DpoJob
    from hkgai_pipelines.training.dpo import main as dpo
    from hkgai_pipelines.training.pretrain import PretrainJob
    from hkgai_pipelines.training.pretrain import main as pretrain
    from hkgai_pipelines.training.sft import SftJob
    from hkgai_pipelines.training.sft import main as sft
    from tests.test_training import _corpus

    tmp = tmp_path_factory.mktemp("v4-chain")
    home = tmp / "home"
    home.mkdir()
    # The local profile's MLflow store, so that `hkgai ask` finds the champion registered below.
    common = {"preset": "cpu-demo-v4", "tracking_uri": f"sqlite:///{home / 'mlflow.db'}", "artifact_root": (tmp / "art").as_uri()}
    base = pretrain(PretrainJob(**common, corpus=str(_corpus(tmp)), output_dir=str(tmp / "base"), max_steps=12))
    documents = load_knowledge_documents(load_catalog(PROJECT_ROOT / "configs" / "sources.yaml"), 200_000)
    write_jsonl(sft_records(documents), tmp / "sft.jsonl")
    tuned = sft(SftJob(**common, dataset=str(tmp / "sft.jsonl"), base_model=base["checkpoint_uri"], output_dir=str(tmp / "sft"), max_steps=8))
    pairs = preference_records()[:10]
    for index, pair in enumerate(pairs):
        pair["split"] = "train" if index < 8 else "eval"
    write_jsonl(pairs, tmp / "pref.jsonl")
    aligned = dpo(DpoJob(**common, dataset=str(tmp / "pref.jsonl"), sft_model=tuned["checkpoint_uri"], output_dir=str(tmp / "dpo"), max_steps=6))
    return SimpleNamespace(home=home, base=base, tuned=tuned, aligned=aligned, tracking_uri=common["tracking_uri"], tmp=tmp)


@pytest.mark.timeout(900)
def test_v4_trains_through_pretraining_packed_sft_and_dpo(chain):
    from transformers import AutoModelForCausalLM

    for stage in (chain.base, chain.tuned, chain.aligned):
        config = json.loads((Path(stage["checkpoint_uri"]) / "config.json").read_text())
        assert config["model_type"] == "deepseek_v4" and config["layer_types"][1] == "compressed_sparse_attention"
    assert chain.base["final_loss"] < chain.base["first_loss"]
    # SFT packed whole conversations into fewer, fuller rows, and learned from them.
    assert chain.tuned["train_rows"] < chain.tuned["train_conversations"] / 2
    assert chain.tuned["final_loss"] < chain.tuned["first_loss"]
    # Before DPO the policy is its reference (margin 0); DPO opens a margin on its pairs.
    assert chain.aligned["heldout_reward_margin_before"] == pytest.approx(0.0, abs=1e-6)
    assert chain.aligned["train_reward_margin"] > 0
    # The hash-routing table is a frozen buffer: saved with every stage, loaded back, never trained.
    tables = [AutoModelForCausalLM.from_pretrained(s["checkpoint_uri"]).model.layers[0].mlp.gate.tid2eid for s in (chain.base, chain.aligned)]
    assert torch.equal(*tables) and torch.bincount(tables[0].flatten()).min() > 0


@pytest.mark.timeout(900)
def test_evaluation_loads_the_v4_checkpoint_scores_and_generates(chain):
    from transformers import DeepseekV4ForCausalLM

    from hkgai_pipelines.evaluation.model import EvalModel

    model = EvalModel.load(chain.aligned["checkpoint_uri"], batch_size=4)
    assert isinstance(model.model, DeepseekV4ForCausalLM)
    requests = [("點樣續領香港身份證？", "去入境處辦理。"), ("How is the Chief Executive elected?", "By an Election Committee.")]
    batched = model.loglikelihood(requests)
    alone = [model.loglikelihood([r])[0] for r in requests]
    assert all(b.error is None and b.tokens > 0 for b in batched)
    assert [b.logprob for b in batched] == pytest.approx([a.logprob for a in alone], abs=1e-3)
    prompts = ["港鐵幾時通車？", "Where is the Legislative Council?"]
    replies = model.generate(prompts, max_new_tokens=12)
    assert all(r.error is None for r in replies)
    assert [r.text for r in replies] == [model.generate([p], max_new_tokens=12)[0].text for p in prompts]


@pytest.mark.timeout(900)
def test_registered_v4_champion_answers_hkgai_ask(chain, use_embedder, monkeypatch):
    import mlflow
    from typer.testing import CliRunner

    from hkgai_pipelines.cli import app
    from hkgai_pipelines.rag.index import IndexRefresher
    from hkgai_pipelines.rag.knowledge import chunk_documents, load_knowledge_documents
    from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore
    from hkgai_pipelines.rag.models import REGISTERED_MODEL
    from hkgai_pipelines.rag.retrieval_eval import load_questions
    from hkgai_pipelines.registry.serving import log_chat_model
    from hkgai_pipelines.sources.catalog import load_catalog

    documents = load_knowledge_documents(load_catalog(PROJECT_ROOT / "configs" / "sources.yaml"), 200_000)
    IndexRefresher(EmbeddedVectorStore(chain.home / "vectors"), use_embedder).refresh(chunk_documents(documents, 300, 60), load_questions())
    mlflow.set_tracking_uri(chain.tracking_uri)
    mlflow.set_registry_uri(chain.tracking_uri)
    experiment = mlflow.create_experiment("v4-registry", artifact_location=(chain.tmp / "registry-art").as_uri())
    with mlflow.start_run(experiment_id=experiment, run_name="registered_model"):
        info = log_chat_model(Path(chain.aligned["checkpoint_uri"]))
    version = mlflow.register_model(info.model_uri, REGISTERED_MODEL)
    mlflow.MlflowClient().set_registered_model_alias(REGISTERED_MODEL, "champion", version.version)

    monkeypatch.setenv("HKGAI_HOME", str(chain.home))
    monkeypatch.delenv("HKGAI_PROFILE", raising=False)
    result = CliRunner().invoke(app, ["ask", "How many members does the Legislative Council have?", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["model_version"] == f"{REGISTERED_MODEL}/{version.version} (champion)"
    assert answer["citations"][0]["doc_id"] == "hk_knowledge/en-legislative-council"
    assert isinstance(answer["answer"], str)
