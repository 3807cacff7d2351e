"""A trained model, usable without the training code: weights + hyperparameters, and TorchScript.

export/model.pt   {"model": name, "input_shape", "n_outputs", "hidden", "kind", "class_names", "state_dict"}
                  (tensors, numbers, strings and lists only: loads with torch.load(weights_only=True))
export/model.ts   TorchScript (torch.jit.load, no Python class needed); not written for models it can't trace

model, spec = load_exported("runs/classify-.../export/model.pt")
"""

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from models.book_models import build_model, split_wide_deep
from runner.errors import UserError
from runner.files import save_atomically


def export_model(model: torch.nn.Module, settings: Any, data: Any, directory: Path, say: Callable[[str], None]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "model": settings.model,
        "input_shape": list(data.input_shape),
        "n_outputs": data.n_outputs,
        "hidden": list(settings.hidden_sizes or []),
        "kind": data.kind,
        "dataset": settings.dataset,
        "class_names": list(data.class_names) if data.class_names else None,
        "preprocessing": data.preprocessing,
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
    }
    save_atomically(spec, directory / "model.pt")
    try:
        example = torch.zeros(1, *data.input_shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice on every call
            # A CPU copy: the trained model stays where it is.
            scripted = torch.jit.trace(SingleInput(copy.deepcopy(model).cpu(), settings.model).eval(), example)
            scripted.save(str(directory / "model.ts"))
    except Exception as error:  # noqa: BLE001 (tracing fails in many ways; the state_dict export stands anyway)
        say(f"note: no TorchScript export ({type(error).__name__}: {str(error).splitlines()[0][:120]})")


class SingleInput(torch.nn.Module):
    """One tensor in, the main prediction out (Wide & Deep's two named inputs are cut inside)."""

    def __init__(self, model: torch.nn.Module, name: str):
        super().__init__()
        self.model = model
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "wide_deep":
            return self.model(**split_wide_deep(x))[0]
        return self.model(x)


def load_exported(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    try:
        spec = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (any unreadable file is the same mistake)
        raise UserError(f"{path}: not a readable exported model ({type(error).__name__})") from None
    missing = {"model", "input_shape", "n_outputs", "state_dict", "preprocessing"} - set(spec)
    if missing:
        raise UserError(f"{path}: not an export of this version (missing {', '.join(sorted(missing))}); retrain it")
    model = build_model(spec["model"], tuple(spec["input_shape"]), spec["n_outputs"], tuple(spec["hidden"]) or None)
    model.load_state_dict(spec["state_dict"])
    return SingleInput(model, spec["model"]).eval(), spec
