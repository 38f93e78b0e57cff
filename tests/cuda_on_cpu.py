"""CUDA kernels run on the CPU (``cuda_on_cpu.h``), behind CuPy's ``RawModule`` interface.

``build(SOURCE)`` compiles the kernels' own source with g++ and returns a
module whose ``get_function(name)`` launches like a ``cupy.RawKernel``:
``kernel(grid, block, args)``. The arguments are checked as a GPU would need
them (exact dtypes, C-contiguous arrays, scalar widths), so a marshalling
mistake in the backend fails here rather than reading garbage on a device.

``cpu_cupy_backend()`` is the CuPy backend itself (``backends/cupy_backend.py``)
bound to NumPy arrays and these emulated kernels: its fused paths, fallbacks
and argument handling run on a machine with no GPU.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HEADER = Path(__file__).with_name("cuda_on_cpu.h")
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_POINTEE = {"float": np.float32, "double": np.float64, "long long": np.int64, "int": np.int32}
_SCALAR = {"float": ctypes.c_float, "double": ctypes.c_double, "long long": ctypes.c_longlong, "int": ctypes.c_int}
_built: dict[str, EmulatedModule] = {}


class EmulationError(RuntimeError):
    """A launch the emulator refused (bad arguments, deadlock, partial-warp shuffle)."""


class Parameter:
    def __init__(self, declaration: str):
        declaration = " ".join(declaration.replace("*", " * ").split())
        *type_words, self.name = declaration.split(" ")
        self.const = "const" in type_words
        self.pointer = "*" in type_words
        self.base = " ".join(w for w in type_words if w not in ("const", "*"))
        if self.base not in _POINTEE:
            raise ValueError(f"cuda_on_cpu: parameter type {self.base!r} of {self.name!r} is not supported")

    def convert(self, kernel: str, value):
        if self.pointer:
            want = np.dtype(_POINTEE[self.base])
            if not isinstance(value, np.ndarray):
                raise EmulationError(f"{kernel}: {self.name} must be an array, got {type(value).__name__}")
            if value.dtype != want:
                raise EmulationError(f"{kernel}: {self.name} must hold {want}, got {value.dtype}")
            if not value.flags.c_contiguous:
                raise EmulationError(f"{kernel}: {self.name} is not C-contiguous")
            if not self.const and not value.flags.writeable:
                raise EmulationError(f"{kernel}: {self.name} is written but the array is read-only")
            return value
        want = np.dtype(_POINTEE[self.base])
        # CuPy passes a NumPy scalar at its own width, a Python int as long long, a float as double
        python_ok = (self.base == "long long" and type(value) is int) or (self.base == "double" and type(value) is float)
        if not ((isinstance(value, np.generic) and value.dtype == want) or python_ok):
            raise EmulationError(f"{kernel}: {self.name} ({self.base}) must be a {want.type.__name__}, "
                                 f"got {type(value).__name__}")
        return _SCALAR[self.base](value)


class Guarded:
    """Each array argument, copied between guard bytes: a write outside it is reported."""

    BYTES, PATTERN = 64, 0xA5  # 64 keeps the copy as aligned as NumPy's own allocation

    def __init__(self, kernel: str, parameters: list[Parameter], values: list):
        self.kernel, self.copies = kernel, {}  # one copy per distinct array: aliases stay aliases
        self.pointers = []
        for parameter, value in zip(parameters, values):
            if not parameter.pointer:
                self.pointers.append(value)
                continue
            key = (value.ctypes.data, value.nbytes)
            if key not in self.copies:
                raw = np.full(value.nbytes + 2 * self.BYTES, self.PATTERN, np.uint8)
                raw[self.BYTES:self.BYTES + value.nbytes] = value.reshape(-1).view(np.uint8)
                self.copies[key] = (raw, value, [])
            self.copies[key][2].append(parameter)
            self.pointers.append(ctypes.c_void_p(self.copies[key][0].ctypes.data + self.BYTES))

    def finish(self) -> None:
        """Check the guards, then copy back what the kernel may have written."""
        for raw, value, parameters in self.copies.values():
            guards = np.concatenate([raw[:self.BYTES], raw[len(raw) - self.BYTES:]])
            if np.any(guards != self.PATTERN):
                names = "/".join(p.name for p in parameters)
                raise EmulationError(f"{self.kernel}: wrote outside the array passed as {names}")
            if any(not p.const for p in parameters):
                value.reshape(-1).view(np.uint8)[:] = raw[self.BYTES:len(raw) - self.BYTES]


class EmulatedKernel:
    def __init__(self, library, name: str, parameters: list[Parameter], seed: int):
        self.name, self.parameters, self.seed = name, parameters, seed
        self._function = getattr(library, f"emulate_{name}")
        self._function.restype = ctypes.c_int
        self._error = library.cuda_on_cpu_error
        self._error.restype = ctypes.c_char_p

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        for what, dims in (("grid", grid), ("block", block)):
            if any(d != 1 for d in tuple(dims)[1:]):
                raise EmulationError(f"{self.name}: only one-dimensional launches are emulated, got {what} {dims}")
        if len(args) != len(self.parameters):
            raise EmulationError(f"{self.name}: takes {len(self.parameters)} arguments, got {len(args)}")
        guarded = Guarded(self.name, self.parameters, [p.convert(self.name, a) for p, a in zip(self.parameters, args)])
        status = self._function(ctypes.c_uint(int(grid[0])), ctypes.c_uint(int(block[0])),
                                ctypes.c_uint(self.seed), *guarded.pointers)
        if status != 0:
            raise EmulationError(f"{self.name}<<<{grid[0]}, {block[0]}>>>: {self._error().decode()}")
        guarded.finish()


class EmulatedModule:
    """What ``cupy.RawModule(code=source)`` gives, with every launch run on the CPU."""

    def __init__(self, library_path: Path, kernels: dict[str, list[Parameter]]):
        self._library = ctypes.CDLL(str(library_path))
        self.kernels = kernels
        self.seed = 1  # 0 keeps the threads in order; any other value shuffles them, reproducibly

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self.kernels:
            raise EmulationError(f"no kernel named {name!r} in the module")
        return EmulatedKernel(self._library, name, self.kernels[name], self.seed)


_EXPORT = '__attribute__((visibility("default")))'
_SHARED = re.compile(r"(__shared__\s+[\w:<>, ]+?\s+(\w+)\s*(?:\[[^\]]*\]\s*)*;)")


def _poison_shared_memory(source: str) -> str:
    """After each ``__shared__`` declaration, the call that fills it with NaN bytes once a block."""
    return _SHARED.sub(r"\1 cuda_on_cpu::poison_shared(&\2, sizeof(\2));", source)


def compiler() -> str | None:
    return shutil.which("g++")


def build(source: str) -> EmulatedModule:
    """Compile ``source`` (CUDA C with ``extern "C" __global__`` kernels) for the emulator."""
    key = hashlib.sha256((HEADER.read_text() + source).encode()).hexdigest()[:16]
    if key in _built:
        return _built[key]
    kernels = {name: [Parameter(p) for p in params.split(",") if p.strip()]
               for name, params in _KERNEL.findall(source)}
    launchers = []
    for name, parameters in kernels.items():
        declared = ", ".join(f"{'const ' if p.const else ''}{p.base} {'*' if p.pointer else ''}{p.name}"
                             for p in parameters)
        names = ", ".join(p.name for p in parameters)
        launchers.append(f'extern "C" {_EXPORT} int emulate_{name}(unsigned grid, unsigned block, unsigned seed, {declared}) '
                         f"{{ return cuda_on_cpu::launch(grid, block, seed, [&] {{ {name}({names}); }}); }}")
    program = "\n".join([f'#include "{HEADER}"', _poison_shared_memory(source), *launchers,
                         f'extern "C" {_EXPORT} const char *cuda_on_cpu_error() '
                         '{ return cuda_on_cpu::error ? cuda_on_cpu::error : ""; }'])
    folder = Path(tempfile.mkdtemp(prefix="softgrad-cuda-on-cpu-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (folder / "kernels.cpp").write_text(program)
    # hidden symbols and no GNU_UNIQUE: each module built here keeps its own globals and shared
    # arrays, even where two of them hold the same template (a test builds a broken copy)
    result = subprocess.run([compiler() or "g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-fvisibility=hidden",
                             "-fno-gnu-unique", "kernels.cpp", "-o", "kernels.so"],
                            cwd=folder, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise EmulationError("g++ rejected the kernels:\n" + result.stderr[-4000:])
    _built[key] = EmulatedModule(folder / "kernels.so", kernels)
    return _built[key]


class CpuCuPy:
    """NumPy standing in for the ``cupy`` module, with ``RawModule`` compiled for the emulator."""

    ndarray = np.ndarray

    class cuda:  # noqa: N801  (CuPy's name)
        class _Stream:
            def synchronize(self) -> None:
                pass

        @staticmethod
        def get_current_stream():
            return CpuCuPy.cuda._Stream()

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asnumpy(x):
        return np.asarray(x)

    @staticmethod
    def RawModule(code: str, options=()):  # noqa: N802  (CuPy's name)
        return build(code)


def cpu_cupy_backend():
    """The CuPy backend's own code, bound to NumPy arrays and the emulated kernels."""
    import array_api_compat.numpy
    from softgrad.backends.cupy_backend import CuPyBackend

    backend = CuPyBackend.__new__(CuPyBackend)
    backend._bind(CpuCuPy(), array_api_compat.numpy, (np.ndarray, np.generic), "cpu (CUDA kernels emulated)")
    return backend
