"""The character-level LSTM language model (chapter 002's next-character LSTM, chapter 004's CharRNN poetry):
its settings, its data, and text generation from a checkpoint.

    python scripts/char_rnn.py train --text corpus.txt --max-epochs 2 --output-dir runs/c
    python scripts/char_rnn.py generate --checkpoint runs/c --prefix "the qu" --length 40

Training is truncated backpropagation through time (``engines.char_rnn``): the LSTM state is carried from batch to
batch and every checkpoint holds it, so a run resumes exactly at any checkpointed iteration, mid-epoch too.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from datasets.text import SHIPPED_CORPORA, CharCorpus, TbpttBatches, Vocabulary, load_corpus, split_tokens
from engines.char_rnn import (
    CarriedHidden,
    CharSampler,
    create_tbptt_evaluator,
    create_tbptt_trainer,
    generate_acrostic,
    generate_text,
)
from handlers.evaluation import PeriodicEvaluation, attach_scheduled_early_stopping
from models.char_rnn import CharRNN
from runner.checkpoint_files import ResumePoint, find_checkpoint
from runner.cli import dispatch, launch, launch_tool
from runner.errors import UserError
from runner.settings import (
    RunSettings,
    Schedule,
    Settings,
    from_saved,
    keep_checkpoints_setting,
    non_negative,
    positive,
    required,
    setting,
)
from tasks.commands import command_line
from tasks.parts import Attached, Parts, RunContext, Scoring
from tasks.standard_run import Task, continue_hint


def open_fraction(value: float) -> None:
    if not 0 < value < 1:
        raise ValueError("must be in (0, 1)")


def dropout_rate(value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError("must be in [0, 1)")


def shipped_corpus(name: str) -> None:
    if name not in SHIPPED_CORPORA:
        raise ValueError(f"choose one of {', '.join(SHIPPED_CORPORA)}")


@dataclass(frozen=True)
class CharRnnSettings(RunSettings):
    seed: int = setting(0, "seeds the weights and dropout", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/char_rnn-<date>-<time>)", resume="free")
    # how long, how often
    max_epochs: int = setting(
        20, "total passes over the training text; a resumed run continues up to it", check=positive, resume="free"
    )
    log_every: int = setting(
        20, "iterations between metrics.jsonl records and report lines", check=positive, resume="free"
    )
    eval_every: int = setting(
        0, "iterations between validations (0: once per epoch)", check=non_negative, resume="free"
    )
    checkpoint_every: int = setting(
        100, "iterations between checkpoints (one more at the end)", check=positive, resume="free"
    )
    keep_checkpoints: int = keep_checkpoints_setting()
    patience: int = setting(
        3,
        "stop after this many validations without a lower val_perplexity (0: never)",
        check=non_negative,
        resume="free",
    )
    # data: the text may move (a resumed run checks it is the same text by its digest)
    text: str = setting("", "UTF-8 text file, or the book's tang.npz (default: the shipped --corpus)", resume="free")
    corpus: str = setting(
        "coriolanus",
        "shipped corpus used without --text: coriolanus or tang_poems",
        check=shipped_corpus,
        resume="free",
    )
    valid_fraction: float = setting(
        0.1, "share of the text, from its end, held out for validation", check=open_fraction
    )
    seq_len: int = setting(
        50, "characters per batch row: the truncated-BPTT window (chapter 002: 25, 004: 125)", check=positive
    )
    batch_size: int = setting(
        32, "rows per batch, each a contiguous stretch of the text (chapter 004: 128)", check=positive
    )
    # model and optimizer: chapter 004's sizes by default
    embedding_dim: int = setting(128, "character embedding size (chapter 004: 128)", check=positive)
    hidden_size: int = setting(256, "LSTM hidden size (chapters 002 and 004: 256)", check=positive)
    num_layers: int = setting(2, "stacked LSTM layers (chapter 002: 1, chapter 004: 2)", check=positive)
    dropout: float = setting(0.2, "dropout between LSTM layers", check=dropout_rate)
    lr: float = setting(2e-3, "Adam learning rate (chapter 004: 1e-3)", check=positive)
    clip_grad_norm: float = setting(5.0, "clip the gradient norm to this (0: no clipping)", check=non_negative)

    @property
    def schedule(self) -> Schedule:
        return Schedule("epochs", self.max_epochs)


def build_model(settings: CharRnnSettings, vocab_size: int) -> CharRNN:
    return CharRNN(vocab_size, settings.embedding_dim, settings.hidden_size, settings.num_layers, settings.dropout)


class CorpusRecord:
    """The vocabulary (generation needs it) and the digest of the text, stored in every checkpoint."""

    def __init__(self, corpus: CharCorpus):
        self.corpus = corpus

    def state_dict(self) -> dict[str, str]:
        return {
            "characters": self.corpus.vocabulary.characters,
            "digest": self.corpus.digest,
            "source": self.corpus.source,
        }

    def load_state_dict(self, state: dict[str, str]) -> None:
        pass  # checked before anything is written, by check_same_text


def check_same_text(corpus: CharCorpus, saved: dict[str, str], checkpoint: Path) -> None:
    if saved["digest"] != corpus.digest:
        raise UserError(
            f"{corpus.source} is not the text {checkpoint} was trained on ({saved['source']}); "
            "give that text with --text, or start a new run"
        )


@dataclass
class TextData:
    corpus: CharCorpus
    train: TbpttBatches
    valid: TbpttBatches


def load_training_text(settings: CharRnnSettings) -> TextData:
    try:
        corpus = load_corpus(settings.text, settings.corpus)
    except ValueError as error:
        raise UserError(f"--text {error}") from None  # the reason begins with the file's name
    try:
        train_tokens, valid_tokens = split_tokens(
            corpus.tokens, settings.valid_fraction, settings.batch_size, settings.seq_len
        )
    except ValueError as error:
        source = f"--text {settings.text}" if settings.text else f"--corpus {settings.corpus}"
        raise UserError(f"{source}: {error}") from None
    # Validation rows as long as one window at least: a short held-out tail gets fewer rows, not empty ones.
    valid_rows = max(1, min(settings.batch_size, (len(valid_tokens) - 1) // settings.seq_len))
    train = TbpttBatches(train_tokens, settings.batch_size, settings.seq_len)
    return TextData(corpus, train, TbpttBatches(valid_tokens, valid_rows, settings.seq_len))


def load_trained_model(path: str) -> tuple[CharRNN, Vocabulary]:
    """The model and vocabulary of a checkpoint (a file, or a run directory's newest), read with weights_only."""
    checkpoint = find_checkpoint(path, flag="--checkpoint")
    if "corpus" not in checkpoint.state or "model" not in checkpoint.state:
        raise UserError(f"{checkpoint.path} is not a checkpoint of char_rnn.py")
    settings = from_saved(CharRnnSettings, checkpoint.settings, {}, source=str(checkpoint.path))
    vocabulary = Vocabulary(checkpoint.state["corpus"]["characters"])
    model = build_model(settings, len(vocabulary))
    model.load_state_dict(checkpoint.state["model"])
    return model.eval(), vocabulary


class CharRnn(Task):
    """The LSTM trained by truncated BPTT, validated every ``--eval-every`` iterations (or once per epoch)."""

    scoring = Scoring("perplexity", higher_is_better=False, report_digits=3)

    def prepare(self, device: torch.device, resume: ResumePoint | None) -> TextData:
        data = load_training_text(self.settings)
        if resume is not None:
            check_same_text(data.corpus, resume.state["corpus"], resume.path)
        return data

    def build(self, data: TextData, device: torch.device) -> Parts:
        settings = self.settings
        model = build_model(settings, len(data.corpus.vocabulary)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        hidden = CarriedHidden(device)
        trainer = create_tbptt_trainer(model, optimizer, hidden, device, settings.clip_grad_norm)
        to_save = {"model": model, "optimizer": optimizer, "hidden": hidden, "corpus": CorpusRecord(data.corpus)}
        return Parts(trainer, data.train, to_save, built=model)

    def attach_handlers(self, context: RunContext) -> Attached:
        """Validation perplexity every ``eval_every`` iterations; early stopping judged on that schedule only."""
        settings, trainer = self.settings, context.trainer
        evaluator = create_tbptt_evaluator(context.built, context.device)
        every = settings.eval_every or len(context.data.train)
        evaluation = PeriodicEvaluation(
            evaluator, context.data.valid, every, context.metrics_log, context.tb_logger, prefix="val_"
        )
        evaluation.attach(trainer)
        if not settings.patience:
            return Attached(evaluator)
        stopper = attach_scheduled_early_stopping(evaluator, trainer, settings.patience, self.scoring.score, every)
        return Attached(evaluator, {"early_stopping": stopper})

    def loaded(self, resume: ResumePoint, context: RunContext) -> None:
        train = context.data.train
        train.start_next_pass_at(resume.iteration % len(train))  # Ignite restarts the data at the top

    def stop_reason(self) -> str:
        return f"stopped early (no lower val_perplexity in {self.settings.patience} validations)"

    def hints(self, run_path: Path, exit_code: int) -> list[str]:
        sample = f"  sample:   {command_line('char_rnn.py generate')} --checkpoint {run_path} --prefix ..."
        return [sample, continue_hint(self, run_path)]


train = CharRnn.train


# ---- generation ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateSettings(Settings):
    checkpoint: str = setting("", "a run directory (its newest checkpoint) or a checkpoint", check=required)
    prefix: str = setting("", "text the output begins with")
    length: int = setting(
        200, "characters printed, the prefix included; with --acrostic, the most per line", check=positive
    )
    temperature: float = setting(
        0.8, "below 1: safer choices, above 1: wilder; 0: always the likeliest", check=non_negative
    )
    top_k: int = setting(0, "draw among the k likeliest characters (0: all)", check=non_negative)
    seed: int = setting(0, "seeds the draws", check=non_negative)
    acrostic: str = setting("", "write one line per character, each starting with it")

    def validate(self) -> None:
        if self.acrostic and self.prefix:
            raise ValueError("give --prefix or --acrostic, not both")
        if len(self.prefix) > self.length:
            raise ValueError(f"--length {self.length} is shorter than the prefix ({len(self.prefix)} characters)")


@dataclass
class GeneratedText:
    exit_code: int
    text: str


def generate(settings: GenerateSettings) -> GeneratedText:
    """Print text from a trained model: a prefix's continuation, or an acrostic."""
    model, vocabulary = load_trained_model(settings.checkpoint)
    for flag, text in (("--prefix", settings.prefix), ("--acrostic", settings.acrostic)):
        if unknown := vocabulary.unknown(text):
            shown = " ".join(repr(c) for c in unknown)
            raise UserError(f"{flag} {text!r}: {shown} not in the model's vocabulary of {len(vocabulary)} characters")
    if not settings.prefix and not settings.acrostic and "\n" not in vocabulary.characters:
        raise UserError("this model's text has no line breaks to start from: give --prefix")
    sampler = CharSampler(model, vocabulary, settings.temperature, settings.top_k, settings.seed)
    if settings.acrostic:
        text = "\n".join(generate_acrostic(sampler, settings.acrostic, settings.length))
    else:
        text = generate_text(sampler, settings.prefix, settings.length)
    print(text)
    return GeneratedText(0, text)


GENERATE_DESCRIPTION = """Write text with a trained char_rnn model.

python scripts/char_rnn.py generate --checkpoint runs/char_rnn-<time> --prefix "the qu" --length 200
python scripts/char_rnn.py generate --checkpoint runs/tang --acrostic 春花秋月 --temperature 0.8
"""


def main(argv: Sequence[str] | None, description: str, prog: str = "char_rnn.py") -> None:
    """``char_rnn.py train|generate [flags]`` (``prog``: the launcher's name, e.g. ``ignite-book char_rnn``)."""
    dispatch(
        {
            "train": lambda rest: launch(CharRnnSettings, train, f"{prog} train", description, rest),
            "generate": lambda rest: launch_tool(
                GenerateSettings, generate, f"{prog} generate", GENERATE_DESCRIPTION, rest
            ),
        },
        prog=prog,
        description=description,
        argv=argv,
    )
