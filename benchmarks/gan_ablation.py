"""The Atari GAN's techniques measured one at a time: each added alone to ``book``, each removed from ``stable``, and
the ones ``stable`` leaves out added to it.

    python benchmarks/gan_ablation.py --out runs/ablation --seeds 0 1 --jobs 2            # every configuration
    python benchmarks/gan_ablation.py --out runs/ablation --only book book+hinge stable-r1-weight  # some of them
    python benchmarks/gan_ablation.py --out runs/ablation --summary-only --table docs/t.md # the table again

Each configuration trains ``scripts/atari_gan.py`` at a reduced size (default: 32x32 frames, 32 filters, batch 16,
3,000 iterations, Atari-FID every 250) once per seed, in ``<out>/<configuration>-s<seed>``. The command can be
stopped and run again: a finished run is kept, an interrupted one resumes from its checkpoint (exactly), a missing
one starts. ``--jobs N`` trains N runs side by side, each on cores/N threads.

The summary has one row per configuration: for the moving average of G (``fid_ema``) and for G (``fid``), the best
Atari-FID of each seed and, over the evaluations of each run's last third, the mean and the max (the worst seen
there: a collapse shows in it).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handlers.metrics_log import records_by_iteration  # noqa: E402
from runner.checkpoint_files import checkpoint_files  # noqa: E402
from tasks.gan_settings import RECIPES  # noqa: E402

AUGMENT_ALL = ["--augment", "translation,color,cutout"]
# What each technique is, as flags on top of book ("book+name"); "stable-name" removes one from the recipe.
TECHNIQUES = {
    "spectral": ["--d-norm", "spectral"],
    "hinge": ["--loss", "hinge"],
    "relativistic": ["--loss", "relativistic"],
    "r1": ["--r1-weight", str(RECIPES["stable"]["r1_weight"])],
    "ttur": ["--dis-lr", str(RECIPES["stable"]["dis_lr"]), "--gen-lr", str(RECIPES["stable"]["gen_lr"])],
    "diffaugment": AUGMENT_ALL,
    "ada": [*AUGMENT_ALL, "--augment-p", "0", "--ada-target", "0.6"],
    "ema-warmup": ["--ema-warmup", str(RECIPES["stable"]["ema_warmup"])],
}
# The flags that take a technique of stable back to the book's value.
REMOVALS = {
    "loss": ["--loss", "bce"],
    "d_norm": ["--d-norm", "batchnorm"],
    "dis_lr": ["--dis-lr", "0", "--gen-lr", "0"],
    "r1_weight": ["--r1-weight", "0"],
    "augment": ["--augment", "none", "--augment-p", "1", "--ada-target", "0"],
    "ema_warmup": ["--ema-warmup", "0"],
    "beta1": ["--beta1", "0.5", "--beta2", "0.999"],
}


# What stable leaves out, tried on top of it: does it help a GAN that trains?
STABLE_ADDITIONS = ("spectral", "hinge", "diffaugment", "ada")


def configurations() -> dict[str, list[str]]:
    """Name -> the launcher's flags: book, book+technique, stable, stable-technique (for each of stable's),
    stable+technique (for what it leaves out)."""
    found = {"book": []}
    found.update({f"book+{name}": flags for name, flags in TECHNIQUES.items()})
    found["stable"] = ["--recipe", "stable"]
    stable = RECIPES["stable"]
    for key, flags in REMOVALS.items():
        if key in stable:
            found[f"stable-{key.replace('_', '-')}"] = ["--recipe", "stable", *flags]
    found.update({f"stable+{name}": ["--recipe", "stable", *TECHNIQUES[name]] for name in STABLE_ADDITIONS})
    return found


def run_state(run_dir: Path, iterations: int) -> str:
    """``done``, ``partial`` (a checkpoint to resume) or ``new``."""
    files = checkpoint_files(run_dir / "checkpoints") if (run_dir / "checkpoints").exists() else []
    if not files:
        return "new"
    last = max(int(path.stem.rsplit("_", 1)[1]) for path in files)
    return "done" if last >= iterations else "partial"


def train(run_dir: Path, flags: list[str], args: argparse.Namespace, threads: int) -> str:
    state = run_state(run_dir, args.iters)
    if state == "done":
        return f"{run_dir.name}: done already"
    if state == "new" and run_dir.exists():  # killed before its first checkpoint: start it again, keep the remains
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.interrupted-{time.time_ns()}"))
    size = ["--image-size", str(args.size), "--filters", str(args.filters), "--batch-size", str(args.batch_size)]
    schedule = ["--max-iters", str(args.iters), "--eval-every", str(args.eval_every), "--log-every", "50"]
    common = [*schedule, "--image-every", str(args.iters // 2), "--checkpoint-every", str(args.eval_every)]
    command = [sys.executable, str(ROOT / "scripts" / "atari_gan.py"), "--dev", "cpu", "--precision", "fp32"]
    if state == "partial":
        command += ["--resume", str(run_dir), "--max-iters", str(args.iters)]
    else:
        command += [*size, *common, "--seed", run_dir.name.rsplit("-s", 1)[1], *flags, "--output-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    log = (run_dir.parent / f"{run_dir.name}.log").open("a")
    code = subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return f"{run_dir.name}: exit {code} after {time.perf_counter() - started:.0f} s ({state})"


def fid_figures(run_dir: Path, key: str) -> tuple[float, int, float, float] | None:
    """(best, its iteration, mean and max over the last third's evaluations) of ``key``, or None."""
    records = records_by_iteration(run_dir / "metrics.jsonl")
    values = {i: r[key] for i, r in sorted(records.items()) if isinstance(r.get(key), int | float)}
    if not values:
        return None
    best = min(values, key=values.get)
    tail = [value for iteration, value in values.items() if iteration > max(values) * 2 / 3]
    return values[best], best, statistics.mean(tail), max(tail)


def summary(out: Path, names: list[str], seeds: list[int]) -> str:
    """One row per configuration: per seed, the best FID and, over the last third, its mean (and max)."""
    lines = [
        f"| configuration | fid_ema best, seeds {', '.join(map(str, seeds))} | fid_ema last third: mean (max) | "
        "fid best | fid last third: mean (max) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names:
        cells = []
        for key in ("fid_ema", "fid"):
            figures = [fid_figures(out / f"{name}-s{seed}", key) for seed in seeds]
            figures = [figure for figure in figures if figure is not None]
            cells.append(", ".join(f"{best:.1f}" for best, *_ in figures) or "–")
            cells.append(", ".join(f"{mean:.1f} ({worst:.1f})" for _, _, mean, worst in figures) or "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", nargs="+", help="these configurations (default: all)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--table", type=Path, help="also write the summary table here")
    args = parser.parse_args()
    every = configurations()
    names = args.only or list(every)
    unknown = [name for name in names if name not in every]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(every)}")
    if not args.summary_only:
        args.out.mkdir(parents=True, exist_ok=True)
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        runs = [(args.out / f"{name}-s{seed}", every[name]) for seed in args.seeds for name in names]
        with ThreadPoolExecutor(args.jobs) as pool:
            for line in pool.map(lambda run: train(*run, args, threads), runs):
                print(line, flush=True)
    table = summary(args.out, names, args.seeds)
    print(table)
    if args.table:
        args.table.write_text(table + "\n")


if __name__ == "__main__":
    main()
