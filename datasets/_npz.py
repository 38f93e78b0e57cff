"""What NumPy's errors on reading ``.npy`` and ``.npz`` files mean, for every reader of them (the CIFAR-10
arrays here; checkpoints and ``softgrad evaluate``'s inputs above)."""

from __future__ import annotations


def npz_problem(error: Exception) -> str:
    """What NumPy's error on reading a ``.npy`` or ``.npz`` means for its user. NumPy's own advice for
    object arrays (load them with ``allow_pickle``) would run code from the file: it is never taken."""
    if "allow_pickle" in str(error) or "pickled" in str(error):
        return "it holds Python objects (pickled data), not plain arrays; softgrad never loads those"
    return f"{type(error).__name__}: {error}"
