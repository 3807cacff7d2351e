"""The stable recipe's techniques in the engine: losses, R1, spectral norm, differentiable augmentation and ADA."""

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from engines.augment import DiffAugment, check_augmentations, cutout, translate
from engines.gan import GanStep, create_gan_trainer
from engines.gan_losses import discriminator_loss, generator_loss, r1_penalty
from models.dcgan import Discriminator, Generator

LOGITS_REAL, LOGITS_FAKE = torch.tensor([2.0, -0.5, 0.3]), torch.tensor([-1.5, 0.7, 1.2])


def test_bce_is_the_chapters_loss():
    bce = torch.nn.BCEWithLogitsLoss()
    expected = bce(LOGITS_REAL, torch.ones(3)) + bce(LOGITS_FAKE, torch.zeros(3))
    assert torch.equal(discriminator_loss("bce", LOGITS_REAL, LOGITS_FAKE), expected)
    assert torch.equal(generator_loss("bce", LOGITS_FAKE), bce(LOGITS_FAKE, torch.ones(3)))


def test_hinge_and_relativistic_losses_follow_their_formulas():
    hinge = torch.clamp(1 - LOGITS_REAL, min=0).mean() + torch.clamp(1 + LOGITS_FAKE, min=0).mean()
    assert discriminator_loss("hinge", LOGITS_REAL, LOGITS_FAKE) == pytest.approx(hinge.item())
    assert generator_loss("hinge", LOGITS_FAKE) == pytest.approx(-LOGITS_FAKE.mean().item())
    paired = -torch.log(torch.sigmoid(LOGITS_REAL - LOGITS_FAKE)).mean()  # D: each real more real than its fake
    assert discriminator_loss("relativistic", LOGITS_REAL, LOGITS_FAKE) == pytest.approx(paired.item(), rel=1e-6)
    fooled = -torch.log(torch.sigmoid(LOGITS_FAKE - LOGITS_REAL)).mean()
    assert generator_loss("relativistic", LOGITS_FAKE, LOGITS_REAL) == pytest.approx(fooled.item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs D's logits of real frames"):
        generator_loss("relativistic", LOGITS_FAKE)


def test_r1_is_the_squared_input_gradient_and_trains_the_discriminator():
    """For D(x) = sum(w * x) the input gradient is w for every image: R1 = ||w||^2, and its gradient 2w."""
    weight = torch.nn.Parameter(torch.randn(1, 3, 4, 4))

    class Linear(torch.nn.Module):
        def forward(self, images):
            return (images * weight).sum(dim=(1, 2, 3))

    penalty = r1_penalty(Linear(), torch.randn(5, 3, 4, 4))
    assert penalty.item() == pytest.approx(weight.square().sum().item(), rel=1e-5)
    penalty.backward()
    assert torch.allclose(weight.grad, 2 * weight.detach())


def make_trainer(step: GanStep, augment=None, norm="batchnorm", seed=0):
    torch.manual_seed(seed)
    generator, discriminator = Generator(8, 3, 2, 4), Discriminator(8, 3, 2, norm=norm)
    optimizers = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in (generator, discriminator)]
    return create_gan_trainer(generator, discriminator, *optimizers, torch.device("cpu"), step, augment=augment)


def batches(n):
    source = torch.Generator().manual_seed(1)
    return [torch.rand(4, 3, 8, 8, generator=source) * 2 - 1 for _ in range(n)]


def test_lazy_r1_is_measured_every_k_iterations_and_kept_in_between():
    trainer = make_trainer(GanStep(r1_weight=10.0, r1_every=3))
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: seen.append(engine.state.output["r1"]))
    trainer.run(batches(7), max_epochs=1)
    assert seen[0] > 0 and seen[0] == seen[1] == seen[2] != seen[3] == seen[4] == seen[5] != seen[6]
    assert "r1" not in make_trainer(GanStep()).run(batches(1), max_epochs=1).output


@pytest.mark.parametrize("loss", ["hinge", "relativistic"])
def test_every_loss_trains_with_spectral_norm_and_augmentation(loss):
    augment = DiffAugment(["translation", "color", "cutout"], p=0.5)
    step = GanStep(loss=loss, joint_d_pass=True, channels_last=True)
    output = make_trainer(step, augment, norm="spectral").run(batches(3), max_epochs=1).output
    assert set(output) == {"loss_dis", "loss_gen"} and all(torch.isfinite(torch.tensor(list(output.values()))))


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="loss must be one of bce, hinge, relativistic"):
        make_trainer(GanStep(loss="wasserstein"))


def test_spectral_norm_replaces_or_joins_batchnorm_and_bounds_each_weight():
    def kinds(norm):
        return {type(layer).__name__ for layer in Discriminator(16, 3, 4, norm=norm).modules()}

    assert "BatchNorm2d" in kinds("batchnorm") and "ParametrizedConv2d" not in kinds("batchnorm")
    assert "BatchNorm2d" not in kinds("spectral") and "ParametrizedConv2d" in kinds("spectral")
    assert {"BatchNorm2d", "ParametrizedConv2d"} <= kinds("spectral+batchnorm")
    discriminator = Discriminator(16, 3, 4, norm="spectral")
    for _ in range(30):  # power iterations, one per forward pass in training mode
        discriminator(torch.randn(2, 3, 16, 16))
    top = torch.linalg.matrix_norm(discriminator.conv_pipe[2].weight.flatten(1), ord=2)
    assert top.item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="norm must be one of"):
        Discriminator(16, 3, 4, norm="layernorm")


def test_augmentation_at_strength_zero_is_the_identity_and_draws_as_much():
    images = torch.randn(6, 3, 16, 16)
    torch.manual_seed(3)
    assert torch.equal(DiffAugment(["translation", "color", "cutout"], p=0.0)(images), images)
    after_zero = torch.rand(1)
    torch.manual_seed(3)
    changed = DiffAugment(["translation", "color", "cutout"], p=1.0)(images)
    assert not torch.equal(changed, images) and torch.equal(torch.rand(1), after_zero)


def test_translation_shifts_whole_pixels_and_fills_with_zeros():
    images = torch.arange(1, 1 + 2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    torch.manual_seed(0)
    shifted = translate(images, 1.0)
    for image, moved in zip(images[:, 0], shifted[:, 0], strict=True):
        found = [
            (dy, dx)
            for dy in range(-1, 2)
            for dx in range(-1, 2)
            if torch.equal(moved, F.pad(image, (1, 1, 1, 1))[1 - dy : 9 - dy, 1 - dx : 9 - dx])
        ]
        assert found, "each image is its own shift of at most 1/8 of the side, zeros where it left"


def test_cutout_zeroes_one_square_of_half_the_side():
    torch.manual_seed(0)
    holes = cutout(torch.ones(8, 1, 16, 16), 1.0)[:, 0] == 0
    for hole in holes:
        rows, cols = hole.any(dim=1).nonzero(), hole.any(dim=0).nonzero()
        assert hole.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # one rectangle
        assert rows.numel() <= 8 and cols.numel() <= 8 and hole.sum() > 0


def test_augmentation_is_differentiable_and_keeps_the_memory_layout():
    images = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    seen = DiffAugment(["translation", "color", "cutout"])(images)
    assert seen.is_contiguous(memory_format=torch.channels_last)
    seen.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_ada_raises_the_strength_while_d_is_sure_of_real_frames_and_lowers_it_otherwise():
    augment = DiffAugment(["translation"], p=0.0, target=0.6, speed=100, batch_size=10)
    for _ in range(3):
        augment.adapt(0.9)
    assert augment.p == pytest.approx(0.3)
    augment.adapt(0.2)
    assert augment.p == pytest.approx(0.2)
    for _ in range(20):
        augment.adapt(1.0)
    assert augment.p == 1.0
    fixed = DiffAugment(["translation"], p=0.4)
    fixed.adapt(1.0)
    assert fixed.p == 0.4 and not fixed.adaptive
    restored = DiffAugment(["translation"], p=0.0, target=0.6)
    restored.load_state_dict(augment.state_dict())
    assert restored.p == 1.0


def test_the_trainer_reports_and_adapts_ada():
    augment = DiffAugment(["translation", "color"], p=0.0, target=0.1, speed=40, batch_size=4)
    output = make_trainer(GanStep(), augment).run(batches(4), max_epochs=1).output
    assert -1 <= output["d_real_sign"] <= 1 and output["augment_p"] == augment.p


@pytest.mark.parametrize("names", [["flip"], ["color", "color"]])
def test_unknown_or_repeated_augmentations_are_refused(names):
    with pytest.raises(ValueError, match="unknown augmentation 'flip'|twice"):
        check_augmentations(names)
