import ctypes.util
import sys

import pytest

from runner.memory import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc only")
def test_glibc_accepts_the_heap_settings():
    assert keep_freed_memory() is True


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "no-such-libc.so")
    assert keep_freed_memory() is False
