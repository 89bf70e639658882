"""The README's separation of duties on a live MLflow basic-auth server (`--app-name basic-auth`,
as k8s/base/mlflow.yaml runs it): a reviewer granted EDIT on model versions can set the review
tags but cannot move or remove an alias; the pipeline's identity, which created the registered
model, can. Run against a local server on a SQLite store (about 30 s to start)."""

import os
import subprocess
import sys

import pytest
from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from tests.test_servers import _free_port, _wait_for, stop_server

ADMIN = ("admin", "admin-password-1234")
PIPELINE = ("pipeline", "pipeline-password-1234")
REVIEWER = ("reviewer", "reviewer-password-1234")


@pytest.fixture
def auth_server(tmp_path, monkeypatch):
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = _free_port()
    env = dict(os.environ, MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-secret")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # This test is about permissions, not deadlines: on a loaded machine the server's first
    # writes (its SQLite schema, the auth tables) took longer than the 10 s default.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", 180, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


def _as(monkeypatch, user: tuple[str, str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


@pytest.mark.timeout(300)
def test_reviewers_set_review_tags_but_only_the_pipeline_moves_aliases(auth_server, monkeypatch):
    client = MlflowClient(auth_server, registry_uri=auth_server)
    _as(monkeypatch, ADMIN)  # the README's commands, as the server's admin
    admin = AuthServiceClient(auth_server)
    admin.create_user(*PIPELINE)
    admin.create_user(*REVIEWER)

    _as(monkeypatch, PIPELINE)  # the pipeline registers (its creator's MANAGE on the model)
    client.create_registered_model("hkgai-v1")
    run_id = client.create_run(client.create_experiment("hkgai-v1")).info.run_id
    version = client.create_model_version("hkgai-v1", f"runs:/{run_id}/model", run_id=run_id).version
    client.set_registered_model_alias("hkgai-v1", "candidate", version)

    _as(monkeypatch, REVIEWER)
    with pytest.raises(MlflowException, match="403"):  # default_permission READ: no tags yet
        client.set_model_version_tag("hkgai-v1", version, "review.status", "approved")
    _as(monkeypatch, ADMIN)
    admin.grant_user_permission("reviewer", "registered_model_version", "*", "EDIT")

    _as(monkeypatch, REVIEWER)
    client.set_model_version_tag("hkgai-v1", version, "review.status", "approved")
    assert client.get_model_version("hkgai-v1", version).tags["review.status"] == "approved"
    with pytest.raises(MlflowException, match="403"):  # the alias pencil
        client.set_registered_model_alias("hkgai-v1", "champion", version)
    with pytest.raises(MlflowException, match="403"):
        client.delete_registered_model_alias("hkgai-v1", "candidate")

    _as(monkeypatch, PIPELINE)
    client.set_registered_model_alias("hkgai-v1", "champion", version)
    assert client.get_model_version_by_alias("hkgai-v1", "champion").version == version
