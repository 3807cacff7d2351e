"""The project's layout: its packages are the ones imported, and each layer imports only the layers below it.

The layering is read from the sources' import statements (AST), not from a list kept by hand: a new import that
crosses a layer fails here with the file and line that made it (docs/architecture.md).
"""

import ast
import importlib
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("runner", "models", "datasets", "engines", "handlers", "tasks")
LAUNCHERS = ("scripts", "benchmarks")
# What each top-level directory may import from the project (docs/architecture.md, "Layers").
ALLOWED = {
    "runner": set(),
    "models": {"runner"},
    "datasets": {"runner", "models"},
    "engines": {"runner", "models", "datasets"},
    "handlers": {"runner"},
    "tasks": {"runner", "models", "datasets", "engines", "handlers"},
    "scripts": {"runner", "tasks"},
    "benchmarks": {*PACKAGES, "scripts"},
}
LONGEST_FUNCTION = 60  # lines, everywhere but benchmarks/
LONGEST_TASK_MODULE = 300  # lines


def sources(directory: str) -> list[Path]:
    return sorted((REPO / directory).rglob("*.py"))


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(module, line) for each absolute import in ``path`` (``from a.b import c`` -> ``a.b``), inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def project_imports(path: Path) -> list[tuple[str, int]]:
    """(top-level project package, line) for each import in ``path``, the ones inside functions included."""
    return [(name.split(".")[0], line) for name, line in imported_modules(path) if name.split(".")[0] in ALLOWED]


def crossings(directory: str) -> list[str]:
    allowed = ALLOWED[directory] | {directory}
    return [
        f"{path.relative_to(REPO)}:{line} imports {package}"
        for path in sources(directory)
        for package, line in project_imports(path)
        if package not in allowed
    ]


@pytest.mark.parametrize("directory", [*PACKAGES, *LAUNCHERS])
def test_each_layer_imports_only_the_layers_below_it(directory):
    assert crossings(directory) == [], f"{directory}/ may import only {sorted(ALLOWED[directory])}"


def test_the_import_check_sees_imports_inside_functions_and_from_forms(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom tasks.gan import Gan\n\ndef f():\n    import handlers.images\n")
    assert project_imports(sample) == [("tasks", 2), ("handlers", 5)]


def test_no_import_cycle_between_top_level_packages():
    graph = {
        package: {imported for path in sources(package) for imported, _ in project_imports(path)} - {package}
        for package in PACKAGES
    }
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle between packages: {' -> '.join(error.args[1])}")
    assert order.index("runner") < order.index("tasks")


def long_functions(directory: str) -> list[str]:
    found = []
    for path in sources(directory):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    return found


@pytest.mark.parametrize("directory", [*PACKAGES, "scripts"])
def test_functions_are_short_everywhere_but_the_benchmarks(directory):
    assert long_functions(directory) == []


def test_task_modules_say_only_what_differs_for_their_task():
    too_long = {
        path.name: lines
        for path in sources("tasks")
        if (lines := len(path.read_text().splitlines())) > LONGEST_TASK_MODULE
    }
    assert too_long == {}


def test_tests_mirror_the_packages():
    for package in [*PACKAGES, "scripts"]:
        assert list((REPO / "tests" / package).glob("test_*.py")), f"tests/{package}/ has no tests"


@pytest.mark.parametrize("package", PACKAGES)
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
    sources_text = "\n".join(path.read_text() for path in (REPO / "models").glob("*.py"))
    for forbidden in ("import ignite", "from ignite", "import optuna", "import argparse"):
        assert forbidden not in sources_text


def string_constants(directory: str, value: str) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in sources(directory)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == value
    ]


@pytest.mark.parametrize("directory", [package for package in (*PACKAGES, "scripts") if package != "runner"])
def test_the_run_directorys_files_are_named_only_by_runner(directory):
    """runner.rundir.RunLayout owns the names: a reader elsewhere asks it, so a file moves in one place."""
    for name in ("metrics.jsonl", "config.json"):
        assert string_constants(directory, name) == []


@pytest.mark.parametrize("directory", [package for package in (*PACKAGES, "scripts") if package != "runner"])
def test_the_checkpoints_multi_process_format_is_read_only_by_runner(directory):
    """runner.distributed.saved_ranks reads a state saved by one process or several."""
    assert string_constants(directory, "ranks") == []


@pytest.mark.parametrize("directory", ["runner", "tasks"])
def test_no_contract_is_guessed_with_hasattr(directory):
    """Settings declare their hooks (runner.settings.SettingsHooks, RunSettings.schedule): nothing asks whether an
    attribute exists. (Asking the platform, ``hasattr(os, ...)``, is no contract of this project's.)"""
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in sources(directory)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "hasattr"
        and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "os")
    ]
    assert found == []


def code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module's code (its docstrings left out), with their lines."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_the_plumbing_names_no_script_or_program():
    """runner/ is below the launchers: how a task is started (scripts/, the installed command) is said above it."""
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in sources("runner")
        for line, text in code_strings(path)
        if "scripts/" in text or text == "ignite-book"
    ]
    assert found == []


# Private names used on purpose, each with why. A library's private name needs a wrapper that says why and a test
# against the pinned version; the project's own names on another object are its own contract.
PRIVATE_NAMES_ALLOWED = {
    ("engines/adam.py", "_init_group"): "torch's only point before the fused kernel; pinned by test_adam",
    ("datasets/images.py", "_shutdown_workers"): "no public call stops a loader's workers; pinned by a test",
    ("datasets/safe_pickle.py", "_Unpickler"): "the standard library's Python unpickler, subclassed",
    ("engines/conv_kernels.py", "_library_forward"): "the project's own, kept on the layer it switches",
    ("runner/rundir.py", "_remove_partial_writes"): "the project's own, on its own class",
}


def private_names(path: Path) -> list[tuple[int, str]]:
    """``obj._name`` where obj is not self or cls, and ``from module import _name``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("_")]
    return found


@pytest.mark.parametrize("directory", [*PACKAGES, "scripts"])
def test_no_private_name_of_a_library_without_a_pinned_wrapper(directory):
    found = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in sources(directory)
        for line, name in private_names(path)
        if (str(path.relative_to(REPO)), name) not in PRIVATE_NAMES_ALLOWED
    ]
    assert found == []


def test_the_private_name_check_sees_attributes_and_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from torch.utils.data.dataloader import _Iter\nstudy._storage.get(trial._trial_id)\nself._x\n")
    assert sorted(name for _, name in private_names(sample)) == ["_Iter", "_storage", "_trial_id"]


@pytest.mark.parametrize("directory", [*PACKAGES, "scripts"])
def test_no_mock_outside_the_tests(directory):
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in sources(directory)
        for name, line in imported_modules(path)
        if name.split(".")[0] == "unittest"
    ]
    assert found == []


def state_set_by_hooks(path: Path) -> list[str]:
    """``self.x = ...`` in a method other than ``__init__`` of a class whose bases end in ``Task``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ClassDef) and any(ast.unparse(base).endswith("Task") for base in node.bases)):
            continue
        for method in node.body:
            if not isinstance(method, ast.FunctionDef) or method.name == "__init__":
                continue
            found += [
                f"{path.relative_to(REPO)}:{target.lineno}: {node.name}.{method.name}"
                for assign in ast.walk(method)
                if isinstance(assign, ast.Assign | ast.AnnAssign | ast.AugAssign)
                for target in ast.walk(assign)
                if isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
                and isinstance(target.ctx, ast.Store)
            ]
    return found


def test_no_task_hook_keeps_state_for_another():
    """``Task.build`` hands its later hooks what they need (``Parts.built``, ``RunContext``): no hook order matters."""
    assert [line for path in sources("tasks") for line in state_set_by_hooks(path)] == []


def test_the_atari_gans_start_imports_neither_optuna_nor_scipy():
    """Start-up: a sweep imports optuna, an evaluation scipy; the launch of a run pays for neither."""
    code = "import sys, tasks.commands, tasks.atari_gan, tasks.image_gan\n"
    code += "print(sorted({'optuna', 'scipy'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"
