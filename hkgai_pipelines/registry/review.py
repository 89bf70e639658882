"""When a reviewer's decision in the MLflow UI is ready to act on: whole, and settled.

A reviewer sets four tags on a model version one at a time, at human pace, in any order:
`review.status` (approved | rejected), `review.by`, `review.note` (optional) and `review.at`.
Acting on the first of them runs a promotion that records an empty reviewer or note, or fails
for a slower reviewer. So a decision is acted on only when it is

- **whole**: `review.status` is `approved` or `rejected`, and `review.by` and `review.at` are
  not empty; and
- **settled**: the four tags have kept the same values for at least `settle_s` seconds, as seen
  by successive sensor ticks. Any change (a note typed after the status, a status changed
  from approved to rejected) starts the wait again.

The state between ticks is a JSON-able dict kept in the sensor's cursor: per version, the
fingerprint of the review tags, when that fingerprint was first seen, and the fingerprint
already launched (so one settled decision launches exactly one run). Pure functions of their
inputs and a clock value, so every order and pace is testable without waiting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

REVIEW_KEYS = ("status", "by", "note", "at")
ACTIONS = {"approved": "promote", "rejected": "reject"}

#: Seconds a decision must stay unchanged before it acts: two ticks of the 30 s approval sensor,
#: so a reviewer who types the tags about 15-20 s apart (as observed in the UI) is never cut
#: off between two of them.
DEFAULT_SETTLE_S = 60.0


@dataclass(frozen=True)
class Review:
    """The review tags of one model version as they stand."""

    version: str
    status: str = ""
    by: str = ""
    note: str = ""
    at: str = ""

    @classmethod
    def from_tags(cls, version: str, tags: dict[str, str]) -> Review:
        return cls(str(version), *(tags.get(f"review.{key}", "").strip() for key in REVIEW_KEYS))

    @property
    def action(self) -> str | None:
        """"promote" | "reject", or None when the status is not a decision (pending, empty)."""
        return ACTIONS.get(self.status)

    def missing(self) -> list[str]:
        """The tags a decision still lacks, e.g. ["review.by"]; empty when it is whole."""
        lacking = [] if self.action else ["review.status (approved or rejected)"]
        return lacking + [f"review.{key}" for key in ("by", "at") if not getattr(self, key)]

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the four tag values: equal exactly when nothing changed."""
        payload = json.dumps([self.status, self.by, self.note, self.at], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ReadyDecision:
    review: Review
    action: str
    fingerprint: str


def settled_decisions(reviews: list[Review], state: dict, now: float, settle_s: float = DEFAULT_SETTLE_S) -> tuple[list[ReadyDecision], dict, dict[str, str]]:
    """One tick of the approval sensor.

    `reviews`: the open (not yet closed) versions' review tags; `state`: the previous tick's
    state (`{}` at first); `now`: seconds on any monotone-enough clock (the sensor passes
    `time.time()`). Returns (decisions to launch now, the new state, why each other reviewed
    version waits: version -> reason). A version no longer open is dropped from the state.
    Raises ValueError when `settle_s` is negative.
    """
    if settle_s < 0:
        raise ValueError(f"settle_s must be >= 0, got {settle_s}")
    ready: list[ReadyDecision] = []
    waiting: dict[str, str] = {}
    new_state: dict = {}
    for review in reviews:
        if not review.action and not any((review.by, review.note, review.at)):
            continue  # no decision started
        fingerprint = review.fingerprint()
        previous = state.get(review.version, {})
        first_seen = previous.get("first_seen", now) if previous.get("fingerprint") == fingerprint else now
        entry = {"fingerprint": fingerprint, "first_seen": first_seen}
        if previous.get("launched"):
            entry["launched"] = previous["launched"]
        new_state[review.version] = entry
        if missing := review.missing():
            waiting[review.version] = "incomplete: " + ", ".join(missing)
        elif entry.get("launched") == fingerprint:
            waiting[review.version] = "already launched"
        elif now - first_seen < settle_s:
            waiting[review.version] = f"settling: unchanged for {now - first_seen:.0f} of {settle_s:.0f} s"
        else:
            entry["launched"] = fingerprint
            ready.append(ReadyDecision(review, review.action, fingerprint))
    return ready, new_state, waiting
