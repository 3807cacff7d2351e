"""Train a DCGAN on Atari frames that a random agent produces live (Deep RL Hands-On, chapter 3).

python scripts/atari_gan.py --dev cuda                       # the chapter's settings
python scripts/atari_gan.py --resume runs/atari_gan-<time>   # continue exactly where it stopped
"""

import sys

from tasks.commands import run_task

if __name__ == "__main__":
    run_task("atari_gan", sys.argv[1:], description=__doc__)
