"""Does G's moving average lose FID to the BatchNorm statistics it is evaluated with?

Ignite's ``EMAHandler`` averages the weights and copies the buffers: the average runs in ``eval()`` with G's running
BatchNorm statistics, which belong to G's current weights, not to the averaged ones. This re-evaluates saved
checkpoints with the run's own Atari-FID (same real frames, same noise) four ways: G and the average as the run
evaluates them, and each with its own statistics ("standing statistics": the running statistics recomputed by
train-mode passes over fresh noise, a cumulative average, on a copy; nothing in the checkpoint changes).

    python benchmarks/ema_batch_stats.py runs/evidence/stable64-s0/checkpoints/checkpoint_10500.pt [...]
"""

import argparse
import copy
import functools
from pathlib import Path

import torch

from datasets.atari import spaced_frames
from engines.gan import create_fid_evaluator, fid_batches
from runner.checkpoint_files import load_checkpoint
from runner.settings import make_settings
from tasks.atari_fid import LazyFeatures, load_frame_classifier
from tasks.atari_gan import EVAL_SEED_OFFSET, FID_BATCH, AtariGanSettings, make_networks

BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def with_standing_statistics(generator: torch.nn.Module, latent_size: int, batches: int, batch_size: int):
    """A copy of ``generator`` whose BatchNorm running statistics are its own, from ``batches`` of fresh noise."""
    standing = copy.deepcopy(generator)
    for module in standing.modules():
        if isinstance(module, BATCH_NORMS):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the passes
    standing.train()
    source = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for _ in range(batches):
            standing(torch.randn(batch_size, latent_size, 1, 1, generator=source))
    return standing.eval()


def evaluate(path: Path, batches: int, batch_size: int) -> dict[str, float]:
    state = load_checkpoint(path)
    settings = make_settings(AtariGanSettings, {**state["settings"], "resume": "", "output_dir": "unused"})
    generator, _ = make_networks(settings)
    generator.load_state_dict(state["generator"])
    average, _ = make_networks(settings)
    average.load_state_dict(state["generator_ema"])
    own = functools.partial(
        with_standing_statistics, latent_size=settings.latent_size, batches=batches, batch_size=batch_size
    )
    generators = {
        "fid": generator,
        "fid_ema": average,
        "fid_own_stats": own(generator),
        "fid_ema_own_stats": own(average),
    }
    cpu = torch.device("cpu")
    features = LazyFeatures(lambda: load_frame_classifier(settings.image_size, say=print), cpu)
    seed = settings.seed + EVAL_SEED_OFFSET  # the run's own evaluation: its real frames and its noise
    real = functools.partial(spaced_frames, settings.games, settings.fid_samples, settings.image_size, seed=seed)
    noise = torch.randn(settings.fid_samples, settings.latent_size, 1, 1, generator=torch.Generator().manual_seed(seed))
    evaluator = create_fid_evaluator(generators, features, real, noise, FID_BATCH, cpu)
    evaluator.run(fid_batches(settings.fid_samples, FID_BATCH))
    return {name: float(value) for name, value in evaluator.state.metrics.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=64, help="train-mode passes for the statistics (default 64)")
    parser.add_argument("--batch-size", type=int, default=64, help="noise per pass (default 64)")
    args = parser.parse_args()
    print("| checkpoint | fid (as run) | fid_ema (as run) | fid, own statistics | fid_ema, own statistics |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.checkpoints:
        fid = evaluate(path, args.batches, args.batch_size)
        cells = [fid["fid"], fid["fid_ema"], fid["fid_own_stats"], fid["fid_ema_own_stats"]]
        print(f"| {path} | " + " | ".join(f"{value:.2f}" for value in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
