"""The Atari GAN's recipes and techniques as a user meets them: --recipe, the flags, their refusals, exact resume with
all of them on, and the line a collapse gets."""

import math
import re

import pytest
from ignite.engine import Engine

import tasks.atari_gan as task
from handlers.collapse import CollapseWatch
from handlers.metrics_log import MetricsLog, read_records, records_by_iteration
from runner.checkpoint_files import find_checkpoint, load_checkpoint
from runner.cli import resolve_printed
from runner.errors import UserError
from tasks.atari_gan import AtariGanSettings
from tasks.gan_settings import RECIPES

# Every technique on at once, lazy R1 and ADA's strength and the EMA warm-up all spanning the resume at 10.
EVERYTHING = {
    **RECIPES["stable"],
    "recipe": "stable",
    "loss": "relativistic",
    "d_norm": "spectral+batchnorm",
    "r1_every": 3,
    "augment": "translation,color,cutout",
    "augment_p": 0.0,
    "ada_target": 0.3,
    "ada_speed": 40,
    "ema_warmup": 15,
    "lr_decay_from": 6,
    "lr_decay_to": 20,
}
EVALUATED = {"max_iters": 20, "eval_every": 5, "image_every": 10, "collapse_factor": 1.01}


def settings_of(**explicit):
    return resolve_printed(AtariGanSettings, explicit)


def test_book_is_the_default_and_every_technique_is_off():
    book = settings_of()
    assert book.recipe == "book" and settings_of(recipe="book") == book
    assert (book.loss, book.d_norm, book.augment) == ("bce", "batchnorm", "none")
    assert book.r1_weight == book.dis_lr == book.gen_lr == book.ada_target == book.ema_warmup == 0
    assert book.lr_decay_from == book.lr_decay_to == 0


def test_stable_resolves_to_its_recipe_and_flags_override_it():
    stable = settings_of(recipe="stable")
    assert all(getattr(stable, name) == value for name, value in RECIPES["stable"].items())
    assert settings_of(recipe="stable", r1_weight=0.5).r1_weight == 0.5


def test_print_config_shows_what_stable_resolves_to(capsys):
    with pytest.raises(SystemExit) as ended:
        task.main(["--recipe", "stable", "--print-config"], description="")
    assert ended.value.code == 0
    printed = capsys.readouterr().out
    assert all(f"\n{name}: " in printed for name in RECIPES["stable"]) and "recipe: stable" in printed


@pytest.mark.parametrize(
    "explicit, message",
    [
        ({"loss": "wgan"}, "--loss wgan: must be one of bce, hinge, relativistic"),
        ({"d_norm": "layer"}, "--d-norm layer: must be one of batchnorm, spectral, spectral+batchnorm"),
        ({"augment": "translation,flip"}, "--augment translation,flip: unknown augmentation 'flip'"),
        ({"augment_p": 1.5}, "--augment-p 1.5: must be in [0, 1]"),
        ({"ada_target": 0.6}, "--ada-target 0.6: choose what to augment (--augment)"),
        ({"ema_decay": 0.0, "ema_warmup": 100}, "--ema-warmup 100: there is no moving average to warm up"),
        ({"collapse_factor": 0.5}, "--collapse-factor 0.5: must be 0 (off) or above 1"),
        ({"lr_decay_from": 500, "max_iters": 500}, "--lr-decay-from 500: must be below --max-iters 500"),
        ({"lr_decay_from": 50, "lr_decay_to": 40}, "--lr-decay-from 50: must be below --lr-decay-to 40"),
        ({"lr_decay_to": 40}, "--lr-decay-to 40: say where the decay starts (--lr-decay-from)"),
        ({"recipe": "fast"}, "--recipe fast: must be one of book, stable"),
    ],
)
def test_a_bad_technique_value_is_refused_in_one_line(explicit, message):
    with pytest.raises(UserError, match=re.escape(message)):
        settings_of(**explicit)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_settings):
    run = tmp_path_factory.mktemp("recipe") / "straight"
    assert task.train(tiny_settings(run, **EVERYTHING, **EVALUATED, checkpoint_every=5)).exit_code == 0
    return run


def test_every_technique_is_in_the_config_and_the_checkpoint(straight):
    checkpoint = load_checkpoint(straight / "checkpoints" / "checkpoint_20.pt")
    assert any("parametrizations.weight.0._u" in key for key in checkpoint["discriminator"])  # spectral norm
    assert 0 < checkpoint["augment"]["p"] <= 1  # ADA's strength moved
    assert {"r1", "d_real_sign", "augment_p"} <= set(checkpoint["last_losses"])
    config = find_checkpoint(straight).settings
    assert all(config[name] == value for name, value in EVERYTHING.items())


def test_stopped_at_10_and_resumed_to_20_gives_the_same_numbers_with_every_technique(straight, tiny_settings, tmp_path):
    run = tmp_path / "stopped"
    assert task.train(tiny_settings(run, **EVERYTHING, **{**EVALUATED, "max_iters": 10})).exit_code == 0
    resumed = tiny_settings(run, **EVERYTHING, **EVALUATED)
    assert task.train(resumed, find_checkpoint(run)).exit_code == 0
    keys = ("loss_gen", "loss_dis", "r1", "d_real_sign", "augment_p", "avg_loss_gen", "fid", "fid_ema", "collapse")

    def numbers(path):
        return {i: {k: r[k] for k in keys if k in r} for i, r in records_by_iteration(path / "metrics.jsonl").items()}

    assert numbers(run) == numbers(straight)


def evaluations(values, every=10, factor=3.0, tmp_path=None, said=None):
    """A ``CollapseWatch`` judging an evaluator that reports ``values`` at iterations every, 2 * every, ..."""
    log = MetricsLog(tmp_path / "metrics.jsonl", every=1) if tmp_path else None
    watch = CollapseWatch("fid_ema", factor, every, log, lambda: "runs/x/checkpoints/best_fid_20.pt", said.append)
    trainer, evaluator = Engine(lambda engine, batch: None), Engine(lambda engine, batch: None)
    watch.attach(evaluator, trainer)
    for index, value in enumerate(values, start=1):
        trainer.state.iteration = index * every
        evaluator.state.metrics = {"fid_ema": value}
        watch.judge(evaluator, trainer)
    return watch


def test_a_collapse_is_one_line_and_one_record_and_so_is_the_recovery(tmp_path):
    said = []
    evaluations([300.0, 12.0, 9.5, 20.0, 87.4, 212.0, 15.0], tmp_path=tmp_path, said=said)
    assert said == [
        "collapse: fid_ema 87.4 at iteration 50 is 9.2x the best, 9.5 at iteration 30 "
        "(kept in runs/x/checkpoints/best_fid_20.pt); training goes on",
        "recovered: fid_ema 15.0 at iteration 70 is back within 3x the best, 9.5 at iteration 30",
    ]
    records = [record for record in read_records(tmp_path / "metrics.jsonl")]
    assert [(r["iteration"], r["collapse"]["state"]) for r in records] == [(50, "collapsed"), (70, "recovered")]
    assert records[0]["collapse"]["best"] == 9.5 and records[0]["collapse"]["best_iteration"] == 30


def test_the_watch_ignores_evaluations_off_schedule_and_resumes_where_it_was():
    watch = evaluations([50.0, 10.0, 45.0], said=[])
    assert (watch.best, watch.best_iteration, watch.collapsed) == (10.0, 20, True)
    fresh = CollapseWatch("fid_ema", 3.0, 10, None, lambda: None)
    fresh.load_state_dict(watch.state_dict())
    assert fresh.state_dict() == watch.state_dict()
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    trainer.state.iteration, evaluator.state.metrics = 35, {"fid_ema": 1.0}  # a stop's extra evaluation
    fresh.judge(evaluator, trainer)
    assert fresh.best == 10.0 and math.isfinite(fresh.best)


def test_a_run_without_the_watch_resumes_with_it_on(straight, tiny_settings, tmp_path):
    run = tmp_path / "plain"
    assert task.train(tiny_settings(run, max_iters=5, eval_every=5, collapse_factor=0)).exit_code == 0
    resumed = tiny_settings(run, max_iters=10, eval_every=5, collapse_factor=3.0)
    assert task.train(resumed, find_checkpoint(run)).exit_code == 0
    assert "collapse_watch" in load_checkpoint(run / "checkpoints" / "checkpoint_10.pt")


def test_a_run_shorter_than_log_every_writes_its_last_record_and_draws_its_plots(tiny_settings, tmp_path):
    run = tmp_path / "short"
    assert task.train(tiny_settings(run, max_iters=5, log_every=100)).exit_code == 0
    (record,) = read_records(run / "metrics.jsonl")
    assert record["iteration"] == 5 and "loss_gen" in record and record["iters_per_sec"] > 0
    assert (run / "plots" / "losses.png").exists()


def test_the_learning_rates_fall_to_zero_and_a_resume_that_adds_the_decay_is_the_run_that_had_it(
    tiny_settings, tmp_path
):
    decayed = dict(lr=1e-3, dis_lr=4e-3, lr_decay_from=4, max_iters=8)
    assert task.train(tiny_settings(tmp_path / "straight", **decayed)).exit_code == 0
    state = load_checkpoint(tmp_path / "straight" / "checkpoints" / "checkpoint_8.pt")
    rates = [state[name]["param_groups"][0]["lr"] for name in ("gen_optimizer", "dis_optimizer")]
    assert rates == pytest.approx([1e-3 / 4, 4e-3 / 4])  # the last step's: a quarter of the way from 0
    branch = tmp_path / "branch"
    assert task.train(tiny_settings(branch, **{**decayed, "lr_decay_from": 0, "max_iters": 3})).exit_code == 0
    assert task.train(tiny_settings(branch, **decayed), find_checkpoint(branch)).exit_code == 0

    def losses(run):
        return {i: (r["loss_gen"], r["loss_dis"]) for i, r in records_by_iteration(run / "metrics.jsonl").items()}

    assert losses(branch) == losses(tmp_path / "straight")
    constant = tmp_path / "constant"
    assert task.train(tiny_settings(constant, **{**decayed, "lr_decay_from": 0})).exit_code == 0
    assert losses(constant) != losses(branch) and all(losses(constant)[i] == losses(branch)[i] for i in (1, 2, 3, 4))
