"""PNG plots of runs' metrics.jsonl: losses, evaluation scores and training speed against iteration.

    python scripts/plot.py runs/atari_gan-<time>                  # -> runs/atari_gan-<time>/plots/*.png
    python scripts/plot.py runs/sweep-<time>                      # its trial_* runs overlaid -> runs/sweep-<time>/plots
    python scripts/plot.py runs/classify-<a> runs/classify-<b> --out plots/compare

losses.png (each loss, thin, and its running average, solid), quality.png (the evaluation metrics: FID, validation
accuracy, RMSE, perplexity...; against the epoch for a run evaluated once per epoch) and throughput.png (iterations
per second); a figure with nothing to draw is not written. Several runs are overlaid, one colour and legend entry
each (their folder names). The default folder is RUN_DIR/plots for one run or sweep directory; several need --out.
Every run also writes its own plots/ when it ends. Prints the files written, one per line.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

from handlers.plots import find_runs, write_plots
from runner.errors import UserError
from runner.rundir import RunLayout
from runner.settings import OneLineParser


def default_out(paths: Sequence[Path]) -> Path:
    """``<dir>/plots`` for one run or sweep directory; several directories have no folder of their own to take."""
    if len(paths) > 1:
        raise UserError(f"{len(paths)} directories: give --out DIR for the plots that overlay them")
    return RunLayout(paths[0]).plots


def main(argv: Sequence[str] | None = None, prog: str = "plot.py") -> int:
    parser = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a run directory, or a sweep directory (trial_*/)"
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="where the PNGs go (default: RUN_DIR/plots)")
    args = parser.parse_args(argv)
    found = find_runs(args.run_dirs)  # a path that holds no run is refused before anything else
    written = write_plots(found, args.out or default_out(args.run_dirs))
    if not written:
        raise UserError(f"nothing to plot yet: no numbers logged in the metrics.jsonl of {' '.join(map(str, found))}")
    for path in written:
        print(path)
    return 0
