"""tasks.pretrained's table of what torchvision's builders do with weights, checked against the builders themselves:
each model built from the table holds the same parameters, in the same modules, and answers the same as the one
torchvision builds when handed the same state dict (its download replaced by that state dict, here only)."""

from unittest import mock

import pytest
import torch
from torchvision.models import get_model, get_model_weights

from tasks.pretrained import built_with, for_weights, renamed_dense_layer_keys

# The entries that change the model or its keys, and a model without an entry. (The size entries are checked below
# without building: ViT-H/14 has 632 M parameters.)
MODELS = ["googlenet", "inception_v3", "densenet121", "mobilenet_v3_small"]


def torchvisions_own(name: str, state_dict: dict) -> torch.nn.Module:
    weights = get_model_weights(name).DEFAULT
    with mock.patch.object(type(weights), "get_state_dict", lambda *args, **kwargs: dict(state_dict)):
        return get_model(name, weights=weights).eval()


@pytest.mark.parametrize("name", MODELS)
def test_the_table_builds_what_torchvisions_builder_builds(name):
    weights = get_model_weights(name).DEFAULT
    torch.manual_seed(0)
    state_dict = for_weights(name).keys(dict(built_with_random_weights(name, weights).state_dict()))
    ours, theirs = built_with(name, weights, state_dict, "test"), torchvisions_own(name, state_dict)
    assert [(key, value.shape) for key, value in ours.state_dict().items()] == [
        (key, value.shape) for key, value in theirs.state_dict().items()
    ]
    assert [type(module) for module in ours.modules()] == [type(module) for module in theirs.modules()]
    size = weights.meta["min_size"]
    image = torch.rand(1, 3, max(size[0], 64), max(size[1], 64))
    with torch.no_grad():
        assert torch.equal(ours(image), theirs(image))


def built_with_random_weights(name, weights):
    """A model of the shape the weights need, holding random numbers (the table's arguments, no loading)."""
    entry = for_weights(name)
    return get_model(name, weights=None, num_classes=len(weights.meta["categories"]), **entry.arguments(weights))


def test_the_vision_transformers_get_their_weights_image_size():
    weights = get_model_weights("vit_h_14").IMAGENET1K_SWAG_E2E_V1
    assert for_weights("vit_h_14").arguments(weights) == {"image_size": 518}
    assert for_weights("maxvit_t").arguments(get_model_weights("maxvit_t").DEFAULT) == {"input_size": (224, 224)}


def test_densenets_old_key_names_are_renamed_and_others_kept():
    keys = {"features.denseblock1.denselayer1.norm.1.weight": 1, "features.conv0.weight": 2, "classifier.bias": 3}
    assert renamed_dense_layer_keys(keys) == {
        "features.denseblock1.denselayer1.norm1.weight": 1,
        "features.conv0.weight": 2,
        "classifier.bias": 3,
    }
