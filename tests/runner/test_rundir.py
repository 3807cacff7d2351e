"""RunDirectory: one locked folder per run, never reused by a new run, cleaned of half-written files."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from runner.errors import UserError
from runner.rundir import RunDirectory, default_output_dir


@pytest.fixture
def opened():
    """Open run directories and close whatever a test leaves open."""
    runs: list[RunDirectory] = []

    def open_run(path, continuing=False) -> RunDirectory:
        run = RunDirectory.open(path, continuing=continuing)
        runs.append(run)
        return run

    yield open_run
    for run in runs:
        run.close()


def digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def make_existing_run(path: Path) -> None:
    (path / "checkpoints").mkdir(parents=True)
    (path / "samples").mkdir()
    (path / "config.json").write_text('{"lr": 0.1}\n')
    (path / "metrics.jsonl").write_text('{"iteration": 5}\n')
    (path / "checkpoints" / "checkpoint_5.pt").write_bytes(b"checkpoint bytes")
    (path / "checkpoints" / "tmpabc123").write_bytes(b"half a checkpoint")
    (path / "samples" / "fake_0000005.png").write_bytes(b"png")
    (path / "samples" / "x.png.tmp").write_bytes(b"half a png")


def test_open_creates_the_folder_and_its_paths(tmp_path, opened):
    run = opened(tmp_path / "runs" / "first", continuing=False)

    assert run.path.is_dir()
    assert run.config_path == tmp_path / "runs" / "first" / "config.json"
    assert run.metrics_path == run.path / "metrics.jsonl"
    assert run.checkpoints == run.path / "checkpoints"
    assert run.samples == run.path / "samples"
    assert not run.holds_run()


def test_an_empty_existing_folder_can_start_a_new_run(tmp_path, opened):
    (tmp_path / "run").mkdir()

    assert opened(tmp_path / "run", continuing=False).path == tmp_path / "run"


def test_a_new_run_is_refused_in_a_folder_holding_a_run_and_changes_nothing(tmp_path, opened):
    run_path = tmp_path / "run"
    make_existing_run(run_path)
    before = digest(run_path)

    with pytest.raises(UserError, match="already holds a run") as error:
        opened(run_path, continuing=False)

    assert "--resume" in str(error.value)
    after = digest(run_path)
    after.pop(".lock", None)
    assert after == before  # the leftovers of the other run included: it may still want them


@pytest.mark.parametrize("marker", ["config.json", "metrics.jsonl", "checkpoints"])
def test_any_trace_of_a_run_makes_the_folder_a_run(tmp_path, opened, marker):
    run_path = tmp_path / "run"
    run_path.mkdir()
    if marker == "checkpoints":
        (run_path / marker).mkdir()
    else:
        (run_path / marker).write_text("{}\n")

    with pytest.raises(UserError, match="already holds a run"):
        opened(run_path, continuing=False)


def test_a_refused_open_releases_its_lock(tmp_path, opened):
    make_existing_run(tmp_path / "run")
    with pytest.raises(UserError):
        opened(tmp_path / "run", continuing=False)

    assert opened(tmp_path / "run", continuing=True).holds_run()


def test_continuing_reopens_a_run_and_removes_only_half_written_files(tmp_path, opened):
    run_path = tmp_path / "run"
    make_existing_run(run_path)
    (run_path / "config.json.tmp").write_text("{")

    opened(run_path, continuing=True)

    assert not (run_path / "checkpoints" / "tmpabc123").exists()
    assert not (run_path / "samples" / "x.png.tmp").exists()
    assert not (run_path / "config.json.tmp").exists()
    assert (run_path / "checkpoints" / "checkpoint_5.pt").read_bytes() == b"checkpoint bytes"
    assert (run_path / "samples" / "fake_0000005.png").read_bytes() == b"png"
    assert (run_path / "config.json").read_text() == '{"lr": 0.1}\n'
    assert (run_path / "metrics.jsonl").read_text() == '{"iteration": 5}\n'


def test_a_second_open_while_the_first_is_open_is_refused_as_in_use(tmp_path, opened):
    first = opened(tmp_path / "run")

    with pytest.raises(UserError, match="in use"):
        opened(tmp_path / "run", continuing=True)
    with pytest.raises(UserError, match="in use"):
        opened(tmp_path / "run", continuing=False)

    first.close()
    assert opened(tmp_path / "run", continuing=True).path == tmp_path / "run"


def test_the_context_manager_releases_the_lock(tmp_path, opened):
    with RunDirectory.open(tmp_path / "run", continuing=False) as run:
        run.write_config({"lr": 0.1})

    assert opened(tmp_path / "run", continuing=True).holds_run()


def test_close_twice_is_harmless(tmp_path):
    run = RunDirectory.open(tmp_path / "run", continuing=False)
    run.close()
    run.close()

    reopened = RunDirectory.open(tmp_path / "run", continuing=True)
    reopened.close()
    assert reopened.path == tmp_path / "run"


def test_a_path_under_a_regular_file_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")

    with pytest.raises(UserError, match="cannot create output directory"):
        RunDirectory.open(tmp_path / "file" / "run", continuing=False)


def test_a_regular_file_as_the_run_path_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")

    with pytest.raises(UserError, match="file"):
        RunDirectory.open(tmp_path / "file", continuing=True)
    assert (tmp_path / "file").read_text() == "not a folder"


def test_write_config_writes_json_once_and_never_overwrites(tmp_path, opened):
    run = opened(tmp_path / "run")

    run.write_config({"lr": 0.1, "games": ["Pong"]})
    run.write_config({"lr": 0.5, "games": ["Breakout"]})

    assert json.loads(run.config_path.read_text()) == {"lr": 0.1, "games": ["Pong"]}
    assert sorted(path.name for path in run.path.iterdir()) == [".lock", "config.json"]


def test_default_output_dir_is_under_runs_and_names_the_task():
    path = Path(default_output_dir("atari_gan"))

    assert path.parent == Path("runs")
    assert path.name.startswith("atari_gan-")


def test_a_run_killed_while_its_forked_workers_live_on_can_be_reopened_at_once(tmp_path):
    """A data loader's workers are forked while the run directory is locked; a SIGKILL of the run leaves them alive
    for a while. They must not hold the run directory's lock: a resume right after the kill is no second process."""
    script = (
        "import os, sys, time\n"
        "from runner.rundir import RunDirectory\n"
        f"run = RunDirectory.open({str(tmp_path / 'run')!r}, continuing=False)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    orphan = int(parent.stdout.readline())
    try:
        with pytest.raises(UserError, match="in use"):
            RunDirectory.open(tmp_path / "run", continuing=True)  # the run itself holds it
        parent.kill()
        parent.wait()
        with RunDirectory.open(tmp_path / "run", continuing=True) as run:  # its worker lives on, without the lock
            assert run.path == tmp_path / "run"
    finally:
        parent.kill()
        os.kill(orphan, signal.SIGKILL)
