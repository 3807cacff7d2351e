"""The chapter's plain Atari GAN loop and this runner, side by side on one machine, alternating.

    python benchmarks/atari_gan_speed.py --iters 150 --rounds 2

Each round runs, as separate processes, (1) a faithful copy of Deep RL Hands-On's 03_atari_gan.py (its networks
with Sigmoid + BCELoss, its ``iterate_batches`` generator over gymnasium envs, its optimizer settings, batch 16,
64x64, 64 filters), and (2) ``scripts/atari_gan.py`` with the same sizes and no FID evaluation. It prints seconds
per iteration in steady state (the median after ``--warmup`` iterations), the whole-process wall time for
``--iters`` iterations (start-up included), and the ratios. Alternating rounds spread any drift in the machine's
speed over both.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZE, IMAGE_SIZE, LATENT, FILTERS = 16, 64, 100, 64  # the chapter's constants


def plain_loop(iters: int) -> list[float]:
    """The chapter's script, as printed (only the gymnasium 1.x registration added), timing each iteration."""
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
                nn.Conv2d(3, f, 4, 2, 1), nn.ReLU(),
                nn.Conv2d(f, f * 2, 4, 2, 1), nn.BatchNorm2d(f * 2), nn.ReLU(),
                nn.Conv2d(f * 2, f * 4, 4, 2, 1), nn.BatchNorm2d(f * 4), nn.ReLU(),
                nn.Conv2d(f * 4, f * 8, 4, 2, 1), nn.BatchNorm2d(f * 8), nn.ReLU(),
                nn.Conv2d(f * 8, 1, 4, 1, 0), nn.Sigmoid(),
            )  # fmt: skip

        def forward(self, x):
            return self.conv_pipe(x).view(-1, 1).squeeze(dim=1)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            f = FILTERS
            self.pipe = nn.Sequential(
                nn.ConvTranspose2d(LATENT, f * 8, 4, 1, 0), nn.BatchNorm2d(f * 8), nn.ReLU(),
                nn.ConvTranspose2d(f * 8, f * 4, 4, 2, 1), nn.BatchNorm2d(f * 4), nn.ReLU(),
                nn.ConvTranspose2d(f * 4, f * 2, 4, 2, 1), nn.BatchNorm2d(f * 2), nn.ReLU(),
                nn.ConvTranspose2d(f * 2, f, 4, 2, 1), nn.BatchNorm2d(f), nn.ReLU(),
                nn.ConvTranspose2d(f, 3, 4, 2, 1), nn.Tanh(),
            )  # fmt: skip

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
    times, start = [], time.perf_counter()
    for batch_v in iterate_batches(envs):
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
        now = time.perf_counter()
        times.append(now - start)
        start = now
        if len(times) == iters:
            return times
    return times


def run_plain(iters: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    output = subprocess.run([sys.executable, __file__, "--plain-worker", str(iters)], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    return time.perf_counter() - started, json.loads(output.splitlines()[-1])


def run_runner(iters: int, log_every: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(REPO / "scripts" / "atari_gan.py"), "--dev", "cpu", "--max-iters", str(iters),
                   "--log-every", str(log_every), "--eval-every", "0", "--image-every", "1000000",
                   "--checkpoint-every", "1000000", "--output-dir", f"{folder}/run"]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in Path(f"{folder}/run/metrics.jsonl").read_text().splitlines()]
    # Each record's rate covers the interval since the previous one: one value per interval, repeated per iteration.
    per_iteration = [1 / r["iters_per_sec"] for r in records if "iters_per_sec" in r for _ in range(log_every)]
    return seconds, per_iteration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20, help="iterations left out of the steady state")
    parser.add_argument("--plain-worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker:
        print(json.dumps(plain_loop(args.plain_worker)))
        return
    log_every = 10
    results = {"plain loop": [], "runner": []}
    for round_number in range(args.rounds):
        for name, run in (("plain loop", run_plain), ("runner", lambda n: run_runner(n, log_every))):
            seconds, per_iteration = run(args.iters)
            steady = statistics.median(per_iteration[args.warmup :])
            results[name].append((seconds, steady))
            print(f"round {round_number + 1}, {name}: {steady:.4f} s/it steady, {seconds:.1f} s whole process",
                  flush=True)  # fmt: skip
    plain = [statistics.median(v[i] for v in results["plain loop"]) for i in (0, 1)]
    runner = [statistics.median(v[i] for v in results["runner"]) for i in (0, 1)]
    print(f"\n{args.iters} iterations, {args.rounds} rounds (medians):")
    print(f"  plain loop: {plain[1]:.4f} s/it steady, {plain[0]:.1f} s whole process")
    print(f"  runner:     {runner[1]:.4f} s/it steady, {runner[0]:.1f} s whole process")
    print(f"  speed-up:   {plain[1] / runner[1]:.2f}x steady, {plain[0] / runner[0]:.2f}x whole process")


if __name__ == "__main__":
    main()
