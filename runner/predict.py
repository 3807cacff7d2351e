"""Use an exported model: labels and probabilities (top-k) for image files, or a value for rows of features.

    python scripts/predict.py runs/classify-<time> digit.png other.png --top-k 3
    python scripts/predict.py runs/regress-<time> --values 5.0 --values 12.5

Inputs are raw: images are resized, converted and normalised, feature rows standardised, exactly as the model's
training data was (the export holds how). Only the export is read (``weights_only``): no training code's pickles.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from runner.errors import UserError
from runner.export import load_exported
from runner.settings import OneLineParser


def export_path(path: str) -> Path:
    candidate = Path(path)
    for option in (candidate, candidate / "export" / "model.pt", candidate / "model.pt"):
        if option.is_file():
            return option
    raise UserError(f"{path}: no exported model (a run directory with export/model.pt, or the file itself)")


def image_batch(paths: Sequence[str], image: dict[str, Any]) -> torch.Tensor:
    size = image["size"]
    prepare = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                  transforms.Normalize(image["mean"], image["std"])])  # fmt: skip
    tensors = []
    for path in paths:
        try:
            tensors.append(prepare(Image.open(path).convert(image["mode"])))
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a run directory or its export/model.pt")
    parser.add_argument("images", nargs="*", help="image files to classify")
    parser.add_argument("--values", action="append", default=[], help="one row of features (repeatable)")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per input (default: 3)")
    args = parser.parse_args(argv)
    model, spec = load_exported(export_path(args.model))
    if bool(args.images) == bool(args.values):
        raise UserError("give image files or --values rows (one kind of input)")
    if args.images:
        if "image" not in spec["preprocessing"]:
            raise UserError(f"this {spec['model']} model on {spec['dataset']} takes --values, not images")
        inputs, labels = image_batch(args.images, spec["preprocessing"]["image"]), args.images
    else:
        inputs, labels = value_batch(args.values, spec), args.values
    with torch.no_grad():
        outputs = model(inputs)
    for label, text in zip(labels, describe(outputs, spec, args.top_k), strict=True):
        print(f"{label}: {text}")
    return 0
