from pathlib import Path

import dagster as dg
import pytest

from hkgai_pipelines.resources import DataLakeResource, LocalCurationLauncher, MlflowResource, RayCurationLauncher, resources_for
from hkgai_pipelines.settings import HkgaiSettings


def test_local_profile_derives_every_path_from_home(hkgai_home):
    settings = HkgaiSettings()
    assert settings.profile == "local"
    assert settings.dagster_home == hkgai_home.resolve() / "dagster"
    assert settings.lake_dir == hkgai_home.resolve() / "lake"
    assert settings.tracking_uri == f"sqlite:///{hkgai_home.resolve() / 'mlflow.db'}"
    assert settings.registry_uri == settings.tracking_uri
    assert settings.dvc_remote_url == str(hkgai_home.resolve() / "dvc-remote")


def test_local_resources_point_at_files(hkgai_home):
    resources = resources_for("local", HkgaiSettings())
    assert isinstance(resources["mlflow"], MlflowResource)
    assert resources["mlflow"].tracking_uri.startswith("sqlite:///")
    assert resources["mlflow"].artifact_location == (hkgai_home.resolve() / "mlartifacts").as_uri()
    assert isinstance(resources["lake"], DataLakeResource)
    assert Path(resources["lake"].root) == hkgai_home.resolve() / "lake"


def test_production_profile_requires_servers(hkgai_home, monkeypatch):
    monkeypatch.setenv("HKGAI_PROFILE", "production")
    with pytest.raises(ValueError, match="HKGAI_MLFLOW_TRACKING_URI, HKGAI_DVC_REMOTE, HKGAI_WEAVIATE_URL"):
        HkgaiSettings()


def test_production_profile_reads_secrets_from_env_vars(hkgai_home, monkeypatch):
    monkeypatch.setenv("HKGAI_PROFILE", "production")
    monkeypatch.setenv("HKGAI_MLFLOW_TRACKING_URI", "https://mlflow.internal")
    monkeypatch.setenv("HKGAI_DVC_REMOTE", "s3://hkgai-data/dvc")
    monkeypatch.setenv("HKGAI_WEAVIATE_URL", "https://weaviate.internal")
    settings = HkgaiSettings()
    assert settings.tracking_uri == "https://mlflow.internal"
    resources = resources_for(settings=settings)
    # EnvVar keeps the value out of the definitions; it resolves when the run starts.
    assert isinstance(resources["mlflow"].tracking_uri, dg.EnvVar)
    assert resources["mlflow"].tracking_uri == "HKGAI_MLFLOW_TRACKING_URI"
    assert isinstance(resources["dvc"].remote_url, dg.EnvVar)
    # cleaned_corpus curates on a KubeRay RayJob whose pods mount the home where this pod has it.
    curation = resources["curation"]
    assert isinstance(curation, RayCurationLauncher) and curation.image == "HKGAI_TRAINING_IMAGE"
    assert curation.home_mount == str(settings.home_dir) == curation.pod_env["HKGAI_HOME"]
    assert curation.pod_env["HKGAI_MLFLOW_TRACKING_URI"] == "https://mlflow.internal"
    assert isinstance(resources_for("local", HkgaiSettings())["curation"], LocalCurationLauncher)


def test_unknown_profile_is_an_error(hkgai_home):
    with pytest.raises(ValueError, match="unknown profile 'staging'"):
        resources_for("staging", HkgaiSettings())
