"""The benchmark scripts still run (no timing here: speed figures live in docs/, measured by the scripts)."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_chapters_plain_loop_runs_and_times_each_iteration():
    times = load("atari_gan_speed").plain_loop(2)
    assert len(times) == 2 and all(seconds > 0 for seconds in times)
