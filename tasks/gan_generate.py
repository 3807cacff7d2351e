"""``generate`` for both GAN tasks: a sheet of a trained generator's images, from G itself or from its moving average
(``--weights``), or rows that walk in straight lines between random latent pairs (``--interpolate K``).

    python scripts/atari_gan.py generate --checkpoint runs/atari_gan-<time> --n 64 --out sheet.png
    python scripts/image_gan.py generate --checkpoint runs/image_gan-<time> --interpolate 8 --out walk.png
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from handlers.images import image_grid, save_png_atomically
from runner.errors import UserError

WEIGHTS_HELP = "which generator: ema (its moving average), raw (G itself), auto (ema where the run kept one)"
INTERPOLATE_HELP = "K > 1: rows of K images along straight lines between random latent pairs (0: a plain sheet)"


def checked_out(out: str) -> Path:
    """The sheet's path, refused before any work if it cannot be written."""
    path = Path(out)
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: folder {path.parent} does not exist")
    return path


def check_interpolate(value: int) -> None:
    if value == 1 or value < 0:
        raise ValueError("must be 0 (a plain sheet) or at least 2 (images per row)")


def chosen_generator(
    models: Mapping[str, Any],
    weights: str,
    make_generator: Callable[[], torch.nn.Module],
    source: Path,
    shown: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> tuple[torch.nn.Module, str]:
    """The generator ``--weights`` names, loaded from ``models`` (a checkpoint's or a best file's state), as
    ``shown`` shows it (with its own BatchNorm statistics; None: as it is), and its name as the report says it
    (``G`` or ``the moving average of G``)."""
    has_ema = "generator_ema" in models
    if weights == "ema" and not has_ema:
        raise UserError(f"--weights ema: {source} holds no moving average of G (trained with --ema-decay 0); use raw")
    use_ema = weights == "ema" or (weights == "auto" and has_ema)
    generator = make_generator()
    generator.load_state_dict(models["generator_ema" if use_ema else "generator"])
    generator = shown(generator) if shown is not None else generator
    return generator.eval(), "the moving average of G" if use_ema else "G"


def sheet_noise(n: int, interpolate: int, latent_size: int, seed: int) -> torch.Tensor:
    """``n`` noise vectors from ``seed``; with ``interpolate`` K, ``n // K`` rows (at least one), each K points on
    the straight line from one random vector to another, ends included."""
    source = torch.Generator().manual_seed(seed)
    if not interpolate:
        return torch.randn(n, latent_size, 1, 1, generator=source)
    rows = max(1, n // interpolate)
    start, end = (torch.randn(rows, 1, latent_size, 1, 1, generator=source) for _ in range(2))
    steps = torch.linspace(0, 1, interpolate).view(1, interpolate, 1, 1, 1)
    return (start + steps * (end - start)).reshape(rows * interpolate, latent_size, 1, 1)


@torch.no_grad()
def generated(generator: torch.nn.Module, noise: torch.Tensor, device: torch.device) -> torch.Tensor:
    generator.to(device)
    return torch.cat([generator(chunk.to(device)).float().cpu() for chunk in noise.split(256)])


def write_sheet(images: torch.Tensor, out: Path, interpolate: int) -> None:
    """One PNG; interpolation rows K images wide, a plain sheet square."""
    save_png_atomically(image_grid(images, columns=interpolate or None), out)
