"""Frames per second of the live Atari stream alone (no model): what the GAN's data side costs.

    python benchmarks/frame_stream.py --batches 300               # in this thread, then the background producer
    python benchmarks/frame_stream.py --workers 1 2 --batches 600  # through N producer processes (--producer-workers)
    python benchmarks/frame_stream.py --workers 4 --json           # one JSON line per N (benchmarks/gpu_check.py)

Without ``--workers`` it times the stream in the calling thread, then through the background producer
(``datasets.prefetch``) with a consumer that only takes batches: the producer's own rate, its state capture per batch
included. With ``--workers N...`` it times ``datasets.workers.WorkerFrames`` for each N, the consumer taking batches
as training would (each made into a float tensor here); start-up is timed apart from the steady rate.
"""

import argparse
import json
import time

from datasets.atari import DEFAULT_GAMES, FrameStream
from datasets.prefetch import Prefetched
from datasets.workers import WorkerFrames


def time_batches(stream, batches: int) -> float:
    next(stream)  # first reset, ROM load and thread or process start are not steady state
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return time.perf_counter() - start


def in_process(args: argparse.Namespace) -> None:
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


def through_workers(workers: int, args: argparse.Namespace) -> dict:
    stream = WorkerFrames(DEFAULT_GAMES, args.batch_size, args.image_size, seed=0, workers=workers)
    started = time.perf_counter()
    for _ in range(workers):  # every worker's first batch: process start, imports, ROM loads
        next(stream)
    start_up = time.perf_counter() - started
    seconds = time_batches(stream, args.batches)
    stream.close()
    frames_per_s = args.batches * args.batch_size / seconds
    return {"workers": workers, "frames_per_s": round(frames_per_s, 1), "start_up_s": round(start_up, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", help="time N producer processes, for each N given")
    parser.add_argument("--json", action="store_true", help="with --workers: one JSON line per N")
    args = parser.parse_args()
    if not args.workers:
        in_process(args)
        return
    for workers in args.workers:
        result = through_workers(workers, args)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(
                f"{workers} producer process(es): {result['frames_per_s']:,.0f} frames/s "
                f"({args.batch_size} frames of {args.image_size}x{args.image_size} per batch), "
                f"{result['start_up_s']:.1f} s to start",
                flush=True,
            )


if __name__ == "__main__":
    main()
