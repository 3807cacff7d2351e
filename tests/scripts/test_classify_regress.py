"""classify.py and regress.py as a user runs them (in-process through the launchers' own ``launch``)."""

import shutil
import subprocess
import sys

import optuna
import pytest
import torch

from conftest import REPO, damage_tensor_data
from handlers.metrics_log import read_records, records_by_iteration
from runner.cli import launch
from runner.errors import UserError
from tasks.predict import load_exported
from tasks.supervised import ClassifySettings, RegressSettings, train


def run(settings_cls, *argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        launch(settings_cls, train, prog="task.py", description="", argv=list(argv))
    return exit_info.value.code


def evaluations(run_dir, key):
    return [r[key] for r in read_records(run_dir / "metrics.jsonl") if key in r]


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("classify") / "C"
    assert run(ClassifySettings, "--max-epochs", "3", "--output-dir", str(run_dir)) == 0
    return run_dir


def test_classify_default_learns_digits_and_logs_val_accuracy_each_epoch(classified):
    accuracy = evaluations(classified, "val_accuracy")
    assert len(accuracy) == 3 and accuracy[-1] > accuracy[0] and accuracy[-1] > 0.85
    confusion = evaluations(classified, "val_confusion")[-1]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == 359  # every validation digit counted once
    best_iteration = max(
        records_by_iteration(classified / "metrics.jsonl").items(), key=lambda item: item[1].get("val_accuracy", -1)
    )[0]
    assert [p.name for p in classified.glob("checkpoints/best_*.pt")] == [f"best_{best_iteration}.pt"]


def test_two_epochs_straight_equal_one_then_resume_to_two(classified, tmp_path):
    straight = tmp_path / "straight"
    assert run(ClassifySettings, "--max-epochs", "2", "--output-dir", str(straight)) == 0
    halves = tmp_path / "halves"
    assert run(ClassifySettings, "--max-epochs", "1", "--output-dir", str(halves)) == 0
    assert run(ClassifySettings, "--resume", str(halves), "--max-epochs", "2") == 0
    assert evaluations(straight, "val_accuracy") == evaluations(halves, "val_accuracy")
    a, b = records_by_iteration(straight / "metrics.jsonl"), records_by_iteration(halves / "metrics.jsonl")
    # The losses the straight run logged (at its end: an epoch is 23 batches, fewer than --log-every), the halves
    # logged too; they also logged the first half's end (every run records its last iteration).
    straight_losses = {i: record["loss"] for i, record in a.items() if "loss" in record}
    assert straight_losses and straight_losses == {i: b[i].get("loss") for i in straight_losses}


def test_resume_is_exact_when_the_batches_fill_each_epoch(tmp_path):
    """800 training points in batches of 200: each epoch ends on a full batch (datasets/shuffle.py: why it matters)."""
    flags = ["--dataset", "linear", "--batch-size", "200", "--lr", "0.001", "--log-every", "1"]
    assert run(RegressSettings, *flags, "--max-epochs", "3", "--output-dir", str(tmp_path / "straight")) == 0
    assert run(RegressSettings, *flags, "--max-epochs", "1", "--output-dir", str(tmp_path / "halves")) == 0
    assert run(RegressSettings, "--resume", str(tmp_path / "halves"), "--max-epochs", "3") == 0
    straight, halves = evaluations(tmp_path / "straight", "loss"), evaluations(tmp_path / "halves", "loss")
    assert len(straight) == 12 and halves == straight


def test_exported_model_reloads_without_training_code_and_as_torchscript(classified):
    model, spec = load_exported(classified / "export" / "model.pt")
    assert spec["class_names"] == [str(i) for i in range(10)] and spec["model"] == "small_cnn"
    torch.load(classified / "export" / "model.pt", weights_only=True)
    scripted = torch.jit.load(str(classified / "export" / "model.ts"))
    inputs = torch.rand(5, *spec["input_shape"])
    with torch.no_grad():
        assert torch.allclose(model(inputs), scripted(inputs), atol=1e-6)


def test_regress_default_val_rmse_falls_and_learns_the_books_line(tmp_path):
    assert run(RegressSettings, "--max-epochs", "8", "--output-dir", str(tmp_path / "R")) == 0
    rmse = evaluations(tmp_path / "R", "val_rmse")
    assert len(rmse) == 8 and rmse[-1] < rmse[0]
    model, _ = load_exported(tmp_path / "R" / "export" / "model.pt")
    weight = next(model.parameters()).item()
    assert weight == pytest.approx(2.0, abs=0.25)  # y = 2x + 3 + noise


def test_wide_and_deep_with_auxiliary_output_trains_on_its_two_inputs(tmp_path):
    run_dir = tmp_path / "W"
    flags = ["--dataset", "diabetes", "--model", "wide_deep", "--optimizer", "adam", "--lr", "0.05"]
    assert run(RegressSettings, *flags, "--max-epochs", "3", "--output-dir", str(run_dir)) == 0
    rmse = evaluations(run_dir, "val_rmse")
    assert rmse[-1] < rmse[0]
    scripted = torch.jit.load(str(run_dir / "export" / "model.ts"))
    assert scripted(torch.zeros(2, 10)).shape == (2, 1)  # one tensor in, the main output out


@pytest.mark.parametrize(
    ("settings_cls", "argv", "message"),
    [
        (ClassifySettings, ["--model", "lenet"], "lenet needs input_shape (3, 32, 32)"),
        (ClassifySettings, ["--dataset", "diabetes"], "is a regression data set"),
        (ClassifySettings, ["--model", "linear"], "is a regression model"),
        (ClassifySettings, ["--dataset", "mnist", "--data-dir", "{tmp_path}/no-such-folder-here"], "--data-dir"),
        (ClassifySettings, ["--dataset", "imagenet"], "--dataset imagenet"),
        (RegressSettings, ["--optimizer", "adagrad"], "choose one of sgd, adam"),
        (RegressSettings, ["--lr-decay", "1.5"], "--lr-decay 1.5: must be in (0, 1]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(settings_cls, argv, message, tmp_path, capsys):
    argv = [arg.format(tmp_path=tmp_path) for arg in argv]  # an absolute path: nothing is created in the repo
    assert run(settings_cls, *argv, "--output-dir", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_classify_sweep_gives_a_maximizing_study_with_its_trials(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    command = [sys.executable, str(REPO / "scripts" / "sweep.py"), "classify", "--n-trials", "2", "--max-epochs", "2"]
    command += ["--storage", storage, "--study-name", "c", "--output-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="c", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials)
    assert all(sorted(t.intermediate_values) == [1, 2] for t in study.trials)  # reported per epoch


def test_predict_prints_top_k_labels_for_image_files(classified, tmp_path, capsys):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from tasks.predict import main as predict

    digits = load_digits()
    paths = []
    for index in range(3):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray((digits.images[index] / 16 * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    assert predict([str(classified), *paths, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for path, line in zip(paths, lines, strict=True):
        labels = line.removeprefix(f"{path}: ").split(", ")
        assert len(labels) == 2 and all(label.split()[0] in "0123456789" for label in labels)
        assert sum(float(label.split()[1]) for label in labels) <= 1.0 + 1e-6


def test_predict_standardises_raw_feature_rows_like_the_training_data(tmp_path, capsys):
    from tasks.predict import main as predict

    run_dir = tmp_path / "D"
    flags = ["--dataset", "diabetes", "--model", "mlp", "--optimizer", "adam", "--lr", "0.01", "--max-epochs", "30"]
    assert run(RegressSettings, *flags, "--output-dir", str(run_dir)) == 0
    from sklearn.datasets import load_diabetes

    features, targets = load_diabetes(return_X_y=True, scaled=False)
    rows = [",".join(map(str, features[i])) for i in range(40)]
    capsys.readouterr()  # the training run's report lines
    assert predict([str(run_dir), *sum((["--values", row] for row in rows), [])]) == 0
    predicted = [float(line.split(": ")[1]) for line in capsys.readouterr().out.splitlines()]
    errors = [abs(p - t) for p, t in zip(predicted, targets[:40], strict=True)]
    assert sum(errors) / len(errors) < 60  # raw rows, standardised by the export: errors as in training (MAE ~45)


def test_predict_refuses_mismatched_inputs_in_one_line(classified, tmp_path):
    from tasks.predict import main as predict

    with pytest.raises(UserError, match="takes 64 numbers per row"):
        predict([str(classified), "--values", "1,2,3"])
    with pytest.raises(UserError, match="no exported model"):
        predict([str(tmp_path)])
    with pytest.raises(UserError, match="not a readable image"):
        (tmp_path / "x.png").write_text("not an image")
        predict([str(classified), str(tmp_path / "x.png")])


def test_predict_refuses_an_export_whose_bytes_changed(classified, tmp_path):
    from tasks.predict import main as predict

    export = tmp_path / "model.pt"
    shutil.copy(classified / "export" / "model.pt", export)
    damage_tensor_data(export)
    with pytest.raises(UserError, match="model.pt is damaged"):
        predict([str(export), "--values", ",".join(["0"] * 64)])


def test_a_finished_run_resumed_again_reports_its_best_score_without_training(classified):
    from runner.checkpoint_files import find_checkpoint
    from runner.settings import make_settings

    settings = make_settings(
        ClassifySettings, {**ClassifySettings.recipe_defaults({}), "max_epochs": 3, "output_dir": str(classified)}
    )
    result = train(settings, find_checkpoint(classified))
    assert result.exit_code == 0 and result.epoch == 3
    assert result.best == max(evaluations(classified, "val_accuracy"))
