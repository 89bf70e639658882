"""Versioned outputs: one atomic link swap makes a complete version current."""

import threading
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


def test_prune_keeps_the_current_and_the_newest_complete_versions(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    made = [_version(versions, n) for n in range(5)]
    killed = _version(versions, 9, complete=False)
    Path(f"{killed}.dvc").write_text("outs: []")
    versions.make_current(made[1])
    removed = versions.prune(keep_previous=2)
    assert sorted(removed) == sorted([made[0], made[2], killed])
    assert versions.versions() == [made[1], made[3], made[4]]
    assert not Path(f"{killed}.dvc").exists()
    assert versions.current() == made[1]


def test_a_second_publisher_is_refused_while_the_first_holds_the_lock(tmp_path):
    versions = OutputVersions(tmp_path, "cleaned")
    with versions.lock():
        with pytest.raises(PublishBusyError, match="another run is curating or publishing"):
            with OutputVersions(tmp_path, "cleaned").lock():
                pass
    with versions.lock():  # released
        pass
