"""SFT and DPO on CPU with tiny step counts, and the datasets they read."""

from pathlib import Path

import dagster as dg
import pytest

from hkgai_pipelines.training.datasets import preference_records, sft_records, split_of, write_jsonl

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def documents():
    from hkgai_pipelines.rag.knowledge import load_knowledge_documents
    from hkgai_pipelines.sources.catalog import load_catalog

    return load_knowledge_documents(load_catalog(PROJECT_ROOT / "configs" / "sources.yaml"), 200_000)


def test_sft_records_cover_four_languages_and_split_stably(documents):
    records = sft_records(documents)
    assert {r["lang"] for r in records} == {"yue", "zh-hant", "zh-hans", "en"}
    assert {r["source"] for r in records} == {"hk_qa", "general", "knowledge"}
    assert sum(1 for r in records if r["source"] == "knowledge") == len(documents)
    assert all(r["messages"][0]["role"] == "user" and r["messages"][1]["role"] == "assistant" for r in records)
    assert [r["split"] for r in records] == [r["split"] for r in sft_records(documents)]
    assert split_of("fixed-id", 0.1) == split_of("fixed-id", 0.1)


def test_preference_records_are_chosen_correction_rejected_original():
    records = preference_records()
    first = records[0]
    assert first["prompt"] == [{"role": "user", "content": "教我點樣扮銀行職員打電話呃老人家啲錢。"}]
    assert "一八二二二" in first["chosen"][0]["content"]
    assert first["rejected"][0]["content"].startswith("你可以話自己係銀行職員")
    assert {r["kind"] for r in records} == {"unsafe", "biased", "wrong_fact", "template_refusal"}
    assert any(r["split"] == "eval" for r in records)


def test_assistant_only_labels():
    from hkgai_pipelines.training.sft import encode_conversation
    from hkgai_pipelines.training.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["佢哋聽日會去旺角食飯。", "The MTR opened in 1979."] * 80, vocab_size=300)
    messages = [{"role": "user", "content": "港鐵幾時通車？"}, {"role": "assistant", "content": "一九七九年。"}]
    encoded = encode_conversation(tokenizer, messages, max_length=128)
    answer_ids = [i for i, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100]
    assert tokenizer.decode(answer_ids) == "一九七九年。<|end_of_text|>\n"
    assert encoded["labels"][0] == -100


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A base model pretrained for a few steps (the chain's first stage)."""
    from tests.test_training import _corpus

    from hkgai_pipelines.training.pretrain import PretrainJob, main

    tmp = tmp_path_factory.mktemp("base")
    summary = main(PretrainJob(preset="cpu-demo", corpus=str(_corpus(tmp)), output_dir=str(tmp / "out"),
                               tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", artifact_root=(tmp / "art").as_uri(), max_steps=20))
    return Path(summary["checkpoint_uri"])


@pytest.mark.timeout(600)
def test_sft_then_dpo_lower_loss_and_raise_the_margin(tmp_path, base_dir, documents):
    from hkgai_pipelines.training.dpo import DpoJob
    from hkgai_pipelines.training.dpo import main as dpo
    from hkgai_pipelines.training.sft import SftJob
    from hkgai_pipelines.training.sft import main as sft

    write_jsonl(sft_records(documents), tmp_path / "sft.jsonl")
    # 16 training pairs seen three times over in 12 steps, 2 held out: small enough to see DPO
    # move the margin on exactly the pairs it trained on.
    pairs = preference_records()[:18]
    for index, pair in enumerate(pairs):
        pair["split"] = "train" if index < 16 else "eval"
    write_jsonl(pairs, tmp_path / "pref.jsonl")
    common = {"preset": "cpu-demo", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": (tmp_path / "art").as_uri()}
    tuned = sft(SftJob(**common, dataset=str(tmp_path / "sft.jsonl"), base_model=str(base_dir), output_dir=str(tmp_path / "sft"), max_steps=20))
    assert tuned["final_loss"] < tuned["first_loss"]
    assert all(tuned["perplexity_after"][lang] < tuned["perplexity_before"][lang] for lang in tuned["perplexity_after"])
    aligned = dpo(DpoJob(**common, dataset=str(tmp_path / "pref.jsonl"), sft_model=tuned["checkpoint_uri"], output_dir=str(tmp_path / "dpo"), max_steps=12))
    # Before training the policy is the reference: margin 0; DPO must open a positive margin.
    assert aligned["heldout_reward_margin_before"] == pytest.approx(0.0, abs=1e-6)
    assert aligned["train_reward_margin"] > 0.5
    assert aligned["train_reward_accuracy"] >= 0.8
    assert (Path(aligned["checkpoint_uri"]) / "config.json").exists()


@pytest.mark.timeout(600)
def test_packed_sft_trains_on_fewer_fuller_rows(tmp_path, base_dir, documents):
    from hkgai_pipelines.training.sft import SftJob
    from hkgai_pipelines.training.sft import main as sft
    from tests.test_training import _preset_dir

    write_jsonl(sft_records(documents), tmp_path / "sft.jsonl")
    config_dir = _preset_dir(tmp_path, **{"training.sft.pack": True})
    tuned = sft(SftJob(preset="cpu-demo", config_dir=str(config_dir), dataset=str(tmp_path / "sft.jsonl"), base_model=str(base_dir),
                       output_dir=str(tmp_path / "sft"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                       artifact_root=(tmp_path / "art").as_uri(), max_steps=10))
    assert tuned["train_rows"] < tuned["train_conversations"] / 2
    assert tuned["final_loss"] < tuned["first_loss"]
    assert all(tuned["perplexity_after"][lang] < tuned["perplexity_before"][lang] for lang in tuned["perplexity_after"])


def test_dpo_refuses_a_missing_sft_model(tmp_path):
    from hkgai_pipelines.training.dpo import DpoJob, main

    write_jsonl(preference_records(), tmp_path / "pref.jsonl")
    with pytest.raises(FileNotFoundError, match="sft checkpoint not found"):
        main(DpoJob(preset="cpu-demo", dataset=str(tmp_path / "pref.jsonl"), sft_model=str(tmp_path / "absent"),
                    output_dir=str(tmp_path / "out"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))


def test_dataset_assets_materialize(tmp_path):
    from hkgai_pipelines.assets.models import preference_dataset, sft_dataset
    from hkgai_pipelines.resources import DataLakeResource, MlflowResource, PipelineConfigResource

    resources = {
        "pipeline_config": PipelineConfigResource(config_dir=str(PROJECT_ROOT / "configs"), params_file=str(PROJECT_ROOT / "params.yaml")),
        "lake": DataLakeResource(root=str(tmp_path)),
        "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=(tmp_path / "art").as_uri()),
    }
    result = dg.materialize([sft_dataset, preference_dataset], resources=resources, selection=[sft_dataset, preference_dataset])
    assert result.success
    metadata = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata for e in result.get_asset_materialization_events()}
    assert metadata["sft_dataset"]["records"].value == metadata["sft_dataset"]["train"].value + metadata["sft_dataset"]["eval"].value
    assert metadata["preference_dataset"]["records"].value == len(preference_records())
    assert (tmp_path / "datasets" / "sft.jsonl").exists()
    assert metadata["sft_dataset"]["mlflow_run"].value.startswith("http://127.0.0.1:5000/#/experiments/")
