"""MultiTensorEMAHandler: EMAHandler's average (warm-up, buffers) with one multi-tensor update per iteration."""

import copy

import torch
from ignite.engine import Engine
from ignite.handlers import EMAHandler

from handlers.ema import MultiTensorEMAHandler, ema_handler_class


def averaged(handler_class: type[EMAHandler], model: torch.nn.Module, iterations: int = 30) -> torch.nn.Module:
    """The average ``handler_class`` keeps of ``model`` while each iteration moves its weights by seeded noise."""
    model, noise = copy.deepcopy(model), torch.Generator().manual_seed(0)

    def step(engine: Engine, batch: torch.Tensor) -> None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=noise))
            model(batch)  # BatchNorm's running statistics move too

    trainer = Engine(step)
    handler = handler_class(model, momentum=0.01, momentum_warmup=0.5, warmup_iters=10)
    handler.attach(trainer)
    trainer.run([torch.randn(4, 3, generator=torch.Generator().manual_seed(1))] * iterations)
    return handler.ema_model


def test_the_multi_tensor_update_gives_ema_handlers_average():
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2))
    ours, theirs = averaged(MultiTensorEMAHandler, model), averaged(EMAHandler, model)
    for mine, reference in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-6)
    for mine, reference in zip(ours.buffers(), theirs.buffers(), strict=True):
        assert torch.equal(mine, reference)  # copied from the model, as EMAHandler's "copy"


def test_ignite_still_calls_the_update_it_replaces(monkeypatch):
    """EMAHandler's protected ``_update_ema_model`` is the pinned hook: if Ignite stops calling it, this fails."""
    calls = []
    original = MultiTensorEMAHandler._update_ema_model
    monkeypatch.setattr(MultiTensorEMAHandler, "_update_ema_model", lambda *args: calls.append(1) or original(*args))
    averaged(MultiTensorEMAHandler, torch.nn.Linear(3, 2), iterations=5)
    assert len(calls) == 5


def test_only_cuda_runs_take_the_multi_tensor_update():
    assert ema_handler_class(torch.device("cuda", 0)) is MultiTensorEMAHandler
    assert ema_handler_class(torch.device("cpu")) is EMAHandler  # CPU runs keep their numbers bit for bit
