"""The embedded platform under HKGAI_HOME: the persistent Dagster instance and the UI servers.

This module (with `demo.py` and `cli.py`) is the command-line side of the project; like
`definitions.py` it may import Dagster, unlike the domain subpackages.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from hkgai_pipelines.settings import HkgaiSettings

DAGSTER_YAML = """\
# Written by hkgai: the persistent local Dagster instance (SQLite under this folder).
telemetry:
  enabled: false
"""


def prepare_home(settings: HkgaiSettings) -> Path:
    """Create HKGAI_HOME's folders and the Dagster instance config; export DAGSTER_HOME."""
    for folder in (settings.dagster_home, settings.lake_dir, settings.mlartifacts_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    os.environ["HKGAI_HOME"] = str(settings.home_dir)
    return settings.dagster_home


def get_instance(settings: HkgaiSettings):
    import dagster as dg

    prepare_home(settings)
    return dg.DagsterInstance.get()


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dagster_ui_command(port: int) -> list[str]:
    # `dagster dev` runs the webserver and the daemon (schedules, sensors) together.
    return [sys.executable, "-m", "dagster", "dev", "-m", "hkgai_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)]


def mlflow_ui_command(settings: HkgaiSettings, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", settings.tracking_uri,
        "--default-artifact-root", settings.mlartifacts_dir.as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]


def start_ui(settings: HkgaiSettings, dagster_port: int, mlflow_port: int) -> list[subprocess.Popen]:
    prepare_home(settings)
    env = dict(os.environ, DAGSTER_HOME=str(settings.dagster_home), HKGAI_HOME=str(settings.home_dir))
    return [
        subprocess.Popen(dagster_ui_command(dagster_port), env=env),
        subprocess.Popen(mlflow_ui_command(settings, mlflow_port), env=env),
    ]
