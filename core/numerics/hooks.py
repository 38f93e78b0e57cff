"""The optional half of the Backend protocol: hooks a backend may define, each with its default here.

:class:`softgrad.numerics.protocol.Backend` is what every backend must do;
:class:`BackendHooks` is what a backend *may* do to run faster or to say
something about itself. The layers above (losses, training, bench) call a hook
as an ordinary method, ``be.label_range(labels)``: every backend has every hook,
because :class:`BackendDefaults` holds the default of each, in one place.

- A backend built on the shared implementation (``ArrayAPIBackend``) inherits
  :class:`BackendDefaults` and overrides the hooks its framework does better,
  as ordinary methods.
- A plugin written from scratch (its own class, only the required protocol)
  gets the defaults it lacks from :func:`softgrad.numerics.protocol.complete`,
  which :func:`softgrad.get_backend` calls: the one place where members are
  added to an instance.

Like NetworkX's ``can_run``/``should_run``, a hook answers for the backend and
the default answers for everyone else; unlike a required member, a hook never
changes what is computed beyond rounding (the suite checks each override
against the default or the shared definition it names).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from softgrad.numerics import convolution, pooling
from softgrad.numerics.losses import binary
from softgrad.numerics.losses.linear_cross_entropy import ChunkOps
from softgrad.numerics.methods import linear_cross_entropy_methods

Array = Any


@runtime_checkable
class BackendHooks(Protocol):
    """The optional members, each defaulted by :class:`BackendDefaults`.

    Cross-entropy's fused path is a hook (:meth:`fused_cross_entropy`), since
    three methods share it. A fused optimizer is not: a backend overrides the
    method itself (``sgd_step``) and returns ``super().sgd_step(...)`` where its
    fused path declines the case.
    """

    #: whether the arrays live on a GPU (bench reads it against the GPU's matmul rate). Default: ``False``
    #: (a plugin: whether ``device`` names a CUDA device).
    on_gpu: bool

    def peak_memory(self, run: Callable[[], object]) -> int | None:
        """Call ``run()`` and return the peak bytes this backend allocated meanwhile; ``None`` where the
        framework keeps no such statistic. Default: runs it, ``None``."""
        ...

    def scope(self) -> AbstractContextManager[Any]:
        """The context the training loop runs a step (and predict a batch) in: JAX's 64-bit mode. Default:
        no context (``contextlib.nullcontext()``)."""
        ...

    def label_range(self, labels: Array) -> tuple[int, int]:
        """The smallest and largest of the integer ``labels``, as Python ints (torch and JAX fetch both in
        one transfer). Default: ``int(xp.min(labels)), int(xp.max(labels))``."""
        ...

    def chunk_ops(self) -> Any:
        """The per-chunk operations of ``linear_cross_entropy``: a
        :class:`softgrad.numerics.losses.linear_cross_entropy.ChunkOps`, or a subclass that works in place
        or in a fused kernel (checked against ``ChunkOps`` by the suite). Default: ``ChunkOps(self)``."""
        ...

    def check_array(self, op: str, what: str, x: Any) -> None:
        """Raise ``TypeError`` naming ``op`` and ``what`` when ``x`` is not an array of this backend (a
        NumPy array given to torch, say). Default: accepts everything (a backend that cannot tell)."""
        ...

    def difference_sign(self, input: Array, target: Array, d: Array) -> Array:
        """``sign(input - target)``, given ``d = input - target`` (the gradient of the l1-type losses);
        exact where ``d`` is subnormal too (XLA flushes subnormals to zero). Default: ``xp.sign(d)``."""
        ...

    def fused_cross_entropy(self, op: str, logits: Array, target: Array,
                            options: dict[str, Any]) -> tuple[Array, Array] | None:
        """``(loss, grad)`` of ``cross_entropy(logits, target, **options)`` from the backend's fused path
        (one compiled sweep, a CUDA kernel, torch's log_softmax with the gradient in place), or ``None`` where
        it does not take the case (other options, or something to diagnose: the shared definition then
        computes or names it). ``cross_entropy``, ``cross_entropy_grad`` and ``cross_entropy_and_grad`` call
        it first, ``op`` saying which (for messages; a path may decline the value alone). The suite and the
        conformance kit check each backend's result against the shared definition,
        :func:`softgrad.numerics.losses.cross_entropy.cross_entropy`. Default: ``None``."""
        ...

    def affine_relu(self, x: Array, weight: Array, bias: Array) -> Array:
        """``maximum(affine(x, weight, bias), 0.0)``, the bias and the ReLU in one pass where the framework
        can (NaN stays NaN). Speed only. Default: those two calls."""
        ...

    def relu_backward_inplace(self, h: Array, dh: Array) -> Array:
        """:meth:`~softgrad.numerics.protocol.Backend.relu_backward`, allowed to overwrite ``dh`` (the caller
        passes a fresh array it no longer needs). Speed only. Default: ``relu_backward(h, dh)``."""
        ...

    def relu_bias_backward(self, h: Array, dh: Array) -> tuple[Array, Array]:
        """``(dz, sum(dz, axis=0))`` with ``dz = relu_backward(h, dh)``: the gradient through a ReLU and the
        bias gradient of the dense layer before it, in one pass where the framework can; may overwrite
        ``dh``, as :meth:`relu_backward_inplace`. Speed only. Default: those two calls."""
        ...

    # ---- convolution and pooling (NCHW; semantics of torch.nn.functional) -------------------------------
    # Arrays are (N, C, H, W), float32 or float64, results in x's dtype. stride, padding, dilation and
    # kernel_size are an int or a pair (rows, columns); padding is zeros on both sides (for max pooling:
    # entries that never win). A bad shape or argument raises one ValueError line naming it and the shapes
    # (a dtype that is not float32/float64, or x and weight of two dtypes: TypeError). The defaults are
    # written once on the array API (softgrad.numerics.convolution, softgrad.numerics.pooling: im2col and one
    # GEMM per call, col2im for the input gradient); the suite and the conformance kit check every backend's
    # against torch.nn.functional and autograd.

    def conv2d(self, x: Array, weight: Array, bias: Array | None = None, *, stride: Any = 1, padding: Any = 0,
               dilation: Any = 1, groups: int = 1) -> Array:
        """``torch.nn.functional.conv2d``: x ``(N, C, H, W)``, weight ``(O, C // groups, kH, kW)``, bias
        ``(O,)`` or ``None`` -> ``(N, O, Ho, Wo)`` with ``Ho = (H + 2*padding - dilation*(kH - 1) - 1) //
        stride + 1`` (W alike); a cross-correlation, as torch's. Default: im2col and one matrix product."""
        ...

    def conv2d_backward(self, x: Array, weight: Array, dy: Array, *, stride: Any = 1, padding: Any = 0,
                        dilation: Any = 1, groups: int = 1, need_dx: bool = True,
                        need_bias: bool = True) -> tuple[Array | None, Array, Array | None]:
        """The gradients of :meth:`conv2d` given ``dy`` (the output's gradient, ``(N, O, Ho, Wo)``):
        ``(dx, dweight, dbias)``, shaped as x, weight and ``(O,)``; ``dbias`` is ``dy`` summed over N, H and
        W. ``need_dx=False`` (the first layer) and ``need_bias=False`` skip those and return ``None`` in
        their place. Default: one matrix product for ``dweight``, one and col2im for ``dx``."""
        ...

    def max_pool2d(self, x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Array:
        """``torch.nn.functional.max_pool2d`` (no dilation, floor mode): the largest entry of each window;
        ``stride`` defaults to ``kernel_size``; ``padding`` at most half the kernel. NaN propagates."""
        ...

    def max_pool2d_backward(self, x: Array, dy: Array, kernel_size: Any, stride: Any = None,
                            padding: Any = 0) -> Array:
        """The gradient of :meth:`max_pool2d` with respect to ``x``: each window's ``dy`` goes to its largest
        entry, recomputed from ``x``; on ties, to the first in row-major order (torch's CPU rule); windows
        that overlap add up."""
        ...

    def avg_pool2d(self, x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Array:
        """``torch.nn.functional.avg_pool2d`` with its defaults (``count_include_pad=True``: padded zeros
        count in the mean, floor mode); ``stride`` defaults to ``kernel_size``."""
        ...

    def avg_pool2d_backward(self, x_shape: tuple[int, int, int, int], dy: Array, kernel_size: Any,
                            stride: Any = None, padding: Any = 0) -> Array:
        """The gradient of :meth:`avg_pool2d` with respect to its input, whose shape ``x_shape`` (a tuple)
        is all it needs: each window's ``dy / (kH * kW)`` spread over the window."""
        ...

    def permute_dims(self, x: Array, axes: tuple[int, ...]) -> Array:
        """The array API's ``permute_dims``: ``x`` with its axes in the order ``axes`` (NHWC images to NCHW:
        ``(0, 3, 1, 2)``); a view where the library can. Default: ``xp.permute_dims``."""
        ...


def hook_names() -> list[str]:
    """The names of the optional members (what :class:`BackendDefaults` defines)."""
    names = {name for name in vars(BackendHooks) if not name.startswith("_")}
    return sorted(names | set(BackendHooks.__annotations__))


class BackendDefaults:
    """The default of every hook, and of the required members the others define (``take``, ``reshape``,
    ``all_finite``, ``where``, ``sigmoid``, ``log_sigmoid``, ``linear_cross_entropy[_and_grad]``), all
    computed with ``self.xp``. Inherited by ``ArrayAPIBackend``; :func:`~softgrad.numerics.protocol.complete`
    gives a from-scratch plugin the ones it lacks."""

    xp: Any
    on_gpu: bool = False

    # ---- hooks (BackendHooks) ----------------------------------------------------------------

    def peak_memory(self, run: Callable[[], object]) -> int | None:
        run()
        return None

    def scope(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def label_range(self, labels: Array) -> tuple[int, int]:
        return int(self.xp.min(labels)), int(self.xp.max(labels))

    def chunk_ops(self) -> ChunkOps:
        return ChunkOps(self)

    def check_array(self, op: str, what: str, x: Any) -> None:
        return None

    def difference_sign(self, input: Array, target: Array, d: Array) -> Array:
        return self.xp.sign(d)

    def fused_cross_entropy(self, op: str, logits: Array, target: Array,
                            options: dict[str, Any]) -> tuple[Array, Array] | None:
        return None

    def affine_relu(self, x: Array, weight: Array, bias: Array) -> Array:
        return self.maximum(self.affine(x, weight, bias), 0.0)

    def relu_backward_inplace(self, h: Array, dh: Array) -> Array:
        return self.relu_backward(h, dh)

    def relu_bias_backward(self, h: Array, dh: Array) -> tuple[Array, Array]:
        dz = self.relu_backward_inplace(h, dh)
        return dz, self.sum(dz, axis=0)

    # ---- convolution and pooling: the array-API definitions (softgrad.numerics.convolution, .pooling) -----

    def conv2d(self, x: Array, weight: Array, bias: Array | None = None, *, stride: Any = 1, padding: Any = 0,
               dilation: Any = 1, groups: int = 1) -> Array:
        return convolution.conv2d(self, x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                                  groups=groups)

    def conv2d_backward(self, x: Array, weight: Array, dy: Array, *, stride: Any = 1, padding: Any = 0,
                        dilation: Any = 1, groups: int = 1, need_dx: bool = True,
                        need_bias: bool = True) -> tuple[Array | None, Array, Array | None]:
        return convolution.conv2d_backward(self, x, weight, dy, stride=stride, padding=padding,
                                           dilation=dilation, groups=groups, need_dx=need_dx,
                                           need_bias=need_bias)

    def max_pool2d(self, x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Array:
        return pooling.max_pool2d(self, x, kernel_size, stride, padding)

    def max_pool2d_backward(self, x: Array, dy: Array, kernel_size: Any, stride: Any = None,
                            padding: Any = 0) -> Array:
        return pooling.max_pool2d_backward(self, x, dy, kernel_size, stride, padding)

    def avg_pool2d(self, x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Array:
        return pooling.avg_pool2d(self, x, kernel_size, stride, padding)

    def avg_pool2d_backward(self, x_shape: tuple[int, int, int, int], dy: Array, kernel_size: Any,
                            stride: Any = None, padding: Any = 0) -> Array:
        return pooling.avg_pool2d_backward(self, x_shape, dy, kernel_size, stride, padding)

    def permute_dims(self, x: Array, axes: tuple[int, ...]) -> Array:
        return self.xp.permute_dims(x, tuple(axes))

    # ---- required members the others define ---------------------------------------------------

    def take(self, x: Array, indices: Array, axis: int = 0) -> Array:
        return self.xp.take(x, indices, axis=axis)

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array:
        return self.xp.reshape(x, tuple(shape))

    def all_finite(self, x: Array) -> bool:
        return bool(self.to_numpy(self.xp.all(self.xp.isfinite(x))))

    def where(self, condition: Array, x: Array, y: Array) -> Array:
        return self.xp.where(condition, x, y)

    def sigmoid(self, x: Array) -> Array:
        return binary.sigmoid(self, x)

    def log_sigmoid(self, x: Array) -> Array:
        return binary.log_sigmoid(self, x)

    # the shared, chunked definition (softgrad.numerics.losses.linear_cross_entropy)
    linear_cross_entropy, linear_cross_entropy_and_grad = linear_cross_entropy_methods().values()
