"""What an autoencoder's codes look like, written at the end of a run from its final weights.

    figures = CodeFigures(valid_dataset, class_names, seed=0, embed_points=10_000, batch_size=256)
    figures.write(model, run.path, iteration, tb_logger.writer, device)

- ``codes.pt``: every validation code with its label (loads with ``torch.load(weights_only=True)``);
- TensorBoard's projector of the first ``embed_points`` codes, with labels and thumbnails;
- ``samples/random_codes_<iteration>.png``: uniform random codes decoded (the book's test of a smooth code space);
- ``samples/tsne_<iteration>.png``: a t-SNE of the codes, one colour per class, written last: when it exists,
  everything does (``written`` checks, so a run killed after its last checkpoint can be completed).

The model needs ``encode``, ``decode`` and ``code_size``; every figure runs it in ``eval()`` under ``no_grad`` and
draws from its own seeded generators.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from sklearn.manifold import TSNE
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

from handlers.images import image_grid, save_image_atomically, save_png_atomically
from handlers.plots import figure_pixels, new_figure
from runner.errors import say
from runner.files import DamagedFile, read_own_torch_file, save_atomically
from runner.rundir import RunLayout

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RANDOM_CODES = 16  # uniform random codes decoded at the end (the book decodes 5)
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
TSNE_FIGURE_SIZE = (8.0, 6.5)  # inches at 100 dpi: the square-ish plot and the legend of class names to its right


def first_images(dataset: Dataset, count: int) -> torch.Tensor:
    return torch.stack([dataset[index][0] for index in range(min(count, len(dataset)))])


@torch.no_grad()
def encode_all(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Every image's code and label, in the data set's order."""
    model.eval()
    codes, labels = [], []
    for images, batch_labels in DataLoader(dataset, batch_size):
        codes.append(model.encode(images.to(device)).cpu())
        labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
    return {"codes": torch.cat(codes), "labels": torch.cat(labels)}


@torch.no_grad()
def decode_random_codes(model: nn.Module, count: int, seed: int, device: torch.device) -> torch.Tensor:
    """The book's test of a smooth code space: uniform codes in [-1, 1] (from their own generator) decoded."""
    model.eval()
    codes = torch.rand(count, model.code_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return model.decode(codes.to(device)).cpu()


def class_colour(label: int) -> str:
    return TAB10[label % len(TAB10)]


def scatter_figure(points: np.ndarray, labels: np.ndarray, class_names: list[str], title: str) -> "Figure":
    """2-d points as dots, one colour per class, with a legend of the class names."""
    figure, (ax,) = new_figure(1, "", size=TSNE_FIGURE_SIZE)
    for index, name in enumerate(class_names):
        chosen = labels == index
        if chosen.any():
            ax.scatter(*points[chosen].T, s=6, color=class_colour(index), linewidths=0, label=name)
    ax.set_title(title, fontsize="medium")
    ax.set_xticks([])  # t-SNE's axes have no units: only the neighbourhoods mean something
    ax.set_yticks([])
    figure.legend(loc="outside right upper", markerscale=2.5, fontsize="small", frameon=False)
    return figure


def tsne_points(codes: np.ndarray, seed: int) -> np.ndarray:
    """The codes embedded in 2-d by t-SNE (perplexity 30, sklearn's default, lowered for very few points)."""
    perplexity = min(30.0, max(1.0, (len(codes) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes)


@dataclass
class CodeFigures:
    """The end-of-run figures of the codes of ``dataset`` (items ``(image in [-1, 1], label)``)."""

    dataset: Dataset
    class_names: list[str]
    seed: int  # seeds t-SNE and the random codes
    embed_points: int  # codes shown in the projector and the t-SNE plot (codes.pt holds all)
    batch_size: int

    @staticmethod
    def written(run_path: Path, iteration: int) -> bool:
        figures = [RunLayout(run_path).samples / f"{name}_{iteration:07d}.png" for name in ("random_codes", "tsne")]
        if not all(path.exists() for path in figures) or not (run_path / "codes.pt").exists():
            return False
        try:
            record = read_own_torch_file(run_path / "codes.pt")
        except DamagedFile:
            return False  # written again
        return isinstance(record, dict) and record.get("iteration") == iteration

    def write(
        self, model: nn.Module, run_path: Path, iteration: int, writer: SummaryWriter, device: torch.device
    ) -> None:
        """Every figure, for the weights of ``iteration``; the t-SNE plot last."""
        encoded = encode_all(model, self.dataset, self.batch_size, device)
        record = {**encoded, "class_names": list(self.class_names), "iteration": iteration}
        save_atomically(record, run_path / "codes.pt")
        shown = min(self.embed_points, len(encoded["codes"]))
        codes, labels = encoded["codes"][:shown], encoded["labels"][:shown]
        self.write_projector(codes, labels, run_path, iteration, writer)
        samples = RunLayout(run_path).samples
        samples.mkdir(parents=True, exist_ok=True)
        random_grid = image_grid(decode_random_codes(model, RANDOM_CODES, self.seed, device))
        save_png_atomically(random_grid, samples / f"random_codes_{iteration:07d}.png")
        writer.add_image("random_codes", random_grid, iteration)
        say(f"t-SNE of {shown} validation codes...")
        title = f"t-SNE of {shown} {model.code_size}-d validation codes, iteration {iteration}"
        plot = scatter_figure(tsne_points(codes.numpy(), self.seed), labels.numpy(), self.class_names, title)
        pixels = figure_pixels(plot)
        save_image_atomically(Image.fromarray(pixels), samples / f"tsne_{iteration:07d}.png")
        writer.add_image("tsne", pixels, iteration, dataformats="HWC")

    def write_projector(
        self, codes: torch.Tensor, labels: torch.Tensor, run_path: Path, iteration: int, writer: SummaryWriter
    ) -> None:
        projector_dir = run_path / f"{iteration:05d}" / "codes"  # where add_embedding writes (global_step/tag)
        shutil.rmtree(projector_dir, ignore_errors=True)  # a killed earlier attempt's files
        thumbnails = (first_images(self.dataset, len(codes)) + 1) / 2  # the projector's sprite wants [0, 1]
        names = [self.class_names[label] for label in labels.tolist()]
        writer.add_embedding(codes, metadata=names, label_img=thumbnails, global_step=iteration, tag="codes")
