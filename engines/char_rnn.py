"""The character-level LSTM's engines: truncated backpropagation through time, its evaluator, and sampling.

    hidden = CarriedHidden(device)                          # a checkpoint holds it: resume is exact mid-epoch too
    trainer = create_tbptt_trainer(model, optimizer, hidden, device, clip_grad_norm=5.0)   # {"loss": float}
    evaluator = create_tbptt_evaluator(model, device)       # metrics "loss" (per character) and "perplexity"
    text = generate_text(CharSampler(model, vocabulary, temperature=0.8, top_k=0, seed=0), "the qu", 200)

Each batch row continues the previous batch's row (``datasets.text.TbpttBatches``), the LSTM state a batch ends with
starts the next batch, detached so gradients stop at the batch boundary, and it is reset when a pass over the text
begins again. Ignite's ``create_supervised_tbptt_trainer`` was the first candidate; it does not fit: it begins every
engine iteration from a zero state (it carries the state only between the time chunks of one long batch), takes an
optimizer step per chunk, and returns a bare float. The process function here is a dozen lines, and the carried
state is an object with a ``state_dict``.
"""

import math

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Loss, MetricsLambda
from torch import nn

from datasets.text import Vocabulary
from models.char_rnn import CharRNN, Hidden

LINE_ENDS = ("\n", "。")  # where an acrostic line stops: a line break, or the book's full stop


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


def create_tbptt_trainer(
    model: CharRNN, optimizer: torch.optim.Optimizer, hidden: CarriedHidden, device: torch.device, clip_grad_norm: float
) -> Engine:
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
