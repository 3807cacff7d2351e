"""A character-level LSTM language model: the books' next-character LSTM (chapter 002) and CharRNN (chapter 004).

    model = CharRNN(vocab_size=65, embedding_dim=128, hidden_size=256, num_layers=2)
    logits, hidden = model(tokens)           # tokens (batch, time) int64 -> logits (batch, time, vocab)
    logits, hidden = model(tokens, hidden)   # continue where the previous call stopped (truncated BPTT)

Chapter 002 feeds one-hot vectors into ``LSTM(vocab, 256)``; an ``Embedding`` is the same product of a one-hot vector
with a weight matrix, without building the one-hot tensor. Chapter 004 uses ``Embedding(vocab, 128)`` and a 2-layer
``LSTM(128, 256)``. The head is applied at every time step.
"""

import torch
from torch import nn

Hidden = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, batch, hidden_size)


class CharRNN(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        # LSTM applies dropout between layers only: with one layer it has nothing to drop (and warns).
        self.lstm = nn.LSTM(
            embedding_dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        embedded = self.embedding(tokens)  # (batch, time, embedding_dim)
        outputs, hidden = self.lstm(embedded, hidden)  # outputs (batch, time, hidden_size)
        return self.head(outputs), hidden  # logits (batch, time, vocab_size)
