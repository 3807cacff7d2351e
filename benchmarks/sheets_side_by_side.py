"""Runs' sample sheets at the same iterations, side by side: one row per iteration, one column per run.

    python benchmarks/sheets_side_by_side.py runs/book-s0 runs/stable-s0 --iterations 2000 5000 20000 \
        --sheet fake_ema --out docs/images/book_vs_stable.jpg

Each cell is the top-left 4x4 frames of the run's ``samples/<sheet>_<iteration>.png`` (the fixed-noise sheet of 64
frames in 8 columns, 2-pixel padding), so every run shows the same 16 noises where its seed gave them. A missing
sheet is a grey cell. Labels name the runs (columns) and the iterations (rows).
"""

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

PADDING = 2  # torchvision's make_grid default, as the sheets are written
SHOWN = 4  # frames per side of each cell
LABEL_WIDTH, LABEL_HEIGHT = 70, 18


def cell(run_dir: Path, sheet: str, iteration: int, frame: int) -> Image.Image:
    side = SHOWN * (frame + PADDING) + PADDING
    path = run_dir / "samples" / f"{sheet}_{iteration:07d}.png"
    if not path.exists():
        return Image.new("RGB", (side, side), (128, 128, 128))
    with Image.open(path) as image:
        return image.convert("RGB").crop((0, 0, side, side))


def frame_side(run_dirs: list[Path], sheet: str) -> int:
    for run_dir in run_dirs:
        for path in sorted((run_dir / "samples").glob(f"{sheet}_*.png")):
            with Image.open(path) as image:
                return (image.width - PADDING) // 8 - PADDING
    raise SystemExit(f"no {sheet}_*.png in any of {', '.join(map(str, run_dirs))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--iterations", type=int, nargs="+", required=True)
    parser.add_argument("--sheet", default="fake_ema", help="fake (G) or fake_ema (its moving average)")
    parser.add_argument("--names", nargs="+", help="column labels (default: the runs' folder names)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    names = args.names or [run_dir.name for run_dir in args.run_dirs]
    frame = frame_side(args.run_dirs, args.sheet)
    side = SHOWN * (frame + PADDING) + PADDING
    gap = 6
    width = LABEL_WIDTH + len(args.run_dirs) * (side + gap)
    height = LABEL_HEIGHT + len(args.iterations) * (side + gap)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for column, name in enumerate(names):
        draw.text((LABEL_WIDTH + column * (side + gap), 3), name, fill=(0, 0, 0))
    for row, iteration in enumerate(args.iterations):
        top = LABEL_HEIGHT + row * (side + gap)
        draw.text((3, top + side // 2 - 6), f"{iteration:,}", fill=(0, 0, 0))
        for column, run_dir in enumerate(args.run_dirs):
            canvas.paste(cell(run_dir, args.sheet, iteration, frame), (LABEL_WIDTH + column * (side + gap), top))
    canvas.save(args.out, quality=90)
    print(f"wrote {args.out}: {len(args.iterations)} iterations x {len(args.run_dirs)} runs")


if __name__ == "__main__":
    main()
