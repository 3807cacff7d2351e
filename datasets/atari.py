"""Batches of Atari frames that a random agent produces live (Deep RL Hands-On, chapter 3).

The stream steps gymnasium ALE environments with random actions, picking a game at random for every step, resizes each
frame with cv2, skips near-black frames (one game flashes black) and yields ``(B, 3, S, S)`` float tensors in [-1, 1].

Its whole position is capturable: ``state_dict()`` holds each emulator's state (ALE RNG included), each env's
``np_random`` (it draws v4's random frameskip), each action space's generator and the game picker, all as tensors,
strings and numbers, so a checkpoint holding it loads with ``torch.load(weights_only=True)``.
``load_state_dict()`` on a freshly built stream with the same games makes it continue exactly.

    stream = FrameStream(("Breakout", "Pong"), batch_size=16, image_size=64, seed=0)
    batch = next(stream)  # (16, 3, 64, 64)

For a GPU, ``uint8=True`` yields the frames as the emulators make them, ``(B, S, S, 3)`` uint8: a quarter of the bytes
to pin and copy, converted on the device by ``frames_to_float`` into the same numbers.
"""

from collections.abc import Sequence

import torch

from datasets.ale import (  # noqa: F401 - the games and checks are part of this module's interface too
    BLACK_FRAME_MEAN,
    DEFAULT_GAMES,
    TWELVE_GAMES,
    AleFrames,
    check_games,
    known_games,
    preprocess_frame,
)
from datasets.frames import frame_batch, frames_to_float, frames_to_tensor  # noqa: F401 - this module's too


def state_with_tensors(state: dict) -> dict:
    """An ``AleFrames`` state with each emulator's bytes as a uint8 tensor: what ``weights_only`` loads."""
    envs = [{**env, "ale": torch.frombuffer(bytearray(env["ale"]), dtype=torch.uint8)} for env in state["envs"]]
    return {**state, "envs": envs}


def state_with_bytes(state: dict) -> dict:
    """The inverse of ``state_with_tensors``."""
    envs = [{**env, "ale": env["ale"].numpy().tobytes()} for env in state["envs"]]
    return {**state, "envs": envs}


class FrameStream(AleFrames):
    """An endless iterator of frame batches as ``(B, 3, S, S)`` float tensors in [-1, 1] (``uint8``: the frames as
    ``(B, S, S, 3)`` uint8); checkpointable."""

    def __init__(
        self,
        games: Sequence[str] = DEFAULT_GAMES,
        batch_size: int = 16,
        image_size: int = 64,
        seed: int = 0,
        uint8: bool = False,
    ):
        super().__init__(games, batch_size, image_size, seed)
        self.uint8 = uint8

    def __iter__(self) -> "FrameStream":
        return self

    def __next__(self) -> torch.Tensor:
        return frame_batch(self.next_frames(), self.uint8)

    def state_dict(self) -> dict:
        return state_with_tensors(super().state_dict())

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state_with_bytes(state))


def spaced_frames(games: Sequence[str], count: int, image_size: int, seed: int, spacing: int = 4) -> torch.Tensor:
    """``count`` frames in [-1, 1], keeping every ``spacing``-th frame the agent sees, so they cover more of each
    episode than a run of consecutive, nearly identical frames would."""
    stream = FrameStream(games, batch_size=count * spacing, image_size=image_size, seed=seed)
    try:
        return next(stream)[::spacing].contiguous()
    finally:
        stream.close()


def labelled_frames(
    games: Sequence[str], per_game: int, image_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of each game with the game's index as label: the data of the Atari frame classifier."""
    frames = [spaced_frames((game,), per_game, image_size, seed + index) for index, game in enumerate(games)]
    labels = torch.arange(len(games)).repeat_interleave(per_game)
    return torch.cat(frames), labels
