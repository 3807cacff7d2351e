"""GAN runs' Atari-FID in figures: each generator's best, and its spread over the last third of the run.

    python benchmarks/fid_summary.py runs/atari_gan-<time> [--plot fid.png]
    python benchmarks/fid_summary.py runs/stable-s0 runs/stable-s1 runs/book-s0 --keys fid_ema --plot fids.png
    python benchmarks/fid_summary.py runs/stable-s0 --records own_statistics.jsonl   # ema_batch_stats.py's records
    python benchmarks/fid_summary.py runs/book-s0 runs/stable-s0 runs/stable-s0/own_statistics.jsonl --keys fid_ema

Prints, for ``fid`` (G) and ``fid_ema`` (its moving average): the best value and its iteration, then over the
evaluations of the last third of the iterations the min, max, mean and standard deviation, and the largest value
there as a multiple of the best (a collapse shows in it); and one Markdown table row per evaluation, for
docs/atari_gan.md. With several runs each line is prefixed by the run's folder name, and the table has a column per
run and key. A records file given in place of a run directory is read as it is (named by its folder and file), so
runs and re-evaluations share one table and plot. ``--plot`` draws every curve on one axis (log scale); a curve
evaluated with training's running statistics (``"fid_statistics": "running"``, or runs from before the field) is
dashed, and a branch's curve is dashed up to where its own evaluations (own statistics) begin.
"""

import argparse
import statistics
from pathlib import Path

from handlers.metrics_log import records_by_iteration

KEYS = ("fid", "fid_ema")
LABELS = {"fid": "G", "fid_ema": "moving average of G"}


def evaluations(run_dir: Path, records_name: str = "metrics.jsonl") -> dict[int, dict]:
    """The run's evaluations by iteration; ``run_dir`` may instead be a records file, read as it is."""
    records = records_by_iteration(run_dir if run_dir.is_file() else run_dir / records_name)
    return {i: r for i, r in sorted(records.items()) if isinstance(r.get("fid"), int | float)}


def run_name(path: Path) -> str:
    return f"{path.parent.name} {path.stem}" if path.is_file() else path.name


def with_running_statistics(evaluated: dict[int, dict]) -> bool:
    return any(statistics_of(record) == "running" for record in evaluated.values())


def statistics_of(record: dict) -> str:
    return record.get("fid_statistics", "running")


def segments(points: list[tuple[int, float, str]]) -> list[list[tuple[int, float, str]]]:
    """Consecutive points evaluated alike; each segment after the first starts at the previous one's last point, so
    the curve stays joined where the evaluation changed."""
    parts: list[list[tuple[int, float, str]]] = []
    for point in points:
        if parts and parts[-1][-1][2] == point[2]:
            parts[-1].append(point)
        else:
            parts.append(([parts[-1][-1]] if parts else []) + [point])
    return parts


def statistics_note(points: list[tuple[int, float, str]]) -> str:
    running = [i for i, _, statistics in points if statistics == "running"]
    if not running:
        return ""
    return " (running statistics)" if len(running) == len(points) else f" (running statistics to {max(running)})"


def summary_line(evaluated: dict[int, dict], key: str) -> str | None:
    values = {i: r[key] for i, r in evaluated.items() if isinstance(r.get(key), int | float)}
    if not values:
        return None
    best = min(values, key=values.get)
    tail = [v for i, v in values.items() if i > max(evaluated) * 2 / 3]
    return (
        f"{key}: best {values[best]:.1f} at iteration {best}; last third ({len(tail)} evaluations): "
        f"min {min(tail):.1f}, max {max(tail):.1f}, mean {statistics.mean(tail):.1f}, "
        f"std {statistics.pstdev(tail):.1f}; max/best {max(tail) / values[best]:.2f}"
    )


def table(runs: dict[str, dict[int, dict]], keys: list[str]) -> list[str]:
    several = len(runs) > 1
    columns = [(name, key) for name in runs for key in keys]
    header = [f"{name} {key}" if several else key for name, key in columns]
    lines = ["| iteration | " + " | ".join(header) + " |", "| --- |" + " --- |" * len(columns)]
    for iteration in sorted({i for evaluated in runs.values() for i in evaluated}):
        cells = []
        for name, key in columns:
            value = runs[name].get(iteration, {}).get(key)
            cells.append(f"{value:.1f}" if isinstance(value, int | float) else "–")
        lines.append(f"| {iteration} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--keys", nargs="+", default=list(KEYS), choices=KEYS)
    parser.add_argument("--plot", type=Path, help="a PNG of the curves")
    parser.add_argument(
        "--records",
        default="metrics.jsonl",
        help="the file of each run directory to read (ema_batch_stats.py --records writes re-evaluations)",
    )
    args = parser.parse_args()
    runs = {run_name(run_dir): evaluations(run_dir, args.records) for run_dir in args.run_dirs}
    for name, evaluated in runs.items():
        for key in KEYS:
            line = summary_line(evaluated, key)
            if line is not None:
                print(f"{name}: {line}" if len(runs) > 1 else line)
    if args.plot:
        plot(runs, args.keys, args.plot)
    print("\n".join(table(runs, args.keys)))


def plot(runs: dict[str, dict[int, dict]], keys: list[str], out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for name, evaluated in runs.items():
        for key in keys:
            numbers = {i: r for i, r in evaluated.items() if isinstance(r.get(key), int | float)}
            points = [(i, r[key], statistics_of(r)) for i, r in numbers.items()]
            label = f"{name}: {LABELS[key]}" if len(runs) > 1 else LABELS[key]
            color = None
            for n, segment in enumerate(segments(points)):  # a branch: running statistics up to where it left
                shown = f"{label}{statistics_note(points)}" if n == 0 else None
                style = "--" if segment[-1][2] == "running" else "-"
                xs, ys = [i for i, _, _ in segment], [v for _, v, _ in segment]
                (line,) = ax.plot(xs, ys, style, color=color, marker="o", markersize=2, linewidth=1.2, label=shown)
                color = line.get_color()
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Atari-FID (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out)


if __name__ == "__main__":
    main()
