"""ScanKernel -> CUDA C source (KernelSource), and compilation to PTX without a GPU.

Layout: one thread per neuron j looping over time; arrays are time-major
(T, M) so element (t, j) is at t*M + j and neighbouring threads read
neighbouring addresses (coalesced). The forward kernel writes u, s and
sigma (the backward reads sigma instead of recomputing exp); the backward
kernel is the reverse scan, restarting its state at truncation boundaries.

The source starts with a header comment naming the model, the structure
fingerprint and every expression. Kernel names are
``ift_snn_<model>_<quantity>_<f32|f64>_<sha8>`` (sha256, never ``hash()``).
No fast-math unless ``fast_math=True`` is asked for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..neurons.models import NeuronModel
from .ir import CodegenError, ScanKernel, build_kernel
from .printers import print_cuda
from .tree import lower

__all__ = ["KernelSource", "cuda_source", "generate_cuda", "compile_ptx", "nvrtc_available", "dump"]

ARCHS = ("sm_80", "sm_90")


@dataclass(frozen=True)
class KernelSource:
    """A printed kernel: its name, source text, compiler options and the IR it came from."""

    name: str
    code: str
    options: tuple[str, ...]
    kernel: ScanKernel

    def __str__(self) -> str:
        return self.code


def cuda_source(kernel: ScanKernel, *, header: str = "", fast_math: bool = False) -> KernelSource:
    """Print ``kernel`` as a CUDA C ``extern "C" __global__`` function (its loop tree, :func:`print_cuda`)."""
    options = ("--std=c++14",) + (("--use_fast_math",) if fast_math else ())
    return KernelSource(kernel.name, print_cuda(lower(kernel, header=header)), options, kernel)


def generate_cuda(model: NeuronModel, quantity: str, dtype: str = "f32", *, fast_math: bool = False) -> KernelSource:
    """The CUDA source of one scan of ``model``; also dumped when IFT_SNN_DUMP_DIR is set."""
    kernel = build_kernel(model, quantity, dtype)
    source = cuda_source(kernel, header=f"model: {model!r}", fast_math=fast_math)
    dump(source.name + ".cu", source.code)
    return source


def dump(filename: str, code: str) -> Path | None:
    """Write generated code into $IFT_SNN_DUMP_DIR (if set), atomically and never through a symlink; returns the
    path, or None (with one warning per folder) where it cannot be written: a dump never fails the call."""
    if not os.environ.get("IFT_SNN_DUMP_DIR"):
        return None
    from .cpu import _dump  # (imported here: cpu imports this module)

    return _dump(filename, code)


# ------------------------------------------------------------ compilation
def nvrtc_available() -> bool:
    try:
        from cupy_backends.cuda.libs import nvrtc  # noqa: F401

        nvrtc.getVersion()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False


def compile_ptx(source: KernelSource, arch: str = "sm_90") -> str:
    """Compile to PTX without a GPU: NVRTC through CuPy's binding, else ``nvcc --ptx``.

    Raises CodegenError with the compiler's log when the source does not compile.
    """
    compute = arch.replace("sm_", "compute_")
    if nvrtc_available():
        from cupy_backends.cuda.libs import nvrtc

        prog = nvrtc.createProgram(source.code, source.name + ".cu", [], [])
        try:
            try:
                nvrtc.compileProgram(prog, [f"-arch={compute}", *source.options])
            except nvrtc.NVRTCError as exc:
                log = nvrtc.getProgramLog(prog)
                raise CodegenError(f"{source.name} does not compile for {arch}:\n{log}") from exc
            ptx = nvrtc.getPTX(prog)
            return ptx.decode() if isinstance(ptx, bytes) else ptx
        finally:
            nvrtc.destroyProgram(prog)
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise CodegenError("no CUDA compiler: pip install -e '.[gpu]' in the ift_snn checkout (CuPy with NVRTC) or put nvcc on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        cu = Path(tmp) / f"{source.name}.cu"
        cu.write_text(source.code)
        flags = [f for f in source.options if f != "--use_fast_math"]
        if "--use_fast_math" in source.options:
            flags.append("--use_fast_math")
        out = subprocess.run([nvcc, "--ptx", f"-arch={arch}", *flags, "-o", "-", str(cu)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise CodegenError(f"{source.name} does not compile for {arch}:\n{out.stderr}")
        return out.stdout
