"""ExactResume, the checkpoint files it writes and rotates, and the safe loading of a checkpoint to resume from."""

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import RunningAverage

from handlers.checkpoint import (
    ExactResume,
    RunDirSaver,
    checkpoint_files,
    find_checkpoint,
    load_checkpoint,
    output_is_finite,
    run_dir_of_checkpoint,
)
from runner.errors import UserError

DATA = list(range(20))
SETTINGS = {"lr": 0.1, "games": ["Pong"]}


def iteration_loss(engine: Engine, batch: int) -> dict[str, float]:
    """A loss that depends only on the iteration, so a resumed run must reproduce it whatever batch it sees."""
    return {"loss": float((engine.state.iteration * 7) % 5)}


def saved_iterations(directory: Path) -> list[int]:
    return [int(path.stem.split("_")[1]) for path in checkpoint_files(directory)]


class CountingSaver(RunDirSaver):
    """The runner's saver, recording the name of every file it writes."""

    def __init__(self, dirname: Path):
        super().__init__(dirname)
        self.written: list[str] = []

    def __call__(self, checkpoint, filename, metadata=None):
        self.written.append(filename)
        super().__call__(checkpoint, filename, metadata)


def count_saves(resume: ExactResume) -> list[str]:
    saver = CountingSaver(resume.directory)
    resume.checkpoint.save_handler = saver
    return saver.written


# --- saving and rotation --------------------------------------------------------------------------------------------


def test_saves_every_n_iterations_and_at_the_end(tmp_path):
    engine = Engine(iteration_loss)
    ExactResume({"trainer": engine}, tmp_path, every=3, settings=SETTINGS, n_saved=10).attach(engine)

    engine.run(DATA, max_iters=7)

    assert saved_iterations(tmp_path) == [3, 6, 7]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint_3.pt", "checkpoint_6.pt", "checkpoint_7.pt"]


def test_end_coinciding_with_a_periodic_save_writes_it_once(tmp_path):
    engine = Engine(iteration_loss)
    resume = ExactResume({"trainer": engine}, tmp_path, every=3, settings=SETTINGS, n_saved=10).attach(engine)
    written = count_saves(resume)

    engine.run(DATA, max_iters=6)

    assert written == ["checkpoint_3.pt", "checkpoint_6.pt"]
    assert saved_iterations(tmp_path) == [3, 6]
    assert resume.last_path == tmp_path / "checkpoint_6.pt"


def test_keeps_only_the_newest_n_saved_files(tmp_path):
    engine = Engine(iteration_loss)
    ExactResume({"trainer": engine}, tmp_path, every=2, settings=SETTINGS, n_saved=3).attach(engine)

    engine.run(DATA, max_iters=11)

    assert saved_iterations(tmp_path) == [8, 10, 11]


def test_resumed_exact_resume_rotates_away_the_first_runs_files(tmp_path):
    first = Engine(iteration_loss)
    ExactResume({"trainer": first}, tmp_path, every=2, settings=SETTINGS).attach(first)
    first.run(DATA, max_iters=7)
    assert saved_iterations(tmp_path) == [6, 7]

    resumed = Engine(iteration_loss)
    resume = ExactResume({"trainer": resumed}, tmp_path, every=2, settings=SETTINGS).attach(resumed)
    resume.load(load_checkpoint(tmp_path / "checkpoint_7.pt"))
    resumed.run(DATA, max_iters=12)

    assert resumed.state.iteration == 12
    assert saved_iterations(tmp_path) == [10, 12]


@pytest.mark.parametrize("n_saved", [1, 0])
def test_fewer_than_two_slots_is_refused(tmp_path, n_saved):
    with pytest.raises(ValueError, match="n_saved"):
        ExactResume({"trainer": Engine(iteration_loss)}, tmp_path, every=1, settings=SETTINGS, n_saved=n_saved)


def test_every_file_loads_with_weights_only_and_holds_everything_to_resume(tmp_path):
    engine = Engine(iteration_loss)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    average = RunningAverage(output_transform=lambda out: out["loss"])
    average.attach(engine, "avg_loss")
    to_save = {"trainer": engine, "model": model, "optimizer": optimizer, "avg_loss": average}
    ExactResume(to_save, tmp_path, every=2, settings=SETTINGS, n_saved=5).attach(engine)

    engine.run(DATA, max_iters=5)

    files = checkpoint_files(tmp_path)
    assert [path.name for path in files] == ["checkpoint_2.pt", "checkpoint_4.pt", "checkpoint_5.pt"]
    for path in files:
        checkpoint = torch.load(path, weights_only=True)
        assert {"trainer", "model", "optimizer", "avg_loss", "rng", "settings", "checkpointer"} <= set(checkpoint)
        assert checkpoint["settings"] == SETTINGS
    assert torch.load(files[-1], weights_only=True)["trainer"]["iteration"] == 5


def test_a_nan_output_skips_the_save_and_the_last_good_checkpoint_stays_newest(tmp_path):
    def loss_nan_from_four(engine, batch):
        return {"loss": math.nan if engine.state.iteration >= 4 else 1.0}

    engine = Engine(loss_nan_from_four)
    resume = ExactResume({"trainer": engine}, tmp_path, every=2, settings=SETTINGS, n_saved=5).attach(engine)

    engine.run(DATA, max_iters=6)

    assert saved_iterations(tmp_path) == [2]
    assert resume.last_path == tmp_path / "checkpoint_2.pt"


def test_a_nan_only_at_a_save_iteration_does_not_stop_later_saves(tmp_path):
    def loss_nan_at_four(engine, batch):
        return {"loss": math.inf if engine.state.iteration == 4 else 1.0}

    engine = Engine(loss_nan_at_four)
    ExactResume({"trainer": engine}, tmp_path, every=2, settings=SETTINGS, n_saved=5).attach(engine)

    engine.run(DATA, max_iters=6)

    assert saved_iterations(tmp_path) == [2, 6]


# --- exact resume ---------------------------------------------------------------------------------------------------


def build_run(directory: Path, process=iteration_loss):
    """Engine + RunningAverage (attached BEFORE ExactResume, as the runner does) + a record of every value."""
    engine = Engine(process)
    average = RunningAverage(output_transform=lambda out: out["loss"], alpha=0.5)
    average.attach(engine, "avg_loss")
    resume = ExactResume({"trainer": engine, "avg_loss": average}, directory, every=3, settings=SETTINGS)
    resume.attach(engine)
    seen: dict[int, tuple[float, float]] = {}

    @engine.on(Events.ITERATION_COMPLETED)
    def record(engine):
        seen[engine.state.iteration] = (engine.state.output["loss"], engine.state.metrics["avg_loss"])

    return engine, resume, seen


def interrupted_then_resumed(directory: Path, stop_at: int, max_iters: int, process=iteration_loss):
    engine, _, before = build_run(directory, process)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda engine: engine.terminate())
    engine.run(DATA, max_iters=max_iters)
    assert before and max(before) == stop_at

    _, checkpoint = find_checkpoint(directory)
    engine, resume, after = build_run(directory, process)
    resume.load(checkpoint)
    engine.run(DATA)
    return engine, after


def test_resumed_running_average_continues_instead_of_resetting(tmp_path):
    reference_engine, _, reference = build_run(tmp_path / "reference")
    reference_engine.run(DATA, max_iters=9)

    engine, after = interrupted_then_resumed(tmp_path / "interrupted", stop_at=3, max_iters=9)

    assert engine.state.iteration == 9
    assert sorted(after) == [4, 5, 6, 7, 8, 9]
    for iteration in range(4, 10):
        assert after[iteration][1] == pytest.approx(reference[iteration][1]), iteration
    # A reset average would start over from the first resumed loss: make sure the data can tell the difference.
    assert reference[4][1] != pytest.approx(reference[4][0])


def test_resumed_run_draws_the_same_random_numbers_as_an_uninterrupted_one(tmp_path):
    def random_loss(engine, batch):
        return {"loss": torch.rand(()).item()}

    torch.manual_seed(0)
    reference_engine, _, reference = build_run(tmp_path / "reference", random_loss)
    reference_engine.run(DATA, max_iters=6)

    torch.manual_seed(0)
    engine, _, before = build_run(tmp_path / "interrupted", random_loss)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda engine: engine.terminate())
    engine.run(DATA, max_iters=6)
    torch.manual_seed(12345)  # whatever the process did in between, the checkpoint restores the generator

    _, checkpoint = find_checkpoint(tmp_path / "interrupted")
    engine, resume, after = build_run(tmp_path / "interrupted", random_loss)
    resume.load(checkpoint)
    engine.run(DATA)

    assert [after[i][0] for i in range(4, 7)] == [reference[i][0] for i in range(4, 7)]


# --- the saver ------------------------------------------------------------------------------------------------------


def test_saver_remove_of_a_missing_file_does_not_raise_and_keeps_other_files(tmp_path):
    kept = tmp_path / "checkpoint_5.pt"
    kept.write_bytes(b"x")
    saver = RunDirSaver(tmp_path)

    saver.remove("checkpoint_3.pt")

    assert kept.read_bytes() == b"x"


def test_saver_accepts_a_folder_that_already_holds_checkpoints(tmp_path):
    (tmp_path / "checkpoint_5.pt").write_bytes(b"x")

    saver = RunDirSaver(tmp_path)
    saver({"a": torch.zeros(1)}, "checkpoint_6.pt")

    assert saved_iterations(tmp_path) == [5, 6]
    assert [path.name for path in tmp_path.iterdir() if not path.name.startswith("checkpoint_")] == []


# --- finding and loading a checkpoint -------------------------------------------------------------------------------


def make_run_dir(tmp_path: Path, max_iters: int = 6) -> Path:
    run = tmp_path / "run"
    engine = Engine(iteration_loss)
    ExactResume({"trainer": engine}, run / "checkpoints", every=2, settings=SETTINGS, n_saved=3).attach(engine)
    engine.run(DATA, max_iters=max_iters)
    return run


@pytest.mark.parametrize("where", ["run", "checkpoints"])
def test_find_checkpoint_picks_the_newest_of_a_run_dir_or_its_checkpoints_folder(tmp_path, where):
    run = make_run_dir(tmp_path)
    target = run if where == "run" else run / "checkpoints"

    path, checkpoint = find_checkpoint(target)

    assert path == run / "checkpoints" / "checkpoint_6.pt"
    assert checkpoint["trainer"]["iteration"] == 6


def test_find_checkpoint_of_a_file_loads_that_file(tmp_path):
    run = make_run_dir(tmp_path)

    path, checkpoint = find_checkpoint(run / "checkpoints" / "checkpoint_4.pt")

    assert path == run / "checkpoints" / "checkpoint_4.pt"
    assert checkpoint["trainer"]["iteration"] == 4


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_find_checkpoint_falls_back_to_an_older_file_when_the_newest_is_damaged(tmp_path, capsys, damage):
    run = make_run_dir(tmp_path)
    newest = run / "checkpoints" / "checkpoint_6.pt"
    content = newest.read_bytes()
    newest.write_bytes(
        {"truncated": content[: len(content) // 2], "garbage": b"not a checkpoint", "empty": b""}[damage]
    )

    path, checkpoint = find_checkpoint(run)

    assert path == run / "checkpoints" / "checkpoint_4.pt"
    assert checkpoint["trainer"]["iteration"] == 4
    err = capsys.readouterr().err
    assert "warning" in err
    assert "checkpoint_6.pt" in err


def test_find_checkpoint_when_no_file_is_readable_is_a_user_error(tmp_path, capsys):
    run = make_run_dir(tmp_path)
    for path in checkpoint_files(run / "checkpoints"):
        path.write_bytes(b"garbage")

    with pytest.raises(UserError, match="none of the 3 checkpoints"):
        find_checkpoint(run)


def test_find_checkpoint_of_a_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        find_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("layout", ["empty", "checkpoints_folder", "other_files"])
def test_find_checkpoint_of_a_dir_without_checkpoints_is_a_user_error(tmp_path, layout):
    if layout == "checkpoints_folder":
        (tmp_path / "checkpoints").mkdir()
    if layout == "other_files":
        (tmp_path / "model.pt").write_bytes(b"x")
        (tmp_path / "checkpoint_latest.pt").write_bytes(b"x")

    with pytest.raises(UserError, match=r"no checkpoint_<iteration>\.pt files"):
        find_checkpoint(tmp_path)


def test_find_checkpoint_of_a_garbage_file_is_a_user_error(tmp_path):
    garbage = tmp_path / "checkpoint_3.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a zip")

    with pytest.raises(UserError, match="not a readable checkpoint") as error:
        find_checkpoint(garbage)
    assert str(garbage) in str(error.value)


def test_every_truncation_of_a_runner_checkpoint_is_a_user_error(tmp_path):
    run = make_run_dir(tmp_path)
    content = (run / "checkpoints" / "checkpoint_6.pt").read_bytes()
    cut = tmp_path / "cut.pt"

    for length in range(0, len(content), 3):
        cut.write_bytes(content[:length])
        with pytest.raises(UserError, match="not a readable checkpoint"):
            load_checkpoint(cut)


def legacy_checkpoint_bytes(tmp_path: Path) -> bytes:
    """A runner-shaped checkpoint in torch's older (non-zip) format, which starts with a pickle."""
    path = tmp_path / "legacy.pt"
    torch.save({"settings": {}, "trainer": {"iteration": 1}}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


def test_load_checkpoint_reads_a_legacy_format_checkpoint(tmp_path):
    path = tmp_path / "checkpoint_1.pt"
    path.write_bytes(legacy_checkpoint_bytes(tmp_path))

    assert load_checkpoint(path)["trainer"] == {"iteration": 1}


def test_every_truncation_of_a_file_starting_like_a_pickle_is_a_user_error(tmp_path):
    content = legacy_checkpoint_bytes(tmp_path)
    cut = tmp_path / "cut.pt"

    failures = {}
    for length in range(len(content)):
        cut.write_bytes(content[:length])
        try:
            load_checkpoint(cut)
        except UserError:
            continue
        except Exception as error:  # anything else reaches the user as a traceback, and defeats find_checkpoint
            failures[length] = f"{type(error).__name__}: {error}"
        else:
            failures[length] = "loaded"
    assert failures == {}


def test_find_checkpoint_falls_back_past_a_one_byte_pickle_stub(tmp_path, capsys):
    run = make_run_dir(tmp_path)
    (run / "checkpoints" / "checkpoint_6.pt").write_bytes(b"\x80")  # the first byte of any pickle, then nothing

    path, _ = find_checkpoint(run)

    assert path == run / "checkpoints" / "checkpoint_4.pt"
    assert "checkpoint_6.pt" in capsys.readouterr().err


def test_load_checkpoint_refuses_a_torch_file_that_is_not_a_runner_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"a": 1}, path)

    with pytest.raises(UserError, match="not a checkpoint of this runner"):
        load_checkpoint(path)


def test_load_checkpoint_refuses_a_saved_tensor(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)

    with pytest.raises(UserError, match="not a checkpoint of this runner"):
        load_checkpoint(path)


class PlainObject:
    def __init__(self):
        self.settings = {}
        self.trainer = {}


def leave_marker(path: str) -> dict:
    Path(path).write_text("code ran")
    return {"settings": {}, "trainer": {}}


class CodeOnLoad:
    """Unpickling this calls ``leave_marker``: a full (unsafe) load would run it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (leave_marker, (self.marker,))


def test_load_checkpoint_refuses_a_pickled_python_object(tmp_path):
    path = tmp_path / "object.pt"
    torch.save(PlainObject(), path)

    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_load_checkpoint_never_executes_code_from_the_file(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint_1.pt"
    torch.save({"settings": {}, "trainer": CodeOnLoad(marker)}, path)

    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(UserError):
        find_checkpoint(tmp_path)
    assert not marker.exists()


# --- small helpers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "finite"),
    [
        (1.5, True),
        (0, True),
        (math.nan, False),
        (math.inf, False),
        (-math.inf, False),
        ({"loss_gen": 1.0, "loss_dis": 2.0}, True),
        ({"loss_gen": 1.0, "loss_dis": math.nan}, False),
        ({"outer": {"inner": math.inf}}, False),
        (torch.tensor([1.0, 2.0]), True),
        (torch.tensor([1.0, float("nan")]), False),
        (torch.tensor(float("-inf")), False),
        ({"loss": torch.tensor(float("nan"))}, False),
        (None, True),
        ("text", True),
    ],
)
def test_output_is_finite(output, finite):
    assert output_is_finite(output) is finite


def test_run_dir_of_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    elsewhere = tmp_path / "loose"
    elsewhere.mkdir()

    assert run_dir_of_checkpoint(run) == run
    assert run_dir_of_checkpoint(run / "checkpoints") == run
    assert run_dir_of_checkpoint(run / "checkpoints" / "checkpoint_5.pt") == run
    assert run_dir_of_checkpoint(elsewhere / "checkpoint_5.pt") == elsewhere


def test_checkpoint_files_sorts_by_iteration_number_not_by_name(tmp_path):
    for name in ["checkpoint_10.pt", "checkpoint_9.pt", "checkpoint_100.pt", "checkpoint_x.pt", "other_1.pt"]:
        (tmp_path / name).write_bytes(b"")

    assert [path.name for path in checkpoint_files(tmp_path)] == [
        "checkpoint_9.pt",
        "checkpoint_10.pt",
        "checkpoint_100.pt",
    ]
    assert checkpoint_files(tmp_path / "missing") == []
