"""CharRNN: the shapes of its outputs, and a carried state that continues a sequence exactly."""

import warnings

import torch

from models.char_rnn import CharRNN


def test_logits_per_step_and_a_state_per_layer():
    model = CharRNN(vocab_size=11, embedding_dim=8, hidden_size=16, num_layers=2)
    logits, (h, c) = model(torch.randint(0, 11, (3, 7)))
    assert logits.shape == (3, 7, 11)
    assert h.shape == c.shape == (2, 3, 16)


def test_carrying_the_state_across_chunks_equals_one_pass_over_the_whole_sequence():
    torch.manual_seed(0)
    model = CharRNN(vocab_size=5, embedding_dim=4, hidden_size=6, num_layers=2).eval()
    tokens = torch.randint(0, 5, (2, 12))
    whole, _ = model(tokens)
    first, hidden = model(tokens[:, :5])
    second, _ = model(tokens[:, 5:], hidden)
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-6)


def test_one_layer_with_dropout_builds_without_the_lstm_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CharRNN(vocab_size=5, embedding_dim=4, hidden_size=6, num_layers=1, dropout=0.5)
