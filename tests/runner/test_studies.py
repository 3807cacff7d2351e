"""A study's plumbing in-process: orphaned trials told apart, workers asking side by side (PostgreSQL's lock:
tests/tasks/test_sweep_postgres.py)."""

import subprocess
import sys

import optuna
from optuna.trial import TrialState

import runner.studies as studies


def test_an_orphan_is_a_running_trial_of_a_dead_process_on_this_machine():
    study = optuna.create_study()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    trials = {name: study.ask() for name in ("alive", "dead", "elsewhere", "twin", "rebooted", "container")}
    for trial in trials.values():
        studies.claim(trial)
    for name in ("dead", "elsewhere", "twin", "container"):
        trials[name].set_user_attr("pid", int(dead.stdout))
    attrs = {
        "elsewhere": ("host", "another-machine"),
        "twin": ("machine_id", "0" * 32),  # a clone with our name
        "rebooted": ("boot", "an-earlier-boot"),
        "container": ("pid_namespace", 1),
    }
    for name, (key, value) in attrs.items():
        trials[name].set_user_attr(key, value)
    orphans = [studies.is_orphaned(t) for t in study.get_trials()]
    assert orphans == [False, True, False, False, True, False]  # rebooted: its process is gone whatever its pid


def test_an_adopted_orphan_keeps_its_number_parameters_and_reports(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    study = studies.open_study(storage, "s", "minimize", seed=0)
    space = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
    first = studies.next_trial(study, storage, 2, tmp_path)
    params = studies.suggest(first, space)
    first.report(0.5, step=1)
    first.set_user_attr("boot", "an-earlier-boot")  # its process died with the machine
    adopted = studies.next_trial(study, storage, 2, tmp_path)
    assert (adopted.number, studies.suggest(adopted, space)) == (first.number, params)
    study.tell(adopted, 0.25)
    (frozen,) = study.get_trials()
    assert (frozen.state, frozen.value, frozen.intermediate_values) == (TrialState.COMPLETE, 0.25, {1: 0.5})
    assert frozen.user_attrs["boot"] != "an-earlier-boot"  # claimed again by this process


def test_workers_asking_side_by_side_get_different_suggestions(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    space = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
    workers = [studies.open_study(storage, "s", "minimize", seed=0) for _ in range(2)]  # both opened on 0 trials
    suggested = [studies.suggest(studies.next_trial(w, storage, 4, tmp_path, seed=0), space) for w in workers]
    assert suggested[0] != suggested[1]
    again = optuna.storages.InMemoryStorage()  # the same sweep again: the same suggestions
    workers = [studies.open_study(again, "s", "minimize", seed=0) for _ in range(2)]
    assert [studies.suggest(studies.next_trial(w, again, 4, tmp_path, seed=0), space) for w in workers] == suggested
