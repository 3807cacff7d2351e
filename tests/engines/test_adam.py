import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import engines.adam as adam
from engines.adam import LayoutFreeAdam
from models.dcgan import Discriminator


def channels_last_discriminator(seed=0):
    torch.manual_seed(seed)
    return Discriminator(image_size=16, filters=4).to(memory_format=torch.channels_last)


def train(optimizer_class, steps=4, **adam):
    model = channels_last_discriminator()
    optimizer = optimizer_class(model.parameters(), lr=1e-2, betas=(0.5, 0.999), **adam)
    inputs = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model(inputs.contiguous(memory_format=torch.channels_last)).square().sum().backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_steps_on_channels_last_weights_give_torch_adams_numbers_and_state(amsgrad):
    model, optimizer = train(LayoutFreeAdam, fused=True, amsgrad=amsgrad)
    reference_model, reference_optimizer = train(torch.optim.Adam, fused=True, amsgrad=amsgrad)
    for parameter, reference in zip(model.parameters(), reference_model.parameters(), strict=True):
        assert torch.equal(parameter, reference) and parameter.stride() == reference.stride()
    state, reference_state = optimizer.state_dict()["state"], reference_optimizer.state_dict()["state"]
    for index, moments in state.items():
        for name in ("step", "exp_avg", "exp_avg_sq", *(["max_exp_avg_sq"] if amsgrad else [])):
            assert torch.equal(moments[name], reference_state[index][name])
            assert moments[name].stride() == reference_state[index][name].stride()  # checkpoints keep the layout


def test_the_fused_kernel_gets_the_channels_last_tensors_without_copies():
    def clones_in_one_step(optimizer_class):
        model, optimizer = train(optimizer_class, steps=1, fused=True)
        model(torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)).sum().backward()
        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            optimizer.step()
        return sum(event.name == "aten::clone" for event in profiled.events())

    assert clones_in_one_step(torch.optim.Adam) > 0  # what this class exists to avoid
    assert clones_in_one_step(LayoutFreeAdam) == 0


def test_a_gradient_in_another_layout_still_gets_the_right_update():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last))
    reference = torch.nn.Parameter(weight.detach().clone())
    gradient = torch.randn(4, 3, 2, 2)  # contiguous, not channels-last: no shared memory order
    optimizers = [LayoutFreeAdam([weight], lr=0.1, fused=True), torch.optim.Adam([reference], lr=0.1, fused=True)]
    for parameter, optimizer in zip((weight, reference), optimizers, strict=True):
        parameter.grad = gradient.clone()
        optimizer.step()
    assert torch.equal(weight, reference)


def test_foreach_is_torch_adam_untouched():
    model, _ = train(LayoutFreeAdam, foreach=True)
    reference_model, _ = train(torch.optim.Adam, foreach=True)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference_model.parameters(), strict=True))


def test_moments_saved_in_another_layout_take_the_parameters_layout_on_load():
    """A run checkpointed with --no-channels-last and resumed with channels-last: same numbers, no copies."""
    torch.manual_seed(0)
    contiguous = Discriminator(image_size=16, filters=4)
    saved = torch.optim.Adam(contiguous.parameters(), lr=1e-2, fused=True)
    contiguous(torch.randn(4, 3, 16, 16)).sum().backward()
    saved.step()
    model = Discriminator(image_size=16, filters=4)
    model.load_state_dict(contiguous.state_dict())
    model.to(memory_format=torch.channels_last)
    optimizer = LayoutFreeAdam(model.parameters(), lr=1e-2, fused=True)
    optimizer.load_state_dict(saved.state_dict())
    for param, reference in zip(model.parameters(), contiguous.parameters(), strict=True):
        moments, reference_moments = optimizer.state[param], saved.state[reference]
        for name in ("exp_avg", "exp_avg_sq"):
            assert moments[name].stride() == param.stride() and torch.equal(moments[name], reference_moments[name])


def test_torchs_adam_gathers_its_tensors_where_the_pinned_hook_expects():
    """A torch release that changes ``Adam._init_group`` turns the layout-free path off; this says it happened."""
    assert adam.OWN_INIT_GROUP, "torch.optim.Adam._init_group changed: re-pin engines/adam.py's PINNED_INIT_GROUP"
