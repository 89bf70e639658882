"""Champion drift: `champion` moved, set or removed outside the pipeline (the alias pencil in the
MLflow UI) is found against the audit log, restored to the audited champion and recorded as an
incident; on a real SQLite MLflow registry, through the sensor and a real champion_model run."""

import json

import dagster as dg
import pytest

from hkgai_pipelines.assets.registry import champion_drift_sensor
from tests.test_registry import registry  # noqa: F401  (fixture)
from tests.test_registry_assets import _run_decision, clock, setup  # noqa: F401  (fixtures)


def _promote(registry, version: str, reviewer: str = "alice") -> None:
    registry.apply_gates(version, [])
    registry.approve(version, reviewer)
    registry.promote(version)


def test_a_hand_moved_champion_is_restored_with_an_incident_record(registry):
    first, second, rogue = registry.register(), registry.register(), registry.register()
    _promote(registry, first)
    _promote(registry, second, "bob")
    assert registry.champion_drift() is None
    registry.client.set_registered_model_alias("hkgai-v1", "champion", rogue)  # the alias pencil
    assert registry.champion_drift() == (rogue, second)

    record = registry.restore_champion(by="champion_drift_sensor", dagster_run_id="run-9")
    assert (record.action, record.version, record.previous_champion, record.by) == ("restore", second, rogue, "champion_drift_sensor")
    assert record.note == (f"`champion` was set on version {rogue} without an audit record from the pipeline; "
                           f"restored to version {second}")
    assert registry.alias("champion") == second and registry.champion_drift() is None
    assert registry.restore_champion(by="champion_drift_sensor") is None  # nothing left to restore
    incident = json.loads(registry.tags(rogue)["incident.champion_drift"])
    assert (incident["found"], incident["restored_to"], incident["seq"]) == (rogue, second, record.seq)
    model_tags = registry.client.get_registered_model("hkgai-v1").tags
    assert json.loads(model_tags["incident.champion_drift"]) == incident
    mirrored = [a.path for a in registry.client.list_artifacts(registry.version(second).run_id, "audit")]
    assert any(path.startswith(f"audit/restore-v{second}-") for path in mirrored)
    # The restore keeps the history rollback relies on.
    assert registry.rollback("ops").version == first and registry.expected_champion()[0] == first


def test_a_removed_champion_is_put_back_and_a_champion_never_audited_is_removed(registry):
    only = registry.register()
    registry.client.set_registered_model_alias("hkgai-v1", "champion", only)  # no promote record at all
    assert registry.champion_drift() == (only, None)
    record = registry.restore_champion(by="champion_drift_sensor")
    assert (record.version, record.previous_champion) == ("", only) and registry.alias("champion") is None
    assert record.note == f"`champion` was set on version {only} without an audit record from the pipeline; restored to no champion (the audit log has none)"

    _promote(registry, only)
    registry.client.delete_registered_model_alias("hkgai-v1", "champion")
    assert registry.champion_drift() == (None, only)
    registry.restore_champion(by="champion_drift_sensor")
    assert registry.alias("champion") == only


def test_a_promotion_after_drift_keeps_the_audited_champion_as_previous(registry):
    first, rogue, third = registry.register(), registry.register(), registry.register()
    _promote(registry, first)
    registry.client.set_registered_model_alias("hkgai-v1", "champion", rogue)
    _promote(registry, third)
    assert (registry.alias("champion"), registry.alias("previous_champion")) == (third, first)


def _drift_tick(resources, cursor=None):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
            "pipeline_config": resources["pipeline_config"], "mlflow": resources["mlflow"], "lake": resources["lake"]})
        return champion_drift_sensor(context), context.cursor


def test_drift_sensor_waits_for_the_drift_to_persist_then_a_run_restores_it(setup, clock):
    resources, registry = setup
    _promote(registry, "1")
    skip, cursor = _drift_tick(resources)
    assert skip.skip_message == "`champion` (1) agrees with the audit log"

    client = resources["mlflow"].get_client()
    client.set_registered_model_alias("hkgai-v1", "champion", "2")
    skip, cursor = _drift_tick(resources, cursor)
    assert skip.skip_message == "`champion` on 2, audit log says 1: restoring unless put right within 60 s"
    clock[0] += 30
    skip, cursor = _drift_tick(resources, cursor)
    assert "within 30 s" in skip.skip_message
    clock[0] += 31
    request, cursor = _drift_tick(resources, cursor)
    assert request.run_config["ops"]["champion_model"]["config"] == {"version": "2", "action": "restore"}
    assert request.run_key.startswith("restore-2->1@")

    metadata = _run_decision(resources, request)
    assert (metadata["action"], metadata["found_on"], metadata["restored_to"], metadata["champion"]) == ("restore", "2", "1", "1")
    assert metadata["audit_record"]["action"] == "restore"
    assert registry.alias("champion") == "1"
    skip, _ = _drift_tick(resources, cursor)
    assert skip.skip_message == "`champion` (1) agrees with the audit log"


def test_a_drift_put_right_before_it_settles_launches_nothing(setup, clock):
    resources, registry = setup
    _promote(registry, "1")
    client = resources["mlflow"].get_client()
    client.set_registered_model_alias("hkgai-v1", "champion", "2")
    _, cursor = _drift_tick(resources)
    client.set_registered_model_alias("hkgai-v1", "champion", "1")  # undone by hand
    clock[0] += 61
    skip, cursor = _drift_tick(resources, cursor)
    assert isinstance(skip, dg.SkipReason) and cursor is None
    client.set_registered_model_alias("hkgai-v1", "champion", "2")  # again: the wait starts over
    skip, _ = _drift_tick(resources, cursor)
    assert "within 60 s" in skip.skip_message


def test_a_rejection_reopened_on_the_champion_is_refused_not_audited(registry):
    """A reviewer deleting `promotion.status` and setting `review.status=rejected` on the serving
    champion: closing it is refused (a champion is replaced by a rollback), nothing is written."""
    from hkgai_pipelines.registry.promotion import PromotionError

    only = registry.register()
    _promote(registry, only)
    registry.client.delete_model_version_tag("hkgai-v1", only, "promotion.status")
    registry.client.set_model_version_tag("hkgai-v1", only, "review.status", "rejected")
    before = len(registry.audit_log.records())
    with pytest.raises(PromotionError, match=f"version {only} is the champion; use `hkgai rollback` to replace it"):
        registry.close_rejected(only)
    assert len(registry.audit_log.records()) == before and registry.alias("champion") == only


def test_an_approval_whose_candidate_alias_was_removed_says_so(registry):
    from hkgai_pipelines.registry.promotion import PromotionError

    version = registry.register()
    registry.apply_gates(version, [])
    registry.approve(version, "alice")
    registry.client.delete_registered_model_alias("hkgai-v1", "candidate")
    with pytest.raises(PromotionError, match=r"no longer the candidate \(no version is \(the alias was removed\)\)"):
        registry.promote(version)
