"""ExactResume and the checkpoint files it writes and rotates (finding and reading them: tests/runner)."""

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import RunningAverage

from handlers.checkpoint import ExactResume, RunDirSaver, output_is_finite
from runner.checkpoint_files import checkpoint_files, find_checkpoint, load_checkpoint

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
