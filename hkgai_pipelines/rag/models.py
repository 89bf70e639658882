"""Which model answers `hkgai ask`: the MLflow `champion`, else the newest aligned_model.

The registry and the model chain publish these; until they exist, no generator is returned
and the answer is extractive (the caller says so in its output). The aligned_model stands in
only when the registry answered and has no champion: a registry that cannot be read is a
RegistryUnavailable, never a quiet switch to a model nobody approved.
"""

from __future__ import annotations

from pathlib import Path

from hkgai_pipelines.settings import HkgaiSettings

#: The default of params.yaml registry.model_name (tests name it).
REGISTERED_MODEL = "hkgai-v1"


class ChampionNotServable(RuntimeError):
    pass


def _champion_dir(settings: HkgaiSettings) -> tuple[str, str] | None:
    """(checkpoint directory, label) of the champion, or None when the registry has no
    registered model or no `champion` alias. Raises RegistryUnavailable (naming the tracking
    URI) when MLflow does not answer within the bound, ChampionNotServable when the champion's
    artifacts hold no checkpoint, and MlflowException for MLflow's other errors."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from hkgai_pipelines.evaluation.model import find_model_dir
    from hkgai_pipelines.params import load_registry_params
    from hkgai_pipelines.registry.promotion import NOT_FOUND_CODES, bound_mlflow_waits, with_retries

    bound_mlflow_waits()
    # The registered model named in params.yaml (registry.model_name), as the registry assets use.
    name = load_registry_params(settings.params_file).model_name
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    try:
        version = with_retries(lambda: client.get_model_version_by_alias(name, "champion"), settings.registry_uri)
    except MlflowException as error:
        if error.error_code in NOT_FOUND_CODES:
            return None
        raise
    target = settings.home_dir / "serving" / str(version.version)
    target.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri or settings.tracking_uri)
    # The version's source: a checkpoint directory, or the registered pyfunc whose artifact it is.
    local = with_retries(lambda: mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(target)), settings.tracking_uri,
                         bounded=False)  # a checkpoint download may rightly take longer than the deadline
    found = find_model_dir(Path(local))
    if found is None:
        raise ChampionNotServable(f"the champion {name}/{version.version} ({version.source}) holds no model directory")
    return str(found), f"{name}/{version.version} (champion)"


def resolve_generator(settings: HkgaiSettings):
    """(generator or None, a note saying which model answers). Raises RegistryUnavailable when
    a configured MLflow does not answer, ChampionNotServable when the champion holds no
    checkpoint (see `_champion_dir`)."""
    from hkgai_pipelines.rag.answer import CausalLMGenerator

    champion = None
    # A configured server is always asked; the local SQLite store only once something made it.
    configured = settings.mlflow_tracking_uri or settings.mlflow_registry_uri or settings.profile == "production"
    if configured or settings.home_dir.joinpath("mlflow.db").exists():
        champion = _champion_dir(settings)
    if champion:
        return CausalLMGenerator(*champion), None
    aligned = settings.lake_dir / "models" / "aligned_model" / "latest"
    if (aligned / "config.json").exists():
        return CausalLMGenerator(str(aligned), "aligned_model (no champion yet)"), "no champion in MLflow: answered by the newest aligned_model"
    return None, None
