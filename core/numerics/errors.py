"""Exceptions shared by every backend."""


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here.

    The message says what is missing (unknown name, framework not installed,
    no CUDA device) and, where one exists, the ``pip install`` command that
    fixes it.
    """
