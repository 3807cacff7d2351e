"""Exported models: what a finished classifier or regression run writes, and predictions from it.

    export/model.pt   {"model": name, "input_shape", "n_outputs", "hidden", "kind", "class_names", "state_dict", ...}
                      (tensors, numbers, strings and lists only: loads with torch.load(weights_only=True))
    export/model.ts   TorchScript (torch.jit.load, no Python class needed); not written for models it can't trace

    python scripts/predict.py runs/classify-<time> digit.png other.png --top-k 3
    python scripts/predict.py runs/regress-<time> --values 5.0 --values 12.5
    python scripts/predict.py --pretrained resnet101 dog.jpg --top-k 5

Inputs are raw: images are resized, converted and normalised, feature rows standardised, exactly as the model's
training data was (the export holds how). Only the export is read (``weights_only``): no training code's pickles.
With ``--pretrained MODEL`` the model is one of torchvision's ImageNet classifiers (resnet101 as in the book's
chapter 001, resnet18, ...) with its pretrained weights, preprocessing and 1000 category names; every positional is
an image. The weights come from torch hub's cache, a download into it, or ``--weights PATH`` (tasks/pretrained.py).
"""

import argparse
import copy
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from models.book_models import build_model, split_wide_deep
from runner.errors import UserError
from runner.files import load_torch_file, save_atomically
from runner.settings import OneLineParser, positive_int
from tasks import pretrained


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
    spec = load_torch_file(path, "exported model")
    missing = {"model", "input_shape", "n_outputs", "state_dict", "preprocessing"} - set(spec)
    if missing:
        raise UserError(f"{path}: not an export of this version (missing {', '.join(sorted(missing))}); retrain it")
    model = build_model(spec["model"], tuple(spec["input_shape"]), spec["n_outputs"], tuple(spec["hidden"]) or None)
    model.load_state_dict(spec["state_dict"])
    return SingleInput(model, spec["model"]).eval(), spec


def export_path(path: str) -> Path:
    candidate = Path(path)
    for option in (candidate, candidate / "export" / "model.pt", candidate / "model.pt"):
        if option.is_file():
            return option
    raise UserError(f"{path}: no exported model (a run directory with export/model.pt, or the file itself)")


def image_batch(paths: Sequence[str], image: dict[str, Any]) -> torch.Tensor:
    size = image["size"]
    prepare = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(image["mean"], image["std"]),
        ]
    )
    return prepared_images(paths, prepare, image["mode"])


def prepared_images(paths: Sequence[str], prepare: Callable[[Image.Image], torch.Tensor], mode: str) -> torch.Tensor:
    tensors = []
    for path in paths:
        try:
            tensors.append(prepare(Image.open(path).convert(mode)))
        except (OSError, UnidentifiedImageError) as error:
            raise UserError(f"{path}: not a readable image ({error})") from None
    return torch.stack(tensors)


def value_batch(rows: Sequence[str], spec: dict[str, Any]) -> torch.Tensor:
    width = int(torch.tensor(spec["input_shape"]).prod())
    try:
        values = torch.tensor([[float(v) for v in row.replace(",", " ").split()] for row in rows])
    except ValueError:
        raise UserError("--values takes numbers, e.g. --values 1.5,2,3") from None
    if values.shape[1] != width:
        raise UserError(f"--values: the model takes {width} numbers per row, got {values.shape[1]}")
    standardise = spec["preprocessing"].get("standardise")
    if standardise:
        values = (values - torch.tensor(standardise["mean"])) / torch.tensor(standardise["std"])
    return values.reshape(len(rows), *spec["input_shape"])


def describe(outputs: torch.Tensor, spec: dict[str, Any], top_k: int) -> list[str]:
    if spec["kind"] == "regression":
        return [f"{value:.6g}" for value in outputs.flatten().tolist()]
    names = spec["class_names"] or [str(i) for i in range(outputs.shape[1])]
    probabilities = outputs.softmax(dim=1)
    best = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    return [
        ", ".join(f"{names[index]} {p:.3f}" for p, index in zip(row_p.tolist(), row_i.tolist(), strict=True))
        for row_p, row_i in zip(best.values, best.indices, strict=True)
    ]


def predict_pretrained(args: argparse.Namespace) -> int:
    # With --pretrained there is no run directory: argparse put the first image in ``model``.
    images = [args.model, *args.images] if args.model is not None else []
    weights = pretrained.default_weights(args.pretrained)
    if args.values:
        raise UserError(f"--pretrained {args.pretrained} classifies images, not --values rows")
    if not images:
        raise UserError(f"--pretrained {args.pretrained}: give image files to classify")
    pretrained.check_weights_file(args.weights)
    # The images first: a mistyped file name is told before a download of hundreds of megabytes.
    inputs = prepared_images(images, weights.transforms(), "RGB")
    model = pretrained.pretrained_model(args.pretrained, weights, args.weights)
    spec = {"kind": "classification", "class_names": weights.meta["categories"]}
    print_predictions(model, inputs, images, spec, 5 if args.top_k is None else args.top_k)
    return 0


def print_predictions(
    model: torch.nn.Module, inputs: torch.Tensor, labels: Sequence[str], spec: dict[str, Any], top_k: int
) -> None:
    with torch.no_grad():
        outputs = model(inputs)
    for label, text in zip(labels, describe(outputs, spec, top_k), strict=True):
        print(f"{label}: {text}")


def main(argv: Sequence[str] | None = None, prog: str = "predict.py") -> int:
    parser = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a run directory or its export/model.pt (with --pretrained: an image)")
    parser.add_argument("images", nargs="*", help="image files to classify")
    parser.add_argument("--values", action="append", default=[], help="one row of features (repeatable)")
    parser.add_argument("--top-k", type=positive_int, help="classes shown per input (default: 3; 5 with --pretrained)")
    parser.add_argument(
        "--pretrained", metavar="MODEL", help="a torchvision ImageNet classifier (resnet101, resnet18, ...), no run"
    )
    parser.add_argument("--weights", metavar="PATH", help="with --pretrained: its state-dict file, not torch hub's")
    args = parser.parse_args(argv)
    if args.pretrained is not None:
        return predict_pretrained(args)
    if args.model is None:  # the message argparse gave while the run directory was a required positional
        parser.error("the following arguments are required: model")
    if args.weights is not None:
        raise UserError("--weights goes with --pretrained (an exported model holds its own weights)")
    model, spec = load_exported(export_path(args.model))
    if bool(args.images) == bool(args.values):
        raise UserError("give image files or --values rows (one kind of input)")
    if args.images:
        if "image" not in spec["preprocessing"]:
            raise UserError(f"this {spec['model']} model on {spec['dataset']} takes --values, not images")
        inputs, labels = image_batch(args.images, spec["preprocessing"]["image"]), args.images
    else:
        inputs, labels = value_batch(args.values, spec), args.values
    print_predictions(model, inputs, labels, spec, 3 if args.top_k is None else args.top_k)
    return 0
