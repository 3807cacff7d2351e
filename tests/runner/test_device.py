"""resolve_device: cpu always, cuda only where it can be used, everything else a clear UserError."""

import os

import pytest
import torch

import runner.device as device_module
from runner.device import resolve_device, resolve_precision
from runner.errors import UserError
from runner.settings import from_saved, make_settings


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


@pytest.fixture
def kernel_switches(monkeypatch):
    """Torch's kernel switches as they were, after the test; no cuBLAS workspace set by the test left behind."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], benchmark


def test_deterministic_sets_torchs_cudnns_and_cublass_switches(kernel_switches):
    device_module.choose_kernels(deterministic=True, cudnn_benchmark=False)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    device_module.choose_kernels(deterministic=False, cudnn_benchmark=True)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark


def test_the_kernels_are_chosen_before_cuda_is_first_asked(kernel_switches, monkeypatch, tmp_path):
    """CUDA made to look available: what the switches were when the run first asked for it."""
    from tasks.atari_gan import AtariGan, AtariGanSettings

    seen = []
    monkeypatch.setattr(
        torch.cuda,
        "is_available",
        lambda: seen.append((torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))),
    )  # None: "not available", and the run stops there
    settings = make_settings(AtariGanSettings, {"dev": "cuda", "deterministic": True, "output_dir": str(tmp_path)})
    with pytest.raises(UserError, match="CUDA is not available"):
        AtariGan.train(settings)
    assert seen[0] == (True, ":4096:8")


def test_an_operation_without_a_deterministic_kernel_is_one_line_naming_it():
    message = (
        "upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, but you set "
        "'torch.use_deterministic_algorithms(True)'. You can turn off determinism just for this operation, or you "
        "can use the 'warn_only=True' option, if that's acceptable for your application."
    )  # torch's words (aten/src/ATen/Context.cpp, alertNotDeterministic)
    refusal = device_module.nondeterministic_refusal(RuntimeError(message))
    assert str(refusal) == (
        "--deterministic: upsample_bilinear2d_backward_out_cuda has no deterministic kernel on this device; "
        "run without --deterministic"
    )
    assert device_module.nondeterministic_refusal(RuntimeError("CUDA out of memory")) is None


def test_deterministic_is_kept_by_a_resume_and_refused_with_cudnn_benchmark(tmp_path):
    from tasks.atari_gan import AtariGanSettings

    saved = {"deterministic": True, "dev": "cuda"}
    assert from_saved(AtariGanSettings, saved, {}, "run/checkpoint_5.pt").deterministic
    with pytest.raises(UserError, match="--deterministic False conflicts with run/checkpoint_5.pt"):
        from_saved(AtariGanSettings, saved, {"deterministic": False}, "run/checkpoint_5.pt")
    with pytest.raises(UserError, match="--cudnn-benchmark picks kernels by speed, which --deterministic rules out"):
        make_settings(AtariGanSettings, {"deterministic": True, "cudnn_benchmark": True})


def test_one_process_on_cuda_n_makes_that_device_current(monkeypatch):
    from runner.distributed import rank_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert rank_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]
    assert rank_device(torch.device("cpu")) == torch.device("cpu") and len(chosen) == 1
