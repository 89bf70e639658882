"""params.yaml, parsed into typed parameter objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hkgai_pipelines.curation.quality import QualityThresholds
from hkgai_pipelines.curation.script import SCRIPT_ACTIONS
from hkgai_pipelines.curation.langid import LANGUAGES


@dataclass(frozen=True)
class DedupParams:
    threshold: float = 0.8
    num_perm: int = 128
    num_bands: int = 16
    ngram: int = 3
    seed: int = 42


@dataclass(frozen=True)
class CurationParams:
    allowed_languages: tuple[str, ...] = ("yue", "zh-hant", "zh-hans", "en", "mixed")
    script_policy: dict[str, str] = field(default_factory=lambda: {"zh-hans": "s2hk"})
    max_record_bytes: int = 10 * 1024 * 1024
    max_replacement_char_share: float = 0.2
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    dedup: DedupParams = field(default_factory=DedupParams)
    min_language_share: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict, where: str = "params.yaml") -> "CurationParams":
        data = dict(data or {})
        allowed = tuple(data.get("allowed_languages", cls.allowed_languages))
        bad = [lang for lang in allowed if lang not in LANGUAGES]
        if bad:
            raise ValueError(f"{where}: curation.allowed_languages has unknown {bad}; known {LANGUAGES}")
        policy = dict(data.get("script_policy") or {})
        bad_actions = {k: v for k, v in policy.items() if v not in SCRIPT_ACTIONS}
        if bad_actions:
            raise ValueError(f"{where}: curation.script_policy {bad_actions}: actions are {SCRIPT_ACTIONS}")
        quality = dict(data.get("quality") or {})
        if "max_top_ngram_fraction" in quality:
            quality["max_top_ngram_fraction"] = {int(k): float(v) for k, v in quality["max_top_ngram_fraction"].items()}
        try:
            thresholds = QualityThresholds(**quality)
            dedup = DedupParams(**(data.get("dedup") or {}))
        except TypeError as error:
            raise ValueError(f"{where}: {error}") from None
        return cls(
            allowed_languages=allowed,
            script_policy=policy,
            max_record_bytes=int(data.get("max_record_bytes", cls.max_record_bytes)),
            max_replacement_char_share=float(data.get("max_replacement_char_share", cls.max_replacement_char_share)),
            quality=thresholds,
            dedup=dedup,
            min_language_share={k: float(v) for k, v in (data.get("min_language_share") or {}).items()},
        )


def load_params(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parameters file not found: {path}")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def load_curation_params(path: Path) -> CurationParams:
    return CurationParams.from_dict(load_params(path).get("curation", {}), where=str(path))


@dataclass(frozen=True)
class RagParams:
    chunk_target_chars: int = 300
    chunk_overlap_chars: int = 60
    max_document_chars: int = 200_000
    alpha: float = 0.5
    min_recall_at_5: float = 0.85
    min_mrr: float = 0.65
    keep_versions: int = 3
    min_answer_similarity: float = 0.3


def _load_section(path: Path, section: str, cls):
    """One params.yaml section as its dataclass; an unknown or missing key names the section."""
    data = load_params(path).get(section) or {}
    try:
        return cls(**data)
    except TypeError as error:
        raise ValueError(f"{path}: {section}: {error}") from None


def load_rag_params(path: Path) -> RagParams:
    return _load_section(path, "rag", RagParams)


@dataclass(frozen=True)
class EvaluationParams:
    external_dir: str | None = "../shared/data"
    external_max_items: int | None = 200
    generation_max_new_tokens: int = 32


def load_evaluation_params(path: Path) -> EvaluationParams:
    return _load_section(path, "evaluation", EvaluationParams)


@dataclass(frozen=True)
class RegistryParams:
    model_name: str = "hkgai-v1"
    auth_enabled: bool = False
    #: Seconds a review decision's tags must stay unchanged before the approval sensor acts
    #: (registry/review.py).
    decision_settle_s: float = 60.0
    #: Seconds a champion drift (alias not where the audit log says) must persist before
    #: champion_drift_sensor restores it, so the moment inside a promotion between its audit
    #: record and its alias move is never taken for drift.
    drift_settle_s: float = 60.0
    #: GateThresholds fields (hkgai_pipelines/registry/gates.py); empty: its defaults.
    gates: dict = field(default_factory=dict)


def load_registry_params(path: Path) -> RegistryParams:
    return _load_section(path, "registry", RegistryParams)
