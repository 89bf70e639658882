"""Slow: what a reviewer sees in a real browser (headless Chromium): the model card as MLflow's
model-version page renders it, with its captioned fixed-width tables and the chart served from
the registered model's run."""

from __future__ import annotations

import html
import shutil
import subprocess
import urllib.request

import pytest

from hkgai_pipelines.evaluation.report import TABLE_CAPTIONS, bar_chart, shown_tables
from hkgai_pipelines.platform import mlflow_ui_command, prepare_home
from hkgai_pipelines.registry.serving import CHART_ARTIFACT, chart_artifact_url, model_card
from hkgai_pipelines.settings import HkgaiSettings
from tests.test_model_card import GUARDRAIL, REPORTS
from tests.test_servers import _free_port, _wait_for, stop_server

CHROMIUM = shutil.which("chromium")


def _rendered_dom(url: str) -> str:
    result = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000",
                             "--virtual-time-budget=15000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium")
def test_mlflow_renders_the_model_card_readably(hkgai_home, tmp_path):
    from mlflow import MlflowClient

    settings = HkgaiSettings()
    prepare_home(settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    experiment = client.create_experiment("card", artifact_location=f"{settings.mlartifacts_dir.as_uri()}/card")
    run_id = client.create_run(experiment, run_name="registered_model").info.run_id
    client.log_artifact(run_id, str(bar_chart(REPORTS, tmp_path / "value_benchmark_by_stage.png")), "evaluation")
    tables = {key: (TABLE_CAPTIONS[key], headers, rows) for key, (headers, rows) in shown_tables(REPORTS, GUARDRAIL).items()}
    card = model_card(name="hkgai-v1", preset="cpu-demo", sources=[("hkcancor", "CC-BY-4.0")], tables=tables,
                      lineage={"preset": "cpu-demo"}, gate_thresholds="{}", chart_url=chart_artifact_url(run_id))
    client.create_registered_model("hkgai-v1")
    version = client.create_model_version("hkgai-v1", f"runs:/{run_id}/model", run_id=run_id, description=card).version

    port = _free_port()
    server = subprocess.Popen(mlflow_ui_command(settings, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/health", 120, server)
        dom = _rendered_dom(f"{base}/#/models/hkgai-v1/versions/{version}?workflowType=machine_learning")
        text = html.unescape(dom)
        # Every table under its caption, as preformatted text with its columns apart.
        for key, caption in TABLE_CAPTIONS.items():
            assert f"{caption} (" in text and f">{key}<" in text, key
        assert "HK sensitive issues  aligned_model    66.2       20.0      13.8     80        1" in text
        assert "<pre>" in dom and "aligned_model66.2" not in text
        # The chart: an <img> MLflow resolves to the run's artifact, and the server serves it.
        src = chart_artifact_url(run_id)
        assert f'src="{html.escape(src)}"' in dom
        with urllib.request.urlopen(f"{base}/{src}", timeout=30) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"
        assert CHART_ARTIFACT in text
    finally:
        stop_server(server)
