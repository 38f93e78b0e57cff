"""What the command lines share: a parser whose errors are one line, not the whole usage, and the one
place that maps what a command raises to its exit status (:func:`run_main`)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reports a bad argument in one line and a pointer to ``--help``.

    argparse prints the whole usage (two dozen lines for ``softgrad train``) before the one line that
    matters; the line alone says what to fix. The exit status stays argparse's (2).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: the environment variable that shows the traceback behind a command's error
DEBUG_VARIABLE = "SOFTGRAD_DEBUG"


def debugging() -> bool:
    """Whether ``SOFTGRAD_DEBUG`` asks for tracebacks (set, and neither empty nor ``0``)."""
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (a flag, a file, the data, a backend that cannot run here), not a bug:
    their message says what to fix. Imported when asked, so a command's start imports no array library."""
    from softgrad.numerics.errors import BackendUnavailableError

    try:
        from softgrad.datasets import DatasetError
    except ImportError:  # a broken install (NumPy missing): that error is the bug to report, not this one
        return (BackendUnavailableError, OSError, ValueError, TypeError)
    return (BackendUnavailableError, DatasetError, OSError, ValueError, TypeError)


def run_main(prog: str, main: Callable[[Sequence[str] | None], int | None],
             argv: Sequence[str] | None = None) -> int:
    """``main(argv)``'s exit status, with what escapes it mapped in one place for every command:

    - bad input (:func:`bad_input_errors`): one line ``PROG: message``, status 2;
    - any other exception, a bug: one line naming it and ``SOFTGRAD_DEBUG=1``, status 1;
    - Ctrl-C: ``PROG: interrupted``, status 130; output piped into ``head`` and closed: quietly 0.

    With ``SOFTGRAD_DEBUG=1`` the traceback comes before the line. ``SystemExit`` (argparse's ``--help`` and
    its one-line errors) passes through.
    """
    try:
        status = main(None if argv is None else list(argv))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away: no traceback, and none at exit when stdout is flushed
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (captured)
            pass
        return 0
    except Exception as error:
        if debugging():
            traceback.print_exc()
        if isinstance(error, bad_input_errors()):
            print(f"{prog}: {error or type(error).__name__}", file=sys.stderr)
            return 2
        hint = "" if debugging() else f"; set {DEBUG_VARIABLE}=1 for the traceback"
        print(f"{prog}: internal error, a bug in softgrad: {type(error).__name__}: {error}{hint}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)


__all__ = ["DEBUG_VARIABLE", "OneLineErrorParser", "bad_input_errors", "debugging", "run_main"]
