"""resolve_device: cpu always, cuda only where it can be used, everything else a clear UserError."""

import pytest
import torch

import runner.device as device_module
from runner.device import resolve_device, resolve_precision
from runner.errors import UserError


def test_cpu_resolves_to_the_cpu_device():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_user_error_saying_so(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    with pytest.raises(UserError) as error:
        resolve_device(name)

    assert "CUDA is not available" in str(error.value)
    assert name in str(error.value)
    assert "--dev cpu" in str(error.value)


def test_a_cuda_index_beyond_the_devices_present_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    with pytest.raises(UserError, match=r"2 CUDA device\(s\) \(cuda:0\.\.cuda:1\)"):
        resolve_device("cuda:3")
    with pytest.raises(UserError):
        resolve_device("cuda:2")


def test_an_existing_cuda_device_resolves(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["banana", "", "gpu", "cuda:x"])
def test_a_name_that_is_not_a_device_is_a_user_error(name):
    with pytest.raises(UserError, match="is not a device"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["mps", "meta", "xpu"])
def test_other_device_types_are_a_user_error(name):
    with pytest.raises(UserError, match="only cpu and cuda"):
        resolve_device(name)


def test_auto_precision_on_cpu_is_bf16_where_supported_else_fp32(monkeypatch):
    for supported, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(device_module, "bf16_supported", lambda device, value=supported: value)
        assert resolve_precision("auto", torch.device("cpu")) == expected


def test_auto_precision_on_cuda_falls_back_to_fp16(monkeypatch):
    monkeypatch.setattr(device_module, "bf16_supported", lambda device: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"


def test_fp16_on_cpu_is_a_user_error():
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bf16_without_native_support_is_a_user_error(monkeypatch):
    monkeypatch.setattr(device_module, "bf16_supported", lambda device: False)
    with pytest.raises(UserError, match="no native bf16"):
        resolve_precision("bf16", torch.device("cpu"))
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_native_bf16_is_read_from_the_cpu_flags():
    amd_avx2 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma\n\nflags\t\t: avx512_bf16\n"
    assert not device_module.cpu_has_native_bf16(amd_avx2)  # the first CPU's flags only
    assert device_module.cpu_has_native_bf16("flags\t: avx2 avx512f avx512_bf16\n")
    assert device_module.cpu_has_native_bf16("flags\t: avx2 amx_bf16 amx_tile\n")
    assert not device_module.cpu_has_native_bf16("flags\t: avx2 avx512f avx512bw avx512vl\n")  # emulated only
    assert device_module.cpu_has_native_bf16("Features\t: fp asimd sve bf16 i8mm\n")  # Arm
    assert not device_module.cpu_has_native_bf16("")  # no /proc/cpuinfo
