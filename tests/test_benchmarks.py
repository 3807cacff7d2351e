"""The benchmark scripts still run (no timing here: speed figures live in docs/, measured by the scripts)."""

import importlib.util
import re
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_chapters_plain_loop_runs_and_times_each_iteration():
    result = load("atari_gan_speed").plain_loop(2, count_flops=True)
    assert len(result["times"]) == 2 and all(seconds > 0 for seconds in result["times"])
    assert 39e9 < result["flops"] < 41e9  # one iteration at the chapter's sizes, as FlopCounterMode counts it
    assert result["first_iteration_at"] <= time.time()


def test_the_runner_contestant_reports_its_start_up_and_its_kernel_plan(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    timed = load("atari_gan_speed").run_runner(20, TINY_SIZES.split(), flops=1)
    assert 0 < timed.first_iteration < timed.seconds and len(timed.per_iteration) == 20
    assert timed.plan.endswith("products: none")  # tiny passes
    # the first launch with these sizes measures; a later one takes the machine's cached plan
    assert timed.plan.startswith(("measured, measured in ", "cache, measured, measured in "))
    assert load("atari_gan_speed").plan_summary({"source": "measured", "networks": {}}, "cache").startswith("cache, ")


TINY_SIZES = "--image-size 16 --filters 4 --batch-size 4 --latent-size 8"


def test_the_roofline_counts_the_runners_step_and_measures_the_peaks(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    speed = load("atari_gan_speed")
    flops, precision = speed.runner_step_flops(TINY_SIZES.split())
    assert flops > 0 and precision in ("bf16", "fp32")
    # the products of a kernel plan are aten.mm calls: FlopCounterMode counts them as the library's kernels
    assert speed.runner_step_flops([*TINY_SIZES.split(), "--kernel-plan", "book"])[0] == flops
    joint_and_frozen = speed.runner_step_flops([*TINY_SIZES.split(), "--no-joint-d-pass", "--no-freeze-discriminator"])
    assert joint_and_frozen[0] > flops  # D's weight gradients in the generator step: the book's extra work
    peaks = speed.gemm_peaks(shapes=((128, 64, 64),))
    assert peaks["fp32"]["peak"] == max(peaks["fp32"]["torch.mm 128x64x64"], peaks["fp32"]["oneDNN 1x1 conv 128x64x64"])
    assert peaks["bf16"] is None or peaks["bf16"]["peak"] > 0
    line = speed.roofline(flops, 0.01, "bf16", {"fp32": {"peak": 100.0}, "bf16": {"peak": 200.0}})
    assert line.endswith(f"= {flops / 2e9:.0f} % of bf16 peak (its precision), {flops / 1e9:.0f} % of fp32 peak")
    assert speed.roofline(flops, 0.01, "fp32", {"fp32": {"peak": 100.0}, "bf16": None}).endswith("% of fp32 peak")
    cpu = speed.cpu_class()
    assert set(cpu["flags"]) == {"avx2", "avx512_bf16", "amx_bf16"} and "avx2 " in speed.cpu_class_line(cpu)


def test_the_layer_table_accounts_for_every_flop_of_the_runners_step(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    layers = load("layer_roofline")
    monkeypatch.setattr(layers, "best_seconds", lambda function, budget: [function(), 1e-3][1])  # no timing here
    for flags in ("--precision fp32", "--precision fp32 --no-joint-d-pass --no-freeze-discriminator"):
        rows, plan = layers.layer_rows(f"{TINY_SIZES} {flags}")
        assert [row.name for row in rows] == ["G1", "G2", "G3", "D1", "D2", "D3", "D1", "D2", "D3"]
        assert "input_grad" not in rows[0].timings and "input_grad" not in rows[3].timings  # first layers
        assert "input_grad" in rows[6].timings  # D's first layer in G's step: its input is G's images
        assert plan.source in ("measured", "cache") and {row.chosen for row in rows} <= set(
            plan.chosen["discriminator"].values()
        ) | set(plan.chosen["generator"].values())
        step_flops = load("atari_gan_speed").runner_step_flops(f"{TINY_SIZES} {flags}".split())[0]
        assert sum(row.step_flops() for row in rows) == step_flops  # the table misses no convolution's pass
    table = layers.markdown_table(rows, peak=100.0, precision="fp32")
    assert table.count("\n| G") == 3 and "| 4 | 2x |" in table  # the D step as two passes of 4 images each
    assert table.count("*") - 1 == sum(len(row.timings) for row in rows)  # each pass made marks its kernel (+ note)
    assert layers.goal_line(rows, peak=100.0).startswith("passes of >= 1 GFLOP at >= 50 % of peak")


def test_the_switch_benchmark_times_each_configuration_on_the_same_batches():
    benchmark = load("step_switches")
    tiny = "--image-size 16 --filters 4 --batch-size 4 --latent-size 8"
    batches = benchmark.make_batches(tiny, 3)
    assert [tuple(batch.shape) for batch in batches] == [(4, 3, 16, 16)] * 3
    for flags in ("", "--kernel-plan book --precision fp32"):
        step, engine = benchmark.make_step(f"{tiny} {flags}")
        assert benchmark.time_steps(step, engine, batches, warmup=1) > 0
        assert engine.state.iteration == 4  # the warm-up step, then every batch once


def test_the_profiled_step_gets_a_grad_scaler_where_auto_chooses_fp16(monkeypatch):
    """As on a V100 or T4, where ``--precision auto`` is fp16: the step must be built as the launcher builds it."""
    benchmark = load("step_switches")
    monkeypatch.setattr(benchmark, "resolve_precision", lambda name, device: "fp16")
    step, _ = benchmark.make_step("--image-size 16 --filters 4 --batch-size 4 --latent-size 8")
    assert step.scaler is not None  # without one, create_gan_trainer refuses fp16


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
    assert out[0] == (
        "fid: best 16.7 at iteration 6; last third (2 evaluations): min 16.7, max 20.0, mean 18.3, std 1.7; "
        "max/best 1.20"
    )
    assert out[1].startswith("fid_ema: best 9.3 at iteration 6;")
    assert out[-1] == "| 6 | 16.7 | 9.3 |" and (tmp_path / "f.png").stat().st_size > 0


def test_the_gpu_check_reads_the_rate_after_warm_up_and_the_producers_json_line(tmp_path):
    gpu_check = load("gpu_check")
    rates = [2.0, 10.0, 20.0, 10.0]  # the first record holds the compile time
    lines = [f'{{"iteration": {10 * (i + 1)}, "loss_gen": 1.0, "iters_per_sec": {r}}}' for i, r in enumerate(rates)]
    (tmp_path / "metrics.jsonl").write_text("\n".join([*lines, '{"iteration": 50, "iters_p']))  # a torn last line
    speed = gpu_check.speed_of(tmp_path / "metrics.jsonl", log_every=10, warmup_records=1)
    assert speed == {"s_per_100": 10.0, "iters_per_sec": 10.0, "warmup_s": 4.0, "records": 3}  # 10/2 s, not 10/10
    assert gpu_check.speed_of(tmp_path / "missing.jsonl", 10, 1) is None
    assert gpu_check.speed_of(tmp_path / "metrics.jsonl", 10, 4) is None  # nothing after the warm-up
    stdout = 'starting 2 workers\n{"workers": 2, "frames_per_s": 8123.4, "batches": 300}\n'
    assert gpu_check.frames_record(stdout) == {"workers": 2, "frames_per_s": 8123.4, "batches": 300}
    assert gpu_check.frames_record("4,725 frames/s\n") is None


FAKE_FRAME_STREAM = """
import argparse, json, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--workers", type=int, required=True)
parser.add_argument("--json", action="store_true")
args, _ = parser.parse_known_args()
if args.workers == 2:
    time.sleep(60)
if args.workers == 3:
    sys.exit("RuntimeError: worker 2 died")
print("warming up")
print(json.dumps({"workers": args.workers, "frames_per_s": 4000.0 * args.workers, "ms_per_batch": 4.0}))
"""


def test_the_gpu_check_gives_each_producer_run_a_row_whatever_it_did(tmp_path):
    import dataclasses

    gpu_check = load("gpu_check")
    fake = tmp_path / "fake_stream.py"
    fake.write_text(FAKE_FRAME_STREAM)
    out = tmp_path / "check.md"
    flags = ["--dev", "cpu", "--only", "producer", "--budget-s", "60", "--out", str(out), "--frame-stream", str(fake)]
    plan = dataclasses.replace(gpu_check.QUICK, workers=(1, 2, 3, 4), shares={**gpu_check.QUICK.shares, "producer": 4})
    started = time.monotonic()
    gpu_check.Check(gpu_check.parse(flags), plan, tmp_path / "work").run()
    assert time.monotonic() - started < 30  # the hanging run's whole process group was killed at its timeout
    table = out.read_text()
    assert "| 1 | 4,000 | 4,000 | 50% | ok (ms_per_batch 4) |" in table
    assert re.search(r"\| 2 \|  \|  \|  \| timed out after [4-9] s \|", table)  # its share, and what 1 left
    assert "| 3 |  |  |  | failed (exit 1): RuntimeError: worker 2 died |" in table
    assert "| 4 | 16,000 | 4,000 | 200% | ok (ms_per_batch 4) |" in table
    assert (tmp_path / "check-logs" / "producer-2.out").exists()
    fake.write_text("import argparse\nargparse.ArgumentParser().parse_args()\n")  # before --workers existed
    gpu_check.Check(gpu_check.parse(flags), plan, tmp_path / "work").run()
    table = out.read_text()
    assert table.count("| not available: fake_stream.py has no --workers / --json |") == 4


def test_the_gpu_check_quick_mode_writes_every_section(tmp_path):
    """The real steps at tiny sizes on the CPU, less the two compiled runs (tens of seconds each on CPU) and the
    resume check (``verify_resume``, tested on its own), with generous timeouts: a busy machine slows them, but
    they must succeed."""
    import dataclasses

    gpu_check = load("gpu_check")
    out = tmp_path / "check.md"
    flags = ["--dev", "cpu", "--quick", "--only", "eager,producer,profile", "--budget-s", "300"]
    plan = dataclasses.replace(gpu_check.QUICK, shares=dict.fromkeys(gpu_check.QUICK.shares, 120))
    gpu_check.Check(gpu_check.parse([*flags, "--out", str(out)]), plan, tmp_path / "work").run()
    table = out.read_text()
    for heading in ("# GPU check", "## a. End to end", "## b. Speed", "## c. Frame producer", "## d. Profile"):
        assert heading in table
    for row in ("| GPU |", "| software |", "| CPU |", "| date |", "| commit |", "| command |", "| budget |"):
        assert row in table
    assert "pending" not in table and "not run" not in table
    eager = next(line for line in table.splitlines() if line.startswith("| eager |"))
    assert float(eager.split("|")[2]) > 0 and "ok (median of 2 records)" in eager
    assert table.count("left out (--only)") >= 3  # the resume check, --compile, and CUDA graphs
    producer = table.split("## c.")[1].split("## d.")[0]
    assert "| 1 |" in producer and "| 2 |" in producer  # numbers, or "not available" before --workers existed
    assert "Self CPU time total" in table.split("## d.")[1]  # torch.profiler's table


def test_the_gpu_checks_plan_fits_its_budget_in_the_order_of_what_matters_most():
    gpu_check = load("gpu_check")
    for plan in (gpu_check.Plan(), gpu_check.QUICK):
        names = [name for name, _ in plan.planned()]
        assert names[:5] == ["classifier", "resume", "eager", "cuda-graphs", "compile"] and names[-1] == "profile"
        assert sum(share for _, share in plan.planned()) <= plan.budget_s - gpu_check.MARGIN_S
    lines = gpu_check.plan_lines(gpu_check.Plan(), 420)
    assert [line.split()[1] for line in lines[1:-1]] == [name for name, _ in gpu_check.Plan().planned()]
    assert lines[-1] == "  planned 415 s of 415 s: fits"
    assert gpu_check.plan_lines(gpu_check.Plan(), 300)[-1].endswith("does not fit: the last steps get what is left")


def test_a_step_gets_its_share_and_what_the_steps_before_it_left_never_more_than_is_left(monkeypatch):
    gpu_check = load("gpu_check")
    clock = [100.0]
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: clock[0])
    budget = gpu_check.Budget(100, least=3)
    assert budget.timeout(30) == 30
    clock[0] += 10  # the first step used 10 s of its 30
    assert budget.timeout(20) == 40  # its own 20 and the first's unused 20
    clock[0] += 40  # the second used all of it
    assert budget.timeout(20) == 20
    short = gpu_check.Budget(60, least=3)  # a --budget-s smaller than the plan
    assert short.timeout(30) == 30
    clock[0] += 30
    assert short.timeout(30) == 25  # 60 - 30 used - 5 kept: no more than is left
    clock[0] += 25
    assert short.timeout(10) is None  # too little left to start


def test_the_slower_average_is_the_mean_of_the_kept_averages(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    benchmark = load("ema_batch_stats")
    kept = {
        "a.pt": {"generator_ema": {"weight": torch.tensor([1.0, 3.0]), "num_batches_tracked": torch.tensor(5)}},
        "b.pt": {"generator_ema": {"weight": torch.tensor([3.0, 7.0]), "num_batches_tracked": torch.tensor(9)}},
    }
    monkeypatch.setattr(benchmark, "load_checkpoint", lambda path: kept[str(path)])
    mean = benchmark.averaged_weights([Path("a.pt"), Path("b.pt")], "generator_ema")
    assert torch.equal(mean["weight"], torch.tensor([2.0, 5.0])) and mean["num_batches_tracked"].item() == 9


def test_the_fid_summary_reads_a_records_file_beside_run_directories_and_knows_their_statistics(tmp_path):
    import json

    fid_summary = load("fid_summary")
    run = tmp_path / "stable-s0"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"iteration": 500, "fid": 9.0, "fid_ema": 8.0}) + "\n")
    own = {"iteration": 500, "fid": 5.0, "fid_ema": 3.0, "fid_statistics": "own"}
    (run / "own_statistics.jsonl").write_text(json.dumps(own) + "\n")
    logged, reevaluated = fid_summary.evaluations(run), fid_summary.evaluations(run / "own_statistics.jsonl")
    assert logged[500]["fid_ema"] == 8.0 and reevaluated[500]["fid_ema"] == 3.0
    assert fid_summary.run_name(run / "own_statistics.jsonl") == "stable-s0 own_statistics"
    assert fid_summary.with_running_statistics(logged) and not fid_summary.with_running_statistics(reevaluated)


def test_a_branchs_curve_is_dashed_up_to_where_its_evaluation_changed_and_stays_joined():
    fid_summary = load("fid_summary")
    points = [(500, 9.0, "running"), (1000, 8.0, "running"), (1500, 3.0, "own"), (2000, 2.0, "own")]
    assert fid_summary.segments(points) == [points[:2], points[1:]]
    assert fid_summary.statistics_note(points) == " (running statistics to 1000)"
    assert fid_summary.statistics_note(points[2:]) == "" and fid_summary.segments(points[2:]) == [points[2:]]
    assert fid_summary.statistics_note(points[:2]) == " (running statistics)"
