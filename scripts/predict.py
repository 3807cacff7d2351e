"""Predict with a trained classifier or regression: see tasks/predict.py.

python scripts/predict.py runs/classify-<time> digit.png --top-k 3
python scripts/predict.py runs/regress-<time> --values 5.0
"""

from runner.errors import exit_cleanly
from tasks.predict import main

if __name__ == "__main__":
    exit_cleanly(main, "predict.py")
