"""Atomic, rotating checkpoints of everything a run needs to continue exactly, and the resume itself.

Built on Ignite's ``Checkpoint`` and ``DiskSaver``, with their traps handled:

- the saver never requires an empty folder (a resumed run writes into its own), writes atomically and durably
  (``runner.files``: temp file, fsync, rename: a process killed at any instant, or a disk that fills up, leaves the
  previous checkpoint whole) and tolerates a rotated-out file that is already gone;
- ``include_self=True``, so a resumed run knows the files it must rotate out;
- ``n_saved >= 2``: ``Checkpoint`` removes the oldest file *before* writing the new one, so with one slot a kill in
  between would leave none;
- metrics such as ``RunningAverage`` reset themselves on ``Events.STARTED``, which fires again on resume: their saved
  state is re-applied after that reset;
- a checkpoint holds only tensors, numbers, strings, lists and dicts and is read with ``weights_only=True``
  (``runner.checkpoint_files``, which finds and reads them);
- with several processes every rank takes part in a save (each contributes its own RNG and data-stream state, see
  ``runner.distributed.PerRank``) and rank 0 writes the file.
"""

import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, EarlyStopping
from ignite.metrics import Metric

from handlers.collapse import CollapseWatch
from runner.distributed import agree, per_rank
from runner.errors import CannotWrite
from runner.files import save_atomically
from runner.rng import CPU, GlobalRNG


class RunDirSaver(DiskSaver):
    """``DiskSaver`` for a run's own ``checkpoints/`` folder: atomic, reusable, tolerant of missing files."""

    def __init__(self, dirname: str | Path):
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        # DiskSaver's atomic write neither fsyncs nor keeps the disk's reason when torch's writer fails.
        if idist.get_rank() == self.save_on_rank:
            save_atomically(checkpoint, self.dirname / filename)

    def remove(self, filename: str) -> None:
        # After a resume from an older checkpoint its list can name a file a crash never finished.
        if idist.get_rank() == self.save_on_rank:
            (self.dirname / filename).unlink(missing_ok=True)


class GeneratorState:
    """A ``torch.Generator`` (e.g. a DataLoader's shuffling) as an object a checkpoint can hold."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["state"])


class SettingsRecord:
    """The run's resolved settings, stored inside every checkpoint (loading it changes nothing)."""

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = dict(settings)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass  # compatibility is checked before loading, by runner.settings.from_saved


def output_is_finite(output: Any) -> bool:
    """True when every number in a process function's output (a float or a dict of floats) is finite."""
    if isinstance(output, Mapping):
        return all(output_is_finite(value) for value in output.values())
    if isinstance(output, torch.Tensor):
        return bool(torch.isfinite(output).all())
    if isinstance(output, int | float):
        return math.isfinite(output)
    return True


class ExactResume:
    """Periodic and end-of-run checkpoints, and the restore that makes a resumed run continue exactly.

    ``to_save`` maps names to objects with ``state_dict``/``load_state_dict``: the engine, models, optimizers,
    metrics, the data stream. The global RNGs and the settings are added here.

        resume = ExactResume({"trainer": trainer, "generator": g, ...}, run.checkpoints, every=1000, settings=cfg)
        resume.attach(trainer)  # attach after the metrics: their saved state is re-applied after they reset
        if checkpoint is not None:
            resume.load(checkpoint)
        trainer.run(stream, max_iters=...)
    """

    def __init__(
        self,
        to_save: Mapping[str, Any],
        directory: Path,
        every: int,
        settings: Mapping[str, Any],
        n_saved: int = 2,
        per_epoch: bool = False,
        optional: Collection[str] = (),
        device: torch.device = CPU,
    ):
        """``per_epoch``: save every ``every`` epochs, and at the end only on an epoch boundary (an epoch-based task
        restarts its data loader at each epoch, so only a state between epochs can be continued exactly).
        ``optional``: names a checkpoint may lack (e.g. a GradScaler when resuming a bf16 run in fp16); they keep
        their fresh state. ``device``: the run's, whose CUDA generator the checkpoint holds."""
        if n_saved < 2:
            raise ValueError("n_saved must be >= 2: a kill during rotation must leave a whole checkpoint")
        self.to_save = {**to_save, "rng": per_rank(GlobalRNG(device)), "settings": SettingsRecord(settings)}
        self.directory = Path(directory)
        self.every = every
        self.per_epoch = per_epoch
        self.checkpoint = Checkpoint(
            self.to_save,
            RunDirSaver(self.directory),
            n_saved=n_saved,
            include_self=True,
            global_step_transform=lambda engine, _: engine.state.iteration,
        )
        self._metric_states: dict[str, Any] = {}
        self.optional = set(optional)
        self._saved_iteration = 0  # the iteration of the newest checkpoint, written or loaded

    def attach(self, engine: Engine) -> "ExactResume":
        engine.add_event_handler(Events.STARTED, self._reapply_metric_states)
        periodic = Events.EPOCH_COMPLETED if self.per_epoch else Events.ITERATION_COMPLETED
        engine.add_event_handler(periodic(every=self.every), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)
        return self

    @property
    def last_path(self) -> Path | None:
        last = self.checkpoint.last_checkpoint
        return None if last is None else self.directory / Path(last).name

    def save(self, engine: Engine) -> None:
        """Save now, unless this iteration is saved already or its output is NaN/Inf (keep the last good one)."""
        iteration = engine.state.iteration
        if iteration in (0, self._saved_iteration) or not output_is_finite(engine.state.output):
            return
        if self.per_epoch and iteration % engine.state.epoch_length:
            return  # stopped inside an epoch: the last epoch-end checkpoint is the one to resume from
        previous, error = self.last_path, None
        try:
            self.checkpoint(engine)
        except CannotWrite as failed:
            kept = f"the last complete checkpoint is {previous}" if previous else "no checkpoint was written yet"
            error = CannotWrite(f"{failed}; {kept}")
        agree(error)  # with several processes only rank 0 writes: all stop if it could not
        self._saved_iteration = iteration

    def load(self, checkpoint: Mapping[str, Any]) -> None:
        # A best-score checkpointer, early stopping or collapse watch that the checkpoint lacks was turned on at this
        # resume (--eval-every, --patience, --collapse-factor): it starts fresh.
        judging = Checkpoint | EarlyStopping | CollapseWatch
        judges = {name for name, obj in self.to_save.items() if isinstance(obj, judging)}
        optional = self.optional | judges
        objects = {name: obj for name, obj in self.to_save.items() if name in checkpoint or name not in optional}
        Checkpoint.load_objects({**objects, "checkpointer": self.checkpoint}, dict(checkpoint))
        self._saved_iteration = int(checkpoint["trainer"]["iteration"])
        self._metric_states = {name: checkpoint[name] for name, obj in self.to_save.items() if isinstance(obj, Metric)}

    def _reapply_metric_states(self, _: Engine) -> None:
        for name, state in self._metric_states.items():
            self.to_save[name].load_state_dict(state)
        self._metric_states = {}
