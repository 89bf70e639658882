"""Which model answers `hkgai ask`: the MLflow `champion`, else the newest aligned_model; and
how it is loaded without paying for it twice.

The registry and the model chain publish these; until they exist, no generator is returned
and the answer is extractive (the caller says so in its output). The aligned_model stands in
only when the registry answered and has no champion: a registry that cannot be read is a
RegistryUnavailable, never a quiet switch to a model nobody approved.

Choosing and loading are apart, because they cost very different amounts:

* `choose_model` asks the registry one question (the `champion` alias) and returns a
  `ModelChoice` whose `key` names exactly that version. Milliseconds on the local SQLite store,
  so `hkgai serve` does it before every answer and notices a new champion at once.
* `load_generator` turns a choice into a loaded model, once per process per key. The
  champion's artifacts come through `ArtifactCache`: a folder under
  `$HKGAI_HOME/cache/models/<name>/` named by the version and a digest of the artifact listing
  (every path and size), so a second process finds the same version already on disk and does not
  download it again. MLflow records no content checksum for artifacts, so the listing (plus the
  version's source, run and creation time) is the strongest identity the registry offers; a file
  rewritten in place at the same size would go unnoticed, as it would by MLflow itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from hkgai_pipelines.settings import HkgaiSettings

#: The default of params.yaml registry.model_name (tests name it).
REGISTERED_MODEL = "hkgai-v1"

#: Written last into a cache entry: what the entry holds. An entry without it is unfinished.
CACHE_MARKER = ".hkgai-artifacts.json"

#: The note `hkgai ask` carries when the aligned_model answers for want of a champion.
NO_CHAMPION_NOTE = "no champion in MLflow: answered by the newest aligned_model"


class ChampionNotServable(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelChoice:
    """The model that should answer now, named but not loaded.

    `key` identifies it exactly (same key, same weights): for the champion the registry URI,
    model name, version, source, run id and creation time (a version number alone is reused
    when a registered model is deleted and created again); for the aligned_model the resolved
    checkpoint folder. `label` is what `model_version` says in the answer; `note` is None for
    the champion and NO_CHAMPION_NOTE for the aligned_model."""

    key: str
    label: str
    note: str | None
    #: The champion's MLflow ModelVersion; None for the aligned_model.
    version: object | None = None
    #: The aligned_model's checkpoint folder; None for the champion.
    model_dir: Path | None = None


def _registry_client(settings: HkgaiSettings):
    from mlflow.tracking import MlflowClient

    from hkgai_pipelines.registry.promotion import bound_mlflow_waits

    bound_mlflow_waits()
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def registered_model_name(settings: HkgaiSettings) -> str:
    """The registered model `hkgai ask` and `hkgai serve` answer with."""
    from hkgai_pipelines.params import load_registry_params

    # The registered model named in params.yaml (registry.model_name), as the registry assets use.
    return load_registry_params(settings.params_file).model_name


def champion_version(settings: HkgaiSettings):
    """The MLflow ModelVersion behind `champion`, or None when the registry has no registered
    model or no `champion` alias. One registry call. Raises RegistryUnavailable (naming the
    tracking URI) when MLflow does not answer within the bound, MlflowException for MLflow's
    other errors."""
    from mlflow.exceptions import MlflowException

    from hkgai_pipelines.registry.promotion import NOT_FOUND_CODES, with_retries

    client = _registry_client(settings)
    name = registered_model_name(settings)
    try:
        return with_retries(lambda: client.get_model_version_by_alias(name, "champion"), settings.registry_uri)
    except MlflowException as error:
        if error.error_code in NOT_FOUND_CODES:
            return None
        raise


def choose_model(settings: HkgaiSettings) -> ModelChoice | None:
    """The champion, else the newest aligned_model, else None (extractive answers), without
    loading anything. A configured MLflow server is always asked; the local SQLite store only
    once something created it. Raises what `champion_version` raises."""
    configured = settings.mlflow_tracking_uri or settings.mlflow_registry_uri or settings.profile == "production"
    if configured or settings.home_dir.joinpath("mlflow.db").exists():
        version = champion_version(settings)
        if version is not None:
            key = "|".join(str(part) for part in (settings.registry_uri, version.name, version.version, version.source,
                                                   version.run_id, version.creation_timestamp))
            return ModelChoice(key, f"{version.name}/{version.version} (champion)", None, version=version)
    aligned = settings.lake_dir / "models" / "aligned_model" / "latest"
    if (aligned / "config.json").exists():
        # `latest` is a link that moves to each new run's folder: the target is the identity.
        folder = aligned.resolve()
        return ModelChoice(f"aligned_model|{folder}", "aligned_model (no champion yet)", NO_CHAMPION_NOTE, model_dir=folder)
    return None


class ArtifactCache:
    """Model-version artifacts downloaded once into `root/<name>/v<version>-<digest>/`.

    The digest covers the registry's identity of the version (name, version, source, run id,
    creation time) and the recursive artifact listing (path and size of every file), so a
    recreated model or re-uploaded artifacts get a new folder. An entry is used only when its
    marker (written last) matches and every file it downloaded is present at its size then; a
    download goes to a private folder first and is renamed into place, so concurrent processes
    never read a half-written entry. Old entries are never deleted by this class; removing
    `root` while nothing is loading is safe (the next load downloads again)."""

    def __init__(self, root: Path, tracking_uri: str) -> None:
        self.root = Path(root)
        self.tracking_uri = tracking_uri

    def listing(self, source: str) -> list[tuple[str, int]]:
        """[(path relative to `source`, size)] of every file under `source`, sorted. Raises
        RegistryUnavailable when the artifact store does not answer."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        from hkgai_pipelines.registry.promotion import with_retries

        # A repository rooted at the source lists paths relative to it (`mlflow.artifacts.
        # list_artifacts` would read `models:/m-.../artifacts` as a registered model's name).
        repository = get_artifact_repository(source, tracking_uri=self.tracking_uri)

        def walk(path: str | None) -> list[tuple[str, int]]:
            entries = with_retries(lambda: repository.list_artifacts(path), self.tracking_uri)
            found = []
            for entry in entries:
                found.extend(walk(entry.path) if entry.is_dir else [(entry.path, int(entry.file_size or 0))])
            return found

        return sorted(walk(None))

    def entry_for(self, version) -> tuple[Path, dict]:
        """(the folder that holds or will hold `version`'s artifacts, the marker it must carry)."""
        files = self.listing(version.source)
        identity = {"name": version.name, "version": str(version.version), "source": version.source,
                    "run_id": version.run_id, "created": version.creation_timestamp, "files": files}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return self.root / version.name / f"v{version.version}-{digest}", {**identity, "digest": digest}

    @staticmethod
    def _complete_root(folder: Path, marker: dict) -> Path | None:
        """The folder holding the artifacts inside a complete entry, else None."""
        try:
            written = json.loads((folder / CACHE_MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if written.get("digest") != marker["digest"]:
            return None
        # MLflow puts a source's last path component under the destination (`runs:/id/checkpoint`
        # lands in `<dst>/checkpoint`, `models:/m-...` directly in `<dst>`): the marker says where.
        root = folder / written.get("root", ".")
        # What was downloaded is still there: sizes only, no hashing (a production checkpoint is
        # tens of GB). Checked against the files as written, not the remote listing, since MLflow
        # rewrites some on download (`registered_model_meta`).
        local = written.get("local") or []
        if local and all((root / path).is_file() and (root / path).stat().st_size == size for path, size in local):
            return root
        return None

    def fetch(self, version) -> Path:
        """The local folder holding `version`'s artifacts, downloading them only when no complete
        entry exists. Raises RegistryUnavailable when the store does not answer, MlflowException
        for MLflow's other errors."""
        import mlflow.artifacts

        from hkgai_pipelines.registry.promotion import with_retries

        folder, marker = self.entry_for(version)
        root = self._complete_root(folder, marker)
        if root is not None:
            return root
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            local = with_retries(lambda: mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(partial),
                                                                             tracking_uri=self.tracking_uri),
                                 self.tracking_uri, bounded=False)  # a checkpoint download may rightly take longer than the deadline
            files = sorted((str(path.relative_to(local)), path.stat().st_size) for path in Path(local).rglob("*") if path.is_file())
            written = {**marker, "root": os.path.relpath(local, partial), "local": files}
            (partial / CACHE_MARKER).write_text(json.dumps(written, ensure_ascii=False), encoding="utf-8")
            if folder.exists():
                # Another process finished first, or an entry was damaged: keep a complete one.
                root = self._complete_root(folder, marker)
                if root is not None:
                    return root
                stale = folder.with_name(f".{folder.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                os.rename(folder, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(partial, folder)
            except OSError:
                # Lost a race to an identical download between the check and the rename.
                if self._complete_root(folder, marker) is None:
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return folder / written["root"]


def artifact_cache(settings: HkgaiSettings) -> ArtifactCache:
    """The cache of the settings' home: `$HKGAI_HOME/cache/models`."""
    return ArtifactCache(settings.home_dir / "cache" / "models", settings.tracking_uri)


def champion_model_dir(settings: HkgaiSettings, version, cache: ArtifactCache | None = None) -> Path:
    """The checkpoint folder of a champion version, from the artifact cache. Raises
    ChampionNotServable when its artifacts hold no checkpoint, RegistryUnavailable or
    MlflowException when they cannot be fetched."""
    import mlflow

    from hkgai_pipelines.evaluation.model import find_model_dir

    # `models:/m-...` sources resolve through the process-wide registry URI.
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri or settings.tracking_uri)
    local = (cache or artifact_cache(settings)).fetch(version)
    found = find_model_dir(local)
    if found is None:
        raise ChampionNotServable(f"the champion {version.name}/{version.version} ({version.source}) holds no model directory")
    return found


def _champion_dir(settings: HkgaiSettings) -> tuple[str, str] | None:
    """(checkpoint directory, label) of the champion, or None when there is none. Raises
    RegistryUnavailable, ChampionNotServable or MlflowException (see `champion_model_dir`)."""
    version = champion_version(settings)
    if version is None:
        return None
    return str(champion_model_dir(settings, version)), f"{version.name}/{version.version} (champion)"


class _LoadedModels:
    """The generators this process has loaded, by `ModelChoice.key`. Holds the newest only: a
    served process that moves to a new champion lets the old weights go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._generator = None

    def get(self, settings: HkgaiSettings, choice: ModelChoice, cache: ArtifactCache | None = None):
        from hkgai_pipelines.rag.answer import CausalLMGenerator

        with self._lock:
            if self._key != choice.key:
                model_dir = choice.model_dir or champion_model_dir(settings, choice.version, cache)
                self._generator = CausalLMGenerator(str(model_dir), choice.label)
                self._key = choice.key
            return self._generator


_LOADED = _LoadedModels()


def load_generator(settings: HkgaiSettings, choice: ModelChoice, cache: ArtifactCache | None = None):
    """The CausalLMGenerator of `choice`, loaded at most once per process while it stays the
    choice. Raises ChampionNotServable, RegistryUnavailable or MlflowException (champion
    artifacts), ModelLoadError (a checkpoint that does not load)."""
    if settings.torch_threads:
        import torch

        # Process-wide, as torch's thread pool is. On 2 busy cores the demo model generated
        # 64 tokens in 0.7 s with one thread and 3-7 s with two, the threads waiting on each other.
        torch.set_num_threads(settings.torch_threads)
    return _LOADED.get(settings, choice, cache)


def resolve_generator(settings: HkgaiSettings):
    """(generator or None, a note saying which model answers). Raises RegistryUnavailable when
    a configured MLflow does not answer, ChampionNotServable when the champion holds no
    checkpoint (see `champion_model_dir`)."""
    choice = choose_model(settings)
    if choice is None:
        return None, None
    return load_generator(settings, choice), choice.note


class CurrentModel:
    """The model a long-running process answers with, kept in step with the registry.

    `get()` asks the registry which model should answer (one alias lookup, see `choose_model`)
    before every answer and loads a different one when the champion moved, so a promotion or a
    rollback is served from the next question on; the question that notices the change waits for
    the load. When the registry cannot be read, `get()` raises as `hkgai ask` does rather than
    keep answering with a model that may have been rolled back."""

    def __init__(self, settings: HkgaiSettings, cache: ArtifactCache | None = None) -> None:
        self.settings = settings
        self.cache = cache or artifact_cache(settings)
        #: The choice the last `get()` answered with (None: extractive).
        self.choice: ModelChoice | None = None

    def get(self):
        """(generator or None, note) as `resolve_generator` returns them. Raises what
        `choose_model` and `load_generator` raise."""
        choice = choose_model(self.settings)
        generator = load_generator(self.settings, choice, self.cache) if choice else None
        self.choice = choice
        return generator, choice.note if choice else None
