"""scripts/image_gan.py as a user runs it: train on a folder, resume exactly, generate a ranked sheet, bad input."""

import pytest
from PIL import Image

from conftest import REPO, run_launcher, tree_digest, write_images
from handlers.metrics_log import records_by_iteration
from runner.cli import dispatch, launch, launch_tool
from tasks.image_gan import GenerateSettings, ImageGanSettings, generate, train

SCRIPT = REPO / "scripts" / "image_gan.py"
TINY = ["--dev", "cpu", "--image-size", "24", "--filters", "4", "--latent-size", "8", "--batch-size", "4"]
TINY += ["--workers", "0", "--log-every", "1", "--checkpoint-every", "3", "--g-every", "2"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("faces"), 10, size=(30, 26))


def train_with(argv):
    """In-process through the launcher's own ``launch``; returns its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        launch(ImageGanSettings, train, "image_gan.py train", "", argv)
    return exit_info.value.code


def losses(run_dir):
    records = records_by_iteration(run_dir / "metrics.jsonl")
    return {i: (r["loss_dis"], r["loss_gen"]) for i, r in records.items() if "loss_dis" in r}


def test_train_then_generate_writes_the_best_images_as_a_sheet(faces, tmp_path):
    """The issue's acceptance commands (at a smaller size)."""
    flags = ["--data-dir", str(faces), *TINY, "--max-iters", "10", "--output-dir", str(tmp_path / "G")]
    trained = run_launcher("train", *flags, script=SCRIPT)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "G" / "samples" / "fake_0000010.png").exists()
    flags = ["--checkpoint", str(tmp_path / "G"), "--n", "8", "--candidates", "32", "--out", str(tmp_path / "best.png")]
    made = run_launcher("generate", *flags, script=SCRIPT)
    assert made.returncode == 0, made.stderr
    with Image.open(tmp_path / "best.png") as sheet:
        assert sheet.size[0] > 24 * 2  # a grid of several 24x24 images


def test_generate_keeps_the_images_the_discriminator_scores_highest(faces, tmp_path):
    assert train_with(["--data-dir", str(faces), *TINY, "--max-iters", "4", "--output-dir", str(tmp_path / "G")]) == 0
    few = generate(GenerateSettings(checkpoint=str(tmp_path / "G"), out=str(tmp_path / "a.png"), n=4, candidates=64))
    all_of_them = generate(
        GenerateSettings(checkpoint=str(tmp_path / "G"), out=str(tmp_path / "b.png"), n=64, candidates=64)
    )
    assert few.scores == all_of_them.scores[:4] == sorted(all_of_them.scores, reverse=True)[:4]


def test_stopped_and_resumed_it_logs_exactly_the_uninterrupted_losses(faces, tmp_path):
    """Across an epoch boundary (10 images, batches of 4: 2 per epoch) and with G trained every 2nd batch."""
    common = ["--data-dir", str(faces), *TINY]
    assert train_with([*common, "--max-iters", "9", "--output-dir", str(tmp_path / "whole")]) == 0
    assert train_with([*common, "--max-iters", "5", "--output-dir", str(tmp_path / "parts")]) == 0
    assert train_with(["--resume", str(tmp_path / "parts"), "--max-iters", "9"]) == 0
    whole, parts = losses(tmp_path / "whole"), losses(tmp_path / "parts")
    assert sorted(whole) == list(range(1, 10))
    assert parts == whole


BAD_TRAIN = {
    "no data dir": ([], "--data-dir is required"),
    "missing folder": (["--data-dir", "no/such/folder"], "--data-dir no/such/folder: no such folder"),
    "bad image size": (["--image-size", "40"], "--image-size 40: image_size must be a power of two >= 8 or 3 x"),
    "batch larger than the folder": (["--batch-size", "64"], "10 images are fewer than one batch of 64"),
    "zero g-every": (["--g-every", "0"], "--g-every 0: must be positive"),
}


@pytest.mark.parametrize("name", BAD_TRAIN)
def test_bad_training_input_is_one_line_and_exit_2(name, faces, tmp_path, capsys):
    args, message = BAD_TRAIN[name]
    data = [] if name in ("no data dir", "missing folder") else ["--data-dir", str(faces)]
    code = train_with([*data, *args, "--output-dir", str(tmp_path / "r")])
    stderr = capsys.readouterr().err
    assert code == 2
    assert message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "r").exists()


def test_an_unreadable_image_stops_training_with_one_line_naming_it(faces, tmp_path, capsys):
    folder = write_images(tmp_path / "faces", 4, nested=False)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    assert train_with(["--data-dir", str(folder), *TINY, "--batch-size", "5", "--output-dir", str(tmp_path / "r")]) == 2
    assert "broken.jpg: not a readable image" in capsys.readouterr().err


def test_bad_generate_input_is_one_line_and_changes_nothing(faces, tmp_path, capsys):
    launch_args = ["--data-dir", str(faces), *TINY, "--max-iters", "2", "--output-dir", str(tmp_path / "G")]
    assert train_with(launch_args) == 0
    before = tree_digest(tmp_path)
    capsys.readouterr()
    for args, message in (
        ([], "--checkpoint is required"),
        (["--checkpoint", str(tmp_path / "G"), "--n", "9", "--candidates", "8"], "--n 9 is more than --candidates 8"),
        (["--checkpoint", str(tmp_path / "nothing")], "no such file or directory"),
        (["--checkpoint", str(tmp_path / "G"), "--out", str(tmp_path / "x" / "a.png")], "does not exist"),
        (["--checkpoint", str(tmp_path / "G"), "--out", "sheet.jpg"], "give a .png file name"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            launch_tool(GenerateSettings, generate, "image_gan.py generate", "", args)
        stderr = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("argv", [[], ["fly"]])
def test_a_missing_or_unknown_command_is_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        dispatch({"train": print, "generate": print}, "image_gan.py", "", argv)
    assert exit_info.value.code == 2
    assert "choose one of: train, generate" in capsys.readouterr().err
