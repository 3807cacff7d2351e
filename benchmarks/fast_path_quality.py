"""Does the fast path keep quality? Atari-FID after a fixed number of iterations, fast path vs the book's fp32 step.

    python benchmarks/fast_path_quality.py --iters 1500 --seeds 0 1

For each seed, two runs of ``scripts/atari_gan.py`` at the chapter's sizes: its defaults (the fast path) and
``--precision fp32 --no-channels-last --no-fused-adam`` (the book's arithmetic; the remaining switches change no
number). Both evaluate Atari-FID once, at the last iteration, on the same held-apart real frames and fixed noise.
"Within noise" means: the gap between the two paths at one seed is no larger than the gap between seeds on one path.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATHS = {"fast path (defaults)": [], "fp32 (book arithmetic)": ["--precision", "fp32", "--no-channels-last",
                                                                 "--no-fused-adam"]}  # fmt: skip


def final_fid(iters: int, seed: int, flags: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(REPO / "scripts" / "atari_gan.py"), "--dev", "cpu", "--seed", str(seed),
                   "--max-iters", str(iters), "--eval-every", str(iters), "--log-every", "100",
                   "--output-dir", f"{folder}/run", *flags]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in Path(f"{folder}/run/metrics.jsonl").read_text().splitlines()]
    return next(r["fid"] for r in records if "fid" in r), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    results: dict[str, dict[int, float]] = {name: {} for name in PATHS}
    for seed in args.seeds:
        for name, flags in PATHS.items():
            fid, seconds = final_fid(args.iters, seed, flags)
            results[name][seed] = fid
            print(f"seed {seed}, {name}: Atari-FID {fid:.1f} after {args.iters} iterations ({seconds:.0f} s)",
                  flush=True)  # fmt: skip
    print(f"\nAtari-FID after {args.iters} iterations (512 frames, 64x64):")
    print("| seed | " + " | ".join(PATHS) + " |")
    print("| --- | " + " | ".join("---" for _ in PATHS) + " |")
    for seed in args.seeds:
        print(f"| {seed} | " + " | ".join(f"{results[name][seed]:.1f}" for name in PATHS) + " |")


if __name__ == "__main__":
    main()
