"""A generator's own BatchNorm statistics, for evaluating and sampling it ("standing statistics", BigGAN's term).

In ``eval()`` a BatchNorm layer normalises with running statistics that training gathered from past weights. That
lag costs G itself some quality. The moving average of G suffers more: Ignite's ``EMAHandler`` averages the weights and
*copies* G's buffers, so the average is normalised with statistics that belong to other weights. On the Atari GAN at
the chapter's sizes, with its own statistics the average's Atari-FID was 3.4 where the run measured 18.8
(``benchmarks/ema_batch_stats.py``, docs/atari_gan.md).

``with_own_statistics`` gives a copy of the generator whose running statistics are recomputed for its weights.
It runs cumulative train-mode passes over noise from its own seeded generator. The run's generator, its RNGs and its
checkpoint are untouched, so a run that evaluates trains exactly as one that does not.

    shown = with_own_statistics(ema_generator, latent_size=100, seed=1_000_004)
    images = shown(noise)   # eval mode, its own statistics

``OwnStatistics`` is the same for a run: it remakes a generator's copy only when its weights have changed.
"""

import copy

import torch
from torch import nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# 4,096 noise vectors. Fewer make noisier statistics, and any error in them costs FID: on the stable recipe's seed 0
# at 12,000 iterations (docs/atari_gan.md), G's Atari-FID with statistics from 1,024 vectors was 9.0-9.5 (two
# seeds of the noise), from 4,096 8.0-8.4, from 16,384 7.7; the moving average's 3.2-3.5 throughout.
PASSES = 64
PASS_SIZE = 64
# What a sample sheet is shown with: 512 vectors look the same, at an eighth of the cost (64 passes of G at the
# chapter's sizes take 9.5 s on 2 cores of an AVX2 EPYC).
SHEET_PASSES = 8


def batch_norms(module: nn.Module) -> list[nn.Module]:
    return [layer for layer in module.modules() if isinstance(layer, BATCH_NORMS)]


@torch.no_grad()
def with_own_statistics(
    generator: nn.Module, latent_size: int, seed: int, passes: int = PASSES, pass_size: int = PASS_SIZE
) -> nn.Module:
    """A copy of ``generator`` in eval mode, its BatchNorm statistics recomputed for its weights from ``passes``
    batches of ``pass_size`` noise vectors (seeded by ``seed``); ``generator`` itself when it has no BatchNorm."""
    if not batch_norms(generator):
        return generator
    own = copy.deepcopy(generator)
    for layer in batch_norms(own):
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the passes, not an exponential one
    own.train()
    device = next(own.parameters()).device
    source = torch.Generator().manual_seed(seed)
    for _ in range(passes):
        own(torch.randn(pass_size, latent_size, 1, 1, generator=source).to(device))
    return own.eval()


def weights_fingerprint(module: nn.Module) -> tuple[float, ...]:
    """A number per parameter tensor (its sum, in float64): equal while the weights are unchanged."""
    with torch.no_grad():
        return tuple(float(parameter.double().sum()) for parameter in module.parameters())


class OwnStatistics:
    """``with_own_statistics`` for a run: each generator's copy is made once for its weights as they are, and serves
    every request for as many passes or fewer, so the sample sheet and the evaluation of one iteration share it."""

    def __init__(self, latent_size: int, seed: int, passes: int = PASSES):
        self.latent_size, self.seed, self.passes = latent_size, seed, passes
        self._made: dict[int, tuple[tuple[float, ...], int, nn.Module]] = {}  # id -> fingerprint, passes, copy

    def __call__(self, generator: nn.Module, passes: int | None = None) -> nn.Module:
        passes = passes or self.passes
        fingerprint = weights_fingerprint(generator)
        made = self._made.get(id(generator))
        if made is None or made[0] != fingerprint or made[1] < passes:
            made = (fingerprint, passes, with_own_statistics(generator, self.latent_size, self.seed, passes))
            self._made[id(generator)] = made
        return made[2]

    def for_sheets(self, generator: nn.Module) -> nn.Module:
        return self(generator, SHEET_PASSES)
