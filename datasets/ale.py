"""Atari frames that a random agent produces live (Deep RL Hands-On, chapter 3), without torch.

``AleFrames`` steps gymnasium ALE environments with random actions, picking a game at random for every step, resizes
each frame with cv2 and skips near-black frames (one game flashes black): batches of ``(B, S, S, 3)`` uint8 frames.
Its whole position is plain data (``state_dict()``: each emulator's state as bytes, ALE RNG included, each env's
``np_random``, which draws v4's random frameskip, each action space's generator and the game picker).

This module imports no torch, so a producer process (``datasets.workers``) starts in a fraction of the time;
``datasets.atari.FrameStream`` is the same stream with tensors, for training and checkpoints.
"""

import pickle
import signal
import sys
from collections.abc import Sequence
from difflib import get_close_matches
from multiprocessing.connection import Connection

import ale_py
import cv2
import gymnasium
import numpy as np

from runner.machine import set_parent_death_signal

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


def _rng_state(generator: np.random.Generator) -> dict:
    return generator.bit_generator.state  # plain dict of str and int (PCG64's 128-bit ints load fine)


def _set_rng_state(generator: np.random.Generator, state: dict) -> None:
    generator.bit_generator.state = state


class AleFrames:
    """Batches of uint8 frames from a random agent playing several Atari games; its state is plain data."""

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

    def next_frames(self) -> np.ndarray:
        """The next batch as ``(B, S, S, 3)`` uint8 frames (what a producer process sends)."""
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
        return frames

    def state_dict(self) -> dict:
        envs = []
        for env in self.envs:
            ale_state = env.unwrapped.ale.cloneState(include_rng=True).serialize()
            envs.append(
                {
                    "ale": bytes(ale_state),
                    "env_rng": _rng_state(env.unwrapped.np_random),
                    "action_rng": _rng_state(env.action_space.np_random),
                }
            )
        return {"games": list(self.games), "envs": envs, "picker_rng": _rng_state(self.picker)}

    def load_state_dict(self, state: dict) -> None:
        if list(state["games"]) != list(self.games):
            raise ValueError(f"the saved stream plays {state['games']}, this one {list(self.games)}")
        for env, saved in zip(self.envs, state["envs"], strict=True):
            env.unwrapped.ale.restoreState(ale_py.ALEState(bytes(saved["ale"])))
            _set_rng_state(env.unwrapped.np_random, saved["env_rng"])
            _set_rng_state(env.action_space.np_random, saved["action_rng"])
        _set_rng_state(self.picker, state["picker_rng"])

    def close(self) -> None:
        for env in self.envs:
            env.close()


def serve_batches() -> None:
    """A producer process's life (``datasets.workers`` starts it): its stream's settings and state arrive pickled on
    stdin, the writing end of its pipe is the file descriptor given as its argument. Batches are sent, each with the
    stream's state right after it, until the pipe closes. Here, not in ``datasets.workers``: no torch to import."""
    games, batch_size, image_size, seed, state = pickle.load(sys.stdin.buffer)  # from our own training process
    produce(games, batch_size, image_size, seed, state, Connection(int(sys.argv[1]), readable=False))


def produce(games: tuple, batch_size: int, image_size: int, seed: int, state: dict | None, pipe: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle
    set_parent_death_signal(signal.SIGKILL)  # the training process died: so does its producer
    cv2.setNumThreads(1)  # one core per producer
    stream = AleFrames(games, batch_size, image_size, seed)
    if state is not None:
        stream.load_state_dict(state)
    try:
        while True:
            frames = stream.next_frames()
            pipe.send((frames, stream.state_dict()))
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the consumer closed its end: stopped, or gone
    except Exception as error:  # noqa: BLE001 - shown by the consumer, in the training process
        pipe.send(f"{type(error).__name__}: {error}")
    finally:
        stream.close()
