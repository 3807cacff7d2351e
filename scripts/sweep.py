"""Optuna sweep over a task's hyperparameters, pruned by its evaluations, resumable by running it again.

python scripts/sweep.py atari_gan --n-trials 20 --max-iters 5000 --eval-every 500
python scripts/sweep.py atari_gan --n-trials 20 --storage runs/sweep.journal --n-workers 2
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("sweep", sys.argv[1:], description=__doc__)
