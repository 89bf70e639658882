"""Reviewer-approved promotion in the MLflow model registry.

States of a model version, shown in its tags and the registered model's aliases:

    registered --gates pass--> gate audit record (passed), alias `candidate`, review.status=pending
               --gates fail--> gate audit record (failed, reasons), gate=failed, gate.reasons
    candidate  --reviewer----> review.status=approved | rejected, review.by, review.note, review.at
    approved   --promote-----> promote audit record written, then `champion` moved (the old holder
                               keeps `previous_champion`), `candidate` removed, promotion.status=done
    rejected   --close-------> reject audit record written, `candidate` removed
    champion   --rollback----> `champion` back to `previous_champion` (or a named version), audited
    champion   --drift-------> `champion` moved outside the pipeline (the alias pencil): a restore
                               record (an incident) is written and `champion` goes back to the
                               version the audit log last made champion (or is removed)

**Trust rule.** Tags and aliases are what the MLflow UI shows, and anyone allowed to edit the
registered model can set them, so no decision here rests on one. The facts the pipeline
established itself come only from its audit log (`AuditLog`): an append-only, hash-chained JSON
lines file in the pipeline's own storage (`lake/registry/audit/<model>.jsonl`, on the shared
volume in production), each record mirrored as `audit/*.json` on the version's source run.

- A gate result is the newest `gate` record of the version (not the `gate` tag).
- A review decision is the `review.*` tags: that is how a reviewer speaks (the MLflow UI), so it
  is as strong as MLflow's permissions on the registered model (a claim on the local profile).
- A former champion is a version with a `promote` record whose version and source run match,
  whose gate result is `passed` and whose review fields record an approval by the reviewer the
  record names, with an identical mirror on the run; `promotion.status=done` is display only.

Forging a champion therefore needs write access to the pipeline's storage *and* to the run's
artifacts, not a tag. Nothing moves `champion` without such records: `promote` re-checks the
gate record, the approval and that the version is still the candidate, and refuses with a
PromotionError otherwise. Alias moves come last, after the audit record is written, so an
interrupted promotion leaves the old champion in place.

MLflow calls are bounded: `bound_mlflow_waits` caps MLflow's own HTTP retries (unless the
environment sets them) and `with_retries` stops retrying before `HKGAI_MLFLOW_DEADLINE_S`
(60 s); an unreachable server is a RegistryUnavailable naming the tracking URI.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

CANDIDATE, CHAMPION, PREVIOUS = "candidate", "champion", "previous_champion"

#: MLflow's HTTP client settings the pipeline uses where the environment leaves them unset: 3
#: tries of at most 10 s each, 0 s then 2 s (+ up to 1 s jitter) apart, so one MLflow call gives
#: up within about 33 s. MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) wait
#: about 4 minutes on a refused connection and up to 20 on a silent one.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
#: MLflow's defaults for the same variables (mlflow/environment_variables.py), for the arithmetic.
_MLFLOW_OWN_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": 7, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 2,
                        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": 1.0, "MLFLOW_HTTP_REQUEST_TIMEOUT": 120}
#: urllib3's cap on one backoff sleep (Retry.DEFAULT_BACKOFF_MAX).
_URLLIB3_BACKOFF_MAX_S = 120.0
#: Total seconds one registry operation may take, the product's retries included.
DEADLINE_ENV, DEFAULT_DEADLINE_S = "HKGAI_MLFLOW_DEADLINE_S", 60.0


class PromotionError(RuntimeError):
    pass


class RegistryUnavailable(RuntimeError):
    pass


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def bound_mlflow_waits() -> None:
    """Set MLflow's HTTP retry and timeout variables to `MLFLOW_HTTP_DEFAULTS` where the
    environment does not set them. MLflow reads them on every request, so this works whenever it
    runs before the first call; every entry point (the MLflow resource, the CLI, `hkgai ask`)
    calls it. Process-wide on purpose: the bound must hold for calls made through `mlflow.*`
    module functions too."""
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def mlflow_call_worst_case_s(env: dict[str, str] | None = None) -> float:
    """The longest one MLflow HTTP call can take before it fails, from the environment's (else
    MLflow's own) retry settings: every try timing out, plus urllib3's backoff sleeps
    (none after the first failure, then factor * 2**(n-1) + jitter, each capped at 120 s).
    A server that answers 429/503 with Retry-After is waited for as it asks, beyond this."""
    env = os.environ if env is None else env

    def setting(name: str) -> float:
        return float(env.get(name) or _MLFLOW_OWN_DEFAULTS[name])

    retries = int(setting("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
    factor, jitter = setting("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"), setting("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")
    sleeps = sum(min(_URLLIB3_BACKOFF_MAX_S, factor * 2 ** (n - 1) + jitter) for n in range(2, retries + 1))
    return (retries + 1) * setting("MLFLOW_HTTP_REQUEST_TIMEOUT") + sleeps


def registry_deadline_s(env: dict[str, str] | None = None) -> float:
    """`HKGAI_MLFLOW_DEADLINE_S`, else 60 s. Raises ValueError when it is not a positive number."""
    raw = (os.environ if env is None else env).get(DEADLINE_ENV)
    if not raw:
        return DEFAULT_DEADLINE_S
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{DEADLINE_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def _is_connection_failure(error: Exception) -> bool:
    """An error meaning the server did not answer (a REST error it answered is final)."""
    import requests

    if isinstance(error, (ConnectionError, TimeoutError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    text = str(error)
    return any(marker in text for marker in ("Max retries exceeded", "Connection", "timeout exception", "timed out"))


def _short_reason(error: Exception) -> str:
    """One line for the user: MLflow's messages run to several hundred characters."""
    text = str(error)
    for marker, reason in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                           ("timeout exception", "timed out"), ("Name or service not known", "unknown host"),
                           ("too many", "the server kept answering with errors")):
        if marker in text:
            return reason
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return first[:200]


def call_within(call: Callable, timeout_s: float):
    """`call()` with a wall-clock bound: its result, or its exception, or TimeoutError when it has
    not returned after `timeout_s` seconds. The call runs in a daemon thread that is abandoned on
    timeout (a thread cannot be stopped; a daemon one does not hold the process open). Needed
    because HTTP timeouts bound each read, not the request: a server that trickles one header
    line every few seconds never times out otherwise."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=run, name="mlflow-call", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(f"no complete answer within {timeout_s:.0f}s (timed out)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def with_retries(call: Callable, tracking_uri: str, attempts: int = 4, backoff_s: float = 0.5, sleep=time.sleep,
                 deadline_s: float | None = None, clock=time.monotonic, bounded: bool = True):
    """Run `call()`; on connection-type failures retry with doubling waits, but start a retry
    only when it can still fail within `deadline_s` (default `registry_deadline_s()`) given the
    longest one MLflow call can take; then raise RegistryUnavailable naming the tracking URI.
    With `bounded` (the default) and an HTTP(S) tracking URI, each call is also cut off when the
    deadline passes (`call_within`); artifact downloads, whose length depends on their size,
    pass bounded=False. MLflow's own errors (not found, invalid) are raised as they are,
    without retrying."""
    deadline = registry_deadline_s() if deadline_s is None else deadline_s
    worst_call = mlflow_call_worst_case_s()
    over_network = bounded and str(tracking_uri).startswith(("http://", "https://"))
    started = clock()
    tried = 0
    for attempt in range(attempts):
        tried += 1
        try:
            if over_network:
                return call_within(call, max(1.0, deadline - (clock() - started)))
            return call()
        except Exception as error:
            if not _is_connection_failure(error):
                raise
            last = error
        wait = backoff_s * 2**attempt
        if attempt == attempts - 1 or clock() - started + wait + worst_call > deadline:
            break
        sleep(wait)
    raise RegistryUnavailable(f"MLflow at {tracking_uri} is unreachable after {tried} attempt{'s' * (tried != 1)} in "
                              f"{clock() - started:.0f}s: {_short_reason(last)}")


@dataclass(frozen=True)
class AuditRecord:
    action: str
    version: str
    by: str
    at: str
    note: str
    scores: dict
    dagster_run_id: str | None = None
    previous_champion: str | None = None
    #: The registered model and the version's source run: a version number alone can be reused
    #: when a registered model is deleted and created again.
    model: str = ""
    run_id: str = ""
    #: The gate result the pipeline recorded ("passed" | "failed") and its reasons.
    gate: str = ""
    gate_reasons: list = field(default_factory=list)
    #: The review decision as it stood when the record was written: status, by, note, at.
    review: dict = field(default_factory=dict)
    #: Position in the audit log and the SHA-256 of the line before (set by AuditLog.append).
    seq: int = 0
    prev: str = ""

    def to_json(self) -> dict:
        return {**self.__dict__, "gate_reasons": list(self.gate_reasons), "review": dict(self.review)}

    @classmethod
    def from_json(cls, data: dict) -> AuditRecord:
        """Raises PromotionError when a field is missing or unknown."""
        try:
            return cls(**data)
        except TypeError as error:
            raise PromotionError(f"malformed audit record {data.get('seq', '?')}: {error}") from None


class AuditLog:
    """Append-only JSON lines, each carrying its position (`seq`) and the SHA-256 of the line
    before (`prev`), so an edited, reordered or deleted line breaks the chain and every read
    refuses the log. Appends from concurrent runs are serialised with an exclusive file lock.
    What it cannot stop: someone with write access to the file appending new, well-chained
    lines; that is why each record also has a mirror on the version's run in MLflow."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self, handle) -> list[tuple[str, dict]]:
        handle.seek(0)
        lines, previous = [], ""
        for number, line in enumerate(handle.read().splitlines(), start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise PromotionError(f"audit log {self.path} is corrupt at line {number}: not JSON") from None
            if entry.get("seq") != number or entry.get("prev") != (hashlib.sha256(previous.encode()).hexdigest() if previous else ""):
                raise PromotionError(f"audit log {self.path} was altered at line {number}: its chain does not match the line before")
            lines.append((line, entry))
            previous = line
        return lines

    @staticmethod
    def line(record: AuditRecord) -> str:
        """The record as its line in the log (without the newline)."""
        return json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def head(cls, record: AuditRecord) -> str:
        """`seq:sha256` of a record's line: what the registry keeps to notice a truncated log."""
        return f"{record.seq}:{hashlib.sha256(cls.line(record).encode()).hexdigest()}"

    def records(self) -> list[AuditRecord]:
        """Every record, oldest first. Raises PromotionError when the chain is broken."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            return [AuditRecord.from_json(entry) for _, entry in self._read(handle)]

    def append(self, record: AuditRecord) -> AuditRecord:
        """Write `record` as the next line; returns it with `seq` and `prev` set. Raises
        PromotionError when the existing log is broken (nothing is appended then)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            lines = self._read(handle)
            previous = hashlib.sha256(lines[-1][0].encode()).hexdigest() if lines else ""
            stored = AuditRecord.from_json({**record.to_json(), "seq": len(lines) + 1, "prev": previous})
            handle.write(self.line(stored) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return stored


def default_audit_dir() -> Path:
    """`lake/registry/audit` under the current HKGAI_HOME: where the registry assets (through
    the lake resource) and the CLI keep the audit log."""
    from hkgai_pipelines.settings import get_settings

    return get_settings().lake_dir / "registry" / "audit"


#: Error codes with which MLflow says a registered model, version or alias does not exist.
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class ModelRegistry:
    def __init__(self, client, name: str = "hkgai-v1", tracking_uri: str = "", auth_enabled: bool = False, sleep=time.sleep,
                 audit_dir: Path | None = None) -> None:
        self.client = client
        self.name = name
        self.tracking_uri = tracking_uri or getattr(client, "tracking_uri", "")
        #: With MLflow basic-auth on, identities are real, so the registrant may not approve.
        self.auth_enabled = auth_enabled
        self.sleep = sleep
        self._audit_dir = audit_dir
        bound_mlflow_waits()

    @property
    def audit_log(self) -> AuditLog:
        """The pipeline's own record of gates and decisions (resolved on first use, so a
        registry that only reads tags needs no storage)."""
        return AuditLog(Path(self._audit_dir or default_audit_dir()) / f"{self.name}.jsonl")

    def _call(self, fn, *args, **kwargs):
        return with_retries(lambda: fn(*args, **kwargs), self.tracking_uri, sleep=self.sleep)

    # ---------------------------------------------------------------- reading

    def version(self, version: str):
        return self._call(self.client.get_model_version, self.name, str(version))

    def alias(self, alias: str) -> str | None:
        """The version holding `alias`, or None when nothing holds it. Raises RegistryUnavailable
        (and MLflow's other errors) rather than answering None for a registry it could not read."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self._call(self.client.get_model_version_by_alias, self.name, alias).version)
        except MlflowException as error:
            if error.error_code in NOT_FOUND_CODES:
                return None
            raise

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.version(version).tags)

    def pending_decisions(self) -> list[tuple[str, str, str]]:
        """(version, "promote" | "reject", review.at) for reviewed versions not yet closed,
        oldest first: what the approval sensor acts on. Tags only start a run; the run re-checks
        everything against the audit log."""
        versions = self._call(self.client.search_model_versions, f"name='{self.name}'")
        actions = {"approved": "promote", "rejected": "reject"}
        found = [v for v in versions if v.tags.get("review.status") in actions and "promotion.status" not in v.tags]
        return [(str(v.version), actions[v.tags["review.status"]], v.tags.get("review.at", "")) for v in sorted(found, key=lambda v: int(v.version))]

    def open_reviews(self) -> list:
        """The review tags (registry.review.Review) of every version not yet closed (no
        `promotion.status`), oldest first: what the approval sensor settles before acting."""
        from hkgai_pipelines.registry.review import Review

        versions = self._call(self.client.search_model_versions, f"name='{self.name}'")
        open_versions = sorted((v for v in versions if "promotion.status" not in v.tags), key=lambda v: int(v.version))
        return [Review.from_tags(str(v.version), v.tags) for v in open_versions]

    def approved_candidates(self) -> list[str]:
        return [version for version, action, _ in self.pending_decisions() if action == "promote"]

    #: Registered-model tag holding the newest audit record's `seq:sha256`: the chain shows an
    #: edited or removed line only when a later line follows it, so deleting the newest lines
    #: is caught by comparing the log's end with this second place.
    HEAD_TAG = "audit.head"

    def _checked_records(self) -> list[AuditRecord]:
        """The audit log's records, refused (PromotionError) when its chain is broken or it ends
        before the newest record the registry saw written."""
        records = self.audit_log.records()
        head = dict(self._call(self.client.get_registered_model, self.name).tags).get(self.HEAD_TAG, "")
        if head:
            seq = int(head.split(":", 1)[0])
            if seq > len(records):
                raise PromotionError(f"audit log {self.audit_log.path} ends at record {len(records)}, but record {seq} was written: "
                                     "records were removed")
            if AuditLog.head(records[seq - 1]) != head:
                raise PromotionError(f"audit log {self.audit_log.path} was altered: record {seq} is not the one written")
        return records

    def _records(self, version: str, action: str, run_id: str) -> list[AuditRecord]:
        return [r for r in self._checked_records() if (r.model, r.version, r.action, r.run_id) == (self.name, str(version), action, run_id)]

    def gate_result(self, version: str) -> tuple[bool, str]:
        """(passed, why not) from the newest gate record of this version and source run.
        Raises PromotionError when the audit log is broken."""
        gates = self._records(version, "gate", self.version(version).run_id or "")
        if not gates:
            return False, "the gates have not been evaluated (no gate record in the audit log)"
        newest = gates[-1]
        return newest.gate == "passed", "; ".join(newest.gate_reasons) or f"gate record says {newest.gate!r}"

    # ---------------------------------------------------------------- writing

    def _tag(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._call(self.client.set_model_version_tag, self.name, str(version), key, str(value))

    def _record(self, action: str, version: str, by: str, note: str, tags: dict[str, str], **fields) -> AuditRecord:
        return AuditRecord(action, str(version), by, now(), note, json.loads(tags.get("scores", "{}")),
                           model=self.name, run_id=self.version(version).run_id or "", **fields)

    def apply_gates(self, version: str, failures: list[str], dagster_run_id: str | None = None) -> bool:
        """Record the gate result in the audit log, then show it: passing sets alias candidate
        and review.status=pending, failing tags gate=failed with the reasons."""
        record = self._record("gate", version, "registered_model_gates", "", self.tags(version), dagster_run_id=dagster_run_id,
                              gate="failed" if failures else "passed", gate_reasons=list(failures))
        self._write_audit(version, record)
        if failures:
            self._tag(version, {"gate": "failed", "gate.reasons": json.dumps(failures, ensure_ascii=False)})
            return False
        self._tag(version, {"gate": "passed", "review.status": "pending"})
        self._call(self.client.set_registered_model_alias, self.name, CANDIDATE, str(version))
        return True

    def _check_reviewable(self, version: str, reviewer: str) -> dict[str, str]:
        if not reviewer.strip():
            raise PromotionError("a reviewer name is required")
        tags = self.tags(version)
        passed, reasons = self.gate_result(version)
        if not passed:
            raise PromotionError(f"version {version} did not pass the gates: {reasons}")
        if self.alias(CANDIDATE) != str(version):
            raise PromotionError(f"version {version} is not the current candidate (candidate is {self.alias(CANDIDATE)})")
        if self.auth_enabled and tags.get("registered.by") == reviewer:
            raise PromotionError(f"{reviewer} registered version {version} and may not also approve it")
        return tags

    def approve(self, version: str, reviewer: str, note: str = "") -> None:
        """The reviewer's approval, as tags (what the MLflow UI does). Raises PromotionError when
        the gate record is not `passed`, the version is not the candidate or already approved."""
        tags = self._check_reviewable(version, reviewer)
        if tags.get("review.status") == "approved":
            raise PromotionError(f"version {version} is already approved (by {tags.get('review.by')})")
        self._tag(version, {"review.status": "approved", "review.by": reviewer, "review.note": note, "review.at": now()})

    def reject(self, version: str, reviewer: str, note: str = "") -> None:
        """The reviewer's decision (what setting the tags in the MLflow UI does); the sensor's
        run then closes it with `close_rejected`. Raises PromotionError as `approve` does."""
        self._check_reviewable(version, reviewer)
        self._tag(version, {"review.status": "rejected", "review.by": reviewer, "review.note": note, "review.at": now()})

    @staticmethod
    def _review(tags: dict[str, str]) -> dict[str, str]:
        return {key: tags.get(f"review.{key}", "") for key in ("status", "by", "note", "at")}

    def close_rejected(self, version: str, dagster_run_id: str | None = None) -> AuditRecord:
        """Audit a rejection, then remove `candidate` from the rejected version. Raises
        PromotionError when the version carries no rejection."""
        tags = self.tags(version)
        if tags.get("review.status") != "rejected" or not tags.get("review.by"):
            raise PromotionError(f"version {version} has no rejection record")
        if self.alias(CANDIDATE) != str(version):
            # A rejection closes a candidate; taking back a champion is a rollback, audited as one.
            where = "is the champion; use `hkgai rollback` to replace it" if self.alias(CHAMPION) == str(version) else "is not the candidate"
            raise PromotionError(f"version {version} {where}: a rejection only closes the current candidate")
        record = self._record("reject", version, tags["review.by"], tags.get("review.note", ""), tags,
                              dagster_run_id=dagster_run_id, review=self._review(tags))
        record = self._write_audit(version, record)
        if self.alias(CANDIDATE) == str(version):
            self._call(self.client.delete_registered_model_alias, self.name, CANDIDATE)
        self._tag(version, {"promotion.status": "rejected", "promotion.at": record.at})
        return record

    def promote(self, version: str, dagster_run_id: str | None = None) -> AuditRecord:
        """The only path that makes a new champion: re-check the approval, the gate record and
        the candidate alias, write the promote record, then move the aliases. Raises
        PromotionError naming what is missing (a version no longer the candidate is tagged
        `superseded` first)."""
        tags = self.tags(version)
        if tags.get("review.status") != "approved" or not tags.get("review.by"):
            raise PromotionError(f"version {version} has no approval record")
        passed, reasons = self.gate_result(version)
        if not passed:
            raise PromotionError(f"version {version} did not pass the gates: {reasons}")
        candidate = self.alias(CANDIDATE)
        if candidate != str(version):
            self._tag(version, {"promotion.status": "superseded", "promotion.at": now()})
            now_holder = f"version {candidate} is" if candidate else "no version is (the alias was removed)"
            raise PromotionError(f"version {version} is no longer the candidate ({now_holder}): recorded as superseded; "
                                 "register and gate it again to review it")
        # The audited champion, not the alias: a hand-moved alias must not become previous_champion.
        previous, _ = self.expected_champion()
        record = self._record("promote", version, tags["review.by"], tags.get("review.note", ""), tags, dagster_run_id=dagster_run_id,
                              previous_champion=previous, gate="passed", review=self._review(tags))
        record = self._write_audit(version, record)
        # Alias moves last: an interruption before here leaves the old champion serving.
        if previous:
            self._call(self.client.set_registered_model_alias, self.name, PREVIOUS, previous)
        self._call(self.client.set_registered_model_alias, self.name, CHAMPION, str(version))
        self._call(self.client.delete_registered_model_alias, self.name, CANDIDATE)
        self._tag(version, {"promotion.status": "done", "promotion.at": record.at})
        return record

    def audited_champion(self, version: str) -> AuditRecord:
        """The promote record that makes `version` a former champion. Raises PromotionError
        unless the audit log holds a `promote` record for this model, version and source run,
        with gate `passed`, a review approved by the reviewer the record names, a gate record
        `passed` before it, and an identical mirror on the version's run."""
        run_id = self.version(version).run_id or ""
        promotions = self._records(version, "promote", run_id)
        if not promotions:
            raise PromotionError(f"version {version} was never promoted through review (no promote record in the audit log "
                                 f"{self.audit_log.path}); only a former champion can be restored")
        record = promotions[-1]
        gates = [r for r in self._records(version, "gate", run_id) if r.seq < record.seq]
        review = record.review or {}
        problems = [
            problem for problem, bad in (
                ("its promote record does not say the gates passed", record.gate != "passed"),
                ("no gate record `passed` precedes its promotion", not gates or gates[-1].gate != "passed"),
                ("its promote record holds no approval", review.get("status") != "approved"),
                ("its promote record names a reviewer other than the approval's", not record.by or review.get("by") != record.by),
            ) if bad
        ]
        if not problems and self._mirror(record) != record.to_json():
            problems.append(f"the copy of promote record {record.seq} on run {run_id} is missing or differs")
        if problems:
            raise PromotionError(f"version {version} cannot be restored: {'; '.join(problems)}")
        return record

    def rollback(self, by: str, to_version: str | None = None, note: str = "") -> AuditRecord:
        """Move `champion` to `previous_champion` (or `to_version`), audited. Raises
        PromotionError when there is no target, the target is the champion, or the target is not
        an audited former champion (`audited_champion`)."""
        current = self.alias(CHAMPION)
        target = str(to_version) if to_version else self.alias(PREVIOUS)
        if target is None:
            raise PromotionError("there is no previous champion to roll back to; name a version with --to")
        promoted = self.audited_champion(target)
        if target == current:
            raise PromotionError(f"version {target} is already the champion")
        record = self._record("rollback", target, by, note, self.tags(target), previous_champion=current, gate=promoted.gate,
                              gate_reasons=promoted.gate_reasons, review=promoted.review)
        record = self._write_audit(target, record)
        self._call(self.client.set_registered_model_alias, self.name, CHAMPION, target)
        if current:
            self._call(self.client.set_registered_model_alias, self.name, PREVIOUS, current)
        return record

    #: Audit actions after which `champion` holds the record's version ("" in a restore record:
    #: no champion).
    CHAMPION_MOVES = ("promote", "rollback", "restore")

    def expected_champion(self) -> tuple[str | None, int]:
        """(the version `champion` holds according to the audit log or None, the `seq` of the
        record that put it there or 0). Raises PromotionError when the log is broken."""
        expected, seq = None, 0
        for record in self._checked_records():
            if record.model == self.name and record.action in self.CHAMPION_MOVES:
                expected, seq = record.version or None, record.seq
        return expected, seq

    def champion_drift(self) -> tuple[str | None, str | None] | None:
        """(version `champion` is on, version the audit log says) when the two differ, i.e. the
        alias was moved, set or removed outside the pipeline; None when they agree. Raises
        PromotionError when the audit log is broken."""
        expected, _ = self.expected_champion()
        found = self.alias(CHAMPION)
        return None if found == expected else (found, expected)

    def restore_champion(self, by: str, dagster_run_id: str | None = None) -> AuditRecord | None:
        """Undo a champion drift: write a `restore` record (the incident: which version the alias
        was found on, `previous_champion`, and which it goes back to, `version`), tag the version
        found and the registered model with the incident, then move `champion` back to the
        audited champion, or remove it when the log has none. Returns None when there is no
        drift. Raises PromotionError when the audit log is broken or the audited champion no
        longer passes `audited_champion` (nothing is moved then)."""
        drift = self.champion_drift()
        if drift is None:
            return None
        found, expected = drift
        if expected is not None:
            self.audited_champion(expected)
        note = (f"`champion` {f'was set on version {found}' if found else 'was removed'} without an audit record from the pipeline; "
                f"restored to {f'version {expected}' if expected else 'no champion (the audit log has none)'}")
        scores = json.loads(self.tags(expected).get("scores", "{}")) if expected else {}
        record = AuditRecord("restore", expected or "", by, now(), note, scores, dagster_run_id=dagster_run_id,
                             previous_champion=found, model=self.name, run_id=(self.version(expected).run_id or "") if expected else "")
        record = self._write_audit(expected or "", record)
        incident = json.dumps({"seq": record.seq, "at": record.at, "found": found, "restored_to": expected, "by": by}, sort_keys=True)
        self._call(self.client.set_registered_model_tag, self.name, "incident.champion_drift", incident)
        if found:
            self._tag(found, {"incident.champion_drift": incident})
        # The alias last, as in promote: an interrupted restore is found again on the next tick.
        if expected:
            self._call(self.client.set_registered_model_alias, self.name, CHAMPION, expected)
        else:
            self._call(self.client.delete_registered_model_alias, self.name, CHAMPION)
        return record

    @staticmethod
    def _mirror_path(record: AuditRecord) -> str:
        return f"audit/{record.action}-v{record.version}-{record.at.replace(':', '')}-{record.seq}.json"

    def _mirror(self, record: AuditRecord) -> dict | None:
        """The record's copy on its run, or None when it is not there."""
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as folder:
            try:
                path = self._call(self.client.download_artifacts, record.run_id, self._mirror_path(record), folder)
            except (MlflowException, OSError):
                return None
            return json.loads(Path(path).read_text(encoding="utf-8"))

    def _write_audit(self, version: str, record: AuditRecord) -> AuditRecord:
        """Append the record to the audit log (the source of truth), then mirror it as a JSON
        artifact of the version's run and as `audit.*` tags (what the MLflow UI shows)."""
        self._checked_records()  # never extend a log that was cut short or altered
        record = self.audit_log.append(record)
        self._call(self.client.set_registered_model_tag, self.name, self.HEAD_TAG, AuditLog.head(record))
        if record.run_id:
            self._call(self.client.log_dict, record.run_id, record.to_json(), self._mirror_path(record))
        if version:  # a restore to "no champion" has no version to tag
            self._tag(version, {f"audit.{record.action}.by": record.by, f"audit.{record.action}.at": record.at})
        return record
