"""Seeding and a checkpointable snapshot of every global RNG (python, numpy, torch CPU, and the run's CUDA device).

``GlobalRNG().state_dict()`` holds only lists, numbers, strings and tensors, so it loads with
``torch.load(weights_only=True)``: no numpy objects, nothing that can run code.
"""

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CUDA generators too


CPU = torch.device("cpu")


class GlobalRNG:
    """The process-wide generators, as an object Ignite's ``Checkpoint`` can save and load. On CUDA, the generator of
    the run's own device: saved from it, and restored into the device of the run that resumes, whatever its index
    (another GPU, another ``CUDA_VISIBLE_DEVICES``)."""

    def __init__(self, device: torch.device = CPU):
        self.device = device

    def state_dict(self) -> dict:
        version, internal, gauss_next = random.getstate()
        numpy_state = np.random.get_state(legacy=False)
        return {
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
            "numpy": {
                "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                "pos": int(numpy_state["state"]["pos"]),
                "has_gauss": int(numpy_state["has_gauss"]),
                "gauss": float(numpy_state["gauss"]),
            },
            "torch": torch.get_rng_state(),
            "cuda": [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else [],
        }

    def load_state_dict(self, state: dict) -> None:
        python = state["python"]
        random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
        numpy_state = state["numpy"]
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                "has_gauss": numpy_state["has_gauss"],
                "gauss": numpy_state["gauss"],
            }
        )
        torch.set_rng_state(state["torch"])
        # A checkpoint made on a GPU resumes on the CPU too (not bit-exact then, but it runs). One written before
        # the run's own device was recorded holds every visible device's, the first being a plain --dev cuda's.
        if state["cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"][0], self.device)
