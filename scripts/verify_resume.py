"""Check exact resume on this machine: a task run straight through, and killed at random moments and resumed.

python scripts/verify_resume.py atari_gan --image-size 16 --filters 4 --batch-size 4 --max-iters 30
python scripts/verify_resume.py classify --max-epochs 3 --kills 2 --kill-seed 1
python scripts/verify_resume.py char_rnn --max-epochs 2 --work-dir runs/verify   # keeps both runs

Every flag after the task's name that is not verify_resume.py's own goes to the task. Prints "exact" and exits 0, or
prints the first difference (iteration, key, both values) and exits 1.
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("verify_resume", sys.argv[1:], description=__doc__)
