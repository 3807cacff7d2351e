"""Resolve ``--dev`` once, in one place."""

import torch

from runner.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` -> a usable ``torch.device``, or a ``UserError`` saying why not."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--dev {name!r} is not a device (use cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UserError(f"--dev {name!r}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        raise UserError(
            f"--dev {name}: CUDA is not available on this machine (torch {torch.__version__}); use --dev cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UserError(f"--dev {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return device
