"""Optuna sweep over a task's hyperparameters, pruned by its evaluations, resumable by running it again.

python scripts/sweep.py atari_gan --n-trials 20 --max-iters 5000 --eval-every 500
python scripts/sweep.py atari_gan --n-trials 20 --storage runs/sweep.journal --n-workers 2
"""

from runner.errors import exit_cleanly
from tasks.sweep import main

if __name__ == "__main__":
    exit_cleanly(main, "sweep.py")
