"""The Backend protocol: the contract every array backend implements.

This module carries the documentation; the backends stay thin. Semantics are
those of ``torch.nn.functional`` and ``torch.optim.SGD`` except where PyTorch
returns NaN and the mathematics has a value (see "Non-finite values" below).

Conventions used by every method
--------------------------------
``Array``
    the backend's own array type (``numpy.ndarray``, ``torch.Tensor``,
    ``cupy.ndarray``). Floating-point computations accept float32 and float64
    and return the input's dtype; float32 stays float32.
Logits
    shape ``(N, C)``: N samples (N >= 1), C classes (C >= 1).
Targets
    either class indices, an integer array of shape ``(N,)`` with values in
    ``[0, C)`` or equal to ``ignore_index``; or class probabilities, a
    floating array of shape ``(N, C)`` with the dtype of the logits (rows
    are not required to sum to 1, as in PyTorch).
``weight``
    optional per-class weights, floating, shape ``(C,)``.
``reduction``
    ``"none"`` (per-sample values, shape ``(N,)``), ``"sum"`` or ``"mean"``.
    With class-index targets the mean is the weighted mean: the sum divided by
    the sum of ``weight[target[i]]`` over the samples not ignored (the number
    of samples not ignored when there is no weight). With probability targets
    the mean divides by N, as in PyTorch.

Functional contract
-------------------
Every operation returns its result. Callers always use what is returned and
never rely on an input being modified: on a library whose arrays are immutable
(JAX) nothing can be modified in place, and the shared implementation
(``backends/array_api.py`` and the definitions in :mod:`softgrad.numerics.losses` and
:mod:`softgrad.numerics.optim`) never does. A backend whose arrays are mutable may
update its own outputs and optimizer state in place for speed (NumPy's scratch
buffers, torch's fused SGD, the CuPy kernels); the suite checks each such
override against the shared definition.

Two parts
---------
:class:`Backend` (this module) is what every backend must do.
:class:`softgrad.numerics.hooks.BackendHooks` is what a backend may do for speed
or to describe itself (``scope``, ``label_range``, ``chunk_ops``,
``check_array``, ``difference_sign``, ``affine_relu``,
``relu_backward_inplace``, ``relu_bias_backward``, ``on_gpu``,
``peak_memory``; and the convolution and pooling operations ``conv2d``,
``conv2d_backward``, ``max_pool2d``, ``max_pool2d_backward``, ``avg_pool2d``,
``avg_pool2d_backward``, ``permute_dims``, whose defaults are written once on
the array API); every hook has its default in
:class:`softgrad.numerics.hooks.BackendDefaults`, so the layers above call any
member of either part as an ordinary method.

Losses and optimizers
---------------------
Each loss in :data:`softgrad.numerics.losses.LOSSES` is, on a backend built on
the shared implementation, the methods ``X``, ``X_grad`` and ``X_and_grad``
(``cross_entropy``, ``cross_entropy_grad``, ``cross_entropy_and_grad``), and
each optimizer in :data:`softgrad.numerics.optim.OPTIMIZERS` the methods
``X_init`` and ``X_step`` (``sgd_init``, ``sgd_step``), each bound by one line
of the class body (:mod:`softgrad.numerics.methods`). A loss or optimizer
registered later runs on every backend through ``Loss.value_and_grad_on`` and
``Optimizer.step_on`` (or :func:`softgrad.numerics.methods.method_of`): the
backend's own method where it has one, the shared definition otherwise. The
ones below are the protocol's minimum; a plugin that implements the protocol
from scratch must provide them.

Non-finite values
-----------------
- ``-inf`` logits are allowed: they mark masked classes, whose probability is
  exactly 0. Where the target puts no mass on such a class the loss is finite
  and correct (``0 * log 0 = 0``), where PyTorch returns NaN.
- A loss that is mathematically infinite (target mass on a ``-inf`` logit,
  including the ``eps / C`` that label smoothing puts on every class) raises
  ``ValueError`` naming the sample.
- A row whose logits are all ``-inf``, or that holds NaN or ``+inf``, has no
  softmax: every operation on it raises ``ValueError`` naming the row. A
  silent NaN is never returned.
- An empty batch (N = 0) or a mean over no samples (every target ignored, or
  weights summing to 0) raises ``ValueError``.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from softgrad.numerics.hooks import BackendDefaults
from softgrad.numerics.optim.sgd import SGDState

Array = Any
Reduction = Literal["none", "mean", "sum"]


@runtime_checkable
class Backend(Protocol):
    """Numerical operations for softmax classification on one array library."""

    #: registry name, e.g. ``"numpy"``, ``"torch"``, ``"torch:cuda"``, ``"cupy"``.
    name: str
    #: where arrays live: ``"cpu"``, ``"cuda:0"``, ...
    device: str
    #: the array namespace (array API standard) of this backend's arrays: what the shared
    #: definitions of losses and optimizers compute with
    xp: Any

    # ---- plumbing --------------------------------------------------------

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """Return ``x`` as an array of this backend, on its device.

        ``x`` may be a NumPy array, a nested sequence, a scalar or an array of
        this backend. Without ``dtype`` the dtype is kept: float32 stays
        float32, float64 stays float64, integers stay integers. ``dtype`` is a
        NumPy dtype or its name (``"float32"``). Raises ``TypeError`` for a
        dtype the backend cannot hold (complex, object, strings).
        """
        ...

    def to_numpy(self, x: Array) -> Any:
        """Copy ``x`` to a ``numpy.ndarray`` on the host (the same dtype)."""
        ...

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work.

        Call before every clock read; a no-op on the CPU.
        """
        ...

    def matmul(self, a: Array, b: Array) -> Array:
        """Matrix product ``a @ b`` of 2-D arrays ``(n, k) @ (k, m) -> (n, m)``."""
        ...

    def affine(self, x: Array, weight: Array, bias: Array) -> Array:
        """``x @ weight + bias``: ``(n, k) @ (k, m) + (m,) -> (n, m)``, fused where the framework can."""
        ...

    def relu_backward(self, h: Array, dh: Array) -> Array:
        """The gradient through a ReLU whose output is ``h``: ``dh`` where ``h > 0``, else 0 (NaN in ``dh``
        where ``h <= 0`` gives 0 too). A new array; ``dh`` is not modified (the in-place variant is the
        hook :meth:`~softgrad.numerics.hooks.BackendHooks.relu_backward_inplace`).
        """
        ...

    def maximum(self, a: Array, b: Array | float) -> Array:
        """Elementwise maximum; ``b`` may be a Python scalar (``maximum(h, 0.0)`` is ReLU)."""
        ...

    def sum(self, x: Array, axis: int | None = None) -> Array:
        """Sum over ``axis`` (all elements when ``None``).

        Floating arrays keep their dtype (float32 sums stay float32); bool and
        integer arrays are counted in the default integer type.
        """
        ...

    def tanh(self, x: Array) -> Array:
        """Elementwise hyperbolic tangent (also gives a stable sigmoid: ``(1 + tanh(x/2)) / 2``)."""
        ...

    def sigmoid(self, x: Array) -> Array:
        """Elementwise ``1 / (1 + exp(-x))``, from ``exp(-|x|)``: no overflow and full relative
        precision for any float (float32 inputs of magnitude 1e4 included); exactly 0 and 1 at
        ``-inf`` and ``+inf``. Raises ``ValueError`` for a NaN input.
        """
        ...

    def log_sigmoid(self, x: Array) -> Array:
        """Elementwise ``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``, never the log of an underflowed
        sigmoid: finite for every finite ``x`` (``-1e4`` gives ``-1e4``). Raises ``ValueError`` for NaN.
        """
        ...

    def argmax(self, x: Array, axis: int = -1) -> Array:
        """Index of the largest entry along ``axis`` (the first one on ties), as integers."""
        ...

    def take(self, x: Array, indices: Array, axis: int = 0) -> Array:
        """The entries of ``x`` at ``indices`` (a 1-D integer array of this backend) along ``axis``:
        ``numpy.take``, a new array (shuffling a data set: ``take(x, order)``)."""
        ...

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array:
        """``x`` with the same entries in C order and shape ``shape`` (a view where the library can)."""
        ...

    def all_finite(self, x: Array) -> bool:
        """Whether every entry of ``x`` is finite (no NaN, no ``inf``), as a Python bool (one transfer)."""
        ...

    def where(self, condition: Array, x: Array, y: Array) -> Array:
        """``x`` where the boolean ``condition`` holds, else ``y`` (arrays of one shape and dtype), a new array."""
        ...

    # ---- softmax -------------------------------------------------------

    def softmax(self, z: Array, axis: int = -1) -> Array:
        """``exp(z - max) / sum(exp(z - max))`` along ``axis``.

        Shifted by the maximum of each slice, so it is stable for any finite
        logits (float32 logits of magnitude 1e4 give no inf or NaN). Entries
        that are ``-inf`` get probability exactly 0. Each slice lies in
        [0, 1] and sums to 1 within rounding. Same shape and dtype as ``z``.
        Raises ``ValueError`` for a slice that is all ``-inf`` or holds NaN or
        ``+inf``.
        """
        ...

    def log_softmax(self, z: Array, axis: int = -1) -> Array:
        """``z - max - log(sum(exp(z - max)))`` along ``axis``: log-sum-exp.

        Never computed as ``log(softmax(z))``, which underflows to ``-inf``
        for very negative logits. ``-inf`` entries give ``-inf``. Same
        edge cases and errors as :meth:`softmax`.
        """
        ...

    # ---- losses ----------------------------------------------------------

    def nll_loss(
        self,
        logp: Array,
        target: Array,
        *,
        weight: Array | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> Array:
        """Negative log-likelihood of class-index targets.

        ``logp``: ``(N, C)`` log-probabilities (usually ``log_softmax``).
        ``target``: ``(N,)`` integer class indices.

        ``loss[i] = -weight[target[i]] * logp[i, target[i]]``, and 0 for
        samples whose target equals ``ignore_index``; then reduced. A sample
        whose class has weight 0 contributes 0 even if its ``logp`` is
        ``-inf``. Returns a 0-d array (``"mean"``, ``"sum"``) or ``(N,)``.

        Raises ``ValueError`` for a label outside ``[0, C)`` (naming it and
        C), a length mismatch, a wrong ndim, an infinite loss, and a mean
        over no samples; ``TypeError`` for float labels.
        """
        ...

    def cross_entropy(
        self,
        logits: Array,
        target: Array,
        *,
        weight: Array | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> Array:
        """Cross-entropy between ``softmax(logits)`` and the target.

        Equal to ``nll_loss(log_softmax(logits), target)`` without smoothing
        (``CrossEntropyLoss = LogSoftmax + NLLLoss``). In general, with the
        per-sample target distribution ``q``,
        ``loss[i] = -sum_c q[i, c] * log_softmax(logits)[i, c]``:

        - class indices, smoothing ``eps`` in [0, 1]:
          ``q[i, c] = (1 - eps) * weight[t_i] * [c == t_i] + eps / C * weight[c]``
          (weight = 1 when absent), 0 for ignored samples.
        - probabilities ``p``: ``q[i, c] = weight[c] * ((1 - eps) * p[i, c] + eps / C)``;
          ``ignore_index`` must be negative (PyTorch's rule).

        Terms with ``q == 0`` count 0 even against a ``-inf`` logit. Returns
        a 0-d array or ``(N,)``; same errors as :meth:`nll_loss`, plus
        ``ValueError`` for probability targets of the wrong shape and for
        rows of logits that have no softmax.
        """
        ...

    def cross_entropy_grad(
        self,
        logits: Array,
        target: Array,
        *,
        weight: Array | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> Array:
        """Gradient of :meth:`cross_entropy` with respect to ``logits``, analytically.

        With ``q`` as in :meth:`cross_entropy` and ``s_i = sum_c q[i, c]``::

            d loss[i] / d logits[i, j] = s_i * softmax(logits)[i, j] - q[i, j]

        which is ``softmax - y`` for one-hot (or any normalised, unweighted)
        targets. ``"mean"`` divides by the same denominator as the loss
        (so ``(softmax - y) / N`` in the plain case); ``"none"`` returns the
        gradient of ``sum(loss)``, i.e. each sample's own gradient. Ignored
        samples get a zero row. Shape and dtype of ``logits``; no autograd.
        Masked (``-inf``) classes get gradient 0 where the target puts no
        mass on them. Same errors as :meth:`cross_entropy`.
        """
        ...

    def cross_entropy_and_grad(
        self,
        logits: Array,
        target: Array,
        *,
        weight: Array | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> tuple[Array, Array]:
        """``(cross_entropy(...), cross_entropy_grad(...))`` from one softmax.

        What a training step needs: the loss and its gradient while reading
        the logits once. Same semantics and errors as the two methods.
        """
        ...

    # ---- cross-entropy of a linear layer, chunked ------------------------

    def linear_cross_entropy(
        self,
        input: Array,
        linear_weight: Array,
        target: Array,
        *,
        linear_bias: Array | None = None,
        weight: Array | None = None,
        reduction: Reduction = "mean",
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        chunk_size: int | None = None,
        memory_budget: int | None = None,
    ) -> Array:
        """``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)`` without the N x V logits.

        PyTorch 2.14's ``torch.nn.functional.linear_cross_entropy``: ``input``
        ``(N, d)``, ``linear_weight`` ``(V, d)``, ``linear_bias`` ``(V,)``;
        ``target``, ``weight``, ``reduction``, ``ignore_index`` and
        ``label_smoothing`` as in :meth:`cross_entropy` (``ignore_index=None``,
        torch's default here, is -100), with its non-finite rules (a ``-inf``
        bias masks a class). Two terms of large-vocabulary
        training, both off by default:

        - ``z_loss``: adds ``z_loss * lse_i ** 2`` per token not ignored
          (``lse_i`` the log-sum-exp of its logits; PaLM, Liger's
          ``lse_square_scale``); not scaled by ``weight``; ``"mean"``
          divides it by the number of tokens not ignored.
        - ``softcap``: the logits are ``softcap * tanh(z / softcap)`` (Gemma 2).

        The tokens are processed ``chunk_size`` rows at a time; by default as
        many rows as fit ``memory_budget`` bytes of ``(rows, V)`` working
        arrays (default: 32 MiB, or half the size of ``linear_weight`` where
        that is more, so that a chunk keeps ``d / 2`` rows at any V). At most one chunk of logits exists at a time, so the
        peak extra memory is ``O(chunk_size * V)`` plus the gradients, never
        ``O(N * V)``. Tokens equal to ``ignore_index`` are dropped before
        chunking (they cost nothing). float16 and bfloat16 inputs, where a
        backend holds them, compute and accumulate in float32 and return
        their own dtype. Returns a 0-d array, or ``(N,)`` for ``"none"``.

        Raises ``ValueError``/``TypeError`` for shapes that do not fit
        (``linear_weight`` not ``(V, d)``, a bias not ``(V,)``), mixed
        dtypes, labels out of range, an infinite loss, a row of logits with
        no softmax (NaN or ``inf`` in ``input`` or ``linear_weight``, named by
        row), and negative ``z_loss``, non-positive ``softcap``, ``chunk_size``
        or ``memory_budget``.
        """
        ...

    def linear_cross_entropy_and_grad(
        self,
        input: Array,
        linear_weight: Array,
        target: Array,
        *,
        linear_bias: Array | None = None,
        weight: Array | None = None,
        reduction: Reduction = "mean",
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        chunk_size: int | None = None,
        memory_budget: int | None = None,
        grad_output: Array | float | None = None,
    ) -> tuple[Array, tuple[Array, Array, Array | None]]:
        """``(loss, (d_input, d_linear_weight, d_linear_bias))`` in one chunked pass.

        The gradients are computed during the forward pass, chunk by chunk,
        as Liger Kernel does: ``d_input`` has the shape of ``input`` (zero
        rows for ignored tokens), ``d_linear_weight`` of ``linear_weight``,
        ``d_linear_bias`` of ``linear_bias`` (``None`` without a bias). They
        are the gradients of what the loss returns, for every reduction:
        for ``"none"``, of ``sum(loss)``, or, given ``grad_output`` (shape
        ``(N,)``: the upstream gradient of each token's loss), of
        ``sum(grad_output * loss)``; for ``"mean"`` and ``"sum"`` a scalar
        ``grad_output`` scales them. Same arguments and errors as
        :meth:`linear_cross_entropy`.
        """
        ...

    # ---- optimizer -------------------------------------------------------

    def sgd_init(self, params: Sequence[Array]) -> SGDState:
        """The initial :class:`~softgrad.numerics.optim.sgd.SGDState` for ``params``: step 0, no momentum buffers."""
        ...

    def sgd_step(
        self,
        params: Sequence[Array],
        grads: Sequence[Array],
        state: SGDState,
        *,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> tuple[list[Array], SGDState]:
        """One step of ``torch.optim.SGD``, per parameter ``p`` with gradient ``g``::

            g = g + weight_decay * p
            buf = g                                   (first step with momentum)
            buf = momentum * buf + (1 - dampening) * g    (later steps)
            g = g + momentum * buf if nesterov else buf   (when momentum != 0)
            p = p - lr * g

        Returns the updated parameters and the new state; the gradients are not
        modified. The parameters and state passed in are consumed: a backend
        with mutable arrays may update them in place (as ``torch.optim.SGD``
        does), so only the returned ones are valid afterwards. Raises ``ValueError`` for negative or
        non-finite hyperparameters, nesterov without momentum or with
        dampening, and params/grads that do not match in number, shape or
        dtype.
        """
        ...


def protocol_members() -> list[str]:
    """The names every Backend must have: its attributes and methods."""
    names = {name for name in vars(Backend) if not name.startswith("_")}
    names |= {name for name in getattr(Backend, "__annotations__", {}) if not name.startswith("_")}
    return sorted(names)


def complete(backend: Any) -> Any:
    """Give a backend written from scratch (its own class, not built on ``ArrayAPIBackend``) the members it lacks.

    The one place where members are added to an instance (``get_backend`` calls it): every method of
    :class:`~softgrad.numerics.hooks.BackendDefaults` the backend does not define (the hooks, and ``take``,
    ``reshape``, ``all_finite``, ``where``, ``sigmoid``, ``log_sigmoid``, ``linear_cross_entropy[_and_grad]``),
    bound to it; ``xp``: the array API namespace of its arrays (through array-api-compat), where one is found;
    ``on_gpu``: whether ``device`` names a CUDA device. A backend that inherits ``BackendDefaults``, or that
    has no ``__dict__`` to hold them, is returned as it is (:func:`missing_members` then says what it lacks).
    Returns ``backend``.
    """
    if isinstance(backend, BackendDefaults) or not hasattr(backend, "__dict__"):
        return backend
    if not hasattr(backend, "xp"):
        xp = _namespace_of(backend)
        if xp is not None:
            backend.xp = xp
    if not hasattr(backend, "on_gpu"):
        backend.on_gpu = str(getattr(backend, "device", "")).startswith("cuda")
    for name, default in vars(BackendDefaults).items():
        if callable(default) and not name.startswith("_") and not hasattr(backend, name):
            setattr(backend, name, types.MethodType(default, backend))
    return backend


def _namespace_of(backend: Any) -> Any:
    import array_api_compat

    try:
        return array_api_compat.array_namespace(backend.asarray([0.0]))
    except Exception:  # no asarray, or arrays array-api-compat does not know: missing_members names xp
        return None


def missing_members(backend: Any) -> list[str]:
    """The protocol members ``backend`` lacks (empty when it implements the whole protocol)."""
    return [name for name in protocol_members() if not hasattr(backend, name)]
