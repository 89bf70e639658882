"""Reviewer-approved promotion in the MLflow model registry.

States of a model version, all in its tags and the registered model's aliases:

    registered --gates pass--> alias `candidate`, review.status=pending
               --gates fail--> gate=failed, gate.reasons (no alias)
    candidate  --reviewer----> review.status=approved | rejected, review.by, review.note, review.at
    approved   --promote-----> audit record written, then `champion` moved (the old holder keeps
                               `previous_champion`), `candidate` removed, promotion.status=done
    rejected   --close-------> audit record written, `candidate` removed
    champion   --rollback----> `champion` back to `previous_champion` (or a named version), audited

Nothing here moves `champion` without an approval record: `promote` re-checks the gates, the
approval and that the version is still the candidate, and refuses with a PromotionError
otherwise. Alias moves come last, after the audit record is written, so an interrupted
promotion leaves the old champion in place. MLflow calls are retried with backoff; when the
server stays unreachable the error names the tracking URI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

CANDIDATE, CHAMPION, PREVIOUS = "candidate", "champion", "previous_champion"


class PromotionError(RuntimeError):
    pass


class RegistryUnavailable(RuntimeError):
    pass


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_retries(call: Callable, tracking_uri: str, attempts: int = 4, backoff_s: float = 0.5, sleep=time.sleep):
    """Run `call()`; on connection-type failures retry with doubling waits, then fail naming the
    tracking URI. MLflow's own errors (not found, invalid) are not retried."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return call()
        except MlflowException as error:
            # A REST error the server answered is final; only "could not connect" is retried.
            if "Max retries exceeded" not in str(error) and "Connection" not in str(error):
                raise
            last = error
        except (ConnectionError, OSError) as error:
            last = error
        if attempt < attempts - 1:
            sleep(backoff_s * 2**attempt)
    raise RegistryUnavailable(f"MLflow at {tracking_uri} is unreachable after {attempts} attempts: {last}")


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

    def to_json(self) -> dict:
        return self.__dict__.copy()


class ModelRegistry:
    def __init__(self, client, name: str = "hkgai-v1", tracking_uri: str = "", auth_enabled: bool = False, sleep=time.sleep) -> None:
        self.client = client
        self.name = name
        self.tracking_uri = tracking_uri or getattr(client, "tracking_uri", "")
        #: With MLflow basic-auth on, identities are real, so the registrant may not approve.
        self.auth_enabled = auth_enabled
        self.sleep = sleep

    def _call(self, fn, *args, **kwargs):
        return with_retries(lambda: fn(*args, **kwargs), self.tracking_uri, sleep=self.sleep)

    # ---------------------------------------------------------------- reading

    def version(self, version: str):
        return self._call(self.client.get_model_version, self.name, str(version))

    def alias(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self._call(self.client.get_model_version_by_alias, self.name, alias).version)
        except MlflowException:
            return None

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.version(version).tags)

    def pending_decisions(self) -> list[tuple[str, str, str]]:
        """(version, "promote" | "reject", review.at) for reviewed versions not yet closed,
        oldest first: what the approval sensor acts on."""
        versions = self._call(self.client.search_model_versions, f"name='{self.name}'")
        actions = {"approved": "promote", "rejected": "reject"}
        found = [v for v in versions if v.tags.get("review.status") in actions and "promotion.status" not in v.tags]
        return [(str(v.version), actions[v.tags["review.status"]], v.tags.get("review.at", "")) for v in sorted(found, key=lambda v: int(v.version))]

    def approved_candidates(self) -> list[str]:
        return [version for version, action, _ in self.pending_decisions() if action == "promote"]

    # ---------------------------------------------------------------- writing

    def _tag(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._call(self.client.set_model_version_tag, self.name, str(version), key, str(value))

    def apply_gates(self, version: str, failures: list[str]) -> bool:
        """Passing: alias candidate and review.status=pending. Failing: gate=failed with reasons."""
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
        if tags.get("gate") != "passed":
            reasons = tags.get("gate.reasons", "the gates have not been evaluated")
            raise PromotionError(f"version {version} did not pass the gates: {reasons}")
        if self.alias(CANDIDATE) != str(version):
            raise PromotionError(f"version {version} is not the current candidate (candidate is {self.alias(CANDIDATE)})")
        if self.auth_enabled and tags.get("registered.by") == reviewer:
            raise PromotionError(f"{reviewer} registered version {version} and may not also approve it")
        return tags

    def approve(self, version: str, reviewer: str, note: str = "") -> None:
        tags = self._check_reviewable(version, reviewer)
        if tags.get("review.status") == "approved":
            raise PromotionError(f"version {version} is already approved (by {tags.get('review.by')})")
        self._tag(version, {"review.status": "approved", "review.by": reviewer, "review.note": note, "review.at": now()})

    def reject(self, version: str, reviewer: str, note: str = "") -> None:
        """The reviewer's decision (what setting the tags in the MLflow UI does); the sensor's
        run then closes it with `close_rejected`."""
        self._check_reviewable(version, reviewer)
        self._tag(version, {"review.status": "rejected", "review.by": reviewer, "review.note": note, "review.at": now()})

    def close_rejected(self, version: str, dagster_run_id: str | None = None) -> AuditRecord:
        """Audit a rejection, then remove `candidate` from the rejected version."""
        tags = self.tags(version)
        if tags.get("review.status") != "rejected" or not tags.get("review.by"):
            raise PromotionError(f"version {version} has no rejection record")
        record = AuditRecord("reject", str(version), tags["review.by"], now(), tags.get("review.note", ""),
                             json.loads(tags.get("scores", "{}")), dagster_run_id)
        self._write_audit(version, record)
        if self.alias(CANDIDATE) == str(version):
            self._call(self.client.delete_registered_model_alias, self.name, CANDIDATE)
        self._tag(version, {"promotion.status": "rejected", "promotion.at": record.at})
        return record

    def promote(self, version: str, dagster_run_id: str | None = None) -> AuditRecord:
        """The only path that moves `champion`: re-check, audit, then move the aliases."""
        tags = self.tags(version)
        if tags.get("review.status") != "approved" or not tags.get("review.by"):
            raise PromotionError(f"version {version} has no approval record")
        if tags.get("gate") != "passed":
            raise PromotionError(f"version {version} did not pass the gates")
        if self.alias(CANDIDATE) != str(version):
            self._tag(version, {"promotion.status": "superseded", "promotion.at": now()})
            raise PromotionError(f"version {version} is no longer the candidate (candidate is {self.alias(CANDIDATE)}): recorded as superseded")
        previous = self.alias(CHAMPION)
        record = AuditRecord("promote", str(version), tags["review.by"], now(), tags.get("review.note", ""),
                             json.loads(tags.get("scores", "{}")), dagster_run_id, previous)
        self._write_audit(version, record)
        # Alias moves last: an interruption before here leaves the old champion serving.
        if previous:
            self._call(self.client.set_registered_model_alias, self.name, PREVIOUS, previous)
        self._call(self.client.set_registered_model_alias, self.name, CHAMPION, str(version))
        self._call(self.client.delete_registered_model_alias, self.name, CANDIDATE)
        self._tag(version, {"promotion.status": "done", "promotion.at": record.at})
        return record

    def rollback(self, by: str, to_version: str | None = None, note: str = "") -> AuditRecord:
        current = self.alias(CHAMPION)
        target = str(to_version) if to_version else self.alias(PREVIOUS)
        if target is None:
            raise PromotionError("there is no previous champion to roll back to; name a version with --to")
        tags = self.tags(target)
        if tags.get("promotion.status") != "done":
            raise PromotionError(f"version {target} was never promoted through review; only a former champion can be restored")
        if target == current:
            raise PromotionError(f"version {target} is already the champion")
        record = AuditRecord("rollback", target, by, now(), note, json.loads(tags.get("scores", "{}")), None, current)
        self._write_audit(target, record)
        self._call(self.client.set_registered_model_alias, self.name, CHAMPION, target)
        if current:
            self._call(self.client.set_registered_model_alias, self.name, PREVIOUS, current)
        return record

    def _write_audit(self, version: str, record: AuditRecord) -> None:
        """The audit record as a JSON artifact of the version's run and as tags on the version."""
        run_id = self.version(version).run_id
        if run_id:
            self._call(self.client.log_dict, run_id, record.to_json(), f"audit/{record.action}-v{version}-{record.at.replace(':', '')}.json")
        self._tag(version, {f"audit.{record.action}.by": record.by, f"audit.{record.action}.at": record.at})
