"""One typed settings dataclass per task; command-line flags are generated from it.

Each field is declared with ``setting(default, help, ...)``: its flag is ``--field-name``, its help the one-line
comment, and ``check`` validates the value at start (not when the line that uses it runs). ``resume="free"`` marks
the fields a resumed run may change (where to run, how long, how often to log); every other field must stay as the
checkpoint has it, because the saved weights, optimizer states and data stream depend on it.

    @dataclass(frozen=True)
    class MySettings:
        lr: float = setting(1e-3, "learning rate", check=positive)

    explicit = parse_flags(MySettings, ["--lr", "0.01"], prog="my_task")   # {"lr": 0.01}
    settings = make_settings(MySettings, explicit)
"""

import argparse
import contextlib
import dataclasses
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import yaml

from runner.errors import EXIT_USER_ERROR, UserError

Check = Callable[[Any], None]  # raises ValueError with a short reason


def setting(default: Any, help: str, *, check: Check | None = None, resume: str = "fixed") -> Any:
    if resume not in ("fixed", "free"):
        raise ValueError(f"resume must be 'fixed' or 'free', got {resume!r}")
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "resume": resume})


def positive(value: float) -> None:
    if not value > 0:
        raise ValueError("must be positive")


def non_negative(value: float) -> None:
    if value < 0:
        raise ValueError("must not be negative")


def one_of(*choices: str) -> Check:
    """A check that accepts only ``choices``."""

    def check(value: str) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")

    return check


def required(value: str) -> None:
    if not value:
        raise ValueError("is required")


def at_least_two(value: int) -> None:
    if value < 2:
        raise ValueError("must be at least 2")


def positive_sizes(sizes: tuple[int, ...]) -> None:
    if any(size < 1 for size in sizes):
        raise ValueError("sizes must be positive")


def in_open_unit_interval(value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError("must be in [0, 1)")


def keep_checkpoints_setting() -> Any:
    """``--keep-checkpoints``, the same rule for every task: at least 2, because Ignite's ``Checkpoint`` removes the
    oldest file before it writes the new one, and a kill in between must leave one whole checkpoint."""
    return setting(2, "checkpoints kept on disk (the newest ones)", check=at_least_two, resume="free")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a run trains: ``total`` iterations or epochs (``unit``). A run's settings declare it (``schedule``);
    the standard run, the reports and the plots read it from there, never from which fields a settings class has."""

    unit: str  # "iterations" or "epochs"
    total: int

    @property
    def per_iteration(self) -> bool:
        return self.unit == "iterations"

    @property
    def flag(self) -> str:
        """The flag that sets ``total``."""
        return "--max-iters" if self.per_iteration else "--max-epochs"

    def total_iterations(self, epoch_length: int) -> int:
        return self.total if self.per_iteration else self.total * epoch_length

    def run_arguments(self, resumed: bool) -> dict[str, Any]:
        """What ``trainer.run`` takes. A fresh iteration-based run's "epoch" is the whole run (one progress bar); a
        resumed engine keeps its checkpoint's epoch length."""
        if self.per_iteration:
            return {"max_iters": self.total, "epoch_length": None if resumed else self.total}
        return {"max_epochs": self.total}

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> "Schedule | None":
        """The schedule a run's ``config.json`` was made with (None: no training run's); the one reader of it."""
        if isinstance(config.get("max_iters"), int):
            return cls("iterations", config["max_iters"])
        if isinstance(config.get("max_epochs"), int):
            return cls("epochs", config["max_epochs"])
        return None


class SettingsHooks(Protocol):
    """What a settings class may offer beyond its fields, each with a default in ``Settings``."""

    def validate(self) -> None:
        """Checks across fields, after each field's own: raise ``ValueError`` with the reason (one line). Each class
        of the hierarchy that defines it checks its own fields: the base's run first, without ``super()``."""

    @classmethod
    def recipe_defaults(cls, explicit: Mapping[str, Any]) -> dict[str, Any]:
        """Settings layered under the user's flags on a fresh run (a model's book recipe, the GAN's --recipe)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The base of every settings dataclass: the ``SettingsHooks`` with their defaults (nothing to check, no
    recipe). ``retired`` names settings an earlier version saved that this one no longer has: a run that saved
    them still resumes (they were all ``resume="free"`` switches of how, not what, it computes)."""

    retired: ClassVar[frozenset[str]] = frozenset()

    def validate(self) -> None:
        return None

    @classmethod
    def recipe_defaults(cls, explicit: Mapping[str, Any]) -> dict[str, Any]:
        return {}


@dataclasses.dataclass(frozen=True)
class RunSettings(Settings):
    """The fields every training run has, first among its flags. A task's settings subclass it; a subclass that
    redefines a field (its help, its default) keeps the field in its place. A family of tasks declares its
    ``schedule``; ``distributed`` (a class attribute) says whether it may train on several processes
    (``--nproc-per-node``), and ``check_ranks`` what those need besides an even split of the batch."""

    distributed: ClassVar[bool] = False

    dev: str = setting("cpu", "device: cpu, cuda or cuda:N", resume="free")
    deterministic: bool = setting(
        False,
        "deterministic kernels, so that fresh runs with the same flags repeat exactly (on CUDA: slower; on CPU: the "
        "library's kernels instead of a measured plan; resumes repeat exactly either way)",
    )
    cudnn_benchmark: bool = setting(
        False,
        "let cuDNN time its algorithms at start on CUDA (faster for fixed shapes; not with --deterministic)",
        resume="free",
    )
    seed: int = setting(0, "seeds the weights, the noise and the data order", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/<task>-<date>-<time>)", resume="free")
    resume: str = setting("", "continue a run: its directory or one of its checkpoint files", resume="free")

    @property
    def schedule(self) -> Schedule:
        raise NotImplementedError(f"{type(self).__name__} declares no schedule")

    def check_ranks(self, ranks: int) -> None:
        """Raise ``UserError`` for what ``ranks`` processes cannot run (checked once, before they start)."""
        return None

    def validate(self) -> None:
        if self.deterministic and self.cudnn_benchmark:
            raise ValueError("--cudnn-benchmark picks kernels by speed, which --deterministic rules out: give one")


def positive_int(text: str) -> int:
    """An argparse ``type`` for the flags of launchers without a settings dataclass (``--n-trials``, ``--top-k``)."""
    value = int(text)
    if value < 1:
        raise ValueError
    return value


positive_int.__name__ = "positive integer"  # argparse's message: "invalid positive integer value: '0'"


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr, not the usage block plus a line."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def _field_types(settings_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(settings_cls)


def build_parser(settings_cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """Flags for every field; defaults are suppressed so the parsed namespace holds only what the user gave."""
    parser = OneLineParser(
        prog=prog,
        description=description,
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the docstring's example lines as written
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings from a YAML or JSON file, keyed by the names in a run's config.json; flags override it",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved settings as YAML (a valid --config) and exit"
    )
    types = _field_types(settings_cls)
    for field in dataclasses.fields(settings_cls):
        kind = types[field.name]
        help_text = field.metadata["help"]
        if field.default not in ("", ()):  # an empty default is explained by the help text itself
            help_text += f" (default: {_show_default(field.default)})"
        if kind is bool:
            parser.add_argument(flag_name(field.name), action=argparse.BooleanOptionalAction, help=help_text)
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            parser.add_argument(flag_name(field.name), nargs="+", type=item, metavar=field.name.upper(), help=help_text)
        else:
            parser.add_argument(flag_name(field.name), type=kind, metavar=field.name.upper(), help=help_text)
    return parser


def _show_default(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return repr(value) if value == "" else str(value)


@dataclasses.dataclass
class Command:
    """What a command line asks for: the settings it gives (a ``--config`` file's, with the flags on top), and
    whether it only asks to see them (``--print-config``)."""

    explicit: dict[str, Any]
    print_config: bool = False


def parse_command(settings_cls: type, argv: Sequence[str] | None, prog: str, description: str = "") -> Command:
    values = vars(build_parser(settings_cls, prog, description).parse_args(argv))
    config, print_config = values.pop("config", None), values.pop("print_config", False)
    flags = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    from_file = read_config(settings_cls, config) if config else {}
    return Command({**from_file, **flags}, print_config)


def parse_flags(settings_cls: type, argv: Sequence[str] | None, prog: str, description: str = "") -> dict[str, Any]:
    command = parse_command(settings_cls, argv, prog, description)
    if command.print_config:
        raise UserError(f"--print-config is not available for {prog}")
    return command.explicit


def read_config(settings_cls: type, path: str) -> dict[str, Any]:
    """A config file's settings, each checked as its flag would be; a mistake names the file and the key."""
    data = read_mapping(path, flag="--config", what="map setting names to values, as a run's config.json does")
    data = {name: value for name, value in data.items() if name not in settings_cls.retired}  # an older run's
    fields = {field.name: field for field in dataclasses.fields(settings_cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{path}: unknown setting(s): {', '.join(map(str, unknown))}")
    types = _field_types(settings_cls)
    values = {name: _from_file(value, types[name]) for name, value in data.items()}
    for name, value in values.items():
        try:
            check_setting(settings_cls, name, value)
        except UserError as error:
            raise UserError(f"{path}: {error}") from None
    return values


def read_mapping(path: str, flag: str, what: str) -> dict[str, Any]:
    """A YAML or JSON file (JSON by its ``.json`` name) holding one mapping; ``{}`` for an empty file. Any other
    content is one line naming ``flag`` and the file, and saying that it must ``what``."""
    if not Path(path).is_file():
        raise UserError(f"{flag} {path}: no such file")
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(f"{flag} {path}: {error.strerror or error}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise UserError(f"{flag} {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} ({error})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{flag} {path}: must {what}")
    return data


def check_setting(settings_cls: type, name: str, value: Any) -> None:
    """``value`` for the setting ``name``, checked as its flag's would be (type, then the field's own check)."""
    field = {field.name: field for field in dataclasses.fields(settings_cls)}[name]
    _check_type(name, value, _field_types(settings_cls)[name])
    _check_value(name, field, value)


def _from_file(value: Any, kind: Any) -> Any:
    """YAML reads 1e-4 (no dot) as a string: a float setting takes it as the number it says."""
    if kind is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return tuple(value) if isinstance(value, list) else value


def config_text(settings: Any) -> str:
    """The settings as YAML, in field order: what ``--print-config`` prints, and a valid ``--config``."""
    return yaml.safe_dump(settings_dict(settings), sort_keys=False, allow_unicode=True)


def make_settings(settings_cls: type, values: Mapping[str, Any]) -> Any:
    """Build and check a settings object; unknown names, wrong types and bad values raise ``UserError``."""
    fields = {field.name: field for field in dataclasses.fields(settings_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown setting(s): {', '.join(unknown)}")
    types = _field_types(settings_cls)
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    for name, value in values.items():
        _check_type(name, value, types[name])
    settings = settings_cls(**values)
    for name, field in fields.items():
        _check_value(name, field, getattr(settings, name))
    try:
        for validate in own_validators(settings_cls):
            validate(settings)
    except ValueError as reason:
        raise UserError(str(reason)) from None
    return settings


def own_validators(settings_cls: type) -> list[Any]:
    """The ``validate`` of each class of the hierarchy that defines one, the base's first."""
    return [klass.__dict__["validate"] for klass in reversed(settings_cls.__mro__) if "validate" in klass.__dict__]


def _check_value(name: str, field: dataclasses.Field, value: Any) -> None:
    check = field.metadata.get("check")
    if check is None:
        return
    try:
        check(value)
    except ValueError as reason:
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
        if shown == "":
            raise UserError(f"{flag_name(name)} {reason}") from None
        raise UserError(f"{flag_name(name)} {shown}: {reason}") from None


def _check_type(name: str, value: Any, kind: Any) -> None:
    if typing.get_origin(kind) is tuple:
        ok = isinstance(value, tuple | list) and all(isinstance(v, typing.get_args(kind)[0]) for v in value)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise UserError(f"{flag_name(name)} must be {getattr(kind, '__name__', kind)}, got {value!r}")


def recipe_defaults(settings_cls: type, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a task's recipe layers under the flags the user gave (its classmethod ``recipe_defaults``, e.g.
    the chosen model's book settings, or the GAN's ``--recipe``); none for a task without one."""
    return dict(settings_cls.recipe_defaults(explicit))


def settings_dict(settings: Any) -> dict[str, Any]:
    """JSON-ready copy (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def from_saved(settings_cls: type, saved: Mapping[str, Any], explicit: Mapping[str, Any], source: str) -> Any:
    """Settings of a resumed run: the checkpoint's, with the flags the user gave on top.

    A flag that changes a ``resume="fixed"`` setting is refused: the checkpoint cannot continue under it.
    """
    fields = {field.name: field for field in dataclasses.fields(settings_cls)}
    saved = {name: value for name, value in saved.items() if name not in settings_cls.retired}
    unknown = sorted(set(saved) - set(fields))
    if unknown:
        raise UserError(f"{source} was made by another task or version (unknown settings: {', '.join(unknown)})")
    for name, value in explicit.items():
        saved_value = saved.get(name, fields[name].default)
        if isinstance(saved_value, list):
            saved_value = tuple(saved_value)
        if fields[name].metadata["resume"] == "fixed" and value != saved_value:
            raise UserError(
                f"{flag_name(name)} {_show_default(value)} conflicts with {source}, made with "
                f"{flag_name(name)} {_show_default(saved_value)}; drop the flag or start a new run"
            )
    merged = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    return make_settings(settings_cls, {**merged, **explicit})
