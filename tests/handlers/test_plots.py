"""Plots of metrics.jsonl: which figures, what they draw (resumed iterations once, "nan" left out), several runs
overlaid with a legend, the plot command and its one-line refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from handlers.plots import (
    find_runs,
    load_run,
    losses_figure,
    quality_figure,
    quality_keys,
    throughput_figure,
    write_plots,
    write_run_plots,
)
from runner.errors import UserError
from tasks.plot import main

REPO = Path(__file__).resolve().parents[2]
GAN_CONFIG = {"max_iters": 6, "log_every": 1}
EPOCH_CONFIG = {"max_epochs": 3, "log_every": 1}


def gan_record(iteration: int, shift: float = 0.0) -> dict:
    loss_gen, loss_dis = 1.0 + iteration / 10 + shift, 1.5 - iteration / 10 + shift
    averages = {"avg_loss_gen": loss_gen * 0.9, "avg_loss_dis": loss_dis * 0.9}
    return {"iteration": iteration, "loss_gen": loss_gen, "loss_dis": loss_dis, **averages, "iters_per_sec": 40.0}


def write_run(run_dir: Path, records: list[dict], config: dict | None = None) -> Path:
    """A run directory as the standard run leaves it: config.json and metrics.jsonl lines."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config if config is not None else GAN_CONFIG))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return run_dir


def gan_run(run_dir: Path, shift: float = 0.0) -> Path:
    records = [gan_record(iteration, shift) for iteration in range(1, 7)]
    records += [{"iteration": 3, "epoch": 1, "fid": 300.0}, {"iteration": 6, "epoch": 1, "fid": 250.0}]
    return write_run(run_dir, records)


def decoded_png(path: Path) -> Image.Image:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # every pixel decodes: a torn file raises here
        return image


def solid_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_linestyle() == "-"]


def test_a_run_gets_losses_quality_and_throughput_pngs(tmp_path):
    run = gan_run(tmp_path / "R")

    written = write_run_plots(run)

    assert written == [run / "plots" / name for name in ("losses.png", "quality.png", "throughput.png")]
    for path in written:
        image = decoded_png(path)
        assert image.mode == "RGB" and image.width == 800 and 450 <= image.height <= 1200
    assert not list((run / "plots").glob("*.tmp"))  # written atomically: nothing left beside them


def test_losses_panel_per_loss_with_raw_values_and_running_average(tmp_path):
    figure = losses_figure([load_run(gan_run(tmp_path / "R"))])

    assert [ax.get_ylabel() for ax in figure.axes] == ["loss_gen", "loss_dis"]
    raw, average = solid_lines(figure.axes[0])
    assert raw.get_alpha() < 1 and average.get_alpha() is None and raw.get_linewidth() < average.get_linewidth()
    assert list(raw.get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert figure.legends == []  # one run: no legend, the title names it
    assert "R" in figure.get_suptitle()


def test_an_iteration_logged_twice_across_a_resume_is_drawn_once_with_the_resumed_value(tmp_path):
    records = [gan_record(iteration) for iteration in range(1, 6)]  # the first run logged 1-5, died after 5
    records += [{"resumed_from": 3, "checkpoint": "checkpoints/checkpoint_3.pt"}]
    records += [gan_record(iteration, shift=0.5) for iteration in range(4, 7)]  # the resumed run logged 4-6
    run = load_run(write_run(tmp_path / "R", records))

    figure = losses_figure([run])

    raw = solid_lines(figure.axes[0])[0]
    assert list(raw.get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert raw.get_ydata()[4] == gan_record(5, shift=0.5)["loss_gen"]
    resume_marks = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in resume_marks] == [3]
    assert "dotted: resumed" in figure.get_suptitle()


def test_nan_and_inf_logged_as_strings_are_left_out(tmp_path):
    records = [gan_record(iteration) for iteration in range(1, 5)]
    records[1]["loss_gen"] = "nan"
    records[2]["iters_per_sec"] = "inf"
    records += [{"iteration": 2, "epoch": 1, "fid": "nan"}, {"iteration": 4, "epoch": 1, "fid": 200.0}]
    run = load_run(write_run(tmp_path / "R", records))

    assert list(solid_lines(losses_figure([run]).axes[0])[0].get_xdata()) == [1, 3, 4]
    assert list(quality_figure([run]).axes[0].get_lines()[0].get_xdata()) == [4]
    assert list(throughput_figure([run]).axes[0].get_lines()[0].get_xdata()) == [1, 2, 4]
    assert len(write_run_plots(tmp_path / "R")) == 3


def test_several_runs_are_overlaid_in_one_figure_with_a_legend_entry_each(tmp_path):
    runs = [load_run(gan_run(tmp_path / name, shift)) for name, shift in (("first", 0.0), ("second", 0.3))]

    for figure in (losses_figure(runs), quality_figure(runs), throughput_figure(runs)):
        (legend,) = figure.legends
        assert [text.get_text() for text in legend.get_texts()] == ["first", "second"]
        assert len({line.get_color() for line in solid_lines(figure.axes[0])}) == 2  # a colour per run


def test_a_sweep_directory_expands_to_its_trials(tmp_path):
    for number in range(3):
        gan_run(tmp_path / "sweep" / f"trial_{number:04d}", shift=number / 10)
    (tmp_path / "sweep" / "study.db").write_text("")

    assert find_runs([tmp_path / "sweep"]) == [tmp_path / "sweep" / f"trial_{n:04d}" for n in range(3)]
    written = write_plots([tmp_path / "sweep"], tmp_path / "out")

    assert [path.name for path in written] == ["losses.png", "quality.png", "throughput.png"]


def test_quality_keys_are_the_logged_numbers_that_are_no_loss_speed_or_bookkeeping(tmp_path):
    records = [{"iteration": 1, "loss": 2.0, "avg_loss": 2.0, "iters_per_sec": 9.0, "samples_per_sec": 90.0}]
    records += [{"iteration": 2, "lr": 0.1, "output": 3.0}, {"resumed_from": 1, "checkpoint": "c.pt"}]
    evaluation = {"val_accuracy": 0.9, "val_loss": 0.3, "val_confusion": [[1, 0], [0, 1]], "val_perplexity": "inf"}
    records += [{"iteration": 2, "epoch": 1, **evaluation}]
    run = load_run(write_run(tmp_path / "R", records, EPOCH_CONFIG))

    assert quality_keys([run]) == ["val_accuracy", "val_loss"]


@pytest.mark.parametrize(
    ("config", "evaluated_epochs", "x_label"),
    [
        (EPOCH_CONFIG, [1, 2, 3], "epoch"),  # an epoch-based run, evaluated at each epoch's end
        (EPOCH_CONFIG, [1, 1, 2], "iteration"),  # evaluated twice in an epoch (every N iterations, or a Ctrl-C)
        (GAN_CONFIG, [1, 2, 3], "iteration"),  # an iteration-based run
    ],
)
def test_quality_is_drawn_against_the_epoch_only_for_one_evaluation_per_epoch(
    tmp_path, config, evaluated_epochs, x_label
):
    records = [{"iteration": 10 * n, "epoch": epoch, "val_rmse": 1 / n} for n, epoch in enumerate(evaluated_epochs, 1)]
    figure = quality_figure([load_run(write_run(tmp_path / "R", records, config))])

    assert figure.axes[-1].get_xlabel() == x_label


def test_values_over_several_decades_get_a_log_scale(tmp_path):
    records = [{"iteration": n, "loss": 10.0**-n, "avg_loss": 10.0**-n} for n in range(1, 6)]
    records += [{"iteration": 5, "epoch": 1, "val_accuracy": 0.5}]
    run = load_run(write_run(tmp_path / "R", records))

    assert losses_figure([run]).axes[0].get_yscale() == "log"
    assert quality_figure([run]).axes[0].get_yscale() == "linear"


def test_nothing_logged_yet_writes_nothing_and_makes_no_folder(tmp_path):
    empty = write_run(tmp_path / "empty", [])
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "metrics.jsonl").write_text('{"resumed_from": 3}\n{"iteration": 1, "lo')

    assert write_run_plots(empty) == [] and write_run_plots(tmp_path / "torn") == []
    assert write_run_plots(tmp_path / "no run here") == []
    assert not (empty / "plots").exists() and not (tmp_path / "torn" / "plots").exists()


def test_a_run_with_a_loss_only_writes_the_losses(tmp_path):
    run = write_run(tmp_path / "R", [{"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 0.5}], {})

    assert write_run_plots(run) == [run / "plots" / "losses.png"]


def test_the_command_prints_the_files_it_wrote_into_the_run_directory(tmp_path, capsys):
    run = gan_run(tmp_path / "R")

    assert main([str(run)]) == 0

    names = ("losses.png", "quality.png", "throughput.png")
    assert capsys.readouterr().out.splitlines() == [str(run / "plots" / name) for name in names]


def test_the_command_overlays_several_runs_into_out(tmp_path, capsys):
    runs = [str(gan_run(tmp_path / name)) for name in ("a", "b")]

    assert main([*runs, "--out", str(tmp_path / "compare")]) == 0

    assert len(capsys.readouterr().out.splitlines()) == 3 and (tmp_path / "compare" / "losses.png").exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda tmp: [tmp / "missing"], "missing: no such directory"),
        (lambda tmp: [tmp], "holds no metrics.jsonl: give a run directory or a sweep directory (trial_*/)"),
        (lambda tmp: [write_run(tmp / "E", [])], "nothing to plot yet: no numbers logged in the metrics.jsonl of"),
        (lambda tmp: [gan_run(tmp / "a"), gan_run(tmp / "b")], "2 directories: give --out DIR for the plots"),
    ],
    ids=["missing directory", "no metrics", "nothing logged", "several without --out"],
)
def test_the_command_refuses_in_one_line(tmp_path, setup, message):
    paths = setup(tmp_path)

    with pytest.raises(UserError, match=r"^[^\n]*$") as refused:
        main([str(path) for path in paths])

    assert message in str(refused.value)
    assert not any(tmp_path.rglob("plots"))


def test_the_launcher_says_a_mistake_in_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(REPO / "scripts" / "plot.py"), str(tmp_path / "missing")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"plot.py: error: {tmp_path / 'missing'}: no such directory"]
