"""Faults a long run meets: a disk that fills up, writes the kernel refuses. The run stops with one line, the last
complete checkpoint stays whole, and a resume continues exactly (kills, torn checkpoints, NaN and a second process
are tested with the launchers: tests/scripts/test_atari_gan.py, tests/runner/test_distributed.py)."""

import errno
import io
import resource
import signal
import subprocess
import sys

import pytest

import runner.files
import tasks.atari_gan as task
from conftest import LAUNCHER, REPO, TINY
from handlers.metrics_log import records_by_iteration
from runner.checkpoint_files import ResumePoint, checkpoint_files, load_checkpoint
from runner.errors import CannotWrite
from runner.rundir import RunDirectory


class FullDiskFile(io.FileIO):
    """A file on a disk that has no room left: every write fails as the kernel says it."""

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_at_a_checkpoint_stops_in_one_line_and_keeps_the_previous_one(tmp_path, tiny_settings, monkeypatch):
    reference = tiny_settings(tmp_path / "reference", max_iters=15, checkpoint_every=5)
    assert task.train(reference).exit_code == 0
    real_open = open

    def open_on_a_filling_disk(path, mode="r", *args, **kwargs):
        if "checkpoint_10.pt" in str(path) and "w" in mode:
            return FullDiskFile(path, mode)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runner.files, "open", open_on_a_filling_disk, raising=False)
    run_dir = tmp_path / "run"
    settings = tiny_settings(run_dir, max_iters=15, checkpoint_every=5)
    with pytest.raises(CannotWrite) as raised:
        task.train(settings)
    message = str(raised.value)
    assert "checkpoint_10.pt: No space left on device" in message
    assert message.endswith(f"the last complete checkpoint is {run_dir / 'checkpoints' / 'checkpoint_5.pt'}")
    assert [path.name for path in checkpoint_files(run_dir / "checkpoints")] == ["checkpoint_5.pt"]
    assert not list(run_dir.rglob("*.tmp"))  # the half-written file is gone
    load_checkpoint(run_dir / "checkpoints" / "checkpoint_5.pt")  # whole

    monkeypatch.undo()  # room again: the run continues from iteration 5 and ends as if nothing happened
    checkpoint = run_dir / "checkpoints" / "checkpoint_5.pt"
    resumed = task.train(settings, ResumePoint(checkpoint, load_checkpoint(checkpoint)))
    assert resumed.exit_code == 0
    keys = ("loss_gen", "loss_dis", "avg_loss_gen")
    ours, theirs = (records_by_iteration(d / "metrics.jsonl") for d in (run_dir, tmp_path / "reference"))
    assert [[ours[i][k] for k in keys] for i in range(1, 16)] == [[theirs[i][k] for k in keys] for i in range(1, 16)]


def refuse_writes_beyond(size: int):
    """For a child process: the kernel refuses to grow any file past ``size`` bytes (EFBIG, as a full disk's
    ENOSPC: the write fails, the process goes on)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_writes_the_kernel_refuses_end_the_real_launcher_with_one_line_and_no_traceback(tmp_path):
    run_dir = tmp_path / "small"
    args = [*TINY, "--max-iters", "20", "--checkpoint-every", "5", "--eval-every", "0", "--log-every", "1"]
    args += ["--output-dir", str(run_dir)]
    command = [sys.executable, str(LAUNCHER), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=REPO, preexec_fn=refuse_writes_beyond(40_000)
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"atari_gan.py: error: cannot write {run_dir}/checkpoints/checkpoint_5.pt: File too large; "
        "no checkpoint was written yet"
    ]
    assert "Traceback" not in result.stderr
    assert (run_dir / "config.json").exists() and not list(run_dir.rglob("*.tmp"))
    assert max(records_by_iteration(run_dir / "metrics.jsonl")) == 5


def test_a_run_directory_that_cannot_take_a_file_is_one_line(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / ".lock").mkdir()  # a folder where the lock file must go: opening it fails
    with pytest.raises(Exception, match="cannot write to output directory"):
        RunDirectory.open(run_dir, continuing=False)
