"""Supervised data sets of the book's classifiers and regressors, each split into train and validation.

Four work with no files and no network: ``digits`` and ``diabetes`` (bundled with scikit-learn), ``linear`` (the
book's synthetic ``y = 2x + 3 + noise``, chapter 4) and ``atari_games`` (frames a random agent produces live, labelled
with their game). The others read ``data_dir``, downloading into it first when ``download`` is true and a download is
possible (``mnist``, ``fashion_mnist``, ``cifar10``, ``california``); ``image_folder`` and ``dogs_vs_cats`` only read a
local copy. Missing or unreadable files end in a one-line ``ValueError`` that says where the loader looked.

Items are ``(input, target)``: float32 inputs, ``torch.long`` scalar targets for classification and float32 targets
of shape ``(1,)`` for regression. Splits depend only on ``seed``; tabular features are standardised with the train
split's mean and std (regression targets keep their units), so a model sees the same numbers on every run.

    data = load_dataset("digits", data_dir=None, seed=0)
    loader = torch.utils.data.DataLoader(data.train, batch_size=32, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(data.input_shape), data.n_outputs))
"""

import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import fetch_california_housing, load_diabetes, load_digits
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision import datasets as tv_datasets
from torchvision import transforms

from datasets import cache_dir
from datasets.atari import TWELVE_GAMES, labelled_frames
from datasets.safe_pickle import check_joblib_arrays

CLASSIFICATION = "classification"
REGRESSION = "regression"
VALID_FRACTION = 0.2
DOGS_VS_CATS_VALID_FRACTION = 0.3  # the book's hold-out for chapter 6
ATARI_CLASSIFIER_GAMES = TWELVE_GAMES
ATARI_TRAIN_PER_GAME = 200
ATARI_VALID_PER_GAME = 50
ATARI_IMAGE_SIZE = 32
ATARI_VALID_SEED_OFFSET = 1000  # validation frames come from other episodes than the training ones
LINEAR_POINTS = 1000
MNIST_NORMALIZE = ((0.1305,), (0.3081,))  # the book's
FASHION_MNIST_NORMALIZE = ((0.2860,), (0.3530,))
SYMMETRIC_NORMALIZE = ((0.5,), (0.5,))  # [0, 1] -> [-1, 1], for models that end in tanh (the autoencoder)
CIFAR10_NORMALIZE = ((0.4915, 0.4823, 0.4468), (0.2470, 0.2435, 0.2616))  # the book's
IMAGENET_NORMALIZE = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PHOTO_SIZE = 64  # image_folder and dogs_vs_cats: small enough to train on a CPU
DOGS_VS_CATS_RESIZE = 72  # then a 64 crop: the book's Resize + RandomCrop augmentation at a smaller size
DOGS_VS_CATS_NAME = re.compile(r"(cat|dog)\.\d+\.jpe?g", re.IGNORECASE)
DOGS_VS_CATS_CLASSES = ["cat", "dog"]
DATA_DIR_HINT = "pass --data-dir pointing to a local copy"


@dataclass
class SupervisedData:
    name: str  # the registry name, e.g. "digits"
    kind: str  # "classification" or "regression"
    train: Dataset  # items are (input, target)
    valid: Dataset
    input_shape: tuple[int, ...]  # shape of ONE input tensor, e.g. (64,), (1, 28, 28), (3, 32, 32)
    n_outputs: int  # number of classes (classification) or 1 (regression)
    class_names: list[str] | None  # classification: names in label order; regression: None
    # How a raw input becomes a model input (kept with an exported model, for predict.py):
    # {"standardise": {"mean": [...], "std": [...]}} or {"image": {"size": [H, W], "mode": "L"|"RGB", "mean", "std"}}
    preprocessing: dict = field(default_factory=dict)


DATASETS: dict[str, Callable[..., SupervisedData]] = {}
KINDS: dict[str, str] = {}


def register(name: str, kind: str) -> Callable:
    """Add a loader ``(data_dir, seed, download) -> SupervisedData`` to ``DATASETS`` under ``name``."""

    def add(loader: Callable[..., SupervisedData]) -> Callable[..., SupervisedData]:
        DATASETS[name] = loader
        KINDS[name] = kind
        return loader

    return add


def load_dataset(name: str, data_dir: str | None, seed: int, download: bool = True) -> SupervisedData:
    """The data set registered as ``name``; ``data_dir`` is where file-based ones live (see ``default_data_dir``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[name](data_dir=data_dir, seed=seed, download=download)


def dataset_names(kind: str) -> list[str]:
    """Registry names of one kind (``"classification"`` or ``"regression"``), offline defaults first."""
    if kind not in (CLASSIFICATION, REGRESSION):
        raise ValueError(f"unknown kind {kind!r} (known: {CLASSIFICATION}, {REGRESSION})")
    return [name for name in DATASETS if KINDS[name] == kind]


def default_data_dir() -> Path:
    """Where downloads go without ``--data-dir``: next to the runner's other caches (``$IGNITE_BOOK_CACHE``)."""
    return cache_dir() / "data"


# --- splitting and standardising ---------------------------------------------------------------------------------


def split_indices(count: int, valid_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices of a seeded permutation; both sides get at least one item when ``count >= 2``."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    n_valid = min(max(round(count * valid_fraction), 1), count - 1) if count >= 2 else 0
    return order[n_valid:], order[:n_valid]


def standardise(train: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Both splits scaled with the train split's column means and stds, as the book does; also the preprocessing
    record that lets an exported model take raw rows."""
    means = train.mean(dim=0, keepdim=True)
    stds = train.std(dim=0, keepdim=True)
    stds = torch.where(stds > 0, stds, torch.ones_like(stds))  # a constant column would divide by zero
    record = {"standardise": {"mean": means.flatten().tolist(), "std": stds.flatten().tolist()}}
    return (train - means) / stds, (valid - means) / stds, record


def image_preprocessing(size: Sequence[int], mode: str, mean: Sequence[float], std: Sequence[float]) -> dict:
    return {"image": {"size": list(size), "mode": mode, "mean": list(mean), "std": list(std)}}


def tabular_data(name: str, features: np.ndarray, targets: np.ndarray, seed: int, scale: bool = True) -> SupervisedData:
    """A regression data set from a ``(N, F)`` feature matrix and ``(N,)`` targets, split 80/20."""
    inputs = torch.as_tensor(features, dtype=torch.float32)
    outputs = torch.as_tensor(targets, dtype=torch.float32).reshape(-1, 1)
    train_index, valid_index = split_indices(len(inputs), VALID_FRACTION, seed)
    train_inputs, valid_inputs = inputs[train_index], inputs[valid_index]
    preprocessing = {}
    if scale:
        train_inputs, valid_inputs, preprocessing = standardise(train_inputs, valid_inputs)
    return SupervisedData(
        name=name,
        kind=REGRESSION,
        train=TensorDataset(train_inputs, outputs[train_index]),
        valid=TensorDataset(valid_inputs, outputs[valid_index]),
        input_shape=tuple(inputs.shape[1:]),
        n_outputs=1,
        class_names=None,
        preprocessing=preprocessing,
    )


def as_long(label: int) -> torch.Tensor:
    """Target transform: torchvision's ``int`` labels as the ``torch.long`` scalars every loader returns."""
    return torch.tensor(label, dtype=torch.long)


# --- files on disk -------------------------------------------------------------------------------------------------


def reason(error: BaseException, limit: int = 300) -> str:
    """``error`` on one line (torchvision's download errors span several; assertions have no text at all)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def data_folder(data_dir: str | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def outermost_missing_folders(paths: Sequence[Path]) -> list[Path]:
    """The outermost folders on the way to ``paths`` that do not exist yet: a download would create them."""
    outermost = set()
    for path in paths:
        missing = None
        for parent in path.parents:  # nearest first
            if parent.exists():
                break
            missing = parent
        if missing is not None:
            outermost.add(missing)
    return sorted(outermost)


def read_files(
    name: str, folder: Path, expected: Sequence[Path], layout: str, download: bool, read: Callable[[bool], Any]
) -> Any:
    """``read(download)`` with errors as one-line ``ValueError``: missing files, a failed download or bad files.

    It downloads only when a file in ``expected`` is missing, so a present but broken copy is reported as broken
    rather than as a failed download.
    """
    missing = [path for path in expected if not path.is_file()]
    if missing and not download:
        raise ValueError(
            f"{name}: no copy in {folder} ({missing[0].name} is missing) and downloading is off; "
            f"{DATA_DIR_HINT} ({layout})"
        )
    new_folders = outermost_missing_folders(expected) if missing else []
    try:
        return read(bool(missing))
    # The readers raise whatever their parser hits on a bad file (AssertionError, TypeError, pickle and zlib errors).
    except Exception as error:
        if any(not path.is_file() for path in expected):
            for created in new_folders:  # what the failed download made (say <data-dir>/MNIST/raw), and only that
                shutil.rmtree(created, ignore_errors=True)
            raise ValueError(
                f"{name}: no copy in {folder} and the download failed ({reason(error)}); {DATA_DIR_HINT} ({layout})"
            ) from error
        raise ValueError(f"{name}: cannot read the files in {folder} ({reason(error)}); {DATA_DIR_HINT}") from error


def open_rgb(path: str) -> Image.Image:
    """An image file as RGB; an unreadable one names its path (it fails during training, not at load time)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise ValueError(f"cannot read image {path} ({reason(error)})") from error


def photo_transform(resize: int, train: bool) -> transforms.Compose:
    """Resize the short side to ``resize``, crop ``PHOTO_SIZE`` (randomly, with flips, for training), ImageNet
    normalisation."""
    crop = (
        [transforms.RandomCrop(PHOTO_SIZE), transforms.RandomHorizontalFlip()]
        if train
        else [transforms.CenterCrop(PHOTO_SIZE)]
    )
    return transforms.Compose(
        [transforms.Resize(resize), *crop, transforms.ToTensor(), transforms.Normalize(*IMAGENET_NORMALIZE)]
    )


# --- offline defaults ----------------------------------------------------------------------------------------------


@register("digits", CLASSIFICATION)
def load_digits_data(data_dir: str | None = None, seed: int = 0, download: bool = True) -> SupervisedData:
    """scikit-learn's 1,797 8x8 digits as ``(1, 8, 8)`` images in [0, 1] (an MLP flattens them, a CNN takes them)."""
    digits = load_digits()
    images = torch.as_tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # pixels are 0..16
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    train_index, valid_index = split_indices(len(images), VALID_FRACTION, seed)
    return SupervisedData(
        name="digits",
        kind=CLASSIFICATION,
        train=TensorDataset(images[train_index], labels[train_index]),
        valid=TensorDataset(images[valid_index], labels[valid_index]),
        input_shape=(1, 8, 8),
        n_outputs=10,
        class_names=[str(name) for name in digits.target_names],
        preprocessing=image_preprocessing((8, 8), "L", (0.0,), (1.0,)),
    )


@register("diabetes", REGRESSION)
def load_diabetes_data(data_dir: str | None = None, seed: int = 0, download: bool = True) -> SupervisedData:
    """scikit-learn's 442 patients, 10 standardised features, disease progression after a year as the target."""
    # Unscaled features: scikit-learn's own scaling uses all rows, ours only the train split's.
    features, targets = load_diabetes(return_X_y=True, scaled=False)
    return tabular_data("diabetes", features, targets, seed)


@register("linear", REGRESSION)
def load_linear_data(data_dir: str | None = None, seed: int = 0, download: bool = True) -> SupervisedData:
    """The book's synthetic line (chapter 4): ``x`` uniform in [0, 20), ``y = 2x + 3 + N(0, 1)`` noise.

    ``x`` is not standardised, so a fitted ``Linear(1, 1)`` reads ``w ~ 2``, ``b ~ 3``.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(LINEAR_POINTS, 1, generator=generator) * 20
    y = 2 * x + 3 + torch.randn(LINEAR_POINTS, 1, generator=generator)
    return tabular_data("linear", x.numpy(), y.numpy(), seed, scale=False)


@register("atari_games", CLASSIFICATION)
def load_atari_games(data_dir: str | None = None, seed: int = 0, download: bool = True) -> SupervisedData:
    """Which of twelve Atari games a ``(3, 32, 32)`` frame in [-1, 1] comes from (Atari-FID's classifier data)."""
    games = ATARI_CLASSIFIER_GAMES
    train_frames, train_labels = labelled_frames(games, ATARI_TRAIN_PER_GAME, ATARI_IMAGE_SIZE, seed)
    valid_frames, valid_labels = labelled_frames(
        games, ATARI_VALID_PER_GAME, ATARI_IMAGE_SIZE, seed + ATARI_VALID_SEED_OFFSET
    )
    return SupervisedData(
        name="atari_games",
        kind=CLASSIFICATION,
        train=TensorDataset(train_frames, train_labels),
        valid=TensorDataset(valid_frames, valid_labels),
        input_shape=(3, ATARI_IMAGE_SIZE, ATARI_IMAGE_SIZE),
        n_outputs=len(games),
        class_names=list(games),
        preprocessing=image_preprocessing((ATARI_IMAGE_SIZE, ATARI_IMAGE_SIZE), "RGB", (0.5,) * 3, (0.5,) * 3),
    )


# --- files: torchvision and scikit-learn downloads -----------------------------------------------------------------


def torchvision_data(
    name: str,
    dataset_class: type,
    expected: Sequence[str],
    layout: str,
    normalize: tuple,
    input_shape: tuple[int, ...],
    data_dir: str | None,
    download: bool,
) -> SupervisedData:
    """A torchvision data set with its official train set as ``train`` and its test set as ``valid``."""
    folder = data_folder(data_dir)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*normalize)])

    def read(fetch: bool) -> tuple[Dataset, Dataset]:
        return tuple(
            dataset_class(root=folder, train=train, transform=transform, target_transform=as_long, download=fetch)
            for train in (True, False)
        )

    layout = f"the layout torchvision writes: {layout}"
    train, valid = read_files(name, folder, [folder / path for path in expected], layout, download, read)
    return SupervisedData(
        name=name,
        kind=CLASSIFICATION,
        train=train,
        valid=valid,
        input_shape=input_shape,
        n_outputs=len(train.classes),
        class_names=list(train.classes),
        preprocessing=image_preprocessing(input_shape[1:], "L" if input_shape[0] == 1 else "RGB", *normalize),
    )


def idx_files(folder: str) -> list[str]:
    """The four raw IDX files torchvision's MNIST and FashionMNIST read from ``<root>/<folder>/raw``."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return [f"{folder}/raw/{name}" for name in names]


@register("mnist", CLASSIFICATION)
def load_mnist(
    data_dir: str | None = None, seed: int = 0, download: bool = True, normalize: tuple = MNIST_NORMALIZE
) -> SupervisedData:
    """MNIST's 60,000 training and 10,000 test digits (the test set validates), ``(1, 28, 28)``, normalised
    with ``normalize`` (means, stds of the [0, 1] pixels: the book's by default)."""
    return torchvision_data(
        "mnist",
        tv_datasets.MNIST,
        expected=idx_files("MNIST"),
        layout="MNIST/raw/*-ubyte",
        normalize=normalize,
        input_shape=(1, 28, 28),
        data_dir=data_dir,
        download=download,
    )


@register("fashion_mnist", CLASSIFICATION)
def load_fashion_mnist(
    data_dir: str | None = None, seed: int = 0, download: bool = True, normalize: tuple = FASHION_MNIST_NORMALIZE
) -> SupervisedData:
    """Fashion-MNIST's 60,000 training and 10,000 test clothes (the test set validates), ``(1, 28, 28)``,
    normalised with ``normalize``."""
    return torchvision_data(
        "fashion_mnist",
        tv_datasets.FashionMNIST,
        expected=idx_files("FashionMNIST"),
        layout="FashionMNIST/raw/*-ubyte",
        normalize=normalize,
        input_shape=(1, 28, 28),
        data_dir=data_dir,
        download=download,
    )


@register("cifar10", CLASSIFICATION)
def load_cifar10(data_dir: str | None = None, seed: int = 0, download: bool = True) -> SupervisedData:
    """CIFAR-10's 50,000 training and 10,000 test images (the test set validates), ``(3, 32, 32)``, normalised."""
    batches = [f"data_batch_{number}" for number in range(1, 6)] + ["test_batch", "batches.meta"]
    return torchvision_data(
        "cifar10",
        tv_datasets.CIFAR10,
        expected=[f"cifar-10-batches-py/{batch}" for batch in batches],
        layout="cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta",
        normalize=CIFAR10_NORMALIZE,
        input_shape=(3, 32, 32),
        data_dir=data_dir,
        download=download,
    )


@register("california", REGRESSION)
def load_california(data_dir: str | None = None, seed: int = 0, download: bool = True) -> SupervisedData:
    """California's 20,640 districts: 8 standardised features, median house value in 100,000 $ as the target."""
    folder = data_folder(data_dir)

    def read(fetch: bool) -> tuple[np.ndarray, np.ndarray]:
        cache = folder / "cal_housing_py3.pkz"
        if cache.is_file():  # scikit-learn unpickles its cache as it finds it: only arrays may be in it
            check_joblib_arrays(cache)
        with warnings.catch_warnings():  # offline, scikit-learn warns at each retry before it raises
            warnings.simplefilter("ignore")
            return fetch_california_housing(data_home=str(folder), download_if_missing=fetch, return_X_y=True)

    layout = "scikit-learn's cache file cal_housing_py3.pkz"
    features, targets = read_files("california", folder, [folder / "cal_housing_py3.pkz"], layout, download, read)
    return tabular_data("california", features, targets, seed)


# --- files: local copies only --------------------------------------------------------------------------------------


@register("image_folder", CLASSIFICATION)
def load_image_folder(data_dir: str | None = None, seed: int = 0, download: bool = True) -> SupervisedData:
    """Images in one sub-folder per class under ``data_dir`` (torchvision's ``ImageFolder``), ``(3, 64, 64)``."""
    if not data_dir:
        raise ValueError(f"image_folder has nothing to download: {DATA_DIR_HINT} (one sub-folder per class)")
    folder = Path(data_dir).expanduser()
    try:
        images = tv_datasets.ImageFolder(
            folder, transform=photo_transform(PHOTO_SIZE, train=False), target_transform=as_long, loader=open_rgb
        )
    except (OSError, ValueError) as error:  # FileNotFoundError when there are no class folders or an empty one
        raise ValueError(
            f"image_folder: no usable images in {folder} ({reason(error)}); it cannot be downloaded: "
            f"{DATA_DIR_HINT} (one sub-folder of images per class)"
        ) from error
    if len(images) < 2:
        raise ValueError(f"image_folder: {folder} holds {len(images)} image, too few for a train/validation split")
    train_index, valid_index = split_indices(len(images), VALID_FRACTION, seed)
    return SupervisedData(
        name="image_folder",
        kind=CLASSIFICATION,
        train=Subset(images, train_index.tolist()),
        valid=Subset(images, valid_index.tolist()),
        input_shape=(3, PHOTO_SIZE, PHOTO_SIZE),
        n_outputs=len(images.classes),
        class_names=list(images.classes),
        preprocessing=image_preprocessing((PHOTO_SIZE, PHOTO_SIZE), "RGB", *IMAGENET_NORMALIZE),
    )


class LabelledImages(Dataset):
    """Image files with their labels, read on access as RGB and passed through ``transform``."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Callable):
        self.paths = [str(path) for path in paths]
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(open_rgb(self.paths[index])), torch.tensor(self.labels[index], dtype=torch.long)


def dogs_vs_cats_files(folder: Path) -> list[Path]:
    """Kaggle's ``cat.<N>.jpg`` / ``dog.<N>.jpg`` in ``folder/train`` (or ``folder`` itself), sorted by name."""
    images = folder / "train" if (folder / "train").is_dir() else folder
    if not images.is_dir():
        return []
    return sorted(path for path in images.iterdir() if DOGS_VS_CATS_NAME.fullmatch(path.name) and path.is_file())


@register("dogs_vs_cats", CLASSIFICATION)
def load_dogs_vs_cats(data_dir: str | None = None, seed: int = 0, download: bool = True) -> SupervisedData:
    """Kaggle's Dogs vs. Cats (the book's chapter 6): label from the file name, 30 % held out, ``(3, 64, 64)``.

    Training images are cropped at random and flipped (the book's augmentation at a smaller size); validation
    images are centre-cropped.
    """
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir() / "dogs_vs_cats"
    paths = dogs_vs_cats_files(folder)
    if len(paths) < 2:
        raise ValueError(
            f"dogs_vs_cats: {len(paths)} cat.<N>.jpg / dog.<N>.jpg files in {folder}/train or {folder}; "
            f"it cannot be downloaded (Kaggle needs a login): {DATA_DIR_HINT} of Kaggle's train/ folder"
        )
    labels = [DOGS_VS_CATS_CLASSES.index(path.name.split(".")[0].lower()) for path in paths]
    train_index, valid_index = split_indices(len(paths), DOGS_VS_CATS_VALID_FRACTION, seed)

    def part(indices: torch.Tensor, train: bool) -> LabelledImages:
        transform = photo_transform(DOGS_VS_CATS_RESIZE, train)
        return LabelledImages([paths[i] for i in indices], [labels[i] for i in indices], transform)

    return SupervisedData(
        name="dogs_vs_cats",
        kind=CLASSIFICATION,
        train=part(train_index, train=True),
        valid=part(valid_index, train=False),
        input_shape=(3, PHOTO_SIZE, PHOTO_SIZE),
        n_outputs=len(DOGS_VS_CATS_CLASSES),
        class_names=list(DOGS_VS_CATS_CLASSES),
        preprocessing=image_preprocessing((PHOTO_SIZE, PHOTO_SIZE), "RGB", *IMAGENET_NORMALIZE),
    )
