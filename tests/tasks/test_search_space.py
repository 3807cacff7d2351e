"""A sweep over a search space the user writes (--space), the default one printed (--print-space), and a study
that keeps its space."""

import pytest
import yaml

import tasks.sweep as sweep
from conftest import REPO
from handlers.metrics_log import read_records
from runner.errors import UserError
from tasks.atari_gan import AtariGanSettings
from tasks.gan_settings import RECIPES
from tasks.search_space import read_space

TINY_TRIALS = ["--max-iters", "4", "--eval-every", "2", "--image-size", "16", "--fid-samples", "64"]
TINY_TRIALS += ["--latent-size", "8", "--log-every", "2"]
NARROW_LR_AND_BETA1 = {"lr": {"low": 2e-4, "high": 5e-4, "log": True}, "beta1": {"low": 0.1, "high": 0.6}}


def space_file(tmp_path, space, name="space.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(space))
    return str(path)


def run_sweep(tmp_path, *argv):
    return sweep.main(["atari_gan", "--n-trials", "2", "--output-dir", str(tmp_path / "S"), *argv])


def test_print_space_writes_the_default_space_as_a_file_that_reads_back_the_same(tmp_path, capsys):
    assert sweep.main(["atari_gan", "--print-space"]) == 0
    printed = capsys.readouterr().out
    space = read_space(space_file(tmp_path, yaml.safe_load(printed)), AtariGanSettings)
    assert space.searched == sweep.ATARI_GAN_SPACE and not space.fixed
    assert not (tmp_path / "S").exists()


def test_a_written_space_searches_only_its_settings_and_others_are_normal_flags(tmp_path):
    """The issue's acceptance: lr narrowed and beta1 searched, --filters and --batch-size given as flags."""
    space = space_file(tmp_path, NARROW_LR_AND_BETA1)
    flags = ["--filters", "4", "--batch-size", "4", "--recipe", "stable"]
    assert (
        sweep.main(
            [
                "atari_gan",
                "--n-trials",
                "3",
                "--output-dir",
                str(tmp_path / "S"),
                "--space",
                space,
                *flags,
                *TINY_TRIALS,
            ]
        )
        == 0
    )
    study = sweep.optuna.load_study(study_name="atari_gan", storage=f"sqlite:///{tmp_path / 'S' / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 3 and all(set(t.params) == {"lr", "beta1"} for t in trials)
    for trial in trials:
        assert 2e-4 <= trial.params["lr"] <= 5e-4 and 0.1 <= trial.params["beta1"] <= 0.6
        run = tmp_path / "S" / f"trial_{trial.number:04d}"
        config = yaml.safe_load((run / "config.json").read_text())
        assert (config["filters"], config["batch_size"]) == (4, 4)  # the flags'
        assert config["loss"] == RECIPES["stable"]["loss"]  # --recipe stable's
        assert config["lr"] == pytest.approx(trial.params["lr"])
        assert any("r1" in record for record in read_records(run / "metrics.jsonl"))


def test_a_study_continued_with_another_space_is_refused(tmp_path):
    first = space_file(tmp_path, {"filters": [4], "batch_size": [4]})
    assert run_sweep(tmp_path, "--space", first, *TINY_TRIALS) == 0
    assert run_sweep(tmp_path, "--space", first, *TINY_TRIALS) == 0  # the same space: nothing new to do
    other = space_file(tmp_path, {"filters": [4, 8], "batch_size": [4]}, "other.yaml")
    with pytest.raises(UserError, match="study 'atari_gan' searches another space"):
        run_sweep(tmp_path, "--space", other, *TINY_TRIALS)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"wat": [1]}, "wat: not a setting a sweep can search"),
        ({"seed": [1, 2]}, "seed: not a setting a sweep can search"),
        ({"r1_weight": {"low": 1.0, "high": 0.5}}, "r1_weight: an empty range (1.0 to 0.5)"),
        ({"r1_weight": {"low": 0.0, "high": 1.0, "log": True}}, "r1_weight: a log range needs low > 0"),
        ({"r1_weight": {"low": -1.0, "high": 1.0}}, "r1_weight: --r1-weight -1.0: must not be negative"),
        ({"r1_every": {"low": 1.5, "high": 4}}, "r1_every: --r1-every must be int, got 1.5"),
        ({"loss": ["hinge", "wgan"]}, "loss: --loss wgan: must be one of bce, hinge, relativistic"),
        ({"loss": {"low": 1, "high": 2}}, "loss: --loss is no number: give a list of choices"),
        ({"loss": []}, "loss: an empty list of choices"),
        ({"lr": {"low": 1e-4}}, "lr: a range is {low: L, high: H}"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_file_and_the_key(space, message, tmp_path):
    path = space_file(tmp_path, space)
    with pytest.raises(UserError) as refused:
        run_sweep(tmp_path, "--space", path)
    assert str(refused.value).startswith(f"{path}: {message}")
    assert not (tmp_path / "S").exists()


def test_a_space_file_that_is_no_mapping_or_missing_is_refused(tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- lr\n")
    with pytest.raises(UserError, match="--space .*list.yaml: must map setting names"):
        run_sweep(tmp_path, "--space", str(listed))
    with pytest.raises(UserError, match="--space nowhere.yaml: no such file"):
        run_sweep(tmp_path, "--space", "nowhere.yaml")


def test_a_flag_for_a_searched_setting_is_refused_but_one_the_space_leaves_out_is_not(tmp_path):
    space = space_file(tmp_path, {"lr": {"low": 1e-4, "high": 1e-3}})
    with pytest.raises(UserError, match="--lr: searched by the sweep"):
        run_sweep(tmp_path, "--space", space, "--lr", "0.001")
    with pytest.raises(UserError, match="--max-iters 0"):  # --filters passes the sweep's check; --max-iters 0 not
        run_sweep(tmp_path, "--space", space, "--filters", "4", "--max-iters", "0")


def test_the_readmes_example_space_reads_as_r1_weight_and_dis_lr():
    space = read_space(str(REPO / "docs" / "spaces" / "r1_dis_lr.yaml"), AtariGanSettings)
    assert set(space.searched) == {"r1_weight", "dis_lr"} and not space.fixed
    assert all(distribution.log for distribution in space.searched.values())
