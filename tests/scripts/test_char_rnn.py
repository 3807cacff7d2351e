"""scripts/char_rnn.py as a user runs it: real processes at smoke size (the book's tang.npz: tests/runner)."""

import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO, damage_tensor_data, run_launcher
from handlers.metrics_log import read_records
from runner.checkpoint_files import checkpoint_files
from tasks.char_rnn import main

SCRIPT = REPO / "scripts" / "char_rnn.py"
TINY = ["--embedding-dim", "8", "--hidden-size", "24", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16"]
TINY += ["--lr", "0.01", "--dropout", "0"]


def char_rnn(*args: str):
    return run_launcher(*args, script=SCRIPT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The acceptance run at smoke size: train --text corpus.txt --max-epochs 2 --output-dir R."""
    folder = tmp_path_factory.mktemp("char_rnn")
    corpus = folder / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 60)
    run_dir = folder / "R"
    result = char_rnn("train", "--text", str(corpus), "--max-epochs", "2", "--output-dir", str(run_dir), *TINY)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_train_logs_val_perplexity_and_generate_prints_text_beginning_with_the_prefix(trained):
    perplexities = [r["val_perplexity"] for r in read_records(trained / "metrics.jsonl") if "val_perplexity" in r]
    assert len(perplexities) == 2 and perplexities[1] < perplexities[0]
    scalars = EventAccumulator(str(trained), size_guidance={"scalars": 0}).Reload().Tags()["scalars"]
    assert {"train/loss", "eval/perplexity"} <= set(scalars)
    result = char_rnn("generate", "--checkpoint", str(trained), "--prefix", "the qu", "--length", "40")
    assert result.returncode == 0, result.stderr
    text = result.stdout.removesuffix("\n")
    assert text.startswith("the qu") and len(text) == 40


def test_bad_flags_exit_2_with_one_line_from_a_real_process(trained):
    result = char_rnn("generate", "--checkpoint", str(trained), "--prefix", "the QU")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "char_rnn.py generate: error: --prefix 'the QU': 'Q' 'U' not in the model's vocabulary" in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "a command is needed; choose one of: train, generate"),
        (["fit"], "unknown command 'fit'"),
        (["train", "--seq-len", "0"], "--seq-len 0: must be positive"),
        (["train", "--corpus", "sonnets"], "--corpus sonnets: choose one of coriolanus, tang_poems"),
        (["train", "--text", "no-such-file.txt"], "--text no-such-file.txt: no such file"),
        (["train", "--batch-size", "400", "--seq-len", "125"], "too short for --batch-size 400 --seq-len 125"),
        (["generate"], "--checkpoint is required"),
        (["generate", "--checkpoint", "no-such-run"], "--checkpoint no-such-run: no such file or directory"),
        (["generate", "--checkpoint", "x", "--length", "0"], "--length 0: must be positive"),
        (["generate", "--checkpoint", "x", "--prefix", "a", "--acrostic", "b"], "give --prefix or --acrostic"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output-dir", str(tmp_path / "x")] if argv[:1] == ["train"] else argv, description="")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_prefix_outside_the_vocabulary_refused_in_process(trained, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--checkpoint", str(trained), "--acrostic", "春"], description="")
    assert exit_info.value.code == 2
    assert "'春' not in the model's vocabulary" in capsys.readouterr().err


def test_generate_refuses_a_checkpoint_whose_bytes_changed(trained, tmp_path, capsys):
    newest = checkpoint_files(trained / "checkpoints")[-1]
    copy = tmp_path / newest.name
    shutil.copy(newest, copy)
    damage_tensor_data(copy)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--checkpoint", str(copy)], description="")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{copy} is damaged" in err and len(err.strip().splitlines()) == 1
