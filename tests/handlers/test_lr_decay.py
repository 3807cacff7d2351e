import torch
from ignite.engine import Engine

from handlers.lr_decay import DecayOnRise


def run_epochs(epoch_losses, decay=None, optimizer=None):
    """A toy trainer whose epoch k reports loss epoch_losses[k] at each of its 2 iterations."""
    optimizer = optimizer or torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    engine = Engine(lambda engine, batch: {"loss": epoch_losses[engine.state.epoch - 1]})
    decay = decay or DecayOnRise(optimizer, factor=0.95)
    decay.attach(engine)
    engine.run([0, 0], max_epochs=len(epoch_losses))
    return optimizer.param_groups[0]["lr"], decay


def test_lr_is_multiplied_only_after_epochs_whose_loss_rose():
    lr, _ = run_epochs([3.0, 2.0, 2.5, 2.4, 2.6])  # rises after epochs 2 and 4
    assert lr == 0.95**2


def test_state_survives_a_resume():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    _, first = run_epochs([3.0, 2.0], optimizer=optimizer)
    resumed = DecayOnRise(optimizer, 0.95)
    resumed.load_state_dict(first.state_dict())
    lr, _ = run_epochs([2.5], decay=resumed, optimizer=optimizer)  # 2.5 > the saved epoch's 2.0
    assert lr == 0.95
