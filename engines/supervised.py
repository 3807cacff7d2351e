"""Supervised training and evaluation (the books' classifiers and regressions) on Ignite's own factories.

    trainer = create_supervised_trainer_for(model, optimizer, loss_fn, device)
    evaluator = create_supervised_evaluator_for(model, classification_metrics(loss_fn, 10), device)

A model with two named inputs (Wide & Deep) gets them through ``model_fn``; a model with an auxiliary output
returns ``(main, aux)``: its loss (``AuxiliaryLoss``) weighs both, and evaluation looks at the main output only.
"""

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, ConfusionMatrix, Loss, MeanAbsoluteError, MeanSquaredError, RootMeanSquaredError
from torch import nn

from engines.distributed import copy_buffers_from_rank_zero, mean_over_ranks


def call_model(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def main_output(output: Any) -> torch.Tensor:
    """The prediction of a model that may also return auxiliary outputs."""
    return output[0] if isinstance(output, tuple) else output


class AuxiliaryLoss(nn.Module):
    """``(1 - aux_weight) * loss(main) + aux_weight * loss(aux)`` (Hands-On ML ch. 10: 0.8 and 0.2)."""

    def __init__(self, loss: nn.Module, aux_weight: float):
        super().__init__()
        self.loss = loss
        self.aux_weight = aux_weight

    def forward(self, outputs: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        main, aux = outputs
        return (1 - self.aux_weight) * self.loss(main, target) + self.aux_weight * self.loss(aux, target)


def create_supervised_trainer_for(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device,
    model_fn: Callable[[nn.Module, Any], Any] = call_model,
) -> Engine:
    """Ignite's supervised trainer; ``state.output`` is ``{"loss": float}`` like every process function here (with
    several processes, the ranks' mean: all log, stop on NaN and decay the learning rate alike)."""
    return create_supervised_trainer(
        model,
        optimizer,
        loss_fn,
        device=device,
        non_blocking=device.type == "cuda",
        model_fn=model_fn,
        output_transform=lambda x, y, y_pred, loss: {"loss": mean_over_ranks(loss.detach()).item()},
    )


def create_supervised_evaluator_for(
    model: nn.Module,
    metrics: dict[str, Any],
    device: torch.device,
    model_fn: Callable[[nn.Module, Any], Any] = call_model,
) -> Engine:
    """Ignite's supervised evaluator (``eval()`` mode, ``no_grad``), scoring the main output only. With several
    processes each evaluates its share with rank 0's BatchNorm statistics; the metrics reduce over the ranks."""
    evaluator = create_supervised_evaluator(
        model,
        metrics=metrics,
        device=device,
        non_blocking=device.type == "cuda",
        model_fn=model_fn,
        model_transform=main_output,
    )
    evaluator.add_event_handler(Events.STARTED, lambda _: copy_buffers_from_rank_zero(model))
    return evaluator


def classification_metrics(loss_fn: nn.Module, n_classes: int) -> dict[str, Any]:
    return {"accuracy": Accuracy(), "loss": Loss(loss_fn), "confusion": ConfusionMatrix(n_classes)}


def regression_metrics() -> dict[str, Any]:
    """RMSE from the streamed squared error of the whole set (the mean of per-batch RMSEs would be wrong)."""
    return {"rmse": RootMeanSquaredError(), "mse": MeanSquaredError(), "mae": MeanAbsoluteError()}
