"""Running averages of a process function's outputs and their TensorBoard scalars: what every task reports.

averages = attach_running_averages(trainer, ["loss_gen", "loss_dis"])   # metrics avg_loss_gen, avg_loss_dis
tb_logger = attach_tensorboard(trainer, run_dir, every=100, resumed_at=None)
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from ignite.metrics import RunningAverage


def attach_running_averages(
    engine: Engine, output_keys: Sequence[str], device: torch.device | str = "cpu"
) -> dict[str, RunningAverage]:
    """One ``RunningAverage`` per output key, attached as metric ``avg_<key>``; returned so they can be checkpointed.
    Outputs that are tensors on ``device`` are averaged there, without a copy to the host."""
    averages = {}
    for key in output_keys:
        average = RunningAverage(output_transform=lambda output, key=key: output[key], device=device)
        average.attach(engine, f"avg_{key}")
        averages[f"avg_{key}"] = average
    return averages


def attach_tensorboard(engine: Engine, log_dir: Path, every: int, resumed_at: int | None) -> TensorboardLogger:
    """Scalars ``train/<output key>`` and ``train/<metric>`` every ``every`` iterations, written into ``log_dir``.

    On resume, ``purge_step`` makes TensorBoard hide what the interrupted run logged after its checkpoint.
    """
    logger = TensorboardLogger(log_dir=str(log_dir), purge_step=None if resumed_at is None else resumed_at + 1)
    logger.attach_output_handler(
        engine,
        event_name=Events.ITERATION_COMPLETED(every=every),
        tag="train",
        output_transform=lambda output: output,
        metric_names="all",
    )
    return logger
