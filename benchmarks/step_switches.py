"""What each fast-path switch is worth: the Atari GAN's step with one switch off at a time, in one process.

    python benchmarks/step_switches.py --rounds 8
    python benchmarks/step_switches.py --configs "" "--kernel-plan book" "--precision fp32 --no-channels-last"

Every configuration builds its own networks and optimizers (``tasks.gan``'s own builders, so it is the step
the launcher runs) and trains on the same batches, made once up front: the emulator's time is left out. Rounds
alternate the configurations, so drift in the machine's speed reaches them all; each round times ``--steps``
iterations after two untimed ones. The table gives the median over the rounds after the first.
"""

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

import tasks.atari_gan as task
from engines.gan import create_gan_trainer
from runner.device import resolve_device, resolve_precision
from runner.memory import keep_freed_memory
from runner.rng import seed_everything
from runner.settings import make_settings, parse_flags, recipe_defaults
from tasks.gan import build_gan, gan_step_of, kernel_plan_of, make_augment, settle_kernels

SWITCHES_OFF = [
    "",
    "--kernel-plan book",
    "--no-fused-adam",
    "--no-channels-last",
    "--no-joint-d-pass",
    "--no-freeze-discriminator",
    "--precision fp32",
]


def settings_of(flags: str):
    explicit = parse_flags(task.AtariGanSettings, ["--dev", "cpu", *flags.split()], prog="step_switches")
    recipe = recipe_defaults(task.AtariGanSettings, explicit)  # --recipe stable: its techniques, as a launch
    return make_settings(task.AtariGanSettings, {**recipe, **explicit, "output_dir": "unused"})


def make_step(flags: str):
    """The process function of a run with ``flags``, and a stand-in for its engine (all the step reads of it)."""
    settings = settings_of(flags)
    device = resolve_device(settings.dev)
    seed_everything(settings.seed)
    gan = build_gan(settings, *task.make_networks(settings), device)
    precision = resolve_precision(settings.precision, device)
    step = gan_step_of(settings, precision, device)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None  # as the launcher: fp16 needs one
    networks, optimizers = (gan.generator, gan.discriminator), (gan.gen_optimizer, gan.dis_optimizer)
    trainer = create_gan_trainer(*networks, *optimizers, device, step, scaler, make_augment(settings))
    plan = kernel_plan_of(settings, gan, device)
    if plan is not None:  # what the trainer's start does in a run
        settle_kernels(plan, settings, precision)
    return trainer._process_function, SimpleNamespace(state=SimpleNamespace(iteration=0))


def make_batches(flags: str, count: int) -> list:
    stream = task.make_stream(settings_of(flags), resolve_device("cpu"))
    try:
        return [next(stream) for _ in range(count)]
    finally:
        stream.close()


def time_steps(step, engine, batches, warmup: int = 2) -> float:
    for batch in batches[:warmup]:
        engine.state.iteration += 1
        step(engine, batch)
    started = time.perf_counter()
    for batch in batches:
        engine.state.iteration += 1
        step(engine, batch)
    return (time.perf_counter() - started) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10, help="timed iterations per configuration and round")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=SWITCHES_OFF,
        help='flag sets; "" is the defaults (sizes come from --base-flags: all train on the same batches)',
    )
    parser.add_argument("--base-flags", default="", help="flags for every configuration (default: the chapter's)")
    args = parser.parse_args()
    keep_freed_memory()  # the default; its own effect is measured by the bare-step benchmark, not here
    batches = make_batches(args.base_flags, args.steps)
    steps = {flags: make_step(f"{args.base_flags} {flags}") for flags in args.configs}
    seconds = {flags: [] for flags in args.configs}
    for round_number in range(args.rounds):
        for flags, (step, engine) in steps.items():
            seconds[flags].append(time_steps(step, engine, batches))
        print(f"round {round_number + 1}: " + ", ".join(f"{v[-1]:.4f}" for v in seconds.values()), flush=True)
    print("\n| configuration | s/it (median of rounds 2+) |\n| --- | --- |")
    for flags, values in seconds.items():
        print(f"| {('`' + flags + '`') if flags else 'all defaults'} | {statistics.median(values[1:]):.4f} |")


if __name__ == "__main__":
    main()
