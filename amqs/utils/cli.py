"""How every entry point reports a user's mistake: one line naming the fix, a non-zero exit, no traceback.

A missing file, a malformed row, an infeasible budget, an unknown option or a loss that turned NaN is the
user's to fix, not a crash of amqs: the traceback only hides the one line that matters. ``AMQS_DEBUG=1``
(or Hydra's ``HYDRA_FULL_ERROR=1``) shows the traceback again.

Example::

    def main(argv=None):
        with user_errors("amqs-export"):
            export_run(...)

    $ amqs-export results/runs/nope --out x
    amqs-export: results/runs/nope: no such run folder
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake in the user's input or setup; its message says what to change."""


# What amqs raises for bad input: its own UserError (a NaN loss, a checkpoint of another schedule, ...) and the
# built-in kinds its checks use (ValueError: a bad setting or budget, DataError, RunConfigError; the file
# errors). A KeyError, AttributeError, TypeError or an OmegaConf error raised by amqs's own code is a bug and
# keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, FileExistsError,
                                                 PermissionError, NotADirectoryError, IsADirectoryError,
                                                 NotImplementedError)


def debug_enabled() -> bool:
    """Whether tracebacks were asked for (``AMQS_DEBUG=1`` or ``HYDRA_FULL_ERROR=1``)."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("AMQS_DEBUG", "HYDRA_FULL_ERROR"))


def one_line(error: BaseException) -> str:
    """The error's message on one line (the lines of a multi-line message joined).

    Example:
        >>> one_line(FileNotFoundError("x.tsv not found"))
        'x.tsv not found'
    """
    text = str(error).strip()
    return " ".join(text.split()) or type(error).__name__


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Turn user errors raised inside into ``prog: message`` on stderr and exit status 2.

    A KeyboardInterrupt exits with 130 and says that the same command resumes. Anything else (a bug)
    keeps its traceback.
    """
    try:
        yield
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print(f"{prog}: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except USER_ERRORS as e:
        if debug_enabled():
            raise
        print(f"{prog}: {one_line(e)}  (AMQS_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
