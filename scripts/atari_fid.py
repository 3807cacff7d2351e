"""Build (or show) Atari-FID's frame classifier for an image size, ahead of the first GAN run that needs it.

python scripts/atari_fid.py --image-size 64
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("atari_fid", sys.argv[1:], description=__doc__)
