"""CUDA source of the CuPy backend's fused kernels.

Plain text, importable without CuPy, so a test can compile it with ``nvcc``
on a machine without a GPU and catch a syntax error there. CuPy compiles the
same source with NVRTC at first use (``cupy.RawModule``).

- ``softmax_xent_*``: softmax cross-entropy forward and gradient in one pass
  over the logits, one block per row: an online max / sum-of-exponentials
  (each thread keeps a running pair, then warp shuffles and shared memory
  combine them), then the gradient ``(softmax - onehot) * scale`` and the
  row's loss ``log(sum) + max - z[target]``. A label out of ``[0, C)`` gives
  a NaN loss, which sends the caller to the checked, general path.
- ``sgd_*``: ``torch.optim.SGD``'s update of one tensor in one elementwise
  pass: weight decay, momentum (``buf = g`` on the first step), dampening,
  Nesterov.
"""

SOURCE = r"""
// No headers: NVRTC compiles this as it is. Infinities and NaN from their bit patterns.
template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return -__longlong_as_double(0x7ff0000000000000LL);
}
template <typename T> __device__ __forceinline__ T quiet_nan();
template <> __device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fffffff); }
template <> __device__ __forceinline__ double quiet_nan<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// Combine two (max, sum of exp(x - max)) pairs; a pair with max -inf holds nothing.
template <typename T>
__device__ __forceinline__ void combine(T &m, T &s, T other_m, T other_s) {
    if (other_m == neg_inf<T>()) return;
    if (m == neg_inf<T>()) { m = other_m; s = other_s; return; }
    if (other_m > m) { s = s * exp(m - other_m) + other_s; m = other_m; }
    else { s = s + other_s * exp(other_m - m); }
}

template <typename T>
__device__ void softmax_xent(const T *logits, const long long *targets, T *grad, T *loss,
                             long long rows, long long classes, T scale) {
    __shared__ T shared_m[32];
    __shared__ T shared_s[32];
    const long long row = blockIdx.x;
    if (row >= rows) return;
    const T *z = logits + row * classes;
    T *g = grad + row * classes;

    T m = neg_inf<T>(), s = 0;
    for (long long j = threadIdx.x; j < classes; j += blockDim.x) {
        combine(m, s, z[j], (T)1);
    }
    for (int offset = 16; offset > 0; offset /= 2) {
        T other_m = __shfl_down_sync(0xffffffff, m, offset);
        T other_s = __shfl_down_sync(0xffffffff, s, offset);
        combine(m, s, other_m, other_s);
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) { shared_m[warp] = m; shared_s[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        const int warps = (blockDim.x + 31) / 32;
        m = lane < warps ? shared_m[lane] : neg_inf<T>();
        s = lane < warps ? shared_s[lane] : (T)0;
        for (int offset = 16; offset > 0; offset /= 2) {
            T other_m = __shfl_down_sync(0xffffffff, m, offset);
            T other_s = __shfl_down_sync(0xffffffff, s, offset);
            combine(m, s, other_m, other_s);
        }
        if (lane == 0) { shared_m[0] = m; shared_s[0] = s; }
    }
    __syncthreads();
    m = shared_m[0];
    s = shared_s[0];

    const long long t = targets[row];
    const bool valid = t >= 0 && t < classes;
    const T inv_s = (T)1 / s;
    for (long long j = threadIdx.x; j < classes; j += blockDim.x) {
        T p = exp(z[j] - m) * inv_s;
        g[j] = (p - (j == t ? (T)1 : (T)0)) * scale;
    }
    if (threadIdx.x == 0) {
        // a row with no softmax (all -inf, NaN, +inf) also ends as NaN or inf here
        loss[row] = valid ? log(s) + m - z[t] : quiet_nan<T>();
    }
}

extern "C" __global__ void softmax_xent_f32(const float *logits, const long long *targets, float *grad,
                                            float *loss, long long rows, long long classes, float scale) {
    softmax_xent<float>(logits, targets, grad, loss, rows, classes, scale);
}

extern "C" __global__ void softmax_xent_f64(const double *logits, const long long *targets, double *grad,
                                            double *loss, long long rows, long long classes, double scale) {
    softmax_xent<double>(logits, targets, grad, loss, rows, classes, scale);
}

// `use_momentum` comes from the host's double: a momentum too small for T (1e-50 in float) still
// keeps buffers, as torch.optim.SGD does, and as the host expects (it allocated them).
template <typename T>
__device__ void sgd(T *param, const T *grad, T *buf, long long n, T lr, T momentum, T dampening,
                    T weight_decay, int use_momentum, int nesterov, int first) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        // no decay term at 0, as in torch.optim.SGD: 0 * inf would turn an infinite parameter into NaN
        T g = weight_decay != (T)0 ? grad[i] + weight_decay * param[i] : grad[i];
        if (use_momentum) {
            T b = first ? g : momentum * buf[i] + ((T)1 - dampening) * g;
            buf[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        param[i] -= lr * g;
    }
}

extern "C" __global__ void sgd_f32(float *param, const float *grad, float *buf, long long n, float lr,
                                   float momentum, float dampening, float weight_decay, int use_momentum,
                                   int nesterov, int first) {
    sgd<float>(param, grad, buf, n, lr, momentum, dampening, weight_decay, use_momentum, nesterov, first);
}

extern "C" __global__ void sgd_f64(double *param, const double *grad, double *buf, long long n, double lr,
                                   double momentum, double dampening, double weight_decay, int use_momentum,
                                   int nesterov, int first) {
    sgd<double>(param, grad, buf, n, lr, momentum, dampening, weight_decay, use_momentum, nesterov, first);
}
"""

KERNEL_NAMES = ("softmax_xent_f32", "softmax_xent_f64", "sgd_f32", "sgd_f64")


def softmax_xent_launch(rows: int, classes: int) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for ``softmax_xent_*``: one block per row, of whole warps (its shuffles use the
    full mask, undefined in a partial warp), one thread per class up to 256."""
    threads = 256 if classes >= 256 else max(32, -(-classes // 32) * 32)
    return (rows,), (threads,)


def sgd_launch(size: int) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for ``sgd_*``: 256 threads a block, at most 4096 blocks (a grid-stride loop
    covers the rest)."""
    return (min(4096, max(1, -(-size // 256))),), (256,)
