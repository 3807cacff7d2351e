"""Compare runs or sweeps on one HTML page: see tasks/compare.py.

python scripts/compare.py runs/book-s0 runs/stable-s0
python scripts/compare.py runs/sweep-atari_gan --out runs/sweep-page
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("compare", sys.argv[1:], description=__doc__)
