"""Train one of the books' classifiers (a small CNN on scikit-learn's digits by default: no download needed).

python scripts/classify.py                                              # digits, a small CNN, 10 epochs
python scripts/classify.py --model fashion_mlp                          # digits, chapter 003's MLP
python scripts/classify.py --dataset fashion_mnist --data-dir data      # chapter 003 (downloads when online)
python scripts/classify.py --dataset mnist --model mnist_cnn --data-dir data    # chapter 002's CNN
python scripts/classify.py --dataset cifar10 --model lenet --data-dir data      # chapter 004's LeNet
python scripts/classify.py --dataset dogs_vs_cats --model resnet34 --data-dir dogs-vs-cats
python scripts/classify.py --resume runs/classify-<time> --max-epochs 40
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("classify", sys.argv[1:], description=__doc__)
