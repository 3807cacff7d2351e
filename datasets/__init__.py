"""Data sources of the runner (not Hugging Face's ``datasets``: the two cannot share one environment)."""

import os
from pathlib import Path

PROJECT_DATASETS = True  # tests/test_layout.py checks this to catch the other package shadowing ours


def cache_dir() -> Path:
    """The runner's cache (downloaded data sets, Atari-FID's classifier): ``$IGNITE_BOOK_CACHE`` or
    ``~/.cache/ignite-book-runner``."""
    return Path(os.environ.get("IGNITE_BOOK_CACHE") or Path.home() / ".cache" / "ignite-book-runner")
