"""ignite-book: one installed command for every launcher, the same launchers scripts/ start."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from tasks.commands import COMMAND_ENV, TASKS, command_line, main

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = Path(sys.executable).parent / "ignite-book"


@pytest.fixture(autouse=True)
def environment_restored(monkeypatch):
    """``main`` marks the environment for the processes a run starts; other tests' processes must not inherit it."""
    monkeypatch.setenv(COMMAND_ENV, "")  # recorded as it was, and put back so after the test


def test_every_launcher_in_scripts_is_a_task_of_the_command_and_back():
    assert sorted(path.stem for path in (ROOT / "scripts").glob("*.py")) == sorted(TASKS)


def test_help_lists_every_task_on_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for name, task in TASKS.items():
        assert [line for line in out.splitlines() if line.split()[:1] == [name]] == [f"  {name:<13}  {task.summary}"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_tasks_help_is_its_launchers_under_the_commands_name(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert f"ignite-book {name}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "ignite-book: error: unknown task 'nope'; choose one of: atari_gan, "),
        (["atari_gan", "--filters", "0"], "ignite-book atari_gan: error: --filters 0: must be positive"),
        (["image_gan", "paint"], "ignite-book image_gan: error: unknown command 'paint'"),
    ],
)
def test_a_mistake_is_one_line_naming_the_command(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(message) and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_print_config_is_the_same_as_the_scripts(capsys):
    with pytest.raises(SystemExit):
        main(["atari_gan", "--print-config", "--max-iters", "7"])
    installed = capsys.readouterr().out
    script = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "atari_gan.py"), "--print-config", "--max-iters", "7"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert installed == script and yaml.safe_load(installed)["max_iters"] == 7


@pytest.mark.skipif(not INSTALLED.exists(), reason="the package is not installed (pip install -e .)")
def test_the_installed_command_trains_into_the_tasks_run_directory_and_its_hints_name_it(tmp_path):
    ran = subprocess.run(
        [str(INSTALLED), "atari_gan", *TINY, "--max-iters", "2", "--eval-every", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("atari_gan-") and (run / "checkpoints" / "checkpoint_2.pt").exists()
    assert f"continue: ignite-book atari_gan --resume runs/{run.name} --max-iters N" in ran.stdout + ran.stderr


def test_under_torchrun_the_hints_ask_for_the_same_torchrun_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert command_line("atari_gan.py") == "torchrun [the same flags] scripts/atari_gan.py"


def test_the_one_table_says_what_each_task_trains_with_and_everything_else_reads_it():
    from tasks.commands import settings_class, task_class, task_of_settings, trained_tasks, training_launcher
    from tasks.standard_run import Task
    from tasks.sweep import sweep_tasks
    from tasks.verify_resume import TASKS as CHECKED

    trained = trained_tasks()
    assert set(trained) == {"atari_gan", "classify", "regress", "autoencode", "char_rnn", "image_gan"}
    for name in trained:
        assert issubclass(task_class(name), Task) and task_of_settings(settings_class(name)) == name
        assert CHECKED[name] == (tuple(training_launcher(name).split()), task_class(name))
    assert training_launcher("char_rnn") == "char_rnn.py train" and training_launcher("atari_gan") == "atari_gan.py"
    assert all(sweep.settings_cls is settings_class(name) for name, sweep in sweep_tasks().items())
    settings = settings_class("image_gan")(data_dir="faces")
    assert task_class("image_gan")(settings).launcher() == "image_gan.py train"  # what its continue hint names
