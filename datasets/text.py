"""Character-level text for language models: a vocabulary, a held-out tail, and batches for truncated BPTT.

    corpus = load_corpus("corpus.txt")            # any UTF-8 file; "" -> the shipped corpus (SHIPPED_CORPORA)
    train, valid = split_tokens(corpus.tokens, valid_fraction=0.1, rows=32, steps=25)
    for inputs, targets in TbpttBatches(train, rows=32, steps=25):   # each (32, 25) int64; targets shifted by one
        ...

``TbpttBatches`` cuts the token stream into ``rows`` contiguous pieces, one per batch row, and walks along them
``steps`` characters at a time: row r of batch k+1 continues row r of batch k, so the LSTM state a batch ends with
is the right state to begin the next one with (chapter 002's carried ``hidden``, detached between batches).

The book's poetry data (chapter 004, ``tang.npz``: ``data``, ``word2ix``, ``ix2word``) is read as text, one poem a
line. Its two dicts are pickled object arrays, so they are read with an unpickler that builds nothing but numpy
arrays, dtypes and scalars around plain dicts, strings and numbers: a file that asks for anything else (``os.system``,
say) is refused, never run.

Shipped corpora (public domain, under ``datasets/corpora``): ``coriolanus``, the first 32 KB of Shakespeare's
Coriolanus as in Karpathy's tinyshakespeare; ``tang_poems``, 91 well-known Tang poems, one a line.
"""

import hashlib
import io
import math
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from datasets.safe_pickle import ArraysOnlyUnpickler

SHIPPED_CORPORA = ("coriolanus", "tang_poems")
# The book's poetry tokens: padding, poem start and poem end. They are dropped: a poem becomes one line of text.
TANG_MARKERS = ("</s>", "<START>", "<EOP>")


@dataclass(frozen=True)
class Vocabulary:
    """The characters of a text, sorted by code point; a character's id is its position."""

    characters: str

    @classmethod
    def of(cls, text: str) -> "Vocabulary":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.characters)

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` the vocabulary lacks, each once, in order of appearance."""
        known = set(self.characters)
        return list(dict.fromkeys(c for c in text if c not in known))

    def encode(self, text: str) -> torch.Tensor:
        """Ids of ``text``'s characters (int64); a character outside the vocabulary raises ``ValueError``."""
        code_points = _code_points(text)
        table = _code_points(self.characters)
        ids = np.searchsorted(table, code_points).clip(max=max(len(table) - 1, 0))
        if len(table) == 0 or not np.array_equal(table[ids], code_points):
            raise ValueError(f"characters not in the vocabulary: {''.join(self.unknown(text))!r}")
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.characters[i] for i in torch.as_tensor(ids).tolist())


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass(frozen=True)
class CharCorpus:
    source: str  # the file, or "shipped:<name>"
    vocabulary: Vocabulary
    tokens: torch.Tensor  # (characters,) int64 ids
    digest: str  # sha256 of the text: a resumed run checks it is the same text


def load_corpus(path: str, shipped: str = "coriolanus") -> CharCorpus:
    """A UTF-8 text file, the book's ``tang.npz``, or (``path`` empty) the shipped corpus ``shipped``.

    An unreadable, undecodable or empty file raises ``ValueError`` with a one-line reason.
    """
    if not path:
        text, source = shipped_text(shipped), f"shipped:{shipped}"
    else:
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"{path}: no such file" if not file.exists() else f"{path}: not a file")
        text = read_tang_npz(file) if file.suffix.lower() == ".npz" else read_text_file(file)
        source = path
    if not text:
        raise ValueError(f"{source}: the text is empty")
    vocabulary = Vocabulary.of(text)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return CharCorpus(source, vocabulary, vocabulary.encode(text), digest)


def shipped_text(name: str) -> str:
    """A corpus installed with the package (read through importlib.resources: works from a wheel too)."""
    if name not in SHIPPED_CORPORA:
        raise ValueError(f"no shipped corpus {name!r}; choose one of {', '.join(SHIPPED_CORPORA)}")
    return resources.files("datasets").joinpath("corpora", f"{name}.txt").read_text(encoding="utf-8")


def read_text_file(path: Path) -> str:
    """The file's text with Windows line ends made ``\\n`` and a byte-order mark dropped."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start})") from None
    return text.replace("\r\n", "\n")


def read_tang_npz(path: Path) -> str:
    """The book's poetry arrays as text: one poem a line, padding and ``<START>`` dropped."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [name for name in ("data", "word2ix", "ix2word") if name not in members]
            if missing:
                raise ValueError(f"{path}: not the book's poetry data (no array {', '.join(missing)})")
            data = _read_numeric_array(archive, members["data"], path)
            ix2word = _read_pickled_dict(archive, members["ix2word"], path)
            word2ix = _read_pickled_dict(archive, members["word2ix"], path)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npz archive ({error})") from None
    return _poems_as_text(data, ix2word, word2ix, path)


def write_tang_npz(path: Path, poems: list[str], row_length: int = 125) -> None:
    """Poems in the book's layout (the inverse of ``read_tang_npz``): ids of ``<START>`` poem ``<EOP>``, cut to
    ``row_length`` and front-padded with ``</s>``, and the ``word2ix`` / ``ix2word`` dicts (numpy ids, as the book's
    file has them pickled). For a small file in the book's format: tests, or one's own poems."""
    words = [*TANG_MARKERS, *sorted(set("".join(poems)))]
    word2ix = {word: ix for ix, word in enumerate(words)}
    rows = []
    for poem in poems:
        ids = [word2ix["<START>"], *(word2ix[c] for c in poem), word2ix["<EOP>"]][:row_length]
        rows.append([word2ix["</s>"]] * (row_length - len(ids)) + ids)
    ix2word = {np.int64(ix): word for word, ix in word2ix.items()}
    np.savez(path, data=np.array(rows, dtype=np.int32), word2ix=word2ix, ix2word=ix2word)


def _read_numeric_array(archive: zipfile.ZipFile, member: str, path: Path) -> np.ndarray:
    with archive.open(member) as file:
        try:
            array = np.lib.format.read_array(io.BytesIO(file.read()), allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path}: {member} is not a numeric array ({error})") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: {member} must be a 2-D integer array (poems x ids), got {array.dtype} {array.shape}")
    return array


def _read_pickled_dict(archive: zipfile.ZipFile, member: str, path: Path) -> dict:
    with archive.open(member) as file:
        stream = io.BytesIO(file.read())
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f"unsupported .npy format version {version}")
        _, _, dtype = read_header[version](stream)
        if dtype != np.dtype(object):
            raise ValueError(f"expected a pickled dict, found a {dtype} array")
        array = ArraysOnlyUnpickler(stream).load()
    except (ValueError, pickle.UnpicklingError, EOFError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: {member}: {error}") from None
    if not (isinstance(array, np.ndarray) and array.shape == () and isinstance(array.item(), dict)):
        raise ValueError(f"{path}: {member} must hold one dict")
    return array.item()


def _poems_as_text(data: np.ndarray, ix2word: dict, word2ix: dict, path: Path) -> str:
    if not all(isinstance(ix, int | np.integer) and isinstance(word, str) for ix, word in ix2word.items()):
        raise ValueError(f"{path}: ix2word must map ids to strings")
    words = {int(ix): word for ix, word in ix2word.items()}
    if set(words) != set(range(len(words))) or any(word2ix.get(word) != ix for ix, word in words.items()):
        raise ValueError(f"{path}: word2ix and ix2word do not name the same ids 0..{len(words) - 1}")
    if data.size and (data.min() < 0 or data.max() >= len(words)):
        raise ValueError(f"{path}: data holds ids that ix2word does not name")
    table = ["" if words[ix] in TANG_MARKERS else words[ix] for ix in range(len(words))]
    # One line per poem (a poem cut at the row length has lost its <EOP>; it still ends its line).
    poems = ("".join(table[ix] for ix in row) for row in data.tolist())
    return "".join(poem + "\n" for poem in poems if poem)


def split_tokens(
    tokens: torch.Tensor, valid_fraction: float, rows: int, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``valid_fraction`` of the text (at least ``steps + 1`` characters) for validation, the rest for
    training. A contiguous tail rather than random characters: a language model is judged on text it never saw."""
    total = len(tokens)
    n_valid = max(steps + 1, int(total * valid_fraction))
    needed = rows * steps + 1 + n_valid
    if total < needed:
        raise ValueError(
            f"{total} characters is too short for --batch-size {rows} --seq-len {steps}: it needs at least {needed} "
            f"({rows * steps + 1} to train on, {n_valid} held out for validation)"
        )
    return tokens[: total - n_valid], tokens[total - n_valid :]


class TbpttBatches:
    """``(inputs, targets)`` batches of shape ``(rows, steps)`` (the last may be narrower), targets one character on.

    The stream is laid out as ``rows`` contiguous rows; batch k holds columns ``k*steps .. (k+1)*steps`` of every row.
    ``start_next_pass_at(k)`` makes the next iteration begin at batch k (a run resumed in the middle of an epoch).
    """

    def __init__(self, tokens: torch.Tensor, rows: int, steps: int):
        columns = (len(tokens) - 1) // rows
        if columns < 1:
            raise ValueError(f"{len(tokens)} characters cannot fill {rows} rows")
        used = tokens[: rows * columns + 1]
        self.inputs = used[:-1].reshape(rows, columns)
        self.targets = used[1:].reshape(rows, columns)
        self.steps = steps
        self._first_batch = 0

    def __len__(self) -> int:
        return math.ceil(self.inputs.shape[1] / self.steps)

    def start_next_pass_at(self, batch_index: int) -> None:
        self._first_batch = batch_index

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        first, self._first_batch = self._first_batch, 0
        for k in range(first, len(self)):
            columns = slice(k * self.steps, (k + 1) * self.steps)
            yield self.inputs[:, columns], self.targets[:, columns]
