"""A GAN run's Atari-FID in figures: each generator's best, and its spread over the last third of the run.

    python benchmarks/fid_summary.py runs/atari_gan-<time>

Prints, for ``fid`` (G) and ``fid_ema`` (its moving average): the best value and its iteration, then over the
evaluations of the last third of the iterations the min, max, mean and standard deviation; and one Markdown table
row per evaluation, for docs/atari_gan.md.
"""

import argparse
import statistics
from pathlib import Path

from handlers.metrics_log import records_by_iteration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
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
    print("| iteration | fid | fid_ema |\n| --- | --- | --- |")
    for iteration, record in evaluated.items():
        print(f"| {iteration} | {record['fid']:.1f} | {record.get('fid_ema', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
