"""Whether ``OPENBLAS_CORETYPE`` holds NumPy's OpenBLAS to an older kernel than the CPU can run.

OpenBLAS picks its kernels from the CPU's instruction sets at load time;
``OPENBLAS_CORETYPE`` overrides that choice. Some machines set it (with
``OPENBLAS_L2_SIZE``) to work around old OpenBLAS builds, which confines a
CPU with AVX-512 to the AVX2 (Haswell) kernels: 1.5-1.9x slower matmuls than a
user's machine would see. The bench warns in one line when that is so.
"""

from __future__ import annotations

import os

# OpenBLAS's x86-64 core names, by the widest vector instructions their kernels use
_TIERS = {"sse3": 1, "ssse3": 2, "sse4": 3, "avx": 4, "avx2": 5, "avx512": 6}
_CORE_TIER = {
    "prescott": "sse3", "core2": "ssse3", "penryn": "sse4", "dunnington": "sse4", "nehalem": "sse4",
    "atom": "ssse3", "barcelona": "sse3", "bobcat": "ssse3", "opteron": "sse3", "sandybridge": "avx",
    "bulldozer": "avx", "piledriver": "avx", "steamroller": "avx", "excavator": "avx", "haswell": "avx2",
    "zen": "avx2", "skylakex": "avx512", "cooperlake": "avx512", "sapphirerapids": "avx512",
}
_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}  # what OpenBLAS's SkylakeX kernels need


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_tier(flags: set[str]) -> str | None:
    """The widest OpenBLAS kernel family the CPU runs, from its /proc/cpuinfo flags."""
    if _AVX512 <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    if "avx" in flags:
        return "avx"
    if "sse4_1" in flags:
        return "sse4"
    if "ssse3" in flags:
        return "ssse3"
    return "sse3" if "pni" in flags else None


def forced_kernel_warning(environ: dict[str, str] | None = None, flags: set[str] | None = None) -> str | None:
    """One line when ``OPENBLAS_CORETYPE`` names an older kernel family than this CPU runs, else None."""
    environ = os.environ if environ is None else environ
    core = environ.get("OPENBLAS_CORETYPE", "").strip()
    if not core:
        return None
    forced = _CORE_TIER.get(core.lower())
    best = cpu_tier(cpu_flags() if flags is None else flags)
    if forced is None or best is None or _TIERS[forced] >= _TIERS[best]:
        return None
    also = " and OPENBLAS_L2_SIZE" if "OPENBLAS_L2_SIZE" in environ else ""
    return (f"warning: OPENBLAS_CORETYPE={core} holds NumPy's OpenBLAS to {forced.upper()} kernels on a CPU "
            f"with {best.upper()}: its matmuls run slower than on a user's machine; unset it{also} for this "
            "command (make bench does)")
