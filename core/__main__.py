"""``softgrad`` (the console script) and ``python -m softgrad``: one command, six subcommands.

    softgrad train --dataset mnist --epochs 2       # train, write a run folder
    softgrad evaluate runs/mnist-mlp-numpy-...      # its test accuracy, per class, confusion matrix
    softgrad predict runs/... digits.npy 7.png      # its predictions for arrays and images
    softgrad export runs/... --to model.safetensors # its weights for torch (or --to model.onnx)
    softgrad bench                                  # which backend is fastest here
    softgrad conformance NAME                       # the protocol's checks on one backend
    softgrad --version

Each subcommand is the ``main`` of its module (:data:`COMMANDS`), imported only when asked for, so
``softgrad --help`` and ``softgrad --version`` import no array library. What a subcommand raises is mapped to
its exit status in one place, :func:`softgrad.commands.cli.run_main`: 2 with one line for bad input, 1 with one
line for a bug (``SOFTGRAD_DEBUG=1`` shows its traceback), 130 for Ctrl-C.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module, function, what it does); the module is imported only when its subcommand runs
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("softgrad.commands.train", "main", "train a classifier or a regressor on any backend; write a run folder"),
    "evaluate": ("softgrad.commands.evaluate", "main", "a trained run's test figures: accuracy per class, confusion "
                 "matrix (RMSE, MAE, R² for a regressor)"),
    "predict": ("softgrad.commands.evaluate", "predict_main", "a trained run's predictions for .npy arrays, .csv rows and image "
                "files"),
    "export": ("softgrad.commands.export", "main", "a run's weights as .safetensors (torch) or .onnx, taking raw "
               "samples; --from: a torch MLP in as a run"),
    "bench": ("softgrad.bench.__main__", "main", "measure the backends on this machine and recommend one"),
    "conformance": ("softgrad.backends.conformance.__main__", "main", "check one registered backend against "
                    "the protocol"),
}
PROG = "softgrad"


def version() -> str:
    import softgrad

    return softgrad.__version__


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    commands = "\n".join(f"  {name:<{width}} {about}" for name, (_, _, about) in COMMANDS.items())
    return (f"usage: {PROG} COMMAND [ARGS...]   ({PROG} COMMAND --help: its arguments)\n\n"
            "Train classifiers and regressors with hand-written backward passes on NumPy, PyTorch, JAX, CuPy or "
            "array-api-strict.\n\n"
            f"commands:\n{commands}\n\n"
            "options:\n"
            "  -h, --help     show this help\n"
            "  --version      show softgrad's version\n\n"
            "Exit status: 0 done; 2 bad input (one line says what to fix); 1 a failed check, a run that "
            "diverged, or a bug\n(SOFTGRAD_DEBUG=1 shows its traceback); 130 interrupted.\n")


def _refuse(message: str) -> int:
    print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
    return 2


def _unknown_command(name: str) -> int:
    close = difflib.get_close_matches(name, list(COMMANDS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return _refuse(f"unknown command {name!r}{hint}; the commands are {', '.join(COMMANDS)}")


def run_command(name: str, argv: Sequence[str]) -> int:
    """Subcommand ``name`` with its arguments ``argv``: its exit status, errors mapped by ``run_main``."""
    from softgrad.commands.cli import run_main

    module, function, _ = COMMANDS[name]

    def command(args: list[str] | None) -> int | None:
        loaded = importlib.import_module(module)
        own_name = getattr(loaded, "PROG_NAME", None)  # a command that also runs alone (python -m bench)
        if own_name is None:
            return getattr(loaded, function)(args)
        loaded.PROG_NAME = f"{PROG} {name}"  # named as the user called it, for this call only
        try:
            return getattr(loaded, function)(args)
        finally:
            loaded.PROG_NAME = own_name

    return run_main(f"{PROG} {name}", command, list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line's exit status for ``argv`` (default ``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), end="")
        return 2
    first, rest = args[0], args[1:]
    if first in ("-h", "--help"):
        print(usage(), end="")
        return 0
    if first == "--version":
        print(f"{PROG} {version()}")
        return 0
    if first == "help":  # softgrad help [COMMAND]
        if not rest:
            print(usage(), end="")
            return 0
        first, rest = rest[0], ["--help"]
        if first not in COMMANDS:
            return _unknown_command(first)
    if first.startswith("-"):
        return _refuse(f"unknown option {first!r} before the command; give a command first "
                       f"({', '.join(COMMANDS)})")
    if first not in COMMANDS:
        return _unknown_command(first)
    try:
        return run_command(first, rest)
    except SystemExit as exit:  # argparse's --help (0) and its one-line errors (2)
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
