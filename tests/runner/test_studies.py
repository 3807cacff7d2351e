"""A study's plumbing in-process: orphaned trials told apart, workers asking side by side (PostgreSQL's lock:
tests/tasks/test_sweep_postgres.py)."""

import subprocess
import sys

import optuna

import runner.studies as studies


def test_an_orphan_is_a_running_trial_of_a_dead_process_on_this_machine():
    study = optuna.create_study()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    trials = {name: study.ask() for name in ("alive", "dead", "elsewhere", "twin", "rebooted", "container")}
    for trial in trials.values():
        studies.claim(study, trial)
    for name in ("dead", "elsewhere", "twin", "container"):
        study._storage.set_trial_user_attr(trials[name]._trial_id, "pid", int(dead.stdout))
    attrs = {
        "elsewhere": ("host", "another-machine"),
        "twin": ("machine_id", "0" * 32),  # a clone with our name
        "rebooted": ("boot", "an-earlier-boot"),
        "container": ("pid_namespace", 1),
    }
    for name, (key, value) in attrs.items():
        study._storage.set_trial_user_attr(trials[name]._trial_id, key, value)
    orphans = [studies.is_orphaned(t) for t in study.get_trials()]
    assert orphans == [False, True, False, False, True, False]  # rebooted: its process is gone whatever its pid


def test_workers_asking_side_by_side_get_different_suggestions(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    space = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
    workers = [studies.open_study(storage, "s", "minimize", seed=0) for _ in range(2)]  # both opened on 0 trials
    suggested = [studies.suggest(studies.next_trial(w, storage, 4, tmp_path, seed=0), space) for w in workers]
    assert suggested[0] != suggested[1]
    again = optuna.storages.InMemoryStorage()  # the same sweep again: the same suggestions
    workers = [studies.open_study(again, "s", "minimize", seed=0) for _ in range(2)]
    assert [studies.suggest(studies.next_trial(w, again, 4, tmp_path, seed=0), space) for w in workers] == suggested
