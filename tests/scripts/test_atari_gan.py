"""The launcher as a user runs it: real processes, real ALE games, tiny sizes."""

import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import LAUNCHER, TINY, losses, run_launcher, start_launcher, tree_digest, wait_for_iteration
from handlers.metrics_log import read_records, records_by_iteration
from runner.checkpoint_files import checkpoint_files
from runner.cli import launch
from tasks.atari_gan import AtariGanSettings, train

SEEDED = [*TINY, "--seed", "1", "--log-every", "1"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The issue's acceptance run at tiny sizes: 30 iterations, checkpoints at 15 and 30, a record every iteration."""
    run_dir = tmp_path_factory.mktemp("reference") / "A"
    result = run_launcher(*SEEDED, "--max-iters", "30", "--checkpoint-every", "15", "--output-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    (run_dir.parent / "stderr.txt").write_text(result.stderr)
    return run_dir


def test_a_bug_keeps_its_traceback_and_exit_adds_nothing_after_it(tmp_path):
    """A bug's traceback holds the emulators to the end: the fast exit must not leave them to leak reports."""
    script = tmp_path / "buggy_launcher.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(LAUNCHER.parents[1])!r})\n"
        "import handlers.metrics_log as metrics_log\n"
        "def broken(self, record):\n"
        "    raise RuntimeError('a bug in a handler')\n"
        "metrics_log.MetricsLog.write = broken\n"
        "from tasks.atari_gan import AtariGanSettings, train\n"
        "from runner.cli import launch\n"
        "launch(AtariGanSettings, train, prog='atari_gan.py', description='')\n"
    )
    result = run_launcher(*SEEDED, "--max-iters", "3", "--output-dir", str(tmp_path / "run"), script=script)
    assert result.returncode == 1
    assert result.stderr.rstrip().splitlines()[-1] == "RuntimeError: a bug in a handler"


def test_the_last_lines_are_the_report_and_exit_adds_nothing(reference_run):
    """The fast exit (runner.errors.exit_without_a_final_collection) still destroys the emulators: their bindings
    would report leaked objects after the report."""
    lines = (reference_run.parent / "stderr.txt").read_text().splitlines()
    assert lines[-3].startswith("finished at iteration 30; checkpoint ")
    assert lines[-2].startswith("  watch:    tensorboard") and lines[-1].startswith("  continue: python scripts/")


def test_run_writes_every_output_of_a_run_directory(reference_run):
    records = [r for r in read_records(reference_run / "metrics.jsonl") if "loss_gen" in r]
    assert [r["iteration"] for r in records] == list(range(1, 31))
    evaluations = [r for r in read_records(reference_run / "metrics.jsonl") if "fid" in r]
    assert [r["iteration"] for r in evaluations] == [30]  # --eval-every 1000: only the end-of-run evaluation
    assert evaluations[0]["fid"] > 0
    assert (reference_run / "checkpoints" / "best_fid_30.pt").exists()
    for key in ("loss_gen", "loss_dis", "avg_loss_gen", "avg_loss_dis", "iters_per_sec"):
        assert all(isinstance(r[key], float) for r in records), key
    assert (reference_run / "config.json").exists()
    assert [p.name for p in checkpoint_files(reference_run / "checkpoints")] == ["checkpoint_15.pt", "checkpoint_30.pt"]
    assert (reference_run / "samples" / "fake_0000030.png").exists()


def test_tensorboard_reader_finds_scalar_and_image_tags(reference_run):
    events = EventAccumulator(str(reference_run), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss_gen", "train/loss_dis", "train/avg_loss_gen", "train/avg_loss_dis"} <= set(tags["scalars"])
    assert {"fake", "real"} <= set(tags["images"])
    assert [event.step for event in events.Scalars("train/loss_gen")] == list(range(1, 31))


def test_every_checkpoint_loads_with_weights_only(reference_run):
    for path in checkpoint_files(reference_run / "checkpoints"):
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["settings"]["filters"] == 4
        assert checkpoint["trainer"]["iteration"] == int(path.stem.split("_")[1])


def test_stopped_at_15_and_resumed_to_30_logs_identical_losses(reference_run, tmp_path):
    run_dir = tmp_path / "B"
    first = run_launcher(*SEEDED, "--max-iters", "15", "--checkpoint-every", "15", "--output-dir", str(run_dir))
    assert first.returncode == 0, first.stderr
    resumed = run_launcher("--resume", str(run_dir), "--max-iters", "30")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run_dir, range(16, 31)) == losses(reference_run, range(16, 31))
    assert {"resumed_from": 15, "checkpoint": str(run_dir / "checkpoints" / "checkpoint_15.pt")} in read_records(
        run_dir / "metrics.jsonl"
    )


def test_killed_at_random_moments_and_resumed_ends_with_the_uninterrupted_numbers(reference_run, tmp_path):
    """SIGKILL twice at random points (checkpoints every 3 iterations, so some kills land mid-write), then finish."""
    run_dir = tmp_path / "K"
    chooser = random.Random(2026)
    args = [*SEEDED, "--max-iters", "30", "--checkpoint-every", "3", "--output-dir", str(run_dir)]
    for kill_after in (chooser.randint(4, 12), chooser.randint(16, 26)):
        process = start_launcher(*args)
        wait_for_iteration(run_dir, kill_after, process)
        time.sleep(chooser.uniform(0, 0.02))
        process.send_signal(signal.SIGKILL)
        process.wait()
        args = ["--resume", str(run_dir)]
    final = run_launcher(*args)
    assert final.returncode == 0, final.stderr
    assert losses(run_dir, range(1, 31)) == losses(reference_run, range(1, 31))


def test_ctrl_c_stops_at_an_iteration_boundary_with_a_checkpoint_there(reference_run, tmp_path):
    run_dir = tmp_path / "C"
    process = start_launcher(
        *SEEDED, "--max-iters", "100000", "--checkpoint-every", "1000", "--output-dir", str(run_dir)
    )
    wait_for_iteration(run_dir, 5, process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    last_logged = max(records_by_iteration(run_dir / "metrics.jsonl"))
    newest = checkpoint_files(run_dir / "checkpoints")[-1]
    assert newest.name == f"checkpoint_{last_logged}.pt"
    resumed = run_launcher("--resume", str(run_dir), "--max-iters", "30")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run_dir, range(1, 31)) == losses(reference_run, range(1, 31))


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    run_dir = tmp_path / "L"
    process = start_launcher(*SEEDED, "--max-iters", "100000", "--checkpoint-every", "1", "--output-dir", str(run_dir))
    try:
        wait_for_iteration(run_dir, 2, process)
        for second_args in (["--resume", str(run_dir)], [*TINY, "--output-dir", str(run_dir)]):
            second = run_launcher(*second_args)
            assert second.returncode == 2
            assert "in use by another running process" in second.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_resuming_a_finished_run_does_nothing_and_changes_nothing(reference_run):
    before = tree_digest(reference_run)
    result = run_launcher("--resume", str(reference_run), "--max-iters", "30")
    assert result.returncode == 0
    assert "nothing to do" in result.stderr
    assert tree_digest(reference_run) == before


def corrupt_copy(reference_run: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00not a checkpoint" * 10)
    return broken


BAD_INPUTS = {
    "unknown game": (["--games", "Brekout"], "unknown Atari game 'Brekout' (did you mean Breakout?)"),
    "zero batch size": (["--batch-size", "0"], "--batch-size 0: must be positive"),
    "negative lr": (["--lr", "-0.1"], "--lr -0.1: must be positive"),
    "zero filters": (["--filters", "0"], "--filters 0: must be positive"),
    "odd image size": (["--image-size", "48"], "power of two"),
    "non-number": (["--max-iters", "ten"], "invalid int value"),
    "missing resume path": (["--resume", "no/such/run"], "--resume no/such/run: no such file or directory"),
    "unknown precision": (["--precision", "fp8"], "--precision fp8: must be one of auto, bf16, fp16, fp32"),
    "fp16 on the CPU": (["--precision", "fp16"], "--precision fp16 needs a CUDA device"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(name, tmp_path, capsys):
    """In-process through the launcher's own ``launch`` (same path as the script, without 3 s of start-up each)."""
    args, message = BAD_INPUTS[name]
    with pytest.raises(SystemExit) as exit_info:
        launch(
            AtariGanSettings,
            train,
            prog="atari_gan.py",
            description="",
            argv=[*args, "--output-dir", str(tmp_path / "r")],
        )
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "r").exists()


def test_bad_input_from_the_real_script_has_no_traceback(tmp_path):
    result = run_launcher("--games", "Pong", "Brekout", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert (
        result.stderr
        == "atari_gan.py: error: --games Pong Brekout: unknown Atari game 'Brekout' (did you mean Breakout?)\n"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_in_one_line(tmp_path):
    result = run_launcher("--dev", "cuda", "--max-iters", "1", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if "CUDA is not available" in line
    ]


def assert_refused_without_changes(run_dir: Path, args: list[str], message: str) -> None:
    before = tree_digest(run_dir)
    result = run_launcher(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tree_digest(run_dir) == before


def test_existing_run_directory_is_never_overwritten_by_a_new_run(reference_run):
    assert_refused_without_changes(
        reference_run, [*SEEDED, "--max-iters", "5", "--output-dir", str(reference_run)], "already holds a run"
    )


def test_checkpoint_of_an_incompatible_configuration_is_refused(reference_run):
    assert_refused_without_changes(
        reference_run, ["--resume", str(reference_run), "--filters", "8", "--max-iters", "40"], "conflicts with"
    )


def test_corrupt_checkpoint_file_is_refused(reference_run, tmp_path):
    broken = corrupt_copy(reference_run, tmp_path)
    assert_refused_without_changes(reference_run, ["--resume", str(broken)], "is not a readable checkpoint")


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(reference_run, tmp_path):
    run_dir = tmp_path / "T"
    shutil.copytree(reference_run, run_dir)
    newest = run_dir / "checkpoints" / "checkpoint_30.pt"
    newest.write_bytes(newest.read_bytes()[:5000])
    result = run_launcher("--resume", str(run_dir), "--max-iters", "30")
    assert result.returncode == 0, result.stderr
    assert "warning: skipping" in result.stderr and "checkpoint_15.pt" in (run_dir / "metrics.jsonl").read_text()
    assert losses(run_dir, range(16, 31)) == losses(reference_run, range(16, 31))


def test_output_directory_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = run_launcher(*TINY, "--max-iters", "1", "--output-dir", str(blocker / "run"))
    assert result.returncode == 2
    assert "cannot create output directory" in result.stderr
    assert blocker.read_text() == "a file, not a folder"
