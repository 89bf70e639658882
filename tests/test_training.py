"""The model chain on CPU: presets, tokenizer, packing, pretraining with resume, the launcher."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hkgai_pipelines.training.presets import PresetError, load_preset

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_presets_load_and_hash():
    demo = load_preset("cpu-demo")
    assert (demo.mode, demo.model["n_routed_experts"], demo.model["num_experts_per_tok"]) == ("init", 4, 2)
    assert load_preset("gpu-h100").model["vocab_size"] == 129280
    assert load_preset("production").checkpoint == "/mnt/models/deepseek"
    params = demo.flat_params()
    assert params["preset_hash"] == demo.hash and params["model.kv_lora_rank"] == "16"
    assert params["training.pretrain.steps"] == str(demo.training.pretrain.steps)


def _preset_dir(tmp_path, **changes):
    data = yaml.safe_load((PROJECT_ROOT / "configs" / "presets" / "cpu-demo.yaml").read_text())
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split(".")
        for key in path:
            target = target[key]
        target[last] = value
    folder = tmp_path / "configs" / "presets"
    folder.mkdir(parents=True)
    (folder / "cpu-demo.yaml").write_text(yaml.safe_dump(data))
    catalog = yaml.safe_load((PROJECT_ROOT / "configs" / "sources.yaml").read_text())
    for source in catalog["sources"]:
        if source["kind"] == "local_files":
            source["options"]["path"] = str(PROJECT_ROOT / source["options"]["path"])
    (tmp_path / "configs" / "sources.yaml").write_text(yaml.safe_dump(catalog, allow_unicode=True))
    return tmp_path / "configs"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model.num_attention_heads": 5}, r"num_attention_heads \(5\) must divide hidden_size \(64\)"),
        ({"model.num_experts_per_tok": 8}, r"num_experts_per_tok \(8\) must be between 1 and n_routed_experts \(4\)"),
        ({"model.vocab_size": 5000}, r"tokenizer.vocab_size \(4096\) differs from model.vocab_size \(5000\)"),
        ({"mode": "pretrained"}, "mode 'pretrained' needs a checkpoint"),
        ({"training.experts_implementation": "magic"}, "experts_implementation must be eager, grouped_mm or batched_mm"),
    ],
)
def test_impossible_presets_are_refused(tmp_path, changes, message):
    with pytest.raises(PresetError, match=message):
        load_preset("cpu-demo", _preset_dir(tmp_path, **changes))


def test_bpe_tokenizer_round_trips_cantonese_and_has_a_chat_template():
    from hkgai_pipelines.training.tokenizer import train_bpe_tokenizer

    texts = ["佢哋聽日會去旺角食飯。", "The MTR opened in 1979.", "我哋而家喺銅鑼灣。"] * 50
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    text = "嘅咗喺𠺢 MTR"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|begin_of_text|><|user|>你好\n<|assistant|>"


def test_too_small_corpus_for_the_vocabulary_is_an_error():
    from hkgai_pipelines.training.tokenizer import train_bpe_tokenizer

    with pytest.raises(ValueError, match="corpus is too small"):
        train_bpe_tokenizer(["ab"], vocab_size=5000)


def test_packing_respects_mix_and_holds_out_stably():
    from hkgai_pipelines.training.data import is_held_out, pack_corpus
    from hkgai_pipelines.training.tokenizer import train_bpe_tokenizer

    docs = [{"id": f"d{i}", "text": f"佢哋第{i}日去旺角食飯。", "lang": "yue"} for i in range(300)]
    docs += [{"id": f"e{i}", "text": f"Day {i}: the MTR was busy.", "lang": "en"} for i in range(300)]
    tokenizer = train_bpe_tokenizer([d["text"] for d in docs], vocab_size=300)
    corpus = pack_corpus(docs, tokenizer, seq_len=16, target_tokens=4000, language_mix={"yue": 0.75, "en": 0.25})
    assert corpus.train_blocks.shape[1] == 16
    assert corpus.tokens_by_lang["yue"] > 2.5 * corpus.tokens_by_lang["en"]
    assert is_held_out("d17") == is_held_out("d17")
    held = [d["id"] for d in docs if is_held_out(d["id"])]
    assert 0 < len(held) < 40


def _in_memory_packing(docs, tokenizer, seq_len, target_tokens, language_mix, seed=42):
    """The packing before it streamed (every document and the stream in lists): the reference
    the streaming packer must equal block for block."""
    import random

    from hkgai_pipelines.training.data import is_held_out

    train = {}
    kept = [d for d in docs if not is_held_out(d["id"])]
    for doc, ids in zip(kept, tokenizer([d["text"] for d in kept], add_special_tokens=False)["input_ids"]):
        train.setdefault(doc["lang"], []).append(ids + [tokenizer.eos_token_id])
    weights = {lang: w for lang, w in language_mix.items() if train.get(lang)}
    rng, stream = random.Random(seed), []
    for lang, weight in sorted(weights.items()):
        budget, taken = int(target_tokens * weight / sum(weights.values())), 0
        while taken < budget:
            ids = train[lang][rng.randrange(len(train[lang]))]
            stream.extend(ids)
            taken += len(ids)
    n = len(stream) // seq_len
    blocks = torch.tensor(stream[: n * seq_len]).view(n, seq_len)
    return blocks[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def test_streamed_packing_gives_the_in_memory_packing_block_for_block(tmp_path, monkeypatch):
    """Documents in read batches of 7, tokens in files: the same blocks in the same order as
    packing everything in memory."""
    from hkgai_pipelines.training import data
    from hkgai_pipelines.training.tokenizer import train_bpe_tokenizer

    docs = [{"id": f"d{i}", "text": f"佢哋第{i}日去旺角食飯。" * (1 + i % 3), "lang": "yue"} for i in range(120)]
    docs += [{"id": f"e{i}", "text": f"Day {i}: the MTR was busy.", "lang": "en"} for i in range(120)]
    docs += [{"id": f"j{i}", "text": "こんにちは", "lang": "other"} for i in range(5)]  # not in the mix: never read
    docs = [docs[i] for i in range(0, len(docs), 2)] + [docs[i] for i in range(1, len(docs), 2)]
    tokenizer = train_bpe_tokenizer([d["text"] for d in docs], vocab_size=300)
    monkeypatch.setattr(data, "READ_BATCH_ROWS", 7)
    mix = {"yue": 0.6, "en": 0.4, "zh-hans": 0.2}
    packed = data.pack_corpus(iter(docs), tokenizer, seq_len=16, target_tokens=3000, language_mix=mix, work_dir=tmp_path / "packed")
    reference = _in_memory_packing(docs, tokenizer, 16, 3000, mix)
    dataset = data.BlockDataset(packed.train_blocks, packed.order)
    assert torch.equal(torch.stack([dataset[i]["input_ids"] for i in range(len(dataset))]), reference)
    assert dataset[0]["input_ids"].dtype == torch.long
    assert sorted(path.name for path in (tmp_path / "packed").iterdir()) == ["blocks.bin", "tokens-0.bin", "tokens-1.bin"]


def _corpus(tmp_path) -> Path:
    """A cleaned_corpus-shaped parquet from the packaged corpora (1,200 documents)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hkgai_pipelines.curation.langid import LanguageIdentifier
    from hkgai_pipelines.sources.catalog import SourceSpec
    from hkgai_pipelines.sources.readers import read_source

    identifier = LanguageIdentifier()
    rows = []
    for spec in (SourceSpec("ctcpc", "ctcpc", "CC0-1.0", {"max_records": 600}), SourceSpec("hsk", "hsk_sentences", "x", {"fields": ["chinese", "en"]})):
        for i, item in enumerate(read_source(spec)):
            if i >= 600:
                break
            rows.append({"id": item.id, "text": item.text, "lang": identifier.identify(item.text).lang})
    path = tmp_path / "cleaned.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("corpus"))


def _job(tmp_path, corpus, steps, config_dir=None):
    return {
        "preset": "cpu-demo", "corpus": str(corpus), "output_dir": str(tmp_path / "out"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": (tmp_path / "art").as_uri(),
        "max_steps": steps, "config_dir": str(config_dir) if config_dir else None,
    }


@pytest.mark.timeout(600)
def test_pretraining_lowers_the_loss_and_logs_to_mlflow(tmp_path, corpus):
    from mlflow.tracking import MlflowClient

    from hkgai_pipelines.training.pretrain import PretrainJob, main

    summary = main(PretrainJob(**_job(tmp_path, corpus, steps=30)))
    assert summary["steps"] == 30
    assert summary["final_loss"] < summary["first_loss"] - 0.5
    assert all(summary["perplexity_after"][lang] < summary["perplexity_before"][lang] for lang in summary["perplexity_after"])
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["preset"] == "cpu-demo" and run.data.params["model.n_routed_experts"] == "4"
    # The names the MLflow run page sections by (training/common.py): loss and learning rate first.
    assert set(run.data.metrics) == {
        "train/loss", "train/learning_rate", "train/details/grad_norm", "train/details/epoch", "train/details/tokens_per_second",
        "train_summary/first_loss", "train_summary/final_loss", "train_summary/tokens_per_second_median",
        "train_summary/mean_loss_all_steps", "train_summary/runtime_seconds", "train_summary/samples_per_second",
        "train_summary/steps_per_second", "train_summary/total_flos", "train_summary/epoch",
        *(f"heldout_ppl_{lang}" for lang in summary["perplexity_after"]),
    }
    # What Dagster shows is what MLflow shows under train_summary/; HF's mean loss is named as such.
    figures = {k: run.data.metrics[f"train_summary/{name}"] for k, name in
               (("first_loss", "first_loss"), ("final_loss", "final_loss"), ("tokens_per_second", "tokens_per_second_median"))}
    assert figures == {k: summary[k] for k in figures}
    assert run.data.metrics["train_summary/final_loss"] == run.data.metrics["train/loss"]
    curve = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in curve) == list(range(3, 31, 3))  # logged every third step
    assert (Path(summary["checkpoint_uri"]) / "config.json").exists()


@pytest.mark.timeout(600)
def test_resume_after_a_killed_run_continues_from_the_saved_step(tmp_path, corpus):
    config_dir = _preset_dir(tmp_path, **{"training.pretrain.save_steps": 10})
    job = _job(tmp_path, corpus, steps=30, config_dir=config_dir)
    job_path = tmp_path / "job.json"
    job_path.write_text(json.dumps(job))
    out = Path(job["output_dir"])
    process = subprocess.Popen([sys.executable, "-m", "hkgai_pipelines.training.pretrain", "--job", str(job_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "checkpoints" / "checkpoint-10" / "trainer_state.json").exists():
        time.sleep(0.2)
    process.kill()  # killed mid-run, after its first checkpoint
    process.wait()
    assert (out / "checkpoints" / "checkpoint-10").exists()
    assert not (out / "summary.json").exists()
    first_run = (out / "mlflow_run_id").read_text()

    from hkgai_pipelines.training.pretrain import PretrainJob, main

    summary = main(PretrainJob(**job))
    assert summary["resumed_from_step"] >= 10
    assert summary["steps"] == 30
    assert summary["mlflow_run_id"] == first_run  # the same MLflow run continues


def test_missing_checkpoint_and_vocab_mismatch_fail_before_training(tmp_path):
    from hkgai_pipelines.training.common import build_model
    from hkgai_pipelines.training.tokenizer import check_vocab, train_bpe_tokenizer

    preset = load_preset("cpu-demo")
    tokenizer = train_bpe_tokenizer(["佢哋聽日會去旺角食飯。", "The MTR opened in 1979.", "我哋而家喺銅鑼灣。"] * 50, vocab_size=300)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build_model(preset, tokenizer, init_from=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="tokenizer has 300 tokens but the model's vocabulary is 200"):
        check_vocab(tokenizer, 200)


@pytest.mark.timeout(600)
def test_pretrained_mode_loads_any_causal_lm_directory(tmp_path, corpus):
    """The production path: a Hugging Face checkpoint directory (here a tiny GPT-2) with its
    own tokenizer, continued-pretrained for a few steps."""
    from tests.test_answer_models import _tiny_causal_lm

    from hkgai_pipelines.training.pretrain import PretrainJob, main

    checkpoint = _tiny_causal_lm(tmp_path / "checkpoint")
    presets = tmp_path / "configs" / "presets"
    presets.mkdir(parents=True)
    data = yaml.safe_load((PROJECT_ROOT / "configs" / "presets" / "production.yaml").read_text())
    data["checkpoint"] = str(checkpoint)
    data["training"].update({"seq_len": 32, "dtype": "float32", "deepspeed": None})
    data["training"]["pretrain"].update({"steps": 3, "batch_size": 2, "save_steps": 10})
    (presets / "production.yaml").write_text(yaml.safe_dump(data))
    summary = main(PretrainJob(preset="production", corpus=str(corpus), output_dir=str(tmp_path / "out"),
                               tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", config_dir=str(tmp_path / "configs")))
    assert summary["steps"] == 3
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(summary["checkpoint_uri"]).model_type == "gpt2"


def test_deepseek_tokenizer_renders_prompts_as_a_token_prefix():
    """With DeepSeek's own role tokens the prompt's ids are a prefix of the conversation's, so
    SFT can mask the prompt (our `<|user|>` markers are not special in its vocabulary)."""
    from hkgai_pipelines.training.sft import encode_conversation
    from hkgai_pipelines.training.tokenizer import deepseek_tokenizer

    tokenizer = deepseek_tokenizer()
    messages = [{"role": "user", "content": "點樣續領身份證？"}, {"role": "assistant", "content": "去入境處。"}]
    encoded = encode_conversation(tokenizer, messages, 100)
    assert tokenizer.decode(encoded["input_ids"]) == "<｜begin▁of▁sentence｜><｜User｜>點樣續領身份證？<｜Assistant｜>去入境處。<｜end▁of▁sentence｜>"
    answer = [i for i, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100]
    assert tokenizer.decode(answer) == "去入境處。<｜end▁of▁sentence｜>"


def test_preset_speed_settings_are_applied(tiny_deepseek):
    from dataclasses import replace

    from hkgai_pipelines.training.common import prepare_for_training

    preset = load_preset("gpu-h100")
    model = prepare_for_training(tiny_deepseek(), replace(preset, training=replace(preset.training, experts_implementation="batched_mm")))
    assert model.config._experts_implementation == "batched_mm"
    assert model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).logits is None  # fused loss



def test_reported_figures_are_rounded_for_reading():
    from hkgai_pipelines.training.quality import perplexity_rows
    from hkgai_pipelines.training.runs import significant

    assert [significant(v) for v in (8.230752563476562, 4505.97640565686, 0.8888888888888888, 150, "x", None)] == [8.231, 4506.0, 0.8889, 150, "x", None]
    assert perplexity_rows({"corpus": {"yue": 1234.56789}}, {"corpus": {"yue": 987.654321}}) == [("corpus", "yue", 1235.0, 987.7)]
