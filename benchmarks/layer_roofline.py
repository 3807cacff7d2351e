"""Each convolution of the Atari GAN against this machine's dense GEMM peak: forward, input gradient and weight
gradient timed apart, and what the rest of the runner's step costs.

    python benchmarks/layer_roofline.py --precision fp32
    python benchmarks/layer_roofline.py --precision bf16
    python benchmarks/layer_roofline.py --precision fp32 --runner-flags="--no-gemm-weight-grads"

The layers are the chapter's (64x64, 64 filters, latent 100, batch ``--batch-size``), built by the launcher's own
builders, in the runner's memory layout (channels-last unless ``--runner-flags`` says ``--no-channels-last``). Each
row is one layer at the batch it sees in the runner: the generator's at 16 images; the discriminator's twice, at 32
images (its own step: the real and the fake batch in one joint pass) and at 16 (the generator's step, where it is
frozen: forward and input gradient only). A pass the runner does not do is left blank: the first layer of each
network gets no input gradient in the step that trains it. Weight gradients are timed both ways, oneDNN's kernel
and the matrix product of ``engines/gemm_weight_grads.py``; the one the runner takes is marked ``*``.

Times are the best of repeated calls (the kernel's own speed, as the peak is measured); FLOPs are
``FlopCounterMode``'s (2 per multiply-add). Then the whole step: its FLOPs, its time (median of ``--steps`` calls
of the process function on random batches, no emulator), the convolutions' share, and a torch.profiler split of the
rest.
"""

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from atari_gan_speed import best_seconds, counted_flops, cpu_class, cpu_class_line, gemm_peaks, peak_line
from step_switches import make_step, settings_of
from torch import nn

import tasks.atari_gan as task
from engines.gemm_weight_grads import convolve, output_padding, small_map_limit, small_map_positions, weight_grad

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Row:
    name: str
    shape: str
    images: int
    calls: int  # how many times the runner makes this row's passes per iteration
    forward: float  # seconds
    input_grad: float | None
    weight_grad_onednn: float | None
    weight_grad_gemm: float | None
    gemm_taken: bool
    flops: int  # of one pass (forward, input gradient and weight gradient each cost the same)

    def weight_grad(self) -> float | None:
        return self.weight_grad_gemm if self.gemm_taken else self.weight_grad_onednn

    def seconds(self) -> float:
        passes = (self.forward, self.input_grad, self.weight_grad())
        return self.calls * sum(p for p in passes if p is not None)

    def step_flops(self) -> int:
        passes = (self.forward, self.input_grad, self.weight_grad())
        return self.calls * self.flops * sum(p is not None for p in passes)


def conv_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]


def layer_inputs(model: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """The input of each convolution of ``model`` on ``inputs`` (fp32, as the layers see them before autocast)."""
    seen = []
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append(args[0])) for layer in conv_layers(model)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def time_layer(layer: nn.Module, inputs: torch.Tensor, dtype, channels_last: bool, passes: set[str]) -> dict:
    """Best-of seconds of the forward, input gradient and both weight gradients (with the bias gradient, as the
    step computes them) of ``layer`` on ``inputs``, and the FLOPs of one forward."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = inputs.detach().to(dtype).contiguous(memory_format=layout)
    w = layer.weight.detach().to(dtype).contiguous(memory_format=layout)
    b = layer.bias.detach().to(dtype) if layer.bias is not None else None
    grad_out = torch.randn_like(convolve(layer, x, w, b))
    transposed = isinstance(layer, nn.ConvTranspose2d)

    def backward(mask: list[bool]):
        return torch.ops.aten.convolution_backward(
            grad_out,
            x,
            w,
            list(b.shape) if b is not None else None,
            layer.stride,
            layer.padding,
            layer.dilation,
            transposed,
            output_padding(layer),
            layer.groups,
            mask,
        )

    def gemm():
        grad = weight_grad(layer, x, grad_out)
        return grad, grad_out.sum((0, 2, 3)) if b is not None else None

    timed = {"forward": lambda: convolve(layer, x, w, b)}
    if "input_grad" in passes:
        timed["input_grad"] = lambda: backward([True, False, False])
    if "weight_grad" in passes:
        timed["weight_grad_onednn"] = lambda: backward([False, True, b is not None])
        timed["weight_grad_gemm"] = gemm
    times = {name: best_seconds(function, budget=0.3) for name, function in timed.items()}
    return {**times, "flops": counted_flops(timed["forward"])}


def layer_rows(flags: str) -> list[Row]:
    settings = settings_of(flags)
    dtype = DTYPES[settings.precision if settings.precision != "auto" else "bf16"]
    generator, discriminator = task.make_networks(settings)
    batch = settings.batch_size
    noise = torch.randn(batch, settings.latent_size, 1, 1)
    fakes = generator(noise).detach()
    d_step = [(2 * batch, 1)] if settings.joint_d_pass else [(batch, 2)]  # (images, calls) in D's own step
    trained = {"forward", "input_grad", "weight_grad"}
    # (images, calls, passes, whether the first layer's input needs a gradient): a network's first layer gets
    # none in the step that trains it (its input is noise or frames); D's does in G's step (its input is G's fakes)
    plans = [("G", generator, noise, [(batch, 1, trained, False)])]
    plans.append(("D", discriminator, fakes, [(n, c, trained, False) for n, c in d_step]))
    g_step_d = {"forward", "input_grad"} | (set() if settings.freeze_discriminator else {"weight_grad"})
    plans[-1][3].append((batch, 1, g_step_d, True))
    rows = []
    for net, model, inputs, uses in plans:
        for images, calls, passes, first_input_grad in uses:
            repeated = inputs.repeat(images // inputs.shape[0], *[1] * (inputs.dim() - 1))
            for index, (layer, x) in enumerate(zip(conv_layers(model), layer_inputs(model, repeated), strict=True)):
                layer_passes = passes - {"input_grad"} if index == 0 and not first_input_grad else passes
                times = time_layer(layer, x, dtype, settings.channels_last, layer_passes)
                in_c, out_c = x.shape[1], layer.out_channels
                out_side = convolve(layer, x[:1], layer.weight, None).shape[-1]
                rows.append(
                    Row(
                        f"{net}{index + 1}",
                        f"{in_c}→{out_c}, {x.shape[-1]}x{x.shape[-1]}→{out_side}x{out_side}",
                        images,
                        calls,
                        times["forward"],
                        times.get("input_grad"),
                        times.get("weight_grad_onednn"),
                        times.get("weight_grad_gemm"),
                        settings.gemm_weight_grads and small_map_positions(layer, x) <= small_map_limit(dtype),
                        times["flops"],
                    )
                )
    return rows


def cell(seconds: float | None, flops: int, peak: float, mark: str = "") -> str:
    if seconds is None:
        return ""
    return f"{mark}{seconds * 1000:.2f} ms, {flops / seconds / 1e9 / peak * 100:.0f} %"


def markdown_table(rows: list[Row], peak: float, precision: str) -> str:
    head = (
        "| layer | channels, map | images | per step | MFLOP per pass | forward | input gradient "
        "| weight gradient, oneDNN | weight gradient, GEMM |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for row in rows:
        onednn_mark, gemm_mark = ("", "*") if row.gemm_taken else ("*", "")
        lines.append(
            f"| {row.name} | {row.shape} | {row.images} | {row.calls}x | {row.flops / 1e6:.0f} "
            f"| {cell(row.forward, row.flops, peak)} | {cell(row.input_grad, row.flops, peak)} "
            f"| {cell(row.weight_grad_onednn, row.flops, peak, onednn_mark)} "
            f"| {cell(row.weight_grad_gemm, row.flops, peak, gemm_mark)} |"
        )
    note = f"\nms: best of repeated calls; %: of the {precision} GEMM peak; *: the weight gradient the runner takes.\n"
    return head + "\n".join(lines) + note


def step_time(flags: str, steps: int) -> tuple[float, int]:
    """Median seconds of the runner's process function on random batches, and its FLOPs."""
    settings = settings_of(flags)
    step, engine = make_step(flags)
    batches = [torch.rand(settings.batch_size, 3, settings.image_size, settings.image_size) * 2 - 1]
    flops = counted_flops(step, engine, batches[0])
    seconds = []
    for index in range(steps + 3):
        engine.state.iteration += 1
        started = time.perf_counter()
        step(engine, batches[0])
        if index >= 3:
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), flops


CATEGORIES = [  # first match wins; the profiler's self CPU time of each op, by what the op is
    ("convolutions and matrix products", ("convolution", "mkldnn_conv", "aten::mm", "aten::addmm", "aten::matmul")),
    ("BatchNorm", ("batch_norm",)),
    ("Adam", ("adam", "_foreach", "optimizer")),
    ("copies and casts", ("copy_", "aten::to", "contiguous", "clone", "aten::cat", "_to_copy")),
    ("elementwise (ReLU, tanh, loss, sums...)", ("relu", "tanh", "threshold", "binary_cross", "sigmoid", "sum")),
]


def profile_split(flags: str, steps: int = 5) -> dict[str, float]:
    """Milliseconds per step by kind of op (torch.profiler, self CPU time), over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    settings = settings_of(flags)
    step, engine = make_step(flags)
    batch = torch.rand(settings.batch_size, 3, settings.image_size, settings.image_size) * 2 - 1
    for _ in range(3):
        engine.state.iteration += 1
        step(engine, batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            engine.state.iteration += 1
            step(engine, batch)
    split = dict.fromkeys([name for name, _ in CATEGORIES] + ["other"], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        kind = next((kind for kind, keys in CATEGORIES if any(key in name for key in keys)), "other")
        split[kind] += event.self_cpu_time_total / 1000 / steps
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--runner-flags", default="", help="more flags of scripts/atari_gan.py (sizes, switches)")
    parser.add_argument("--steps", type=int, default=10, help="timed calls of the whole step")
    parser.add_argument("--no-profile", action="store_true", help="leave out the torch.profiler split of the step")
    args = parser.parse_args()
    flags = f"--precision {args.precision} {args.runner_flags}"
    print(cpu_class_line(cpu_class()))
    peaks = gemm_peaks()
    print(peak_line(peaks))
    if peaks[args.precision] is None:
        raise SystemExit(f"no native {args.precision} GEMM on this machine: nothing to compare against")
    peak = peaks[args.precision]["peak"]
    print(f"runner flags: {flags}\n")
    rows = layer_rows(flags)
    print(markdown_table(rows, peak, args.precision))
    conv_seconds, conv_flops = sum(r.seconds() for r in rows), sum(r.step_flops() for r in rows)
    seconds, flops = step_time(flags, args.steps)
    print(f"the convolutions, one step's worth: {conv_flops / 1e9:.1f} GFLOP in {conv_seconds * 1000:.1f} ms", end="")
    print(f" = {conv_flops / conv_seconds / 1e9:.1f} GFLOP/s, {conv_flops / conv_seconds / 1e9 / peak * 100:.0f} %")
    print(f"the whole step (median of {args.steps}): {flops / 1e9:.1f} GFLOP in {seconds * 1000:.1f} ms", end="")
    print(f" = {flops / seconds / 1e9:.1f} GFLOP/s, {flops / seconds / 1e9 / peak * 100:.0f} % of the {args.precision}")
    print(f"  peak; the convolutions at their best are {conv_seconds / seconds * 100:.0f} % of it")
    if not args.no_profile:
        print("\n| the step under torch.profiler (self CPU time) | ms per step |\n| --- | --- |")
        for kind, milliseconds in profile_split(flags).items():
            print(f"| {kind} | {milliseconds:.1f} |")


if __name__ == "__main__":
    main()
