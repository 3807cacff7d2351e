"""The autoencoder task in-process at smoke size: what a run writes, exact resume, early stopping, the MNIST path."""

import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from threadpoolctl import threadpool_limits

from conftest import damage_tensor_data
from handlers.codes import scatter_figure
from handlers.metrics_log import read_records, records_by_iteration
from runner.checkpoint_files import find_checkpoint
from runner.cli import resolve_settings
from runner.errors import UserError
from runner.files import verify_torch_file
from runner.settings import make_settings
from tasks.autoencode import AutoencodeSettings, load_images, train

# The book's architecture at smoke size: digits upscaled to 12x12 only, 4 and 2 channels, 8-d codes. 1,438 training
# digits in batches of 60: 24 iterations per epoch.
TINY = dict(dev="cpu", digits_size=12, conv_widths=(4, 2), code_size=8, lr=0.05, embed_points=60, log_every=1)


def settings_for(output_dir, **overrides) -> AutoencodeSettings:
    return make_settings(AutoencodeSettings, {**TINY, "max_epochs": 2, "output_dir": str(output_dir), **overrides})


def val_losses(run_dir) -> list[float]:
    return [record["val_loss"] for record in read_records(run_dir / "metrics.jsonl") if "val_loss" in record]


def decoded_png(path) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decodes every pixel: a torn file raises here
        return image


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Torch and OpenMP (t-SNE) on one thread: on 2 cores shared with other jobs, idle worker threads spinning for
    their turn make problems this small 10-30 times slower (a 60-point t-SNE: 4 s instead of 0.15 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("autoencode") / "A"
    result = train(settings_for(run_dir))
    assert (result.exit_code, result.epoch) == (0, 2)
    return run_dir


def test_val_loss_is_logged_per_epoch_and_falls(trained):
    evaluations = [r for r in read_records(trained / "metrics.jsonl") if "val_loss" in r]
    assert [(r["iteration"], r["epoch"]) for r in evaluations] == [(24, 1), (48, 2)]
    assert evaluations[1]["val_loss"] < evaluations[0]["val_loss"] < 1.0
    best = min(evaluations, key=lambda r: r["val_loss"])["iteration"]
    assert [p.name for p in trained.glob("checkpoints/best_*.pt")] == [f"best_{best}.pt"]


def test_each_evaluation_writes_a_sheet_of_inputs_over_reconstructions(trained):
    sheets = sorted(trained.glob("samples/reconstructions_*.png"))
    assert [p.name for p in sheets] == ["reconstructions_0000024.png", "reconstructions_0000048.png"]
    # 32 validation digits of 12x12 as 4 input rows and 4 reconstruction rows of 8, with make_grid's 2-pixel gaps
    assert decoded_png(sheets[-1]).size == (2 + 8 * 14, 2 + 8 * 14)


def test_the_end_writes_codes_projector_tsne_and_random_codes(trained):
    codes = torch.load(trained / "codes.pt", weights_only=True)
    assert codes["codes"].shape == (359, 8) and codes["codes"].abs().max() <= 1  # every validation digit
    assert codes["labels"].shape == (359,) and set(codes["labels"].tolist()) == set(range(10))
    assert codes["class_names"] == [str(digit) for digit in range(10)] and codes["iteration"] == 48
    tsne = decoded_png(trained / "samples" / "tsne_0000048.png")
    assert tsne.mode == "RGB" and tsne.size == (800, 650)  # matplotlib's 8 x 6.5 inches at 100 dpi
    assert decoded_png(trained / "samples" / "random_codes_0000048.png").size == (2 + 4 * 14, 2 + 4 * 14)
    assert "00048/codes/metadata.tsv" in (trained / "projector_config.pbtxt").read_text()
    assert len((trained / "00048" / "codes" / "metadata.tsv").read_text().splitlines()) == 60  # --embed-points
    events = EventAccumulator(str(trained), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert {"eval/loss", "train/loss", "train/avg_loss"} <= set(events.Tags()["scalars"])
    assert {"reconstructions", "tsne", "random_codes"} <= set(events.Tags()["images"])
    assert [event.step for event in events.Scalars("eval/loss")] == [24, 48]


def test_the_tsne_scatter_has_a_colour_and_a_legend_entry_per_class():
    points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 1.0], [4.0, 0.0]])

    figure = scatter_figure(points, np.array([0, 2, 2, 0, 2]), ["zero", "one", "two"], "t-SNE")

    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["zero", "two"]  # "one" has no codes
    zero, two = figure.axes[0].collections
    assert (len(zero.get_offsets()), len(two.get_offsets())) == (2, 3)
    assert tuple(zero.get_facecolor()[0]) != tuple(two.get_facecolor()[0])
    assert figure.axes[0].get_title() == "t-SNE"


def test_one_epoch_then_resume_to_two_equals_two_straight(trained, tmp_path):
    halves = tmp_path / "halves"
    assert train(settings_for(halves, max_epochs=1)).exit_code == 0
    settings, checkpoint = resolve_settings(AutoencodeSettings, {"resume": str(halves), "max_epochs": 2}, "autoencode")
    assert train(settings, checkpoint).exit_code == 0
    assert val_losses(halves) == val_losses(trained)
    straight, resumed = records_by_iteration(trained / "metrics.jsonl"), records_by_iteration(halves / "metrics.jsonl")
    assert sorted(straight) == sorted(resumed) == list(range(1, 49))
    assert [straight[i]["loss"] for i in range(1, 49)] == [resumed[i]["loss"] for i in range(1, 49)]
    assert torch.equal(torch.load(trained / "codes.pt")["codes"], torch.load(halves / "codes.pt")["codes"])
    weights = [torch.load(run / "checkpoints" / "checkpoint_48.pt")["model"] for run in (trained, halves)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_finished_run_resumed_again_writes_only_its_missing_end_outputs(trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "samples" / "tsne_0000048.png").unlink()  # as if killed during the t-SNE
    kept = (copy / "codes.pt").stat().st_mtime_ns
    metrics = (copy / "metrics.jsonl").read_text()

    result = train(settings_for(copy), find_checkpoint(copy))

    assert (result.exit_code, result.epoch, result.best) == (0, 2, min(val_losses(trained)))
    assert decoded_png(copy / "samples" / "tsne_0000048.png").mode == "RGB"
    assert (copy / "metrics.jsonl").read_text() == metrics  # nothing trained
    again = train(settings_for(copy), find_checkpoint(copy))
    assert again.exit_code == 0 and (copy / "samples" / "tsne_0000048.png").exists()
    assert (copy / "codes.pt").stat().st_mtime_ns != kept  # rewritten once, by the first resume only


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [damage_tensor_data, truncate], ids=["changed bytes", "truncated"])
def test_a_finished_run_with_a_damaged_codes_file_writes_it_again(damage, trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    damage(copy / "codes.pt")
    assert train(settings_for(copy), find_checkpoint(copy)).exit_code == 0
    verify_torch_file(copy / "codes.pt")
    assert torch.equal(torch.load(copy / "codes.pt")["codes"], torch.load(trained / "codes.pt")["codes"])


def test_patience_stops_a_run_whose_val_loss_no_longer_falls(tmp_path, capsys):
    # An lr far below float precision leaves the weights, hence val_loss, exactly as they were.
    result = train(settings_for(tmp_path / "S", lr=1e-30, momentum=0.0, patience=1, max_epochs=5))
    assert (result.exit_code, result.epoch) == (0, 2)
    losses = val_losses(tmp_path / "S")
    assert len(losses) == 2 and losses[0] == losses[1]
    assert "stopped early (no better val_loss in 1 epochs)" in capsys.readouterr().err
    assert (tmp_path / "S" / "codes.pt").exists()  # an early stop is an end: the codes are written


def write_idx(path, array: np.ndarray) -> None:
    """MNIST's IDX format: magic 0x0000080N (uint8 data, N dimensions), big-endian int32 sizes, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">i", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def small_mnist(tmp_path):
    """120 training and 40 test 'digits' in torchvision's raw MNIST layout; the first test image is all white."""
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 120), ("t10k", 40)):
        images = rng.integers(0, 256, size=(count, 28, 28))
        images[0] = 255
        write_idx(tmp_path / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(tmp_path / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)
    return tmp_path


def test_mnist_is_read_from_torchvisions_files_and_scaled_to_minus_one_one(small_mnist, tmp_path):
    settings = settings_for(
        tmp_path / "M", dataset="mnist", data_dir=str(small_mnist), digits_size=28, max_epochs=1, embed_points=20
    )
    data = load_images(settings)
    assert (len(data.train), len(data.valid), data.image_shape) == (120, 40, (1, 28, 28))
    assert torch.equal(data.valid[0][0], torch.ones(1, 28, 28))  # pixel 255 -> 1, as the book's min-max scaling
    pixels = torch.stack([data.train[i][0] for i in range(120)])
    assert pixels.min() == -1 and pixels.max() == 1

    assert train(settings).exit_code == 0
    assert len(val_losses(tmp_path / "M")) == 1
    codes = torch.load(tmp_path / "M" / "codes.pt", weights_only=True)
    assert codes["codes"].shape == (40, 8) and codes["class_names"][0] == "0 - zero"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kernel_size": 4}, "--kernel-size 4: must be a positive odd number"),
        ({"dataset": "cifar10"}, "--dataset cifar10: choose one of digits, mnist, fashion_mnist"),
        ({"dataset": "mnist", "digits_size": 12}, "--digits-size applies to --dataset digits only"),
        ({"keep_checkpoints": 1}, "--keep-checkpoints 1: must be at least 2"),
        ({"conv_widths": (4, 0)}, "--conv-widths 4 0: sizes must be positive"),
    ],
)
def test_settings_it_cannot_run_are_refused_at_start(values, message, tmp_path):
    with pytest.raises(UserError, match=message):
        settings_for(tmp_path / "x", **values)
    assert not (tmp_path / "x").exists()
