"""char_rnn in-process at smoke size: val_perplexity falls, resume is bit-exact (mid-epoch too), generation."""

from pathlib import Path

import pytest
import torch

from datasets.text import write_tang_npz
from engines.char_rnn import CharSampler, generate_acrostic, generate_text
from handlers.metrics_log import read_records, records_by_iteration
from runner.checkpoint_files import checkpoint_files
from tasks.char_rnn import load_trained_model, main

EASY_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 60  # 2700 characters a small LSTM learns fast
TINY = ["--dev", "cpu", "--embedding-dim", "8", "--hidden-size", "24", "--num-layers", "1", "--batch-size", "4"]
TINY += ["--seq-len", "16", "--lr", "0.01", "--dropout", "0", "--log-every", "1", "--patience", "0"]


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv], description="")
    return exit_info.value.code


def validations(run_dir: Path) -> list[float]:
    return [r["val_perplexity"] for r in read_records(run_dir / "metrics.jsonl") if "val_perplexity" in r]


def losses(run_dir: Path, iterations) -> list[tuple]:
    records = records_by_iteration(run_dir / "metrics.jsonl")
    return [(records[i]["loss"], records[i]["avg_loss"], records[i].get("val_perplexity")) for i in iterations]


@pytest.fixture(scope="module")
def easy_text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "easy.txt"
    path.write_text(EASY_TEXT)
    return path


@pytest.fixture(scope="module")
def straight(easy_text, tmp_path_factory) -> Path:
    """Two epochs (38 iterations each) uninterrupted, a checkpoint every 10 iterations, all kept."""
    run_dir = tmp_path_factory.mktemp("straight") / "S"
    flags = ["--max-epochs", "2", "--checkpoint-every", "10", "--keep-checkpoints", "20"]
    code = run(*TINY, "--text", str(easy_text), *flags, "--output-dir", str(run_dir))
    assert code == 0
    return run_dir


def test_val_perplexity_is_logged_each_epoch_and_falls(straight):
    perplexities = validations(straight)
    assert len(perplexities) == 2 and perplexities[1] < perplexities[0] < 30
    assert [r["iteration"] for r in read_records(straight / "metrics.jsonl") if "val_perplexity" in r] == [38, 76]


def test_one_epoch_then_resumed_to_two_is_bit_identical(straight, easy_text, tmp_path):
    halves = tmp_path / "H"
    assert run(*TINY, "--text", str(easy_text), "--max-epochs", "1", "--output-dir", str(halves)) == 0
    assert run("--resume", str(halves), "--max-epochs", "2") == 0
    assert losses(halves, range(1, 77)) == losses(straight, range(1, 77))


def test_resumed_mid_epoch_continues_with_the_carried_hidden_state(straight, tmp_path):
    checkpoint = straight / "checkpoints" / "checkpoint_50.pt"  # 12 batches into the second epoch
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["hidden"]["h"].shape == (1, 4, 24) and saved["hidden"]["h"].abs().sum() > 0
    resumed = tmp_path / "R"
    assert run("--resume", str(checkpoint), "--output-dir", str(resumed), "--max-epochs", "2") == 0
    assert losses(resumed, range(51, 77)) == losses(straight, range(51, 77))


def test_resume_with_another_text_is_refused_before_writing(straight, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text(EASY_TEXT.upper())
    before = sorted(p.name for p in checkpoint_files(straight / "checkpoints"))
    assert run("--resume", str(straight), "--text", str(other), "--max-epochs", "3") == 2
    assert "is not the text" in capsys.readouterr().err
    assert sorted(p.name for p in checkpoint_files(straight / "checkpoints")) == before


def sampler(run_dir: Path, temperature: float = 0.8, seed: int = 0) -> CharSampler:
    model, vocabulary = load_trained_model(str(run_dir))
    return CharSampler(model, vocabulary, temperature, top_k=0, seed=seed)


def test_generated_text_starts_with_the_prefix_and_has_the_length(straight):
    text = generate_text(sampler(straight), "the qu", 40)
    assert text.startswith("the qu") and len(text) == 40
    assert generate_text(sampler(straight, seed=3), "the", 30) == generate_text(sampler(straight, seed=3), "the", 30)
    greedy = generate_text(sampler(straight, temperature=0), "the qu", 20)
    assert greedy == "the quick brown fox "  # the likeliest continuation of the only sentence it knows


def test_acrostic_lines_start_with_the_given_characters(straight):
    lines = generate_acrostic(sampler(straight), "tbf", max_line=30)
    assert [line[0] for line in lines] == list("tbf")
    assert all(0 < len(line) <= 30 and "\n" not in line for line in lines)


def test_chinese_text_trains_and_writes_acrostic_lines_ending_at_the_full_stop(tmp_path):
    poems = tmp_path / "poems.txt"
    poems.write_text("春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。\n" * 40, encoding="utf-8")
    run_dir = tmp_path / "P"
    assert run(*TINY, "--text", str(poems), "--max-epochs", "3", "--output-dir", str(run_dir)) == 0
    perplexities = validations(run_dir)
    assert perplexities[-1] < perplexities[0]
    lines = generate_acrostic(sampler(run_dir, temperature=0), "春夜", max_line=20)
    assert [line[0] for line in lines] == ["春", "夜"]
    assert lines[0] == "春眠不觉晓，处处闻啼鸟。"


def test_the_books_tang_npz_trains_and_writes_an_acrostic_poem(tmp_path):
    poems = ["春眠不觉晓，处处闻啼鸟。", "夜来风雨声，花落知多少。", "秋月照江流，冬雪满山头。"] * 30
    write_tang_npz(tmp_path / "tang.npz", poems, row_length=16)
    run_dir = tmp_path / "T"
    assert run(*TINY, "--text", str(tmp_path / "tang.npz"), "--max-epochs", "3", "--output-dir", str(run_dir)) == 0
    assert validations(run_dir)[-1] < validations(run_dir)[0]
    lines = generate_acrostic(sampler(run_dir), "春秋", max_line=16)
    assert [line[0] for line in lines] == ["春", "秋"] and all(len(line) <= 16 for line in lines)
