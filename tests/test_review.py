"""registry/review.py on literal tag states and clock values: when a decision acts."""

import pytest

from hkgai_pipelines.registry.review import Review, settled_decisions


def _review(**tags):
    return Review.from_tags("1", {f"review.{key}": value for key, value in tags.items()})


def test_missing_tags_are_named():
    assert _review(status="approved").missing() == ["review.by", "review.at"]
    assert _review(by="alice", at="t").missing() == ["review.status (approved or rejected)"]
    assert _review(status="pending", by="alice", at="t").missing() == ["review.status (approved or rejected)"]
    assert _review(status="rejected", by="alice", at="t").missing() == []


def test_a_whole_decision_waits_until_unchanged_for_the_settle_time():
    whole = _review(status="approved", by="alice", note="ok", at="t")
    ready, state, waiting = settled_decisions([whole], {}, now=100.0, settle_s=60)
    assert ready == [] and waiting == {"1": "settling: unchanged for 0 of 60 s"}
    ready, state, waiting = settled_decisions([whole], state, now=159.0, settle_s=60)
    assert ready == [] and waiting == {"1": "settling: unchanged for 59 of 60 s"}
    ready, state, waiting = settled_decisions([whole], state, now=160.0, settle_s=60)
    assert [(d.review.version, d.action) for d in ready] == [("1", "promote")]
    # Launched once: later ticks with the same tags launch nothing.
    ready, state, waiting = settled_decisions([whole], state, now=500.0, settle_s=60)
    assert ready == [] and waiting == {"1": "already launched"}


def test_a_change_restarts_the_wait_and_launches_the_new_form():
    first = _review(status="approved", by="alice", at="t")
    _, state, _ = settled_decisions([first], {}, now=0.0)
    noted = _review(status="approved", by="alice", note="late note", at="t")
    ready, state, waiting = settled_decisions([noted], state, now=50.0)
    assert ready == [] and waiting["1"].startswith("settling: unchanged for 0")
    ready, state, _ = settled_decisions([noted], state, now=110.0)
    assert [d.review.note for d in ready] == ["late note"]


def test_an_incomplete_decision_never_acts_and_untouched_versions_are_not_tracked():
    half = _review(status="approved")
    ready, state, waiting = settled_decisions([half, Review("2")], {}, now=0.0)
    ready, state, waiting = settled_decisions([half, Review("2")], state, now=10_000.0)
    assert ready == [] and waiting == {"1": "incomplete: review.by, review.at"} and set(state) == {"1"}


def test_a_closed_version_leaves_the_state_and_negative_settle_is_refused():
    _, state, _ = settled_decisions([_review(status="approved", by="a", at="t")], {}, now=0.0)
    assert settled_decisions([], state, now=1.0)[1] == {}
    with pytest.raises(ValueError, match="settle_s must be >= 0"):
        settled_decisions([], {}, now=0.0, settle_s=-1)
