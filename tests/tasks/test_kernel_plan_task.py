"""A GAN run's kernel plan (``--kernel-plan``): measured at start, written to the run directory, kept in the
checkpoint, and what a resume computes with."""

import json

import pytest

import engines.kernel_plan as planning
import tasks.atari_gan as task
from engines.conv_kernels import BOOK, PRODUCT, LayerKernels
from handlers.metrics_log import records_by_iteration
from runner.checkpoint_files import ResumePoint, find_checkpoint

EVERY_PRODUCT = LayerKernels(PRODUCT, PRODUCT, PRODUCT)


@pytest.fixture
def planner(monkeypatch, tmp_path):
    """The planner's verdict, set by the test: the tiny networks' passes are timed, and ``choose`` decides; the
    machine's plan cache is the test's own."""
    monkeypatch.setattr(planning, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(planning, "MIN_FLOPS", 0)
    verdict = {"kernels": EVERY_PRODUCT}
    monkeypatch.setattr(planning, "choice", lambda timed: verdict["kernels"])
    return verdict


def losses_of(run_dir):
    records = records_by_iteration(run_dir / "metrics.jsonl")
    return [(records[i]["loss_dis"], records[i]["loss_gen"]) for i in sorted(records) if "loss_gen" in records[i]]


def plan_file(run_dir):
    return json.loads((run_dir / "kernel_plan.json").read_text())


def test_a_resume_computes_with_the_checkpoints_plan_not_a_new_one(tmp_path, tiny_settings, planner, capsys):
    assert task.train(tiny_settings(tmp_path / "straight", max_iters=10)).exit_code == 0
    written = plan_file(tmp_path / "straight")
    assert written["source"] == "measured" and written["networks"]["generator"]["pipe.0"]["forward"] == PRODUCT
    assert "kernel plan (measured): 18 of 18 passes as one matrix product" in capsys.readouterr().err
    assert task.train(tiny_settings(tmp_path / "killed", max_iters=5)).exit_code == 0
    planner["kernels"] = BOOK  # a plan measured now would differ: the resume must not measure one
    checkpoint = find_checkpoint(tmp_path / "killed")
    assert task.train(tiny_settings(tmp_path / "killed", max_iters=10), checkpoint).exit_code == 0
    resumed = capsys.readouterr().err
    assert "kernel plan (checkpoint): 18 of 18 passes as one matrix product (it was measured)" in resumed
    assert losses_of(tmp_path / "killed") == losses_of(tmp_path / "straight")
    assert plan_file(tmp_path / "killed")["networks"] == written["networks"]


def test_a_plan_file_repeats_a_run_and_book_computes_otherwise(tmp_path, tiny_settings, planner):
    assert task.train(tiny_settings(tmp_path / "measured", max_iters=6)).exit_code == 0
    planner["kernels"] = BOOK
    again = tiny_settings(tmp_path / "again", max_iters=6, kernel_plan=str(tmp_path / "measured"))
    assert task.train(again).exit_code == 0
    assert plan_file(tmp_path / "again")["networks"] == plan_file(tmp_path / "measured")["networks"]
    assert losses_of(tmp_path / "again") == losses_of(tmp_path / "measured")
    assert task.train(tiny_settings(tmp_path / "book", max_iters=6, kernel_plan="book")).exit_code == 0
    assert plan_file(tmp_path / "book")["source"] == "book"
    assert losses_of(tmp_path / "book") != losses_of(tmp_path / "measured")  # the products sum in another order


def test_deterministic_runs_take_the_librarys_kernels(tmp_path, tiny_settings, planner, capsys):
    assert task.train(tiny_settings(tmp_path / "run", max_iters=3, deterministic=True)).exit_code == 0
    assert "kernel plan (book): 0 of 18 passes" in capsys.readouterr().err


def test_a_checkpoint_from_before_kernel_plans_resumes_with_the_machines_plan(tmp_path, tiny_settings, planner, capsys):
    assert task.train(tiny_settings(tmp_path / "run", max_iters=5)).exit_code == 0
    path, state = find_checkpoint(tmp_path / "run")
    del state["kernel_plan"]
    capsys.readouterr()
    assert task.train(tiny_settings(tmp_path / "run", max_iters=8), ResumePoint(path, state)).exit_code == 0
    assert "kernel plan (cache): 18 of 18" in capsys.readouterr().err  # measured by the run's start, kept


def test_a_second_fresh_run_takes_the_machines_cached_plan_and_repeats_the_first(
    tmp_path, tiny_settings, planner, capsys
):
    assert task.train(tiny_settings(tmp_path / "first", max_iters=6)).exit_code == 0
    planner["kernels"] = BOOK  # a plan measured now would differ, and so would the numbers
    assert task.train(tiny_settings(tmp_path / "second", max_iters=6)).exit_code == 0
    said = capsys.readouterr().err
    assert "kernel plan (cache): 18 of 18 passes as one matrix product, measured on this machine 20" in said
    assert losses_of(tmp_path / "second") == losses_of(tmp_path / "first")
    assert plan_file(tmp_path / "second")["timings_ms"] == plan_file(tmp_path / "first")["timings_ms"]
    assert task.train(tiny_settings(tmp_path / "again", max_iters=6, kernel_plan="measure")).exit_code == 0
    assert "kernel plan (measured): 0 of 18" in capsys.readouterr().err
    assert losses_of(tmp_path / "again") != losses_of(tmp_path / "first")
