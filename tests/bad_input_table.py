"""Every user-facing flag of every launcher, given a value it refuses, and the one line each answers with.

The cases are derived from the settings dataclasses (each field's own check picks a value it refuses; a number flag
also gets a word), plus hand-written ones for what only the launch can tell (a missing folder, a device this machine
lacks). ``docs/bad-input.md`` is this table; ``tests/test_bad_input_table.py`` holds the two equal and every flag
covered. After changing a message or a flag, rewrite the page with

    python tests/bad_input_table.py --write

Each case runs the real script in-process (``runpy``, as ``python scripts/<name>.py`` would), in an empty folder,
so relative paths in the cases and messages are the same everywhere.
"""

import contextlib
import dataclasses
import io
import os
import runpy
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-input.md"

# A value each kind of field refuses whatever its check (argparse's own type conversion).
NOT_A_NUMBER = "x"
# Values the field's check may refuse, tried in order: the first it refuses goes in the table.
CANDIDATES: dict[Any, list[Any]] = {int: [0, -1, 1], float: [0.0, -1.0, 1.5], str: ["bogus", ""]}


@dataclasses.dataclass(frozen=True)
class Case:
    script: str  # e.g. "atari_gan.py" or "image_gan.py train"
    args: tuple[str, ...]
    flag: str  # the flag this case shows being refused

    @property
    def command(self) -> str:
        return " ".join([self.script, *self.args])


def launchers() -> dict[str, type]:
    """The settings dataclass of every command whose flags are generated from one."""
    from tasks.atari_gan import AtariGanSettings
    from tasks.atari_gan import GenerateSettings as AtariGenerateSettings
    from tasks.autoencode import AutoencodeSettings
    from tasks.char_rnn import CharRnnSettings
    from tasks.image_gan import GenerateSettings, ImageGanSettings
    from tasks.supervised import ClassifySettings, RegressSettings

    return {
        "atari_gan.py": AtariGanSettings,
        "atari_gan.py generate": AtariGenerateSettings,
        "image_gan.py train": ImageGanSettings,
        "image_gan.py generate": GenerateSettings,
        "classify.py": ClassifySettings,
        "regress.py": RegressSettings,
        "autoencode.py": AutoencodeSettings,
        "char_rnn.py train": CharRnnSettings,
    }


# What a field's check cannot say: values refused only when the run starts, or strings with no check.
SEMANTIC: dict[str, list[tuple[str, ...]]] = {
    "dev": [("--dev", "tpu"), ("--dev", "cuda:99")],  # (a CUDA machine answers cuda:99 otherwise: see the test)
    "resume": [("--resume", "no/such/run")],
    "output_dir": [("--output-dir", "/proc/no-such-dir/run")],
    "checkpoint": [("--checkpoint", "no/such/run")],
    "out": [("--checkpoint", "no/such/run", "--out", "sheet.jpg")],
    "data_dir": [("--dataset", "mnist", "--data-dir", "no/such/folder")],
    "dataset": [("--dataset", "imagenet")],
    "model": [("--model", "transformer")],
    "text": [("--text", "no/such/book.txt")],
    "games": [("--games", "Pongg")],
    "cudnn_benchmark": [("--cudnn-benchmark=yes",), ("--deterministic", "--cudnn-benchmark")],
}
SEMANTIC_BY_COMMAND: dict[tuple[str, str], list[tuple[str, ...]]] = {
    ("image_gan.py train", "data_dir"): [("--data-dir", "no/such/folder")],
    ("autoencode.py", "data_dir"): [("--dataset", "mnist", "--data-dir", "no/such/folder")],
    ("regress.py", "data_dir"): [("--dataset", "california", "--data-dir", "no/such/folder")],
    ("regress.py", "model"): [("--model", "lenet")],
    ("classify.py", "model"): [("--model", "linear")],
    ("regress.py", "dataset"): [("--dataset", "digits")],
    ("image_gan.py generate", "out"): [("--checkpoint", "no/such/run", "--out", "sheet.jpg")],
    ("atari_gan.py generate", "out"): [("--checkpoint", "no/such/run", "--out", "sheet.jpg")],
}
# Flags that need company to be checked (image_gan train needs a folder before anything else).
REQUIRED_COMPANY = {
    "image_gan.py train": ("--data-dir", "faces", "--batch-size", "4"),  # four images, made by prepare()
    "image_gan.py generate": ("--checkpoint", "no/such/run"),
    "atari_gan.py generate": ("--checkpoint", "no/such/run"),
}
# Commands with their own hand-written flags (not a settings dataclass).
OTHER_CASES = [
    Case("sweep.py", ("atari_gan", "--n-trials", "0"), "--n-trials"),
    Case("sweep.py", ("atari_gan", "--n-workers", "x"), "--n-workers"),
    Case("sweep.py", ("atari_gan", "--storage", "nosuchdb://x"), "--storage"),
    Case("sweep.py", ("atari_gan", "--storage", "plainfile.db"), "--storage"),
    Case("sweep.py", ("atari_gan", "--seed", "x"), "--seed"),
    Case("sweep.py", ("atari_gan", "--lr", "0.1"), "--lr"),
    Case("sweep.py", ("atari_gan", "--resume", "runs/x"), "--resume"),
    Case("sweep.py", ("atari_gan", "--eval-every", "0"), "--eval-every"),
    Case("sweep.py", ("classify", "--nproc-per-node", "2"), "--nproc-per-node"),
    Case("sweep.py", ("classify", "--model", "small_cnn"), "--model"),
    Case("sweep.py", ("pong_gan",), "task"),
    Case("sweep.py", ("atari_gan", "--output-dir", "/proc/no-such-dir/sweep"), "--output-dir"),
    Case("sweep.py", ("atari_gan", "--space", "no/such/space.yaml"), "--space"),
    Case("predict.py", ("no/such/run", "x.png"), "model"),
    Case("predict.py", ("no/such/run", "--top-k", "x"), "--top-k"),
    Case("predict.py", ("no/such/run", "x.png", "--top-k", "0"), "--top-k"),
    Case("predict.py", ("no/such/run", "x.png", "--weights", "w.pt"), "--weights"),
    Case("predict.py", ("--pretrained", "resnet1O1", "x.png"), "--pretrained"),
    Case("predict.py", ("--pretrained", "resnet18"), "--pretrained"),
    Case("predict.py", ("--pretrained", "resnet18", "faces/face0.png", "--weights", "no/such.pt"), "--weights"),
    Case("char_rnn.py generate", ("--checkpoint", "no/such/run"), "--checkpoint"),
    Case("char_rnn.py generate", ("--checkpoint", "no/such/run", "--length", "x"), "--length"),
    Case("char_rnn.py generate", ("--checkpoint", "no/such/run", "--temperature", "x"), "--temperature"),
    Case("char_rnn.py generate", ("--checkpoint", "no/such/run", "--top-k", "x"), "--top-k"),
    Case("char_rnn.py generate", ("--checkpoint", "no/such/run", "--seed", "x"), "--seed"),
    Case("char_rnn.py", ("sample",), "command"),
    Case("image_gan.py", (), "command"),
    Case("atari_fid.py", ("--image-size", "12"), "--image-size"),
    Case("atari_fid.py", ("--image-size", "x"), "--image-size"),
    Case("atari_gan.py", ("--config", "no/such.yaml"), "--config"),
    Case("classify.py", ("--config", "no/such.yaml"), "--config"),
    Case("char_rnn.py generate", ("--config", "no/such.yaml"), "--config"),
    Case("plot.py", ("no/such/run",), "no/such/run"),
    Case("plot.py", ("faces",), "faces"),
    Case("compare.py", ("no/such/run",), "no/such/run"),
    Case("compare.py", ("faces",), "faces"),
]


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def refused_value(field: dataclasses.Field, kind: Any) -> str | None:
    """A value of the field's type that its check refuses, as typed on a command line (None: the check takes all)."""
    check = field.metadata.get("check")
    if check is None:
        return None
    item = typing.get_args(kind)[0] if typing.get_origin(kind) is tuple else kind
    for candidate in CANDIDATES.get(item, []):
        value = (candidate,) if typing.get_origin(kind) is tuple else candidate
        try:
            check(value)
        except ValueError:
            return str(candidate)
    return None


def generated_cases() -> list[Case]:
    cases = []
    for command, settings_cls in launchers().items():
        company = REQUIRED_COMPANY.get(command, ())
        kinds = typing.get_type_hints(settings_cls)
        for field in dataclasses.fields(settings_cls):
            flag, kind = flag_of(field.name), kinds[field.name]
            semantic = SEMANTIC_BY_COMMAND.get((command, field.name), SEMANTIC.get(field.name))
            if semantic:
                for args in semantic:
                    needed = () if field.name == "resume" or set(company) & set(args) else company
                    cases.append(Case(command, (*needed, *args), flag))
                continue
            if kind is bool:
                cases.append(Case(command, (*company, f"{flag}=yes"), flag))
                continue
            if kind in (int, float):
                cases.append(Case(command, (*company, flag, NOT_A_NUMBER), flag))
            refused = refused_value(field, kinds[field.name])
            if refused is not None:
                cases.append(Case(command, (*company, flag, refused), flag))
    return cases + OTHER_CASES


def all_cases() -> list[Case]:
    return generated_cases()


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def prepare(folder: Path) -> None:
    """What the cases may use in their empty folder: ``faces/``, four small images."""
    from PIL import Image

    (folder / "faces").mkdir()
    for index in range(4):
        Image.new("RGB", (12, 12), (60 * index, 90, 200)).save(folder / "faces" / f"face{index}.png")


def run_case(case: Case, folder: Path) -> tuple[int, str]:
    """Exit code and stderr of the case's command, run in-process in ``folder``."""
    script, *command = case.script.split()
    argv = [str(REPO / "scripts" / script), *command, *case.args]
    stderr, stdout = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = argv
    code = 0
    try:
        with inside(folder), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    finally:
        sys.argv = saved_argv
    return code, stderr.getvalue()


def error_lines(stderr: str) -> list[str]:
    """The lines that say what went wrong (a launcher may say what it found before it refuses)."""
    return [line for line in stderr.splitlines() if ": error: " in line]


def table_row(case: Case, code: int, stderr: str) -> str:
    import torch

    message = " / ".join(error_lines(stderr)).replace("|", "\\|")
    message = message.replace(f"torch {torch.__version__}", "torch <version>")  # the page holds for any build
    return f"| `{case.flag}` | `{case.command}` | {code} | `{message}` |"


def outcomes(folder: Path) -> Iterator[tuple[Case, int, str, list[str]]]:
    """Each case's exit code, stderr and the names in ``folder`` after it ran (``prepare`` it first)."""
    for case in all_cases():
        code, stderr = run_case(case, folder)
        yield case, code, stderr, sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def render(rows: list[str]) -> str:
    header = [
        "# Bad input: every flag, a value it refuses, and the one line it answers",
        "",
        "Each command below ends at once with the line shown on stderr and the exit code shown (2: a usage mistake;",
        "1: the machine or the files refuse), with no traceback and nothing written. The page is generated and",
        "checked by the test suite (`tests/bad_input_table.py`, `tests/test_bad_input_table.py`): it is what the",
        "launchers print today. Commands are run from an empty folder; `python scripts/` is left out.",
        "",
        "| flag | command | exit | message |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join(header + rows) + "\n"


def documented_rows() -> list[str]:
    return [line for line in DOC.read_text().splitlines() if line.startswith("| `")]


def main() -> None:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        prepare(Path(folder))
        for case, code, stderr, _ in outcomes(Path(folder)):
            rows.append(table_row(case, code, stderr))
            print(rows[-1])
    if "--write" in sys.argv:
        DOC.write_text(render(rows))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    sys.path[:0] = [str(REPO)]
    main()
