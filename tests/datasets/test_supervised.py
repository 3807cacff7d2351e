"""The supervised loaders: the offline defaults as they are, the file-based ones on tiny copies written here in the
on-disk formats torchvision and scikit-learn read (never a download)."""

import os
import pickle
import struct

import joblib
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import datasets.supervised as supervised
from datasets.supervised import (
    ATARI_CLASSIFIER_GAMES,
    DATASETS,
    IMAGENET_NORMALIZE,
    MNIST_NORMALIZE,
    dataset_names,
    load_dataset,
)

OFFLINE_SIZES = {"digits": (1438, 359), "diabetes": (354, 88), "linear": (800, 200)}


def stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = zip(*(dataset[index] for index in range(len(dataset))), strict=True)
    return torch.stack(inputs), torch.stack(targets)


def check_items(data) -> None:
    """Every item of both splits has the documented shape and dtypes."""
    for split in (data.train, data.valid):
        inputs, targets = stack(split)
        assert tuple(inputs.shape[1:]) == data.input_shape
        assert inputs.dtype == torch.float32
        if data.kind == "classification":
            assert targets.dtype == torch.long and targets.shape == (len(split),)
            assert targets.min() >= 0 and targets.max() < data.n_outputs
            assert len(data.class_names) == data.n_outputs
        else:
            assert targets.dtype == torch.float32 and targets.shape == (len(split), 1)
            assert data.n_outputs == 1 and data.class_names is None


# --- registry ------------------------------------------------------------------------------------------------------


def test_registry_names_and_kinds():
    classification = ["digits", "atari_games", "mnist", "fashion_mnist", "cifar10", "image_folder", "dogs_vs_cats"]
    assert dataset_names("classification") == classification
    assert dataset_names("regression") == ["diabetes", "linear", "california"]
    assert set(DATASETS) == set(dataset_names("classification")) | set(dataset_names("regression"))
    with pytest.raises(ValueError, match="unknown kind"):
        dataset_names("clustering")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnits'") as raised:
        load_dataset("mnits", None, seed=0)
    message = str(raised.value)
    assert "\n" not in message
    assert all(name in message for name in DATASETS)


# --- offline defaults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind, input_shape, n_outputs",
    [
        ("digits", "classification", (1, 8, 8), 10),
        ("diabetes", "regression", (10,), 1),
        ("linear", "regression", (1,), 1),
    ],
)
def test_offline_defaults_have_the_interface(name, kind, input_shape, n_outputs):
    data = load_dataset(name, None, seed=0, download=False)
    assert (data.name, data.kind, data.input_shape, data.n_outputs) == (name, kind, input_shape, n_outputs)
    assert tuple(data.train[0][0].shape) == data.input_shape
    assert (len(data.train), len(data.valid)) == OFFLINE_SIZES[name]
    check_items(data)


@pytest.mark.parametrize("name", OFFLINE_SIZES)
def test_same_seed_same_split_and_other_seed_other_split(name):
    first, again, other = (stack(load_dataset(name, None, seed=seed).train)[0] for seed in (3, 3, 4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_digits_are_images_in_unit_range_with_digit_names():
    data = load_dataset("digits", None, seed=0)
    inputs, targets = stack(data.train)
    assert inputs.min() == 0.0 and inputs.max() == 1.0
    assert data.class_names == [str(digit) for digit in range(10)]
    assert set(targets.tolist()) == set(range(10))


def test_diabetes_features_use_the_train_splits_scaling_and_targets_stay_raw():
    data = load_dataset("diabetes", None, seed=0)
    train_x, train_y = stack(data.train)
    valid_x, _ = stack(data.valid)
    assert torch.allclose(train_x.mean(dim=0), torch.zeros(10), atol=1e-5)
    assert torch.allclose(train_x.std(dim=0), torch.ones(10), atol=1e-5)
    assert not torch.allclose(valid_x.mean(dim=0), torch.zeros(10), atol=1e-3)  # scaled with the train statistics
    assert train_y.min() >= 25 and train_y.max() <= 346  # disease progression, in its own units


def test_linear_is_the_books_line():
    data = load_dataset("linear", None, seed=0)
    x, y = stack(data.train)
    assert x.min() >= 0 and x.max() < 20  # not standardised
    design = torch.cat([x, torch.ones_like(x)], dim=1)
    w, b = torch.linalg.lstsq(design, y).solution.flatten().tolist()
    assert abs(w - 2) < 0.05 and abs(b - 3) < 0.3


def test_atari_games_draws_200_and_50_frames_per_game_from_two_seeds(monkeypatch):
    from tasks.atari_fid import FID_GAMES

    calls = []

    def fake_frames(games, per_game, image_size, seed):
        calls.append((tuple(games), per_game, image_size, seed))
        count = len(games) * per_game
        return torch.zeros(count, 3, image_size, image_size), torch.arange(len(games)).repeat_interleave(per_game)

    monkeypatch.setattr(supervised, "labelled_frames", fake_frames)
    data = load_dataset("atari_games", None, seed=7)
    assert ATARI_CLASSIFIER_GAMES == FID_GAMES  # the same twelve games as Atari-FID's classifier
    assert calls == [(FID_GAMES, 200, 32, 7), (FID_GAMES, 50, 32, 1007)]
    assert (len(data.train), len(data.valid)) == (2400, 600)


def test_atari_games_labels_real_frames_with_their_game(monkeypatch):
    # A few frames per game: the real 200 + 50 take about 10 s, creating the 24 emulators alone about 4 s.
    monkeypatch.setattr(supervised, "ATARI_TRAIN_PER_GAME", 4)
    monkeypatch.setattr(supervised, "ATARI_VALID_PER_GAME", 2)
    data = load_dataset("atari_games", None, seed=0)
    assert (data.kind, data.input_shape, data.n_outputs) == ("classification", (3, 32, 32), 12)
    assert data.class_names == list(ATARI_CLASSIFIER_GAMES)
    check_items(data)
    train_x, train_y = stack(data.train)
    _, valid_y = stack(data.valid)
    assert train_x.min() >= -1 and train_x.max() <= 1
    assert torch.equal(torch.bincount(train_y), torch.full((12,), 4))
    assert torch.equal(torch.bincount(valid_y), torch.full((12,), 2))


# --- MNIST and Fashion-MNIST: torchvision's raw IDX files -----------------------------------------------------------


def write_idx(path, array: np.ndarray) -> None:
    """The IDX format: magic 0x0000080N (uint8 data, N dims), big-endian int32 sizes, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">i", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root, folder: str, n_train: int = 20, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28))
        images[0] = 255  # a white image, to check the normalisation
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_reads_torchvisions_raw_files(tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    data = load_dataset(name, str(tmp_path), seed=0, download=False)
    assert (len(data.train), len(data.valid)) == (20, 10)  # the official train and test sets
    assert (data.input_shape, data.n_outputs) == ((1, 28, 28), 10)
    assert data.class_names == getattr(torchvision.datasets, folder).classes
    check_items(data)
    image, label = data.valid[3]
    assert label.item() == 3
    if name == "mnist":
        (mean,), (std,) = MNIST_NORMALIZE
        assert torch.allclose(data.train[0][0], torch.full((1, 28, 28), (1 - mean) / std))


def test_mnist_with_a_broken_file_is_a_clear_error(tmp_path):
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="mnist: cannot read the files in") as raised:
        load_dataset("mnist", str(tmp_path), seed=0, download=False)
    assert "\n" not in str(raised.value)


def test_a_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried a mirror, got:\n<urlopen error>")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(ValueError, match="download failed") as raised:
        load_dataset("mnist", str(tmp_path), seed=0, download=True)
    message = str(raised.value)
    assert str(tmp_path) in message and "--data-dir" in message and "\n" not in message


# --- CIFAR-10: torchvision's pickled batches ------------------------------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root, per_batch: int = 4, n_test: int = 10) -> None:
    """The python version's layout: five training batches, a test batch and the label names, all pickled dicts."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{number}": per_batch for number in range(1, 6)} | {"test_batch": n_test}
    for file_name, count in batches.items():
        batch = {"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8), "labels": list(range(count))}
        (folder / file_name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_NAMES}))


def test_cifar10_reads_torchvisions_batches(tmp_path, monkeypatch):
    write_cifar(tmp_path)
    # torchvision checks each file's md5 against the official archive's, which no hand-written file can match:
    # the check becomes "the file exists" (the read itself is torchvision's).
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    data = load_dataset("cifar10", str(tmp_path), seed=0, download=False)
    assert (len(data.train), len(data.valid)) == (20, 10)
    assert (data.input_shape, data.n_outputs, data.class_names) == ((3, 32, 32), 10, CIFAR_NAMES)
    check_items(data)


def test_cifar10_files_that_fail_torchvisions_checksum_are_a_clear_error(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match="cifar10: cannot read the files in"):
        load_dataset("cifar10", str(tmp_path), seed=0, download=False)


# --- California housing: scikit-learn's joblib cache ----------------------------------------------------------------


def write_california(data_home, rows: int = 50) -> None:
    """``cal_housing_py3.pkz`` as scikit-learn caches it: value in $, income, age, rooms, bedrooms, population,
    households, latitude, longitude (it derives the per-household averages when it loads)."""
    rng = np.random.default_rng(0)
    table = np.column_stack(
        [
            rng.uniform(15_000, 500_000, rows),
            rng.uniform(0.5, 15, rows),
            rng.uniform(1, 52, rows),
            rng.uniform(100, 5000, rows),
            rng.uniform(20, 1000, rows),
            rng.uniform(10, 3000, rows),
            rng.uniform(5, 1000, rows),
            rng.uniform(32, 42, rows),
            rng.uniform(-124, -114, rows),
        ]
    )
    data_home.mkdir(parents=True, exist_ok=True)
    joblib.dump(table, data_home / "cal_housing_py3.pkz", compress=6)


def test_california_reads_scikit_learns_cache(tmp_path):
    write_california(tmp_path)
    data = load_dataset("california", str(tmp_path), seed=0, download=False)
    assert (len(data.train), len(data.valid)) == (40, 10)
    assert (data.kind, data.input_shape, data.n_outputs) == ("regression", (8,), 1)
    check_items(data)
    train_x, train_y = stack(data.train)
    assert torch.allclose(train_x.mean(dim=0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(train_x.std(dim=0), torch.ones(8), atol=1e-5)
    assert train_y.min() >= 0.15 and train_y.max() <= 5.0  # in 100,000 $, not standardised


class RunsCode:
    """Unpickled, it would run a shell command: what a file from elsewhere may hold instead of arrays."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_california_cache_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    joblib.dump({"table": np.zeros((4, 9)), "payload": RunsCode(marker)}, tmp_path / "cal_housing_py3.pkz", compress=6)
    with pytest.raises(ValueError, match="refused to load posix.system"):
        load_dataset("california", str(tmp_path), seed=0, download=False)
    assert not marker.exists()


def test_california_with_a_broken_cache_is_a_clear_error(tmp_path):
    (tmp_path / "cal_housing_py3.pkz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="california: cannot read the files in"):
        load_dataset("california", str(tmp_path), seed=0, download=False)


# --- image folders and Dogs vs. Cats -------------------------------------------------------------------------------


def write_image(path, color: tuple[int, int, int], size: tuple[int, int] = (80, 70)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_labels_images_by_sub_folder(tmp_path):
    for index in range(5):
        write_image(tmp_path / "apples" / f"{index}.png", (255, 0, 0))
        write_image(tmp_path / "pears" / f"{index}.png", (0, 255, 0))
    data = load_dataset("image_folder", str(tmp_path), seed=0, download=False)
    assert (len(data.train), len(data.valid)) == (8, 2)
    assert (data.input_shape, data.n_outputs, data.class_names) == ((3, 64, 64), 2, ["apples", "pears"])
    check_items(data)
    inputs, labels = stack(data.train)
    red = (1 - IMAGENET_NORMALIZE[0][0]) / IMAGENET_NORMALIZE[1][0]
    assert torch.allclose(inputs[labels == 0][:, 0], torch.tensor(red), atol=1e-5)
    again = load_dataset("image_folder", str(tmp_path), seed=0)
    assert data.train.indices == again.train.indices


def test_image_folder_needs_a_data_dir():
    with pytest.raises(ValueError, match="--data-dir"):
        load_dataset("image_folder", None, seed=0)


def write_dogs_vs_cats(folder, count: int = 5) -> None:
    for index in range(count):
        write_image(folder / f"cat.{index}.jpg", (200, 50, 50))
        write_image(folder / f"dog.{index}.jpg", (50, 50, 200))
    (folder / "notes.txt").write_text("not an image")
    write_image(folder / "cat.jpg", (0, 0, 0))  # no number: not Kaggle's naming, ignored


@pytest.mark.parametrize("sub_folder", ["train", ""])
def test_dogs_vs_cats_labels_kaggles_files_by_name(tmp_path, sub_folder):
    write_dogs_vs_cats(tmp_path / sub_folder if sub_folder else tmp_path)
    data = load_dataset("dogs_vs_cats", str(tmp_path), seed=0, download=False)
    assert (len(data.train), len(data.valid)) == (7, 3)  # 30 % of the ten named files held out
    assert (data.input_shape, data.n_outputs, data.class_names) == ((3, 64, 64), 2, ["cat", "dog"])
    check_items(data)
    paths = data.train.paths + data.valid.paths
    assert not any(path.endswith(("notes.txt", "/cat.jpg")) for path in paths)
    for split in (data.train, data.valid):
        for path, label in zip(split.paths, split.labels, strict=True):
            assert label == (0 if "/cat." in path else 1)
    assert load_dataset("dogs_vs_cats", str(tmp_path), seed=0).valid.paths == data.valid.paths
    assert load_dataset("dogs_vs_cats", str(tmp_path), seed=1).valid.paths != data.valid.paths


def test_dogs_vs_cats_names_an_unreadable_image(tmp_path):
    write_dogs_vs_cats(tmp_path / "train")
    data = load_dataset("dogs_vs_cats", str(tmp_path), seed=0)
    broken = data.train.paths[0]
    with open(broken, "wb") as file:
        file.write(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read image"):
        data.train[0]


# --- missing files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "california", "image_folder", "dogs_vs_cats"])
@pytest.mark.parametrize("exists", [True, False])
def test_missing_files_are_a_one_line_error_naming_the_folder(tmp_path, name, exists):
    folder = tmp_path / "data" if not exists else tmp_path
    with pytest.raises(ValueError) as raised:
        load_dataset(name, str(folder), seed=0, download=False)
    message = str(raised.value)
    assert message.startswith(f"{name}: ") and "\n" not in message
    assert str(folder) in message and "--data-dir" in message
