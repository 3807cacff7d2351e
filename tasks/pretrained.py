"""Torchvision's ImageNet classifiers with their pretrained weights: the book's chapter 001 (a ResNet-101 names what
an image shows), behind ``predict.py --pretrained``.

    python scripts/predict.py --pretrained resnet101 dog.jpg --top-k 5
    python scripts/predict.py --pretrained resnet18 dog.jpg --weights resnet18-f37072fd.pth

The weights are torchvision's DEFAULT for the model. They are read from torch hub's cache
(``<torch.hub.get_dir()>/checkpoints/<the file of weights.url>``), downloaded there by torchvision when missing, or
read from the state-dict file given with ``--weights``; always with ``weights_only`` (tensors, no pickled code).
"""

import contextlib
import difflib
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision
from torchvision.models import WeightsEnum, get_model, get_model_weights, list_models

from runner.errors import UserError, say
from runner.files import load_torch_file

# Suggested when a misspelt name is close to none: the chapter's model, its Torch Hub example, two small ones.
WELL_KNOWN = ("resnet101", "resnet18", "mobilenet_v3_small", "vit_b_16")


def classifier_names() -> list[str]:
    # torchvision.models itself holds the ImageNet classifiers; detection, segmentation, video and quantized models
    # live in its sub-modules and predict other things than 1000 categories.
    return list_models(module=torchvision.models)


def default_weights(name: str) -> WeightsEnum:
    """The weights torchvision recommends for ``name`` (their ``transforms()`` and ``meta["categories"]`` too)."""
    names = classifier_names()
    if name not in names:
        close = difflib.get_close_matches(name.lower(), names, n=4, cutoff=0.6) or WELL_KNOWN
        raise UserError(
            f"--pretrained {name}: not a torchvision classification model (try {', '.join(close)}; "
            f"{len(names)} in all: torchvision.models.list_models())"
        )
    return get_model_weights(name).DEFAULT


def check_weights_file(path: str | None) -> None:
    """Refuse a missing ``--weights`` file before any image is read or any model built."""
    if path is not None and not Path(path).is_file():
        raise UserError(f"--weights {path}: no such file")


def hub_file(weights: WeightsEnum) -> Path:
    """Where torch hub keeps the weights' file: what a download writes and what an offline machine reads."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def pretrained_model(name: str, weights: WeightsEnum, weights_file: str | None) -> torch.nn.Module:
    """``name`` in eval mode with ``weights`` from ``weights_file``, else the hub cache, else a download."""
    cached = hub_file(weights)
    if weights_file is not None:
        source = f"--weights {weights_file}"
        state_dict = state_dict_from_file(weights_file, source)
    elif cached.is_file():
        source = str(cached)
        state_dict = state_dict_from_file(cached, source, "; delete it to download it again, or give --weights PATH")
    else:
        source = weights.url
        state_dict = downloaded_state_dict(name, weights)
    return built_with(name, weights, state_dict, source)


def state_dict_from_file(path: str | Path, source: str, hint: str = "") -> Any:
    return load_torch_file(path, "state dict", shown=source, hint=hint)


def downloaded_state_dict(name: str, weights: WeightsEnum) -> dict[str, Any]:
    """torchvision's download into the hub cache (hash-checked, written whole or not at all), then its load."""
    try:
        # torch hub announces the download on stdout, which holds only the predictions; and an offline machine's
        # answer is to be one line. The announcement is kept back, the place it names said once the file is there.
        with contextlib.redirect_stdout(io.StringIO()):
            state_dict = weights.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)
    except OSError as error:  # no network, a refused or missing URL, an unwritable cache folder
        reason = error.reason if isinstance(error, URLError) else error
        raise UserError(
            f"--pretrained {name}: cannot download {weights.url} ({reason}) and {hub_file(weights).parent} has no "
            f"copy: put {hub_file(weights).name} there, or give --weights PATH"
        ) from None
    except RuntimeError as error:
        if "invalid hash value" not in str(error):
            raise
        # The bytes changed on the way; torch hub kept none of them.
        raise UserError(f"--pretrained {name}: the download of {weights.url} is damaged ({error}); try again") from None
    say(f"downloaded {weights.url} to {hub_file(weights)}")
    return state_dict


def no_change(state_dict: dict[str, Any]) -> dict[str, Any]:
    return state_dict


def drop_googlenets_auxiliary_heads(model: torch.nn.Module) -> None:
    model.aux_logits, model.aux1, model.aux2 = False, None, None  # untrained heads, unused in eval mode


# DenseNet's published weights name a layer's parts "norm.1" and "conv.2", which module names no longer allow.
OLD_DENSE_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def renamed_dense_layer_keys(state_dict: dict[str, Any]) -> dict[str, Any]:
    return {OLD_DENSE_LAYER_KEY.sub(r"\1\2", key): value for key, value in state_dict.items()}


@dataclass(frozen=True)
class ForWeights:
    """What torchvision's builder of a model does when it is given weights, beyond ``num_classes``: the arguments
    it sets from them, the keys of older published files it renames, what it changes after loading."""

    arguments: Callable[[WeightsEnum], dict[str, Any]] = lambda weights: {}
    keys: Callable[[dict[str, Any]], dict[str, Any]] = no_change
    after_load: Callable[[torch.nn.Module], None] = lambda model: None


PRETRAINED_INPUT = {"transform_input": True, "aux_logits": True, "init_weights": False}

# By the start of the model's name. Read from torchvision 0.29's builders; tests/tasks/test_pretrained_table.py
# builds each against torchvision's own builder.
FOR_WEIGHTS: dict[str, ForWeights] = {
    "inception_v3": ForWeights(lambda weights: PRETRAINED_INPUT),
    "googlenet": ForWeights(lambda weights: PRETRAINED_INPUT, after_load=drop_googlenets_auxiliary_heads),
    "vit_": ForWeights(lambda weights: {"image_size": weights.meta["min_size"][0]}),
    "maxvit_": ForWeights(lambda weights: {"input_size": weights.meta["min_size"]}),
    "densenet": ForWeights(keys=renamed_dense_layer_keys),
    "vgg": ForWeights(lambda weights: {"init_weights": False}),
}


def for_weights(name: str) -> ForWeights:
    return next((entry for prefix, entry in FOR_WEIGHTS.items() if name.startswith(prefix)), ForWeights())


def built_with(name: str, weights: WeightsEnum, state_dict: Any, source: str) -> torch.nn.Module:
    """``name`` as torchvision's builder makes it for ``weights``, holding ``state_dict`` (read and checked here)."""
    if not isinstance(state_dict, Mapping) or not all(isinstance(key, str) for key in state_dict):
        raise UserError(f"{source}: not a state dict (a mapping of parameter names to tensors)")
    entry = for_weights(name)
    arguments = {"num_classes": len(weights.meta["categories"]), **entry.arguments(weights)}
    model = get_model(name, weights=None, **arguments)
    try:
        model.load_state_dict(entry.keys(dict(state_dict)))
    except RuntimeError as error:  # missing or unexpected keys, shapes that differ
        raise UserError(f"{source}: not the weights of {name} ({mismatch(error)})") from None
    entry.after_load(model)
    return model.eval()


def mismatch(error: RuntimeError) -> str:
    """load_state_dict's complaint, short: it names every key (hundreds) and every shape that differs."""
    details = [line.strip().rstrip(".") for line in str(error).splitlines()[1:] if line.strip()]
    parts = []
    for detail in details:
        keys = re.findall(r'"([^"]+)"', detail)
        if detail.startswith(("Missing key", "Unexpected key")) and keys:
            parts.append(f"{len(keys)} {detail.split()[0].lower()} key{'s' * (len(keys) > 1)}, e.g. {keys[0]}")
    sizes = [detail for detail in details if detail.startswith("size mismatch")]
    if sizes:
        parts.append(sizes[0] + (f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""))
    return "; ".join(parts) or str(error).splitlines()[0]
