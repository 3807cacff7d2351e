"""Build (or show) Atari-FID's frame classifier for an image size, ahead of the first GAN run that needs it.

python scripts/atari_fid.py --image-size 64
"""

import argparse

from runner.atari_fid import FID_GAMES, extractor_path, load_frame_classifier
from runner.errors import UserError, exit_cleanly
from runner.settings import OneLineParser


def main() -> int:
    parser = OneLineParser(
        prog="atari_fid.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=64, help="side of the frames the GAN makes (default: 64)")
    args = parser.parse_args()
    try:
        _, info = load_frame_classifier(args.image_size)
    except ValueError as error:
        raise UserError(f"--image-size {args.image_size}: {error}") from None
    print(f"{extractor_path(args.image_size)}: {info['version']}, {len(FID_GAMES)} games, "
          f"validation accuracy {info['valid_accuracy']:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    exit_cleanly(main, "atari_fid.py")
