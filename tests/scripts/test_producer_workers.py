"""``--producer-workers 2`` as a user runs it: frames from two processes, stopped, killed and resumed exactly."""

import os
import signal
from pathlib import Path

import pytest

from conftest import TINY, gone, losses, run_launcher, start_launcher, wait_for_iteration

WORKERS = [*TINY, "--seed", "1", "--log-every", "1", "--eval-every", "0", "--producer-workers", "2"]
ITERATIONS = range(1, 21)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("workers") / "U"
    result = run_launcher(*WORKERS, "--max-iters", "20", "--checkpoint-every", "10", "--output-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "2 producer processes" in result.stderr  # the run says where its frames come from
    return run_dir


def children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
    return children


def producers_of(pid: int) -> list[int]:
    """The launcher's producer processes."""
    return [child for child in children_of(pid) if "serve_batches" in cmdline(child)]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def resumed_to_the_uninterrupted_losses(run_dir: Path, uninterrupted: Path, *flags: str) -> bool:
    resumed = run_launcher("--resume", str(run_dir), *flags)
    assert resumed.returncode == 0, resumed.stderr
    return losses(run_dir, ITERATIONS) == losses(uninterrupted, ITERATIONS)


def started_to_8(run_dir: Path):
    """A 20-iteration run, checkpoints every 3, at iteration 8 or later: its process and its producers."""
    process = start_launcher(*WORKERS, "--max-iters", "20", "--checkpoint-every", "3", "--output-dir", str(run_dir))
    wait_for_iteration(run_dir, 8, process)
    return process, producers_of(process.pid)


def test_stopped_at_10_and_resumed_to_20_gives_the_uninterrupted_losses(uninterrupted, tmp_path):
    run_dir = tmp_path / "S"
    first = run_launcher(*WORKERS, "--max-iters", "10", "--checkpoint-every", "10", "--output-dir", str(run_dir))
    assert first.returncode == 0, first.stderr
    assert resumed_to_the_uninterrupted_losses(run_dir, uninterrupted, "--max-iters", "20")


def test_the_launcher_killed_takes_its_workers_and_the_resume_is_exact(uninterrupted, tmp_path):
    process, workers = started_to_8(tmp_path / "K")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert workers and gone(workers), "a producer outlived its training process"
    assert resumed_to_the_uninterrupted_losses(tmp_path / "K", uninterrupted)


def test_a_killed_worker_ends_the_run_in_one_line_and_the_resume_is_exact(uninterrupted, tmp_path):
    process, workers = started_to_8(tmp_path / "W")
    os.kill(max(workers), signal.SIGKILL)
    assert process.wait(timeout=60) == 1
    error = process.stderr.read().strip().splitlines()[-1]
    assert error.startswith("atari_gan.py: error: frame producer ") and " was killed by SIGKILL; " in error
    assert error.endswith(f"the run's checkpoints are kept: resume with --resume {tmp_path / 'W'}")
    assert gone([pid for pid in workers if pid != max(workers)]), "the other producer was left running"
    assert resumed_to_the_uninterrupted_losses(tmp_path / "W", uninterrupted)


def test_a_resume_that_would_change_the_frames_is_refused_in_one_line(uninterrupted):
    result = run_launcher("--resume", str(uninterrupted), "--max-iters", "25", "--producer-workers", "3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"atari_gan.py: error: {uninterrupted}/checkpoints/checkpoint_20.pt's frames come from 2 producer "
        "worker(s): --producer-workers 3 would change them; resume with --producer-workers 2 (or auto)"
    ]
