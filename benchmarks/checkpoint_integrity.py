"""What checking a checkpoint's bytes costs: save, check and load times of a real Atari GAN checkpoint.

    python benchmarks/checkpoint_integrity.py              # the chapter's sizes (64x64, 64 filters, batch 16)
    python benchmarks/checkpoint_integrity.py --repeats 20

It trains the Atari GAN for one iteration at the given sizes (no FID), then times, on that run's checkpoint, a save
as the runner writes it (``save_atomically``: serialise, write, fsync, rename), ``verify_torch_file`` (every entry's
CRC-32 checked) and ``torch.load(weights_only=True)``. Medians over ``--repeats``; results in docs/reliability.md.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from runner.files import save_atomically, verify_torch_file

REPO = Path(__file__).resolve().parents[1]


def median_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(flags: list[str], repeats: int) -> dict[str, float]:
    """Seconds per save, check and load of a one-iteration run's checkpoint, and its size in MB."""
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        command = [sys.executable, str(REPO / "scripts" / "atari_gan.py"), "--max-iters", "1", "--eval-every", "0"]
        subprocess.run([*command, "--output-dir", str(run), *flags], check=True, capture_output=True, cwd=REPO)
        path = run / "checkpoints" / "checkpoint_1.pt"
        state = torch.load(path, weights_only=True)
        copy = Path(folder) / "copy.pt"
        return {
            "size_mb": path.stat().st_size / 1e6,
            "save": median_seconds(lambda: save_atomically(state, copy), repeats),
            "check": median_seconds(lambda: verify_torch_file(path), repeats),
            "load": median_seconds(lambda: torch.load(path, map_location="cpu", weights_only=True), repeats),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--flags", default="", help="extra atari_gan.py flags, e.g. '--image-size 16 --filters 4'")
    args = parser.parse_args()
    times = measure(args.flags.split(), args.repeats)
    print(f"checkpoint {times['size_mb']:.1f} MB; median of {args.repeats}:")
    print(f"  save (serialise, write, fsync, rename)  {times['save'] * 1e3:7.1f} ms")
    print(f"  check (every entry's CRC-32)            {times['check'] * 1e3:7.1f} ms")
    print(f"  load (torch.load, weights_only)         {times['load'] * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
