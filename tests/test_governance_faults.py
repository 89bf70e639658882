"""Faults a tester found in the registry's governance and its MLflow waits, each reproduced
literally: a rollback forged with one tag, code planted in a pickled registry model, and
commands that hung for minutes (then served an unapproved model) when MLflow was down."""

import json
import pickle
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hkgai_pipelines.cli import app
from hkgai_pipelines.registry import promotion
from hkgai_pipelines.registry.promotion import AuditLog, ModelRegistry, PromotionError, RegistryUnavailable, with_retries
from hkgai_pipelines.resources import resources_for
from tests.test_answer_models import _tiny_causal_lm

runner = CliRunner()
HTTP_VARS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


# ------------------------------------------------------------------ 1. forged rollback


@pytest.fixture
def three_versions(hkgai_home):
    """The local profile's registry: v1 and v2 promoted through gates and review (v2 champion),
    v3 failed its gates and was never reviewed."""
    mlflow = resources_for("local")["mlflow"]
    client = mlflow.get_client()
    experiment = mlflow.experiment_id()
    client.create_registered_model("hkgai-v1")
    for _ in range(3):
        run_id = client.create_run(experiment).info.run_id
        client.create_model_version("hkgai-v1", f"runs:/{run_id}/model", run_id=run_id, tags={"registered.by": "pipeline", "scores": "{}"})
    # The audit log where the registry assets and the CLI keep it.
    registry = ModelRegistry(client, "hkgai-v1", tracking_uri=mlflow.tracking_uri, audit_dir=hkgai_home / "lake" / "registry" / "audit")
    for version in ("1", "2"):
        registry.apply_gates(version, [])
        registry.approve(version, "alice")
        registry.promote(version)
    registry.apply_gates("3", ["Unsafe 60.0% in hk_sensitive exceeds the limit of 45.0%"])
    assert (registry.alias("champion"), registry.alias("previous_champion")) == ("2", "1")
    return registry


def test_rollback_forged_with_a_tag_is_refused_and_a_real_champion_restores(three_versions):
    registry = three_versions
    # The tester's fault, literally: one tag on the failed, unreviewed version.
    registry.client.set_model_version_tag("hkgai-v1", "3", "promotion.status", "done")
    result = runner.invoke(app, ["rollback", "--to", "3", "--by", "mallory"])
    assert result.exit_code == 1
    assert "version 3 was never promoted through review" in _one_line(result.output)
    # Everything else a tag-writer can set does not help either.
    for key, value in {"gate": "passed", "review.status": "approved", "review.by": "alice", "audit.promote.by": "alice"}.items():
        registry.client.set_model_version_tag("hkgai-v1", "3", key, value)
    result = runner.invoke(app, ["rollback", "--to", "3", "--by", "mallory"])
    assert result.exit_code == 1 and "never promoted through review" in _one_line(result.output)
    assert registry.alias("champion") == "2"

    result = runner.invoke(app, ["rollback", "--to", "1", "--by", "ops", "--note", "regression"])
    assert result.exit_code == 0, result.output
    assert "champion v2 -> v1" in result.stdout and registry.alias("champion") == "1"
    assert registry.audit_log.records()[-1].action == "rollback"


def test_tag_forged_gate_does_not_let_a_failed_version_be_promoted(three_versions):
    registry = three_versions
    registry.client.set_model_version_tag("hkgai-v1", "3", "gate", "passed")
    registry.client.set_registered_model_alias("hkgai-v1", "candidate", "3")
    with pytest.raises(PromotionError, match="version 3 did not pass the gates: Unsafe 60.0% in hk_sensitive"):
        registry.approve("3", "alice")
    for key, value in {"review.status": "approved", "review.by": "alice", "review.at": "now"}.items():
        registry.client.set_model_version_tag("hkgai-v1", "3", key, value)
    with pytest.raises(PromotionError, match="version 3 did not pass the gates"):
        registry.promote("3")
    assert registry.alias("champion") == "2"


def test_a_forged_audit_record_is_refused_in_either_store(three_versions):
    """The trust boundary: a record only in MLflow, only in the log, or an edited log line."""
    registry = three_versions
    log = registry.audit_log
    promote_v1 = next(r for r in log.records() if (r.action, r.version) == ("promote", "1"))
    run_3 = registry.version("3").run_id
    forged = promotion.AuditRecord(**{**promote_v1.to_json(), "version": "3", "run_id": run_3})
    # Only on the run (someone with write access to the experiment's artifacts).
    registry.client.log_dict(run_3, forged.to_json(), f"audit/promote-v3-{forged.at.replace(':', '')}-99.json")
    with pytest.raises(PromotionError, match="never promoted through review"):
        registry.rollback("mallory", to_version="3")
    # Only in the log (someone with write access to the pipeline's storage): a passing gate
    # record and a promote record, well chained, but no mirror on the run.
    log.append(promotion.AuditRecord("gate", "3", "registered_model_gates", forged.at, "", {}, model="hkgai-v1", run_id=run_3, gate="passed"))
    log.append(forged)
    with pytest.raises(PromotionError, match="copy of promote record .* is missing or differs"):
        registry.rollback("mallory", to_version="3")
    # An edited line breaks the chain: the log is refused as a whole.
    lines = log.path.read_text().splitlines()
    assert '"failed"' in lines[4]  # v3's real gate record
    lines[4] = lines[4].replace('"failed"', '"passed"')
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PromotionError, match="was altered at line"):
        registry.rollback("ops", to_version="1")
    assert registry.alias("champion") == "2"


def test_audit_log_is_a_chain_that_a_deleted_line_breaks(tmp_path):
    log = AuditLog(tmp_path / "audit" / "m.jsonl")
    for version in ("1", "2"):
        log.append(promotion.AuditRecord("gate", version, "registered_model_gates", "t", "", {}, gate="passed"))
    first, second = log.records()
    assert (first.seq, first.prev, second.seq) == (1, "", 2) and len(second.prev) == 64
    log.path.write_text(log.path.read_text().splitlines()[1] + "\n")  # the first line deleted
    with pytest.raises(PromotionError, match="altered at line 1"):
        log.records()


def test_removing_the_newest_audit_records_is_noticed(three_versions):
    """The chain cannot show a deleted last line; the registry's `audit.head` tag can. The
    tester removed the newest record (a rollback) and rolled back again unnoticed."""
    registry = three_versions
    assert runner.invoke(app, ["rollback", "--to", "1", "--by", "ops"]).exit_code == 0
    lines = registry.audit_log.path.read_text().splitlines()
    registry.audit_log.path.write_text("\n".join(lines[:-1]) + "\n")  # sed -i '$d'
    result = runner.invoke(app, ["rollback", "--to", "2", "--by", "eve"])
    assert result.exit_code == 1
    assert f"ends at record {len(lines) - 1}, but record {len(lines)} was written: records were removed" in _one_line(result.output)
    assert registry.alias("champion") == "1"


# ------------------------------------------------------------------ 2. pickled code in the registry


class _Payload:
    """What the tester planted: unpickling writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('planted code ran')",)


def test_registered_model_loads_from_code_and_ignores_a_planted_pickle(tmp_path, monkeypatch):
    import mlflow
    import pandas as pd
    from mlflow.models import Model
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.tracking import MlflowClient

    from hkgai_pipelines.registry.serving import CHAT_MODEL_CODE, log_chat_model

    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # mlflow.set_*_uri are process-global (module variables and env vars): restored after the test.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tracking)
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    checkpoint = _tiny_causal_lm(tmp_path / "aligned")
    with mlflow.start_run(experiment_id=experiment):
        info = log_chat_model(checkpoint)  # what registered_model logs
    version = mlflow.register_model(info.model_uri, "hkgai-v1").version
    client.set_registered_model_alias("hkgai-v1", "champion", version)

    folder = Path(ModelsArtifactRepository.get_underlying_uri(f"models:/hkgai-v1/{version}").removeprefix("file://"))
    flavor = Model.load(str(folder)).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavor
    assert Path(flavor["model_code_path"]).name == CHAT_MODEL_CODE.name and (folder / CHAT_MODEL_CODE.name).exists()
    assert not list(folder.rglob("*.pkl"))

    # The payload is live: unpickling it runs the planted code.
    pickle.loads(pickle.dumps(_Payload(tmp_path / "payload-is-live")))
    assert (tmp_path / "payload-is-live").exists()
    marker = tmp_path / "planted-code-ran"
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_Payload(marker)))

    served = mlflow.pyfunc.load_model("models:/hkgai-v1@champion")  # as the README shows
    replies = served.predict(pd.DataFrame({"prompt": ["hong kong answer"]}))
    assert not marker.exists()
    assert len(replies) == 1 and isinstance(replies[0], str)


# ------------------------------------------------------------------ 3. unbounded MLflow waits


@pytest.fixture
def unset_bounds(monkeypatch):
    """MLflow's HTTP variables and the deadline unset, as in a fresh shell; whatever the code
    under test sets is undone afterwards."""
    for name in (*HTTP_VARS, promotion.DEADLINE_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def closed_port_uri():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_default_bound_on_one_mlflow_call_and_on_an_operation(monkeypatch, unset_bounds):
    # MLflow's own defaults: 244 s of backoff sleeps alone (the tester's 247.5 s with jitter).
    assert promotion.mlflow_call_worst_case_s({}) > 240 + 8 * 120
    promotion.bound_mlflow_waits()
    assert promotion.mlflow_call_worst_case_s() <= 35  # 3 tries x 10 s + 2 s backoff + 1 s jitter
    assert promotion.registry_deadline_s() == 60
    # What the user sets wins.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    promotion.bound_mlflow_waits()
    assert promotion.mlflow_call_worst_case_s() == 3 * 30 + 3


def test_the_products_retries_stop_before_the_deadline(monkeypatch):
    """A retry starts only when it can still fail within the deadline, given the longest one
    MLflow call may take (here 3 x 10 s + 3 s = 33 s, each call taking all of it)."""
    for name, value in promotion.MLFLOW_HTTP_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    clock, waits = [0.0], []

    def dead_server():
        clock[0] += 33.0
        raise ConnectionError("Connection refused")

    with pytest.raises(RegistryUnavailable, match="unreachable after 1 attempt in 33s: connection refused"):
        with_retries(dead_server, "http://mlflow:5000", sleep=waits.append, deadline_s=60, clock=lambda: clock[0])
    assert waits == []


def test_approve_with_mlflow_down_fails_within_the_default_bound(hkgai_home, monkeypatch, unset_bounds, closed_port_uri):
    """`hkgai approve 1` printed nothing for 15 minutes; with the product's defaults it is one
    line naming the URI (13 s measured: 4 attempts, each 3 tries refused)."""
    monkeypatch.setenv("HKGAI_MLFLOW_TRACKING_URI", closed_port_uri)
    started = time.monotonic()
    result = runner.invoke(app, ["approve", "1", "--reviewer", "alice"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert f"MLflow at {closed_port_uri} is unreachable" in _one_line(result.output)
    assert elapsed < 60


def test_ask_with_mlflow_down_refuses_instead_of_serving_another_model(hkgai_home, monkeypatch, unset_bounds, closed_port_uri):
    from hkgai_pipelines.rag.models import resolve_generator
    from hkgai_pipelines.settings import HkgaiSettings

    # A tighter bound than the default keeps the test short: 2 refused tries a call, 5 s in all.
    for name, value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2", promotion.DEADLINE_ENV: "5"}.items():
        monkeypatch.setenv(name, value)
    _tiny_causal_lm(HkgaiSettings().lake_dir / "models" / "aligned_model" / "latest")  # the model it used to fall back to
    monkeypatch.setenv("HKGAI_MLFLOW_TRACKING_URI", closed_port_uri)
    started = time.monotonic()
    result = runner.invoke(app, ["ask", "點樣續領香港身份證？", "--json"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert f"MLflow at {closed_port_uri} is unreachable" in error and "not answering with another model" in error
    assert elapsed < 30
    with pytest.raises(RegistryUnavailable, match=closed_port_uri):
        resolve_generator(HkgaiSettings())

    # Reachable and no champion: the aligned_model still answers, saying so.
    monkeypatch.setenv("HKGAI_MLFLOW_TRACKING_URI", f"sqlite:///{hkgai_home / 'mlflow.db'}")
    generator, note = resolve_generator(HkgaiSettings())
    assert generator.version == "aligned_model (no champion yet)" and "no champion" in note


@pytest.fixture
def trickling_server_uri():
    """An HTTP server that answers `200 OK` and then one header line every 2 s, forever: each
    read arrives within any socket timeout, so only a wall-clock bound ends the request."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=trickle, args=(connection,), daemon=True).start()

    def trickle(connection) -> None:
        try:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(2):
                connection.sendall(b"X-Slow: 1\r\n")
        except OSError:
            pass
        finally:
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


def test_a_server_that_trickles_headers_is_cut_off_at_the_deadline(hkgai_home, monkeypatch, trickling_server_uri):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv(promotion.DEADLINE_ENV, "6")
    # The registry URI named too: MLflow otherwise takes a process-wide one an earlier test set.
    client = MlflowClient(tracking_uri=trickling_server_uri, registry_uri=trickling_server_uri)
    registry = ModelRegistry(client, "hkgai-v1", tracking_uri=trickling_server_uri)
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=f"MLflow at {trickling_server_uri} is unreachable after 1 attempt .*timed out"):
        registry.alias("champion")
    assert time.monotonic() - started < 10


def test_call_within_returns_raises_or_times_out():
    assert promotion.call_within(lambda: 42, 1) == 42
    with pytest.raises(KeyError):
        promotion.call_within(lambda: {}["missing"], 1)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no complete answer within 1s"):
        promotion.call_within(lambda: time.sleep(30), 1)
    assert time.monotonic() - started < 2
