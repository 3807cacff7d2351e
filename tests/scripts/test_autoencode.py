"""autoencode.py as a user runs it: a real process at smoke size, its figures, its refusals."""

import pytest
from PIL import Image

from conftest import REPO, run_launcher
from handlers.metrics_log import read_records
from runner.cli import launch
from tasks.autoencode import AutoencodeSettings, train

SCRIPT = REPO / "scripts" / "autoencode.py"
# The book's model at smoke size (digits upscaled to 12x12 only, 4 and 2 channels, 8-d codes), 2 epochs of 24 batches.
TINY = ["--dev", "cpu", "--digits-size", "12", "--conv-widths", "4", "2", "--code-size", "8", "--lr", "0.05"]
TINY += ["--embed-points", "60"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The launched processes use one thread: on 2 cores shared with other jobs, idle OpenMP threads spinning for
    their turn make problems this small many times slower."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("autoencode") / "A"
    result = run_launcher(*TINY, "--max-epochs", "2", "--output-dir", str(run_dir), script=SCRIPT)
    assert result.returncode == 0, result.stderr
    return run_dir, result


def run_in_process(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        launch(AutoencodeSettings, train, prog="autoencode.py", description="", argv=list(argv))
    return exit_info.value.code


def test_a_run_logs_falling_val_loss_and_writes_figures_that_decode(launched):
    run_dir, result = launched
    assert "finished at epoch 2; best val_loss" in result.stderr
    losses = [record["val_loss"] for record in read_records(run_dir / "metrics.jsonl") if "val_loss" in record]
    assert len(losses) == 2 and losses[1] < losses[0]
    figures = ["reconstructions_0000024", "reconstructions_0000048", "tsne_0000048", "random_codes_0000048"]
    assert sorted(path.stem for path in (run_dir / "samples").glob("*.png")) == sorted(figures)
    for name in figures:
        with Image.open(run_dir / "samples" / f"{name}.png") as image:
            image.load()  # every pixel decodes
            assert image.format == "PNG" and min(image.size) > 12
    assert (run_dir / "codes.pt").exists() and (run_dir / "projector_config.pbtxt").exists()


def test_resuming_a_finished_run_has_nothing_to_do(launched, capsys):
    run_dir, _ = launched
    metrics = (run_dir / "metrics.jsonl").read_text()
    assert run_in_process("--resume", str(run_dir), "--max-epochs", "2") == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_text() == metrics


def test_a_bad_flag_is_one_line_and_exit_2_from_the_real_process(tmp_path):
    result = run_launcher(*TINY, "--kernel-size", "4", "--output-dir", str(tmp_path / "x"), script=SCRIPT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "autoencode.py: error: --kernel-size 4: must be a positive odd number "
        "(a 'same' padding keeps the image size only then)"
    ]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet"], "--dataset imagenet: choose one of digits, mnist, fashion_mnist"),
        (["--conv-widths", "4", "0"], "--conv-widths 4 0: sizes must be positive"),
        (["--code-size", "many"], "argument --code-size: invalid int value: 'many'"),
        (["--digits-size", "12", "--dataset", "mnist"], "--digits-size applies to --dataset digits only"),
        (["--resume", "no-such-run"], "--resume no-such-run: no such file or directory"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert run_in_process(*argv, "--output-dir", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_mnist_copy_is_one_line_naming_the_data_dir(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # the download cannot even create its folder here: no network is touched
    assert run_in_process("--dataset", "mnist", "--data-dir", str(not_a_folder), "--output-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoencode.py: error: --dataset mnist: mnist: no copy in") and "--data-dir" in err
    assert len(err.strip().splitlines()) == 1, err


def test_resume_refuses_a_flag_that_changes_the_model(launched, capsys):
    run_dir, _ = launched
    assert run_in_process("--resume", str(run_dir), "--code-size", "3") == 2
    err = capsys.readouterr().err
    assert "--code-size 3 conflicts with" in err and len(err.strip().splitlines()) == 1, err
