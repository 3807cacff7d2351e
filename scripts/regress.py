"""Train one of the books' regressions (chapter 004's y = 2x + 3 by default: no download needed).

python scripts/regress.py                                               # y = 2x + 3 + noise, nn.Linear(1, 1)
python scripts/regress.py --dataset diabetes --model mlp --optimizer adam --lr 0.01 --max-epochs 100
python scripts/regress.py --dataset california --model wide_deep --data-dir data   # chapter 003's Wide & Deep
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("regress", sys.argv[1:], description=__doc__)
