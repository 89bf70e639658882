"""Versioned outputs: one atomic link swap makes a complete version current."""

import threading
import time
from pathlib import Path

import pytest

from hkgai_pipelines.curation.versions import OutputVersions, PublishBusyError


def _version(versions: OutputVersions, kept: int, complete: bool = True) -> Path:
    version = versions.new_version()
    (version / "cleaned.parquet").mkdir()
    if complete:
        (version / "stats.json").write_text(f'{{"kept": {kept}}}')
    return version


def test_first_publish_creates_a_relative_link_to_the_version(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    assert versions.current() is None and not versions.is_versioned()
    first = _version(versions, 1)
    versions.make_current(first)
    assert (tmp_path / "cleaned").is_symlink()
    assert str((tmp_path / "cleaned").readlink()) == f"cleaned.versions/{first.name}"
    assert versions.current() == first and versions.is_versioned()
    assert (tmp_path / "cleaned" / "stats.json").read_text() == '{"kept": 1}'


def test_readers_see_one_version_or_the_other_while_versions_are_swapped(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    one, two = _version(versions, 1), _version(versions, 2)
    versions.make_current(one)
    seen, errors, done = set(), [], threading.Event()

    def read():
        while not done.is_set():
            try:
                seen.add((tmp_path / "cleaned" / "stats.json").read_text())
            except OSError as error:  # the link absent or half-made would land here
                errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    for swap in range(300):
        versions.make_current(two if swap % 2 == 0 else one)
    done.set()
    reader.join()
    assert errors == []
    assert seen <= {'{"kept": 1}', '{"kept": 2}'}


def test_an_incomplete_or_foreign_folder_cannot_become_current(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    half = _version(versions, 1, complete=False)
    with pytest.raises(ValueError, match="not a complete version"):
        versions.make_current(half)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "stats.json").write_text("{}")
    with pytest.raises(ValueError, match="not a complete version"):
        versions.make_current(other)
    assert not (tmp_path / "cleaned").exists()


def test_a_folder_from_before_versions_is_moved_into_the_versions_folder(tmp_path):
    legacy = tmp_path / "cleaned"
    legacy.mkdir()
    (legacy / "stats.json").write_text('{"kept": 0}')
    versions = OutputVersions(tmp_path, "cleaned")
    assert versions.current() == legacy and not versions.is_versioned()
    new = _version(versions, 5)
    versions.make_current(new)
    assert versions.current() == new
    (moved,) = [v for v in versions.versions() if v != new]
    assert moved.name.startswith("v0-unversioned-") and (moved / "stats.json").read_text() == '{"kept": 0}'
    assert versions.prune() == []  # it was current: a rollback target, kept


def test_prune_keeps_the_current_and_the_newest_published_versions(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    made = [_version(versions, n) for n in range(5)]
    killed = _version(versions, 9, complete=False)
    for published in (made[0], made[2], made[3], made[2]):  # the last one a rollback
        versions.make_current(published)
    Path(f"{made[4]}.dvc").write_text("outs: []")  # a run that failed after its DVC push
    orphan = versions.folder / "v19990101T000000000000Z.dvc"  # a record whose folder went
    orphan.write_text("outs: []")
    removed = versions.prune(keep_previous=1)
    # made[1] and made[4] were never current (a failed run's, complete or not): not rollback
    # targets. Kept: made[0], the rollback target, and made[3], current just before.
    assert sorted(removed) == sorted([made[1], made[4], killed])
    assert versions.versions() == [made[0], made[2], made[3]]
    assert versions.current() == made[2]
    assert not Path(f"{made[4]}.dvc").exists() and not orphan.exists()
    assert not list(versions.folder.glob(".trash-*"))


def test_prune_through_a_linked_root_never_removes_the_current_version(tmp_path):
    """A review finding: with the lake under a symlinked folder, the resolved current version
    never equalled the listed ones, and prune deleted it after a rollback."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    versions = OutputVersions(tmp_path / "alias", "cleaned")
    made = [_version(versions, n) for n in range(4)]
    for version in made:
        versions.make_current(version)
    versions.make_current(versions.folder / made[0].name)  # rollback to the oldest
    versions.prune(keep_previous=1)
    assert (tmp_path / "alias" / "cleaned" / "stats.json").read_text() == '{"kept": 0}'
    assert [v.name for v in versions.versions()] == [made[0].name, made[3].name]
    # A resolved path (what a reader holds) is accepted for a rollback too.
    versions.make_current(made[3].resolve())
    assert versions.current() == made[3]


def test_the_published_log_keeps_each_versions_record(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    one, two = _version(versions, 1), _version(versions, 2)
    versions.make_current(one, {"outs": [{"md5": "a.dir"}]})
    versions.make_current(two, {"outs": [{"md5": "b.dir"}]})
    versions.make_current(one)  # a rollback keeps the record logged for it
    assert versions.published() == {one.name: {"outs": [{"md5": "a.dir"}]}, two.name: {"outs": [{"md5": "b.dir"}]}}
    with open(versions.folder / "published.jsonl", "a") as log:
        log.write('{"version": "v2')  # a line cut short by a crash
    assert set(versions.published()) == {one.name, two.name}


def test_a_second_publisher_is_refused_while_the_first_holds_the_lock(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    with versions.lock():
        with pytest.raises(PublishBusyError, match="another run is curating or publishing"):
            with OutputVersions(tmp_path, "cleaned").lock():
                pass
    with versions.lock():  # released
        pass


def test_a_second_publisher_given_on_wait_says_so_and_waits_for_the_first(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    said, order = [], []

    def second():
        with OutputVersions(tmp_path, "cleaned").lock(on_wait=said.append):
            order.append("second")

    with versions.lock():
        waiter = threading.Thread(target=second)
        waiter.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)
        order.append("first")
    waiter.join(timeout=30)
    assert said == [f"another run is curating or publishing into {versions.folder}: waiting for it to finish"]
    assert order == ["first", "second"]


def _md5(letter: str) -> dict:
    return {"outs": [{"md5": letter * 32 + ".dir", "path": "x"}]}


def test_rollback_walks_back_and_never_to_a_version_rolled_back_from(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    one, two, three = (_version(versions, n) for n in (1, 2, 3))
    for version, letter in ((one, "a"), (two, "b"), (three, "c")):
        versions.make_current(version, _md5(letter))
    never_published, incomplete = _version(versions, 4), _version(versions, 5, complete=False)
    assert versions.rollback_target() == two
    versions.make_current(two, rolled_back_from=three.name)
    # A second rollback goes further back (a review finding: it went forward to three again).
    assert versions.rollback_target() == one
    versions.make_current(one, rolled_back_from=two.name)
    with pytest.raises(ValueError, match="no older published version"):
        versions.rollback_target()
    assert versions.rollback_target(three.name) == three  # named: a roll forward
    for refused, reason in ((one.name, "already current"), (never_published.name, "never published"),
                            (incomplete.name, "never published"), ("v0-no-such-version", "no such version"),
                            ("../cleaned", "no such version"), ("", "no such version")):
        with pytest.raises(ValueError, match=reason):
            versions.rollback_target(refused)


def test_rollback_skips_a_copy_of_the_current_content_and_versions_rolled_back_from(tmp_path):
    """A trial finding: after a rollback from two to one, the next run curated the same inputs
    again (three, the same DVC hash as two); "rollback" went to two, changing nothing."""
    versions = OutputVersions(tmp_path, "cleaned")
    one, two, three = (_version(versions, n) for n in (1, 2, 3))
    versions.make_current(one, _md5("a"))
    versions.make_current(two, _md5("b"))
    versions.make_current(one, rolled_back_from=two.name)
    versions.make_current(three, _md5("b"))
    assert versions.rollback_chain() == [one]
    copies = OutputVersions(tmp_path / "copies", "cleaned")
    first, again = _version(copies, 1), _version(copies, 1)
    copies.make_current(first, _md5("a"))
    copies.make_current(again, _md5("a"))
    with pytest.raises(ValueError, match="no older published version with other content"):
        copies.rollback_target()


def test_prune_keeps_rollback_targets_and_the_version_just_before(tmp_path):
    """The same trial: with one -> two -> (rollback) one -> three -> four, prune kept two and
    three by name and deleted one, the only good version."""
    versions = OutputVersions(tmp_path, "cleaned")
    one, two, three, four = (_version(versions, n) for n in (1, 2, 3, 4))
    versions.make_current(one)
    versions.make_current(two)
    versions.make_current(one, rolled_back_from=two.name)
    versions.make_current(three)
    versions.make_current(four)
    assert versions.rollback_chain() == [three, one]
    assert versions.prune(keep_previous=2) == [two]  # rolled back from: no target
    assert versions.prune(keep_previous=1) == [one]  # three: the first target and the one just before


def test_a_folder_from_before_versions_keeps_its_dvc_record_and_reads_as_previous(tmp_path):
    legacy = tmp_path / "cleaned"
    legacy.mkdir()
    (legacy / "stats.json").write_text('{"kept": 0}')
    versions = OutputVersions(tmp_path, "cleaned")
    new = _version(versions, 5)
    versions.make_current(new, _md5("b"), legacy_record=_md5("a"))
    (moved,) = [v for v in versions.versions() if v != new]
    assert versions.recently_current() == [new.name, moved.name]
    assert versions.published()[moved.name] == _md5("a")
    assert versions.rollback_target() == moved


def test_the_asset_reads_the_dvc_record_of_a_lake_from_before_versions(tmp_path):
    from hkgai_pipelines.assets.corpora import _legacy_record
    from hkgai_pipelines.resources import DvcResource

    dvc = DvcResource(repo_dir=str(tmp_path), remote_url=str(tmp_path / "remote"))
    assert _legacy_record(dvc) is None
    (tmp_path / "cleaned.dvc").write_text("outs:\n- md5: " + "a" * 32 + ".dir\n  path: cleaned\n")
    assert _legacy_record(dvc) == {"outs": [{"md5": "a" * 32 + ".dir", "path": "cleaned"}]}
