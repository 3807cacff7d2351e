"""Finding and reading a checkpoint to resume from: the newest readable one, safely, or one clear error."""

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from conftest import damage_tensor_data, tree_digest
from handlers.checkpoint import ExactResume
from runner.checkpoint_files import checkpoint_files, find_checkpoint, load_checkpoint, run_dir_of_checkpoint
from runner.errors import UserError
from runner.files import DamagedFile, verify_torch_file

DATA = list(range(20))
SETTINGS = {"lr": 0.1, "games": ["Pong"]}


def iteration_loss(engine: Engine, batch: int) -> dict[str, float]:
    return {"loss": float((engine.state.iteration * 7) % 5)}


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


def test_a_checkpoint_whose_bytes_changed_is_refused_though_torch_would_load_it(tmp_path):
    path = make_run_dir(tmp_path) / "checkpoints" / "checkpoint_6.pt"
    size = path.stat().st_size
    damage_tensor_data(path)
    assert path.stat().st_size == size
    torch.load(path, weights_only=True)  # torch alone does not notice
    with pytest.raises(DamagedFile, match=r"checkpoint_6.pt is damaged: the bytes of its entry .*/data/\d+ changed"):
        load_checkpoint(path)


def test_a_damaged_newest_checkpoint_is_skipped_with_a_line_naming_it(tmp_path, capsys):
    run = make_run_dir(tmp_path)
    damage_tensor_data(run / "checkpoints" / "checkpoint_6.pt")
    path, state = find_checkpoint(run)
    assert (path.name, state["trainer"]["iteration"]) == ("checkpoint_4.pt", 4)
    assert capsys.readouterr().err.startswith(f"warning: skipping {run / 'checkpoints' / 'checkpoint_6.pt'} is damaged")


def test_when_every_checkpoint_is_damaged_the_resume_is_one_error_and_nothing_changes(tmp_path):
    run = make_run_dir(tmp_path)
    for path in checkpoint_files(run / "checkpoints"):
        damage_tensor_data(path)
    before = tree_digest(run)
    with pytest.raises(UserError, match="none of the 3 checkpoints"):
        find_checkpoint(run)
    with pytest.raises(UserError, match="is damaged"):
        find_checkpoint(run / "checkpoints" / "checkpoint_4.pt")  # a file named explicitly: no fallback
    assert tree_digest(run) == before


def test_a_file_written_without_checksums_is_read_with_one_warning(tmp_path, capsys):
    import torch.utils.serialization

    save_config = torch.utils.serialization.config.save  # a config proxy: monkeypatch's undo would delete the field
    path = tmp_path / "unchecked.pt"
    save_config.compute_crc32 = False
    try:
        torch.save({"weights": torch.ones(64)}, path)
    finally:
        save_config.compute_crc32 = True
    verify_torch_file(path)
    verify_torch_file(path)
    assert capsys.readouterr().err.count(f"warning: {path} was written without checksums") == 1
