"""Files that a killed process or a full disk never leaves half-written, and one clear line when a write fails.

    write_atomically(run.path / "config.json", text.encode())
    save_atomically({"model": model.state_dict()}, run.path / "export" / "model.pt")   # torch.save, atomically

The data goes to ``<name>.tmp`` beside the target, is flushed to the disk (fsync) and renamed over the target: at any
instant the target is either the previous file or the new one, whole. A write that fails (a full disk, a quota, a
read-only folder) removes its temporary file and raises ``CannotWrite`` naming the file and the reason, which the
launchers turn into one line on stderr. The caller's folder must exist.
"""

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from runner.errors import CannotWrite

TEMPORARY_SUFFIX = ".tmp"  # RunDirectory removes leftovers with this suffix when it reopens a run


def temporary_path(path: Path) -> Path:
    return path.with_name(path.name + TEMPORARY_SUFFIX)


@contextmanager
def reported_write(path: Path) -> Iterator[None]:
    """An ``OSError`` inside the block becomes ``CannotWrite`` naming ``path``."""
    try:
        yield
    except OSError as error:
        raise CannotWrite(f"cannot write {path}: {error.strerror or error}") from None


def write_atomically(path: str | Path, data: bytes | memoryview) -> None:
    path = Path(path)
    temporary = temporary_path(path)
    with reported_write(path):
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """The rename itself to disk: without it a power cut may bring back the folder as it was before."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a folder that cannot be opened for reading (some platforms): the rename stands, unsynced
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # not every file system syncs folders
    finally:
        os.close(descriptor)


def save_atomically(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically. It serialises to memory first: torch's writer, given a file that fails,
    reports a zip-format position mismatch instead of the disk's reason."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getbuffer())
