"""ScanKernel -> Python source: compiled with Numba (the CPU kernels), or vectorised NumPy.

Both are printed from the kernel's loop tree (:mod:`ift_snn.codegen.tree`).
The NumPy kernel (:func:`numpy_source`, :func:`compile_numpy`) has the same
signature and runs each statement on the whole neuron vector, with a Python
loop over time: no compiler, the fallback where Numba is missing and
``backend="numpy"``.

Loop order matters on time-major data: the time loop is outside and the
neuron loop inside, over contiguous neurons, in chunks; the launcher runs
ranges of neurons (``j_begin``, ``j_end``) on threads (the kernels release
the GIL). Numba's ``parallel=True`` did the same with ``prange`` but took 3x
as long to compile (1.8 s against 0.6 s for the LIF backward).
Measured on the 2-core build machine, a loop over time per neuron column was
15x slower. The state of a chunk lives in small arrays of the chunk's width.

The source is registered with :mod:`linecache`, so ``inspect.getsource``
shows it, and is written to $IFT_SNN_DUMP_DIR when that is set. Numba's
``fastmath`` stays off unless asked for.

Compiled kernels are cached across processes. :func:`compile_numba` writes
the source as a module file under the kernel cache directory,
``$IFT_SNN_CACHE_DIR`` when that is set, else the user cache directory
(``$XDG_CACHE_HOME/ift_snn/kernels``, by default ``~/.cache/ift_snn/kernels``
on Linux), as ``<kernel name>/<structure fingerprint>-<hash>.py``, where the
hash covers the source text and Numba's options, and imports it so that
``numba.njit(cache=True)`` keeps the machine code in the ``__pycache__`` next
to it. A file is written once (atomically) and never rewritten, since its
mtime keys Numba's index. Where the directory cannot be written, kernels are
compiled in memory as before, with one warning. :func:`clear_disk_cache`
empties the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from .cuda import dump
from .ir import KERNEL_SUFFIX, CodegenError, ScanKernel
from .printers import print_numba, print_numpy, print_numpy_map
from .tree import lower

__all__ = ["PythonSource", "NumpySource", "python_source", "numpy_source", "numpy_map_source", "compile_numba", "compile_numpy",
           "numba_available", "CHUNK", "kernel_cache_dir", "clear_disk_cache"]

#: Neurons per parallel chunk.
CHUNK = 1024


@dataclass(frozen=True)
class PythonSource:
    """Generated Python (for Numba): function name, source text, the IR."""

    name: str
    code: str
    kernel: ScanKernel

    def __str__(self) -> str:
        return self.code


def numba_available() -> bool:
    try:
        import numba  # noqa: F401

        return True
    except ImportError:
        return False


def python_source(kernel: ScanKernel, *, header: str = "") -> PythonSource:
    """Print ``kernel`` as a Python function for ``numba.njit(nogil=True)`` over neurons j_begin..j_end-1."""
    return PythonSource(kernel.name, print_numba(lower(kernel, header=header)), kernel)


@dataclass(frozen=True)
class NumpySource(PythonSource):
    """Generated vectorised NumPy Python: function name, source text, the IR."""


def numpy_source(kernel: ScanKernel, *, header: str = "") -> NumpySource:
    """Print ``kernel`` as a plain Python function over the NumPy neuron vector ``[j_begin:j_end]``.

    Same signature as :func:`python_source` (the chunk width is ignored);
    float32 kernels keep float32 arithmetic (np.float32 literals).
    """
    return NumpySource(kernel.name, print_numpy(lower(kernel, header=header)), kernel)


def numpy_map_source(kernel: ScanKernel, *, header: str = "") -> NumpySource:
    """Print a pointwise map (``build_kernel(model, "surrogate", dtype)``) as NumPy over flat elements
    ``[e_begin:e_end]``: ``fn(inputs..., outputs..., params..., e_begin, e_end)`` on arrays passed flat."""
    return NumpySource(kernel.name, print_numpy_map(lower(kernel, header=header)), kernel)


#: The only names a kernel file may carry (with hashes); nothing a user typed reaches a path.
_CACHE_NAME = re.compile(r"ift_snn_[a-z0-9_]+" + KERNEL_SUFFIX)
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_cache_lock = threading.Lock()
_warned_dirs: set[str] = set()


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: $IFT_SNN_CACHE_DIR, else the user cache directory."""
    folder = os.environ.get("IFT_SNN_CACHE_DIR")
    if folder:
        return Path(folder).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "ift_snn" / "kernels"


def clear_disk_cache() -> int:
    """Delete the cached kernel files (and Numba's cache of them); returns how many kernels.

    Only the folders this module creates (named like a kernel) are removed, so
    an $IFT_SNN_CACHE_DIR pointing at a shared folder loses nothing else.
    Kernels already loaded in a process keep working.
    """
    root = kernel_cache_dir()
    removed = 0
    if not root.is_dir():
        return 0
    with _cache_lock:
        for entry in root.iterdir():
            if entry.is_dir() and not entry.is_symlink() and _CACHE_NAME.fullmatch(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed


def _check_name(source: PythonSource) -> None:
    if not (isinstance(source.name, str) and _CACHE_NAME.fullmatch(source.name)):
        raise CodegenError(f"refusing to compile a kernel named {source.name!r:.120}: "
                           "not ift_snn_<model>_<quantity>_<f32|f64>_<sha8>")


def _write_once(path: Path, code: str) -> None:
    """Write ``code`` to ``path`` atomically, unless the file already holds exactly that."""
    data = code.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return  # keep the mtime: it keys Numba's index
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".py", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:  # another process may have finished the same file meanwhile: keep its mtime
            if path.read_bytes() == data:
                return
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _module_file(source: PythonSource, options: dict) -> Path:
    """Write the kernel's module file (if needed) and return its path; OSError when it cannot."""
    fingerprint = source.kernel.fingerprint
    if not (isinstance(fingerprint, str) and _FINGERPRINT.fullmatch(fingerprint)):
        raise CodegenError(f"kernel {source.name}: the structure fingerprint is not a sha256 hex digest")
    import numba

    digest = hashlib.sha256()
    for part in (source.code, repr(sorted(options.items())), numba.__version__):
        digest.update(part.encode("utf-8") + b"\0")
    folder = kernel_cache_dir() / source.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{fingerprint}-{digest.hexdigest()[:16]}.py"
    _write_once(path, source.code)
    return path


def _load_module_function(source: PythonSource, path: Path):
    """Import the kernel file as a module (registered in sys.modules, which Numba's cache needs)."""
    modname = f"_ift_snn_kernel_{path.stem.replace('-', '_')}"
    module = sys.modules.get(modname)
    if module is None or getattr(module, "__file__", None) != str(path):
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has a loader
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(modname, None)
            raise
    # the source stays inspectable even if the file is deleted later (mtime None: never re-checked)
    linecache.cache[str(path)] = (len(source.code), None, source.code.splitlines(True), str(path))
    return getattr(module, source.name)


def compile_numpy(source: NumpySource):
    """The generated NumPy function, defined from its text by ``exec`` (no compiler, no disk cache).

    Its source stays inspectable (registered with :mod:`linecache`, so
    ``inspect.getsource`` works) and is written to $IFT_SNN_DUMP_DIR when that
    is set. The name is checked like :func:`compile_numba`'s.
    """
    _check_name(source)
    dump(source.name + ".numpy.py", source.code)
    return _compile_in_memory(source, " (numpy)")


def _compile_in_memory(source: PythonSource, label: str = ""):
    """Define the function from the source text, without a file (no cache across processes)."""
    filename = f"<ift_snn generated {source.name}{label}>"
    linecache.cache[filename] = (len(source.code), None, source.code.splitlines(True), filename)
    namespace: dict = {}
    exec(compile(source.code, filename, "exec"), namespace)  # noqa: S102 - generated code, see compile_numba
    return namespace[source.name]


def compile_numba(source: PythonSource, *, fast_math: bool = False):
    """Compile the generated function with ``numba.njit(nogil=True)``, cached on disk.

    The text is our own printer's output from a SymPy expression (user input
    was parsed over a whitelist long before), imported from a file in the
    kernel cache directory (see the module docstring) so that Numba can cache
    the machine code; the file's name is the validated kernel name and hashes.
    If that directory cannot be written, the text is executed in memory and
    compiled without a cache (with one warning per directory).
    """
    try:
        import numba
    except ImportError as exc:  # pragma: no cover - numba is a core dependency
        raise ImportError("compiled CPU kernels need Numba: pip install numba") from exc
    _check_name(source)
    dump(source.name + ".py", source.code)
    options = {"fastmath": bool(fast_math), "nogil": True}
    try:
        with _cache_lock:
            fn = _load_module_function(source, _module_file(source, options))
        return numba.njit(cache=True, **options)(fn)
    except (OSError, RuntimeError) as exc:  # RuntimeError: Numba found no writable place for its cache
        _warn_no_cache(exc)
        return numba.njit(cache=False, **options)(_compile_in_memory(source))


def _warn_no_cache(exc: Exception) -> None:
    folder = str(kernel_cache_dir())
    if folder not in _warned_dirs:
        _warned_dirs.add(folder)
        reason = getattr(exc, "strerror", None) or str(exc)
        warnings.warn(f"ift_snn: cannot use the kernel cache {folder} ({reason}); compiled kernels are not "
                      "cached across processes. Set IFT_SNN_CACHE_DIR to a writable folder.",
                      RuntimeWarning, stacklevel=3)
