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
  Reference: ``softgrad.numerics.losses.softmax_cross_entropy.index_rows``.
- ``sgd_*``: ``torch.optim.SGD``'s update of one tensor in one elementwise
  pass: weight decay, momentum (``buf = g`` on the first step), dampening,
  Nesterov. Reference: ``softgrad.numerics.optim.sgd.update_one``.
- ``linear_ce_head_*``: one chunk of ``linear_cross_entropy``
  (``core/numerics/losses/linear_cross_entropy.py``, ``ChunkOps.head``) for class
  labels, one block per row of the chunk's logits: the same online max /
  sum-of-exponentials (a NaN logit makes the row's max NaN, as ``max`` does),
  then in one more pass over the row the logit gradient written over the
  logits, ``G = (p_factor softmax - q_factor q) (1 - tanh^2 if softcap)``,
  and the row's cross-entropy, log-sum-exp and maximum. Class weights, label
  smoothing (``q = (1 - eps) w_t onehot + eps/V w``), z-loss (in
  ``p_factor``), softcap and a per-row scale (``grad_output``) are arguments;
  a class weight of 0 makes its term 0 even against a ``-inf`` logit. The
  target's logit is read before any thread of the block writes the row.
  Reference: ``ChunkOps.head`` (``softmax_cross_entropy.log_sum_exp_rows``).
- ``max_pool2d_*`` and ``max_pool2d_backward_*``: ``torch.nn.functional.max_pool2d`` (floor mode, no
  dilation) and its input gradient. The forward is one thread per output entry: the window's maximum and
  where it is (its index in the H x W plane), the first one in row-major order on ties and the last NaN
  where there is one, as torch's CPU kernel; padded entries are skipped. The backward gathers, one thread
  per input entry: the ``dy`` of every window whose winner it is, added in output order (no atomics, so
  the result does not depend on the order threads run in). Reference: ``softgrad.numerics.pooling``.

The suite checks each kernel against its reference on the CPU too
(``tests/cuda_on_cpu.py`` runs this source as C++; the ``cupy-on-cpu`` backend).
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

// ---- max pooling: forward with the winners' positions, backward gathering from them -------------------

template <typename T>
__device__ void max_pool2d(const T *x, T *y, long long *winner, long long planes, long long height, long long width,
                           long long out_h, long long out_w, long long kernel_h, long long kernel_w,
                           long long stride_h, long long stride_w, long long pad_h, long long pad_w) {
    const long long total = planes * out_h * out_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const long long ow = i % out_w, oh = (i / out_w) % out_h, plane = i / (out_w * out_h);
        const long long top = oh * stride_h - pad_h, left = ow * stride_w - pad_w;
        const long long h0 = top > 0 ? top : 0, w0 = left > 0 ? left : 0;
        const long long h1 = top + kernel_h < height ? top + kernel_h : height;
        const long long w1 = left + kernel_w < width ? left + kernel_w : width;
        const T *source = x + plane * height * width;
        T best = neg_inf<T>();
        long long where = h0 * width + w0;  // the first entry wins when all are -inf
        for (long long h = h0; h < h1; ++h) {
            for (long long w = w0; w < w1; ++w) {
                const T value = source[h * width + w];
                if (value > best || value != value) { best = value; where = h * width + w; }
            }
        }
        y[i] = best;
        winner[i] = where;
    }
}

template <typename T>
__device__ void max_pool2d_backward(const T *dy, const long long *winner, T *dx, long long planes, long long height,
                                    long long width, long long out_h, long long out_w, long long kernel_h,
                                    long long kernel_w, long long stride_h, long long stride_w, long long pad_h,
                                    long long pad_w) {
    const long long total = planes * height * width;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const long long w = i % width, h = (i / width) % height, plane = i / (width * height);
        // the windows holding (h, w): oh * stride_h <= h + pad_h < oh * stride_h + kernel_h
        const long long hp = h + pad_h, wp = w + pad_w;
        const long long oh0 = hp < kernel_h ? 0 : (hp - kernel_h) / stride_h + 1;
        const long long ow0 = wp < kernel_w ? 0 : (wp - kernel_w) / stride_w + 1;
        const long long oh1 = hp / stride_h < out_h - 1 ? hp / stride_h : out_h - 1;
        const long long ow1 = wp / stride_w < out_w - 1 ? wp / stride_w : out_w - 1;
        const long long here = h * width + w, base = plane * out_h * out_w;
        T sum = 0;
        for (long long oh = oh0; oh <= oh1; ++oh) {
            for (long long ow = ow0; ow <= ow1; ++ow) {
                if (winner[base + oh * out_w + ow] == here) sum += dy[base + oh * out_w + ow];
            }
        }
        dx[i] = sum;
    }
}

// the launch wrappers, written out: the emulator (tests/cuda_on_cpu.py) reads each signature from the source
extern "C" __global__ void max_pool2d_f32(const float *x, float *y, long long *winner, long long planes,
                                          long long height, long long width, long long out_h, long long out_w,
                                          long long kernel_h, long long kernel_w, long long stride_h,
                                          long long stride_w, long long pad_h, long long pad_w) {
    max_pool2d<float>(x, y, winner, planes, height, width, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
                      pad_h, pad_w);
}

extern "C" __global__ void max_pool2d_f64(const double *x, double *y, long long *winner, long long planes,
                                          long long height, long long width, long long out_h, long long out_w,
                                          long long kernel_h, long long kernel_w, long long stride_h,
                                          long long stride_w, long long pad_h, long long pad_w) {
    max_pool2d<double>(x, y, winner, planes, height, width, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
                       pad_h, pad_w);
}

extern "C" __global__ void max_pool2d_backward_f32(const float *dy, const long long *winner, float *dx,
                                                   long long planes, long long height, long long width,
                                                   long long out_h, long long out_w, long long kernel_h,
                                                   long long kernel_w, long long stride_h, long long stride_w,
                                                   long long pad_h, long long pad_w) {
    max_pool2d_backward<float>(dy, winner, dx, planes, height, width, out_h, out_w, kernel_h, kernel_w, stride_h,
                               stride_w, pad_h, pad_w);
}

extern "C" __global__ void max_pool2d_backward_f64(const double *dy, const long long *winner, double *dx,
                                                   long long planes, long long height, long long width,
                                                   long long out_h, long long out_w, long long kernel_h,
                                                   long long kernel_w, long long stride_h, long long stride_w,
                                                   long long pad_h, long long pad_w) {
    max_pool2d_backward<double>(dy, winner, dx, planes, height, width, out_h, out_w, kernel_h, kernel_w, stride_h,
                                stride_w, pad_h, pad_w);
}

// ---- linear_cross_entropy's chunk head --------------------------------------------------------

template <typename T> __device__ __forceinline__ T tanh_of(T x);
template <> __device__ __forceinline__ float tanh_of<float>(float x) { return tanhf(x); }
template <> __device__ __forceinline__ double tanh_of<double>(double x) { return tanh(x); }

// `combine`, except that a NaN on either side makes the pair NaN (the row's max is then NaN, as
// the shared code's `max` gives, and the caller names the row)
template <typename T>
__device__ __forceinline__ void combine_or_nan(T &m, T &s, T other_m, T other_s) {
    if (m != m) return;
    if (other_m != other_m) { m = other_m; s = other_m; return; }
    combine(m, s, other_m, other_s);
}

// The block's (max, sum of exp(x - max)) in every thread (blockDim.x whole warps).
template <typename T>
__device__ __forceinline__ void block_max_sum(T &m, T &s, T *slot_max, T *slot_sum) {
    for (int offset = 16; offset > 0; offset /= 2) {
        T other_m = __shfl_down_sync(0xffffffff, m, offset);
        T other_s = __shfl_down_sync(0xffffffff, s, offset);
        combine_or_nan(m, s, other_m, other_s);
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) { slot_max[warp] = m; slot_sum[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        const int warps = (blockDim.x + 31) / 32;
        const bool written = lane < warps;
        m = written ? slot_max[lane] : neg_inf<T>();
        s = written ? slot_sum[lane] : (T)0;
        for (int offset = 16; offset > 0; offset /= 2) {
            T other_m = __shfl_down_sync(0xffffffff, m, offset);
            T other_s = __shfl_down_sync(0xffffffff, s, offset);
            combine_or_nan(m, s, other_m, other_s);
        }
        if (lane == 0) { slot_max[0] = m; slot_sum[0] = s; }
    }
    __syncthreads();
    m = slot_max[0];
    s = slot_sum[0];
}

// The block's sum in every thread (blockDim.x whole warps).
template <typename T>
__device__ __forceinline__ T block_sum(T x, T *slot) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffff, x, offset);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) slot[warp] = x;
    __syncthreads();
    if (warp == 0) {
        const int warps = (blockDim.x + 31) / 32;
        x = lane < warps ? slot[lane] : (T)0;
        for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffff, x, offset);
        if (lane == 0) slot[0] = x;
    }
    __syncthreads();
    return slot[0];
}

// The logit through the cap (`cap * tanh(z / cap)`, its tanh in `t`), or the logit itself when cap is 0.
template <typename T>
__device__ __forceinline__ T capped(T z, T cap, T &t) {
    if (cap > (T)0) {
        t = tanh_of<T>(z / cap);
        return cap * t;
    }
    t = (T)0;
    return z;
}

// One block per row of `z` (rows x classes, overwritten with G). `class_weight` and `row_scale`
// are read only with `has_weight` / `has_row_scale`; `uniform_mass` is (eps / V) * sum(weight).
template <typename T>
__device__ void linear_ce_head(T *z, const long long *targets, const T *class_weight, const T *row_scale,
                               T *ce, T *lse_out, T *max_out, long long rows, long long classes,
                               T one_minus_eps, T eps_over_v, T uniform_mass, T ce_scale, T z_coef, T softcap,
                               int has_weight, int has_row_scale, int smoothing) {
    __shared__ T head_max[32];
    __shared__ T head_sum[32];
    __shared__ T head_smooth[32];
    const long long row = blockIdx.x;
    if (row >= rows) return;
    T *zr = z + row * classes;
    const long long t = targets[row];
    const bool valid = t >= 0 && t < classes;
    T tanh_j;
    // the target's (capped) logit, read before the first barrier: no thread has written the row yet
    const T z_t = valid ? capped(zr[t], softcap, tanh_j) : quiet_nan<T>();

    T m = neg_inf<T>(), s = 0;
    for (long long j = threadIdx.x; j < classes; j += blockDim.x) {
        combine_or_nan(m, s, capped(zr[j], softcap, tanh_j), (T)1);
    }
    block_max_sum(m, s, head_max, head_sum);
    const bool finite = m == m && m != neg_inf<T>() && m != -neg_inf<T>();
    const T m_safe = finite ? m : (T)0;
    const T lse = finite ? m + log(s) : m;  // a row with no softmax: the caller names it from `max_out`

    const T w_t = !valid ? (T)0 : has_weight ? class_weight[t] : (T)1;
    T p_factor = ce_scale * (one_minus_eps * w_t + uniform_mass);
    if (z_coef != (T)0) p_factor += z_coef * lse;
    T q_factor = ce_scale;
    if (has_row_scale) {
        p_factor *= row_scale[row];
        q_factor *= row_scale[row];
    }
    const T inv_s = (T)1 / s;
    T smooth = 0;  // sum_c w_c (lse - z_c), a zero weight giving 0 even against a -inf logit
    for (long long j = threadIdx.x; j < classes; j += blockDim.x) {
        const T zj = capped(zr[j], softcap, tanh_j);
        const T wj = has_weight ? class_weight[j] : (T)1;
        T q = eps_over_v * wj;
        if (j == t) q += one_minus_eps * w_t;
        T g = exp(zj - m_safe) * inv_s * p_factor - q_factor * q;
        if (softcap > (T)0) g *= (T)1 - tanh_j * tanh_j;
        zr[j] = g;
        if (smoothing) smooth += !has_weight ? lse - zj : wj != (T)0 ? wj * (lse - zj) : (T)0;
    }
    if (smoothing) smooth = block_sum(smooth, head_smooth);  // the same branch in every thread
    if (threadIdx.x == 0) {
        const T nll = lse - z_t;
        T loss = !has_weight ? nll : w_t != (T)0 ? w_t * nll : (T)0;
        if (smoothing) loss = one_minus_eps * loss + eps_over_v * smooth;
        ce[row] = valid ? loss : quiet_nan<T>();  // a label out of range (the host checks them first)
        lse_out[row] = lse;
        max_out[row] = m;
    }
}

extern "C" __global__ void linear_ce_head_f32(float *z, const long long *targets, const float *class_weight,
                                              const float *row_scale, float *ce, float *lse, float *row_max,
                                              long long rows, long long classes, float one_minus_eps,
                                              float eps_over_v, float uniform_mass, float ce_scale, float z_coef,
                                              float softcap, int has_weight, int has_row_scale, int smoothing) {
    linear_ce_head<float>(z, targets, class_weight, row_scale, ce, lse, row_max, rows, classes, one_minus_eps,
                          eps_over_v, uniform_mass, ce_scale, z_coef, softcap, has_weight, has_row_scale, smoothing);
}

extern "C" __global__ void linear_ce_head_f64(double *z, const long long *targets, const double *class_weight,
                                              const double *row_scale, double *ce, double *lse, double *row_max,
                                              long long rows, long long classes, double one_minus_eps,
                                              double eps_over_v, double uniform_mass, double ce_scale, double z_coef,
                                              double softcap, int has_weight, int has_row_scale, int smoothing) {
    linear_ce_head<double>(z, targets, class_weight, row_scale, ce, lse, row_max, rows, classes, one_minus_eps,
                           eps_over_v, uniform_mass, ce_scale, z_coef, softcap, has_weight, has_row_scale,
                           smoothing);
}
"""

KERNEL_NAMES = ("softmax_xent_f32", "softmax_xent_f64", "sgd_f32", "sgd_f64", "linear_ce_head_f32",
                "linear_ce_head_f64", "max_pool2d_f32", "max_pool2d_f64", "max_pool2d_backward_f32",
                "max_pool2d_backward_f64")


def softmax_xent_launch(rows: int, classes: int) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for ``softmax_xent_*``: one block per row, of whole warps (its shuffles use the
    full mask, undefined in a partial warp), one thread per class up to 256."""
    threads = 256 if classes >= 256 else max(32, -(-classes // 32) * 32)
    return (rows,), (threads,)


def sgd_launch(size: int) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for ``sgd_*``: 256 threads a block, at most 4096 blocks (a grid-stride loop
    covers the rest)."""
    return (min(4096, max(1, -(-size // 256))),), (256,)


def linear_ce_head_launch(rows: int, classes: int) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for ``linear_ce_head_*``: one block per row of the chunk, whole warps, one
    thread per class up to 256 (as ``softmax_xent_launch``)."""
    return softmax_xent_launch(rows, classes)


def max_pool2d_launch(size: int) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) for ``max_pool2d_*`` (``size``: output entries) and ``max_pool2d_backward_*`` (input
    entries): one thread per entry, grid-stride, as ``sgd_launch``."""
    return sgd_launch(size)
