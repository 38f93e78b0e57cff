"""The JAX backend: the shared array-API implementation on ``jax.numpy``, its hot paths compiled by XLA.

JAX arrays are immutable, which the shared implementation is written for. What a
training step calls repeatedly is compiled with ``jax.jit`` (cached by shape and
dtype, so the last, partial batch compiles once, not every epoch): the fused
cross-entropy value and gradient, and the SGD and Adam updates.

Float64: JAX computes in 32 bits unless ``jax_enable_x64`` is on, and turning it
on globally would change a user's other JAX code (``jnp.arange`` would give int64,
``jnp.array(1.0)`` float64). The narrowest switch is the ``jax.enable_x64``
context: every method of this backend, every function of ``be.xp`` and the
training loop's own arithmetic (through :meth:`JaxBackend.scope`) run inside it,
and nothing outside does. float32 stays float32 inside it (Python numbers are
weakly typed).

Errors inside compiled code: the compiled cross-entropy also returns whether
every label is in range and the loss is finite; the host reads that one flag
per step (the one read-back of a step, as the CuPy path does), and only when it
is false runs the shared, uncompiled definition, which raises the protocol's
error naming the row or label.

``linear_cross_entropy[_and_grad]``: the shared chunked definition's arguments,
checks and plan (``check_arguments``, ``make_plan``), then its chunk loop as one
compiled XLA loop (``lax.fori_loop`` over chunks of the rows kept, the chunk's
logits, losses and logit gradient, ``dW``/``db`` accumulated in the loop carry).
The compiled function's shapes depend on ``N``, ``d`` and ``V`` only: the rows
kept are gathered by index, the last chunk is padded with masked rows, and the
number of chunks run is a traced loop bound, so a batch with another count of
ignored tokens reuses it while ignored tokens still cost nothing. It returns
the same one ok flag (every chunk's loss and the total finite); when it is
false the shared definition runs and raises its error.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
from softgrad.backends import jax_conv
from softgrad.backends.array_api import ArrayAPIBackend
from softgrad.backends.numpy_backend import as_host_array
from softgrad.numerics import conv_args
from softgrad.numerics import validation as v
from softgrad.numerics.convolution import conv_options
from softgrad.numerics.errors import BackendUnavailableError
from softgrad.numerics.losses import linear_cross_entropy as lce
from softgrad.numerics.losses.softmax_cross_entropy import index_rows, log_sum_exp_rows
from softgrad.numerics.losses.support import quiet_floating_point, validate_class_loss
from softgrad.numerics.methods import loss_methods, optimizer_methods
from softgrad.numerics.optim import adam, get_optimizer, sgd
from softgrad.numerics.optim.sgd import SGDState

PIP_JAX = "pip install 'softgrad[jax]'  (or: pip install 'jax[cpu]')"


def _in_x64(function):
    """``function`` run inside ``jax.enable_x64(True)`` (the backend's 64-bit scope)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _jax().enable_x64(True):
            return function(*args, **kwargs)

    return wrapper


@functools.cache
def _jax():
    import jax

    return jax


class _Namespace:
    """``jax.numpy`` with each function run in the backend's 64-bit scope (dtypes and constants as they are):
    every public name of ``jax.numpy`` copied once, the functions wrapped by :func:`_in_x64`."""

    def __init__(self, jnp: Any) -> None:
        self.__name__ = jnp.__name__
        for name in dir(jnp):
            if not name.startswith("_"):
                value = getattr(jnp, name)
                setattr(self, name, _in_x64(value) if callable(value) and not isinstance(value, type) else value)


class JaxBackend(ArrayAPIBackend):
    """Every method runs in the 64-bit scope: its own ones decorated with :func:`_in_x64`, the inherited
    ones re-bound below, one line each (tests/test_jax.py checks that none is left out)."""

    # ---- inherited, in the 64-bit scope --------------------------------------------------------------
    check_array = _in_x64(ArrayAPIBackend.check_array)
    matmul = _in_x64(ArrayAPIBackend.matmul)
    affine = _in_x64(ArrayAPIBackend.affine)
    relu_backward = _in_x64(ArrayAPIBackend.relu_backward)
    maximum = _in_x64(ArrayAPIBackend.maximum)
    sum = _in_x64(ArrayAPIBackend.sum)
    tanh = _in_x64(ArrayAPIBackend.tanh)
    argmax = _in_x64(ArrayAPIBackend.argmax)
    softmax = _in_x64(ArrayAPIBackend.softmax)
    log_softmax = _in_x64(ArrayAPIBackend.log_softmax)
    take = _in_x64(ArrayAPIBackend.take)
    reshape = _in_x64(ArrayAPIBackend.reshape)
    all_finite = _in_x64(ArrayAPIBackend.all_finite)
    where = _in_x64(ArrayAPIBackend.where)
    sigmoid = _in_x64(ArrayAPIBackend.sigmoid)
    log_sigmoid = _in_x64(ArrayAPIBackend.log_sigmoid)
    peak_memory = _in_x64(ArrayAPIBackend.peak_memory)
    chunk_ops = _in_x64(ArrayAPIBackend.chunk_ops)
    affine_relu = _in_x64(ArrayAPIBackend.affine_relu)
    relu_backward_inplace = _in_x64(ArrayAPIBackend.relu_backward_inplace)
    relu_bias_backward = _in_x64(ArrayAPIBackend.relu_bias_backward)
    cross_entropy = _in_x64(ArrayAPIBackend.cross_entropy)  # fused_cross_entropy (below) first, as everywhere
    cross_entropy_grad = _in_x64(ArrayAPIBackend.cross_entropy_grad)
    cross_entropy_and_grad = _in_x64(ArrayAPIBackend.cross_entropy_and_grad)
    nll_loss, nll_loss_grad, nll_loss_and_grad = map(_in_x64, loss_methods("nll_loss"))
    mse_loss, mse_loss_grad, mse_loss_and_grad = map(_in_x64, loss_methods("mse_loss"))
    l1_loss, l1_loss_grad, l1_loss_and_grad = map(_in_x64, loss_methods("l1_loss"))
    smooth_l1_loss, smooth_l1_loss_grad, smooth_l1_loss_and_grad = map(_in_x64, loss_methods("smooth_l1_loss"))
    huber_loss, huber_loss_grad, huber_loss_and_grad = map(_in_x64, loss_methods("huber_loss"))
    (binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_grad,
     binary_cross_entropy_with_logits_and_grad) = map(_in_x64, loss_methods("binary_cross_entropy_with_logits"))
    sgd_init = _in_x64(optimizer_methods("sgd")[0])
    adam_init = _in_x64(optimizer_methods("adam")[0])
    adamw_init = _in_x64(optimizer_methods("adamw")[0])
    permute_dims = _in_x64(ArrayAPIBackend.permute_dims)
    rmsprop_init, rmsprop_step = map(_in_x64, optimizer_methods("rmsprop"))
    adagrad_init, adagrad_step = map(_in_x64, optimizer_methods("adagrad"))

    def __init__(self, platform: str = "cpu") -> None:
        name = "jax" if platform == "cpu" else f"jax:{platform}"
        try:
            import jax
            import jax.numpy as jnp
        except ImportError:
            raise BackendUnavailableError(f"backend {name!r} needs JAX, which is not installed: {PIP_JAX}") from None
        try:
            devices = jax.devices(platform)
        except RuntimeError as error:
            found = ", ".join(sorted({d.platform for d in jax.devices()}))
            raise BackendUnavailableError(f"backend {name!r}: no {platform.upper()} device (JAX {jax.__version__} "
                                          f"finds only {found}: {str(error).splitlines()[0]}); use 'jax' for the "
                                          "CPU") from None
        self.name, self.jax, self._jnp = name, jax, jnp
        self._device = devices[0]
        self.device = str(self._device)
        self.on_gpu = platform in ("gpu", "cuda", "rocm")
        self.xp = _Namespace(jnp)
        self.array_type = jax.Array
        self._last = None  # the newest result, which synchronize waits for

    # ---- plumbing ----------------------------------------------------------------------------

    def scope(self):
        """The context the training loop runs a step in: JAX's 64-bit mode, so float64 stays float64."""
        return self.jax.enable_x64(True)

    @_in_x64
    def asarray(self, x: Any, dtype: Any = None):
        jax = self.jax
        if isinstance(x, jax.Array):
            out = x if dtype is None else x.astype(np.dtype(dtype))
        elif not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__"):
            try:  # torch and CuPy arrays, shared without a copy where JAX can
                out = jax.dlpack.from_dlpack(x)
            except Exception:  # a device JAX cannot read (or a layout it refuses): through the host
                out = jax.numpy.asarray(as_host_array(_host(x), None, self.name))
            if dtype is not None:
                out = out.astype(np.dtype(dtype))
        else:
            host = as_host_array(x, dtype, self.name)
            if host.dtype.kind == "f" and host.dtype.itemsize < 4:
                raise TypeError(f"{self.name}.asarray: floating arrays must be float32 or float64, got {host.dtype}")
            out = jax.device_put(host, self._device)
        if out.dtype == np.float16 or str(out.dtype) == "bfloat16":
            raise TypeError(f"{self.name}.asarray: floating arrays must be float32 or float64, got {out.dtype}")
        return out

    @_in_x64
    def to_numpy(self, x: Any) -> np.ndarray:
        return np.array(x, copy=True) if isinstance(x, self.jax.Array) else np.asarray(x)

    @_in_x64
    def synchronize(self) -> None:
        if self._last is not None:
            self._last.block_until_ready()

    def _device_of(self, x: Any):
        return self._device

    @_in_x64
    def difference_sign(self, input, target, d):
        """``sign(input - target)`` where the difference is subnormal too (the regression losses' gradient).

        XLA runs with subnormals flushed to zero (FTZ and DAZ: on the CPU and GPU alike, comparisons
        included), so ``sign`` of a residual below the smallest normal number (1.2e-38 in float32) is 0 here
        where torch and NumPy give +-1. Where ``sign`` says 0, the sign is read from the bits instead: a float's
        bits as a signed integer, negatives mirrored, order as the floats do, subnormals included. One fused
        elementwise pass more, only in the l1-type gradients.
        """
        jnp, lax = self._jnp, self.jax.lax
        s = jnp.sign(d)
        if not jnp.issubdtype(d.dtype, jnp.floating) or d.dtype.itemsize not in (4, 8):
            return s
        integer = jnp.int32 if d.dtype.itemsize == 4 else jnp.int64
        magnitude = jnp.iinfo(integer).max

        def key(x):
            bits = lax.bitcast_convert_type(x, integer)
            return jnp.where(bits < 0, -(bits & magnitude), bits)

        kx, ky = key(input), key(target)
        exact = (kx > ky).astype(d.dtype) - (kx < ky).astype(d.dtype)
        return jnp.where(s == 0, exact, s)

    @_in_x64
    def label_range(self, labels) -> tuple[int, int]:
        low, high = np.asarray(self._jnp.stack([self._jnp.min(labels), self._jnp.max(labels)]))
        return int(low), int(high)

    # ---- compiled: the fused cross-entropy and the optimizer updates -----------------------------

    @_in_x64
    def fused_cross_entropy(self, op, logits, target, options):
        """The compiled loss and gradient for class-index targets and no other option but ``reduction``;
        None where the shared definition must run (other options, or something to diagnose). Reference:
        ``softgrad.numerics.losses.cross_entropy.cross_entropy``."""
        reduction = options.get("reduction", "mean")
        if set(options) - {"reduction"} or reduction not in ("mean", "sum", "none"):
            return None
        kind = validate_class_loss(self, op, logits, target, None, -100, reduction, 0.0)
        if kind != "index":
            return None
        loss, grad, ok = _compiled_cross_entropy(logits, target, reduction)
        if not bool(ok):  # the step's one read-back; the shared definition names what is wrong
            return None
        self._last = grad
        return loss, grad

    # ---- compiled: convolution and pooling through XLA's kernels (backends.jax_conv) ------------------------

    @_in_x64
    def conv2d(self, x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
        conv_args.check_arrays(self, "conv2d", x=x, weight=weight, bias=bias)
        geometry = conv_args.conv_geometry("conv2d", x, weight, conv_options(stride, padding, dilation, groups))
        conv_args.check_bias("conv2d", x, bias, geometry.out_channels)
        self._last = jax_conv.conv2d(x, weight, bias, geometry)
        return self._last

    @_in_x64
    def conv2d_backward(self, x, weight, dy, *, stride=1, padding=0, dilation=1, groups=1, need_dx=True,
                        need_bias=True):
        op = "conv2d_backward"
        conv_args.check_arrays(self, op, x=x, weight=weight, dy=dy)
        geometry = conv_args.conv_geometry(op, x, weight, conv_options(stride, padding, dilation, groups))
        conv_args.check_grad(op, x, dy, geometry.out_shape)
        grads = jax_conv.conv2d_backward(x, weight, dy, geometry, bool(need_dx), bool(need_bias))
        self._last = grads[1]
        return grads

    def _pool_window(self, op, x, kernel_size, stride, padding):
        conv_args.check_arrays(self, op, x=x)
        return conv_args.pool_window(op, conv_args.check_image(op, "x", x), kernel_size, stride, padding)

    @_in_x64
    def max_pool2d(self, x, kernel_size, stride=None, padding=0):
        self._last = jax_conv.pool(x, self._pool_window("max_pool2d", x, kernel_size, stride, padding), "max")
        return self._last

    @_in_x64
    def max_pool2d_backward(self, x, dy, kernel_size, stride=None, padding=0):
        op = "max_pool2d_backward"
        window = self._pool_window(op, x, kernel_size, stride, padding)
        conv_args.check_arrays(self, op, dy=dy)
        conv_args.check_grad(op, x, dy, (*conv_args.shape_of(x)[:2], *window.out))
        self._last = jax_conv.max_pool_backward(x, dy, window)
        return self._last

    @_in_x64
    def avg_pool2d(self, x, kernel_size, stride=None, padding=0):
        self._last = jax_conv.pool(x, self._pool_window("avg_pool2d", x, kernel_size, stride, padding), "avg")
        return self._last

    @_in_x64
    def avg_pool2d_backward(self, x_shape, dy, kernel_size, stride=None, padding=0):
        op = "avg_pool2d_backward"
        shape = conv_args.check_x_shape(op, x_shape)
        window = conv_args.pool_window(op, shape, kernel_size, stride, padding)
        conv_args.check_arrays(self, op, dy=dy)
        conv_args.check_image(op, "dy", dy)
        conv_args.check_grad(op, dy, dy, (*shape[:2], *window.out))
        self._last = jax_conv.avg_pool_backward(shape, dy, window)
        return self._last

    # ---- compiled: the chunked cross-entropy of a linear layer ---------------------------------------

    @_in_x64
    def linear_cross_entropy(self, input, linear_weight, target, *positional, **options):
        return self._linear_cross_entropy("linear_cross_entropy", input, linear_weight, target, positional,
                                          options)

    @_in_x64
    def linear_cross_entropy_and_grad(self, input, linear_weight, target, *positional, **options):
        return self._linear_cross_entropy("linear_cross_entropy_and_grad", input, linear_weight, target,
                                          positional, options)

    def _linear_cross_entropy(self, op, input, linear_weight, target, positional, options):
        """The compiled chunk loop; the shared definition for what it does not take (positional options,
        unknown names: the shared errors) and to diagnose a non-finite loss (the shared errors)."""
        shared = getattr(super(), op)  # the shared chunked definition
        want_grad = op.endswith("_and_grad")
        known = set(lce.OPTIONS) if want_grad else set(lce.OPTIONS) - {"grad_output"}
        if positional or set(options) - known:
            return shared(input, linear_weight, target, *positional, **options)
        fast = self._compiled_linear_ce(op, want_grad, input, linear_weight, target, **options)
        if fast is None:  # something is not finite: the shared loop names the row (or returns what it computes)
            return shared(input, linear_weight, target, **options)
        return fast

    @quiet_floating_point
    def _compiled_linear_ce(self, op, want_grad, input, linear_weight, target, *, linear_bias=None, weight=None,
                            reduction="mean", ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None,
                            chunk_size=None, memory_budget=None, grad_output=None):
        if ignore_index is None:  # torch's linear_cross_entropy default: -100 for class indices
            ignore_index = -100
        options = lce.LinearCrossEntropyOptions(
            linear_bias=linear_bias, weight=weight, reduction=reduction, ignore_index=ignore_index,
            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, chunk_size=chunk_size,
            memory_budget=memory_budget, grad_output=grad_output)
        kind = lce.check_arguments(self, op, input, linear_weight, target, options)
        # grad_output is applied here (the plan's copy per kept row would be an array whose shape varies)
        plan, _ = lce.make_plan(self, op, kind, input, linear_weight, target, replace(options, grad_output=None),
                                buffers=lce.ChunkOps.buffers)
        n = int(input.shape[0])
        chunk = _linear_ce_chunk(plan, n, int(input.shape[1]), chunk_size, memory_budget)
        slots = -(-n // chunk)
        idx = None
        if plan.rows is not None:  # the rows kept, then the padding index n (masked, gathers 0, writes nothing)
            host = np.full(slots * chunk, n, dtype=np.int32)
            host[:plan.n_rows] = plan.rows
            idx = self.jax.device_put(host, self._device)
        scale = None
        if want_grad and grad_output is not None:
            if isinstance(grad_output, numbers.Real) or grad_output.ndim == 0:
                value = float(grad_output) if isinstance(grad_output, numbers.Real) else \
                    float(np.asarray(grad_output))
                scale = None if value == 1.0 else value
            else:
                scale = grad_output
        loss, grads, ok = _compiled_linear_cross_entropy(
            LinearCEArrays(input, linear_weight, linear_bias, target, plan.weight, idx, scale),
            LinearCEScalars(-(-plan.n_rows // chunk), float(plan.ce_scale), float(plan.z_scale),
                            float(plan.z_loss), float(plan.weight_sum), float(plan.denominator),
                            float(plan.z_denominator)),
            LinearCEConfig(reduction=reduction, kind=kind, eps=plan.eps, softcap=plan.softcap,
                           has_z=plan.z_loss != 0.0, chunk=chunk, want_grad=want_grad))
        if not bool(ok):  # the call's one read-back
            return None
        self._last = loss
        return (loss, grads) if want_grad else loss

    @_in_x64
    def sgd_step(self, params, grads, state, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        params, grads, hyper = sgd.checked_call(self, params, grads, state, lr=lr, momentum=momentum,
                                                dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        first = hyper.momentum != 0.0 and state.momentum_buffers is None
        buffers = None if hyper.momentum == 0.0 or first else list(state.momentum_buffers)
        new_params, new_buffers = _compiled_sgd(list(params), list(grads), buffers, hyper.lr, momentum=hyper.momentum,
                                                dampening=hyper.dampening, nesterov=hyper.nesterov,
                                                weight_decay=hyper.weight_decay)
        self._last = new_params[-1] if new_params else self._last
        kept = state.momentum_buffers if hyper.momentum == 0.0 else tuple(new_buffers)
        return new_params, SGDState(state.step + 1, kept)

    @_in_x64
    def adam_step(self, params, grads, state, *, lr=1e-3, **hyperparameters):
        return self._adam("adam_step", "adam_init", params, grads, state, lr=lr, given=hyperparameters,
                          defaults=adam.DEFAULTS)

    @_in_x64
    def adamw_step(self, params, grads, state, *, lr=1e-3, **hyperparameters):
        adam._adamw_decoupled(hyperparameters.get("decoupled_weight_decay", True))
        return self._adam("adamw_step", "adamw_init", params, grads, state, lr=lr, given=hyperparameters,
                          defaults=adam.ADAMW_DEFAULTS)

    def _adam(self, op, init_name, params, grads, state, *, lr, given, defaults):
        get_optimizer(op.removesuffix("_step")).check_names(given, op)
        params, grads = v.array_list(op, "params", params), v.array_list(op, "grads", grads)
        values = {**defaults, **given}
        static, traced, step = adam.plan_step(op, init_name, self, params, grads, state, lr=lr, **values)
        maxima = None if state.max_exp_avg_sq is None else list(state.max_exp_avg_sq)
        new_params, exp_avgs, exp_avg_sqs, new_maxima = _compiled_adam(
            list(params), list(grads), (list(state.exp_avg), list(state.exp_avg_sq), maxima), tuple(traced),
            **static)
        self._last = new_params[-1] if new_params else self._last
        return new_params, adam.AdamState(step=step, exp_avg=tuple(exp_avgs), exp_avg_sq=tuple(exp_avg_sqs),
                                          max_exp_avg_sq=state.max_exp_avg_sq if new_maxima is None
                                          else tuple(new_maxima))


def _host(x: Any) -> np.ndarray:
    if hasattr(x, "cpu") and hasattr(x, "numpy"):  # a torch tensor
        return x.detach().cpu().numpy()
    if hasattr(x, "get"):  # a CuPy array
        return x.get()
    return np.asarray(x)


# ---- the compiled kernels: pure functions of arrays, static where Python branches on a value --------------


@functools.cache
def _jit(function, static: tuple[str, ...] = ()):
    return _jax().jit(function, static_argnames=static)


def _compiled_cross_entropy(logits, labels, reduction):
    return _jit(_cross_entropy_kernel, ("reduction",))(logits, labels, reduction=reduction)


def _cross_entropy_kernel(logits, labels, *, reduction):
    """The shared definition's arithmetic (``softmax_cross_entropy.index_rows``, what
    ``softgrad.numerics.losses.cross_entropy.cross_entropy`` runs), compiled, with one flag instead of its
    checks: every label in range and the loss finite."""
    jnp = _jax().numpy
    n, num_classes = logits.shape
    # checked in the labels' own dtype: int32 would wrap a label of 2**32 + 1 (or a uint64 above 2**63) into range
    in_range = jnp.all(labels < num_classes) if jnp.issubdtype(labels.dtype, jnp.unsignedinteger) else \
        jnp.all((labels >= 0) & (labels < num_classes))
    safe = jnp.clip(labels, 0, num_classes - 1).astype(jnp.int32)
    per_sample, grad, _ = index_rows(jnp, logits, safe, want_grad=True)
    if reduction == "none":
        loss, finite = per_sample, jnp.all(jnp.isfinite(per_sample))
    else:
        loss = jnp.sum(per_sample)
        finite = jnp.isfinite(loss)
        if reduction == "mean":
            loss, grad = loss / n, grad / n
    return loss, grad, in_range & finite & jnp.all(jnp.isfinite(grad))


def _linear_ce_chunk(plan, n: int, d: int, chunk_size, memory_budget) -> int:
    """The compiled loop's rows per chunk: the plan's, which groups the kept rows exactly as the shared loop
    does; where the plan's chunk is all the kept rows (fewer than a chunk), the chunk they would have with
    none ignored, so that the compiled function does not change with the number of ignored rows."""
    if plan.n_rows > plan.chunk:
        return int(plan.chunk)
    if chunk_size is not None:
        base = int(chunk_size)
    else:
        itemsize = 8 if np.dtype(plan.compute_dtype) == np.float64 else 4
        base = lce.plan_chunk(plan.num_classes, d, itemsize, lce.ChunkOps.buffers, n, None, memory_budget)
    return max(1, min(base, n))


class LinearCEConfig(NamedTuple):
    """What the compiled ``linear_cross_entropy`` loop branches on: a static (hashable) argument, so each
    configuration compiles once. ``eps`` is label smoothing; ``chunk`` the rows per chunk."""

    reduction: str
    kind: str
    eps: float
    softcap: float | None
    has_z: bool
    chunk: int
    want_grad: bool


class LinearCEArrays(NamedTuple):
    """The compiled loop's arrays (traced): ``x`` (N, d), ``w`` (V, d), ``b`` (V,) or None, ``target`` (N,)
    labels or (N, V) probabilities, ``weight`` the plan's class weights or None, ``idx`` the kept rows padded
    with N to whole chunks (None: every row), ``scale`` grad_output (a number, an (N,) array, or None)."""

    x: Any
    w: Any
    b: Any
    target: Any
    weight: Any
    idx: Any
    scale: Any


class LinearCEScalars(NamedTuple):
    """The plan's numbers (traced, so that a new value compiles nothing): ``n_chunks`` chunks run, then the
    plan's fields of the same names."""

    n_chunks: int
    ce_scale: float
    z_scale: float
    z_loss: float
    weight_sum: float
    denominator: float
    z_denominator: float


LINEAR_CE_STATIC = ("config",)


def _compiled_linear_cross_entropy(arrays: LinearCEArrays, scalars: LinearCEScalars, config: LinearCEConfig):
    return _jit(_linear_ce_kernel, LINEAR_CE_STATIC)(arrays, scalars, config=config)


def _linear_ce_kernel(arrays, scalars, *, config):
    """``softgrad.numerics.losses.linear_cross_entropy``'s loop and ``ChunkOps.head``'s arithmetic, in their order.

    Returns ``(loss, (dx, dw, db) or None, ok)``; see :class:`LinearCEArrays` for the arrays.
    """
    jax = _jax()
    jnp, lax = jax.numpy, jax.lax
    x, b, chunk, want_grad = arrays.x, arrays.b, config.chunk, config.want_grad
    cd = _linear_ce_compute_dtype(x.dtype)
    wc = arrays.w.astype(cd)
    head = _linear_ce_head(arrays, scalars, config, wc, None if b is None else b.astype(cd))

    def body(i, carry):
        dw, db, dx, rows_loss, ce_total, z_total, ok = carry
        start = i * chunk
        row_loss, ce_sum, z_sum, g, xc = head(start)
        ok = ok & jnp.isfinite(ce_sum if z_sum is None else ce_sum + z_sum)
        if config.reduction == "none":
            rows_loss = lax.dynamic_update_slice_in_dim(rows_loss, row_loss, start, 0)
        else:
            ce_total = ce_total + ce_sum
            z_total = z_total if z_sum is None else z_total + z_sum
        if want_grad:
            dx = lax.dynamic_update_slice_in_dim(dx, g @ wc, start, 0)
            dw = dw + lax.dot_general(g, xc, (((0,), (0,)), ((), ())))  # g.T @ xc (a third faster on the CPU)
            db = None if db is None else db + jnp.sum(g, axis=0)
        return dw, db, dx, rows_loss, ce_total, z_total, ok

    totals = lax.fori_loop(0, scalars.n_chunks, body, _linear_ce_init(arrays, config, cd))
    return _linear_ce_result(arrays, scalars, config, totals)


def _linear_ce_compute_dtype(dtype):
    jnp = _jax().numpy
    return jnp.float32 if dtype in (jnp.float16, jnp.bfloat16) else dtype


def _linear_ce_head(arrays, scalars, config, wc, bc):
    """``head(start)``: the chunk from row slot ``start``'s ``(row_loss, ce_sum, z_sum, g, xc)``, the shared
    head's arithmetic (``ChunkOps.head`` runs the same function on be.xp); padding rows count for nothing."""
    jax = _jax()
    jnp, lax = jax.numpy, jax.lax
    x, target, idx, scale = arrays.x, arrays.target, arrays.idx, arrays.scale
    n, chunk, cd = x.shape[0], config.chunk, wc.dtype
    vector_scale = scale is not None and jnp.ndim(scale) == 1

    def head(start):
        rows = start + jnp.arange(chunk) if idx is None else lax.dynamic_slice_in_dim(idx, start, chunk)
        valid = rows < n
        xc = x.at[rows].get(mode="fill", fill_value=0).astype(cd)
        tc = target.at[rows].get(mode="fill", fill_value=0)
        z = lax.dot_general(xc, wc, (((1,), (1,)), ((), ())))  # xc @ w.T, the transpose folded into the product
        if bc is not None:
            z = z + bc
        tanh = None
        if config.softcap is not None:
            tanh = jnp.tanh(z / config.softcap)
            z = config.softcap * tanh
        tc = tc.astype(jnp.int32) if config.kind == "index" else tc.astype(cd)
        head_rows = log_sum_exp_rows(jnp, z, tc, kind=config.kind, label_smoothing=config.eps,
                                     weight=arrays.weight, weight_sum=scalars.weight_sum)
        ce, lse = head_rows.loss, head_rows.lse
        z_row = scalars.z_loss * lse * lse if config.has_z else None
        row_loss = ce if z_row is None else ce + z_row
        ce_sum = jnp.sum(jnp.where(valid, ce, jnp.zeros_like(ce)))
        z_sum = None if z_row is None else jnp.sum(jnp.where(valid, z_row, jnp.zeros_like(z_row)))
        g = None
        if config.want_grad:
            rs = None
            if scale is not None:
                rs = scale.at[rows].get(mode="fill", fill_value=0).astype(cd) if vector_scale else scale
            g = _linear_ce_chunk_grad(head_rows, scalars, config, rs=rs, tanh=tanh, cd=cd)
            g = jnp.where(valid[:, None], g, jnp.zeros_like(g))  # the padding rows count for nothing
        return row_loss, ce_sum, z_sum, g, xc

    return head


def _linear_ce_chunk_grad(head_rows, scalars, config, *, rs, tanh, cd):
    """d loss / d logits of one chunk: ``softmax * p_factor - q_factor * q`` (``rs``: grad_output's rows, a
    number, or None), through the softcap's tanh."""
    jnp = _jax().numpy
    lse, p, q = head_rows.lse, head_rows.softmax, head_rows.q
    mass = jnp.broadcast_to(jnp.asarray(head_rows.mass, dtype=cd), lse.shape)
    p_factor = scalars.ce_scale * mass
    if config.has_z:
        p_factor = p_factor + scalars.z_scale * (2.0 * scalars.z_loss) * lse
    q_factor = scalars.ce_scale
    if rs is not None:
        p_factor = p_factor * rs
        q_factor = q_factor * (rs[:, None] if jnp.ndim(rs) == 1 else rs)
    g = p * p_factor[:, None] - q_factor * q
    if tanh is not None:
        g = g * (1.0 - tanh * tanh)
    return g


def _linear_ce_init(arrays, config, cd):
    """The loop's carry at the start: ``(dw, db, dx, rows_loss, ce_total, z_total, ok)``, None where unused."""
    jnp = _jax().numpy
    (n, d), num_classes, want_grad = arrays.x.shape, arrays.w.shape[0], config.want_grad
    padded = -(-n // config.chunk) * config.chunk
    zero = jnp.zeros((), cd)
    return (jnp.zeros((num_classes, d), cd) if want_grad else None,
            jnp.zeros((num_classes,), cd) if want_grad and arrays.b is not None else None,
            jnp.zeros((padded, d), cd) if want_grad else None,
            jnp.zeros((padded,), cd) if config.reduction == "none" else None,
            zero, zero, jnp.asarray(True))


def _linear_ce_result(arrays, scalars, config, totals):
    """The loop's carry as ``(loss, (dx, dw, db) or None, ok)`` in the input's dtype."""
    jnp = _jax().numpy
    dw, db, dx, rows_loss, ce_total, z_total, ok = totals
    x, idx = arrays.x, arrays.idx
    n = x.shape[0]

    def assemble(kept):  # the processed rows back in their places, 0 at the rows left out
        if idx is None:
            return kept[:n]
        return jnp.zeros((n,) + kept.shape[1:], kept.dtype).at[idx].set(kept, mode="drop")

    if config.reduction == "none":
        loss = assemble(rows_loss)
    else:
        if config.reduction == "mean":
            ce_total = ce_total / scalars.denominator
            z_total = z_total / scalars.z_denominator if config.has_z else z_total
        loss = ce_total + z_total if config.has_z else ce_total
        ok = ok & jnp.isfinite(loss)
    loss = loss.astype(x.dtype)
    if not config.want_grad:
        return loss, None, ok
    grads = (assemble(dx).astype(x.dtype), dw.astype(x.dtype), None if db is None else db.astype(x.dtype))
    return loss, grads, ok


SGD_STATIC = ("momentum", "dampening", "nesterov", "weight_decay")


def _compiled_sgd(params, grads, buffers, lr, *, momentum, dampening, nesterov, weight_decay):
    return _jit(_sgd_kernel, SGD_STATIC)(
        params, grads, buffers, lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
        weight_decay=weight_decay)


def _sgd_kernel(params, grads, buffers, lr, *, momentum, dampening, nesterov, weight_decay):
    """``softgrad.numerics.optim.sgd.update_one`` (the shared step's arithmetic) on every parameter, compiled:
    ``lr`` traced, the rest static (update_one branches on them; a run keeps them, so it compiles once).
    A buffer that is None (every one on the first step) starts as ``buf = g``; None is part of the pytree's
    structure, so each pattern of None compiles once."""
    hyper = sgd.SGDHyperparameters(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                                   weight_decay=weight_decay)
    new_params, new_buffers = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        p, b = sgd.update_one(p, g, None if buffers is None else buffers[i], hyper)
        new_params.append(p)
        new_buffers.append(b)
    return new_params, new_buffers


def _compiled_adam(params, grads, buffers, traced, **static):
    """``buffers``: ``(exp_avgs, exp_avg_sqs, maxima or None)``; ``traced``: ``(lr, eps, step_size,
    bias_correction2_sqrt)`` (adam.plan_step's); ``static``: its static hyperparameters, by name."""
    return _jit(_adam_kernel, tuple(static))(params, grads, buffers, traced, **static)


def _adam_kernel(params, grads, buffers, traced, **static):
    jnp = _jax().numpy
    exp_avgs, exp_avg_sqs, maxima = buffers
    lr, eps, step_size, bias_correction2_sqrt = traced
    out = [[], [], [], [] if static["amsgrad"] else None]
    for i, (p, g) in enumerate(zip(params, grads)):
        p, m, s, top = adam.update_one(jnp, p, g, exp_avgs[i], exp_avg_sqs[i],
                                       None if maxima is None else maxima[i], lr=lr, eps=eps, step_size=step_size,
                                       bias_correction2_sqrt=bias_correction2_sqrt, **static)
        out[0].append(p)
        out[1].append(m)
        out[2].append(s)
        if out[3] is not None:
            out[3].append(top)
    return tuple(out)


def gpu_backend(platform: str = "gpu") -> JaxBackend:
    """The ``jax:gpu`` entry point: JAX on its first GPU."""
    return JaxBackend(platform)

