"""A machine with one GPU, as torch would report it, for tests that must show what a CPU run does there.

On ``PYTHONPATH`` with ``FAKE_CUDA_LOG`` set, every Python process (the launcher, spawned ranks, torchrun's) sees
``torch.cuda`` report one device, unless ``CUDA_VISIBLE_DEVICES`` hides it (an empty string), as the driver would.
The calls that pick or use a device are appended to the log, one per line, and a device index past the count is
refused with the driver's message. Nothing runs on a GPU: a test that gets that far fails.
"""

import os

LOG = os.environ.get("FAKE_CUDA_LOG")

if LOG:
    import torch

    def visible_devices() -> int:
        return 0 if os.environ.get("CUDA_VISIBLE_DEVICES") == "" else 1

    def record(call: str) -> None:
        with open(LOG, "a") as log:
            log.write(f"{os.getpid()} {call}\n")

    def set_device(device) -> None:
        index = torch.device(device).index if not isinstance(device, int) else device
        record(f"set_device {index}")
        if index is None or index >= visible_devices():
            raise RuntimeError("CUDA error: invalid device ordinal")

    def current_device() -> int:
        record("current_device")
        return 0

    torch.cuda.is_available = lambda: visible_devices() > 0
    torch.cuda.device_count = visible_devices
    torch.cuda.set_device = set_device
    torch.cuda.current_device = current_device
