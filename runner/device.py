"""Resolve ``--dev`` once, in one place, and say how its kernels are chosen (``--deterministic``,
``--cudnn-benchmark``)."""

import os
import re

import torch

from runner.errors import UserError
from runner.machine import cpu_fields

# The CPU instructions that run bf16 products natively: x86's AVX512-BF16 and AMX, Arm's BF16 extension. oneDNN also
# accepts bf16 on AVX512 cores without them, by conversion, which is slower than fp32 there.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


# cuBLAS's workspace that makes its products deterministic (CUDA 10.2 and later); read when its first handle is made.
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"
# torch's message when an operation has none: "<operation> does not have a deterministic implementation, but you set
# 'torch.use_deterministic_algorithms(True)'. ..."
NO_DETERMINISTIC_KERNEL = re.compile(r"(\S+) does not have a deterministic implementation")


def choose_kernels(deterministic: bool, cudnn_benchmark: bool) -> None:
    """Before CUDA starts: deterministic kernels everywhere (torch's switch, cuDNN's, cuBLAS's workspace), or
    cuDNN's benchmark mode (it times each convolution's algorithms at the first step), or neither (the default).
    CPU kernels are deterministic either way."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic


def host_looks_every(device: torch.device, log_every: int) -> int:
    """How often the host reads the step's numbers between log points (the NaN guard, a progress bar): every
    iteration on the CPU, where they are Python floats already; on a GPU only at the log points, because a look
    makes the host wait for the device (a NaN then stops the run at the next log point)."""
    return log_every if device.type == "cuda" else 1


def nondeterministic_refusal(error: RuntimeError) -> UserError | None:
    """``--deterministic`` met an operation with no deterministic kernel: one line naming it (None: another error)."""
    found = NO_DETERMINISTIC_KERNEL.search(str(error))
    if found is None:
        return None
    return UserError(
        f"--deterministic: {found.group(1)} has no deterministic kernel on this device; run without --deterministic"
    )


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


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 matmuls and convolutions run natively (AVX512-BF16 or AMX on CPU; Ampere or newer on CUDA)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.backends.mkldnn.is_available() and cpu_has_native_bf16()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """From ``/proc/cpuinfo``'s ``flags`` (x86) or ``Features`` (Arm); False where there is no such file."""
    fields = cpu_fields(cpuinfo)
    words = set(fields.get("flags", "").split()) | set(fields.get("Features", "").split())
    return bool(words & NATIVE_BF16_FLAGS)


def resolve_precision(name: str, device: torch.device) -> str:
    """``--precision`` -> ``fp32``, ``bf16`` or ``fp16`` for ``device``, or a ``UserError`` saying why not."""
    if name == "auto":
        if bf16_supported(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device (on CPU use bf16, or fp32)")
    if name == "bf16" and not bf16_supported(device):
        raise UserError(f"--precision bf16: this {device.type} has no native bf16 support; use --precision fp32")
    return name
