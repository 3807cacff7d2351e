"""Differentiable augmentation of the discriminator's input, with a fixed or an adaptive strength.

DiffAugment (Zhao et al., 2020) shows D every image, real or fake, through the same random transformations, in the
discriminator step and in the generator step alike; the transformations are differentiable, so G learns through
them. D then cannot memorise the real frames, and G is not pushed to reproduce the augmentations (they touch the
fakes too). Three families, on images in [-1, 1]:

- ``translation``: a shift of up to 1/8 of the side, filled with zeros;
- ``color``: brightness (+U(-0.5, 0.5)), saturation (x U(0, 2)) and contrast (x U(0.5, 1.5));
- ``cutout``: a square of half the side set to zero.

Each family applies to each image with probability ``p`` (the strength). ADA's rule (Karras et al., 2020) adapts it:
``r = E[sign(D(real))]`` measures how sure D is of the real frames; while ``r`` is above ``target``, ``p`` rises, and
it falls below it, by ``batch / speed`` per iteration (``speed``: the real images over which ``p`` may go from 0 to 1).

    augment = DiffAugment(("translation", "cutout"), p=0.0, target=0.6, speed=100_000, batch_size=16)
    seen = augment(images)                 # same shape, differentiable in images
    augment.adapt(real_sign_mean)          # once per discriminator step (adaptive only)

The draws come from the global RNG of the images' device (a checkpoint holds it), and every call draws the same
numbers whatever ``p`` is: an image that is not augmented gets the identity (zero shift, factor 1, no hole). The
strength is state: ``state_dict()`` holds it, so a resumed run continues with it.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

AUGMENTATIONS = ("translation", "color", "cutout")
TRANSLATION_RATIO = 0.125  # largest shift, as a fraction of the side (DiffAugment's)
CUTOUT_RATIO = 0.5  # side of the hole, as a fraction of the image's (DiffAugment's)


def check_augmentations(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}: choose from {', '.join(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError("names an augmentation twice")


def chosen(images: Tensor, p: float) -> Tensor:
    """(N, 1, 1, 1): 1.0 for the images an augmentation applies to (probability ``p``), else 0.0."""
    draws = torch.rand(images.shape[0], 1, 1, 1, device=images.device)
    return (draws < p).to(images.dtype)


def translate(images: Tensor, p: float) -> Tensor:
    n, _, height, width = images.shape
    shift_y, shift_x = (int(side * TRANSLATION_RATIO + 0.5) for side in (height, width))
    on = chosen(images, p).view(n, 1, 1)
    dy = torch.randint(-shift_y, shift_y + 1, (n, 1, 1), device=images.device) * on.long()
    dx = torch.randint(-shift_x, shift_x + 1, (n, 1, 1), device=images.device) * on.long()
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    # Index into the image padded by one zero pixel: a position shifted off the image reads the padding.
    y = (rows + dy + 1).clamp(0, height + 1).expand(n, height, width)
    x = (cols + dx + 1).clamp(0, width + 1).expand(n, height, width)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    batch = torch.arange(n, device=images.device).view(n, 1, 1).expand(n, height, width)
    return padded.permute(0, 2, 3, 1)[batch, y, x].permute(0, 3, 1, 2)  # (N, H, W, C) gathered -> (N, C, H, W)


def color(images: Tensor, p: float) -> Tensor:
    n = images.shape[0]

    def draw() -> Tensor:
        return torch.rand(n, 1, 1, 1, device=images.device, dtype=images.dtype)

    brightness, saturation, contrast = draw() - 0.5, draw() * 2, draw() + 0.5
    on = chosen(images, p).bool()
    changed = images + brightness
    mean = changed.mean(dim=1, keepdim=True)
    changed = (changed - mean) * saturation + mean
    mean = changed.mean(dim=(1, 2, 3), keepdim=True)
    changed = (changed - mean) * contrast + mean
    return torch.where(on, changed, images)  # the others exactly as they were


def cutout(images: Tensor, p: float) -> Tensor:
    n, _, height, width = images.shape
    size_y, size_x = int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5)
    center_y = torch.randint(0, height + (1 - size_y % 2), (n, 1, 1), device=images.device)
    center_x = torch.randint(0, width + (1 - size_x % 2), (n, 1, 1), device=images.device)
    on = chosen(images, p).view(n, 1, 1).bool()
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside_y = (rows >= center_y - size_y // 2) & (rows < center_y - size_y // 2 + size_y)
    inside_x = (cols >= center_x - size_x // 2) & (cols < center_x - size_x // 2 + size_x)
    hole = inside_y & inside_x & on  # (N, H, W)
    return images * (~hole).unsqueeze(1).to(images.dtype)


OPERATIONS = {"translation": translate, "color": color, "cutout": cutout}


class DiffAugment:
    """The augmentations ``names`` at strength ``p``; with ``target`` > 0, ADA's rule adapts ``p``."""

    def __init__(
        self, names: Sequence[str], p: float = 1.0, target: float = 0.0, speed: int = 100_000, batch_size: int = 16
    ):
        check_augmentations(names)
        self.names = tuple(name for name in AUGMENTATIONS if name in names)  # a fixed order: the same draws
        self.p = float(p)
        self.target = target
        self.step_size = batch_size / speed

    @property
    def adaptive(self) -> bool:
        return self.target > 0

    def __call__(self, images: Tensor) -> Tensor:
        channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
        for name in self.names:
            images = OPERATIONS[name](images, self.p)
        return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def adapt(self, real_sign_mean: float) -> None:
        """One step of ADA's rule from ``E[sign(D(real))]`` of the latest discriminator step."""
        if self.adaptive:
            direction = 1.0 if real_sign_mean > self.target else -1.0
            self.p = min(1.0, max(0.0, self.p + direction * self.step_size))

    def state_dict(self) -> dict[str, float]:
        return {"p": self.p}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.p = float(state["p"])
