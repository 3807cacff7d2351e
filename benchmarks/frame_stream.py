"""Frames per second of the live Atari stream alone (no model): what the GAN's data side costs.

python benchmarks/frame_stream.py --batches 300

It times the stream in the calling thread, then through the background producer (``datasets.prefetch``) with a
consumer that only takes batches: the producer's own rate, its state capture per batch included.
"""

import argparse
import time

from datasets.atari import DEFAULT_GAMES, FrameStream
from datasets.prefetch import Prefetched


def time_batches(stream, batches: int) -> float:
    next(stream)  # first reset, ROM load and thread start are not steady state
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    stream = FrameStream(DEFAULT_GAMES, args.batch_size, args.image_size, seed=0)
    frames = args.batches * args.batch_size
    size = f"{args.image_size}x{args.image_size}"
    seconds = time_batches(stream, args.batches)
    print(f"{args.batches} batches of {args.batch_size} frames ({size}) in {seconds:.2f} s:")
    print(f"  {seconds / args.batches * 1000:.2f} ms per batch, {frames / seconds:,.0f} frames/s kept")
    producer = Prefetched(FrameStream(DEFAULT_GAMES, args.batch_size, args.image_size, seed=0), depth=2)
    seconds = time_batches(producer, args.batches)
    producer.close()
    print(f"  background producer: {seconds / args.batches * 1000:.2f} ms per batch, {frames / seconds:,.0f} frames/s")
    state_start = time.perf_counter()
    for _ in range(100):
        stream.state_dict()
    print(f"  state_dict(): {(time.perf_counter() - state_start) * 10:.2f} ms (3 emulator states + RNGs)")


if __name__ == "__main__":
    main()
