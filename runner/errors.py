"""User mistakes end with one line on stderr and a non-zero exit; bugs keep their traceback."""

import atexit
import gc
import logging
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Something the user can fix: a bad flag value, a missing file, an unusable checkpoint or device."""

    exit_code = EXIT_USER_ERROR


class CannotWrite(UserError):
    """A file the run needs could not be written: a full disk, a quota, a read-only folder (``runner.files``)."""

    exit_code = 1


def say(message: str) -> None:
    """A message for the user on stderr (stdout stays for report lines and results)."""
    print(message, file=sys.stderr, flush=True)


def quiet_engine_error_logs() -> None:
    """Ignite's engines log "run is terminating due to exception: ..." before re-raising it. The exception itself
    reaches the user (one line for a user error, a traceback for a bug), so those lines only repeat it."""
    for name in ("ignite.engine.engine.Engine", "ignite.engine.engine.DeterministicEngine"):
        logging.getLogger(name).addFilter(lambda record: "terminating due to exception" not in record.getMessage())


def exit_cleanly(main: Callable[[], int | None], prog: str) -> None:
    """Run ``main``; a ``UserError`` or Ctrl-C becomes one line on stderr and a non-zero exit."""
    quiet_engine_error_logs()
    try:
        code = main()
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        code = error.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last checkpoint written is kept", file=sys.stderr)
        code = 130
    # Only here: a bug's traceback keeps its frames, and the emulators they hold, alive to the very end.
    exit_without_a_final_collection()
    sys.exit(code or 0)


def exit_without_a_final_collection() -> None:
    """Spare the interpreter's last garbage collections at exit the walk over every object torch created.

    That walk took about a second on the development machine (docs/speed.md), for memory the OS takes back anyway.
    At exit, one collection frees what is already garbage (so extension objects such as the emulators are still
    destroyed, as their bindings expect), then ``gc.freeze`` leaves everything alive out of the collections that
    follow. The atexit handlers still run, and every file of a run is closed before its launcher returns. An object
    still reachable at exit that only a collection would destroy is not destroyed: a file it left open and unflushed
    would lose its buffer, so nothing of this project leaves one open.
    """
    atexit.unregister(collect_then_freeze)  # once, however many launches one process makes (the tests make many)
    atexit.register(collect_then_freeze)


def collect_then_freeze() -> None:
    gc.collect()
    gc.freeze()


def is_pruned_trial(error: BaseException) -> bool:
    """A sweep's pruning (``optuna.TrialPruned``). Only a sweep imports optuna, so a run's start does not pay for it:
    where it is not imported, nothing was pruned."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(error, optuna.TrialPruned)
