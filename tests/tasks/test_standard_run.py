"""The standard run with a toy task: what a new task gets by supplying only its parts.

A linear regression on 64 random points, trained epoch by epoch, is the smallest task that has every part a real one
has (data, a network, an optimizer, a shuffling generator, an evaluation with a score). The run's files, its hooks'
order, exact resume, "nothing to do" and the NaN exit are the standard run's, whatever the task.
"""

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from ignite.engine import create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Loss
from torch.utils.data import DataLoader, TensorDataset

from datasets.shuffle import shuffled_loader
from handlers.checkpoint import GeneratorState
from handlers.evaluation import PeriodicEvaluation
from handlers.metrics_log import read_records
from runner.checkpoint_files import checkpoint_files, find_checkpoint
from runner.settings import RunSettings, Schedule, keep_checkpoints_setting, make_settings, positive, setting
from tasks.parts import Attached, Parts, RunContext, Scoring
from tasks.standard_run import Task

POINTS, BATCH = 64, 16  # 4 iterations per epoch


@dataclass(frozen=True)
class ToySettings(RunSettings):
    max_epochs: int = setting(3, "total epochs", check=positive, resume="free")
    batch_size: int = setting(BATCH, "batch size", check=positive)
    lr: float = setting(0.05, "learning rate", check=positive)
    log_every: int = setting(1, "iterations between records", check=positive, resume="free")
    checkpoint_every: int = setting(1, "epochs between checkpoints", check=positive, resume="free")
    keep_checkpoints: int = keep_checkpoints_setting()

    @property
    def schedule(self) -> Schedule:
        return Schedule("epochs", self.max_epochs)


class Toy(Task):
    script = "toy.py"
    per_epoch = True
    scoring = Scoring("mse", higher_is_better=False)
    calls: list[str] = []  # the hooks in the order the standard run called them (class-wide: train() makes the task)

    def prepare(self, device: torch.device, resume: Any) -> TensorDataset:
        self.calls.append("prepare")
        x = torch.randn(POINTS, 3, generator=torch.Generator().manual_seed(1))
        return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1)

    def build(self, data: TensorDataset, device: torch.device) -> Parts:
        self.calls.append("build")
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.settings.lr)
        shuffle = torch.Generator().manual_seed(self.settings.seed)
        trainer = create_supervised_trainer(model, optimizer, torch.nn.MSELoss(), output_transform=as_output)
        loader = shuffled_loader(data, self.settings.batch_size, shuffle)
        to_save = {"model": model, "optimizer": optimizer, "shuffle": GeneratorState(shuffle)}
        return Parts(trainer, loader, to_save, built=model)

    def attach_handlers(self, context: RunContext) -> Attached:
        self.calls.append("attach_handlers")
        evaluator = create_supervised_evaluator(context.built, {"mse": Loss(torch.nn.MSELoss())})
        every_epoch = POINTS // self.settings.batch_size
        evaluation = PeriodicEvaluation(
            evaluator,
            DataLoader(context.data, POINTS),
            every_epoch,
            context.metrics_log,
            context.tb_logger,
            prefix="val_",
        )
        evaluation.attach(context.trainer)
        return Attached(evaluator)

    def loaded(self, resume: Any, context: RunContext) -> None:
        self.calls.append("loaded")

    def finish(self, context: RunContext) -> None:
        self.calls.append("finish")

    def finished_already(self, resume: Any, device: torch.device) -> None:
        self.calls.append("finished_already")

    def close(self, data: Any) -> None:
        self.calls.append("close")


def as_output(x, y, y_pred, loss) -> dict[str, float]:
    return {"loss": loss.item()}


def toy(output_dir, **overrides) -> ToySettings:
    return make_settings(ToySettings, {"output_dir": str(output_dir), **overrides})


def train(settings: ToySettings, resume: Any = None):
    Toy.calls = []
    return Toy.train(settings, resume)


def loss_records(run_dir) -> list[tuple[int, float]]:
    return [(r["iteration"], r["avg_loss"]) for r in read_records(run_dir / "metrics.jsonl") if "avg_loss" in r]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("toy") / "whole"
    result = train(toy(run_dir))
    return run_dir, result, list(Toy.calls)


def test_a_run_writes_its_config_metrics_and_checkpoints_and_reports_its_best_score(uninterrupted):
    run_dir, result, _ = uninterrupted
    assert (result.exit_code, result.iteration, result.epoch) == (0, 12, 3)
    assert (run_dir / "config.json").exists()
    assert [iteration for iteration, _ in loss_records(run_dir)] == list(range(1, 13))
    mse = [r["val_mse"] for r in read_records(run_dir / "metrics.jsonl") if "val_mse" in r]
    assert len(mse) == 3 and result.best == min(mse)  # the lower the better
    assert [path.name for path in checkpoint_files(run_dir / "checkpoints")] == ["checkpoint_8.pt", "checkpoint_12.pt"]


def test_the_hooks_run_in_the_standard_order(uninterrupted):
    assert uninterrupted[2] == ["prepare", "build", "attach_handlers", "finish", "close"]


def test_stopped_and_resumed_it_gives_the_uninterrupted_numbers(uninterrupted, tmp_path):
    whole, _, _ = uninterrupted
    first = train(toy(tmp_path / "R", max_epochs=1))
    assert (first.exit_code, first.iteration) == (0, 4)
    resumed = train(toy(tmp_path / "R", max_epochs=3), find_checkpoint(tmp_path / "R"))
    assert Toy.calls == ["prepare", "build", "attach_handlers", "loaded", "finish", "close"]
    assert (resumed.exit_code, resumed.iteration, resumed.best) == (0, 12, uninterrupted[1].best)
    assert loss_records(tmp_path / "R") == loss_records(whole)
    final = torch.load(whole / "checkpoints" / "checkpoint_12.pt", weights_only=True)["model"]
    again = torch.load(tmp_path / "R" / "checkpoints" / "checkpoint_12.pt", weights_only=True)["model"]
    assert all(torch.equal(final[name], again[name]) for name in final)


def test_a_finished_run_has_nothing_to_do_and_still_reports_its_best(uninterrupted, capsys):
    run_dir, result, _ = uninterrupted
    capsys.readouterr()
    before = sorted(path.name for path in run_dir.rglob("*"))
    again = train(toy(run_dir), find_checkpoint(run_dir))
    assert (again.exit_code, again.iteration, again.best) == (0, 12, result.best)
    assert Toy.calls == ["finished_already"]  # no data made, no run directory opened
    assert "nothing to do:" in capsys.readouterr().err
    assert sorted(path.name for path in run_dir.rglob("*")) == before


def test_a_diverged_loss_ends_with_exit_code_1_and_names_the_last_good_checkpoint(tmp_path, capsys):
    result = train(toy(tmp_path / "N", lr=1e6))
    assert result.exit_code == 1
    assert "finish" not in Toy.calls and Toy.calls[-1] == "close"
    err = capsys.readouterr().err
    assert "the loss became NaN or infinite" in err and "the last good checkpoint is" in err


def test_on_a_gpu_the_host_reads_the_steps_numbers_only_at_log_points():
    from runner.device import host_looks_every

    assert host_looks_every(torch.device("cuda", 0), 100) == 100  # the NaN guard and the bar: no sync per step
    assert host_looks_every(torch.device("cpu"), 100) == 1
