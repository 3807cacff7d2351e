import os
import signal
import subprocess
import sys
import time

from conftest import gone
from runner.machine import cpu_fields, usable_cores

TWO_CPUS = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2\n\nprocessor\t: 1\nvendor_id\t: Other\n"


def test_cpu_fields_are_the_first_cpus():
    assert cpu_fields(TWO_CPUS) == {"processor": "0", "vendor_id": "AuthenticAMD", "flags": "fpu avx2"}
    assert cpu_fields("") == {}


def test_usable_cores_is_this_process_affinity():
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_a_child_asking_for_the_parent_death_signal_dies_with_its_parent(tmp_path):
    """A parent starts a child that asks for SIGKILL at its death; the parent is killed: the child goes too."""
    ready = tmp_path / "ready"
    child = (
        "import pathlib, sys, time\n"
        "from runner.machine import set_parent_death_signal\n"
        "set_parent_death_signal(9)\n"
        "pathlib.Path(sys.argv[1]).write_text('')\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {child!r}, {str(ready)!r}])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child_pid = int(process.stdout.readline())
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert gone([child_pid]), "the child outlived its parent"
