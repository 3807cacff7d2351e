"""SampleSheets: PNG sheets of a fixed-noise batch that change no model state and draw from no RNG."""

import copy
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

import handlers.images as images_module
from handlers.images import SampleSheets, image_grid
from models.dcgan import Generator


@pytest.fixture
def generator() -> Generator:
    torch.manual_seed(0)
    return Generator(image_size=8, filters=2, latent_size=4)


@pytest.fixture
def fixed_noise() -> torch.Tensor:
    return torch.randn(4, 4, 1, 1, generator=torch.Generator().manual_seed(1))


def image_batches(count: int) -> list[torch.Tensor]:
    source = torch.Generator().manual_seed(2)
    return [torch.rand(6, 3, 8, 8, generator=source) * 2 - 1 for _ in range(count)]


def read_png(path) -> torch.Tensor:
    """A PNG as a (C, H, W) uint8 tensor."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def finite_step(engine, batch):
    return {"loss": 0.5}


def names(directory) -> list[str]:
    """The folder's files but the run's animation (``progress.gif``, checked on its own)."""
    if not directory.exists():
        return []
    return sorted(path.name for path in directory.iterdir() if path.name != "progress.gif")


def test_sheets_are_written_every_n_iterations_and_at_the_end(tmp_path, generator, fixed_noise):
    engine = Engine(finite_step)
    SampleSheets(generator, fixed_noise, tmp_path / "samples", every=2).attach(engine)

    engine.run(image_batches(5), max_epochs=1)

    assert names(tmp_path / "samples") == [
        "fake_0000002.png",
        "fake_0000004.png",
        "fake_0000005.png",
        "real_0000002.png",
        "real_0000004.png",
        "real_0000005.png",
    ]
    with Image.open(tmp_path / "samples" / "progress.gif") as animation:  # every fake sheet so far, in order
        durations = []
        for frame in range(animation.n_frames):
            animation.seek(frame)
            durations.append(animation.info["duration"])
    # An untrained generator draws the same sheet three times: GIF merges equal frames, adding their times
    assert sum(durations) == 250 + 250 + 8 * 250


def test_an_end_that_coincides_with_a_periodic_sheet_writes_it_once(tmp_path, generator, fixed_noise, monkeypatch):
    written = []
    save = images_module.save_png_atomically

    def counting_save(grid, path):
        written.append(path.name)
        save(grid, path)

    monkeypatch.setattr(images_module, "save_png_atomically", counting_save)
    engine = Engine(finite_step)
    SampleSheets(generator, fixed_noise, tmp_path, every=2).attach(engine)

    engine.run(image_batches(4), max_epochs=1)

    assert sorted(written) == ["fake_0000002.png", "fake_0000004.png", "real_0000002.png", "real_0000004.png"]
    assert names(tmp_path) == sorted(written)  # and no temporary file is left behind


def test_real_sheet_shows_the_batch_just_trained_on_and_fake_sheet_the_fixed_noise(tmp_path, generator, fixed_noise):
    batches = image_batches(2)
    engine = Engine(finite_step)
    SampleSheets(generator, fixed_noise, tmp_path, every=2).attach(engine)

    engine.run(batches, max_epochs=1)

    def as_png_pixels(grid):
        return grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)

    real = read_png(tmp_path / "real_0000002.png")
    assert real.shape == (3, 22, 22)  # 4 images of 8x8 (as many as the fixed noise), 2 per row, 2-pixel padding
    assert torch.equal(real, as_png_pixels(image_grid(batches[1][:4])))
    generator.eval()
    with torch.no_grad():
        expected_fake = image_grid(generator(fixed_noise))
    assert torch.equal(read_png(tmp_path / "fake_0000002.png"), as_png_pixels(expected_fake))


def test_a_gpu_runs_uint8_frames_make_the_same_real_sheet(tmp_path, generator, fixed_noise):
    """On CUDA the stream yields the frames as uint8 (B, S, S, 3); the sheet shows them as the float frames."""
    frames = [
        torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
        for i in range(2)
    ]
    as_floats = [f.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0 for f in frames]
    for folder, batches in (("uint8", frames), ("float", as_floats)):
        engine = Engine(finite_step)
        SampleSheets(generator, fixed_noise, tmp_path / folder, every=2).attach(engine)
        engine.run(batches, max_epochs=1)
    uint8_sheet, float_sheet = (read_png(tmp_path / folder / "real_0000002.png") for folder in ("uint8", "float"))
    assert uint8_sheet.shape == (3, 22, 22) and torch.equal(uint8_sheet, float_sheet)


@pytest.mark.parametrize("training", [True, False])
def test_writing_sheets_changes_no_generator_state_and_restores_its_mode(tmp_path, generator, fixed_noise, training):
    generator.train(training)
    before = copy.deepcopy(generator.state_dict())
    engine = Engine(finite_step)
    SampleSheets(generator, fixed_noise, tmp_path, every=1).attach(engine)

    engine.run(image_batches(3), max_epochs=1)

    assert len(names(tmp_path)) == 6
    after = generator.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():  # BatchNorm running stats and batch counters included
        assert torch.equal(after[key], value), key
    assert generator.training is training
    assert all(module.training is training for module in generator.modules())


def test_writing_a_sheet_draws_nothing_from_the_global_rng(tmp_path, generator, fixed_noise):
    engine = Engine(finite_step)
    sheets = SampleSheets(generator, fixed_noise, tmp_path, every=1)
    engine.run(image_batches(1), max_epochs=1)  # a finished engine: state.iteration 1, batch and output set
    before = torch.get_rng_state()

    sheets.write(engine)

    assert (tmp_path / "fake_0000001.png").exists()
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nothing_is_written_when_the_output_is_not_finite(tmp_path, generator, fixed_noise, bad):
    engine = Engine(lambda engine, batch: {"loss_gen": 1.0, "loss_dis": bad})
    SampleSheets(generator, fixed_noise, tmp_path / "samples", every=1).attach(engine)

    engine.run(image_batches(3), max_epochs=1)

    assert names(tmp_path / "samples") == []


def test_only_a_fake_sheet_when_the_batch_is_not_a_tensor(tmp_path, generator, fixed_noise):
    engine = Engine(finite_step)
    SampleSheets(generator, fixed_noise, tmp_path, every=1).attach(engine)

    engine.run([1, 2], max_epochs=1)

    assert names(tmp_path) == ["fake_0000001.png", "fake_0000002.png"]


def test_image_grid_maps_minus_one_to_zero_and_one_to_one():
    assert torch.equal(image_grid(torch.full((1, 3, 2, 2), -1.0)), torch.zeros(3, 2, 2))
    assert torch.equal(image_grid(torch.full((1, 3, 2, 2), 1.0)), torch.ones(3, 2, 2))
    assert torch.allclose(image_grid(torch.zeros(1, 3, 2, 2)), torch.full((3, 2, 2), 0.5))


def test_image_grid_is_not_min_max_stretched():
    images = torch.tensor([-0.5, 0.5]).view(1, 1, 1, 2).expand(1, 3, 2, 2)

    grid = image_grid(images)

    assert grid.min().item() == pytest.approx(0.25)
    assert grid.max().item() == pytest.approx(0.75)


def test_image_grid_leaves_its_input_unchanged():
    images = torch.linspace(-1, 1, 4 * 3 * 2 * 2).view(4, 3, 2, 2)
    original = images.clone()

    image_grid(images)

    assert torch.equal(images, original)


@pytest.mark.parametrize(("count", "channels"), [(1, 3), (4, 3), (6, 3), (64, 3), (5, 1)])
def test_grid_and_png_are_torchvisions(tmp_path, count, channels):
    from torchvision.utils import make_grid, save_image

    batch = torch.rand(count, channels, 7, 5, generator=torch.Generator().manual_seed(count)) * 2.4 - 1.2
    rows = max(1, int(count**0.5))
    expected = make_grid(batch, nrow=rows, normalize=True, value_range=(-1, 1))
    assert torch.allclose(image_grid(batch), expected, atol=1e-6)
    save_image(expected, tmp_path / "torchvision.png")
    images_module.save_png_atomically(image_grid(batch), tmp_path / "ours.png")
    assert torch.equal(read_png(tmp_path / "ours.png"), read_png(tmp_path / "torchvision.png"))
