"""The launcher flow every task shares: flags -> settings (or a checkpoint's settings) -> train -> exit code.

    launch(AtariGanSettings, train, prog="atari_gan.py", description=__doc__)

``train(settings, resume)`` receives the checkpoint as a ``ResumePoint`` when ``--resume`` was given (else None)
and returns an object with an ``exit_code``. Settings of a resumed run are the checkpoint's, with the flags given on
top; a flag that would change what the checkpoint holds (sizes, games, learning rate, seed) is refused.

A launcher with sub-commands (``image_gan.py train|generate``) hands each to ``launch`` or ``launch_tool`` through
``dispatch``.
"""

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.checkpoint_files import ResumePoint, find_checkpoint
from runner.distributed import run_ranks
from runner.errors import EXIT_USER_ERROR, exit_cleanly
from runner.rundir import default_output_dir
from runner.settings import config_text, from_saved, make_settings, parse_command, recipe_defaults


def task_name(prog: str) -> str:
    """The task a launcher runs, named as its run directories are: its script's name (``image_gan.py train`` ->
    ``image_gan``), or the word after the program that starts it (``<program> image_gan train`` -> ``image_gan``)."""
    words = prog.split()
    return Path(words[0] if words[0].endswith(".py") or len(words) == 1 else words[1]).stem


def resolve_settings(settings_cls: type, explicit: dict[str, Any], task: str) -> tuple[Any, ResumePoint | None]:
    if not explicit.get("resume"):
        output_dir = explicit.get("output_dir") or default_output_dir(task)
        # A task may layer book settings (its chosen model's recipe) under the flags the user gave.
        recipe = recipe_defaults(settings_cls, explicit)
        return make_settings(settings_cls, {**recipe, **explicit, "output_dir": output_dir}), None
    resume = find_checkpoint(explicit["resume"])
    output_dir = explicit.get("output_dir") or str(resume.run_dir)
    settings = from_saved(
        settings_cls, resume.settings, {**explicit, "output_dir": output_dir}, source=str(resume.path)
    )
    return settings, resume


def resolve_printed(settings_cls: type, explicit: dict[str, Any]) -> Any:
    """The settings a launch would run with, for ``--print-config``: nothing is created, and an output directory the
    user did not name stays empty (each run makes its own)."""
    if explicit.get("resume"):
        return resolve_settings(settings_cls, explicit, task="")[0]
    return make_settings(settings_cls, {**recipe_defaults(settings_cls, explicit), **explicit})


def launch(
    settings_cls: type,
    train: Callable[[Any, ResumePoint | None], Any],
    prog: str,
    description: str,
    argv: Sequence[str] | None = None,
) -> None:
    task = task_name(prog)

    def main() -> int:
        command = parse_command(settings_cls, argv, prog, description)
        if command.print_config:
            print(config_text(resolve_printed(settings_cls, command.explicit)), end="")
            return 0
        settings, resume = resolve_settings(settings_cls, command.explicit, task)
        if settings.distributed:  # one process, N spawned ones, or one of torchrun's
            return run_ranks(train, settings, resume, prog)
        return train(settings, resume).exit_code

    exit_cleanly(main, prog)


def launch_tool(
    settings_cls: type, run: Callable[[Any], Any], prog: str, description: str, argv: Sequence[str] | None = None
) -> None:
    """A command without run directory or resume (e.g. ``generate``): flags -> settings -> ``run(settings)``."""

    def main() -> int:
        command = parse_command(settings_cls, argv, prog, description)
        settings = make_settings(settings_cls, command.explicit)
        if command.print_config:
            print(config_text(settings), end="")
            return 0
        return run(settings).exit_code

    exit_cleanly(main, prog)


def dispatch(
    commands: Mapping[str, Callable[[list[str]], None]],
    prog: str,
    description: str,
    argv: Sequence[str] | None = None,
) -> None:
    """``prog COMMAND [flags]``: hand the flags to the command's launcher (``commands[name](flags)``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {prog} {{{','.join(commands)}}} [flags]  ({prog} COMMAND --help for its flags)\n")
        print(description)
        sys.exit(0)
    if not argv or argv[0] not in commands:
        given = f"unknown command {argv[0]!r}" if argv else "a command is needed"
        print(f"{prog}: error: {given}; choose one of: {', '.join(commands)} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    commands[argv[0]](argv[1:])
