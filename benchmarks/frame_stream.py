"""Frames per second of the live Atari stream alone (no model): what the GAN's data side costs.

python benchmarks/frame_stream.py --batches 300
"""

import argparse
import time

from datasets.atari import DEFAULT_GAMES, FrameStream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    stream = FrameStream(DEFAULT_GAMES, args.batch_size, args.image_size, seed=0)
    next(stream)  # first reset and ROM load are not steady state
    start = time.perf_counter()
    for _ in range(args.batches):
        next(stream)
    seconds = time.perf_counter() - start
    frames = args.batches * args.batch_size
    size = f"{args.image_size}x{args.image_size}"
    print(f"{args.batches} batches of {args.batch_size} frames ({size}) in {seconds:.2f} s:")
    print(f"  {seconds / args.batches * 1000:.2f} ms per batch, {frames / seconds:,.0f} frames/s kept")
    state_start = time.perf_counter()
    for _ in range(100):
        stream.state_dict()
    print(f"  state_dict(): {(time.perf_counter() - state_start) * 10:.2f} ms (3 emulator states + RNGs)")


if __name__ == "__main__":
    main()
