"""User mistakes end with one line on stderr and a non-zero exit; bugs keep their traceback."""

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
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last checkpoint written is kept", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
