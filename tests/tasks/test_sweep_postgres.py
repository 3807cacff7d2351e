"""Sweeps on a real PostgreSQL server: workers of any number of machines share one study through the database.

These run where ``$IGNITE_BOOK_TEST_POSTGRES`` names a database URL; ``.ci/run`` starts a server on loopback for them
(``.ci/postgres.sh``). Elsewhere they are skipped, saying why.
"""

import os
import subprocess
import uuid

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from test_sweep import sweep_command

import runner.studies as studies
from conftest import REPO
from handlers.metrics_log import read_records

URL = os.environ.get("IGNITE_BOOK_TEST_POSTGRES", "")
pytestmark = pytest.mark.skipif(not URL, reason="set IGNITE_BOOK_TEST_POSTGRES to a PostgreSQL URL (.ci/postgres.sh)")


def test_two_workers_on_postgresql_finish_exactly_n_trials_none_lost_none_run_twice(tmp_path):
    output, study_name = tmp_path / "P", f"pg-{uuid.uuid4().hex[:8]}"
    command = sweep_command(output, "--n-workers", "2", storage=URL)
    command[command.index("--study-name") + 1] = study_name
    command[command.index("--n-trials") + 1] = "4"
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr

    trials = optuna.load_study(study_name=study_name, storage=URL).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers took trials
    assert sorted(path.name for path in output.glob("trial_*")) == [f"trial_{n:04d}" for n in range(4)]
    for trial in trials:  # each trained once, from its first iteration to its end: no trial ran twice
        records = read_records(output / f"trial_{trial.number:04d}" / "metrics.jsonl")
        assert not any("resumed_from" in r for r in records)
        iterations = [r["iteration"] for r in records if "loss_gen" in r]
        assert iterations == sorted(set(iterations))


def test_the_study_lock_is_one_database_lock_for_every_worker_of_every_machine(tmp_path):
    storage = studies.open_storage(URL, tmp_path)
    key = {"key": studies.lock_key("a-study")}
    try_lock = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)")
    with storage.engine.connect() as other_machine:
        with studies.study_lock(storage, "a-study", tmp_path):
            assert other_machine.execute(try_lock, key).scalar() is False  # held: another worker waits
        assert other_machine.execute(try_lock, key).scalar() is True  # released on the way out
        other_machine.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), key)
    assert not (tmp_path / ".sweep.lock").exists()  # no file lock: a folder is no lock across machines
