"""Which model answers `hkgai ask`: the MLflow `champion`, else the newest aligned_model.

The registry and the model chain publish these; until they exist, no generator is returned
and the answer is extractive (the caller says so in its output).
"""

from __future__ import annotations

from pathlib import Path

from hkgai_pipelines.settings import HkgaiSettings

#: The default of params.yaml registry.model_name (tests name it).
REGISTERED_MODEL = "hkgai-v1"


def _champion_dir(settings: HkgaiSettings) -> tuple[str, str] | None:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from hkgai_pipelines.evaluation.model import find_model_dir
    from hkgai_pipelines.params import load_registry_params

    # The registered model named in params.yaml (registry.model_name), as the registry assets use.
    name = load_registry_params(settings.params_file).model_name
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    try:
        version = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    target = settings.home_dir / "serving" / str(version.version)
    target.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri or settings.tracking_uri)
    # The version's source: a checkpoint directory, or the registered pyfunc whose artifact it is.
    found = find_model_dir(Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(target))))
    return (str(found), f"{name}/{version.version} (champion)") if found else None


def resolve_generator(settings: HkgaiSettings):
    """(generator or None, a note saying which model answers)."""
    from hkgai_pipelines.rag.answer import CausalLMGenerator

    champion = None
    if settings.home_dir.joinpath("mlflow.db").exists() or settings.profile == "production":
        champion = _champion_dir(settings)
    if champion:
        return CausalLMGenerator(*champion), None
    aligned = settings.lake_dir / "models" / "aligned_model" / "latest"
    if (aligned / "config.json").exists():
        return CausalLMGenerator(str(aligned), "aligned_model (no champion yet)"), "no champion in MLflow: answered by the newest aligned_model"
    return None, None
