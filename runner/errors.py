"""User mistakes end with one line on stderr and a non-zero exit; bugs keep their traceback."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """Something the user can fix: a bad flag value, a missing file, an unusable checkpoint or device."""


EXIT_USER_ERROR = 2


def say(message: str) -> None:
    """A message for the user on stderr (stdout stays for report lines and results)."""
    print(message, file=sys.stderr, flush=True)


def exit_cleanly(main: Callable[[], int | None], prog: str) -> None:
    """Run ``main``; a ``UserError`` or Ctrl-C becomes one line on stderr and a non-zero exit."""
    try:
        code = main()
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last checkpoint written is kept", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
