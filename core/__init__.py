"""softgrad's backend-agnostic core: the Backend protocol and what is built on it.

Importing ``core`` imports no array library beyond NumPy-free Python; the
frameworks (torch, cupy) are imported only when their backend is asked for.
"""

from core.errors import BackendUnavailableError
from core.protocol import Backend, Reduction
from core.sgd import SGDState

__all__ = ["Backend", "BackendUnavailableError", "Reduction", "SGDState"]
