"""Every run in TensorBoard's HParams tab, read by TensorBoard's own HParams plugin as its web page asks for it:
its settings, its best score, and its state (complete, stopped, pruned, failed), each run linked to its scalars."""

import math
import os
import signal

import optuna
import pytest

import tasks.atari_gan as atari_gan
import tasks.sweep as sweep
from conftest import engine_factory_with, hparams_tab
from handlers.hparams import STATES
from handlers.metrics_log import read_records
from runner.checkpoint_files import find_checkpoint
from tasks.search_space import SearchSpace


def best_fid_ema(run_dir) -> float:
    """What judges an Atari GAN run with its default moving average of G."""
    return min(record["fid_ema"] for record in read_records(run_dir / "metrics.jsonl") if "fid_ema" in record)


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory, tiny_settings):
    """One folder as a sweep leaves it: a complete trial, a pruned one, a failed one, and one stopped by SIGTERM
    (``stopped``) next to one stopped and then resumed to its end (``resumed``)."""
    folder = tmp_path_factory.mktemp("hparams") / "S"
    monkeypatch = pytest.MonkeyPatch()
    try:
        settings = tiny_settings
        assert atari_gan.train(settings(folder / "complete", max_iters=4, eval_every=2, lr=3e-4)).exit_code == 0

        engine_factory_with(monkeypatch, 3, lambda engine, output: {**output, "loss_gen": math.nan})
        assert atari_gan.train(settings(folder / "failed", max_iters=4, eval_every=2)).exit_code == 1
        monkeypatch.undo()

        engine_factory_with(monkeypatch, 3, lambda engine, output: os.kill(os.getpid(), signal.SIGTERM) or output)
        for name in ("stopped", "resumed"):
            result = atari_gan.train(settings(folder / name, max_iters=6, eval_every=2, checkpoint_every=2))
            assert result.exit_code == 128 + signal.SIGTERM
        monkeypatch.undo()
        resume = find_checkpoint(folder / "resumed")
        assert atari_gan.train(settings(folder / "resumed", max_iters=6, eval_every=2), resume).exit_code == 0

        study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # prunes at the first report
        task = sweep.sweep_tasks()["atari_gan"]
        for name in ("filters", "batch_size"):
            monkeypatch.setitem(task.search_space, name, optuna.distributions.CategoricalDistribution([4]))
        base = {"max_iters": 8, "eval_every": 4, "image_size": 16, "fid_samples": 64, "seed": 0}
        sweep.run_trial(task, study.ask(), base, folder, SearchSpace(task.search_space))
        assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    finally:
        monkeypatch.undo()
    return folder


def test_every_run_is_in_the_tab_with_its_state_and_status(sweep_folder):
    tab = hparams_tab(sweep_folder)
    assert sorted(tab) == ["complete", "failed", "resumed", "stopped", "trial_0000"]
    expected = {
        "complete": ("complete", "STATUS_SUCCESS"),
        "resumed": ("complete", "STATUS_SUCCESS"),  # stopped first; its end is what counts
        "stopped": ("stopped", "STATUS_UNKNOWN"),  # it may go on: no final status yet
        "trial_0000": ("pruned", "STATUS_UNKNOWN"),  # TensorBoard has no "pruned" status
        "failed": ("failed", "STATUS_FAILURE"),
    }
    for name, (state, status) in expected.items():
        assert (tab[name]["metrics"]["outcome/state"], tab[name]["status"]) == (STATES[state], status), name


def test_each_run_shows_its_settings_and_its_best_score_linked_to_its_scalars(sweep_folder):
    tab = hparams_tab(sweep_folder)
    assert tab["complete"]["hparams"]["lr"] == pytest.approx(3e-4)
    assert tab["stopped"]["hparams"]["lr"] == pytest.approx(1e-4)
    assert tab["complete"]["hparams"]["games"] == "Breakout,AirRaid,Pong"
    assert "output_dir" not in tab["complete"]["hparams"]  # where a run is, not what it is
    for name in ("complete", "resumed", "trial_0000"):
        best = tab[name]["metrics"].get("outcome/best_fid_ema")
        assert best == pytest.approx(best_fid_ema(sweep_folder / name)), name
        assert {"eval/fid", "eval/fid_ema"} <= set(tab[name]["metrics"])  # the run's own scalars, in the same run
