"""The networks of the PyTorch book chapters, by name, sized from one example's shape.

    model = build_model("lenet", input_shape=(3, 32, 32), n_outputs=10)
    model_names("regression")    # ["linear", "mlp", "house_mlp", "thermometer_mlp", "wide_deep"]
    default_hidden("mlp")        # (50, 40)

Where each comes from (texts in ``shared/seeds/``):

- ``linear``: *Hands-On ML (PyTorch edition)*, ch. 10 and *Deep Learning Framework PyTorch: Intro and Practice*,
  ch. 3 linear regression; the thermometer's ``nn.Linear(1, 1)`` of *Deep Learning with PyTorch* (reading notes,
  "building a neural network").
- ``mlp``: Hands-On ML ch. 10's regression MLP 8 -> 50 -> 40 -> 1 (ReLU). ``hidden=(n, n)`` is the shape the
  chapter's Optuna search tunes (its ``n_hidden``).
- ``fashion_mlp``: Hands-On ML ch. 10's Fashion-MNIST ``ImageClassifier``: Flatten -> 300 -> 100 -> classes (ReLU).
- ``house_mlp``: *Deep Learning from Scratch*, ch. 7's ``HousePricesModel``: 13 -> 13 sigmoid -> 1.
- ``thermometer_mlp``: Deep Learning with PyTorch's ``Sequential(Linear(1, 13), Tanh(), Linear(13, 1))``, for any
  number of input features.
- ``wide_deep``: Hands-On ML ch. 10's ``WideAndDeepV4``: two named inputs (``X_wide = X[:, :5]``,
  ``X_deep = X[:, 2:]``) and an auxiliary output from the deep stack. It returns ``(main, aux)``; train on
  ``(1 - AUX_WEIGHT) * loss(main) + AUX_WEIGHT * loss(aux)`` (the book's 0.8 / 0.2) and evaluate ``main`` only.
  Feed it with ``model(**split_wide_deep(x))``.
- ``mnist_cnn``: Deep Learning from Scratch ch. 7's ``MNIST_ConvNet`` for (1, 28, 28) digits.
- ``lenet``: Deep Learning Framework PyTorch ch. 2's CIFAR-10 LeNet for (3, 32, 32) images (62,006 parameters).
- ``alexnet``, ``resnet34``: the same book's Dogs vs. Cats networks (ch. 6), torchvision's, never pretrained.
- ``small_cnn``: not a book model. A small CNN for any (C, H, W) image with sides of at least 8 (8x8 digits, Atari
  frames), so offline defaults have a convolutional classifier that trains in seconds.

Every model returns logits (classification) or raw values (regression): no softmax, no final activation.
"""

import math
import operator

import torch
from torch import Tensor, nn

MODEL_KINDS: dict[str, str] = {
    "linear": "regression",
    "mlp": "both",
    "fashion_mlp": "classification",
    "house_mlp": "regression",
    "thermometer_mlp": "regression",
    "wide_deep": "regression",
    "mnist_cnn": "classification",
    "lenet": "classification",
    "alexnet": "classification",
    "resnet34": "classification",
    "small_cnn": "classification",
}

_DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {
    "mlp": (50, 40),
    "fashion_mlp": (300, 100),
    "house_mlp": (13,),
    "thermometer_mlp": (13,),
    "wide_deep": (50, 40),
}

AUX_WEIGHT = 0.2  # weight of wide_deep's auxiliary loss; the main output's is 1 - AUX_WEIGHT = 0.8
WIDE_FEATURES = 5  # wide_deep's wide input: the first 5 features (fewer if there are fewer)
DEEP_START = 2  # wide_deep's deep input: the features from index 2 on
ALEXNET_MIN_SIDE = 63  # smallest side whose feature map survives AlexNet's three 3x3 stride-2 max-pools
RESNET34_MIN_SIDE = 32
SMALL_CNN_MIN_SIDE = 8


class MLP(nn.Module):
    """Flatten, then ``Linear`` + activation per hidden size, then ``Linear`` to the outputs (no hidden: linear)."""

    def __init__(
        self,
        n_inputs: int,
        hidden: tuple[int, ...],
        n_outputs: int,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]  # (B, ...) -> (B, n_inputs)
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), activation()]
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


def wide_deep_sizes(n_features: int) -> tuple[int, int]:
    """``(n_wide, n_deep)``: the book's ``X[:, :5]`` and ``X[:, 2:]`` for ``n_features`` features (>= 3)."""
    if n_features <= DEEP_START:
        raise ValueError(f"wide_deep needs at least {DEEP_START + 1} features, got {n_features}")
    return min(WIDE_FEATURES, n_features), n_features - DEEP_START


def split_wide_deep(x: Tensor) -> dict[str, Tensor]:
    """A batch of feature rows ``(B, n)`` as ``WideAndDeep``'s named inputs: ``model(**split_wide_deep(x))``."""
    n_wide, _ = wide_deep_sizes(x.shape[1])
    return {"X_wide": x[:, :n_wide], "X_deep": x[:, DEEP_START:]}


class WideAndDeep(nn.Module):
    """Hands-On ML's ``WideAndDeepV4``: ``forward(X_wide, X_deep) -> (main_output, aux_output)``."""

    def __init__(self, n_wide: int, n_deep: int, hidden: tuple[int, ...] = (50, 40), n_outputs: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_deep
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.deep_stack = nn.Sequential(*layers)  # (B, n_deep) -> (B, hidden[-1])
        self.output_layer = nn.Linear(n_wide + width, n_outputs)
        self.aux_output_layer = nn.Linear(width, n_outputs)
        self.n_wide = n_wide
        self.n_deep = n_deep

    def forward(self, X_wide: Tensor, X_deep: Tensor) -> tuple[Tensor, Tensor]:
        deep_output = self.deep_stack(X_deep)
        wide_and_deep = torch.concat([X_wide, deep_output], dim=1)  # (B, n_wide + hidden[-1])
        return self.output_layer(wide_and_deep), self.aux_output_layer(deep_output)


class MnistConvNet(nn.Module):
    """Deep Learning from Scratch's ``MNIST_ConvNet``, in the book's order (its ``dropout=0.8`` keeps 80 %)."""

    def __init__(self, n_outputs: int = 10, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),  # the book's padding = filter_size // 2: (B, 16, 28, 28)
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Conv2d(16, 8, 5, padding=2),  # (B, 8, 28, 28)
            nn.Tanh(),
            nn.Flatten(),  # (B, 6272)
            nn.Dropout(dropout),
            nn.Linear(8 * 28 * 28, 32),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(32, n_outputs),
        )

    def forward(self, images: Tensor) -> Tensor:  # (B, 1, 28, 28) -> (B, n_outputs)
        return self.net(images)


class LeNet(nn.Module):
    """Deep Learning Framework PyTorch's CIFAR-10 LeNet (the book's ``Net`` with 3 input channels)."""

    def __init__(self, n_outputs: int = 10, channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5),  # (B, 6, 28, 28)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5),  # (B, 16, 10, 10)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 400)
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, n_outputs),
        )

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, n_outputs)
        return self.classifier(self.features(images))


class SmallCNN(nn.Module):
    """Not from the books: a small classifier for any (C, H, W) image with H, W >= 8."""

    def __init__(self, channels: int, n_outputs: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 64, H / 2, W / 2)
            nn.AdaptiveAvgPool2d(4),  # (B, 64, 4, 4) whatever the image size
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 1024)
            nn.Linear(64 * 16, 128),
            nn.ReLU(),
            nn.Linear(128, n_outputs),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))


def model_names(kind: str) -> list[str]:
    """The models usable for ``"classification"`` or ``"regression"`` (a ``"both"`` model is in each list)."""
    if kind not in ("classification", "regression"):
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    return [name for name, model_kind in MODEL_KINDS.items() if model_kind in (kind, "both")]


def default_hidden(name: str) -> tuple[int, ...] | None:
    """The book's hidden sizes of a model that has them (``mlp``: (50, 40)), else None."""
    _check_name(name)
    return _DEFAULT_HIDDEN.get(name)


def build_model(
    name: str, input_shape: tuple[int, ...], n_outputs: int, hidden: tuple[int, ...] | None = None
) -> nn.Module:
    """The model ``name`` for examples of shape ``input_shape`` (no batch axis) and ``n_outputs`` classes or values.

    ``hidden`` replaces the book's hidden sizes of the models that have some (see ``default_hidden``).
    """
    _check_name(name)
    shape = _positive_ints(input_shape)
    if not shape:
        raise ValueError(f"{name}: input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    outputs = _positive_ints((n_outputs,))
    if not outputs:
        raise ValueError(f"{name}: n_outputs must be a positive int, got {n_outputs!r}")
    n_outputs = outputs[0]
    sizes: tuple[int, ...] = ()
    if name in _DEFAULT_HIDDEN:
        sizes = _positive_ints(_DEFAULT_HIDDEN[name] if hidden is None else hidden)
        if not sizes:
            raise ValueError(f"{name}: hidden must be a non-empty tuple of positive ints, got {hidden!r}")
    elif hidden is not None:
        raise ValueError(f"{name} has no hidden sizes to set (models that have: {', '.join(_DEFAULT_HIDDEN)})")

    n_inputs = math.prod(shape)
    if name == "linear":
        return MLP(n_inputs, (), n_outputs)
    if name in ("mlp", "fashion_mlp"):
        return MLP(n_inputs, sizes, n_outputs)
    if name == "house_mlp":
        return MLP(n_inputs, sizes, n_outputs, activation=nn.Sigmoid)
    if name == "thermometer_mlp":
        return MLP(n_inputs, sizes, n_outputs, activation=nn.Tanh)
    if name == "wide_deep":
        if len(shape) != 1 or shape[0] <= DEEP_START:
            raise ValueError(f"wide_deep needs feature rows (n,) with n >= {DEEP_START + 1}, got {shape}")
        return WideAndDeep(*wide_deep_sizes(shape[0]), hidden=sizes, n_outputs=n_outputs)
    if name == "mnist_cnn":
        _require_exact(name, shape, (1, 28, 28))
        return MnistConvNet(n_outputs)
    if name == "lenet":
        _require_exact(name, shape, (3, 32, 32))
        return LeNet(n_outputs)
    if name == "alexnet":
        _require_image(name, shape, ALEXNET_MIN_SIDE, channels=3)
        from torchvision.models import alexnet  # imported here: the other models need no torchvision

        return alexnet(weights=None, num_classes=n_outputs)
    if name == "resnet34":
        _require_image(name, shape, RESNET34_MIN_SIDE, channels=3)
        from torchvision.models import resnet34

        return resnet34(weights=None, num_classes=n_outputs)
    _require_image(name, shape, SMALL_CNN_MIN_SIDE)  # small_cnn
    return SmallCNN(shape[0], n_outputs)


def _positive_ints(values) -> tuple[int, ...]:
    """``values`` as a tuple of Python ints (numpy's too), or ``()`` if one is not a positive integer."""
    try:
        ints = tuple(operator.index(value) for value in values)
    except TypeError:
        return ()
    return ints if all(value > 0 for value in ints) else ()


def _check_name(name: str) -> None:
    if name not in MODEL_KINDS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_KINDS)}")


def _require_exact(name: str, shape: tuple[int, ...], needed: tuple[int, ...]) -> None:
    if shape != needed:
        raise ValueError(f"{name} needs input_shape {needed}, got {shape}")


def _require_image(name: str, shape: tuple[int, ...], min_side: int, channels: int | None = None) -> None:
    wanted = f"({channels if channels else 'C'}, H, W) with H, W >= {min_side}"
    if len(shape) != 3 or min(shape[1:]) < min_side or (channels is not None and shape[0] != channels):
        raise ValueError(f"{name} needs input_shape {wanted}, got {shape}")
