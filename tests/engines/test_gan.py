import math

import pytest
import torch
from ignite.engine import Events

from engines.gan import GanStep, create_gan_trainer
from models.dcgan import Discriminator, Generator


def make_pair(seed=0):
    torch.manual_seed(seed)
    generator = Generator(image_size=8, filters=2, latent_size=4)
    discriminator = Discriminator(image_size=8, filters=2)
    gen_optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    dis_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    trainer = create_gan_trainer(generator, discriminator, gen_optimizer, dis_optimizer, torch.device("cpu"))
    return trainer, generator, discriminator


def real_batches(n, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(4, 3, 8, 8, generator=generator) * 2 - 1 for _ in range(n)]


def test_step_returns_both_losses_as_python_floats():
    trainer, _, _ = make_pair()
    state = trainer.run(real_batches(2), max_epochs=1)
    assert set(state.output) == {"loss_dis", "loss_gen"}
    assert all(isinstance(value, float) and math.isfinite(value) for value in state.output.values())


def test_first_step_losses_match_a_hand_written_chapter_step():
    """The book's step with Sigmoid + BCELoss, written out by hand, gives the same losses."""
    trainer, generator, discriminator = make_pair(seed=0)
    reference_gen, reference_dis = Generator(8, 3, 2, 4), Discriminator(8, 3, 2)
    reference_gen.load_state_dict(generator.state_dict())
    reference_dis.load_state_dict(discriminator.state_dict())
    batch = real_batches(1)

    torch.manual_seed(42)
    output = trainer.run(batch, max_epochs=1).output

    torch.manual_seed(42)
    noise = torch.randn(4, 4, 1, 1)
    fake = reference_gen(noise)
    bce = torch.nn.BCELoss()
    ones, zeros = torch.ones(4), torch.zeros(4)
    dis_loss = bce(torch.sigmoid(reference_dis(batch[0])), ones) + bce(
        torch.sigmoid(reference_dis(fake.detach())), zeros
    )
    dis_opt = torch.optim.Adam(reference_dis.parameters(), lr=1e-3, betas=(0.5, 0.999))
    dis_opt.zero_grad()
    dis_loss.backward()
    dis_opt.step()
    gen_loss = bce(torch.sigmoid(reference_dis(fake)), ones)
    assert output["loss_dis"] == pytest.approx(dis_loss.item(), rel=1e-5)
    assert output["loss_gen"] == pytest.approx(gen_loss.item(), rel=1e-5)


def test_discriminator_step_sends_no_gradient_into_the_generator():
    """The fakes are detached for the D step: when D's optimizer steps, G has received no gradient yet."""
    torch.manual_seed(0)
    generator, discriminator = Generator(8, 3, 2, 4), Discriminator(8, 3, 2)
    gen_optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3)
    dis_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    generator_grads_at_dis_step = []
    original_step = dis_optimizer.step

    def recording_step(*args, **kwargs):
        generator_grads_at_dis_step.append([p.grad for p in generator.parameters()])
        return original_step(*args, **kwargs)

    dis_optimizer.step = recording_step
    before = [p.detach().clone() for p in generator.parameters()]
    trainer = create_gan_trainer(generator, discriminator, gen_optimizer, dis_optimizer, torch.device("cpu"))
    trainer.run(real_batches(1), max_epochs=1)
    assert all(grad is None for grad in generator_grads_at_dis_step[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, generator.parameters(), strict=True)), "G step moves G"


def test_training_moves_both_networks_and_is_reproducible():
    first, g1, d1 = make_pair(seed=0)
    torch.manual_seed(7)
    out1 = first.run(real_batches(5), max_epochs=1).output
    second, g2, d2 = make_pair(seed=0)
    torch.manual_seed(7)
    out2 = second.run(real_batches(5), max_epochs=1).output
    assert out1 == out2
    assert all(torch.equal(a, b) for a, b in zip(g1.state_dict().values(), g2.state_dict().values(), strict=True))


def run_with(step, seed=0, batches=3, scaler=None):
    torch.manual_seed(seed)
    generator = Generator(image_size=8, filters=2, latent_size=4)
    discriminator = Discriminator(image_size=8, filters=2)
    if step.channels_last:
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    gen_optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    dis_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    trainer = create_gan_trainer(
        generator, discriminator, gen_optimizer, dis_optimizer, torch.device("cpu"), step, scaler
    )
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(dict(engine.state.output)))
    torch.manual_seed(seed + 100)
    trainer.run(real_batches(batches), max_epochs=1)
    return losses, generator, discriminator


def test_freezing_the_discriminator_for_the_generator_step_changes_no_number():
    frozen_losses, frozen_g, frozen_d = run_with(GanStep(freeze_discriminator=True))
    book_losses, book_g, book_d = run_with(GanStep(freeze_discriminator=False))
    assert frozen_losses == book_losses
    frozen_weights = [*frozen_g.parameters(), *frozen_d.parameters()]
    for a, b in zip(frozen_weights, [*book_g.parameters(), *book_d.parameters()], strict=True):
        assert torch.equal(a, b)


def test_frozen_discriminator_gets_no_weight_gradients_from_the_generator_step():
    torch.manual_seed(0)
    generator, discriminator = Generator(8, 3, 2, 4), Discriminator(8, 3, 2)
    gen_optimizer = torch.optim.Adam(generator.parameters())
    dis_optimizer = torch.optim.Adam(discriminator.parameters())
    grads_after_dis_step = {}
    original_step = dis_optimizer.step

    def recording_step(*args, **kwargs):
        result = original_step(*args, **kwargs)
        grads_after_dis_step["grads"] = [p.grad.clone() for p in discriminator.parameters()]
        return result

    dis_optimizer.step = recording_step
    trainer = create_gan_trainer(generator, discriminator, gen_optimizer, dis_optimizer, torch.device("cpu"))
    trainer.run(real_batches(1), max_epochs=1)
    for saved, now in zip(grads_after_dis_step["grads"], discriminator.parameters(), strict=True):
        assert torch.equal(saved, now.grad), "the G step added to D's gradients"
        assert now.requires_grad, "D is trainable again after the G step"


@pytest.mark.parametrize("step", [GanStep(precision="bf16"), GanStep(channels_last=True), GanStep("bf16", True)])
def test_fast_path_losses_stay_close_to_fp32(step):
    fast, _, _ = run_with(step)
    reference, _, _ = run_with(GanStep())
    for fast_losses, reference_losses in zip(fast, reference, strict=True):
        for name in ("loss_dis", "loss_gen"):
            assert math.isfinite(fast_losses[name])
            assert fast_losses[name] == pytest.approx(reference_losses[name], rel=0.05)


def test_generator_every_n_batches_leaves_it_untouched_in_between_and_repeats_its_last_loss():
    torch.manual_seed(0)
    generator, discriminator = Generator(8, 3, 2, 4), Discriminator(8, 3, 2)
    gen_optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3)
    dis_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    trainer = create_gan_trainer(
        generator, discriminator, gen_optimizer, dis_optimizer, torch.device("cpu"), GanStep(g_every=3)
    )
    snapshots, outputs = [], []

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        snapshots.append([p.detach().clone() for p in generator.parameters()])
        outputs.append(dict(engine.state.output))

    trainer.run(real_batches(4), max_epochs=1)
    moved = [not all(map(torch.equal, before, after)) for before, after in zip(snapshots, snapshots[1:], strict=False)]
    assert moved == [False, False, True]  # iterations 2 and 3 leave G alone, iteration 4 (index 3) trains it
    assert outputs[1]["loss_gen"] == outputs[0]["loss_gen"] == outputs[2]["loss_gen"]
    assert len({o["loss_dis"] for o in outputs}) == 4  # D trains every batch
    assert trainer.last_losses.state_dict() == outputs[-1]


def test_fp16_without_a_grad_scaler_is_refused():
    with pytest.raises(ValueError, match="GradScaler"):
        run_with(GanStep(precision="fp16"))


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        run_with(GanStep(precision="fp8"))


def test_the_joint_discriminator_pass_gives_the_books_numbers():
    joint, joint_g, joint_d = run_with(GanStep(joint_d_pass=True), batches=4)
    separate, separate_g, separate_d = run_with(GanStep(joint_d_pass=False), batches=4)
    for a, b in zip(joint, separate, strict=True):
        assert a["loss_dis"] == pytest.approx(b["loss_dis"], rel=1e-5)
        assert a["loss_gen"] == pytest.approx(b["loss_gen"], rel=1e-5)
    for a, b in zip(joint_d.state_dict().values(), separate_d.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def trained_numbers(step: GanStep, batches) -> tuple[dict, dict, dict]:
    """(last output, running averages, LastLosses' state) after training a pair with ``step`` on ``batches``."""
    from handlers.logging import attach_running_averages

    torch.manual_seed(0)
    generator, discriminator = Generator(image_size=8, filters=2, latent_size=4), Discriminator(8, filters=2)
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.999)) for m in (generator, discriminator)]
    trainer = create_gan_trainer(generator, discriminator, *optimizers, torch.device("cpu"), step)
    attach_running_averages(trainer, ("loss_dis", "loss_gen"))
    state = trainer.run(batches, max_epochs=1)
    averages = {name: state.metrics[name] for name in ("avg_loss_dis", "avg_loss_gen")}
    return state.output, averages, trainer.last_losses.state_dict()


def test_losses_kept_on_the_device_give_the_same_numbers_and_averages():
    """A GPU's mode, on the CPU: no sync per step, and the averages of float64 tensors are the Python floats'."""
    batches = real_batches(6)
    output, averages, state = trained_numbers(GanStep(losses_on_device=True), batches)
    assert all(isinstance(value, torch.Tensor) and value.dtype == torch.float64 for value in output.values())
    floats, float_averages, float_state = trained_numbers(GanStep(), batches)
    assert {name: float(value) for name, value in output.items()} == floats
    assert {name: float(value) for name, value in averages.items()} == float_averages
    assert state == float_state and all(isinstance(value, float) for value in state.values())


def test_uint8_frames_converted_in_the_step_train_as_their_floats_do():
    from datasets.frames import frames_to_tensor

    frames = [
        torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
        for i in range(3)
    ]
    uint8_output, _, _ = trained_numbers(GanStep(channels_last=True), frames)
    float_output, _, _ = trained_numbers(GanStep(channels_last=True), [frames_to_tensor(f.numpy()) for f in frames])
    assert uint8_output == float_output
