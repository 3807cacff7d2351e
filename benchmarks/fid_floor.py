"""Atari-FID's floor: the FID between two sets of real frames of the GAN's games, from other episodes.

    python benchmarks/fid_floor.py --image-size 64          # the chapter's size
    python benchmarks/fid_floor.py --image-size 32 --pairs 3

No generator can be told from the real frames by less than this (with the same number of samples: FID's estimate is
biased upwards by a finite sample). Each pair draws ``--samples`` frames with seed ``100 + k`` and as many with seed
``200 + k`` (every 4th frame of a random agent, as the evaluations' real frames) and measures them with the cached
classifier of that size, as a run's evaluations do.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
from ignite.metrics import FID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.atari import DEFAULT_GAMES, spaced_frames  # noqa: E402
from tasks.atari_fid import LazyFeatures, load_frame_classifier  # noqa: E402


def fid_between(first: torch.Tensor, second: torch.Tensor, features: torch.nn.Module) -> float:
    metric = FID(num_features=features.feature_size, feature_extractor=features)
    with torch.no_grad():
        for start in range(0, len(first), 256):
            metric.update((second[start : start + 256], first[start : start + 256]))
    return float(metric.compute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=512, help="frames per set (the runs' --fid-samples)")
    parser.add_argument("--pairs", type=int, default=1, help="pairs of sets, each from other episodes")
    args = parser.parse_args()
    features = LazyFeatures(lambda: load_frame_classifier(args.image_size), torch.device("cpu"))  # as a run's
    values = []
    for k in range(args.pairs):
        first = spaced_frames(DEFAULT_GAMES, args.samples, args.image_size, seed=100 + k)
        second = spaced_frames(DEFAULT_GAMES, args.samples, args.image_size, seed=200 + k)
        values.append(fid_between(first, second, features))
        print(f"pair {k}: real vs real FID {values[-1]:.2f}", flush=True)
    spread = f" (min {min(values):.2f}, max {max(values):.2f})" if len(values) > 1 else ""
    print(
        f"{features.name}, {args.image_size}x{args.image_size}, {args.samples} frames per set: "
        f"mean {statistics.mean(values):.2f}{spread}"
    )


if __name__ == "__main__":
    main()
