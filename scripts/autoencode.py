"""Train chapter 002's convolutional autoencoder (scikit-learn's digits upscaled to 28x28 by default: no download).

python scripts/autoencode.py                                            # digits, the book's model and SGD, 20 epochs
python scripts/autoencode.py --dataset mnist --data-dir data            # the book's run: MNIST, 1 epoch
python scripts/autoencode.py --dataset mnist --data-dir data --max-epochs 5 --patience 2
python scripts/autoencode.py --resume runs/autoencode-<time> --max-epochs 40

Each epoch logs val_loss (the validation MSE) and writes samples/reconstructions_<iteration>.png; the end writes
codes.pt, TensorBoard's projector of the codes, samples/tsne_<iteration>.png and samples/random_codes_<iteration>.png.
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("autoencode", sys.argv[1:], description=__doc__)
