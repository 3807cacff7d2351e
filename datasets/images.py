"""An image folder as an endless, checkpointable stream of shuffled batches (chapter 004's AnimeGAN data).

The book reads ~50,000 96x96 faces with torchvision's ``ImageFolder`` (one sub-folder), resizes and centre-crops
them and scales them to [-1, 1]. Here the folder may hold the images directly or in sub-folders (any depth); their
labels are ignored.

    stream = ImageBatches(ImageFiles("faces", image_size=96), batch_size=256, seed=0, workers=2)
    batch = next(stream)          # (256, 3, 96, 96) in [-1, 1]
    state = stream.state_dict()   # {"epoch": 0, "position": 1}

Each epoch's order is a pure function of ``(seed, epoch)``, so the stream's whole position is two numbers and a
resumed run sees exactly the batches an uninterrupted one would. The last incomplete batch of an epoch is dropped,
as the book's ``drop_last=True``. Decoding runs in ``workers`` DataLoader processes. With ``shard=(rank, ranks)``
(several training processes) every process follows the same order and decodes only its share of each batch.
"""

from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

EPOCH_SEED_STRIDE = 1_000_003  # spreads (seed, epoch) pairs over distinct generator seeds


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, sorted); ``ValueError`` when there is none or no folder."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMG_EXTENSIONS[:4])}, ...) in it or its sub-folders")
    return files


class UnreadableImageError(ValueError):
    """A file with an image extension that PIL cannot decode."""


class ImageFiles(Dataset):
    """The book's transform: resize the short side to ``image_size``, centre-crop a square, scale to [-1, 1]."""

    def __init__(self, folder: str | Path, image_size: int):
        self.files = image_files(Path(folder))
        self.transform = transforms.Compose(
            [
                transforms.Resize(image_size),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise UnreadableImageError(f"{path}: not a readable image ({type(error).__name__})") from None


class ImageBatches:
    """Endless shuffled batches of an ``ImageFiles`` dataset; ``state_dict`` is ``{"epoch", "position"}``."""

    def __init__(
        self, dataset: ImageFiles, batch_size: int, seed: int, workers: int = 0, shard: tuple[int, int] = (0, 1)
    ):
        rank, ranks = shard
        if batch_size % ranks:
            raise ValueError(f"a batch of {batch_size} does not divide evenly over {ranks} processes")
        if len(dataset) < batch_size:
            raise ValueError(
                f"{len(dataset)} images are fewer than one batch of {batch_size}: lower --batch-size or add images"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.workers = workers
        self.share = slice(rank * batch_size // ranks, (rank + 1) * batch_size // ranks)
        self.epoch, self.position = 0, 0
        self._batches = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def epoch_order(self, epoch: int) -> list[list[int]]:
        """The epoch's batches of indices (the shuffle of ``(seed, epoch)``, the incomplete tail dropped), this
        process's share of each."""
        generator = torch.Generator().manual_seed(self.seed * EPOCH_SEED_STRIDE + epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self.batches_per_epoch)]
        return [batch[self.share] for batch in batches]

    def __iter__(self) -> "ImageBatches":
        return self

    def __next__(self) -> torch.Tensor:
        if self.position >= self.batches_per_epoch:  # >=: a resumed folder may have fewer images now
            self.epoch, self.position, self._batches = self.epoch + 1, 0, None
        if self._batches is None:
            remaining = self.epoch_order(self.epoch)[self.position :]
            # Its own generator: a DataLoader seeds its workers from the global RNG otherwise, and this may run in a
            # producer thread while the training step draws noise from that RNG.
            seeds = torch.Generator().manual_seed(self.seed * EPOCH_SEED_STRIDE + self.epoch)
            loader = DataLoader(self.dataset, batch_sampler=remaining, num_workers=self.workers, generator=seeds)
            self._batches = iter(loader)
        try:
            batch = next(self._batches)
        except UnreadableImageError as error:
            # From a worker process it comes wrapped with the worker's traceback: keep the message's last line.
            message = str(error).strip().splitlines()[-1].split(f"{UnreadableImageError.__name__}: ", 1)[-1]
            raise UnreadableImageError(message) from None
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = None  # the next batch starts a loader at the restored position

    def close(self) -> None:
        batches, self._batches = self._batches, None
        # Stop the loader's worker processes now, not whenever the last reference goes: an error's traceback can keep
        # the iterator alive until the process exits, where multiprocessing kills the workers and torch's SIGCHLD
        # handler reports that as a second error ("DataLoader worker ... killed by signal"), hiding the first.
        if batches is not None and self.workers > 0:
            stop_workers(batches)


def stop_workers(batches: Iterator[torch.Tensor]) -> None:
    """Stop the worker processes of a loader's iterator (``num_workers`` > 0) now. Torch has no public call for it:
    the iterator stops them in ``__del__``, which calls its ``_shutdown_workers`` (torch 2.4 to 2.14). The test that
    the workers are gone after ``close`` pins it (tests/datasets/test_image_folder.py)."""
    batches._shutdown_workers()
