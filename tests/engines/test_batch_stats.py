"""with_own_statistics: a copy of a generator with BatchNorm statistics of its own weights, nothing else touched."""

import torch
from torch import nn

from engines.batch_stats import with_own_statistics
from models.dcgan import Generator


def small_generator() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_the_statistics_are_the_mean_and_variance_of_its_own_activations():
    generator = small_generator()
    own = with_own_statistics(generator, latent_size=4, seed=7, passes=5, pass_size=32)
    source = torch.Generator().manual_seed(7)
    noise = torch.cat([torch.randn(32, 4, 1, 1, generator=source) for _ in range(5)])
    with torch.no_grad():
        activations = generator[1](generator[0](noise))
    torch.testing.assert_close(own[2].running_mean, activations.mean(dim=0))
    per_pass = activations.view(5, 32, 6).var(dim=1, unbiased=True).mean(dim=0)  # what BatchNorm accumulates
    torch.testing.assert_close(own[2].running_var, per_pass)
    assert not own.training


def test_the_generator_the_run_and_its_rngs_are_untouched():
    generator = small_generator().train()
    before = {name: value.clone() for name, value in generator.state_dict().items()}
    rng = torch.get_rng_state()
    own = with_own_statistics(generator, latent_size=4, seed=7)
    assert own is not generator and generator.training
    assert all(torch.equal(value, before[name]) for name, value in generator.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    again = with_own_statistics(generator, latent_size=4, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(own.buffers(), again.buffers(), strict=True))  # the same each time


def test_a_generator_without_batch_norm_is_shown_as_it_is():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    assert with_own_statistics(plain, latent_size=4, seed=0) is plain


def test_the_dcgan_generator_gets_its_own_statistics_in_every_layer():
    generator = Generator(image_size=16, filters=4, latent_size=8)
    own = with_own_statistics(generator, latent_size=8, seed=1, passes=2, pass_size=8)
    layers = [m for m in own.modules() if isinstance(m, nn.BatchNorm2d)]
    assert layers and all(int(layer.num_batches_tracked) == 2 for layer in layers)
    assert own(torch.randn(3, 8, 1, 1)).shape == (3, 3, 16, 16)


def test_a_runs_view_makes_each_generators_copy_once_per_state_of_its_weights(monkeypatch):
    import engines.batch_stats as batch_stats

    made = []
    make = batch_stats.with_own_statistics
    monkeypatch.setattr(batch_stats, "with_own_statistics", lambda *args: made.append(1) or make(*args))
    generator, other = small_generator(), small_generator()
    shown = batch_stats.OwnStatistics(latent_size=4, seed=7, passes=3)
    first = shown(generator)
    assert shown(generator) is first and len(made) == 1  # the sheets and the evaluation of one iteration
    assert shown(other) is not first and len(made) == 2  # each generator its own
    with torch.no_grad():
        generator[1].weight.add_(0.1)  # a training step
    again = shown(generator)
    assert again is not first and len(made) == 3
    expected = make(generator, 4, 7, 3)
    assert all(torch.equal(a, b) for a, b in zip(again.buffers(), expected.buffers(), strict=True))
    assert shown(generator, passes=2) is again and len(made) == 3  # fewer passes: the copy there is serves
    assert shown(generator, passes=5) is not again and len(made) == 4  # more: made again
