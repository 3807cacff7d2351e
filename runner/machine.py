"""What this machine is, without torch (a frame producer process imports this and no more): its CPU's fields, the
cores this process may use, and the parent-death signal of a child process.

    cpu_fields()["flags"]             # "fpu vme ... avx2 ... avx512_bf16 ..." (Linux; {} elsewhere)
    usable_cores()                    # 2, or fewer under taskset or a container's CPU set
    set_parent_death_signal(SIGKILL)  # this process gets SIGKILL when its parent dies (Linux; nothing elsewhere)
"""

import contextlib
import ctypes
import os
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
CPUINFO = Path("/proc/cpuinfo")


def cpu_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first CPU's ``name: value`` fields of ``/proc/cpuinfo`` (or of the text given), e.g. ``model name``,
    ``vendor_id``, ``flags``; empty where there is no such file."""
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.exists() else ""
    first_cpu = cpuinfo.split("\n\n")[0].splitlines()
    return {
        key.strip(): value.strip() for key, separator, value in (line.partition(":") for line in first_cpu) if separator
    }


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which a container or ``taskset`` may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_parent_death_signal(signum: int) -> None:
    """Ask Linux to send this process ``signum`` when the thread that started it dies (0: none); elsewhere nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
