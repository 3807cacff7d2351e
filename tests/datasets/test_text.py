"""Character text: vocabulary, files (Chinese too), the book's tang.npz read safely, batches for truncated BPTT."""

import configparser
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.text import (
    SHIPPED_CORPORA,
    TbpttBatches,
    Vocabulary,
    load_corpus,
    read_tang_npz,
    shipped_text,
    split_tokens,
    write_tang_npz,
)

REPO = Path(__file__).resolve().parents[2]
POEM = "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"


def test_vocabulary_round_trips_chinese_and_names_unknown_characters():
    vocabulary = Vocabulary.of(POEM)
    assert vocabulary.decode(vocabulary.encode(POEM)) == POEM
    assert len(vocabulary) == len(set(POEM))
    assert vocabulary.unknown("明月春风春") == ["春", "风"]
    with pytest.raises(ValueError, match="春"):
        vocabulary.encode("春")


def test_text_file_becomes_ids_of_its_own_characters(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_bytes(("\ufeff" + POEM.replace("\n", "\r\n")).encode("utf-8"))  # a BOM and Windows line ends
    corpus = load_corpus(str(path))
    assert corpus.vocabulary.decode(corpus.tokens) == POEM
    assert corpus.source == str(path) and len(corpus.digest) == 64


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "the text is empty"), (b"abc\xff\xfedef", "not UTF-8 text (byte 0xff at offset 3)")],
)
def test_empty_or_undecodable_files_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_corpus(str(path))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_corpus(str(tmp_path / "nothing.txt"))


@pytest.mark.parametrize("name", SHIPPED_CORPORA)
def test_shipped_corpora_load_through_importlib_resources(name):
    text = shipped_text(name)
    assert len(text) > 3000 and text.endswith("\n")
    assert load_corpus("", name).source == f"shipped:{name}"


def test_shipped_corpora_are_package_data_of_the_distribution():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert "corpora/*.txt" in config["options.package_data"]["datasets"]


def test_validation_is_the_tail_and_a_text_too_short_for_the_batches_is_refused():
    tokens = torch.arange(1000)
    train, valid = split_tokens(tokens, valid_fraction=0.1, rows=4, steps=10)
    assert torch.equal(torch.cat([train, valid]), tokens) and len(valid) == 100
    with pytest.raises(ValueError, match="too short for --batch-size 32 --seq-len 50"):
        split_tokens(tokens, valid_fraction=0.1, rows=32, steps=50)


def test_each_batch_row_continues_the_same_row_of_the_previous_batch():
    tokens = torch.arange(103)
    batches = TbpttBatches(tokens, rows=4, steps=10)
    assert len(batches) == 3  # 25 columns per row: 10, 10 and 5
    pairs = list(batches)
    rows = torch.cat([inputs for inputs, _ in pairs], dim=1)
    assert torch.equal(rows, tokens[:100].reshape(4, 25))  # row r is one contiguous stretch of the text
    for inputs, targets in pairs:
        assert torch.equal(targets, inputs + 1)  # the next character


def test_a_pass_can_start_at_a_later_batch_once():
    batches = TbpttBatches(torch.arange(103), rows=4, steps=10)
    batches.start_next_pass_at(2)
    assert [inputs[0, 0].item() for inputs, _ in batches] == [20]
    assert [inputs[0, 0].item() for inputs, _ in batches] == [0, 10, 20]


def test_tang_npz_reads_as_one_poem_a_line(tmp_path):
    path = tmp_path / "tang.npz"
    write_tang_npz(
        path, ["白日依山尽，黄河入海流。", "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"], row_length=20
    )
    # The second poem is longer than a row: the book cuts it (and its <EOP>); it still ends its line.
    assert read_tang_npz(path) == "白日依山尽，黄河入海流。\n春眠不觉晓，处处闻啼鸟。夜来风雨声，花\n"
    assert load_corpus(str(path)).vocabulary.characters.startswith("\n")


class RunsACommand:
    """What an attacker pickles: unpickling it would call os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("member", ["ix2word", "word2ix"])
def test_npz_whose_pickle_calls_os_system_is_refused_and_nothing_runs(tmp_path, member):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.npz"
    write_tang_npz(path, ["白日依山尽。"])
    with np.load(path) as book:  # the dicts stay unread here: allow_pickle is off
        arrays = {"data": book["data"], "word2ix": {"</s>": 0}, "ix2word": {0: "</s>"}}
    np.savez(path, **{**arrays, member: np.array(RunsACommand(marker), dtype=object)})
    with pytest.raises(ValueError, match=r"refused to load (posix|nt|os)\.system"):
        load_corpus(str(path))
    assert not marker.exists()


def test_npz_without_the_books_arrays_or_not_a_zip_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", data=np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="no array word2ix, ix2word"):
        load_corpus(str(tmp_path / "other.npz"))
    (tmp_path / "fake.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        load_corpus(str(tmp_path / "fake.npz"))
