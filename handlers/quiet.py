"""Library warnings that say nothing to a user, caught where they arise and logged once to the run's
``warnings.log``; every other warning goes on as it would have.

    with quiet_library_warnings(RunLayout(run_dir).warnings, where="iteration 300"):
        evaluator.run(batches)

Ignite's FID takes the matrix square root of a product of covariances with scipy, which warns "Matrix is singular"
whenever the two feature sets are degenerate (a collapsed generator, a small sample): the FID it returns is still
the number to read, and the line in the middle of the progress report says nothing a user can act on.
"""

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from runner.files import reported_write


def quiet_categories() -> tuple[type[Warning], ...]:
    """The warnings logged instead of shown (scipy is imported here, by an evaluation, not at a run's start)."""
    from scipy.linalg import LinAlgWarning

    return (LinAlgWarning,)


@contextlib.contextmanager
def quiet_library_warnings(log: Path | None, where: str = "") -> Iterator[None]:
    """Inside the block, ``quiet_categories()`` go to ``log`` (once per message; nowhere when ``log`` is None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    quiet = quiet_categories()
    for warning in caught:
        if issubclass(warning.category, quiet):
            if log is not None:
                log_once(log, f"{warning.category.__name__}: {warning.message}", where)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def log_once(log: Path, message: str, where: str) -> None:
    """Append ``message`` (with where it first arose) unless the log holds it already."""
    seen = log.read_text(errors="replace").splitlines() if log.exists() else []
    if any(line.startswith(message) for line in seen):
        return
    with reported_write(log), log.open("a") as file:
        file.write(f"{message} (first at {where})\n" if where else f"{message}\n")
