"""Plot runs' losses, evaluation scores and training speed as PNGs: see tasks/plot.py.

python scripts/plot.py runs/atari_gan-<time>
python scripts/plot.py runs/classify-<a> runs/classify-<b> --out plots/compare
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("plot", sys.argv[1:], description=__doc__)
