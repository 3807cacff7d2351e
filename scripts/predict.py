"""Predict with a trained classifier or regression, or a pretrained ImageNet one: see tasks/predict.py.

python scripts/predict.py runs/classify-<time> digit.png --top-k 3
python scripts/predict.py runs/regress-<time> --values 5.0
python scripts/predict.py --pretrained resnet101 dog.jpg --top-k 5
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("predict", sys.argv[1:], description=__doc__)
