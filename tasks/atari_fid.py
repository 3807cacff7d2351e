"""Atari-FID's feature extractor: a frame classifier trained on real ALE frames of twelve games, cached on disk.

The usual FID uses Inception features; those weights can't be downloaded here, and ImageNet features are the wrong
domain for Atari screens anyway. This classifier learns to tell twelve games apart (the GAN's three among them), so
its feature layer describes Atari screens in general, as Inception's describes photos.

Training is deterministic (fixed seeds, in a forked RNG so the caller's random streams are untouched) and happens on
first use, once per image size; the result is cached as ``<cache>/atari-fid-v1-<size>px.pt`` (``<cache>`` is
``$IGNITE_BOOK_CACHE`` or ``~/.cache/ignite-book-runner``) and holds its own validation accuracy. Build it ahead
with ``python scripts/atari_fid.py --image-size 64``. Change the recipe below only together with ``FID_VERSION``:
FID values are comparable only within one version.
"""

import fcntl
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ignite.engine import create_supervised_trainer
from torch.utils.data import DataLoader, TensorDataset

from datasets import cache_dir
from datasets.atari import TWELVE_GAMES, labelled_frames
from models.dcgan import stride2_stages
from models.frame_classifier import FEATURE_SIZE, FrameClassifier
from runner.files import DamagedFile, read_own_torch_file, save_atomically
from runner.settings import Settings, setting

FID_VERSION = "atari-fid-v1"
FID_GAMES = TWELVE_GAMES  # part of the recipe: other games need a new FID_VERSION
RECIPE = {"train_per_game": 400, "valid_per_game": 100, "epochs": 3, "batch_size": 64, "lr": 1e-3, "seed": 0}


def extractor_path(image_size: int) -> Path:
    return cache_dir() / f"{FID_VERSION}-{image_size}px.pt"


def train_frame_classifier(image_size: int) -> tuple[FrameClassifier, float]:
    """Train the classifier with Ignite's supervised trainer; returns it (in eval mode) and its validation accuracy."""
    seed = RECIPE["seed"]
    # Atari-FID trains it on first use, from inside Ignite's metric update, which runs under no_grad. manual_seed
    # seeds the CUDA generators too: they are forked as well, or a GPU run's noise would restart mid-run.
    cuda_devices = list(range(torch.cuda.device_count()))
    with torch.random.fork_rng(devices=cuda_devices), torch.enable_grad():
        torch.manual_seed(seed)
        train_x, train_y = labelled_frames(FID_GAMES, RECIPE["train_per_game"], image_size, seed=seed)
        valid_x, valid_y = labelled_frames(FID_GAMES, RECIPE["valid_per_game"], image_size, seed=seed + 1000)
        model = FrameClassifier(image_size, n_classes=len(FID_GAMES))
        optimizer = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
        shuffle = torch.Generator().manual_seed(seed)
        loader = DataLoader(TensorDataset(train_x, train_y), RECIPE["batch_size"], shuffle=True, generator=shuffle)
        create_supervised_trainer(model, optimizer, torch.nn.CrossEntropyLoss()).run(
            loader, max_epochs=RECIPE["epochs"]
        )
        model.eval()
        with torch.no_grad():  # counted here, not with Ignite's Accuracy: that one all-reduces over the ranks of a
            # several-process run, and only the rank that holds the cache's lock trains (the others wait on it)
            batches = zip(valid_x.split(256), valid_y.split(256), strict=True)
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return model, correct / len(valid_y)


def load_frame_classifier(
    image_size: int, say: Callable[[str], None] = print
) -> tuple[FrameClassifier, dict[str, Any]]:
    """The cached classifier for ``image_size``, trained first if there is none, or if the cached one is damaged in
    any way or was made by another recipe (one process trains, others wait). Its info names it: ``fid_classifier``."""
    stride2_stages(image_size)  # a size the models cannot take fails here, before any work
    path = extractor_path(image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = usable_cache(path, image_size, say)
        if cached is None:
            record = build_frame_classifier(path, image_size, say)
            cached = classifier_from(record), record
    model, record = cached
    info = {key: value for key, value in record.items() if key != "model"}
    info["fid_classifier"] = classifier_name(record)
    return model.eval(), info


def classifier_from(record: dict[str, Any]) -> FrameClassifier:
    with torch.random.fork_rng(devices=[]):  # a module's initial weights draw from the RNG the caller trains with
        model = FrameClassifier(record["image_size"], n_classes=len(record["games"]))
    model.load_state_dict(record["model"])
    return model


def recipe_record(image_size: int) -> dict[str, Any]:
    """What a cached classifier must have been made by: its version, size, games and training recipe."""
    return {"version": FID_VERSION, "image_size": image_size, "games": list(FID_GAMES), "recipe": dict(RECIPE)}


def usable_cache(path: Path, image_size: int, say: Callable[[str], None]) -> tuple[FrameClassifier, dict] | None:
    """The cached classifier at ``path`` and its record, read once; None if there is none, or if it cannot be used
    (said why): damaged in any way, made by another recipe, or holding no classifier of this version."""
    if not path.exists():
        return None
    try:
        record = read_own_torch_file(path)
    except DamagedFile as damaged:
        say(f"{damaged}: it is made again")
        return None
    wanted = recipe_record(image_size)
    if not isinstance(record, dict) or {key: record.get(key) for key in wanted} != wanted:
        say(f"{path} was made by another recipe than this version's: it is made again")
        return None
    try:
        return classifier_from(record), record
    except (KeyError, TypeError, RuntimeError) as error:
        say(f"{path} holds no classifier of this version ({type(error).__name__}): it is made again")
        return None


def build_frame_classifier(path: Path, image_size: int, say: Callable[[str], None]) -> dict[str, Any]:
    say(f"training Atari-FID's frame classifier for {image_size}x{image_size} frames (first use only)...")
    model, accuracy = train_frame_classifier(image_size)
    record = {**recipe_record(image_size), "valid_accuracy": accuracy, "model": model.state_dict()}
    save_atomically(record, path)
    say(f"Atari-FID classifier: validation accuracy {accuracy:.4f} ({len(FID_GAMES)} games); cached at {path}")
    return record


def classifier_name(record: dict[str, Any]) -> str:
    """``atari-fid-v1/<12 hex digits>``: the recipe's version and the SHA-256 of the weights (names and bytes, in
    name order), so two FID values say whether the same classifier measured them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(record["model"].items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{record['version']}/{digest.hexdigest()[:12]}"


def image_side(value: int) -> None:
    stride2_stages(value)  # raises ValueError with the reason


@dataclass(frozen=True)
class BuildSettings(Settings):
    image_size: int = setting(64, "side of the frames the GAN makes", check=image_side)


@dataclass
class Built:
    exit_code: int
    info: dict[str, Any]


def build(settings: BuildSettings) -> Built:
    """``scripts/atari_fid.py``: build (or show) the cached classifier for ``--image-size``."""
    _, info = load_frame_classifier(settings.image_size)
    print(
        f"{extractor_path(settings.image_size)}: {info['fid_classifier']}, {len(FID_GAMES)} games, "
        f"validation accuracy {info['valid_accuracy']:.4f}"
    )
    return Built(0, info)


class LazyFeatures(torch.nn.Module):
    """Atari-FID's feature layer, its classifier loaded (or trained, on first use) when first called; ``name`` is
    then the classifier's ``fid_classifier``."""

    def __init__(self, load: Callable[[], tuple[FrameClassifier, dict]], device: torch.device):
        super().__init__()
        self.load = load
        self.device = device
        self.classifier: FrameClassifier | None = None
        self.name = ""
        self.feature_size = FEATURE_SIZE  # (building a classifier to ask would draw from the training RNG)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            classifier, info = self.load()
            self.classifier, self.name = classifier.to(self.device), info["fid_classifier"]
        return self.classifier.features(frames)
