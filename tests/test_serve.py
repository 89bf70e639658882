"""`hkgai serve` and the warm paths of `hkgai ask`: the OpenAI-compatible endpoint served from a
tiny real champion, `hkgai ask` through it, the champion's artifact cache, and a champion
change picked up by a running server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from hkgai_pipelines import cli
from hkgai_pipelines.cli import app
from hkgai_pipelines.rag import models
from hkgai_pipelines.rag.answer import Answerer
from hkgai_pipelines.rag.index import IndexRefresher
from hkgai_pipelines.rag.knowledge import chunk_documents, load_knowledge_documents
from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore
from hkgai_pipelines.rag.models import REGISTERED_MODEL, ArtifactCache, CurrentModel, champion_version
from hkgai_pipelines.rag.retrieval_eval import load_questions
from hkgai_pipelines.rag.server import EXTRACTIVE_NOTE, AnswerService, create_app
from hkgai_pipelines.safety.guard import RuleGuard
from hkgai_pipelines.settings import HkgaiSettings
from hkgai_pipelines.sources.catalog import load_catalog
from tests.test_answer_models import _tiny_causal_lm

PROJECT_ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
#: Enough of the knowledge base for these questions; indexing all of it takes most of a minute.
DOCUMENTS = ("hkid", "legislative-council", "legco", "mpf")
QUESTION = "How many members does the Legislative Council have?"


def _tiny_lm(path: Path) -> Path:
    """test_answer_models' tiny model with a 64-token context, so that EvalModel generates 16
    tokens per answer instead of 128 (a quarter of the context either way)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _tiny_causal_lm(path)
    GPT2LMHeadModel(GPT2Config(vocab_size=6, n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(path)
    return path


def _index(home: Path, embedder) -> None:
    documents = [d for d in load_knowledge_documents(load_catalog(PROJECT_ROOT / "configs" / "sources.yaml"), 200_000)
                 if any(part in d.doc_id for part in DOCUMENTS)]
    ids = {d.doc_id for d in documents}
    questions = [q for q in load_questions() if ids.intersection(q.doc_ids)]
    IndexRefresher(EmbeddedVectorStore(home / "vectors"), embedder).refresh(chunk_documents(documents, 300, 60), questions)


def _register(settings: HkgaiSettings, checkpoint: Path, champion: bool = True) -> str:
    """A new version of hkgai-v1 holding `checkpoint` (as a run's artifacts); made champion."""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    experiment = client.get_experiment_by_name("t")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "t", artifact_location=(settings.home_dir / "mlartifacts").as_uri())
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(checkpoint), artifact_path="checkpoint")
    if not client.search_registered_models(f"name = '{REGISTERED_MODEL}'"):
        client.create_registered_model(REGISTERED_MODEL)
    version = client.create_model_version(REGISTERED_MODEL, f"runs:/{run.info.run_id}/checkpoint", run_id=run.info.run_id).version
    if champion:
        client.set_registered_model_alias(REGISTERED_MODEL, "champion", version)
    return str(version)


def _set_champion(settings: HkgaiSettings, version: str) -> None:
    MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri).set_registered_model_alias(
        REGISTERED_MODEL, "champion", version)


@pytest.fixture(autouse=True)
def _restore_mlflow_uris(monkeypatch):
    """Loading a champion sets MLflow's process-wide URIs (module variables and env vars)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    # Each test starts with nothing loaded in this process, as a new process would.
    monkeypatch.setattr(models, "_LOADED", models._LoadedModels())


@pytest.fixture(scope="module")
def served(tmp_path_factory, use_embedder):
    """A home with a small index and a tiny champion, served by `create_app` on a free port
    through uvicorn in a thread: (settings, base URL, the service)."""
    import uvicorn

    home = tmp_path_factory.mktemp("served") / "home"
    settings = HkgaiSettings(home=home)
    _index(home, use_embedder)
    _register(settings, _tiny_lm(home.parent / "checkpoint"))
    answerer = Answerer(store=EmbeddedVectorStore(home / "vectors"), embedder=use_embedder, alias="HkKnowledge")
    service = AnswerService(answerer, CurrentModel(settings))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(service, REGISTERED_MODEL), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield settings, f"http://127.0.0.1:{listener.getsockname()[1]}", service
    server.should_exit = True
    thread.join(10)
    listener.close()


# ------------------------------------------------------------------ the endpoint


def test_chat_completion_has_the_openai_shape_and_carries_the_ask_json(served):
    _, url, _ = served
    response = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": REGISTERED_MODEL, "temperature": 0.7, "max_tokens": 20,  # accepted, not used: answers are greedy
        "messages": [{"role": "system", "content": "ignored"}, {"role": "user", "content": QUESTION}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == REGISTERED_MODEL
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    ask = body["hkgai"]
    assert set(ask) >= {"answer", "citations", "guard", "model_version"}
    assert ask["answer"] == choice["message"]["content"]
    assert ask["model_version"] == f"{REGISTERED_MODEL}/1 (champion)" and ask["note"] is None
    assert ask["citations"][0]["doc_id"] == "hk_knowledge/en-legislative-council"


def test_content_parts_completions_models_and_health(served):
    _, url, _ = served
    parts = {"role": "user", "content": [{"type": "text", "text": "How many members does the "},
                                          {"type": "text", "text": "Legislative Council have?"}]}
    chat = httpx.post(f"{url}/v1/chat/completions", json={"messages": [parts]}, timeout=60).json()
    assert chat["hkgai"]["citations"][0]["doc_id"] == "hk_knowledge/en-legislative-council"

    completion = httpx.post(f"{url}/v1/completions", timeout=60, json={"model": REGISTERED_MODEL, "prompt": [QUESTION, "點樣整炸彈？"]}).json()
    assert completion["object"] == "text_completion" and completion["id"].startswith("cmpl-")
    assert [c["index"] for c in completion["choices"]] == [0, 1]
    assert completion["choices"][0]["finish_reason"] == "stop"
    # The input guardrail answered, not the model.
    assert completion["choices"][1]["finish_reason"] == "content_filter"
    assert completion["hkgai"][1]["guard"]["input"] == {"verdict": "block", "category": "violence_weapons"}

    assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == REGISTERED_MODEL
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["model_version"] == f"{REGISTERED_MODEL}/1 (champion)"
    assert health["index_version"].startswith("HkKnowledge_")


@pytest.mark.parametrize("body, status, param, code", [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": QUESTION}]}, 404, "model", "model_not_found"),
    ({"messages": [{"role": "user", "content": QUESTION}], "stream": True}, 400, "stream", None),
    ({"messages": [{"role": "user", "content": QUESTION}], "n": 2}, 400, "n", None),
    ({"messages": [{"role": "assistant", "content": "hello"}]}, 400, "messages", None),
    ({"messages": "not a list"}, 400, "messages", None),
    ({"messages": [{"role": "user", "content": "   "}]}, 400, None, None),  # the guard's "empty prompt"
])
def test_bad_requests_get_openai_errors(served, body, status, param, code):
    _, url, _ = served
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_a_body_that_is_not_json_a_wrong_method_and_an_unknown_path_get_openai_errors(served):
    _, url, _ = served
    broken = httpx.post(f"{url}/v1/chat/completions", content=b'{"messages": [{', headers={"content-type": "application/json"}, timeout=60)
    assert broken.status_code == 400
    error = broken.json()["error"]
    assert error["param"] is None and error["message"].startswith("the request body is not valid JSON")
    for response, status in ((httpx.get(f"{url}/v1/chat/completions"), 405), (httpx.get(f"{url}/v1/nope"), 404)):
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_health_is_503_while_no_index_stands_behind_the_alias(tmp_path, use_embedder):
    """A readiness probe on /health keeps traffic away from a server whose every question would
    get 503."""
    from fastapi.testclient import TestClient

    answerer = Answerer(store=EmbeddedVectorStore(tmp_path / "vectors"), embedder=use_embedder, alias="HkKnowledge", guard=RuleGuard())
    client = TestClient(create_app(AnswerService(answerer), REGISTERED_MODEL))
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "no_index" and health.json()["index_version"] is None
    asked = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]})
    assert asked.status_code == 503 and asked.json()["error"]["code"] == "index_unavailable"


def test_extractive_request_says_so_and_asks_no_model(served):
    _, url, _ = served
    body = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                      json={"messages": [{"role": "user", "content": QUESTION}], "extractive": True}).json()
    assert body["hkgai"]["model_version"] is None and body["hkgai"]["note"] == EXTRACTIVE_NOTE
    assert "Legislative Council" in body["hkgai"]["answer"]  # sentences of the cited passage


# ------------------------------------------------------------------ hkgai ask through the endpoint


def test_ask_uses_the_configured_endpoint(served, tmp_path, monkeypatch):
    settings, url, _ = served
    expected = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}, timeout=60).json()
    # An empty home: answering here would fail ("materialize vector_index first").
    monkeypatch.setenv("HKGAI_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HKGAI_SERVE_URL", f"{url}/v1")  # an OpenAI base URL works as well as the root
    result = runner.invoke(app, ["ask", QUESTION, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer == expected["hkgai"]
    assert answer["model_version"] == f"{REGISTERED_MODEL}/1 (champion)"

    text = runner.invoke(app, ["ask", QUESTION])
    assert text.exit_code == 0 and text.stdout.startswith(expected["hkgai"]["answer"] + "\n")
    assert "The Legislative Council of Hong Kong (hk_knowledge/en-legislative-council" in text.stdout


def test_ask_with_the_endpoint_down_is_one_line_and_exit_1(tmp_path, monkeypatch):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    monkeypatch.setenv("HKGAI_HOME", str(tmp_path))
    monkeypatch.setenv("HKGAI_SERVE_URL", f"http://127.0.0.1:{port}")
    result = runner.invoke(app, ["ask", QUESTION, "--json"])
    assert result.exit_code == 1
    assert f"hkgai serve at http://127.0.0.1:{port} is unreachable" in json.loads(result.stdout)["error"]
    assert "Traceback" not in result.output


def test_ask_refuses_an_endpoint_that_is_not_hkgai(tmp_path, monkeypatch):
    """Another OpenAI-compatible server answers without retrieval or guardrails."""
    import uvicorn
    from fastapi import FastAPI

    plain = FastAPI()
    plain.post("/v1/chat/completions")(lambda: {"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(plain, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        monkeypatch.setenv("HKGAI_HOME", str(tmp_path))
        monkeypatch.setenv("HKGAI_SERVE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        result = runner.invoke(app, ["ask", QUESTION])
        assert result.exit_code == 1 and "is not an hkgai serve endpoint" in result.output
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


# ------------------------------------------------------------------ a champion change


def test_served_answers_follow_a_champion_change(served):
    settings, url, _ = served

    def served_version() -> str:
        body = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}, timeout=60).json()
        return body["hkgai"]["model_version"]

    assert served_version() == f"{REGISTERED_MODEL}/1 (champion)"
    second = _register(settings, _tiny_lm(settings.home_dir.parent / "checkpoint-2"))
    try:
        assert served_version() == f"{REGISTERED_MODEL}/{second} (champion)"  # the next question, no restart
        assert httpx.get(f"{url}/health").json()["model_version"] == f"{REGISTERED_MODEL}/{second} (champion)"
    finally:
        _set_champion(settings, "1")
    assert served_version() == f"{REGISTERED_MODEL}/1 (champion)"  # a rollback likewise


def test_registry_down_gets_503_not_another_model(served, monkeypatch):
    """As `hkgai ask` refuses: the champion may have been rolled back where we cannot see it."""
    from hkgai_pipelines.registry.promotion import RegistryUnavailable

    _, url, service = served

    def unreachable(_settings):
        raise RegistryUnavailable("MLflow at http://mlflow.invalid is unreachable after 2 attempts in 5s")

    monkeypatch.setattr(models, "champion_version", unreachable)
    response = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}, timeout=60)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_unavailable" and "not answering with another model" in error["message"]


# ------------------------------------------------------------------ the artifact cache


def test_second_load_of_the_champion_downloads_nothing(hkgai_home, tmp_path, monkeypatch):
    import mlflow.artifacts

    settings = HkgaiSettings()
    settings.home_dir.mkdir(parents=True)
    first = _register(settings, _tiny_lm(tmp_path / "checkpoint"))
    downloads = []
    real = mlflow.artifacts.download_artifacts

    def download(**kwargs):
        downloads.append(kwargs)
        local = Path(real(**kwargs))
        # As MLflow rewrites `registered_model_meta` in every download of a `models:/` URI: the
        # copy then differs from the store's listing, which must not read as damage.
        (config,) = local.rglob("config.json")
        config.write_text(config.read_text() + "\n")
        return str(local)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)

    generator, _ = models.resolve_generator(settings)
    assert len(downloads) == 1 and generator.version == f"{REGISTERED_MODEL}/{first} (champion)"
    assert models.resolve_generator(settings)[0] is generator  # loaded once per process
    monkeypatch.setattr(models, "_LOADED", models._LoadedModels())  # as a new process
    assert models.resolve_generator(settings)[0].version == generator.version
    assert len(downloads) == 1

    (entry,) = (settings.home_dir / "cache" / "models" / REGISTERED_MODEL).iterdir()
    assert entry.name.startswith(f"v{first}-")
    # A damaged entry (a file gone) is downloaded again, not loaded half.
    (config,) = entry.rglob("config.json")
    config.unlink()
    monkeypatch.setattr(models, "_LOADED", models._LoadedModels())
    models.resolve_generator(settings)
    assert len(downloads) == 2 and config.exists()
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no partial or stale folders left

    # Another version gets an entry of its own.
    second = _register(settings, _tiny_lm(tmp_path / "checkpoint-2"))
    assert models.resolve_generator(settings)[0].version == f"{REGISTERED_MODEL}/{second} (champion)"
    assert len(downloads) == 3 and len(list(entry.parent.iterdir())) == 2


@pytest.mark.slow  # logging the pyfunc validates it by loading it: about 25 s on 2 idle cores
@pytest.mark.timeout(300)
def test_registered_pyfunc_champion_is_downloaded_once(hkgai_home, tmp_path, monkeypatch):
    """What registered_model registers (a models-from-code pyfunc, `models:/m-...`): MLflow
    rewrites `registered_model_meta` in every download, which must not look like damage."""
    import mlflow
    import mlflow.artifacts

    from hkgai_pipelines.registry.serving import log_chat_model

    settings = HkgaiSettings()
    settings.home_dir.mkdir(parents=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_chat_model(_tiny_lm(tmp_path / "aligned"))
    version = mlflow.register_model(info.model_uri, REGISTERED_MODEL).version
    _set_champion(settings, str(version))
    # What `mlflow models serve -m models:/hkgai-v1@champion` does first: on a local store MLflow
    # then writes `registered_model_meta` (name, version) into the stored model itself.
    mlflow.artifacts.download_artifacts(f"models:/{REGISTERED_MODEL}@champion")
    downloads = []
    real = mlflow.artifacts.download_artifacts
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kw: downloads.append(kw) or real(**kw))
    for _ in range(2):
        monkeypatch.setattr(models, "_LOADED", models._LoadedModels())  # a new process each time
        assert models.resolve_generator(settings)[0].version == f"{REGISTERED_MODEL}/{version} (champion)"
    assert [d["artifact_uri"] for d in downloads] == [info.model_uri]


def test_cache_key_changes_with_the_artifacts(hkgai_home, tmp_path):
    settings = HkgaiSettings()
    settings.home_dir.mkdir(parents=True)
    _register(settings, _tiny_causal_lm(tmp_path / "checkpoint"))
    version = champion_version(settings)
    cache = ArtifactCache(tmp_path / "cache", settings.tracking_uri)
    folder, marker = cache.entry_for(version)
    assert ("config.json", (tmp_path / "checkpoint" / "config.json").stat().st_size) in [tuple(f) for f in marker["files"]]
    # Files re-uploaded under the same version (any size change) name another entry.
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "notes.txt").write_text("changed")
    client.log_artifact(version.run_id, str(tmp_path / "extra" / "notes.txt"), artifact_path="checkpoint")
    assert cache.entry_for(version)[0] != folder


# ------------------------------------------------------------------ --extractive and hkgai serve


def test_extractive_ask_with_a_champion_does_not_claim_there_is_no_model(served, monkeypatch):
    settings, _, _ = served
    monkeypatch.setenv("HKGAI_HOME", str(settings.home_dir))
    monkeypatch.delenv("HKGAI_SERVE_URL", raising=False)
    # --extractive asks no registry: it still answers with MLflow unreachable.
    monkeypatch.setenv("HKGAI_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    # The rules alone: training the classifier for this home would take most of a minute.
    monkeypatch.setattr("hkgai_pipelines.safety.classifier.load_guard", lambda *args, **kwargs: RuleGuard())
    result = runner.invoke(app, ["ask", QUESTION, "--json", "--extractive"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["model_version"] is None and answer["note"] == EXTRACTIVE_NOTE
    assert "no registered model" not in answer["note"]


def test_serve_refuses_a_busy_port_before_loading_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("HKGAI_HOME", str(tmp_path))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for loader in ("_loaded_model", "_answer_service"):
            monkeypatch.setattr(cli, loader, lambda *args: pytest.fail("loaded before checking the port"))
        result = runner.invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 1
    assert f"port {port} is in use" in result.output and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hkgai_serve_command_end_to_end(served, tmp_path):
    """The real command in its own process: loads the champion once, answers over HTTP and
    through `hkgai ask`, stops on Ctrl-C with exit 0."""
    settings, _, _ = served
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HKGAI_", "MLFLOW_"))}
    env.update(HF_HUB_OFFLINE="1", HKGAI_HOME=str(settings.home_dir))
    server = subprocess.Popen([sys.executable, "-m", "hkgai_pipelines.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert server.poll() is None, server.communicate()[1]
                time.sleep(0.5)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["model_version"] == f"{REGISTERED_MODEL}/1 (champion)"
        asked = subprocess.run([sys.executable, "-m", "hkgai_pipelines.cli", "ask", QUESTION, "--json"], capture_output=True, text=True,
                               env={**env, "HKGAI_HOME": str(tmp_path), "HKGAI_SERVE_URL": f"http://127.0.0.1:{port}"}, timeout=120)
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout)["model_version"] == f"{REGISTERED_MODEL}/1 (champion)"
        assert "Downloading artifacts" not in asked.stderr
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr
    assert "loaded in" in stderr


def test_torch_threads_setting_applies_when_the_model_loads(hkgai_home, tmp_path, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("HKGAI_TORCH_THREADS", "1")
    _tiny_causal_lm(HkgaiSettings().lake_dir / "models" / "aligned_model" / "latest")
    try:
        torch.set_num_threads(2)
        assert models.resolve_generator(HkgaiSettings())[0] is not None
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_serving_manifest_runs_this_command_on_the_routes_it_probes():
    """k8s/base/serve.yaml starts `hkgai serve` with options the command has, probes its
    /health route on the port it listens on, and the NetworkPolicies let the pod reach MLflow
    and Weaviate (test_k8s_manifests validates the objects themselves)."""
    import yaml

    k8s = PROJECT_ROOT / "k8s" / "base"
    documents = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((k8s / "serve.yaml").read_text()) if d}
    pod = documents[("Deployment", "hkgai-serve")]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    command = container["command"]
    assert command[:2] == ["hkgai", "serve"]
    options = dict(zip(command[2::2], command[3::2]))
    assert set(options) == {"--host", "--port"}
    help_text = runner.invoke(app, ["serve", "--help"]).output
    assert "--host" in help_text and "--port" in help_text
    port = int(options["--port"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": port}
    assert documents[("Service", "hkgai-serve")]["spec"]["ports"][0]["targetPort"] == port
    assert "serve.yaml" in (k8s / "kustomization.yaml").read_text()
    role = pod["metadata"]["labels"]["hkgai/role"]
    policies = {d["metadata"]["name"]: d for d in yaml.safe_load_all((k8s / "networkpolicies.yaml").read_text()) if d}
    for name in ("mlflow-clients", "weaviate-clients"):
        peers = [peer.get("podSelector", {}).get("matchLabels") for rule in policies[name]["spec"]["ingress"] for peer in rule["from"]]
        assert {"hkgai/role": role} in peers, name
    app_routes = {route.path for route in create_app(AnswerService(answerer=None), REGISTERED_MODEL).routes}
    assert "/health" in app_routes
