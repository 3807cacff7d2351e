"""Atari-FID measures something: real frames are close to other real frames, far from noise and from other games."""

import pytest
import torch
from ignite.metrics import FID

import tasks.atari_fid as atari_fid
from conftest import damage_tensor_data
from datasets.atari import DEFAULT_GAMES, spaced_frames
from engines.gan import create_fid_evaluator, fid_batches
from models.dcgan import Generator
from models.frame_classifier import FeaturesOf
from runner.files import verify_torch_file

SIZE, SAMPLES = 16, 256


@pytest.fixture(scope="module")
def features():
    classifier, _ = atari_fid.load_frame_classifier(SIZE, say=lambda message: None)
    return FeaturesOf(classifier).eval()


@pytest.fixture(scope="module")
def real():
    return spaced_frames(DEFAULT_GAMES, SAMPLES, SIZE, seed=100)


def fid(features, first, second) -> float:
    metric = FID(num_features=features.classifier.feature_size, feature_extractor=features)
    metric.update((first, second))
    return metric.compute()


def untrained_generator_frames():
    torch.manual_seed(0)
    generator = Generator(SIZE, filters=4, latent_size=8).eval()
    with torch.no_grad():
        return generator(torch.randn(SAMPLES, 8, 1, 1))


def test_real_frames_are_far_closer_to_other_real_frames_than_to_an_untrained_generator_or_another_game(features, real):
    other_real = spaced_frames(DEFAULT_GAMES, SAMPLES, SIZE, seed=200)  # other episodes of the same games
    other_game = spaced_frames(("Tennis",), SAMPLES, SIZE, seed=100)  # a game the classifier never saw
    same = fid(features, real, other_real)
    noise = fid(features, real, untrained_generator_frames())
    tennis = fid(features, real, other_game)
    assert 0 <= same < noise / 5, (same, noise)
    assert same < tennis / 5, (same, tennis)


def test_same_inputs_same_value(features, real):
    fake = untrained_generator_frames()
    assert fid(features, real, fake) == fid(features, real, fake)


def test_the_evaluator_computes_fid_between_the_generator_and_real_frames(features, real):
    torch.manual_seed(0)
    generator = Generator(SIZE, filters=4, latent_size=8)
    noise = torch.randn(SAMPLES, 8, 1, 1)
    evaluator = create_fid_evaluator(generator, features, real, noise, 100, torch.device("cpu"))
    state_before = {k: v.clone() for k, v in generator.state_dict().items()}
    rng_before = torch.get_rng_state()
    value = evaluator.run(fid_batches(SAMPLES, 100)).metrics["fid"]
    assert generator.training, "the evaluator puts the generator back in training mode"
    generator.eval()
    with torch.no_grad():
        expected = fid(features, generator(noise), real)
    assert value == pytest.approx(expected, rel=1e-6)
    assert all(torch.equal(state_before[k], v) for k, v in generator.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())


def test_fid_batches_cover_every_sample():
    assert fid_batches(512, 256) == [slice(0, 256), slice(256, 512)]
    assert fid_batches(513, 256) == [slice(0, 256), slice(256, 512), slice(512, 513)]


def test_classifier_is_cached_versioned_safe_to_load_and_not_retrained(monkeypatch):
    path = atari_fid.extractor_path(SIZE)
    assert path.name == f"{atari_fid.FID_VERSION}-{SIZE}px.pt"
    record = torch.load(path, weights_only=True)
    assert record["games"] == list(atari_fid.FID_GAMES) and set(DEFAULT_GAMES) < set(record["games"])
    assert record["valid_accuracy"] > 0.5  # chance is 1/12 (the tests' smoke recipe; the real one reaches 1.0)
    monkeypatch.setattr(atari_fid, "train_frame_classifier", lambda size: pytest.fail("retrained a cached classifier"))
    _, info = atari_fid.load_frame_classifier(SIZE, say=lambda message: None)
    assert info["valid_accuracy"] == record["valid_accuracy"]


def test_training_the_classifier_is_deterministic_and_leaves_the_callers_rng_alone(monkeypatch):
    monkeypatch.setitem(atari_fid.RECIPE, "train_per_game", 8)
    monkeypatch.setitem(atari_fid.RECIPE, "valid_per_game", 4)
    monkeypatch.setitem(atari_fid.RECIPE, "epochs", 1)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    with torch.no_grad():  # as on first use, from inside FID's update (Ignite's metrics update under no_grad)
        first, accuracy = atari_fid.train_frame_classifier(8)
    assert torch.equal(rng_before, torch.get_rng_state())
    second, again = atari_fid.train_frame_classifier(8)
    assert accuracy == again
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def not_a_zip(path):
    path.write_bytes(b"not a torch file at all")


def wrong_contents(path):
    torch.save(["a list", "of strings"], path)


def wrong_weights(path):
    record = torch.load(path, weights_only=True)
    torch.save({**record, "model": {"embed.1.weight": torch.zeros(2, 2)}}, path)


DAMAGES = {
    "changed bytes": (damage_tensor_data, "is damaged (its bytes changed after it was written)"),
    "truncated": (truncate, "is damaged (truncated, or not a torch file)"),
    "not a zip": (not_a_zip, "is damaged (truncated, or not a torch file)"),
    "wrong contents": (wrong_contents, "was made by another recipe than this version's"),
    "wrong weights": (wrong_weights, "holds no classifier of this version (RuntimeError)"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_cached_classifier_is_said_and_made_again(damage, monkeypatch, tmp_path):
    monkeypatch.setenv("IGNITE_BOOK_CACHE", str(tmp_path))
    for key, value in {"train_per_game": 8, "valid_per_game": 4, "epochs": 1}.items():
        monkeypatch.setitem(atari_fid.RECIPE, key, value)
    said: list[str] = []
    atari_fid.load_frame_classifier(8, say=said.append)
    path = atari_fid.extractor_path(8)
    damaging, reason = DAMAGES[damage]
    damaging(path)
    said.clear()
    _, info = atari_fid.load_frame_classifier(8, say=said.append)
    assert said[0] == f"{path} {reason}: it is made again"
    assert said[-1].startswith("Atari-FID classifier: validation accuracy")
    verify_torch_file(path)  # whole again


def test_a_cached_classifier_of_another_recipe_is_said_and_made_again(monkeypatch, tmp_path):
    monkeypatch.setenv("IGNITE_BOOK_CACHE", str(tmp_path))
    for key, value in {"train_per_game": 8, "valid_per_game": 4, "epochs": 1}.items():
        monkeypatch.setitem(atari_fid.RECIPE, key, value)
    _, first = atari_fid.load_frame_classifier(8, say=lambda message: None)
    monkeypatch.setitem(atari_fid.RECIPE, "lr", 2e-3)  # the recipe changed, its version did not
    said: list[str] = []
    _, second = atari_fid.load_frame_classifier(8, say=said.append)
    path = atari_fid.extractor_path(8)
    assert said[0] == f"{path} was made by another recipe than this version's: it is made again"
    assert torch.load(path, weights_only=True)["recipe"]["lr"] == 2e-3
    assert first["fid_classifier"] != second["fid_classifier"]  # other weights, another name


def test_the_classifiers_name_is_its_version_and_the_sha256_of_its_weights():
    model, info = atari_fid.load_frame_classifier(SIZE, say=lambda message: None)
    version, digest = info["fid_classifier"].split("/")
    assert version == atari_fid.FID_VERSION and len(digest) == 12 and int(digest, 16) >= 0
    record = torch.load(atari_fid.extractor_path(SIZE), weights_only=True)
    assert atari_fid.classifier_name(record) == info["fid_classifier"]
    changed = {**record, "model": {name: tensor + 1e-3 for name, tensor in model.state_dict().items()}}
    assert atari_fid.classifier_name(changed) != info["fid_classifier"]
