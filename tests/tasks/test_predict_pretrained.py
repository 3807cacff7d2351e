"""predict.py --pretrained: a torchvision ImageNet classifier names what images show (the book's chapter 001).

No test downloads: torch hub's folder is an empty temporary one and its ``urlopen`` fails as on a machine offline.
The weights are a small model's random ones, with one category planted to win, saved as the user's state-dict file.
"""

import re
import urllib.error

import pytest
import torch
import torchvision
from PIL import Image

from conftest import damage_tensor_data
from runner.errors import UserError, exit_cleanly
from tasks.predict import main
from tasks.pretrained import hub_file

MODEL = "mobilenet_v3_small"  # the smallest classifier torchvision has weights for: fast to build and to run
WEIGHTS = torchvision.models.get_model_weights(MODEL).DEFAULT
CATEGORIES = WEIGHTS.meta["categories"]
PLANTED = 207  # "golden retriever": its output bias is raised so that it wins on any image


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.get_model(MODEL, weights=None)
    with torch.no_grad():
        model.classifier[-1].bias[PLANTED] = 12.0
    path = tmp_path_factory.mktemp("weights") / f"{MODEL}.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, colour in enumerate([(200, 40, 40), (30, 160, 90)]):
        paths.append(str(folder / f"image{index}.png"))
        Image.new("RGB", (40, 40), colour).save(paths[-1])
    return paths


@pytest.fixture(autouse=True)
def offline_empty_hub(tmp_path, monkeypatch):
    """An empty torch hub folder, and a network that answers as none would (no test hangs on, or uses, one)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")  # (torch.hub.set_dir would take precedence)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    return tmp_path / "torch" / "hub"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The launcher in-process, as scripts/predict.py runs it: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exit_info:
        exit_cleanly(lambda: main(list(argv)), "predict.py")
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def predictions(line: str, image: str) -> list[tuple[str, float]]:
    """``image.png: label 0.912, label 0.031, ...`` (describe()'s line) as (label, probability) pairs."""
    assert line.startswith(f"{image}: "), line
    pairs = re.findall(r"(.+?) (\d\.\d{3})(?:, |$)", line.removeprefix(f"{image}: "))
    return [(label, float(probability)) for label, probability in pairs]


def test_weights_file_gives_top_k_imagenet_labels_sorted_by_probability(weights_file, images, capsys):
    code, out, err = run(capsys, "--pretrained", MODEL, *images, "--weights", str(weights_file), "--top-k", "4")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(images)
    for image, line in zip(images, lines, strict=True):
        found = predictions(line, image)
        labels, probabilities = [label for label, _ in found], [p for _, p in found]
        assert len(found) == 4 and all(label in CATEGORIES for label in labels), line
        assert all(0 <= p <= 1 for p in probabilities) and probabilities == sorted(probabilities, reverse=True)
        assert labels[0] == CATEGORIES[PLANTED] and probabilities[0] > 0.9  # the weights given are the ones used


def test_five_labels_by_default_and_the_hub_cache_read_offline(weights_file, images, offline_empty_hub, capsys):
    cached = hub_file(WEIGHTS)
    assert cached.parent == offline_empty_hub / "checkpoints" and cached.name == WEIGHTS.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights_file.read_bytes())  # as if downloaded before, or put there by the user
    code, out, err = run(capsys, "--pretrained", MODEL, images[0])
    assert code == 0, err
    (line,) = out.splitlines()
    assert len(predictions(line, images[0])) == 5 and predictions(line, images[0])[0][0] == CATEGORIES[PLANTED]


def test_offline_without_a_cached_file_is_one_line_naming_url_folder_and_weights_flag(
    images, offline_empty_hub, capsys
):
    code, out, err = run(capsys, "--pretrained", MODEL, images[0])
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("predict.py: error: --pretrained mobilenet_v3_small: cannot download ")
    assert WEIGHTS.url in line and str(offline_empty_hub / "checkpoints") in line
    assert hub_file(WEIGHTS).name in line and "--weights PATH" in line and "name resolution" in line
    assert not hub_file(WEIGHTS).exists()  # nothing half-downloaded left to be read next time


def test_weights_of_another_model_are_one_line(images, tmp_path, capsys):
    other = tmp_path / "squeezenet.pt"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), other)
    code, _, err = run(capsys, "--pretrained", MODEL, images[0], "--weights", str(other))
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"predict.py: error: --weights {other}: not the weights of {MODEL} (")
    assert "missing keys" in line and "unexpected keys" in line


def test_weights_that_are_no_state_dict_damaged_or_missing_are_one_line(weights_file, images, tmp_path, capsys):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(weights_file.read_bytes())
    damage_tensor_data(damaged)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    expected = {
        images[1]: "not a readable state dict (UnpicklingError)",  # a PNG given as weights
        str(tmp_path / "list.pt"): "not a state dict",
        str(damaged): "is damaged",
        "no/such.pt": "--weights no/such.pt: no such file",
    }
    for path, message in expected.items():
        code, _, err = run(capsys, "--pretrained", MODEL, images[0], "--weights", path)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (path, err)


def test_an_unknown_model_name_is_one_line_with_close_names(images, capsys):
    code, _, err = run(capsys, "--pretrained", "resnet1O1", images[0])
    count = len(torchvision.models.list_models(module=torchvision.models))
    assert code == 2
    assert err.splitlines() == [
        "predict.py: error: --pretrained resnet1O1: not a torchvision classification model "
        f"(try resnet101, resnet18, resnet152, resnet50; {count} in all: torchvision.models.list_models())"
    ]


def test_images_are_refused_as_for_an_exported_model(weights_file, tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    for image in (str(tmp_path / "x.png"), str(tmp_path / "missing.png")):
        with pytest.raises(UserError, match=f"^{re.escape(image)}: not a readable image"):
            main(["--pretrained", MODEL, image, "--weights", str(weights_file)])
    with pytest.raises(UserError, match="give image files to classify"):
        main(["--pretrained", MODEL])
    with pytest.raises(UserError, match="classifies images, not --values"):
        main(["--pretrained", MODEL, "--values", "1,2"])


def test_without_pretrained_a_run_directory_is_still_required_and_weights_refused(tmp_path, capsys):
    code, _, err = run(capsys)
    assert code == 2 and err == "predict.py: error: the following arguments are required: model (see --help)\n"
    with pytest.raises(UserError, match="--weights goes with --pretrained"):
        main([str(tmp_path), "x.png", "--weights", "w.pt"])
