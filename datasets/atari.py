"""Batches of Atari frames that a random agent produces live (Deep RL Hands-On, chapter 3).

The stream steps gymnasium ALE environments with random actions, picking a game at random for every step, resizes each
frame with cv2, skips near-black frames (one game flashes black) and yields ``(B, 3, S, S)`` float tensors in [-1, 1].

Its whole position is capturable: ``state_dict()`` holds each emulator's state (ALE RNG included), each env's
``np_random`` (it draws v4's random frameskip), each action space's generator and the game picker, all as tensors,
strings and numbers, so a checkpoint holding it loads with ``torch.load(weights_only=True)``.
``load_state_dict()`` on a freshly built stream with the same games makes it continue exactly.

    stream = FrameStream(("Breakout", "Pong"), batch_size=16, image_size=64, seed=0)
    batch = next(stream)  # (16, 3, 64, 64)
"""

from collections.abc import Sequence
from difflib import get_close_matches

import ale_py
import cv2
import gymnasium
import numpy as np
import torch

DEFAULT_GAMES = ("Breakout", "AirRaid", "Pong")
# Twelve games that look unlike each other: the frame classifiers' classes (Atari-FID's and classify.py's).
TWELVE_GAMES = (
    "Breakout",
    "AirRaid",
    "Pong",
    "SpaceInvaders",
    "Seaquest",
    "Enduro",
    "Freeway",
    "MsPacman",
    "Qbert",
    "Riverraid",
    "BeamRider",
    "Asteroids",
)
ALE_ENTRY_POINT = "ale_py.env:AtariEnv"
BLACK_FRAME_MEAN = 0.01  # the chapter's threshold, on 0..255 pixel values: it drops only (almost) all-black frames

gymnasium.register_envs(ale_py)
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # the emulator's banner is noise on every env created


def known_games() -> list[str]:
    """Names of the ALE games with a ``-v4`` id, e.g. ``Breakout``."""
    return sorted(
        spec.id.removesuffix("-v4")
        for spec in gymnasium.registry.values()
        if spec.entry_point == ALE_ENTRY_POINT
        and spec.id.endswith("-v4")
        and spec.kwargs.get("obs_type") != "ram"
        and "Deterministic" not in spec.id
        and "NoFrameskip" not in spec.id
    )


def check_games(games: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first game the ALE does not have."""
    if not games:
        raise ValueError("at least one game is needed")
    known = known_games()
    for game in games:
        if game not in known:
            close = get_close_matches(game, known, n=3)
            hint = (
                f" (did you mean {', '.join(close)}?)"
                if close
                else f" ({len(known)} games, e.g. {', '.join(DEFAULT_GAMES)})"
            )
            raise ValueError(f"unknown Atari game {game!r}{hint}")


def preprocess_frame(observation: np.ndarray, image_size: int) -> np.ndarray:
    """``(210, 160, 3)`` uint8 -> ``(image_size, image_size, 3)`` uint8, as the chapter's InputWrapper resizes."""
    return cv2.resize(observation, (image_size, image_size))


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 -> ``(B, 3, S, S)`` float32 in [-1, 1] (the chapter's ``x * 2 / 255 - 1``)."""
    batch = torch.from_numpy(frames).permute(0, 3, 1, 2).to(torch.float32)
    return (batch * (2.0 / 255.0) - 1.0).contiguous()


def _rng_state(generator: np.random.Generator) -> dict:
    return generator.bit_generator.state  # plain dict of str and int (PCG64's 128-bit ints load fine)


def _set_rng_state(generator: np.random.Generator, state: dict) -> None:
    generator.bit_generator.state = state


class FrameStream:
    """An endless iterator of frame batches from a random agent playing several Atari games."""

    def __init__(self, games: Sequence[str] = DEFAULT_GAMES, batch_size: int = 16, image_size: int = 64, seed: int = 0):
        check_games(games)
        self.games = tuple(games)
        self.batch_size = batch_size
        self.image_size = image_size
        # One seed sequence spreads the user's seed over every generator the stream uses.
        env_seeds, action_seeds, picker_seed = np.random.SeedSequence(seed).spawn(3)
        self.envs = [gymnasium.make(f"{game}-v4") for game in self.games]
        for env, env_seed, action_seed in zip(
            self.envs,
            env_seeds.generate_state(len(self.envs)),
            action_seeds.generate_state(len(self.envs)),
            strict=True,
        ):
            env.reset(seed=int(env_seed))
            env.action_space.seed(int(action_seed))
        self.picker = np.random.default_rng(picker_seed)

    def __iter__(self) -> "FrameStream":
        return self

    def __next__(self) -> torch.Tensor:
        frames = np.empty((self.batch_size, self.image_size, self.image_size, 3), dtype=np.uint8)
        filled = 0
        while filled < self.batch_size:
            env = self.envs[self.picker.integers(len(self.envs))]
            observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
            frame = preprocess_frame(observation, self.image_size)
            if frame.mean() > BLACK_FRAME_MEAN:
                frames[filled] = frame
                filled += 1
            if terminated or truncated:
                env.reset()
        return frames_to_tensor(frames)

    def state_dict(self) -> dict:
        envs = []
        for env in self.envs:
            ale_state = env.unwrapped.ale.cloneState(include_rng=True).serialize()
            envs.append(
                {
                    "ale": torch.frombuffer(bytearray(ale_state), dtype=torch.uint8),
                    "env_rng": _rng_state(env.unwrapped.np_random),
                    "action_rng": _rng_state(env.action_space.np_random),
                }
            )
        return {"games": list(self.games), "envs": envs, "picker_rng": _rng_state(self.picker)}

    def load_state_dict(self, state: dict) -> None:
        if list(state["games"]) != list(self.games):
            raise ValueError(f"the saved stream plays {state['games']}, this one {list(self.games)}")
        for env, saved in zip(self.envs, state["envs"], strict=True):
            env.unwrapped.ale.restoreState(ale_py.ALEState(saved["ale"].numpy().tobytes()))
            _set_rng_state(env.unwrapped.np_random, saved["env_rng"])
            _set_rng_state(env.action_space.np_random, saved["action_rng"])
        _set_rng_state(self.picker, state["picker_rng"])

    def close(self) -> None:
        for env in self.envs:
            env.close()


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
