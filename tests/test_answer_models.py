"""Which model answers `hkgai ask`: the MLflow champion, else the newest aligned_model."""

from mlflow.tracking import MlflowClient

from hkgai_pipelines.rag.answer import CausalLMGenerator, build_prompt
from hkgai_pipelines.rag.models import REGISTERED_MODEL, resolve_generator
from hkgai_pipelines.rag.store import SearchHit
from hkgai_pipelines.settings import HkgaiSettings


def _tiny_causal_lm(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, "hong": 2, "kong": 3, "answer": 4, "[1]": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>").save_pretrained(path)
    GPT2LMHeadModel(GPT2Config(vocab_size=6, n_positions=512, n_embd=16, n_layer=1, n_head=2)).save_pretrained(path)
    return path


def test_no_model_means_extractive(hkgai_home):
    assert resolve_generator(HkgaiSettings()) == (None, None)


def test_newest_aligned_model_answers_when_there_is_no_champion(hkgai_home):
    settings = HkgaiSettings()
    _tiny_causal_lm(settings.lake_dir / "models" / "aligned_model" / "latest")
    generator, note = resolve_generator(settings)
    assert isinstance(generator, CausalLMGenerator)
    assert generator.version == "aligned_model (no champion yet)"
    assert "no champion" in note
    assert isinstance(generator.generate("hong kong answer", max_new_tokens=3), str)


def test_champion_alias_in_mlflow_wins(hkgai_home, tmp_path):
    settings = HkgaiSettings()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _tiny_causal_lm(tmp_path / "checkpoint")
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(checkpoint), artifact_path="checkpoint")
    client.create_registered_model(REGISTERED_MODEL)
    version = client.create_model_version(REGISTERED_MODEL, f"runs:/{run.info.run_id}/checkpoint", run_id=run.info.run_id)
    client.set_registered_model_alias(REGISTERED_MODEL, "champion", version.version)
    generator, note = resolve_generator(settings)
    assert generator.version == f"{REGISTERED_MODEL}/{version.version} (champion)"
    assert note is None


def test_prompt_lists_passages_and_asks_for_the_question_language():
    hits = [SearchHit("c1", "kb/a", "港鐵", "港鐵於一九七九年通車。", "kb", "zh-hant", 0.9)]
    prompt = build_prompt("港鐵幾時通車？", hits, "yue")
    assert prompt.startswith("請用廣東話")
    assert "[1] 港鐵\n港鐵於一九七九年通車。" in prompt
    assert prompt.endswith("問題 / Question: 港鐵幾時通車？\n答案 / Answer:")
