"""`hkgai ask` latency: the cold CLI (a new process per question) against the warm paths, in one run.

Builds (or reuses, with `--home`) a home with the packaged knowledge index and a demo champion:
a `cpu-demo` preset model (DeepSeek-V3 architecture, 0.6M parameters, byte-level BPE trained on
the packaged texts, weights as initialised, so its answers are noise like the demo's) logged
the way `registered_model` logs it (models-from-code pyfunc) into the home's SQLite registry and
given the `champion` alias. Then, question by question (the rows take turns, so a busy machine
slows them alike), it times:

* cold CLI, download each call: `hkgai ask --json` in a new process with the artifact cache
  emptied first, which is what every call did before the cache existed;
* cold CLI, artifact cache: the same with the cache kept (imports and loading still paid);
* warm in-process: one process that loaded everything once (`AnswerService`), per question;
* warm served, HTTP: `POST /v1/chat/completions` to `hkgai serve` started once for the run;
* warm served, `hkgai ask`: the CLI with `HKGAI_SERVE_URL` set (a new, light process per question).

It prints p50/p95 per row, each row's p50 as a ratio of the first row's, whether every path gave
the same answer and model version for each question (decoding is greedy), and how many cold
calls printed MLflow's "Downloading artifacts". Goal: warm p50 under 2 s on the demo model.
`--torch-threads N` sets HKGAI_TORCH_THREADS for every path alike.

    python benchmarks/ask_latency.py [--questions 5] [--warm-repeats 3] [--home DIR] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = "hkgai-v1"


def build_home(home: Path) -> None:
    """The index and a registered cpu-demo champion in `home`; skipped parts that exist."""
    from hkgai_pipelines.rag.embedders import UniversalSentenceEncoder
    from hkgai_pipelines.rag.index import IndexRefresher
    from hkgai_pipelines.rag.knowledge import chunk_documents, load_knowledge_documents
    from hkgai_pipelines.rag.lancedb_store import EmbeddedVectorStore
    from hkgai_pipelines.rag.retrieval_eval import load_questions
    from hkgai_pipelines.sources.catalog import load_catalog

    documents = load_knowledge_documents(load_catalog(ROOT / "configs" / "sources.yaml"), 200_000)
    store = EmbeddedVectorStore(home / "vectors")
    if store.get_alias("HkKnowledge") is None:
        IndexRefresher(store, UniversalSentenceEncoder()).refresh(chunk_documents(documents, 300, 60), load_questions())
    if not (home / "mlflow.db").exists():
        register_demo_champion(home, documents)


def register_demo_champion(home: Path, documents) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from hkgai_pipelines.registry.serving import log_chat_model
    from hkgai_pipelines.training.architectures import init_model
    from hkgai_pipelines.training.datasets import preference_records, sft_records
    from hkgai_pipelines.training.presets import load_preset
    from hkgai_pipelines.training.tokenizer import train_bpe_tokenizer

    preset = load_preset("cpu-demo")
    # The knowledge documents alone are too few to learn 4,096 merges; the authored SFT and
    # preference conversations make up the rest (the demo trains it on cleaned_corpus).
    texts = [d.body for d in documents]
    texts += [m["content"] for r in sft_records(documents) for m in r["messages"]]
    texts += [m["content"] for r in preference_records() for key in ("prompt", "chosen", "rejected") for m in r[key]]
    tokenizer = train_bpe_tokenizer(texts, preset.tokenizer["vocab_size"])
    checkpoint = home / "demo-checkpoint"
    init_model(preset, tokenizer).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = MlflowClient(uri, uri).create_experiment("hkgai-v1", artifact_location=(home / "mlartifacts" / "hkgai-v1").as_uri())
    with mlflow.start_run(experiment_id=experiment, run_name="registered_model"):
        info = log_chat_model(checkpoint)
    version = mlflow.register_model(info.model_uri, MODEL).version
    MlflowClient(uri, uri).set_registered_model_alias(MODEL, "champion", version)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_ask(question: str, env: dict) -> tuple[float, dict, bool]:
    """(seconds, the --json answer, whether MLflow printed "Downloading artifacts")."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hkgai_pipelines.cli", "ask", question, "--json"], env=env,
                          capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"hkgai ask failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, json.loads(done.stdout), "Downloading artifacts" in done.stderr


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=5, help="questions timed, from the retrieval questions (mixed languages)")
    parser.add_argument("--warm-repeats", type=int, default=3, help="times each question is asked on the warm paths")
    parser.add_argument("--home", type=Path, help="a home to build or reuse (default: a temporary one)")
    parser.add_argument("--torch-threads", type=int, help="HKGAI_TORCH_THREADS for every path (default: unset, torch's own)")
    args = parser.parse_args()

    os.environ["HF_HUB_OFFLINE"] = "1"
    temporary = None if args.home else tempfile.mkdtemp(prefix="hkgai-ask-latency-")
    home = (args.home or Path(temporary) / "home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    build_home(home)
    print(f"home {home} ready in {time.perf_counter() - started:.0f}s")

    # Only this home counts, for the subprocesses and for the in-process path alike.
    for name in [k for k in os.environ if k.startswith(("HKGAI_", "MLFLOW_"))]:
        del os.environ[name]
    os.environ["HKGAI_HOME"] = str(home)
    if args.torch_threads:
        os.environ["HKGAI_TORCH_THREADS"] = str(args.torch_threads)
    env = dict(os.environ)
    cache = home / "cache" / "models"

    from hkgai_pipelines.rag.retrieval_eval import load_questions

    questions = [q.text for q in load_questions()][: args.questions]
    load_at_start = os.getloadavg()[0]  # other work on the machine slows every row
    # One untimed cold call first: it trains and caches the guard's classifier for this home,
    # which every later process reads.
    cli_ask(questions[0], env)

    port = free_port()
    served_at = time.perf_counter()
    # A file, not a pipe: the access log of every request would fill a pipe nobody reads.
    server_log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen([sys.executable, "-m", "hkgai_pipelines.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=server_log, text=True)
    import httpx

    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            if server.poll() is not None:
                server_log.seek(0)
                raise SystemExit(f"hkgai serve exited: {server_log.read()[-2000:]}") from None
            time.sleep(0.5)
    server_start = time.perf_counter() - served_at

    from hkgai_pipelines.cli import _answer_service, _loaded_model
    from hkgai_pipelines.settings import get_settings

    loaded_at = time.perf_counter()
    service = _answer_service(_loaded_model(get_settings()))
    service.ask(questions[0])  # the first answer pays for lazy set-up: in-process warm times start after it
    in_process_start = time.perf_counter() - loaded_at

    rows = {name: [] for name in ("cold CLI, download each call", "cold CLI, artifact cache", "warm in-process",
                                  "warm served, HTTP", "warm served, hkgai ask")}
    downloads = {"cold CLI, download each call": 0, "cold CLI, artifact cache": 0}
    agree = []
    try:
        for question in questions:
            answers = []  # (path, the --json answer)
            shutil.rmtree(cache, ignore_errors=True)
            for name in ("cold CLI, download each call", "cold CLI, artifact cache"):
                elapsed, answer, downloaded = cli_ask(question, env)
                rows[name].append(elapsed)
                downloads[name] += downloaded
                answers.append((name, answer))
            for _ in range(args.warm_repeats):
                begun = time.perf_counter()
                answers.append(("warm in-process", service.ask(question).to_json()))
                rows["warm in-process"].append(time.perf_counter() - begun)
                begun = time.perf_counter()
                response = httpx.post(f"{url}/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": question}]},
                                      timeout=600)
                rows["warm served, HTTP"].append(time.perf_counter() - begun)
                answers.append(("warm served, HTTP", response.json()["hkgai"]))
                elapsed, answer, _ = cli_ask(question, {**env, "HKGAI_SERVE_URL": url})
                rows["warm served, hkgai ask"].append(elapsed)
                answers.append(("warm served, hkgai ask", answer))
            distinct = {}
            for name, answer in answers:
                distinct.setdefault((answer["answer"], answer["model_version"]), set()).add(name)
            agree.append(len(distinct) == 1)
            print(f"  {question}: {answers[0][1]['model_version']}, "
                  + ", ".join(f"{name} {values[-1]:.2f}s" for name, values in rows.items()), flush=True)
            if len(distinct) > 1:
                for (text, version), names in distinct.items():
                    print(f"    differs: {version} {text[:60]!r} from {', '.join(sorted(names))}", flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)

    base = statistics.median(rows["cold CLI, download each call"])
    print(f"\nhkgai ask latency, {len(questions)} questions (warm paths x{args.warm_repeats}), demo champion on {os.cpu_count()} cores, "
          f"torch threads {args.torch_threads or 'default'}; "
          f"load average at the start {load_at_start:.1f}, at the end {os.getloadavg()[0]:.1f}")
    print(f"{'path':<30} {'n':>3} {'p50 s':>7} {'p95 s':>7} {'p50 vs cold':>12}")
    for name, values in rows.items():
        p50 = statistics.median(values)
        print(f"{name:<30} {len(values):>3} {p50:>7.2f} {percentile(values, 95):>7.2f} {base / p50:>11.1f}x")
    print(f"one-off start: hkgai serve ready in {server_start:.1f}s; in-process load (first question) {in_process_start:.1f}s")
    print(f"'Downloading artifacts' printed by: {downloads['cold CLI, download each call']}/{len(questions)} cold calls with the cache "
          f"emptied, {downloads['cold CLI, artifact cache']}/{len(questions)} with the cache kept")
    print(f"same answer and model version on every path: {sum(agree)}/{len(agree)} questions")
    warm = statistics.median(rows["warm served, HTTP"])
    print(f"goal warm p50 < 2 s: {'met' if warm < 2 else 'NOT met'} (served, HTTP: {warm:.2f}s; "
          f"served through hkgai ask: {statistics.median(rows['warm served, hkgai ask']):.2f}s)")


if __name__ == "__main__":
    main()
