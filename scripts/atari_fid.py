"""Build (or show) Atari-FID's frame classifier for an image size, ahead of the first GAN run that needs it.

python scripts/atari_fid.py --image-size 64
"""

from runner.cli import launch_tool
from tasks.atari_fid import BuildSettings, build

if __name__ == "__main__":
    launch_tool(BuildSettings, build, prog="atari_fid.py", description=__doc__)
