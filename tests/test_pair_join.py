"""Pair verification by a join (`curation/pair_join.py`): the same similarities as hashing
every text in memory, each part file read once however many ranges, clear errors."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hkgai_pipelines.curation import pair_join
from hkgai_pipelines.curation.dedup import MinHasher, in_memory_verifier
from hkgai_pipelines.curation.engine import part_name
from hkgai_pipelines.curation.pair_join import JoinedPairVerifier, payload_rows

HASHER = MinHasher(num_perm=16, num_bands=4, ngram=2, seed=1)


def _write_parts(folder, texts: dict[int, str], per_part: int) -> list[str]:
    """Part files of `per_part` records each, in order, with the columns verification reads."""
    orders = sorted(texts)
    parts = []
    for start in range(0, len(orders), per_part):
        chunk = orders[start:start + per_part]
        path = folder / part_name(chunk[0])
        pq.write_table(pa.table({"order": np.array(chunk, dtype=np.int64), "text": [texts[o] for o in chunk]}), path)
        parts.append(str(path))
    return parts


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(7)
    base = ["香港特別行政區政府今日公布施政報告", "The Legislative Council meets on Wednesday", "我哋聽日去飲茶好唔好"]
    texts = {}
    for i in range(60):
        text = base[i % 3] + "".join(rng.choice("甲乙丙丁戊己庚辛") for _ in range(rng.randint(0, 4)))
        if i % 10 == 0:
            text *= 20  # longer than a 16-value signature's 64 bytes: routed as a signature
        texts[(i // 20) << 40 | i] = text  # three units, as order keys are built
    (tmp_path / "parts").mkdir()
    return texts, _write_parts(tmp_path / "parts", texts, per_part=7)


def _ranges(texts, count: int, seed: int = 3):
    """`count` ranges of random candidate pairs (anchor before member, distinct pairs)."""
    rng = random.Random(seed)
    orders = sorted(texts)
    pairs = sorted({tuple(sorted(rng.sample(orders, 2))) for _ in range(120)})
    rng.shuffle(pairs)
    return [(np.array([a for a, _ in chunk], np.int64), np.array([m for _, m in chunk], np.int64))
            for chunk in np.array_split(np.array(pairs), count) if len(chunk)]


@pytest.mark.parametrize("spill", [False, True])
def test_joined_similarities_equal_hashing_every_text(corpus, tmp_path, spill):
    texts, parts = corpus
    ranges = _ranges(texts, count=9)
    verifier = JoinedPairVerifier(parts, HASHER, tmp_path / "spill" if spill else None, memory_bytes=0 if spill else 1 << 30,
                                  flush_bytes=256, max_rows=5)
    for anchor, member in ranges:
        verifier.expect(anchor, member)
    reference = in_memory_verifier(texts, HASHER)
    for anchor, member in ranges:
        got = verifier(anchor, member)
        want = reference(anchor, member)
        assert np.array_equal(got[0], anchor) and np.array_equal(got[1], member)
        assert np.array_equal(got[2], want[2])
    assert verifier.routed_records == len(np.unique(np.concatenate([np.r_[a, m] for a, m in ranges])))
    assert (tmp_path / "spill").exists() == spill


@pytest.mark.parametrize("split", [False, True])
def test_map_answers_every_range_in_order_when_the_comparing_runs_ahead(corpus, tmp_path, monkeypatch, split):
    """A compare mapper that takes every job before answering (as a pool of workers does a few
    ahead) still gets each range's answers to its range, empty ranges included; spilled ranges
    that have their own file travel as its path (a Ray task opens it), the others as rows."""
    from hkgai_pipelines.curation import keystore

    texts, parts = corpus
    if split:
        monkeypatch.setattr(keystore, "SPLIT_MIN_READS", 0)
    empty = np.zeros(0, np.int64)
    pairs = _ranges(texts, count=9)
    ranges = [pairs[0], (empty, empty), *pairs[1:5], (empty, empty), (empty, empty), *pairs[5:], (empty, empty)]
    sources = []

    def ahead(jobs, hasher):
        jobs = list(jobs)
        sources.extend(type(payloads) for payloads, _, _ in jobs)
        return iter([pair_join.range_similarities(*job, hasher) for job in jobs])

    verifier = JoinedPairVerifier(parts, HASHER, tmp_path / "spill", memory_bytes=0, flush_bytes=256, max_rows=5, compare=ahead)
    for anchor, member in ranges:
        verifier.expect(anchor, member)
    reference = in_memory_verifier(texts, HASHER)
    answers = list(verifier.map(iter(ranges)))
    assert len(answers) == len(ranges) and len(sources) == len(pairs)
    for (anchor, member), (got_anchor, got_member, similarity) in zip(ranges, answers):
        assert np.array_equal(got_anchor, anchor) and np.array_equal(got_member, member)
        assert np.array_equal(similarity, reference(anchor, member)[2] if len(anchor) else np.zeros(0))
    assert set(sources) == ({str} if split else {pa.Table})
    with pytest.raises(ValueError, match="13 range"):
        next(verifier.map([pairs[0]]))


def test_each_part_file_is_read_once_however_many_ranges(corpus, monkeypatch):
    texts, parts = corpus
    reads = []
    read_table = pq.read_table

    def counted(path, *args, **kwargs):
        if str(path) in parts:
            reads.append(str(path))
        return read_table(path, *args, **kwargs)

    monkeypatch.setattr(pair_join.pq, "read_table", counted)
    ranges = _ranges(texts, count=30)
    verifier = JoinedPairVerifier(parts, HASHER, max_rows=3)
    for anchor, member in ranges:
        verifier.expect(anchor, member)
    for anchor, member in ranges:
        verifier(anchor, member)
    assert sorted(reads) == sorted(set(reads)) and len(reads) == len(parts)  # 9 part files, 30 ranges


def test_long_texts_travel_as_signatures_and_short_ones_as_text(corpus):
    texts, parts = corpus
    table = pq.read_table(parts[0])
    orders = table.column("order").to_numpy()[:2]  # the first is 20 times a sentence
    rows = payload_rows(parts[0], np.repeat(orders, 2), np.array([0, 4, 1, 4], np.int32), HASHER)
    assert rows.column("bucket").to_pylist() == [0, 4, 1, 4]
    assert rows.column("text").to_pylist()[:2] == [None, None]
    assert np.array_equal(np.frombuffer(rows.column("signature")[0].as_py(), np.uint32), HASHER.signature(texts[int(orders[0])]))
    assert rows.column("text").to_pylist()[2:] == [texts[int(orders[1])]] * 2
    assert rows.column("signature").to_pylist()[2:] == [None, None]


def test_asking_what_was_not_named_or_naming_late_is_an_error(corpus):
    texts, parts = corpus
    orders = sorted(texts)
    verifier = JoinedPairVerifier(parts, HASHER)
    empty = np.zeros(0, np.int64)
    verifier.expect(empty, empty)  # an empty range is answered empty
    verifier.expect(np.array([orders[0]]), np.array([orders[1]]))
    assert [len(values) for values in verifier(empty, empty)] == [0, 0, 0]
    with pytest.raises(ValueError, match="did not name"):
        verifier(np.array([orders[0]]), np.array([orders[2]]))
    with pytest.raises(RuntimeError, match="named first"):
        verifier.expect(np.array([orders[0]]), np.array([orders[1]]))
    with pytest.raises(ValueError, match="2 range"):
        verifier(np.array([orders[0]]), np.array([orders[1]]))


def test_a_record_missing_from_its_part_file_is_an_error(corpus):
    texts, parts = corpus
    verifier = JoinedPairVerifier(parts, HASHER)
    missing = sorted(texts)[0] + 1_000  # inside the first part's span, but no such record
    verifier.expect(np.array([sorted(texts)[0]]), np.array([missing]))
    with pytest.raises(ValueError, match="does not hold"):
        verifier(np.array([sorted(texts)[0]]), np.array([missing]))


def test_verify_each_asks_a_verifier_told_of_every_range_for_every_range():
    """A verifier with `expect` counts the ranges it was told of, so an empty range is asked
    too; a plain function is not called for one (dedup.in_memory_verifier cannot take it)."""
    from hkgai_pipelines.curation.dedup import verify_each

    asked = []

    class Told:
        def expect(self, anchor, member):
            pass

        def __call__(self, anchor, member):
            asked.append(len(anchor))
            return anchor, member, np.zeros(len(anchor))

    def plain(anchor, member):
        asked.append(len(anchor))
        return anchor, member, np.zeros(len(anchor))

    empty = np.zeros(0, np.int64)
    ranges = [(empty, empty), (np.array([1]), np.array([2])), (empty, empty)]
    assert [len(got[0]) for _, got in verify_each(Told(), ranges)] == [0, 1, 0] and asked == [0, 1, 0]
    asked.clear()
    assert [len(got[0]) for _, got in verify_each(plain, ranges)] == [0, 1, 0] and asked == [1]


def test_range_similarities_of_texts_and_signatures_mixed_equal_hashing_every_text():
    """A range's pairs of two texts (compared by rensa on its sketches), of a text and a stored
    signature, and of two signatures (compared in numpy) give the similarities that hashing
    every text gives, to the bit, near-duplicates and strangers alike."""
    hasher = MinHasher()  # params.yaml's 128 values: a text over 512 bytes travels as a signature
    short = "立法會由九十名議員組成每屆任期四年主席由議員互選產生"
    long = short * 12
    texts = {1: short, 2: short[:-2] + "政府", 3: long, 4: long[:-2] + "政府", 5: "The MTR runs extra trains tonight", 6: "The MTR runs extra trains tomorrow"}
    limit = hasher.num_perm * 4
    orders = np.array(sorted(texts), dtype=np.int64)
    stored = [len(texts[o].encode()) > limit for o in orders.tolist()]
    assert stored == [False, False, True, True, False, False]
    payloads = pa.table({
        "bucket": np.zeros(len(orders), np.int32), "order": orders,
        "text": pa.array([None if s else texts[o] for o, s in zip(orders.tolist(), stored)], pa.string()),
        "signature": pa.array([hasher.signature(texts[o]).tobytes() if s else None for o, s in zip(orders.tolist(), stored)], pa.binary()),
    }, schema=pair_join.PAYLOAD_ROWS)
    anchor = np.array([1, 1, 3, 2, 5, 1], np.int64)
    member = np.array([2, 3, 4, 4, 6, 5], np.int64)  # text-text, text-signature, signature-signature, ...
    got = pair_join.range_similarities(payloads, anchor, member, hasher)
    want = in_memory_verifier(texts, hasher)(anchor, member)[2]
    assert np.array_equal(got, want)
    assert got[0] > 0.8 and got[2] > 0.8 and got[4] > 0.5 and got[5] < 0.1


def test_route_groups_cut_between_jobs_and_route_group_keeps_job_order(corpus):
    """Routing on Ray takes consecutive part files' jobs a task (`route_groups`): no job is
    split, the groups reach the row count before they are cut, and a group's table is its
    jobs' `payload_rows` one after another."""
    texts, parts = corpus
    jobs = []
    for part in parts:
        orders = pq.read_table(part, columns=["order"]).column("order").to_numpy()
        jobs.append((part, np.repeat(orders, 2), np.tile(np.array([0, 3], np.int32), len(orders))))
    groups = list(pair_join.route_groups(iter(jobs), rows=30))
    assert [job for group in groups for job in group] == jobs
    assert [sum(len(job[1]) for job in group) for group in groups] == [42, 42, 36]  # parts of 7 records, named twice
    joined = pair_join.route_group(groups[0], HASHER)
    assert joined.equals(pa.concat_tables([payload_rows(*job, HASHER) for job in groups[0]]))
    assert pair_join.route_group([], HASHER).num_rows == 0


def test_a_named_record_without_text_is_a_clear_error(tmp_path):
    path = tmp_path / part_name(1)
    pq.write_table(pa.table({"order": np.array([1, 2, 3], np.int64), "text": ["a b", None, "香港"]}), path)
    with pytest.raises(ValueError, match="holds no text for a record named for verification"):
        payload_rows(str(path), np.array([1, 2, 3], np.int64), np.zeros(3, np.int32), HASHER)
    assert payload_rows(str(path), np.array([1, 3], np.int64), np.zeros(2, np.int32), HASHER).num_rows == 2
