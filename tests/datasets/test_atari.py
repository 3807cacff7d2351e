import numpy as np
import pytest
import torch

from datasets.atari import (
    BLACK_FRAME_MEAN,
    DEFAULT_GAMES,
    FrameStream,
    check_games,
    frames_to_float,
    frames_to_tensor,
    known_games,
    preprocess_frame,
)


def test_batches_have_the_requested_shape_and_range():
    stream = FrameStream(("Pong",), batch_size=5, image_size=16, seed=0)
    batch = next(stream)
    assert batch.shape == (5, 3, 16, 16)
    assert batch.dtype == torch.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    stream.close()


def test_frames_are_resized_channels_first_and_scaled_like_the_chapter():
    observation = np.zeros((210, 160, 3), dtype=np.uint8)
    observation[..., 0] = 255  # pure red screen
    frame = preprocess_frame(observation, 8)
    assert frame.shape == (8, 8, 3)
    tensor = frames_to_tensor(frame[None])
    assert tensor.shape == (1, 3, 8, 8)
    assert torch.all(tensor[0, 0] == 1.0) and torch.all(tensor[0, 1:] == -1.0)


def test_every_pixel_value_becomes_what_the_chapters_torch_arithmetic_gives():
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    chapter = torch.from_numpy(values).permute(0, 3, 1, 2).to(torch.float32) * (2.0 / 255.0) - 1.0
    converted = frames_to_tensor(values)
    assert converted.dtype == torch.float32 and converted.is_contiguous()
    assert torch.equal(converted, chapter)  # bit for bit: resumed and older runs see the same numbers


def test_uint8_frames_converted_on_the_device_are_the_same_numbers_channels_last():
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    on_device = frames_to_float(torch.from_numpy(values))
    assert torch.equal(on_device, frames_to_tensor(values))
    assert on_device.is_contiguous(memory_format=torch.channels_last)  # what the GAN's networks take


def test_a_uint8_stream_yields_the_frames_the_float_stream_converts():
    floats = FrameStream(("Pong",), batch_size=2, image_size=8, seed=3)
    frames = FrameStream(("Pong",), batch_size=2, image_size=8, seed=3, uint8=True)
    for _ in range(3):
        batch = next(frames)
        assert batch.dtype == torch.uint8 and batch.shape == (2, 8, 8, 3)
        assert torch.equal(frames_to_float(batch), next(floats))


def test_near_black_frames_are_skipped(monkeypatch):
    stream = FrameStream(("Pong",), batch_size=3, image_size=8, seed=0)
    frames = iter([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)] * 10)
    monkeypatch.setattr("datasets.ale.preprocess_frame", lambda observation, size: next(frames))
    batch = next(stream)
    # every other frame was black: three bright frames were kept, none of the black ones
    assert torch.all(batch > 0)
    assert BLACK_FRAME_MEAN == 0.01


def test_same_seed_same_stream_and_different_seed_different_stream():
    first = [next(FrameStream(DEFAULT_GAMES, 4, 16, seed=3)) for _ in range(1)][0]
    again = next(FrameStream(DEFAULT_GAMES, 4, 16, seed=3))
    other = next(FrameStream(DEFAULT_GAMES, 4, 16, seed=4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_restored_state_continues_the_stream_exactly_across_episode_ends():
    original = FrameStream(DEFAULT_GAMES, batch_size=16, image_size=16, seed=5)
    for _ in range(3):
        next(original)
    saved = original.state_dict()
    expected = [next(original) for _ in range(60)]  # ~1000 steps: Breakout and Pong episodes end meanwhile

    restored = FrameStream(DEFAULT_GAMES, batch_size=16, image_size=16, seed=999)
    restored.load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip(expected, (next(restored) for _ in range(60)), strict=True))


def test_state_survives_a_weights_only_round_trip(tmp_path):
    stream = FrameStream(("Breakout", "Pong"), batch_size=2, image_size=8, seed=0)
    next(stream)
    torch.save({"stream": stream.state_dict()}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["stream"]
    expected = next(stream)
    fresh = FrameStream(("Breakout", "Pong"), batch_size=2, image_size=8, seed=1)
    fresh.load_state_dict(loaded)
    assert torch.equal(next(fresh), expected)


def test_loading_the_state_of_other_games_is_refused():
    state = FrameStream(("Pong",), 2, 8, seed=0).state_dict()
    with pytest.raises(ValueError, match="plays"):
        FrameStream(("Breakout",), 2, 8, seed=0).load_state_dict(state)


def test_game_names_are_checked_with_a_suggestion():
    assert {"Breakout", "AirRaid", "Pong"} <= set(known_games())
    assert "Ant" not in known_games()  # a MuJoCo v4 id, not an Atari game
    check_games(DEFAULT_GAMES)
    with pytest.raises(ValueError, match="did you mean Breakout"):
        check_games(["Brekout"])
    with pytest.raises(ValueError, match="at least one"):
        check_games([])
