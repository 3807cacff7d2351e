"""Files that a killed process or a full disk never leaves half-written, one clear line when a write fails, and
torch files checked before they are trusted.

    write_atomically(run.path / "config.json", text.encode())
    save_atomically({"model": model.state_dict()}, run.path / "export" / "model.pt")   # torch.save, atomically
    verify_torch_file(run.path / "export" / "model.pt")   # raises DamagedFile if its bytes changed since
    spec = load_torch_file(run.path / "export" / "model.pt", "exported model")   # checked, then read safely

The data goes to ``<name>.tmp`` beside the target, is flushed to the disk (fsync) and renamed over the target: at any
instant the target is either the previous file or the new one, whole. A write that fails (a full disk, a quota, a
read-only folder) removes its temporary file and raises ``CannotWrite`` naming the file and the reason, which the
launchers turn into one line on stderr. The caller's folder must exist.
"""

import io
import os
import sys
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from runner.errors import CannotWrite, UserError

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


class DamagedFile(UserError):
    """A file whose bytes changed after they were written (a bad disk or memory, a faulty network file system, a copy
    gone wrong): handled like a torn file, never loaded."""


_warned_unchecked: set[Path] = set()


def verify_torch_file(path: str | Path) -> None:
    """Check every entry of a torch file (``torch.save``, TorchScript) against the CRC-32 its writer recorded.

    ``torch.load`` does not check them: a file whose bytes changed but whose size did not would load without a word
    and a run would carry on from the changed state. The check reads the file once more: about as long as the load
    itself (17 ms for the chapter's 76 MB checkpoint, docs/reliability.md); writing costs nothing more, torch records
    the CRC-32s anyway. A file that is no zip archive is left to ``torch.load`` to judge; one written with torch's
    CRC-32s turned off (``compute_crc32=False``) is read unchecked, with a warning once per file."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if not any(entry.CRC for entry in entries if entry.file_size):
                warn_unchecked(path)
                return
            damaged = archive.testzip()
    except zipfile.BadZipFile:
        return  # no zip archive (torch's legacy format, a foreign file): torch.load says what it is
    except (zlib.error, EOFError, ValueError, NotImplementedError, OSError) as error:
        raise DamagedFile(f"{path} is damaged ({type(error).__name__}: its entries cannot be read back)") from None
    if damaged is not None:
        raise DamagedFile(f"{path} is damaged: the bytes of its entry {damaged} changed after it was written")


def read_own_torch_file(path: str | Path) -> Any:
    """A torch file this project wrote for itself (a cache, a run's companion file), checked and read safely. Whatever
    is wrong with it is one ``DamagedFile`` naming the path and the reason: truncated or no zip archive (torch has
    written zip archives since 1.6), a byte changed since it was written, or contents ``torch.load`` cannot read."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise DamagedFile(f"{path} is damaged (truncated, or not a torch file)")
    try:
        verify_torch_file(path)
    except DamagedFile:
        raise DamagedFile(f"{path} is damaged (its bytes changed after it was written)") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a parser of damaged bytes fails in many ways, all one fault
        raise DamagedFile(f"{path} is damaged ({type(error).__name__}: torch cannot read it)") from None


def load_torch_file(path: str | Path, what: str, shown: str | None = None, hint: str = "") -> Any:
    """A torch file checked (``verify_torch_file``) and read safely (``weights_only``, onto the CPU). A file that
    cannot be read is one ``UserError``: ``<shown or path>: not a readable <what> (<error type>)<hint>``."""
    verify_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a parser of untrusted bytes fails in many ways, all one mistake
        raise UserError(f"{shown or path}: not a readable {what} ({type(error).__name__}){hint}") from None


def warn_unchecked(path: Path) -> None:
    if path not in _warned_unchecked:
        _warned_unchecked.add(path)
        print(f"warning: {path} was written without checksums: read unchecked", file=sys.stderr)
