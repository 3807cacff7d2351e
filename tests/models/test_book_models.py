"""The book chapters' networks: each trains on its real input shape, layers are the books', errors are clear."""

import numpy as np
import pytest
import torch
from torch import nn

from models.book_models import (
    AUX_WEIGHT,
    MODEL_KINDS,
    build_model,
    default_hidden,
    model_names,
    split_wide_deep,
)

# name -> (the book's input shape, n_outputs, batch size, steps)
BOOK_SHAPES = {
    "linear": ((8,), 1, 8, 5),
    "mlp": ((8,), 1, 8, 5),
    "fashion_mlp": ((1, 28, 28), 10, 8, 5),
    "house_mlp": ((13,), 1, 8, 5),
    "thermometer_mlp": ((1,), 1, 8, 5),
    "wide_deep": ((8,), 1, 8, 5),
    "mnist_cnn": ((1, 28, 28), 10, 8, 5),
    "lenet": ((3, 32, 32), 10, 8, 5),
    "alexnet": ((3, 64, 64), 2, 2, 3),
    "resnet34": ((3, 64, 64), 2, 2, 3),
    "small_cnn": ((1, 8, 8), 10, 8, 5),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of 2-8 gain nothing from threads, and on a busy machine oneDNN's two threads spin waiting on each other
    (resnet34's steps then take seconds instead of a tenth of one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_sizes(model: nn.Module) -> list[tuple[int, int]]:
    return [(layer.in_features, layer.out_features) for layer in model.modules() if isinstance(layer, nn.Linear)]


def layer_kinds(sequential: nn.Sequential) -> list[str]:
    return [type(layer).__name__ for layer in sequential]


def test_every_model_has_a_book_shape_to_train_on():
    assert set(BOOK_SHAPES) == set(MODEL_KINDS)


@pytest.mark.parametrize("name", list(BOOK_SHAPES))
def test_every_book_architecture_trains_a_few_steps_on_its_real_input_shape(name):
    input_shape, n_outputs, batch_size, steps = BOOK_SHAPES[name]
    torch.manual_seed(0)
    model = build_model(name, input_shape, n_outputs)
    model.train()
    inputs = torch.randn(batch_size, *input_shape)
    classification = MODEL_KINDS[name] == "classification"
    if classification:
        targets = torch.randint(0, n_outputs, (batch_size,))
        criterion = nn.CrossEntropyLoss()
    else:
        targets = torch.randn(batch_size, n_outputs)
        criterion = nn.MSELoss()
    if name in ("alexnet", "resnet34"):  # plain SGD: Adam's state for 20-60 M parameters costs more than the step
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    losses = []
    for step in range(steps):
        torch.manual_seed(1)  # the same dropout masks each step: one fixed function of the parameters to descend
        optimizer.zero_grad()
        if name == "wide_deep":
            main, aux = model(**split_wide_deep(inputs))
            assert main.shape == aux.shape == (batch_size, 1)
            loss = (1 - AUX_WEIGHT) * criterion(main, targets) + AUX_WEIGHT * criterion(aux, targets)
        else:
            outputs = model(inputs)
            assert outputs.shape == (batch_size, n_outputs)
            loss = criterion(outputs, targets)
        loss.backward()
        if step == 0:
            missing = [param_name for param_name, p in model.named_parameters() if p.grad is None]
            assert not missing, f"{name}: no gradient for {missing}"
            assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < losses[0], f"{name}: loss went {losses}"


def test_mnist_cnn_is_the_books_layer_by_layer():
    model = build_model("mnist_cnn", (1, 28, 28), 10)
    convs = [layer for layer in model.modules() if isinstance(layer, nn.Conv2d)]

    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 16, (5, 5), (2, 2)),
        (16, 8, (5, 5), (2, 2)),
    ]
    assert linear_sizes(model) == [(6272, 32), (32, 10)]
    assert layer_kinds(model.net) == [
        "Conv2d",
        "Tanh",
        "Dropout",
        "Conv2d",
        "Tanh",
        "Flatten",
        "Dropout",
        "Linear",
        "Tanh",
        "Dropout",
        "Linear",
    ]
    assert all(layer.p == pytest.approx(0.2) for layer in model.modules() if isinstance(layer, nn.Dropout))


def test_lenet_is_the_classic_cifar_lenet():
    model = build_model("lenet", (3, 32, 32), 10)
    convs = [layer for layer in model.modules() if isinstance(layer, nn.Conv2d)]

    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 6, (5, 5)), (6, 16, (5, 5))]
    assert linear_sizes(model) == [(400, 120), (120, 84), (84, 10)]
    assert sum(p.numel() for p in model.parameters()) == 62_006
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_fashion_mlp_is_the_books_image_classifier():
    model = build_model("fashion_mlp", (1, 28, 28), 10)

    assert linear_sizes(model) == [(784, 300), (300, 100), (100, 10)]
    assert layer_kinds(model.mlp) == ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert default_hidden("fashion_mlp") == (300, 100)


def test_mlp_defaults_to_the_books_regression_mlp_and_takes_other_hidden_sizes():
    assert linear_sizes(build_model("mlp", (8,), 1)) == [(8, 50), (50, 40), (40, 1)]
    assert linear_sizes(build_model("mlp", (8,), 1, hidden=(20, 20))) == [(8, 20), (20, 20), (20, 1)]
    assert linear_sizes(build_model("fashion_mlp", (1, 28, 28), 10, hidden=(116, 116))) == [
        (784, 116),
        (116, 116),
        (116, 10),
    ]


def test_mlp_flattens_images():
    model = build_model("mlp", (1, 8, 8), 10)

    assert linear_sizes(model)[0] == (64, 50)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_wide_deep_is_the_books_wide_and_deep_v4_for_eight_features():
    model = build_model("wide_deep", (8,), 1)

    assert (model.n_wide, model.n_deep) == (5, 6)
    assert linear_sizes(model.deep_stack) == [(6, 50), (50, 40)]
    assert layer_kinds(model.deep_stack) == ["Linear", "ReLU", "Linear", "ReLU"]
    assert linear_sizes(model.output_layer) == [(5 + 40, 1)]
    assert linear_sizes(model.aux_output_layer) == [(40, 1)]
    assert AUX_WEIGHT == 0.2


@pytest.mark.parametrize(("n_features", "n_wide", "n_deep"), [(3, 3, 1), (5, 5, 3), (8, 5, 6), (13, 5, 11)])
def test_wide_deep_splits_any_row_length_the_books_way(n_features, n_wide, n_deep):
    x = torch.arange(4 * n_features, dtype=torch.float32).reshape(4, n_features)
    inputs = split_wide_deep(x)
    model = build_model("wide_deep", (n_features,), 1)

    assert inputs["X_wide"].shape == (4, n_wide)
    assert inputs["X_deep"].shape == (4, n_deep)
    assert torch.equal(inputs["X_wide"], x[:, :n_wide])
    assert torch.equal(inputs["X_deep"], x[:, 2:])
    assert (model.n_wide, model.n_deep) == (n_wide, n_deep)
    main, aux = model(**inputs)
    assert main.shape == aux.shape == (4, 1)


def test_house_mlp_uses_sigmoid_and_thermometer_tanh():
    house = build_model("house_mlp", (13,), 1)
    thermometer = build_model("thermometer_mlp", (1,), 1)

    assert linear_sizes(house) == [(13, 13), (13, 1)]
    assert layer_kinds(house.mlp) == ["Flatten", "Linear", "Sigmoid", "Linear"]
    assert linear_sizes(thermometer) == [(1, 13), (13, 1)]
    assert layer_kinds(thermometer.mlp) == ["Flatten", "Linear", "Tanh", "Linear"]
    assert linear_sizes(build_model("thermometer_mlp", (4,), 1)) == [(4, 13), (13, 1)]


def test_linear_is_one_linear_layer():
    model = build_model("linear", (8,), 1)

    assert linear_sizes(model) == [(8, 1)]
    assert sum(p.numel() for p in model.parameters()) == 9


def test_small_cnn_takes_any_image_with_sides_from_eight():
    model = build_model("small_cnn", (3, 32, 32), 6)

    assert linear_sizes(model) == [(1024, 128), (128, 6)]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 6)
    assert build_model("small_cnn", (1, 8, 12), 3)(torch.zeros(2, 1, 8, 12)).shape == (2, 3)


def test_torchvision_networks_get_the_number_of_classes():
    alexnet = build_model("alexnet", (3, 63, 63), 2)  # the smallest side AlexNet's pooling allows

    assert alexnet(torch.zeros(1, 3, 63, 63)).shape == (1, 2)
    assert build_model("resnet34", (3, 32, 32), 5).fc.out_features == 5


def test_model_names_by_kind():
    regression = model_names("regression")
    classification = model_names("classification")

    assert {"linear", "mlp", "house_mlp", "thermometer_mlp", "wide_deep"} <= set(regression)
    assert "lenet" not in regression
    assert {"mlp", "fashion_mlp", "mnist_cnn", "lenet", "alexnet", "resnet34", "small_cnn"} <= set(classification)
    assert "linear" not in classification
    assert set(regression) | set(classification) == set(MODEL_KINDS)
    with pytest.raises(ValueError, match="classification"):
        model_names("clustering")


def test_default_hidden():
    assert default_hidden("mlp") == (50, 40)
    assert default_hidden("house_mlp") == (13,)
    assert default_hidden("thermometer_mlp") == (13,)
    assert default_hidden("lenet") is None
    assert default_hidden("linear") is None
    with pytest.raises(ValueError, match="unknown model"):
        default_hidden("vgg16")


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'vgg16'.*lenet.*small_cnn"):
        build_model("vgg16", (3, 32, 32), 10)


@pytest.mark.parametrize(
    ("name", "input_shape", "needed"),
    [
        ("mnist_cnn", (1, 32, 32), r"\(1, 28, 28\)"),
        ("mnist_cnn", (784,), r"\(1, 28, 28\)"),
        ("lenet", (1, 28, 28), r"\(3, 32, 32\)"),
        ("alexnet", (3, 62, 62), "H, W >= 63"),
        ("alexnet", (1, 64, 64), r"\(3, H, W\)"),
        ("resnet34", (3, 16, 16), "H, W >= 32"),
        ("small_cnn", (1, 4, 4), "H, W >= 8"),
        ("small_cnn", (64,), r"\(C, H, W\)"),
        ("wide_deep", (2,), "n >= 3"),
        ("wide_deep", (1, 8), r"\(n,\)"),
        ("mlp", (), "non-empty"),
        ("mlp", (0, 3), "positive"),
        ("mlp", (8.0,), "positive"),
    ],
)
def test_wrong_input_shapes_say_what_the_model_needs(name, input_shape, needed):
    with pytest.raises(ValueError, match=needed):
        build_model(name, input_shape, 2)


def test_bad_hidden_and_outputs_are_refused():
    with pytest.raises(ValueError, match="no hidden sizes"):
        build_model("lenet", (3, 32, 32), 10, hidden=(20, 20))
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", (8,), 1, hidden=())
    with pytest.raises(ValueError, match="n_outputs"):
        build_model("mlp", (8,), 0)


def test_sizes_may_come_as_a_torch_size_and_numpy_ints():
    model = build_model("mlp", torch.Size([8]), np.int64(3), hidden=(np.int64(20), 20))

    assert linear_sizes(model) == [(8, 20), (20, 20), (20, 3)]
