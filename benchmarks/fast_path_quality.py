"""Does the fast path keep quality? Atari-FID after a fixed number of iterations, fast path vs the book's fp32 step.

    python benchmarks/fast_path_quality.py --iters 3000 --eval-every 500 --seeds 0 1

For each seed, two runs of ``scripts/atari_gan.py`` at the chapter's sizes: its defaults (the fast path) and
``--precision fp32 --no-channels-last --no-fused-adam --kernel-plan book`` (the book's arithmetic; the remaining
switches change no number). Both evaluate Atari-FID every ``--eval-every`` iterations on the same held-apart real
frames and fixed noise. "Within noise" means: the gap between the two paths at one seed is no larger than the gap
between seeds on one path. Around 1,500 iterations a run of this GAN leaves its collapsed phase, and when exactly
varies from trajectory to trajectory (FID 100 or 500 at the same iteration), so compare later iterations.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOK_ARITHMETIC = ["--precision", "fp32", "--no-channels-last", "--no-fused-adam", "--kernel-plan", "book"]
PATHS = {"fast path (defaults)": [], "fp32 (book arithmetic)": BOOK_ARITHMETIC}  # --paths: the first words


def fid_curve(iters: int, every: int, seed: int, flags: list[str]) -> tuple[dict[int, float], float]:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(REPO / "scripts" / "atari_gan.py"), "--dev", "cpu", "--seed", str(seed)]
        command += ["--max-iters", str(iters), "--eval-every", str(every), "--log-every", "100"]
        command += ["--output-dir", f"{folder}/run", *flags]
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in Path(f"{folder}/run/metrics.jsonl").read_text().splitlines()]
    return {r["iteration"]: r["fid"] for r in records if "fid" in r}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["fast", "fp32"],
        default=["fast", "fp32"],
        help="which paths to run (the fp32 path changes only when the book's arithmetic does)",
    )
    args = parser.parse_args()
    chosen = {name: flags for name, flags in PATHS.items() if name.split()[0] in args.paths}
    curves: dict[tuple[str, int], dict[int, float]] = {}
    for seed in args.seeds:
        for name, flags in chosen.items():
            curves[name, seed], seconds = fid_curve(args.iters, args.eval_every, seed, flags)
            shown = " ".join(f"{fid:.1f}" for fid in curves[name, seed].values())
            print(f"seed {seed}, {name} ({seconds:.0f} s): Atari-FID {shown}", flush=True)
    iterations = sorted(next(iter(curves.values())))
    print(f"\nAtari-FID (512 frames, 64x64) at iterations {', '.join(map(str, iterations))}:")
    print("| path | seed | " + " | ".join(map(str, iterations)) + " | best |")
    print("| --- | --- | " + " | ".join("---" for _ in iterations) + " | --- |")
    for (name, seed), curve in curves.items():
        values = " | ".join(f"{curve[i]:.1f}" for i in iterations)
        print(f"| {name} | {seed} | {values} | {min(curve.values()):.1f} |")


if __name__ == "__main__":
    main()
