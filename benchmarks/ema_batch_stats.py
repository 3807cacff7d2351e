"""Re-evaluate saved checkpoints with the run's own Atari-FID, both ways a run can show its generators.

Ignite's ``EMAHandler`` averages the weights and copies the buffers: the average runs in ``eval()`` with G's running
BatchNorm statistics, which belong to G's current weights, not to the averaged ones. ``--shown-statistics own`` (the
default since it was found) evaluates each generator with statistics recomputed for its own weights
(``engines/batch_stats.py``); runs from before it logged ``running``. This gives, for each checkpoint, ``fid`` and
``fid_ema`` both ways, on the run's own real frames and noise, through the run's own evaluator: each number is what a
run with that ``--shown-statistics`` logs at that iteration. Nothing in the checkpoint changes.

    python benchmarks/ema_batch_stats.py runs/evidence/stable64-s0/checkpoints/checkpoint_1*.pt
    python benchmarks/ema_batch_stats.py runs/r/checkpoints/*.pt --records runs/r/own_statistics.jsonl

``--records FILE`` appends one ``metrics.jsonl``-style record per checkpoint (``fid`` and ``fid_ema`` with their own
statistics, ``"fid_statistics": "own"``) for ``benchmarks/fid_summary.py --records``.

``--window N`` asks what a slower average would show: at each checkpoint from the N-th on, the moving average's
weights averaged over that checkpoint and the N - 1 before it (checkpoints every 500 iterations and N = 4: the
average's memory of about 1 / (1 - decay) iterations spread over 2,000 more), evaluated with its own statistics only;
its records are ``fid_ema`` with ``"window": N``.

    python benchmarks/ema_batch_stats.py runs/r/checkpoints/checkpoint_*[05]00.pt --window 4 --records r/window4.jsonl
"""

import argparse
import functools
import json
import re
from pathlib import Path

import torch

from datasets.atari import spaced_frames
from engines.gan import create_fid_evaluator, fid_batches
from runner.checkpoint_files import load_checkpoint
from runner.settings import make_settings
from tasks.atari_fid import LazyFeatures, load_frame_classifier
from tasks.atari_gan import EVAL_SEED_OFFSET, FID_BATCH, AtariGanSettings, make_networks
from tasks.gan import shown_view

CPU = torch.device("cpu")


def checkpoint_iteration(path: Path) -> int:
    found = re.search(r"(\d+)\.pt$", path.name)
    if found is None:
        raise SystemExit(f"{path}: not a checkpoint_<iteration>.pt")
    return int(found.group(1))


@functools.cache
def real_frames(games: tuple[str, ...], samples: int, size: int, seed: int) -> torch.Tensor:
    """The run's held-apart real frames (made once per run: every checkpoint of a run is judged on the same)."""
    return spaced_frames(games, samples, size, seed=seed)


@functools.lru_cache(maxsize=16)
def saved_state(path: Path, key: str) -> dict[str, torch.Tensor]:
    """``key``'s state in the checkpoint at ``path``, read once: consecutive windows share their checkpoints (windows
    move forward in order: the newest 16 serve any window up to 16, and a long list does not pile up in memory)."""
    return load_checkpoint(path)[key]


def averaged_weights(paths: list[Path], key: str) -> dict[str, torch.Tensor]:
    """The mean of ``key``'s state over the checkpoints at ``paths`` (counters: the last one's)."""
    states = [saved_state(path, key) for path in paths]
    return {
        name: sum(state[name] for state in states) / len(states) if value.is_floating_point() else value
        for name, value in states[-1].items()
    }


def evaluate(path: Path, window: list[Path] | None = None) -> dict[str, float]:
    """``fid`` and ``fid_ema`` as a run with ``--shown-statistics running`` logs them, and ``*_own`` as one with
    ``own`` does, for the checkpoint at ``path``; with a ``window`` of checkpoints, only ``fid_ema_own`` of the
    average's weights averaged over them."""
    state = load_checkpoint(path)
    saved = {key: value for key, value in state["settings"].items() if key not in AtariGanSettings.retired}
    settings = make_settings(AtariGanSettings, {**saved, "resume": "", "output_dir": "unused"})
    networks = {}
    kept = (("fid_ema", "generator_ema"),) if window else (("fid", "generator"), ("fid_ema", "generator_ema"))
    for name, key in kept:
        networks[name] = make_networks(settings)[0]
        networks[name].load_state_dict(averaged_weights(window, key) if window else state[key])
    seed = settings.seed + EVAL_SEED_OFFSET  # the run's own evaluation: its real frames and its noise
    real = real_frames(tuple(settings.games), settings.fid_samples, settings.image_size, seed)
    noise = torch.randn(settings.fid_samples, settings.latent_size, 1, 1, generator=torch.Generator().manual_seed(seed))
    features = LazyFeatures(lambda: load_frame_classifier(settings.image_size, say=print), CPU)
    values = {}
    for suffix, statistics in (("_own", "own"),) if window else (("", "running"), ("_own", "own")):
        shown = shown_view(make_settings(AtariGanSettings, {**saved, "shown_statistics": statistics}))
        evaluator = create_fid_evaluator(networks, features, real, noise, FID_BATCH, CPU, shown)
        evaluator.run(fid_batches(settings.fid_samples, FID_BATCH))
        values.update({f"{name}{suffix}": float(value) for name, value in evaluator.state.metrics.items()})
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--records", type=Path, help="append each checkpoint's own-statistics FIDs to this file")
    parser.add_argument("--window", type=int, default=0, help="the average's weights over this many checkpoints")
    args = parser.parse_args()
    if args.window:
        slower_average(sorted(args.checkpoints, key=checkpoint_iteration), args.window, args.records)
        return
    print("| checkpoint | fid (running) | fid_ema (running) | fid (own) | fid_ema (own) |")
    print("| --- | --- | --- | --- | --- |")
    for path in sorted(args.checkpoints, key=checkpoint_iteration):
        fid = evaluate(path)
        cells = [fid["fid"], fid["fid_ema"], fid["fid_own"], fid["fid_ema_own"]]
        print(f"| {path} | " + " | ".join(f"{value:.2f}" for value in cells) + " |", flush=True)
        if args.records:
            append_record(args.records, path, fid=fid["fid_own"], fid_ema=fid["fid_ema_own"])


def slower_average(paths: list[Path], window: int, records: Path | None) -> None:
    """``--window``: from the ``window``-th checkpoint on, ``fid_ema`` (own statistics) of the averaged average."""
    print(f"| checkpoint | fid_ema (own), the average over {window} checkpoints |")
    print("| --- | --- |")
    for end in range(window - 1, len(paths)):
        path = paths[end]
        averaged = evaluate(path, paths[end - window + 1 : end + 1])["fid_ema_own"]
        print(f"| {path} | {averaged:.2f} |", flush=True)
        if records:
            append_record(records, path, fid_ema=averaged, window=window)


def append_record(records: Path, checkpoint: Path, **values: float) -> None:
    """One ``metrics.jsonl``-style record of own-statistics FIDs for ``checkpoint``'s iteration."""
    record = {"iteration": checkpoint_iteration(checkpoint), **values, "fid_statistics": "own"}
    with records.open("a") as file:
        file.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
