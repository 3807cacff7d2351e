"""Each convolution of the Atari GAN against this machine's dense GEMM peak: forward, input gradient and weight
gradient timed apart, and what the rest of the runner's step costs.

    python benchmarks/layer_roofline.py --precision fp32
    python benchmarks/layer_roofline.py --precision bf16
    python benchmarks/layer_roofline.py --precision fp32 --runner-flags="--kernel-plan book"

The layers are the chapter's (64x64, 64 filters, latent 100, batch ``--batch-size``), built by the launcher's own
builders, in the runner's memory layout (channels-last unless ``--runner-flags`` says ``--no-channels-last``). Each
row is one layer at the batch it sees in the runner: the generator's at 16 images; the discriminator's twice, at 32
images (its own step: the real and the fake batch in one joint pass) and at 16 (the generator's step, where it is
frozen: forward and input gradient only). A pass the runner does not do is left blank: the first layer of each
network gets no input gradient in the step that trains it. Each pass is timed with both kernels a plan chooses
from (``engines/kernel_plan.py``): the library's (oneDNN) and one matrix product; the one the run's plan takes
(``--kernel-plan``, measured here as at a run's start unless the flags name one) is marked ``*``.

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
from engines.conv_kernels import KERNELS, LIBRARY, PASSES, LayerKernels, convolve, planned_layers
from engines.kernel_plan import KernelPlan, conv_inputs, pass_candidates
from tasks.gan import plan_examples

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Row:
    name: str
    shape: str
    images: int
    calls: int  # how many times the runner makes this row's passes per iteration
    timings: dict[str, dict[str, float | None]]  # pass -> kernel -> seconds, for the passes the runner makes
    chosen: LayerKernels  # the plan's kernels for this layer
    flops: int  # of one pass (forward, input gradient and weight gradient each cost the same)

    def taken(self, name: str) -> float:
        return self.timings[name][getattr(self.chosen, name)]

    def seconds(self) -> float:
        return self.calls * sum(self.taken(name) for name in self.timings)

    def step_flops(self) -> int:
        return self.calls * self.flops * len(self.timings)


def time_layer(layer: nn.Module, inputs: torch.Tensor, dtype, passes: set[str]) -> dict:
    """Best-of seconds of each kernel of each pass in ``passes`` (the weight gradient with the bias gradient, as the
    step computes them), and the FLOPs of one forward."""
    x = torch.empty_like(inputs, dtype=dtype).normal_()
    w = layer.weight.detach().to(dtype)
    b = layer.bias.detach().to(dtype) if layer.bias is not None else None
    grad_out = torch.empty_like(convolve(layer, x, w, b)).normal_()
    candidates = pass_candidates(layer, x, w, b, grad_out)
    timings = {
        name: {kernel: best_seconds(function, budget=0.3) for kernel, function in candidates[name].items()}
        for name in PASSES
        if name in passes
    }
    return {"timings": timings, "flops": counted_flops(candidates["forward"][LIBRARY])}


def planned(settings, generator: nn.Module, discriminator: nn.Module) -> KernelPlan:
    """The plan a run with these settings takes (``--kernel-plan``: measured here, as at a run's start)."""
    plan = KernelPlan({"generator": generator, "discriminator": discriminator})
    dtype = DTYPES[settings.precision if settings.precision != "auto" else "bf16"]
    return plan.resolve(settings.kernel_plan, lambda: plan_examples(settings, generator), dtype)


def layer_rows(flags: str) -> tuple[list[Row], KernelPlan]:
    settings = settings_of(flags)
    dtype = DTYPES[settings.precision if settings.precision != "auto" else "bf16"]
    generator, discriminator = task.make_networks(settings)
    if settings.channels_last:
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    plan = planned(settings, generator, discriminator)
    batch = settings.batch_size
    noise = torch.randn(batch, settings.latent_size, 1, 1)
    with torch.no_grad():
        fakes = generator(noise)
    d_step = [(2 * batch, 1)] if settings.joint_d_pass else [(batch, 2)]  # (images, calls) in D's own step
    trained = set(PASSES)
    # (images, calls, passes, whether the first layer's input needs a gradient): a network's first layer gets
    # none in the step that trains it (its input is noise or frames); D's does in G's step (its input is G's fakes)
    uses = [("G", "generator", generator, noise, [(batch, 1, trained, False)])]
    uses.append(("D", "discriminator", discriminator, fakes, [(n, c, trained, False) for n, c in d_step]))
    g_step_d = {"forward", "input_grad"} | (set() if settings.freeze_discriminator else {"weight_grad"})
    uses[-1][4].append((batch, 1, g_step_d, True))
    rows = []
    for short, network, model, inputs, steps in uses:
        layers = planned_layers(model)
        for images, calls, passes, first_input_grad in steps:
            repeated = inputs.repeat(images // inputs.shape[0], *[1] * (inputs.dim() - 1))
            for index, (name, x) in enumerate(conv_inputs(model, repeated).items()):
                layer = layers[name]
                layer_passes = passes - {"input_grad"} if index == 0 and not first_input_grad else passes
                measured = time_layer(layer, x, dtype, layer_passes)
                out_side = convolve(layer, x[:1], layer.weight, None).shape[-1]
                shape = f"{x.shape[1]}→{layer.out_channels}, {x.shape[-1]}x{x.shape[-1]}→{out_side}x{out_side}"
                chosen = plan.chosen[network][name]
                rows.append(
                    Row(f"{short}{index + 1}", shape, images, calls, measured["timings"], chosen, measured["flops"])
                )
    return rows, plan


def cell(seconds: float | None, flops: int, peak: float, mark: str = "") -> str:
    if seconds is None:
        return ""
    return f"{mark}{seconds * 1000:.2f} ms, {flops / seconds / 1e9 / peak * 100:.0f} %"


def markdown_table(rows: list[Row], peak: float, precision: str) -> str:
    head = (
        "| layer | channels, map | images | per step | MFLOP per pass | forward, library | forward, product "
        "| input gradient, library | input gradient, product | weight gradient, library | weight gradient, product |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for row in rows:
        cells = []
        for name in PASSES:
            for kernel in KERNELS:
                seconds = row.timings.get(name, {}).get(kernel)
                mark = "*" if name in row.timings and getattr(row.chosen, name) == kernel else ""
                cells.append(cell(seconds, row.flops, peak, mark))
        lines.append(
            f"| {row.name} | {row.shape} | {row.images} | {row.calls}x | {row.flops / 1e6:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    note = (
        f"\nms: best of repeated calls; %: of the {precision} GEMM peak; *: the kernel the plan chose; product: one "
        "matrix product (engines/conv_kernels.py).\n"
    )
    return head + "\n".join(lines) + note


def goal_line(rows: list[Row], peak: float) -> str:
    """Issue 24's goal: every pass of at least 1 GFLOP at >= 50 % of the peak with the chosen kernel."""
    big = [(row, name) for row in rows for name in row.timings if row.flops >= 1e9]
    reached = [(row, name) for row, name in big if row.flops / row.taken(name) / 1e9 >= 0.5 * peak]
    missed = ", ".join(f"{row.name} {name}" for row, name in big if (row, name) not in reached)
    return f"passes of >= 1 GFLOP at >= 50 % of peak with the chosen kernel: {len(reached)} of {len(big)}" + (
        f" (below: {missed})" if missed else ""
    )


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
    rows, plan = layer_rows(flags)
    print(plan.summary())
    print(markdown_table(rows, peak, args.precision))
    print(goal_line(rows, peak))
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
