"""Chapter 004's AnimeGAN: a DCGAN trained on a folder of images, and generation ranked by its discriminator.

python scripts/image_gan.py train --data-dir faces                          # the book's 96x96 faces, batch 256
python scripts/image_gan.py train --data-dir photos --image-size 64 --batch-size 64 --max-iters 5000
python scripts/image_gan.py train --resume runs/image_gan-<time> --max-iters 60000
python scripts/image_gan.py generate --checkpoint runs/image_gan-<time> --n 64 --out best.png
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("image_gan", sys.argv[1:], description=__doc__)
