"""A GAN run's Atari-FID in figures: each generator's best, and its spread over the last third of the run.

    python benchmarks/fid_summary.py runs/atari_gan-<time> [--plot fid.png]

Prints, for ``fid`` (G) and ``fid_ema`` (its moving average): the best value and its iteration, then over the
evaluations of the last third of the iterations the min, max, mean and standard deviation; and one Markdown table
row per evaluation, for docs/atari_gan.md. ``--plot`` draws both curves on one axis (log scale).
"""

import argparse
import statistics
from pathlib import Path

from handlers.metrics_log import records_by_iteration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--plot", type=Path, help="a PNG of both curves")
    args = parser.parse_args()
    records = records_by_iteration(args.run_dir / "metrics.jsonl")
    evaluated = {i: r for i, r in sorted(records.items()) if isinstance(r.get("fid"), int | float)}
    last = max(evaluated)
    for key in ("fid", "fid_ema"):
        values = {i: r[key] for i, r in evaluated.items() if isinstance(r.get(key), int | float)}
        if not values:
            continue
        best = min(values, key=values.get)
        tail = [v for i, v in values.items() if i > last * 2 / 3]
        print(
            f"{key}: best {values[best]:.1f} at iteration {best}; last third ({len(tail)} evaluations): "
            f"min {min(tail):.1f}, max {max(tail):.1f}, mean {statistics.mean(tail):.1f}, "
            f"std {statistics.pstdev(tail):.1f}"
        )
    if args.plot:
        plot(evaluated, args.plot)
    print("| iteration | fid | fid_ema |\n| --- | --- | --- |")
    for iteration, record in evaluated.items():
        print(f"| {iteration} | {record['fid']:.1f} | {record.get('fid_ema', float('nan')):.1f} |")


def plot(evaluated: dict[int, dict], out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for key, label in (("fid", "G"), ("fid_ema", "moving average of G (decay 0.999)")):
        points = [(i, r[key]) for i, r in evaluated.items() if isinstance(r.get(key), int | float)]
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Atari-FID (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(out)


if __name__ == "__main__":
    main()
