"""The data lake folder, the pipeline's configuration files, and DVC versioning."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from hkgai_pipelines import versioning
from hkgai_pipelines.params import (
    CurationParams, EvaluationParams, RagParams, RegistryParams, load_curation_params, load_evaluation_params, load_params,
    load_rag_params, load_registry_params,
)
from hkgai_pipelines.sources.catalog import SourceCatalog, load_catalog


class DataLakeResource(dg.ConfigurableResource):
    """Root folder of the lake: `raw/`, `cleaned/`, `datasets/`, ..."""

    root: str

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)


class PipelineConfigResource(dg.ConfigurableResource):
    """Where configs/ (presets, sources.yaml) and params.yaml are."""

    config_dir: str
    params_file: str
    #: Model preset in configs/presets/ (cpu-demo, gpu-h100, production; the -v4 ones: DeepSeek-V4).
    preset: str = "cpu-demo"

    def catalog(self) -> SourceCatalog:
        return load_catalog(Path(self.config_dir) / "sources.yaml")

    def curation_params(self) -> CurationParams:
        return load_curation_params(Path(self.params_file))

    def rag_params(self) -> RagParams:
        return load_rag_params(Path(self.params_file))

    def evaluation_params(self) -> EvaluationParams:
        return load_evaluation_params(Path(self.params_file))

    def registry_params(self) -> RegistryParams:
        return load_registry_params(Path(self.params_file))

    def language_mix(self) -> dict | None:
        """params.yaml `training.language_mix` (None: the preset's own)."""
        return (load_params(Path(self.params_file)).get("training") or {}).get("language_mix")


class DvcResource(dg.ConfigurableResource):
    """DVC repository in the lake folder with a local (or S3) remote."""

    repo_dir: str
    remote_url: str

    def track_and_push(self, target: str) -> versioning.TrackedData:
        return versioning.track_and_push(Path(self.repo_dir), target, self.remote_url)

    def read_record(self, target: str) -> dict:
        return versioning.read_record(Path(self.repo_dir), target)

    def point(self, name: str, target: str, record: dict) -> Path:
        return versioning.point(Path(self.repo_dir), name, target, record)

    def recorded_md5(self, name: str) -> str | None:
        return versioning.recorded_md5(Path(self.repo_dir), name)
