"""--config FILE and --print-config: a file's settings under the flags, checked as flags are, printed as a file."""

import json
import os

import pytest
import yaml

from conftest import TINY
from runner.cli import launch, launch_tool
from runner.errors import UserError
from runner.settings import make_settings, parse_command, read_config
from tasks.atari_gan import AtariGanSettings, train
from tasks.supervised import ClassifySettings


def launched(capsys, *argv: str, settings_cls=AtariGanSettings) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        launch(settings_cls, train, prog="atari_gan.py", description="", argv=list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    config = tmp_path / "a.yaml"
    config.write_text("lr: 1e-3\nbatch_size: 8\ngames: [Pong, Breakout]\n")
    command = parse_command(AtariGanSettings, ["--config", str(config), "--batch-size", "4"], prog="x")
    settings = make_settings(AtariGanSettings, command.explicit)
    assert (settings.lr, settings.batch_size, settings.games) == (1e-3, 4, ("Pong", "Breakout"))
    assert settings.filters == AtariGanSettings().filters


def test_the_file_outranks_the_models_book_recipe(tmp_path, capsys):
    from tasks.supervised import train as train_supervised

    config = tmp_path / "c.yaml"
    config.write_text("model: fashion_mlp\nlr: 0.5\n")
    with pytest.raises(SystemExit):
        launch(ClassifySettings, train_supervised, "classify.py", "", ["--config", str(config), "--print-config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["model"], printed["lr"]) == ("fashion_mlp", 0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_iterz: 5\n", "a.yaml: unknown setting(s): max_iterz"),
        ("filters: -1\n", "a.yaml: --filters -1: must be positive"),
        ("filters: four\n", "a.yaml: --filters must be int, got 'four'"),
        ("[1, 2]\n", "must map setting names to values"),
        ("lr: [\n", "not valid YAML"),
    ],
)
def test_a_mistake_in_the_file_names_the_file_and_the_key(tmp_path, text, message):
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_config(AtariGanSettings, str(tmp_path / "a.yaml"))


def test_print_config_creates_nothing_and_its_output_is_a_config_that_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = launched(capsys, "--print-config", "--max-iters", "3")
    assert code == 0 and os.listdir(tmp_path) == []
    printed = yaml.safe_load(out)
    assert printed["max_iters"] == 3 and printed["output_dir"] == ""  # each run still makes its own
    (tmp_path / "a.yaml").write_text(out)
    code, _, err = launched(capsys, "--config", "a.yaml", *TINY, "--eval-every", "0", "--output-dir", "R")
    assert code == 0, err
    saved = json.loads((tmp_path / "R" / "config.json").read_text())
    assert saved["max_iters"] == 3 and saved["image_size"] == 16  # the file's value, and a flag on top


def test_a_runs_own_config_json_reruns_it_with_one_change(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = launched(capsys, *TINY, "--max-iters", "2", "--eval-every", "0", "--output-dir", "R")
    assert code == 0, err
    code, _, err = launched(capsys, "--config", "R/config.json", "--output-dir", "R2", "--seed", "5")
    assert code == 0, err
    first, second = (json.loads((tmp_path / run / "config.json").read_text()) for run in ("R", "R2"))
    assert {key for key in first if first[key] != second[key]} == {"output_dir", "seed"}


def test_a_bad_file_is_one_line_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("max_iterz: 5\n")
    code, _, err = launched(capsys, "--config", "bad.yaml", "--output-dir", "R")
    assert code == 2 and err == "atari_gan.py: error: bad.yaml: unknown setting(s): max_iterz\n"
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]


def test_a_tool_command_prints_its_settings_too(capsys):
    from tasks.atari_fid import BuildSettings, build

    with pytest.raises(SystemExit) as exit_info:
        launch_tool(BuildSettings, build, "atari_fid.py", "", ["--image-size", "32", "--print-config"])
    assert exit_info.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"image_size": 32}


def test_an_older_runs_config_with_a_retired_setting_still_reads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"max_iters": 7, "gemm_weight_grads": False}))  # saved before --kernel-plan
    assert read_config(AtariGanSettings, str(path)) == {"max_iters": 7}
    path.write_text(json.dumps({"max_iters": 7, "gemm_weight_grad": False}))
    with pytest.raises(UserError, match="unknown setting"):
        read_config(AtariGanSettings, str(path))
