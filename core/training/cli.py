"""What the command lines share: a parser whose errors are one line, not the whole usage."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reports a bad argument in one line and a pointer to ``--help``.

    argparse prints the whole usage (two dozen lines for ``core.train``) before the one line that
    matters; the line alone says what to fix. The exit status stays argparse's (2).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


__all__ = ["OneLineErrorParser"]
