"""The chapter's plain Atari GAN loop and this runner, side by side on one machine, alternating.

    python benchmarks/atari_gan_speed.py --iters 150 --rounds 3
    python benchmarks/atari_gan_speed.py --runner-flags="--precision fp32 --no-channels-last"   # one switch's worth
    python benchmarks/atari_gan_speed.py --versus-flags="--recipe stable" --no-plain-loop      # stable vs book

Each round runs, as separate processes:

1. ``plain loop``: a faithful copy of Deep RL Hands-On's 03_atari_gan.py (its networks with Sigmoid + BCELoss, its
   ``iterate_batches`` generator over gymnasium envs, its optimizer settings, batch 16, 64x64, 64 filters);
2. ``runner``: ``scripts/atari_gan.py`` with its defaults (the fast path on) and ``--eval-every 0``: the plain loop
   measures no quality, so the runner's end-of-run Atari-FID is left out to compare the same work
   (``--runner-flags`` adds flags; ``--runner-flags="--eval-every 1000"`` puts the evaluation back);
3. ``bare step`` (with ``--overhead``): the runner's own process function, stream and models in a bare ``for``
   loop, without Ignite's engine and handlers: the difference to 2 is the framework's cost; and ``bare step, frames
   ahead``: the same over the same stream's batches made before the clock starts: the difference between the two is
   what making frames between steps costs the loop (the emulators' own time, and what they do to the step);
4. ``versus`` (with ``--versus-flags``): the runner again with other flags (``--recipe stable``), so that what they
   cost per iteration is measured side by side with 2. Its ratio to 2 is also given over the mean of every steady
   iteration: a technique that runs every k iterations (lazy R1) weighs in at its true share there.

``--no-plain-loop`` leaves 1 out (it takes the longest) when only 2 and 4 are compared.

Before the rounds one short launch measures the runner's kernel plan (``--kernel-plan measure``, which replaces the
machine's cached plan for these settings), and prints what that cost its start; every round's runner then takes the
cached plan, as a user's runs do after their first one on a machine. Runner flags naming a ``--kernel-plan`` skip it.

Seconds per iteration in steady state are the median of 10-iteration means after ``--warmup`` iterations (the
runner reports a rate per 10 iterations, so every contestant is measured the same way); whole-process wall time
includes start-up and exit. Alternating rounds spread any drift in the machine's speed over all contestants.

The roofline: each round first measures this machine's dense GEMM peak (fp32, and bf16 where it runs natively; the
best of ``torch.mm`` and of oneDNN's 1x1 convolution over ``PEAK_SHAPES``, with torch's thread count), and each
contestant's FLOPs per iteration are counted by ``torch.utils.flop_counter.FlopCounterMode`` (the plain loop and the
bare step count one more iteration of their own loop; the runner one call of its process function as the launcher
builds it). Every contestant gets GFLOP/s and "% of peak" of its own precision; a bf16 runner of the fp32 peak too.
The first line names the CPU class: its model and which of avx2, avx512_bf16 and amx_bf16 it has.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from runner.machine import cpu_fields

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZE, IMAGE_SIZE, LATENT, FILTERS = 16, 64, 100, 64  # the chapter's constants
BLOCK = 10  # iterations per timing block (the runner's --log-every here)
ROOFLINE_FLAGS = ("avx2", "avx512_bf16", "amx_bf16")  # the CPU flags that decide which kernels run
# GEMMs timed for the peak, (rows, inner, columns): squares, and the shapes of the networks' big layers as
# matrix products (many rows of receptive fields against a few hundred filters). The best rate of any counts.
PEAK_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (4096, 256, 256), (4096, 2048, 256))


def counted_flops(function, *args) -> int:
    """FLOPs of one call of ``function`` as PyTorch's ``FlopCounterMode`` counts them: 2 per multiply-add of every
    matrix product and convolution, forward and backward (the GEMM weight-gradient path's ``aten.mm`` included)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        function(*args)
    return counter.get_total_flops()


def cpu_class() -> dict:
    """The CPU's model name, which of ``ROOFLINE_FLAGS`` it has, and an ``ONEDNN_MAX_CPU_ISA`` limit if set."""
    fields = cpu_fields()
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or "unknown CPU",
        "flags": {flag: flag in flags for flag in ROOFLINE_FLAGS},
        "isa_limit": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
    }


def cpu_class_line(cpu: dict) -> str:
    import torch

    present = ", ".join(f"{flag} {'yes' if on else 'no'}" for flag, on in cpu["flags"].items())
    line = f"CPU: {cpu['model']} ({torch.get_num_threads()} torch threads); {present}"
    if cpu["isa_limit"]:
        line += f"; oneDNN limited to ONEDNN_MAX_CPU_ISA={cpu['isa_limit']} (an emulated class)"
    return line


def best_seconds(function, budget: float = 0.5) -> float:
    """The fastest of several calls of ``function``: at least 3, more while they fit in ``budget`` seconds (a short
    kernel on a busy machine needs more tries to find a quiet moment), at most 30."""
    started = time.perf_counter()
    function()  # the library picks (and caches) its kernel
    first = time.perf_counter() - started
    best = float("inf")
    for _ in range(min(30, max(3, int(budget / max(first, 1e-6))))):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def gemm_rates(dtype, shape: tuple[int, int, int]) -> dict[str, float]:
    """GFLOP/s of a ``(rows, inner, columns)`` matrix product in ``dtype`` through each library torch has for it:
    ``torch.mm`` (MKL for fp32, oneDNN for bf16) and oneDNN's convolution as a GEMM (a 1x1 convolution,
    channels-last, rows = images x 64 positions), which is what the networks' layers run in."""
    import torch
    import torch.nn.functional as F

    rows, inner, columns = shape
    flops = 2 * rows * inner * columns
    a, b = torch.randn(rows, inner).to(dtype), torch.randn(inner, columns).to(dtype)
    out = torch.empty(rows, columns, dtype=dtype)
    images = torch.randn(rows // 64, inner, 8, 8).to(dtype).contiguous(memory_format=torch.channels_last)
    kernel = torch.randn(columns, inner, 1, 1).to(dtype).contiguous(memory_format=torch.channels_last)
    return {
        "torch.mm": flops / best_seconds(lambda: torch.mm(a, b, out=out)) / 1e9,
        "oneDNN 1x1 conv": flops / best_seconds(lambda: F.conv2d(images, kernel)) / 1e9,
    }


def bf16_is_native() -> bool:
    """Whether a bf16 matrix product runs at least half as fast as an fp32 one (512 x 512): not where the library
    emulates bf16, as on a CPU without AVX512-BF16 or AMX, or with oneDNN limited by ``ONEDNN_MAX_CPU_ISA``."""
    import torch

    a = torch.randn(512, 512)
    fp32 = best_seconds(lambda: torch.mm(a, a), budget=0.1)
    a = a.bfloat16()
    return best_seconds(lambda: torch.mm(a, a), budget=0.1) < 2 * fp32


def gemm_peaks(shapes=PEAK_SHAPES) -> dict[str, dict[str, float] | None]:
    """This machine's dense GEMM rates now, with torch's current thread count: ``{"fp32": {...}, "bf16": {...}}``,
    each ``{"peak": best GFLOP/s, "<library> <size>": GFLOP/s, ...}``; ``bf16`` is ``None`` without native bf16."""
    import torch

    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "bf16" and not bf16_is_native():
            peaks[name] = None
            continue
        rates = {}
        for shape in shapes:
            for library, rate in gemm_rates(dtype, shape).items():
                rates[f"{library} {'x'.join(map(str, shape))}"] = rate
        peaks[name] = {"peak": max(rates.values()), **rates}
    return peaks


def peak_line(peaks: dict) -> str:
    parts = []
    for name, rates in peaks.items():
        if rates is None:
            parts.append(f"{name}: no native GEMM")
            continue
        measured = [key for key in rates if key != "peak"]
        best = f" ({max(measured, key=rates.get)})" if measured else ""  # which GEMM gave it
        parts.append(f"{name} {rates['peak']:.1f} GFLOP/s{best}")
    return "GEMM peak: " + ", ".join(parts)


def roofline(flops: int, steady: float, precision: str, peaks: dict) -> str:
    """``N GFLOP/s = P % of <precision> peak``; a bf16 contestant also gets its share of the fp32 peak."""
    rate = flops / steady / 1e9
    shares = []
    for name in dict.fromkeys([precision, "fp32"]):
        if peaks.get(name):
            own = " (its precision)" if name == precision and precision != "fp32" else ""
            shares.append(f"{rate / peaks[name]['peak'] * 100:.0f} % of {name} peak{own}")
    return f"{flops / 1e9:.1f} GFLOP/it, {rate:.1f} GFLOP/s = " + ", ".join(shares)


def plain_loop(iters: int, count_flops: bool = False) -> dict:
    """The chapter's script, as printed (only the gymnasium 1.x registration added; the loop's body in a function),
    timing each iteration; with ``count_flops``, one more iteration counted by ``FlopCounterMode``."""
    import random

    import ale_py
    import cv2
    import gymnasium as gym
    import numpy as np
    import torch
    from torch import nn, optim

    gym.register_envs(ale_py)

    class InputWrapper(gym.ObservationWrapper):
        def observation(self, observation):
            return np.moveaxis(cv2.resize(observation, (IMAGE_SIZE, IMAGE_SIZE)), 2, 0).astype(np.float32)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            f = FILTERS
            self.conv_pipe = nn.Sequential(
                nn.Conv2d(3, f, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(f, f * 2, 4, 2, 1),
                nn.BatchNorm2d(f * 2),
                nn.ReLU(),
                nn.Conv2d(f * 2, f * 4, 4, 2, 1),
                nn.BatchNorm2d(f * 4),
                nn.ReLU(),
                nn.Conv2d(f * 4, f * 8, 4, 2, 1),
                nn.BatchNorm2d(f * 8),
                nn.ReLU(),
                nn.Conv2d(f * 8, 1, 4, 1, 0),
                nn.Sigmoid(),
            )

        def forward(self, x):
            return self.conv_pipe(x).view(-1, 1).squeeze(dim=1)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            f = FILTERS
            self.pipe = nn.Sequential(
                nn.ConvTranspose2d(LATENT, f * 8, 4, 1, 0),
                nn.BatchNorm2d(f * 8),
                nn.ReLU(),
                nn.ConvTranspose2d(f * 8, f * 4, 4, 2, 1),
                nn.BatchNorm2d(f * 4),
                nn.ReLU(),
                nn.ConvTranspose2d(f * 4, f * 2, 4, 2, 1),
                nn.BatchNorm2d(f * 2),
                nn.ReLU(),
                nn.ConvTranspose2d(f * 2, f, 4, 2, 1),
                nn.BatchNorm2d(f),
                nn.ReLU(),
                nn.ConvTranspose2d(f, 3, 4, 2, 1),
                nn.Tanh(),
            )

        def forward(self, x):
            return self.pipe(x)

    def iterate_batches(envs):
        batch = [e.reset()[0] for e in envs]
        env_gen = iter(lambda: random.choice(envs), None)
        while True:
            e = next(env_gen)
            obs, reward, is_done, is_trunc, _ = e.step(e.action_space.sample())
            if np.mean(obs) > 0.01:
                batch.append(obs)
            if len(batch) == BATCH_SIZE:
                batch_np = np.array(batch, dtype=np.float32)
                yield torch.tensor(batch_np * 2.0 / 255.0 - 1.0)
                batch.clear()
            if is_done or is_trunc:
                e.reset()

    envs = [InputWrapper(gym.make(name)) for name in ("Breakout-v4", "AirRaid-v4", "Pong-v4")]
    net_discr, net_gener = Discriminator(), Generator()
    objective = nn.BCELoss()
    gen_optimizer = optim.Adam(params=net_gener.parameters(), lr=1e-4, betas=(0.5, 0.999))
    dis_optimizer = optim.Adam(params=net_discr.parameters(), lr=1e-4, betas=(0.5, 0.999))
    true_labels_v, fake_labels_v = torch.ones(BATCH_SIZE), torch.zeros(BATCH_SIZE)

    def iteration(batch_v):
        gen_input_v = torch.FloatTensor(BATCH_SIZE, LATENT, 1, 1).normal_(0, 1)
        gen_output_v = net_gener(gen_input_v)
        dis_optimizer.zero_grad()
        dis_loss = objective(net_discr(batch_v), true_labels_v) + objective(
            net_discr(gen_output_v.detach()), fake_labels_v
        )
        dis_loss.backward()
        dis_optimizer.step()
        gen_optimizer.zero_grad()
        gen_loss_v = objective(net_discr(gen_output_v), true_labels_v)
        gen_loss_v.backward()
        gen_optimizer.step()
        dis_loss.item(), gen_loss_v.item()  # the chapter reads both losses every iteration

    times, start, first = [], time.perf_counter(), None
    batches = iterate_batches(envs)
    for batch_v in batches:
        iteration(batch_v)
        now = time.perf_counter()
        first = first or time.time()
        times.append(now - start)
        start = now
        if len(times) == iters:
            break
    flops = counted_flops(iteration, next(batches)) if count_flops else 0  # one more iteration, after the timing
    return {"times": times, "flops": flops, "first_iteration_at": first}


def bare_step_loop(iters: int, runner_flags: list[str], count_flops: bool = False, ahead: bool = False) -> dict:
    """The runner's process function, stream and models at its defaults, called in a plain loop (no Engine); with
    ``ahead``, over the stream's first ``iters`` batches made before the loop."""
    from step_switches import make_step, settings_of  # the step exactly as the launcher builds it

    import tasks.atari_gan as task
    from runner.device import resolve_device
    from runner.memory import keep_freed_memory

    flags = " ".join(runner_flags)
    settings = settings_of(flags)
    if settings.keep_heap:
        keep_freed_memory()
    step, engine = make_step(flags)
    stream = task.make_stream(settings, resolve_device(settings.dev))
    batches = [next(stream) for _ in range(iters)] if ahead else stream
    times, start, first = [], time.perf_counter(), None
    for batch in batches:
        engine.state.iteration += 1
        step(engine, batch)
        now = time.perf_counter()
        first = first or time.time()
        times.append(now - start)
        start = now
        if len(times) == iters:
            break
    flops = 0
    if count_flops:  # one more iteration, after the timing
        engine.state.iteration += 1
        flops = counted_flops(step, engine, next(stream))
    stream.close()
    return {"times": times, "flops": flops, "first_iteration_at": first}


def runner_step_flops(runner_flags: list[str]) -> tuple[int, str]:
    """FLOPs of one call of the runner's process function as the launcher builds it (on a random batch of the
    stream's shape: the count depends on shapes only), after one uncounted call; and the precision it runs in. An
    iteration with a lazy R1 penalty (one in ``--r1-every``) costs more than the count says."""
    import torch
    from step_switches import make_step, settings_of

    from runner.device import resolve_precision

    flags = " ".join(runner_flags)
    settings = settings_of(flags)
    step, engine = make_step(flags)
    batch = torch.rand(settings.batch_size, 3, settings.image_size, settings.image_size) * 2 - 1
    engine.state.iteration += 1
    step(engine, batch)  # uncounted: a first call allocates (and is a lazy R1 iteration, which is left out:
    engine.state.iteration += 1  # FlopCounterMode cannot follow autograd.grad's graph)
    flops = counted_flops(step, engine, batch)
    return flops, resolve_precision(settings.precision, torch.device(settings.dev))


def handler_profile(iters: int, runner_flags: list[str]) -> dict[str, float]:
    """The launcher's own training run in this process, with Ignite's ``HandlersTimeProfiler`` on its trainer.

    Every second of ``trainer.run`` is then accounted for in one process, so the split needs no second run to
    compare against: the process function, the batches' production, each handler, and what is left over, Ignite's
    own loop. Seconds per iteration, except ``one-off handlers`` (start and end: final checkpoint, sample sheet).
    """
    from ignite.engine import Events
    from ignite.handlers import HandlersTimeProfiler

    import tasks.atari_gan as task
    import tasks.gan as gan_run
    from runner.settings import make_settings, parse_flags

    profiler, runs = HandlersTimeProfiler(), []
    create_trainer = gan_run.create_gan_trainer

    def profiled_trainer(*args, **kwargs):
        trainer = create_trainer(*args, **kwargs)
        profiler.attach(trainer)
        run = trainer.run

        def timed_run(*run_args, **run_kwargs):
            started = time.perf_counter()
            try:
                return run(*run_args, **run_kwargs)
            finally:
                runs.append(time.perf_counter() - started)

        trainer.run = timed_run
        return trainer

    gan_run.create_gan_trainer = profiled_trainer
    try:
        with tempfile.TemporaryDirectory() as folder:
            flags = ["--dev", "cpu", "--max-iters", str(iters), "--log-every", str(BLOCK), "--eval-every", "0"]
            flags += ["--output-dir", f"{folder}/run", *runner_flags]
            explicit = parse_flags(task.AtariGanSettings, flags, prog="handler-profile")
            result = task.train(make_settings(task.AtariGanSettings, explicit))
            if result.exit_code:
                raise SystemExit(f"the profiled run ended with exit code {result.exit_code}")
    finally:
        gan_run.create_gan_trainer = create_trainer
    one_off = (Events.STARTED, Events.COMPLETED, Events.EPOCH_STARTED, Events.EPOCH_COMPLETED)
    timed = profiler.event_handlers_times
    handler_seconds = {event: sum(map(sum, handlers.values())) for event, handlers in timed.items()}
    per_iteration = sum(seconds for event, seconds in handler_seconds.items() if event not in one_off)
    step, data = sum(profiler.processing_times), sum(profiler.dataflow_times)
    engine = runs[0] - step - data - sum(handler_seconds.values())
    return {
        "process function": step / iters,
        "batches (the stream)": data / iters,
        "per-iteration handlers": per_iteration / iters,
        "Ignite's loop (the rest)": engine / iters,
        "one-off handlers": sum(handler_seconds.values()) - per_iteration,
        "framework share": (per_iteration + engine) / step,
    }


def print_handler_profile(iters: int, runner_flags: list[str]) -> None:
    split = handler_profile(iters, runner_flags)
    print(f"\nOne run of {iters} iterations in this process, Ignite's HandlersTimeProfiler on the trainer:")
    for name, value in split.items():
        if name == "framework share":
            print(f"  framework:  {value * 100:+.2f} % of the process function's time (handlers + Ignite's loop)")
        elif name == "one-off handlers":
            print(f"  {name + ':':28s}{value:.2f} s in all")
        else:
            print(f"  {name + ':':28s}{value * 1000:.2f} ms per iteration")


@dataclass
class Timed:
    """One contestant's process: its wall time, its per-iteration seconds, the FLOPs of one iteration, the seconds
    from its launch to the end of its first iteration, and (the runner) the kernel plan it took."""

    seconds: float
    per_iteration: list[float]
    flops: int
    first_iteration: float
    plan: str = ""


def run_worker(flag: str, iters: int, runner_flags: list[str]) -> Timed:
    """A worker process (the plain loop, the bare step), timed from its launch."""
    command = [sys.executable, __file__, flag, str(iters), f"--runner-flags={' '.join(runner_flags)}"]
    launched, started = time.time(), time.perf_counter()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - started
    result = json.loads(output.splitlines()[-1])
    return Timed(seconds, result["times"], result["flops"], result["first_iteration_at"] - launched)


def first_record(metrics: Path, process: subprocess.Popen) -> tuple[float, dict]:
    """When the runner's first throughput record appeared (polled), and the record."""
    while process.poll() is None or metrics.exists():
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        records = [json.loads(line) for line in lines if line.endswith("}")]
        timed = [record for record in records if "iters_per_sec" in record]
        if timed:
            return time.time(), timed[0]
        time.sleep(0.01)
    raise SystemExit(f"the runner ended without a throughput record: exit code {process.returncode}")


def run_runner(iters: int, runner_flags: list[str], flops: int) -> Timed:
    """The launcher, timed from its launch. Its first iteration ended ``BLOCK - 1`` iterations (at the first
    block's own rate) before its first throughput record appeared, which is polled for."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(REPO / "scripts" / "atari_gan.py"), "--dev", "cpu", "--max-iters", str(iters)]
        command += ["--log-every", str(BLOCK), "--eval-every", "0", "--output-dir", f"{folder}/run", *runner_flags]
        launched, started = time.time(), time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
            appeared, record = first_record(Path(f"{folder}/run/metrics.jsonl"), process)
            stderr = process.communicate()[1]
        if process.returncode:
            raise SystemExit(f"the runner failed (exit code {process.returncode}):\n{stderr}")
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in Path(f"{folder}/run/metrics.jsonl").read_text().splitlines()]
        plan_file = Path(f"{folder}/run/kernel_plan.json")
        said = [line for line in stderr.splitlines() if line.startswith("kernel plan (")]
        taken = said[0].removeprefix("kernel plan (").partition(")")[0] if said else ""
        plan = plan_summary(json.loads(plan_file.read_text()), taken) if plan_file.exists() else "none (not a CPU run)"
    first = appeared - launched - (BLOCK - 1) / record["iters_per_sec"]
    # Each record's rate covers the 10 iterations since the previous one: the block's mean, once per iteration.
    per_iteration = [1 / r["iters_per_sec"] for r in records if "iters_per_sec" in r for _ in range(BLOCK)]
    return Timed(seconds, per_iteration, flops, first, plan)


def plan_summary(document: dict, taken: str = "") -> str:
    """Which passes of which layers a run's kernel plan gave to one matrix product, where the run ``taken`` it from
    (measured, cache, checkpoint, ...), and what measuring it cost."""
    products = [
        f"{network[0].upper()}:{name} {', '.join(p for p, kernel in passes.items() if kernel == 'product')}"
        for network, layers in document["networks"].items()
        for name, passes in layers.items()
        if "product" in passes.values()
    ]
    cost = f", measured in {document['seconds']:.1f} s" if "seconds" in document else ""
    origin = document["source"] if taken in ("", document["source"]) else f"{taken}, {document['source']}"
    return f"{origin}{cost}; products: {'; '.join(products) or 'none'}"


def measure_plan_once(runner_flags: list[str], flops: int) -> None:
    """The runner's kernel plan, measured by one short launch (``--kernel-plan measure``) into the machine's plan
    cache, which every round's runner then takes: the rounds start as a user's runs do after the first one on a
    machine, and what measuring costs that first run is printed once."""
    if any(flag.startswith("--kernel-plan") for flag in runner_flags):
        return
    timed = run_runner(BLOCK, [*runner_flags, "--kernel-plan", "measure"], flops)
    print(
        f"kernel plan for the rounds: {timed.plan} (a launch measuring it: {timed.first_iteration:.1f} s to "
        "its first iteration)",
        flush=True,
    )


def steady_mean(per_iteration: list[float], warmup: int) -> float:
    """Mean seconds of every iteration after the warm-up."""
    return statistics.mean(per_iteration[warmup:])


def steady_seconds(per_iteration: list[float], warmup: int) -> float:
    """Median of the 10-iteration means after the warm-up."""
    blocks = [per_iteration[i : i + BLOCK] for i in range(warmup, len(per_iteration) - BLOCK + 1, BLOCK)]
    return statistics.median(sum(block) / len(block) for block in blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="iterations left out of the steady state")
    parser.add_argument("--runner-flags", default="", help="extra flags for scripts/atari_gan.py (and the bare step)")
    parser.add_argument("--overhead", action="store_true", help="also time the bare step (the framework's cost)")
    parser.add_argument("--versus-flags", default="", help="also time the runner with these flags (--recipe stable)")
    parser.add_argument("--no-plain-loop", action="store_true", help="leave the chapter's loop out")
    parser.add_argument(
        "--handler-profile", action="store_true", help="also split one run's time with Ignite's HandlersTimeProfiler"
    )
    parser.add_argument("--plain-worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bare-worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ahead-worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    runner_flags = args.runner_flags.split()
    if args.plain_worker:
        print(json.dumps(plain_loop(args.plain_worker, count_flops=True)))
        return
    if args.bare_worker or args.ahead_worker:
        iters, ahead = (args.bare_worker, False) if args.bare_worker else (args.ahead_worker, True)
        print(json.dumps(bare_step_loop(iters, runner_flags, count_flops=True, ahead=ahead)))
        return
    if args.warmup % BLOCK or args.iters - args.warmup < BLOCK:
        parser.error(f"--warmup must be a multiple of {BLOCK}, with at least {BLOCK} iterations after it")
    cpu = cpu_class()
    print(cpu_class_line(cpu), flush=True)
    runner_flops, runner_precision = runner_step_flops(runner_flags)
    precision = {"plain loop": "fp32", "runner": runner_precision, "bare step": runner_precision}
    precision["bare step, frames ahead"] = runner_precision
    contestants = {
        "plain loop": lambda n: run_worker("--plain-worker", n, []),
        "runner": lambda n: run_runner(n, runner_flags, runner_flops),
    }
    if args.no_plain_loop:
        del contestants["plain loop"]
    if args.overhead:
        contestants["bare step"] = lambda n: run_worker("--bare-worker", n, runner_flags)
        contestants["bare step, frames ahead"] = lambda n: run_worker("--ahead-worker", n, runner_flags)
    if args.versus_flags:
        versus_flags = [*runner_flags, *args.versus_flags.split()]
        versus_flops, precision["versus"] = runner_step_flops(versus_flags)
        contestants["versus"] = lambda n: run_runner(n, versus_flags, versus_flops)
    measure_plan_once(runner_flags, runner_flops)
    results = {name: [] for name in contestants}
    round_peaks = []
    for round_number in range(args.rounds):
        peaks = gemm_peaks()  # each round: this VM's speed drifts
        round_peaks.append(peaks)
        print(f"round {round_number + 1}, {peak_line(peaks)}", flush=True)
        for name, run in contestants.items():
            timed = run(args.iters)
            steady = steady_seconds(timed.per_iteration, args.warmup)
            mean = steady_mean(timed.per_iteration, args.warmup)
            results[name].append((timed.seconds, steady, timed.flops, mean, timed.first_iteration))
            print(
                f"round {round_number + 1}, {name}: {steady:.4f} s/it steady, {timed.seconds:.1f} s whole process, "
                f"{timed.first_iteration:.1f} s to the first iteration; "
                f"{roofline(timed.flops, steady, precision[name], peaks)}",
                flush=True,
            )
            if timed.plan:
                print(f"  kernel plan: {timed.plan}", flush=True)
    medians = {name: [statistics.median(r[i] for r in runs) for i in range(5)] for name, runs in results.items()}
    peaks = {
        name: {"peak": statistics.median(p[name]["peak"] for p in round_peaks)} if round_peaks[0][name] else None
        for name in round_peaks[0]
    }
    print(f"\n{args.iters} iterations, {args.rounds} rounds (medians), runner flags: {args.runner_flags or 'defaults'}")
    print(cpu_class_line(cpu))
    print(f"  {peak_line(peaks)}, median of the rounds")
    for name, (seconds, steady, flops, _, first) in medians.items():
        label = f"{name} ({precision[name]}):"
        print(f"  {label:20s}{steady:.4f} s/it steady, {seconds:.1f} s whole process, ", end="")
        print(f"{first:.1f} s to the first iteration; ", end="")
        print(roofline(flops, steady, precision[name], peaks))
    runner = medians["runner"]
    if "plain loop" in medians:
        plain = medians["plain loop"]
        print(f"  speed-up:           {plain[1] / runner[1]:.2f}x steady, {plain[0] / runner[0]:.2f}x whole process")
    if "versus" in medians:
        versus = medians["versus"]
        print(
            f"  versus / runner:    {versus[1] / runner[1]:.2f}x steady (median), {versus[3] / runner[3]:.2f}x steady "
            f"(mean), {versus[0] / runner[0]:.2f}x whole process ({args.versus_flags})"
        )
    if args.overhead:
        bare, ahead = medians["bare step"][1], medians["bare step, frames ahead"][1]
        print(f"  framework:  {(runner[1] / bare - 1) * 100:+.1f} % (runner vs bare step, steady)")
        print(f"  frames:     {(bare / ahead - 1) * 100:+.1f} % (bare step vs the same, frames made ahead, steady)")
    if args.handler_profile:
        print_handler_profile(args.iters, runner_flags)


if __name__ == "__main__":
    main()
