"""Finding and reading a run's checkpoint files safely: the point a run resumes from.

    resume = find_checkpoint("runs/gan")          # the newest readable checkpoint_<iteration>.pt of a run
    resume.path, resume.iteration, resume.run_dir  # what it is and where its run lives
    resume.state["generator"]                      # what it holds (tensors, numbers, strings, lists, dicts)

A checkpoint is read with ``torch.load(weights_only=True)`` onto the CPU: loading one cannot run code. Its bytes are
checked first against the CRC-32s torch recorded when it was written (``runner.files.verify_torch_file``). A file that
cannot be read (torn by a full disk, its bytes changed since, a foreign file) is a ``UserError`` naming it; when a run
directory's newest file is such a file, older ones are tried, with a warning. ``handlers.checkpoint`` writes them.
"""

import pickle
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch

from runner.errors import UserError
from runner.files import verify_torch_file
from runner.rundir import CHECKPOINTS

CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")


class ResumePoint(NamedTuple):
    """A checkpoint file and what it holds."""

    path: Path
    state: dict[str, Any]

    @property
    def iteration(self) -> int:
        return int(self.state["trainer"]["iteration"])

    @property
    def epoch_length(self) -> int:
        return int(self.state["trainer"]["epoch_length"])

    @property
    def epoch(self) -> int:
        """Whole epochs trained (an epoch-based task checkpoints between epochs)."""
        return self.iteration // self.epoch_length

    @property
    def settings(self) -> dict[str, Any]:
        return self.state["settings"]

    @property
    def run_dir(self) -> Path:
        return run_dir_of_checkpoint(self.path)

    def continues_in(self, run_dir: Path) -> bool:
        """Whether a run resumed from here into ``run_dir`` continues its own run (not a branch into a new folder)."""
        return Path(run_dir).resolve() == self.run_dir.resolve()


def checkpoint_files(directory: Path) -> list[Path]:
    """``checkpoint_<iteration>.pt`` files in ``directory``, oldest iteration first."""
    if not directory.is_dir():
        return []
    found = [(int(match[1]), path) for path in directory.iterdir() if (match := CHECKPOINT_NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``, onto the CPU) after checking its bytes are the ones written;
    unreadable or damaged files raise ``UserError``."""
    verify_torch_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message here advises weights_only=False: exactly what must never be done with an unknown file.
        raise UserError(
            f"{path} is not a readable checkpoint (not a torch file, or it holds Python objects a safe load refuses)"
        ) from None
    except Exception as error:  # noqa: BLE001
        # A parser of untrusted bytes: a torn file raises whatever the byte it stops at leads to (IndexError,
        # struct.error, RuntimeError, EOFError...). Every one of them means "not a readable checkpoint".
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: {reason[:160]})") from None
    if not isinstance(checkpoint, dict) or "settings" not in checkpoint or "trainer" not in checkpoint:
        raise UserError(f"{path} is not a checkpoint of this runner")
    return checkpoint


def find_checkpoint(path: str | Path, flag: str = "--resume") -> ResumePoint:
    """The checkpoint to resume from: ``path`` itself, or the newest readable one of a run directory."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag} {path}: no such file or directory")
    if path.is_file():
        return ResumePoint(path, load_checkpoint(path))
    directory = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    files = checkpoint_files(directory)
    if not files:
        raise UserError(f"{flag} {path}: no checkpoint_<iteration>.pt files in {directory}")
    for candidate in reversed(files):
        try:
            return ResumePoint(candidate, load_checkpoint(candidate))
        except UserError as error:
            print(f"warning: skipping {error}", file=sys.stderr)
    raise UserError(f"{flag} {path}: none of the {len(files)} checkpoints in {directory} is readable")


def run_dir_of_checkpoint(path: Path) -> Path:
    """The run directory a checkpoint file or run directory belongs to."""
    if path.is_dir():
        return path.parent if path.name == CHECKPOINTS else path
    return path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
