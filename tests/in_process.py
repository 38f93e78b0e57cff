"""A command's ``main`` run in the test's own process, read as a finished subprocess: its exit status and what
it printed.

A new interpreter per command (Python, NumPy, matplotlib and the backends imported again) took most of the
command-line tests' time. The tests about the process itself still start one: the console script's exit
status, a fresh interpreter's imports, Ctrl-C, packaging, plugins installed outside.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Finished:
    """What ``subprocess.run(..., capture_output=True, text=True)`` gives, for a command run in this process."""

    returncode: int
    stdout: str
    stderr: str


def run(main: Callable[[Sequence[str] | None], int | None], *args: object) -> Finished:
    """``main(args)`` with its output captured; ``SystemExit`` (argparse's ``--help`` and its errors) read as the
    interpreter reads it at exit: an integer is the status, ``None`` is 0, a message goes to stderr with 1."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in args])
        except SystemExit as exit:
            status = exit.code
            if status is not None and not isinstance(status, int):
                print(status, file=err)
                status = 1
    return Finished(0 if status is None else int(status), out.getvalue(), err.getvalue())
