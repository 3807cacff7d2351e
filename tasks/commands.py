"""``ignite-book TASK [COMMAND] [flags]``: every launcher under one installed command (setup.cfg's console script).

    ignite-book --help                                  # the tasks, one line each
    ignite-book atari_gan --dev cuda                    # = python scripts/atari_gan.py --dev cuda
    ignite-book image_gan generate --checkpoint runs/image_gan-<time>

The table below is the one list of tasks: ``scripts/<task>.py`` hands its command line to ``run_task`` too, so a
task behaves the same whichever way it is started, and what trains (``Training``) is read from it by
``verify_resume``, the sweeps, ``compare`` and the hints a run prints. A task's module is imported only when that
task runs.
"""

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.cli import launch, launch_tool
from runner.distributed import under_torchrun
from runner.errors import EXIT_USER_ERROR, exit_cleanly

Runner = Callable[[list[str], str, str], None]  # (flags, prog, description): runs the launcher and exits
PROGRAM = "ignite-book"  # the installed command (setup.cfg)
COMMAND_ENV = "IGNITE_BOOK_COMMAND"  # set by it, inherited by the processes a run starts: hints name it


def command_line(script: str) -> str:
    """How the user starts a launcher, for the hints a run prints: ``char_rnn.py train`` -> ``python
    scripts/char_rnn.py train``, or ``ignite-book char_rnn train`` under the installed command. Under torchrun the
    same torchrun flags are needed again (a resume on another topology is refused), which this process cannot see."""
    if under_torchrun():
        return f"torchrun [the same flags] scripts/{script}"
    if os.environ.get(COMMAND_ENV) == PROGRAM:
        first, *rest = script.split()
        return " ".join([PROGRAM, Path(first).stem, *rest])
    return f"python scripts/{script}"


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _training(training: "Training") -> Runner:
    """A training launcher: flags -> settings -> the task's ``train`` (``runner.cli.launch``: run directory,
    resume)."""

    def run(argv: list[str], prog: str, description: str) -> None:
        launch(_load(training.settings), _load(training.task).train, prog, description, argv)

    return run


def _tool(settings: str, run: str) -> Runner:
    """A command without run directory (``runner.cli.launch_tool``)."""
    return lambda argv, prog, description: launch_tool(_load(settings), _load(run), prog, description, argv)


def _own_main(target: str) -> Runner:
    """A launcher with sub-commands or flags of its own: ``main(argv, prog, description)``."""
    return lambda argv, prog, description: _load(target)(argv, prog=prog, description=description)


def _exit_code_main(target: str) -> Runner:
    """A launcher whose ``main(argv, prog)`` returns the exit code; one-line errors as every launcher's."""
    return lambda argv, prog, description: exit_cleanly(lambda: _load(target)(argv, prog=prog), prog)


@dataclass(frozen=True)
class Training:
    """What a task that trains is made of (``module:name``): its settings dataclass and its ``Task`` class, and the
    sub-command that trains when its launcher has several (``image_gan.py train``)."""

    settings: str
    task: str
    sub_command: str = ""


@dataclass(frozen=True)
class TaskCommand:
    summary: str  # one line in ``ignite-book --help``
    run: Runner | None = None  # its launcher; None: the training launcher of ``training``
    training: Training | None = None  # a task that trains: verify_resume, sweeps, compare and hints read this

    def __post_init__(self) -> None:
        if self.run is None:
            object.__setattr__(self, "run", _training(self.training))


TASKS: dict[str, TaskCommand] = {
    "atari_gan": TaskCommand(
        "DCGAN on frames a random agent plays live in Breakout, AirRaid and Pong (Deep RL Hands-On ch. 3)",
        _own_main("tasks.atari_gan:main"),
        Training("tasks.atari_gan:AtariGanSettings", "tasks.atari_gan:AtariGan"),
    ),
    "classify": TaskCommand(
        "classifiers: digits, MNIST, Fashion-MNIST, CIFAR-10, dogs vs cats, Atari frames, an image folder",
        training=Training("tasks.supervised:ClassifySettings", "tasks.supervised:Supervised"),
    ),
    "regress": TaskCommand(
        "regressions: the book's line fit, diabetes, California housing (Wide & Deep)",
        training=Training("tasks.supervised:RegressSettings", "tasks.supervised:Supervised"),
    ),
    "predict": TaskCommand(
        "predict with an exported classifier or regression, or a pretrained torchvision model (ch. 001)",
        _exit_code_main("tasks.predict:main"),
    ),
    "autoencode": TaskCommand(
        "convolutional autoencoder: reconstructions, t-SNE of the codes, decoded random codes",
        training=Training("tasks.autoencode:AutoencodeSettings", "tasks.autoencode:Autoencode"),
    ),
    "char_rnn": TaskCommand(
        "character-level RNN: train on a text (Tang poems, Shakespeare, yours), generate from it",
        _own_main("tasks.char_rnn:main"),
        Training("tasks.char_rnn:CharRnnSettings", "tasks.char_rnn:CharRnn", "train"),
    ),
    "image_gan": TaskCommand(
        "DCGAN on a folder of images (the book's anime faces): train, generate ranked by its discriminator",
        _own_main("tasks.image_gan:main"),
        Training("tasks.image_gan:ImageGanSettings", "tasks.image_gan:ImageGan", "train"),
    ),
    "sweep": TaskCommand(
        "Optuna sweep over a task's hyperparameters, pruned, resumable by running it again",
        _exit_code_main("tasks.sweep:main"),
    ),
    "atari_fid": TaskCommand(
        "build or show the frame classifier behind the Atari GAN's quality metric (Atari-FID)",
        _tool("tasks.atari_fid:BuildSettings", "tasks.atari_fid:build"),
    ),
    "compare": TaskCommand(
        "one HTML page comparing runs or sweeps: settings that differ, outcomes, curves, frames side by side",
        _exit_code_main("tasks.compare:main"),
    ),
    "plot": TaskCommand(
        "PNG plots of losses, quality and throughput from run or sweep directories (several overlaid)",
        _exit_code_main("tasks.plot:main"),
    ),
    "verify_resume": TaskCommand(
        "check exact resume on this machine: a task run straight through, and killed and resumed",
        _own_main("tasks.verify_resume:main"),
    ),
}


def run_task(name: str, argv: Sequence[str], prog: str = "", description: str = "") -> None:
    """Run task ``name``'s launcher on ``argv`` under the name ``prog`` (default: its script's, ``<name>.py``); it
    exits with the launcher's code."""
    task = TASKS[name]
    task.run(list(argv), prog or f"{name}.py", description or task.summary)


def trained_tasks() -> dict[str, Training]:
    """The tasks that train, by name, in the table's order."""
    return {name: command.training for name, command in TASKS.items() if command.training is not None}


def training_launcher(name: str) -> str:
    """How a task's training is started, as the hints name it: ``atari_gan.py``, ``char_rnn.py train``."""
    sub_command = TASKS[name].training.sub_command
    return f"{name}.py {sub_command}" if sub_command else f"{name}.py"


def settings_class(name: str) -> type:
    return _load(TASKS[name].training.settings)


def task_class(name: str) -> type:
    return _load(TASKS[name].training.task)


def task_of_settings(settings_cls: type) -> str:
    """The name of the task whose settings dataclass ``settings_cls`` is (a subclass of it: a test's own)."""
    for name, training in trained_tasks().items():
        if issubclass(settings_cls, _load(training.settings)):
            return name
    raise KeyError(f"{settings_cls.__name__} is no task's settings")


def usage() -> str:
    width = max(map(len, TASKS))
    lines = [f"usage: {PROGRAM} TASK [COMMAND] [flags]   ({PROGRAM} TASK --help: its flags)", "", "tasks:"]
    lines += [f"  {name:<{width}}  {task.summary}" for name, task in TASKS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``ignite-book TASK [COMMAND] [flags]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        sys.exit(0)
    if not argv:
        print(usage(), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    if argv[0] not in TASKS:
        print(f"{PROGRAM}: error: unknown task {argv[0]!r}; choose one of: {', '.join(TASKS)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    # The hints a run prints (continue, retrain, sample) and the processes it starts say ignite-book, not scripts/.
    os.environ[COMMAND_ENV] = PROGRAM
    run_task(argv[0], argv[1:], prog=f"{PROGRAM} {argv[0]}")


if __name__ == "__main__":
    main()
