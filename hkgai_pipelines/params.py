"""params.yaml, parsed into typed parameter objects.

Every value is checked against its field's type (and a threshold against its range) when the
file is read, so a wrong value stops a run with the key's name before any work, not with a
traceback after hours of curation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hkgai_pipelines.curation.quality import QualityThresholds
from hkgai_pipelines.curation.script import SCRIPT_ACTIONS
from hkgai_pipelines.curation.langid import LANGUAGES


class ParamsError(ValueError):
    """A parameters file that cannot be used: not YAML, not a mapping, an unknown key, a value
    of the wrong type or out of range. The message names the file and the key; the `hkgai`
    entry point prints it as one line (exit 2) whichever command read the file."""


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _typed(value, default, key: str):
    """`value` as the type of the field's default: int (no bool, no fraction), float (finite),
    bool, str, a list or a mapping. Raises ValueError naming `key`."""
    def wrong(kind: str):
        return ValueError(f"{key}: {value!r} is not {kind}{_as_text_hint(value)}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise wrong("a whole number")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise wrong("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (list, tuple)):
            raise wrong("a list")
        return type(default)(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise wrong("a mapping")
        return value
    return value  # a field whose default is None takes what YAML gives (its loader checks it)


def _as_text_hint(value) -> str:
    """Why a number came as text: YAML 1.1 (PyYAML) reads `1e6` and `1.5e6` as strings; it
    takes the exponent form only with a dot and a signed exponent (`1.0e+6`)."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    return f" (YAML reads {value} as text: write {number:.0f} or {number:.1e})" if number == int(number) else (
        f" (YAML reads {value} as text: write {number!r})")


def build(cls, data, where: str):
    """An instance of the dataclass `cls` from a params.yaml mapping, each value checked by
    `_typed` against its field's default; fields absent keep their defaults.

    Raises ValueError naming `where` (e.g. "params.yaml: curation.dedup") for a value that is
    not a mapping, an unknown key or a value of the wrong type."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where}: {data!r} is not a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known {sorted(fields)}")
    try:
        return cls(**{name: value if value is None and "None" in str(fields[name].type)
                      else _typed(value, _default(fields[name]), name) for name, value in data.items()})
    except ValueError as error:
        raise ValueError(f"{where}.{error}" if str(error).split(":")[0] in fields else f"{where}: {error}") from None


def _check_share(owner: object, where: str, *names: str) -> None:
    """Raises ValueError "<where>.<name>: ..." for a field of `owner` outside [0, 1]."""
    for name in names:
        value = getattr(owner, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}.{name}: {value} is a share and must lie in [0, 1]")


@dataclass(frozen=True)
class DedupParams:
    threshold: float = 0.8
    num_perm: int = 128
    num_bands: int = 16
    ngram: int = 3
    seed: int = 42

    def __post_init__(self) -> None:
        # A Jaccard similarity: 0 would call every candidate a duplicate.
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold: {self.threshold} is a Jaccard similarity and must lie in (0, 1]")
        for name in ("num_perm", "num_bands", "ngram"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} must be at least 1")
        if self.num_perm % self.num_bands:
            raise ValueError(f"num_perm: {self.num_perm} must be a multiple of num_bands ({self.num_bands})")
        if not 0 <= self.seed < 2**64:  # the MinHash library takes an unsigned 64-bit seed
            raise ValueError(f"seed: {self.seed} must lie in [0, 2**64)")


@dataclass(frozen=True)
class CurationParams:
    allowed_languages: tuple[str, ...] = ("yue", "zh-hant", "zh-hans", "en", "mixed")
    # The defaults are params.yaml's values: a params.yaml that leaves a key out curates as the
    # shipped one does (an absent script_policy used to keep Simplified text unconverted).
    script_policy: dict[str, str] = field(default_factory=lambda: {
        "yue": "keep", "zh-hant": "keep", "zh-hans": "s2hk", "yue-hans": "s2hk", "en": "keep", "mixed": "keep"})
    max_record_bytes: int = 10 * 1024 * 1024
    max_replacement_char_share: float = 0.2
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    dedup: DedupParams = field(default_factory=DedupParams)
    min_language_share: dict[str, float] = field(default_factory=lambda: {"yue": 0.20, "zh-hant": 0.005, "zh-hans": 0.05, "en": 0.05})

    @classmethod
    def from_dict(cls, data: dict, where: str = "params.yaml") -> "CurationParams":
        """Raises ValueError naming the key for an unknown key, a wrong type or a value out of range."""
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{where}: curation: {data!r} is not a mapping of keys to values")
        data = dict(data or {})
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(map(str, data)) - fields)
        if unknown:
            raise ValueError(f"{where}: curation: unknown keys {unknown}; known {sorted(fields)}")
        allowed = data.get("allowed_languages", cls.allowed_languages)
        if not isinstance(allowed, (list, tuple)):
            raise ValueError(f"{where}: curation.allowed_languages: {allowed!r} is not a list")
        allowed = tuple(allowed)
        if not allowed:
            raise ValueError(f"{where}: curation.allowed_languages is empty: every record would be rejected")
        bad = [lang for lang in allowed if lang not in LANGUAGES]
        if bad:
            raise ValueError(f"{where}: curation.allowed_languages has unknown {bad}; known {LANGUAGES}")
        # Merged over the defaults key by key, as quality and dedup are: a file naming zh-hans
        # alone kept it and silently dropped yue-hans' conversion. `keep` turns one off.
        policy = cls().script_policy | _mapping(data, "script_policy", where)
        # Keys are languages, and yue-hans (Cantonese in Simplified characters, script.py):
        # a misspelt key would leave its language unconverted without a word.
        unknown_policy = sorted(set(map(str, policy)) - {*LANGUAGES, "yue-hans"})
        if unknown_policy:
            raise ValueError(f"{where}: curation.script_policy: unknown languages {unknown_policy}; known {[*LANGUAGES, 'yue-hans']}")
        bad_actions = {k: v for k, v in policy.items() if v not in SCRIPT_ACTIONS}
        if bad_actions:
            raise ValueError(f"{where}: curation.script_policy {bad_actions}: actions are {SCRIPT_ACTIONS}")
        quality = _mapping(data, "quality", where)
        if "max_top_ngram_fraction" in quality:
            ngram_fractions = quality["max_top_ngram_fraction"]
            # quality.py scores the top 2-, 3- and 4-gram fractions (Gopher's n).
            if not isinstance(ngram_fractions, dict) or not set(ngram_fractions) <= {2, 3, 4} or any(
                    isinstance(k, bool) or isinstance(v, bool) or not isinstance(v, (int, float)) for k, v in ngram_fractions.items()):
                raise ValueError(f"{where}: curation.quality.max_top_ngram_fraction: {ngram_fractions!r} is not "
                                 f"a mapping of n (2, 3 or 4) to a share")
            quality = quality | {"max_top_ngram_fraction": {int(k): float(v) for k, v in ngram_fractions.items()}}
        thresholds = build(QualityThresholds, quality, f"{where}: curation.quality")
        _check_share(thresholds, f"{where}: curation.quality", "min_letter_ratio", "max_symbol_ratio", "max_digit_ratio",
                     "max_dup_line_fraction", "max_dup_line_char_fraction", "max_boilerplate_line_fraction")
        if not all(0.0 <= share <= 1.0 for share in thresholds.max_top_ngram_fraction.values()):
            raise ValueError(f"{where}: curation.quality.max_top_ngram_fraction: shares must lie in [0, 1]")
        if thresholds.repetition_min_tokens < 0:
            raise ValueError(f"{where}: curation.quality.repetition_min_tokens: {thresholds.repetition_min_tokens} must be at least 0")
        if not 0 <= thresholds.min_chars <= thresholds.max_chars:
            raise ValueError(f"{where}: curation.quality: need 0 <= min_chars ({thresholds.min_chars}) <= max_chars "
                             f"({thresholds.max_chars})")
        dedup = build(DedupParams, data.get("dedup"), f"{where}: curation.dedup")
        # Merged over the defaults as well; 0 turns a language's minimum off.
        shares = cls().min_language_share | _mapping(data, "min_language_share", where)
        unknown_shares = sorted(set(map(str, shares)) - set(LANGUAGES))
        if unknown_shares:
            raise ValueError(f"{where}: curation.min_language_share: unknown languages {unknown_shares}; known {list(LANGUAGES)}")
        shares = {str(k): _typed(v, 0.0, f"{where}: curation.min_language_share.{k}") for k, v in shares.items()}
        params = cls(
            allowed_languages=allowed,
            script_policy=policy,
            max_record_bytes=_typed(data.get("max_record_bytes", cls.max_record_bytes), 0, f"{where}: curation.max_record_bytes"),
            max_replacement_char_share=_typed(data.get("max_replacement_char_share", cls.max_replacement_char_share),
                                              0.0, f"{where}: curation.max_replacement_char_share"),
            quality=thresholds,
            dedup=dedup,
            min_language_share=shares,
        )
        if params.max_record_bytes < 1:
            raise ValueError(f"{where}: curation.max_record_bytes: {params.max_record_bytes} must be at least 1")
        _check_share(params, f"{where}: curation", "max_replacement_char_share")
        bad_shares = {k: v for k, v in shares.items() if not 0.0 <= v <= 1.0}
        if bad_shares:
            raise ValueError(f"{where}: curation.min_language_share {bad_shares}: shares must lie in [0, 1]")
        return params


def _mapping(data: dict, key: str, where: str) -> dict:
    """`data[key]` as a dict: absent or null is {}; anything else not a mapping (0, false, '',
    a list) raises ValueError (`or {}` took those for {} without a word)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: curation.{key}: {value!r} is not a mapping")
    return value



def load_params(path: Path) -> dict:
    """params.yaml as a mapping of sections. Raises FileNotFoundError, or ValueError with the
    file and line for text that is not YAML or not a mapping."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parameters file not found: {path}")
    if not path.is_file():
        raise ParamsError(f"{path} is not a file: give the parameters file (params.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not YAML: {' '.join(str(error).replace('<unicode string>', str(path)).split())}") from None
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path} is not UTF-8 text: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: the file holds {type(data).__name__} {data!r:.60}, not a mapping of sections "
                         f"(curation:, rag:, ...)")
    return data


def load_curation_params(path: Path) -> CurationParams:
    """The `curation` section. Raises ParamsError (a ValueError) when the file has no such
    section: a parameters file given for curation that names none would otherwise curate with
    the built-in defaults without a word."""
    data = load_params(path)
    if "curation" not in data:
        raise ParamsError(f"{path} has no curation: section (sections: {sorted(map(str, data)) or 'none'})")
    try:
        return CurationParams.from_dict(data["curation"], where=str(path))
    except ValueError as error:
        raise ParamsError(str(error)) from None


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

    def __post_init__(self) -> None:
        for name in ("chunk_target_chars", "max_document_chars", "keep_versions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} must be at least 1")
        # The overlap is carried into the next chunk: as long as the chunk, chunking never advances.
        if not 0 <= self.chunk_overlap_chars < self.chunk_target_chars:
            raise ValueError(f"chunk_overlap_chars: {self.chunk_overlap_chars} must lie in [0, chunk_target_chars "
                             f"({self.chunk_target_chars}))")
        # alpha weighs two scores in [0, 1]; recall, MRR and the answer threshold are scores in [0, 1].
        for name in ("alpha", "min_recall_at_5", "min_mrr", "min_answer_similarity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: {getattr(self, name)} must lie in [0, 1]")


def _load_section(path: Path, section: str, cls):
    """One params.yaml section as its dataclass (`build`); an unknown key or a wrong value names
    the section."""
    data = load_params(path).get(section)
    try:
        return build(cls, data, f"{path}: {section}")
    except ValueError as error:
        raise ParamsError(str(error)) from None


def load_rag_params(path: Path) -> RagParams:
    return _load_section(path, "rag", RagParams)


@dataclass(frozen=True)
class EvaluationParams:
    external_dir: str | None = "../shared/data"
    external_max_items: int | None = 200
    generation_max_new_tokens: int = 32

    def __post_init__(self) -> None:
        if self.external_max_items is not None and self.external_max_items < 1:
            raise ValueError(f"external_max_items: {self.external_max_items} must be at least 1, or null for all")
        if self.generation_max_new_tokens < 1:
            raise ValueError(f"generation_max_new_tokens: {self.generation_max_new_tokens} must be at least 1")


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

    def __post_init__(self) -> None:
        if not self.model_name.strip():
            raise ValueError("model_name: must name the registered model")
        for name in ("decision_settle_s", "drift_settle_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: {getattr(self, name)} seconds must not be negative")


def load_registry_params(path: Path) -> RegistryParams:
    return _load_section(path, "registry", RegistryParams)
