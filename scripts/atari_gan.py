"""Train a DCGAN on Atari frames that a random agent produces live (Deep RL Hands-On, chapter 3).

python scripts/atari_gan.py --dev cuda                       # the chapter's settings
python scripts/atari_gan.py --resume runs/atari_gan-<time>   # continue exactly where it stopped
"""

from runner.cli import launch
from tasks.atari_gan import AtariGanSettings, train

if __name__ == "__main__":
    launch(AtariGanSettings, train, prog="atari_gan.py", description=__doc__)
