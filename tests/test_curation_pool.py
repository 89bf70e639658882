"""`cleaned_corpus` is in a concurrency pool of one: two materializations at once (two runs
from the UI, a run and a backfill) never curate, version and publish the corpus together. The
pool limit comes from the instance: the local dagster.yaml `hkgai` writes and the Helm values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

from hkgai_pipelines import platform
from hkgai_pipelines.assets.corpora import CURATION_POOL, cleaned_corpus
from hkgai_pipelines.settings import HkgaiSettings

ROOT = Path(__file__).resolve().parent.parent

#: A step that guards itself as cleaned_corpus does (the curation pool, then the versions lock
#: that waits) and records when it ran; it stands in for cleaned_corpus, whose real run takes a
#: minute.
POOLED_STEP = textwrap.dedent(f"""
    import json, sys, time
    import dagster as dg
    from hkgai_pipelines.curation.versions import OutputVersions

    @dg.asset(pool={CURATION_POOL!r})
    def pooled(context):
        with OutputVersions(sys.argv[1], "cleaned").lock(on_wait=context.log.warning):
            start = time.time()
            time.sleep(3)
            return [start, time.time()]

    result = dg.materialize([pooled], instance=dg.DagsterInstance.get())
    print(json.dumps(result.output_for_node("pooled")))
""")


def test_cleaned_corpus_is_in_the_curation_pool_and_both_instances_limit_it_to_one():
    assert cleaned_corpus.op.pool == CURATION_POOL
    local = yaml.safe_load(platform.DAGSTER_YAML)
    assert local["concurrency"]["pools"]["default_limit"] == 1
    helm = yaml.safe_load((ROOT / "k8s" / "dagster" / "values.yaml").read_text())
    assert helm["concurrency"]["pools"]["defaultLimit"] == 1


@pytest.mark.parametrize("pool_slots", [None, 2])
def test_two_materializations_in_the_pool_run_one_after_the_other(tmp_path, pool_slots):
    """Two processes materialize at once against the home's instance: the second step waits
    for the first, so their intervals never overlap. Mostly the pool makes it wait (Dagster logs
    "blocked by limit for pool"); when both claim the pool's one slot in the same instant (the
    SQLite instance does not serialise the claim across processes) the versions lock does.
    `pool_slots=2` lets both through the pool, so the lock alone must order them."""
    settings = HkgaiSettings(home=tmp_path / "home")
    dagster_home = platform.prepare_home(settings)
    # The instance's SQLite storage is created once first, as `hkgai demo` or `hkgai ui` does:
    # two processes creating it at the same moment race on its schema, which is not under test.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_concurrency_config()
        if pool_slots is not None:
            instance.event_log_storage.set_concurrency_slots(CURATION_POOL, pool_slots)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    runs = [subprocess.Popen([sys.executable, "-c", POOLED_STEP, str(tmp_path / "lake")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    (first_start, first_end), (second_start, second_end) = sorted(json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert first_end <= second_start
    waited = [err for _, err in outputs if "waiting for it to finish" in err]
    blocked = [err for _, err in outputs if f"blocked by limit for pool {CURATION_POOL}" in err]
    assert waited if pool_slots else (blocked or waited)
