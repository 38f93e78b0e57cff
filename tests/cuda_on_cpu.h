// Runs CUDA C kernels on the CPU, so a machine without a GPU can test what they compute.
//
// Each thread of a block is a fiber (ucontext); the blocks of a grid run one after another,
// which is why `__shared__` can be a function-local static. A fiber runs until it reaches a
// synchronisation point (__syncthreads, a warp shuffle), then the next one runs; the order in
// which the fibers run is shuffled every round (seeded), so a kernel that reads what another
// thread writes without a barrier between them shows it. Shared memory is filled with NaN bytes
// at the start of every block (tests/cuda_on_cpu.py inserts the calls), so a read of a slot
// no thread wrote shows too. A __syncthreads or a full-mask shuffle that not every thread
// reaches (a deadlock on a GPU) and a full-mask shuffle in a partial warp (undefined on a GPU)
// end the launch with an error instead of a result.
//
// Not checked: races *within* a segment between two synchronisation points (each fiber runs
// one segment without interruption, so `shared += 1` from many threads is never torn here, as
// it would be on a GPU: compute-sanitizer's racecheck covers that on a GPU, see .ci/gpu-check),
// out-of-bounds reads (out-of-bounds writes to the arguments are caught by guard bytes around
// them), the speed, and the intrinsics the kernels do not use.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

using std::exp;  // CUDA's exp(float) and log(float) are the float overloads, as here
using std::log;

struct cuda_on_cpu_uint3 {
    unsigned int x, y, z;
};

namespace cuda_on_cpu {

inline cuda_on_cpu_uint3 thread_idx{0, 0, 0}, block_idx{0, 0, 0}, block_dim{1, 1, 1}, grid_dim{1, 1, 1};
inline const char *error = nullptr;

struct Failure {};

[[noreturn]] inline void fail(const char *message) {
    if (error == nullptr) error = message;
    throw Failure{};
}

struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    bool done = false;
};

struct Barrier {
    unsigned expected = 0, arrived = 0;
    unsigned long long generation = 0;
};

inline ucontext_t scheduler;
inline std::vector<Fiber> fibers;
inline Fiber *current = nullptr;
inline const std::function<void()> *body = nullptr;
inline unsigned long long progress = 0;  // arrivals at barriers and fibers that ended
inline Barrier block_barrier;
inline std::vector<Barrier> warp_barriers;
inline std::vector<std::uint64_t> lanes;  // one shuffle slot per thread
inline std::vector<void *> poisoned;      // the shared arrays filled with NaN bytes in this block

// Called after every __shared__ declaration: the first thread of a block to reach it fills the
// array with 0xFF bytes (NaN as float or double), before any thread of the block can write it.
inline void poison_shared(void *address, std::size_t bytes) {
    if (std::find(poisoned.begin(), poisoned.end(), address) != poisoned.end()) return;
    poisoned.push_back(address);
    std::memset(address, 0xFF, bytes);
}

inline void wait(Barrier &barrier) {
    const auto generation = barrier.generation;
    ++progress;
    if (++barrier.arrived == barrier.expected) {
        barrier.arrived = 0;
        ++barrier.generation;
        return;
    }
    while (barrier.generation == generation) swapcontext(&current->context, &scheduler);
}

inline void fiber_entry() {
    try {
        (*body)();
    } catch (const Failure &) {
    } catch (...) {  // an exception must not leave the fiber: it would end the whole process
        if (error == nullptr) error = "an exception escaped the kernel";
    }
    current->done = true;
    ++progress;
    // returning resumes `scheduler` (uc_link)
}

// Runs one block; 0 when every thread ended, 1 on an error (see `error`).
inline int run_block(unsigned threads, std::mt19937 *rng) {
    constexpr std::size_t stack_size = 64 * 1024;
    poisoned.clear();
    for (unsigned i = 0; i < threads; ++i) {
        Fiber &fiber = fibers[i];
        fiber.done = false;
        if (fiber.stack.empty()) fiber.stack.resize(stack_size);
        getcontext(&fiber.context);
        fiber.context.uc_stack.ss_sp = fiber.stack.data();
        fiber.context.uc_stack.ss_size = fiber.stack.size();
        fiber.context.uc_link = &scheduler;
        makecontext(&fiber.context, fiber_entry, 0);
    }
    std::vector<unsigned> order(threads);
    std::iota(order.begin(), order.end(), 0u);
    unsigned live = threads;
    while (live > 0) {
        const auto before = progress;
        if (rng != nullptr) std::shuffle(order.begin(), order.end(), *rng);
        for (unsigned i : order) {
            Fiber &fiber = fibers[i];
            if (fiber.done) continue;
            current = &fiber;
            thread_idx = {i, 0, 0};
            swapcontext(&scheduler, &fiber.context);
            if (fiber.done) --live;
        }
        if (error != nullptr) return 1;
        if (live > 0 && progress == before) {
            error = "deadlock: a __syncthreads() or a full-mask warp shuffle is not reached by every thread";
            return 1;
        }
    }
    return 0;
}

// Runs `kernel` over grid x block threads (one dimension); 0 on success, else see `error`.
inline int launch(unsigned grid, unsigned block, unsigned seed, const std::function<void()> &kernel) {
    error = nullptr;
    if (block == 0 || block > 1024) {
        error = "a block holds 1 to 1024 threads";
        return 1;
    }
    if (grid == 0) {
        error = "a grid holds at least one block";
        return 1;
    }
    block_dim = {block, 1, 1};
    grid_dim = {grid, 1, 1};
    body = &kernel;
    fibers.clear();
    fibers.resize(block);
    lanes.assign(block, 0);
    block_barrier = Barrier{block};
    warp_barriers.assign((block + 31) / 32, Barrier{});
    for (unsigned w = 0; w < warp_barriers.size(); ++w) warp_barriers[w].expected = std::min(32u, block - 32 * w);
    std::mt19937 rng(seed);
    for (unsigned b = 0; b < grid; ++b) {
        block_idx = {b, 0, 0};
        if (run_block(block, seed == 0 ? nullptr : &rng) != 0) return 1;
    }
    return 0;
}

template <typename T>
inline T shuffle(unsigned mask, T value, int width, unsigned (*source_lane)(unsigned lane, int arg), int arg) {
    static_assert(sizeof(T) <= sizeof(std::uint64_t), "shuffles move at most 8 bytes");
    if (mask != 0xffffffffu || width != 32) fail("only full-mask, full-width warp shuffles are emulated");
    const unsigned tid = thread_idx.x, warp = tid / 32, lane = tid % 32;
    if (warp_barriers[warp].expected != 32) fail("a full-mask warp shuffle in a partial warp (blockDim.x % 32 != 0)");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    lanes[tid] = bits;
    wait(warp_barriers[warp]);
    const unsigned from = source_lane(lane, arg);
    T out = value;
    if (from < 32) std::memcpy(&out, &lanes[warp * 32 + from], sizeof(T));
    wait(warp_barriers[warp]);  // nobody overwrites a slot before every lane has read
    return out;
}

}  // namespace cuda_on_cpu

#define threadIdx cuda_on_cpu::thread_idx
#define blockIdx cuda_on_cpu::block_idx
#define blockDim cuda_on_cpu::block_dim
#define gridDim cuda_on_cpu::grid_dim
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

inline void __syncthreads() { cuda_on_cpu::wait(cuda_on_cpu::block_barrier); }

template <typename T>
inline T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    return cuda_on_cpu::shuffle(mask, value, width, [](unsigned lane, int d) { return lane + d; }, (int)delta);
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    return cuda_on_cpu::shuffle(mask, value, width, [](unsigned lane, int m) { return lane ^ (unsigned)m; },
                                lane_mask);
}

template <typename T>
inline T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
    return cuda_on_cpu::shuffle(mask, value, width, [](unsigned, int s) { return (unsigned)s % 32; }, src_lane);
}

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, sizeof d);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long i;
    std::memcpy(&i, &d, sizeof i);
    return i;
}
