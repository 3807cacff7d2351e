"""The project's packages are the ones imported (``datasets`` is also Hugging Face's package name)."""

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", ["datasets", "engines", "handlers", "models", "runner"])
def test_top_level_package_is_this_projects(package):
    module = importlib.import_module(package)
    location = Path(module.__file__).resolve().parent
    assert location == REPO / package, (
        f"'import {package}' found {location}, not this project's {REPO / package}. "
        "Hugging Face's `datasets` cannot share an environment with this project: use a separate virtualenv."
    )


def test_datasets_is_the_runners_not_hugging_faces():
    import datasets

    assert getattr(datasets, "PROJECT_DATASETS", False), "the wrong `datasets` package is installed (Hugging Face's?)"


def test_models_do_not_depend_on_the_training_stack():
    sources = "\n".join(path.read_text() for path in (REPO / "models").glob("*.py"))
    for forbidden in ("import ignite", "from ignite", "import optuna", "import argparse"):
        assert forbidden not in sources
