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


def test_the_switch_benchmark_times_each_configuration_on_the_same_batches():
    benchmark = load("step_switches")
    tiny = "--image-size 16 --filters 4 --batch-size 4 --latent-size 8"
    batches = benchmark.make_batches(tiny, 3)
    assert [tuple(batch.shape) for batch in batches] == [(4, 3, 16, 16)] * 3
    for flags in ("", "--no-gemm-weight-grads --precision fp32"):
        step, engine = benchmark.make_step(f"{tiny} {flags}")
        assert benchmark.time_steps(step, engine, batches, warmup=1) > 0
        assert engine.state.iteration == 4  # the warm-up step, then every batch once


def test_the_handler_profile_accounts_for_a_whole_training_run():
    tiny = ["--image-size", "16", "--filters", "4", "--batch-size", "4", "--latent-size", "8"]
    split = load("atari_gan_speed").handler_profile(20, tiny)
    assert split["process function"] > 0 and split["batches (the stream)"] > 0
    assert split["per-iteration handlers"] > 0  # running averages, NaN guard, throughput, logging...
    assert split["one-off handlers"] > 0  # the final checkpoint and sample sheet
    assert split["Ignite's loop (the rest)"] >= 0  # the parts add up to no more than the run itself


def test_the_integrity_benchmark_times_save_check_and_load_of_a_real_checkpoint():
    tiny = ["--dev", "cpu", "--image-size", "16", "--filters", "4", "--batch-size", "4", "--latent-size", "8"]
    times = load("checkpoint_integrity").measure(tiny, repeats=2)
    assert times["size_mb"] > 0 and all(times[key] > 0 for key in ("save", "check", "load"))


def test_the_fid_summary_gives_each_generators_best_and_late_spread(tmp_path):
    import json
    import subprocess
    import sys

    records = [{"iteration": i, "fid": 100.0 / i, "fid_ema": 50.0 / i + 1} for i in (1, 2, 3, 4, 5, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fid_summary.py"), str(tmp_path), "--plot", str(tmp_path / "f.png")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "fid: best 16.7 at iteration 6; last third (2 evaluations): min 16.7, max 20.0, mean 18.3, std 1.7"
    assert out[1].startswith("fid_ema: best 9.3 at iteration 6;")
    assert out[-1] == "| 6 | 16.7 | 9.3 |" and (tmp_path / "f.png").stat().st_size > 0
