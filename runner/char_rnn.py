"""The character-level LSTM language model (chapter 002's next-character LSTM, chapter 004's CharRNN poetry):
its settings, one training run, and text generation from a checkpoint.

    python scripts/char_rnn.py train --text corpus.txt --max-epochs 2 --output-dir runs/c
    python scripts/char_rnn.py generate --checkpoint runs/c --prefix "the qu" --length 40

Training is truncated backpropagation through time: each batch row continues the previous batch's row
(``datasets.text.TbpttBatches``), the LSTM state a batch ends with starts the next batch, detached so gradients stop
at the batch boundary, and it is reset when a pass over the text begins again. Ignite's
``create_supervised_tbptt_trainer`` was the first candidate; it does not fit: it begins every engine iteration from a
zero state (it carries the state only between the time chunks of one long batch), takes an optimizer step per chunk,
and returns a bare float. The process function here is a dozen lines, and the carried state is an object with a
``state_dict`` that every checkpoint holds, so a run resumes exactly at any checkpointed iteration, mid-epoch too.
"""

import argparse
import math
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping, TerminateOnNan
from ignite.metrics import Loss, MetricsLambda
from torch import nn

from datasets.text import SHIPPED_CORPORA, CharCorpus, TbpttBatches, Vocabulary, load_corpus, split_tokens
from handlers import ExactResume, GracefulStop, MetricsLog, Throughput, attach_progress, output_is_finite
from handlers.checkpoint import find_checkpoint, run_dir_of_checkpoint
from handlers.evaluation import PeriodicEvaluation
from handlers.logging import attach_running_averages, attach_tensorboard
from handlers.metrics_log import records_by_iteration
from models.char_rnn import CharRNN, Hidden
from runner.cli import dispatch, launch
from runner.device import resolve_device
from runner.errors import UserError, exit_cleanly, say
from runner.rng import seed_everything
from runner.rundir import RunDirectory
from runner.settings import OneLineParser, at_least_two, from_saved, non_negative, positive, setting, settings_dict

LINE_ENDS = ("\n", "。")  # where an acrostic line stops: a line break, or the book's full stop


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
class CharRnnSettings:
    # where, how long, how often
    dev: str = setting("cpu", "device: cpu, cuda or cuda:N", resume="free")
    seed: int = setting(0, "seeds the weights and dropout", check=non_negative)
    output_dir: str = setting("", "run directory (default: runs/char_rnn-<date>-<time>)", resume="free")
    resume: str = setting("", "continue a run: its directory or one of its checkpoint files", resume="free")
    max_epochs: int = setting(20, "total passes over the training text; a resumed run continues up to it",
                              check=positive, resume="free")  # fmt: skip
    log_every: int = setting(20, "iterations between metrics.jsonl records and report lines", check=positive,
                             resume="free")  # fmt: skip
    eval_every: int = setting(0, "iterations between validations (0: once per epoch)", check=non_negative,
                              resume="free")  # fmt: skip
    checkpoint_every: int = setting(100, "iterations between checkpoints (one more at the end)", check=positive,
                                    resume="free")  # fmt: skip
    keep_checkpoints: int = setting(2, "checkpoints kept on disk (the newest ones)", check=at_least_two, resume="free")
    patience: int = setting(3, "stop after this many validations without a lower val_perplexity (0: never)",
                            check=non_negative, resume="free")  # fmt: skip
    # data: the text may move (a resumed run checks it is the same text by its digest)
    text: str = setting("", "UTF-8 text file, or the book's tang.npz (default: the shipped --corpus)", resume="free")
    corpus: str = setting("coriolanus", "shipped corpus used without --text: coriolanus or tang_poems",
                          check=shipped_corpus, resume="free")  # fmt: skip
    valid_fraction: float = setting(0.1, "share of the text, from its end, held out for validation",
                                    check=open_fraction)  # fmt: skip
    seq_len: int = setting(50, "characters per batch row: the truncated-BPTT window (chapter 002: 25, 004: 125)",
                           check=positive)  # fmt: skip
    batch_size: int = setting(32, "rows per batch, each a contiguous stretch of the text (chapter 004: 128)",
                              check=positive)  # fmt: skip
    # model and optimizer: chapter 004's sizes by default
    embedding_dim: int = setting(128, "character embedding size (chapter 004: 128)", check=positive)
    hidden_size: int = setting(256, "LSTM hidden size (chapters 002 and 004: 256)", check=positive)
    num_layers: int = setting(2, "stacked LSTM layers (chapter 002: 1, chapter 004: 2)", check=positive)
    dropout: float = setting(0.2, "dropout between LSTM layers", check=dropout_rate)
    lr: float = setting(2e-3, "Adam learning rate (chapter 004: 1e-3)", check=positive)
    clip_grad_norm: float = setting(5.0, "clip the gradient norm to this (0: no clipping)", check=non_negative)


@dataclass
class RunResult:
    exit_code: int
    iteration: int
    best_perplexity: float | None  # the lowest val_perplexity of the run's validations (resumed parts included)


def build_model(settings: CharRnnSettings, vocab_size: int) -> CharRNN:
    return CharRNN(vocab_size, settings.embedding_dim, settings.hidden_size, settings.num_layers, settings.dropout)


class CarriedHidden:
    """The LSTM state one batch hands to the next, as an object a checkpoint holds (``None``: start from zeros)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.state: Hidden | None = None

    def reset(self) -> None:
        self.state = None

    def carry(self, hidden: Hidden) -> None:
        self.state = (hidden[0].detach(), hidden[1].detach())  # truncated BPTT: no gradient into earlier batches

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.state is None else {"h": self.state[0], "c": self.state[1]}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.state = (state["h"].to(self.device), state["c"].to(self.device)) if state else None


class CorpusRecord:
    """The vocabulary (generation needs it) and the digest of the text, stored in every checkpoint."""

    def __init__(self, corpus: CharCorpus):
        self.corpus = corpus

    def state_dict(self) -> dict[str, str]:
        return {"characters": self.corpus.vocabulary.characters, "digest": self.corpus.digest,
                "source": self.corpus.source}  # fmt: skip

    def load_state_dict(self, state: dict[str, str]) -> None:
        pass  # checked before anything is written, by check_same_text


def check_same_text(corpus: CharCorpus, saved: dict[str, str], checkpoint: Path) -> None:
    if saved["digest"] != corpus.digest:
        raise UserError(
            f"{corpus.source} is not the text {checkpoint} was trained on ({saved['source']}); "
            "give that text with --text, or start a new run"
        )


def create_tbptt_trainer(model: CharRNN, optimizer: torch.optim.Optimizer, hidden: CarriedHidden,
                         device: torch.device, clip_grad_norm: float) -> Engine:  # fmt: skip
    """One optimizer step per batch, starting from the state the previous batch ended with; ``{"loss": float}``."""
    loss_fn = nn.CrossEntropyLoss()

    def step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        if (engine.state.iteration - 1) % engine.state.epoch_length == 0:
            hidden.reset()  # a new pass: every row starts again at its beginning
        model.train()
        inputs, targets = (t.to(device, non_blocking=True) for t in batch)
        optimizer.zero_grad()
        logits, state = model(inputs, hidden.state)
        loss = loss_fn(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        if clip_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        hidden.carry(state)
        return {"loss": loss.item()}

    return Engine(step)


def perplexity(mean_cross_entropy: float) -> float:
    return math.exp(mean_cross_entropy) if mean_cross_entropy < 700 else math.inf


def create_tbptt_evaluator(model: CharRNN, device: torch.device) -> Engine:
    """Mean cross-entropy per character over the validation text, and its exp, the perplexity (``eval()``, no grad).

    The state is carried across the validation batches too, from zeros at each evaluation's start."""
    hidden = CarriedHidden(device)

    @torch.no_grad()
    def step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        inputs, targets = (t.to(device, non_blocking=True) for t in batch)
        logits, state = model(inputs, hidden.state)
        hidden.carry(state)
        return logits.flatten(0, 1), targets.flatten()  # Loss weighs each batch by its characters

    evaluator = Engine(step)
    evaluator.add_event_handler(Events.STARTED, lambda _: hidden.reset())
    loss = Loss(nn.CrossEntropyLoss())
    loss.attach(evaluator, "loss")
    MetricsLambda(perplexity, loss).attach(evaluator, "perplexity")
    return evaluator


def attach_early_stopping(evaluator: Engine, trainer: Engine, patience: int, every: int) -> EarlyStopping:
    """Stop when ``patience`` scheduled validations in a row bring no lower perplexity.

    Only validations on the schedule count: a run stopped by Ctrl-C validates once more, off schedule, and counting
    that one would make the resumed run stop at another point than an uninterrupted one.
    """
    stopper = EarlyStopping(patience, lambda engine: -engine.state.metrics["perplexity"], trainer)

    def judge(engine: Engine) -> None:
        if trainer.state.iteration % every == 0:
            stopper(engine)

    evaluator.add_event_handler(Events.COMPLETED, judge)
    return stopper


def load_training_text(settings: CharRnnSettings) -> tuple[CharCorpus, TbpttBatches, TbpttBatches]:
    try:
        corpus = load_corpus(settings.text, settings.corpus)
    except ValueError as error:
        raise UserError(f"--text {error}") from None  # the reason begins with the file's name
    try:
        train_tokens, valid_tokens = split_tokens(corpus.tokens, settings.valid_fraction, settings.batch_size,
                                                  settings.seq_len)  # fmt: skip
    except ValueError as error:
        source = f"--text {settings.text}" if settings.text else f"--corpus {settings.corpus}"
        raise UserError(f"{source}: {error}") from None
    # Validation rows as long as one window at least: a short held-out tail gets fewer rows, not empty ones.
    valid_rows = max(1, min(settings.batch_size, (len(valid_tokens) - 1) // settings.seq_len))
    train = TbpttBatches(train_tokens, settings.batch_size, settings.seq_len)
    return corpus, train, TbpttBatches(valid_tokens, valid_rows, settings.seq_len)


def train(settings: CharRnnSettings, checkpoint: tuple[Path, dict[str, Any]] | None = None) -> RunResult:
    device = resolve_device(settings.dev)
    corpus, train_batches, valid_batches = load_training_text(settings)
    resumed_at = checkpoint[1]["trainer"]["iteration"] if checkpoint else None
    if checkpoint is not None:
        check_same_text(corpus, checkpoint[1]["corpus"], checkpoint[0])
        if resumed_at >= settings.max_epochs * len(train_batches):
            say(f"nothing to do: {checkpoint[0]} is at iteration {resumed_at} "
                f"(epoch {resumed_at // len(train_batches)}); raise --max-epochs to train further")  # fmt: skip
            return RunResult(0, resumed_at, best_perplexity(run_dir_of_checkpoint(checkpoint[0]) / "metrics.jsonl"))
    run_dir = Path(settings.output_dir)
    continuing = checkpoint is not None and run_dir.resolve() == run_dir_of_checkpoint(checkpoint[0]).resolve()
    with RunDirectory.open(run_dir, continuing=continuing) as run:
        run.write_config(settings_dict(settings))
        seed_everything(settings.seed)
        model = build_model(settings, len(corpus.vocabulary)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        hidden = CarriedHidden(device)
        trainer = create_tbptt_trainer(model, optimizer, hidden, device, settings.clip_grad_norm)
        evaluator = create_tbptt_evaluator(model, device)

        # Order matters: metrics and the NaN guard first, then what reports them, checkpoints last.
        averages = attach_running_averages(trainer, ["loss"])
        trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
        Throughput(settings.log_every, settings.batch_size).attach(trainer)
        tb_logger = attach_tensorboard(trainer, run.path, settings.log_every, resumed_at)
        metrics_log = MetricsLog(run.metrics_path, settings.log_every).attach(trainer)
        eval_every = settings.eval_every or len(train_batches)
        PeriodicEvaluation(evaluator, valid_batches, eval_every, metrics_log, tb_logger, prefix="val_").attach(trainer)
        extra_state: dict[str, Any] = {}
        if settings.patience:
            extra_state["early_stopping"] = attach_early_stopping(evaluator, trainer, settings.patience, eval_every)
        attach_progress(trainer, settings.log_every, ["avg_loss", "iters_per_sec"])
        to_save = {"trainer": trainer, "model": model, "optimizer": optimizer, "hidden": hidden,
                   "corpus": CorpusRecord(corpus), **averages, **extra_state}  # fmt: skip
        resume = ExactResume(to_save, run.checkpoints, settings.checkpoint_every, settings_dict(settings),
                             settings.keep_checkpoints).attach(trainer)  # fmt: skip
        if checkpoint is not None:
            resume.load(checkpoint[1])
            train_batches.start_next_pass_at(resumed_at % len(train_batches))  # Ignite restarts the data at the top
            metrics_log.write({"resumed_from": resumed_at, "checkpoint": str(checkpoint[0])})

        try:
            with GracefulStop(trainer) as stop:
                trainer.run(train_batches, max_epochs=settings.max_epochs)
        finally:
            tb_logger.close()
        best = best_perplexity(run.metrics_path)
        exit_code = report_end(trainer.state, settings, stop.signal_name, resume.last_path, run.path, best)
        return RunResult(exit_code, trainer.state.iteration, best)


def best_perplexity(metrics_path: Path) -> float | None:
    values = [r["val_perplexity"] for r in records_by_iteration(metrics_path).values()
              if isinstance(r.get("val_perplexity"), float)]  # fmt: skip
    return min(values) if values else None


def report_end(state: Any, settings: CharRnnSettings, signal_name: str | None, last_checkpoint: Path | None,
               run_path: Path, best: float | None) -> int:  # fmt: skip
    if not output_is_finite(state.output):
        say(f"training stopped at iteration {state.iteration}: the loss became NaN or infinite; "
            f"the last good checkpoint is {last_checkpoint}")  # fmt: skip
        return 1
    if signal_name:
        how = f"stopped by {signal_name}"
    elif state.epoch < settings.max_epochs or state.iteration % state.epoch_length:
        how = f"stopped early (no lower val_perplexity in {settings.patience} validations)"
    else:
        how = "finished"
    shown = "n/a" if best is None else f"{best:.3f}"
    say(f"{how} at iteration {state.iteration} (epoch {state.epoch}); best val_perplexity {shown}; "
        f"checkpoint {last_checkpoint}")  # fmt: skip
    say(f"  sample:   python scripts/char_rnn.py generate --checkpoint {run_path} --prefix ...")
    say(f"  continue: python scripts/char_rnn.py train --resume {run_path} --max-epochs N")
    return 128 + signal.Signals[signal_name].value if signal_name else 0


# ---- generation ----


def load_trained_model(path: str) -> tuple[CharRNN, Vocabulary]:
    """The model and vocabulary of a checkpoint (a file, or a run directory's newest), read with weights_only."""
    file, state = find_checkpoint(path, flag="--checkpoint")
    if "corpus" not in state or "model" not in state:
        raise UserError(f"{file} is not a checkpoint of char_rnn.py")
    settings = from_saved(CharRnnSettings, state["settings"], {}, source=str(file))
    vocabulary = Vocabulary(state["corpus"]["characters"])
    model = build_model(settings, len(vocabulary))
    model.load_state_dict(state["model"])
    return model.eval(), vocabulary


class CharSampler:
    """Feeds characters through the model one at a time and draws the next from its output.

    ``temperature`` 0 picks the most likely character (the book's ``topk(1)``); ``top_k`` > 0 draws among the k
    likeliest only. The draws use their own seeded generator: the same seed gives the same text.
    """

    def __init__(self, model: CharRNN, vocabulary: Vocabulary, temperature: float, top_k: int, seed: int):
        self.model = model
        self.vocabulary = vocabulary
        self.temperature = temperature
        self.top_k = top_k
        self.generator = torch.Generator().manual_seed(seed)
        self.hidden: Hidden | None = None
        self.logits: torch.Tensor | None = None  # the model's output after the last character fed

    @torch.no_grad()
    def feed(self, text: str) -> None:
        logits, self.hidden = self.model(self.vocabulary.encode(text)[None], self.hidden)
        self.logits = logits[0, -1]

    def start_line(self) -> None:
        """Begin as after a line break, where poems and speeches begin in the training text (if it has one)."""
        if "\n" in self.vocabulary.characters:
            self.feed("\n")

    def draw(self) -> str:
        """The next character; it is fed back, so the following draw continues from it."""
        if self.temperature == 0:
            index = int(self.logits.argmax())
        else:
            logits = self.logits / self.temperature
            if self.top_k:
                kth_largest = logits.topk(min(self.top_k, len(logits))).values[-1]
                logits = logits.masked_fill(logits < kth_largest, -math.inf)
            index = int(torch.multinomial(logits.softmax(dim=0), 1, generator=self.generator))
        character = self.vocabulary.characters[index]
        self.feed(character)
        return character


def generate_text(sampler: CharSampler, prefix: str, length: int) -> str:
    """``length`` characters: the prefix, then what the model writes after it."""
    sampler.start_line()
    if prefix:
        sampler.feed(prefix)
    text = prefix
    while len(text) < length:
        text += sampler.draw()
    return text


def generate_acrostic(sampler: CharSampler, heads: str, max_line: int) -> list[str]:
    """One line per character of ``heads``, starting with it and ending at a line break or ``。``
    (or at ``max_line`` characters); the poem's state runs on from line to line."""
    sampler.start_line()
    lines = []
    for head in heads:
        sampler.feed(head)
        line = head
        while len(line) < max_line:
            character = sampler.draw()
            if character == "\n":
                break
            line += character
            if character in LINE_ENDS:
                break
        lines.append(line)
    return lines


GENERATE_DESCRIPTION = """Write text with a trained char_rnn model.

python scripts/char_rnn.py generate --checkpoint runs/char_rnn-<time> --prefix "the qu" --length 200
python scripts/char_rnn.py generate --checkpoint runs/tang --acrostic 春花秋月 --temperature 0.8
"""


def generate_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="char_rnn.py generate", description=GENERATE_DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--checkpoint", required=True, help="a run directory (its newest checkpoint) or a checkpoint")
    parser.add_argument("--prefix", default="", help="text the output begins with (default: none)")
    parser.add_argument("--length", type=int, default=200,
                        help="characters printed, the prefix included; with --acrostic, the most per line "
                             "(default: 200)")  # fmt: skip
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="below 1: safer choices, above 1: wilder; 0: always the likeliest (default: 0.8)",
    )
    parser.add_argument("--top-k", type=int, default=0, help="draw among the k likeliest characters (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the draws (default: 0)")
    parser.add_argument("--acrostic", default="", help="write one line per character, each starting with it")
    return parser


def generate(argv: Sequence[str]) -> int:
    parser = generate_parser()
    args = parser.parse_args(argv)
    if args.length < 1 or args.temperature < 0 or args.top_k < 0 or args.seed < 0:
        parser.error("--length must be positive; --temperature, --top-k and --seed must not be negative")
    if args.acrostic and args.prefix:
        parser.error("give --prefix or --acrostic, not both")
    if len(args.prefix) > args.length:
        parser.error(f"--length {args.length} is shorter than the prefix ({len(args.prefix)} characters)")
    model, vocabulary = load_trained_model(args.checkpoint)
    for flag, text in (("--prefix", args.prefix), ("--acrostic", args.acrostic)):
        if unknown := vocabulary.unknown(text):
            shown = " ".join(repr(c) for c in unknown)
            raise UserError(f"{flag} {text!r}: {shown} not in the model's vocabulary of {len(vocabulary)} characters")
    if not args.prefix and not args.acrostic and "\n" not in vocabulary.characters:
        raise UserError("this model's text has no line breaks to start from: give --prefix")
    sampler = CharSampler(model, vocabulary, args.temperature, args.top_k, args.seed)
    if args.acrostic:
        print("\n".join(generate_acrostic(sampler, args.acrostic, args.length)))
    else:
        print(generate_text(sampler, args.prefix, args.length))
    return 0


# ---- the two sub-commands ----


def main(argv: Sequence[str], description: str) -> None:
    """``train ...`` goes through the shared launcher; ``generate ...`` reads a checkpoint and prints text."""
    dispatch(
        {
            "train": lambda rest: launch(CharRnnSettings, train, "char_rnn.py train", description, rest),
            "generate": lambda rest: exit_cleanly(lambda: generate(rest), "char_rnn.py generate"),
        },
        prog="char_rnn.py",
        description=description,
        argv=argv,
    )
