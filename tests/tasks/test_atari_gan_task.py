"""The task's composition, in-process (faster than a subprocess, and lets a test inject a failure)."""

import math
from pathlib import Path

import pytest
import torch

import tasks.atari_gan as task
from conftest import damage_tensor_data, engine_factory_with, tree_digest
from handlers.metrics_log import read_records, records_by_iteration
from runner.checkpoint_files import ResumePoint, checkpoint_files, find_checkpoint, load_checkpoint
from runner.device import bf16_supported
from runner.errors import UserError


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_settings, monkeypatch, capsys):
    engine_factory_with(monkeypatch, 12, lambda engine, output: {**output, "loss_gen": math.nan})
    settings = tiny_settings(tmp_path / "run", max_iters=20, checkpoint_every=5, image_every=5)
    assert task.train(settings).exit_code == 1
    assert "iteration 12: a loss became NaN" in capsys.readouterr().err
    assert [p.name for p in checkpoint_files(tmp_path / "run" / "checkpoints")] == [
        "checkpoint_5.pt",
        "checkpoint_10.pt",
    ]
    assert not (tmp_path / "run" / "samples" / "fake_0000012.png").exists()
    path, state = find_checkpoint(tmp_path / "run")
    assert path.name == "checkpoint_10.pt"
    assert all(torch.isfinite(value).all() for value in state["generator"].values() if value.is_floating_point())


def test_evaluations_and_early_stopping_can_be_turned_on_at_a_resume(tmp_path, tiny_settings):
    first = tiny_settings(tmp_path / "run", max_iters=5, eval_every=0)
    assert task.train(first).exit_code == 0
    path, state = find_checkpoint(tmp_path / "run")
    settings = tiny_settings(tmp_path / "run", max_iters=10, eval_every=5, patience=3)
    result = task.train(settings, ResumePoint(path, state))
    assert result.exit_code == 0 and result.iteration == 10 and result.best is not None


def test_resume_into_a_new_directory_branches_with_the_history_and_leaves_the_original_alone(tmp_path, tiny_settings):
    """A branch (``--resume <checkpoint> --output-dir <new>``) goes on exactly, its metrics start with the original's
    records up to the checkpoint, and the original run is only read."""
    first = tiny_settings(tmp_path / "first", max_iters=10, checkpoint_every=5)
    assert task.train(first).exit_code == 0
    before = tree_digest(tmp_path / "first")
    checkpoint = find_checkpoint(tmp_path / "first" / "checkpoints" / "checkpoint_5.pt")
    second = tiny_settings(tmp_path / "second", max_iters=10, resume=str(checkpoint.path))
    assert task.train(second, checkpoint).exit_code == 0
    assert (tmp_path / "second" / "config.json").exists()
    assert tree_digest(tmp_path / "first") == before
    branch, original = (records_by_iteration(tmp_path / name / "metrics.jsonl") for name in ("second", "first"))
    losses = ("loss_gen", "loss_dis", "avg_loss_gen", "avg_loss_dis")
    assert sorted(branch) == sorted(original) == list(range(1, 11))
    assert all([branch[i][key] for key in losses] == [original[i][key] for key in losses] for i in branch)
    markers = [r for r in read_records(tmp_path / "second" / "metrics.jsonl") if "resumed_from" in r]
    assert markers == [{"resumed_from": 5, "checkpoint": str(checkpoint.path)}]


def test_a_run_with_fid_evaluations_trains_exactly_like_one_without(tmp_path, tiny_settings):
    """Evaluating (classifier, held-apart frames, fixed noise, eval-mode generator) draws from no shared RNG."""
    assert task.train(tiny_settings(tmp_path / "plain", max_iters=12, eval_every=0)).exit_code == 0
    assert task.train(tiny_settings(tmp_path / "evaluated", max_iters=12, eval_every=4)).exit_code == 0
    plain = records_by_iteration(tmp_path / "plain" / "metrics.jsonl")
    evaluated = records_by_iteration(tmp_path / "evaluated" / "metrics.jsonl")
    assert [evaluated[i]["iteration"] for i in sorted(evaluated) if "fid" in evaluated[i]] == [4, 8, 12]
    for iteration in range(1, 13):
        assert plain[iteration]["loss_gen"] == evaluated[iteration]["loss_gen"], iteration
        assert plain[iteration]["loss_dis"] == evaluated[iteration]["loss_dis"], iteration


def test_a_finished_run_resumed_again_reports_its_best_fid_without_training(tmp_path, tiny_settings):
    """What a sweep sees when it adopts a trial killed after its last checkpoint."""
    first = task.train(tiny_settings(tmp_path / "run", max_iters=8, eval_every=4))
    again = task.train(tiny_settings(tmp_path / "run", max_iters=8, eval_every=4), find_checkpoint(tmp_path / "run"))
    assert again.exit_code == 0 and again.iteration == 8
    assert again.best == first.best is not None


def losses_of(run_dir):
    records = records_by_iteration(run_dir / "metrics.jsonl")
    return [(records[i]["loss_dis"], records[i]["loss_gen"]) for i in sorted(records) if "loss_gen" in records[i]]


def test_one_producer_process_makes_the_frames_of_none(tmp_path, tiny_settings):
    assert task.train(tiny_settings(tmp_path / "one", max_iters=8, producer_workers="1")).exit_code == 0
    assert task.train(tiny_settings(tmp_path / "none", max_iters=8, producer_workers="0")).exit_code == 0
    assert losses_of(tmp_path / "one") == losses_of(tmp_path / "none")


def saved_with(workers: int, ranks: int = 1) -> ResumePoint:
    stream = {"games": ["Pong"], "envs": []} if workers == 0 else {"games": ["Pong"], "workers": [{}] * workers}
    return ResumePoint(Path("run/checkpoints/checkpoint_5.pt"), {"stream": {"ranks": [stream] * ranks}})


def test_a_resume_keeps_its_checkpoints_producer_count(tiny_settings, tmp_path):
    auto, cpu = tiny_settings(tmp_path, producer_workers="auto"), torch.device("cpu")
    assert task.producer_workers(auto, cpu, saved_with(3)) == 3
    assert task.producer_workers(auto, cpu, saved_with(2, ranks=2)) == 2
    assert task.producer_workers(tiny_settings(tmp_path, producer_workers="1"), cpu, saved_with(0)) == 1  # same frames
    assert task.producer_workers(tiny_settings(tmp_path, producer_workers="0"), cpu, saved_with(1)) == 0
    with pytest.raises(UserError, match="come from 0 producer worker.*resume with --producer-workers 0"):
        task.producer_workers(tiny_settings(tmp_path, producer_workers="2"), cpu, saved_with(0))


def test_auto_starts_producers_only_on_cores_the_step_leaves_free(tiny_settings, tmp_path, monkeypatch):
    auto, cpu, cuda = tiny_settings(tmp_path, producer_workers="auto"), torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(task, "usable_cores", lambda: 16)
    monkeypatch.setattr("tasks.gan.usable_cores", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert task.producer_workers(auto, cpu, None) == 0  # the step's threads take every core
    assert task.producer_workers(auto, cuda, None) == task.AUTO_WORKERS_AT_MOST
    assert task.producer_workers(tiny_settings(tmp_path, producer="off"), cuda, None) == 0
    monkeypatch.setattr(torch, "get_num_threads", lambda: 13)
    assert task.producer_workers(auto, cpu, None) == 3
    monkeypatch.setattr(torch, "get_num_threads", lambda: 15)
    assert task.producer_workers(auto, cpu, None) == 0  # one free core: the background thread is enough


def test_the_background_producer_changes_no_number(tmp_path, tiny_settings):
    assert task.train(tiny_settings(tmp_path / "with", max_iters=12, producer="on")).exit_code == 0
    assert task.train(tiny_settings(tmp_path / "without", max_iters=12, producer="off")).exit_code == 0
    assert losses_of(tmp_path / "with") == losses_of(tmp_path / "without")


def test_every_fast_path_switch_can_be_turned_off(tmp_path, tiny_settings, capsys):
    book = dict(
        precision="fp32",
        channels_last=False,
        freeze_discriminator=False,
        joint_d_pass=False,
        fused_adam=False,
        kernel_plan="book",
        keep_heap=False,
        producer="off",
    )
    assert task.train(tiny_settings(tmp_path / "book", max_iters=6, **book)).exit_code == 0
    assert "fast path: fp32 (no autocast)\n" in capsys.readouterr().err
    fast = task.train(tiny_settings(tmp_path / "fast", max_iters=6))
    assert fast.exit_code == 0
    assert "fast path: bf16 autocast" in capsys.readouterr().err or not bf16_supported(torch.device("cpu"))
    book_losses, fast_losses = losses_of(tmp_path / "book"), losses_of(tmp_path / "fast")
    assert len(book_losses) == len(fast_losses) == 6
    assert fast_losses != book_losses  # the switches do something...
    for (book_dis, book_gen), (fast_dis, fast_gen) in zip(book_losses, fast_losses, strict=True):
        assert abs(fast_dis - book_dis) < 0.1 * book_dis and abs(fast_gen - book_gen) < 0.1 * book_gen  # ...and agree


def test_a_changed_newest_checkpoint_is_named_skipped_and_the_run_still_ends_exactly(tmp_path, tiny_settings, capsys):
    """The issue's acceptance at tiny sizes: 30 iterations checkpointed every 10, two bytes of the newest checkpoint's
    tensor data changed (its size kept); resumed to 40, the run ends as an uninterrupted 40-iteration run."""
    whole = tiny_settings(tmp_path / "whole", max_iters=40, checkpoint_every=10, image_every=10)
    assert task.train(whole).exit_code == 0
    first = tiny_settings(tmp_path / "run", max_iters=30, checkpoint_every=10, image_every=10)
    assert task.train(first).exit_code == 0
    damaged = tmp_path / "run" / "checkpoints" / "checkpoint_30.pt"
    damage_tensor_data(damaged)
    capsys.readouterr()

    resume = find_checkpoint(tmp_path / "run")
    assert resume.iteration == 20
    assert f"warning: skipping {damaged} is damaged" in capsys.readouterr().err
    assert task.train(tiny_settings(tmp_path / "run", max_iters=40, checkpoint_every=10), resume).exit_code == 0
    keys = ("loss_gen", "loss_dis", "avg_loss_gen", "avg_loss_dis")
    ours, theirs = (records_by_iteration(d / "metrics.jsonl") for d in (tmp_path / "run", tmp_path / "whole"))
    assert [[ours[i][k] for k in keys] for i in range(1, 41)] == [[theirs[i][k] for k in keys] for i in range(1, 41)]
    load_checkpoint(damaged)  # written again, whole, by the resumed run
