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

Every array argument is declared not to overlap any other (LLVM's ``noalias``, Numba's internal ``noalias``
flag, set by :func:`_no_alias_compiler`): the loop vectorizer then needs no runtime checks between the
arguments (and between them and the chunk's state arrays), which cost code, compile time and a test per
step. The launcher (:func:`ift_snn.backends.compiled._run`) checks that what a kernel writes overlaps no
other argument before each call; whoever calls a kernel function directly must pass distinct arrays too.
On six built-in models, f64 and f32: 23 s to compile every scan against 33 s with the checks.

The source is registered with :mod:`linecache`, so ``inspect.getsource``
shows it, and is written to $IFT_SNN_DUMP_DIR when that is set (atomically,
never through a symlink; a dump that fails warns once and never fails the
call). Numba's ``fastmath`` stays off unless asked for.

Compiled kernels are cached across processes. :func:`compile_numba` writes
the source as a module file under the kernel cache directory,
``$IFT_SNN_CACHE_DIR`` when that is set, else the user cache directory
(``$XDG_CACHE_HOME/ift_snn/kernels``, by default ``~/.cache/ift_snn/kernels``
on Linux), as ``<kernel name>/<structure fingerprint>-<hash>.py``, where the
hash covers the source text, Numba's options and version and the cache
format, and defines the module from the text it generated (the file is
never imported, so no ``.pyc`` is read); Numba keeps the machine code in
the ``__pycache__`` next to it. A file is written once (atomically) and never
rewritten, since it keys Numba's index (by its content, or by its mtime in
older Numba). :func:`clear_disk_cache` empties the cache.

The cache folder is not trusted. Numba's index (``.nbi``) and data (``.nbc``)
files are pickles, so every one is written with an HMAC-SHA256 tag (a
per-user random key in ``<cache>/.ift_snn_key``, mode 0600, refused unless it
is a regular file of this user that only this user can read) over its file
name and content, and the bytes read are checked before anything is
unpickled. A file that fails the check (planted, truncated, empty, from
another kernel) or that Numba cannot load is deleted and the kernel
recompiled and saved again, with one :class:`KernelCacheWarning`. Where the
cache cannot be written (no room, no permission, read-only: any OSError while
writing the module file, the key or Numba's files), the call still succeeds:
the kernel is compiled in memory (or kept uncached), with one warning per
directory. Files are written to a temporary name and moved into place with
``os.replace`` (the user's umask applies; only the key is 0600), never through
a symlink.

Kernels in the bounded LRU maps of :mod:`ift_snn.backends.compiled` hold
their module and :mod:`linecache` entry; :func:`release` drops them when the
last holder is evicted, so a process that builds many structures keeps at
most the LRU's size of them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import hmac
import io
import linecache
import os
import pickle
import re
import secrets
import shutil
import stat
import sys
import threading
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

from .ir import KERNEL_SUFFIX, CodegenError, ScanKernel
from .printers import print_numba, print_numpy, print_numpy_map
from .tree import lower

__all__ = ["PythonSource", "NumpySource", "python_source", "numpy_source", "numpy_map_source", "compile_numba", "compile_numpy",
           "numba_available", "CHUNK", "kernel_cache_dir", "clear_disk_cache", "release", "KernelCacheWarning"]

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
_warned_dumps: set[str] = set()
#: The per-user secret in the cache folder that tags Numba's cache files (see the module docstring).
KEY_FILE = ".ift_snn_key"
_KEY_BYTES = 32
#: A tagged cache file is this magic, the HMAC-SHA256 tag of (magic, file name, payload), then Numba's payload.
_MAGIC = b"ift_snn hmac-sha256 v1\n"
_TAG_BYTES = hashlib.sha256().digest_size
#: Larger cache files are not read (a kernel's machine code is well under a megabyte).
_MAX_CACHE_FILE = 256 << 20
_MODULE_PREFIX = "_ift_snn_kernel_"
#: Part of every kernel file's hash: files of the untagged format before it are never looked at (no warnings).
_CACHE_FORMAT = "tagged-1"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_EXTRA = getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
#: linecache entries (and kernel modules) by file name, with how many compiled kernels hold each (:func:`release`).
_pins: dict[str, int] = {}
_pin_lock = threading.RLock()


class KernelCacheWarning(RuntimeWarning):
    """The kernel cache or the dump folder could not be used as asked; the call went on without it."""


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


# ------------------------------------------------------------ files
def _read_file(path, limit: int = _MAX_CACHE_FILE) -> bytes:
    """The bytes of the regular file ``path``, never through a symlink (nor from a FIFO or device):
    FileNotFoundError when there is none, another OSError when it is not a regular file or over ``limit``."""
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _O_EXTRA)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, "too large", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _holds(path, data: bytes) -> bool:
    """Whether ``path`` is a regular file (not a symlink) holding exactly ``data``."""
    try:
        return _read_file(path, len(data)) == data
    except OSError:
        return False


def _atomic_write(path: Path, data: bytes, *, mode: int = 0o666, keep_equal: bool = False) -> None:
    """Write ``data`` to ``path``: a fresh temporary file in the same folder, then ``os.replace``.

    The temporary file is created exclusively and never through a symlink (O_CREAT | O_EXCL |
    O_NOFOLLOW), and ``os.replace`` swaps a symlink at ``path`` itself, never writing its target.
    ``mode`` is filtered by the umask. ``keep_equal``: leave ``path`` (and its mtime) alone when it
    holds ``data`` by the time the temporary file is written (another process finished first).
    Raises OSError (no room, no permission, read-only) with nothing left behind.
    """
    tmp = path.parent / f".tmp-{secrets.token_hex(8)}-{path.name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_EXTRA, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        if not (keep_equal and _holds(path, data)):
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)  # left only when os.replace did not run or failed
        except OSError:
            pass


def _write_once(path: Path, code: str) -> None:
    """Write ``code`` to ``path`` atomically, unless the file already holds exactly that."""
    data = code.encode("utf-8")
    if _holds(path, data):
        return  # keep the mtime: older Numba keys its index by it (recent ones by the content)
    _atomic_write(path, data, keep_equal=True)


def _dump(filename: str, code: str) -> Path | None:
    """Write generated code into $IFT_SNN_DUMP_DIR (if set) atomically, never through a symlink; returns the
    path. A dump that cannot be written warns once per folder and returns None: it never fails the call."""
    folder = os.environ.get("IFT_SNN_DUMP_DIR")
    if not folder:
        return None
    path = Path(folder).expanduser() / filename
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, code.encode("utf-8"))
    except OSError as exc:
        if folder not in _warned_dumps:
            _warned_dumps.add(folder)
            reason = getattr(exc, "strerror", None) or str(exc)
            warnings.warn(f"ift_snn: cannot write generated code to IFT_SNN_DUMP_DIR={folder} ({reason}); "
                          "sources are not dumped.", KernelCacheWarning, stacklevel=3)
        return None
    return path


def _refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise OSError(errno.ELOOP, "a symlink in the kernel cache, refused", str(path))


def _module_file(source: PythonSource, options: dict) -> Path:
    """Write the kernel's module file (if needed) and return its path; OSError when it cannot."""
    fingerprint = source.kernel.fingerprint
    if not (isinstance(fingerprint, str) and _FINGERPRINT.fullmatch(fingerprint)):
        raise CodegenError(f"kernel {source.name}: the structure fingerprint is not a sha256 hex digest")
    import numba

    digest = hashlib.sha256()
    llvm = f"vectorize-memory-check-threshold={VECTORIZE_MEMORY_CHECKS} noalias"  # (machine code without them differs)
    for part in (source.code, repr(sorted(options.items())), numba.__version__, _CACHE_FORMAT, llvm):
        digest.update(part.encode("utf-8") + b"\0")
    folder = kernel_cache_dir() / source.name
    folder.mkdir(parents=True, exist_ok=True)
    _refuse_symlink(folder)
    path = folder / f"{fingerprint}-{digest.hexdigest()[:16]}.py"
    _write_once(path, source.code)
    return path


# ------------------------------------------------------------ the key and the tags of Numba's files
def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _O_EXTRA)
    try:
        st = os.fstat(fd)
        private = stat.S_ISREG(st.st_mode) and st.st_size == _KEY_BYTES
        if hasattr(os, "getuid"):
            private = private and st.st_uid == os.getuid() and not st.st_mode & 0o077
        key = os.read(fd, _KEY_BYTES + 1) if private else b""
    finally:
        os.close(fd)
    if len(key) != _KEY_BYTES:
        raise OSError(errno.EPERM, "the cache key is not a 32-byte file that only this user can read",
                      str(path))
    return key


def _cache_key(root: Path) -> bytes:
    """The secret that tags the cache files under ``root``, created (mode 0600) on first use.

    OSError when ``root/KEY_FILE`` is a symlink, not a regular file, not this user's or readable by
    others: then the cache is not used. Racing processes agree on the first key written (``os.link``).
    """
    path = root / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    tmp = root / f".tmp-{secrets.token_hex(8)}{KEY_FILE}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_EXTRA, 0o600)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
            os.write(fd, secrets.token_bytes(_KEY_BYTES))
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a key another process wrote first
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return _read_key(path)


def _tag(key: bytes, name: str, payload: bytes) -> bytes:
    return hmac.new(key, _MAGIC + name.encode("utf-8") + b"\0" + payload, hashlib.sha256).digest()


def _seal(key: bytes, name: str, payload: bytes) -> bytes:
    return _MAGIC + _tag(key, name, payload) + payload


def _unseal(key: bytes, name: str, blob: bytes) -> bytes | None:
    """The payload of a file named ``name`` written by :func:`_seal` with ``key``, else None."""
    head = len(_MAGIC) + _TAG_BYTES
    if len(blob) < head or not blob.startswith(_MAGIC):
        return None
    payload = blob[head:]
    return payload if hmac.compare_digest(blob[len(_MAGIC):head], _tag(key, name, payload)) else None


_verified_cache = None


def _verified_cache_class():
    """Numba's FunctionCache whose files are tagged and checked (built on first use: Numba loads lazily)."""
    global _verified_cache
    if _verified_cache is None:
        try:
            _verified_cache = _make_verified_cache()
        except (ImportError, AttributeError) as exc:  # pragma: no cover - a Numba without this cache API
            raise RuntimeError(f"this Numba's cache API is not the one ift_snn knows ({exc})") from exc
    return _verified_cache


def _make_verified_cache():
    import inspect

    from numba.core.caching import CompileResultCacheImpl, FunctionCache, IndexDataCacheFile, InTreeCacheLocator

    class Locator(InTreeCacheLocator):
        """The ``__pycache__`` next to the kernel file, whatever NUMBA_CACHE_DIR says; never a symlink.
        (No probe file: a read-only cache still serves what it holds, and a failed write is caught.)"""

        def ensure_cache_path(self):
            path = self.get_cache_path()
            os.makedirs(path, exist_ok=True)
            _refuse_symlink(Path(path))

    class Impl(CompileResultCacheImpl):
        def __init__(self, py_func):
            self._lineno = py_func.__code__.co_firstlineno
            source = inspect.getfile(py_func)
            self._locator = Locator(py_func, source)
            self._locator.ensure_cache_path()  # OSError: compile_numba goes on without a cache
            modname = os.path.splitext(os.path.basename(source))[0]
            self._filename_base = self.get_filename_base(f"{modname}.{py_func.__qualname__}",
                                                         getattr(sys, "abiflags", ""))

    class TaggedFile(IndexDataCacheFile):
        """Numba's index and data files, each sealed with the key's tag; checked before anything is unpickled."""

        def __init__(self, cache_path, filename_base, source_stamp, key: bytes):
            super().__init__(cache_path, filename_base, source_stamp)
            self._key = key
            self.rejected: list[str] = []  # files deleted since the last report, with why

        def reject(self, path: str, why: str) -> None:
            self.rejected.append(f"{os.path.basename(path)}: {why}")
            try:
                os.unlink(path)
            except OSError:
                pass

        def _read(self, path: str) -> bytes | None:
            try:
                blob = _read_file(path)
            except FileNotFoundError:
                raise
            except OSError as exc:  # a symlink, a FIFO, too large, unreadable
                self.reject(path, getattr(exc, "strerror", None) or str(exc))
                return None
            payload = _unseal(self._key, os.path.basename(path), blob)
            if payload is None:
                self.reject(path, "empty" if not blob else "not tagged by this user's key (planted, damaged "
                            "or from another kernel)")
            return payload

        def _write(self, path: str, payload: bytes) -> None:
            _atomic_write(Path(path), _seal(self._key, os.path.basename(path), payload))

        def _load_index(self):
            try:
                payload = self._read(self._index_path)
            except FileNotFoundError:
                return {}
            if payload is None:
                return {}
            try:  # Numba's layout: pickle(version), then pickle((source stamp, overloads))
                stream = io.BytesIO(payload)
                if pickle.load(stream) != self._version:
                    return {}
                stamp, overloads = pickle.loads(stream.read())
            except Exception as exc:  # noqa: BLE001 - tagged by us, yet unreadable: a bad entry all the same
                self.reject(self._index_path, f"unreadable ({type(exc).__name__})")
                return {}
            return overloads if stamp == self._source_stamp else {}

        def _save_index(self, overloads):
            self._write(self._index_path, pickle.dumps(self._version, protocol=-1)
                        + self._dump((self._source_stamp, overloads)))

        def _load_data(self, name):
            payload = self._read(self._data_path(name))
            return None if payload is None else pickle.loads(payload)

        def _save_data(self, name, data):
            self._write(self._data_path(name), self._dump(data))

    class VerifiedCache(FunctionCache):
        """Numba's per-function disk cache over tagged files. A file that fails its check, or an entry Numba
        cannot load, is deleted (all of this function's files) and the kernel recompiled, with one
        warning; a failed save (no room, no permission) warns once and leaves the kernel uncached."""

        _impl_class = Impl

        def __init__(self, py_func, key: bytes):
            super().__init__(py_func)
            self._cache_file = TaggedFile(self._cache_path, self._impl.filename_base,
                                          self._impl.locator.get_source_stamp(), key)

        def load_overload(self, sig, target_context):
            try:
                result = super().load_overload(sig, target_context)
            except Exception as exc:  # noqa: BLE001 - a cache entry must never fail the call
                self._purge()
                self._cache_file.rejected.append(f"Numba could not load it: {type(exc).__name__}: {exc!s:.200}")
                result = None
            self._report()
            return result

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception as exc:  # noqa: BLE001 - the kernel is compiled: only the cache is lost
                _warn_no_cache(exc)
            self._report()

        def _purge(self) -> None:
            """Delete this function's index and data files."""
            base = self._impl.filename_base + "."
            try:
                names = os.listdir(self._cache_path)
            except OSError:
                return
            for name in names:
                if name.startswith(base) and name.endswith((".nbi", ".nbc")):
                    try:
                        os.unlink(os.path.join(self._cache_path, name))
                    except OSError:
                        pass

        def _report(self) -> None:
            rejected = self._cache_file.rejected
            if rejected:
                warnings.warn(f"ift_snn: the kernel cache entry {self._impl.filename_base} in {self._cache_path} "
                              f"was not usable ({'; '.join(rejected)}); it was deleted and the kernel recompiled.",
                              KernelCacheWarning, stacklevel=2)
                rejected.clear()

    return VerifiedCache


# ------------------------------------------------------------ defining and releasing kernels
def _pin(filename: str, code: str) -> None:
    """Register ``code`` with linecache under ``filename`` (mtime None: never re-checked), held once more."""
    with _pin_lock:
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        _pins[filename] = _pins.get(filename, 0) + 1


def release(fn) -> None:
    """Let go of what a kernel from :func:`compile_numba` or :func:`compile_numpy` holds in this process.

    When no other kernel compiled from the same source holds them, its :mod:`linecache` entry and its
    module in ``sys.modules`` are dropped (the bounded kernel cache of
    :mod:`ift_snn.backends.compiled` calls this on eviction). ``fn`` itself keeps working; other
    objects (CuPy kernels) are ignored.
    """
    py_func = getattr(fn, "py_func", fn)
    code = getattr(py_func, "__code__", None)
    if code is None:
        return
    filename = code.co_filename
    with _pin_lock:
        count = _pins.get(filename, 0)
        if count > 1:
            _pins[filename] = count - 1
            return
        if count == 0:
            return
        del _pins[filename]
        # also the entries others made for the same file (Numba reads it by a relative path for its messages)
        base = os.path.basename(filename)
        for name in [name for name in list(linecache.cache) if os.path.basename(name) == base]:
            linecache.cache.pop(name, None)
        modname = getattr(py_func, "__module__", None)
        if isinstance(modname, str) and modname.startswith(_MODULE_PREFIX):
            module = sys.modules.get(modname)
            if module is not None and getattr(module, "__file__", None) == filename:
                del sys.modules[modname]


def _load_module_function(source: PythonSource, path: Path):
    """The kernel file's module, defined from ``source.code`` (the text generated here, never the file's, so
    nothing planted in the cache runs, and no ``.pyc`` is read), registered in sys.modules (Numba looks the
    module up by name) with the file's name as its ``__file__`` (Numba keys its cache by that file)."""
    modname = f"{_MODULE_PREFIX}{path.stem.replace('-', '_')}"
    filename = str(path)
    with _pin_lock:
        module = sys.modules.get(modname)
        if module is None or getattr(module, "__file__", None) != filename or not hasattr(module, source.name):
            module = types.ModuleType(modname)
            module.__file__ = filename
            exec(compile(source.code, filename, "exec"), module.__dict__)  # noqa: S102 - see compile_numba
            sys.modules[modname] = module
        _pin(filename, source.code)  # the source stays inspectable even if the file is deleted later
    return getattr(module, source.name)


def compile_numpy(source: NumpySource):
    """The generated NumPy function, defined from its text by ``exec`` (no compiler, no disk cache).

    Its source stays inspectable (registered with :mod:`linecache`, so
    ``inspect.getsource`` works) and is written to $IFT_SNN_DUMP_DIR when that
    is set. The name is checked like :func:`compile_numba`'s.
    """
    _check_name(source)
    _dump(source.name + ".numpy.py", source.code)
    return _compile_in_memory(source, " (numpy)")


def _compile_in_memory(source: PythonSource, label: str = ""):
    """Define the function from the source text, without a file (no cache across processes)."""
    filename = f"<ift_snn generated {source.name}{label}>"
    namespace: dict = {}
    exec(compile(source.code, filename, "exec"), namespace)  # noqa: S102 - generated code, see compile_numba
    _pin(filename, source.code)
    return namespace[source.name]


#: Runtime alias checks LLVM's loop vectorizer may add to one loop while our kernels compile (its default: 128). The
#: arguments are ``noalias`` (below), but a scan's step loop also reads and writes one state array of the chunk's
#: width per state value, which LLVM cannot prove apart: with several states (ALIF, the alpha kernel, a resonator's
#: SLAYER scan: tests/test_codegen.py) the checks exceed the default and the loop stays scalar. (Before the arguments
#: were ``noalias``, the exact backward of a LIF resetting before its decay, with dL/dalpha, ran at half speed for
#: the same reason: docs/benchmarks.md.) The checks only choose between the vector and the scalar loop at run time:
#: the same results either way.
VECTORIZE_MEMORY_CHECKS = 1024
_LLVM_DEFAULT_MEMORY_CHECKS = 128
_llvm_lock = threading.Lock()


@contextlib.contextmanager
def vectorizer_options():
    """LLVM's loop vectorizer allowed :data:`VECTORIZE_MEMORY_CHECKS` runtime checks while the block runs (Numba
    compiles a kernel at its first call: wrap that call), its default restored after (the option is LLVM's,
    global to the process: other code compiling meanwhile gets it too, which only lets it vectorise more)."""
    import llvmlite.binding as llvm

    with _llvm_lock:
        llvm.set_option("ift_snn", f"-vectorize-memory-check-threshold={VECTORIZE_MEMORY_CHECKS}")
        try:
            yield
        finally:
            llvm.set_option("ift_snn", f"-vectorize-memory-check-threshold={_LLVM_DEFAULT_MEMORY_CHECKS}")


def compile_numba(source: PythonSource, *, fast_math: bool = False):
    """Compile the generated function with ``numba.njit(nogil=True)``, cached on disk.

    The text is our own printer's output from a SymPy expression (user input
    was parsed over a whitelist long before), defined as a module whose file
    is in the kernel cache directory (see the module docstring) so that Numba
    can cache the machine code, in files checked before they are read; the
    file's name is the validated kernel name and hashes. If that directory
    cannot be written, the text is executed in memory and compiled without a
    cache (with one :class:`KernelCacheWarning` per directory).
    """
    try:
        import numba
    except ImportError as exc:  # pragma: no cover - numba is a core dependency
        raise ImportError("compiled CPU kernels need Numba: pip install numba") from exc
    _check_name(source)
    _dump(source.name + ".py", source.code)
    options = {"fastmath": bool(fast_math), "nogil": True}
    fn = None
    try:
        with _cache_lock:
            path = _module_file(source, options)
            key = _cache_key(path.parent.parent)
            fn = _load_module_function(source, path)
            cache = _verified_cache_class()(fn, key)
    except (OSError, RuntimeError) as exc:  # RuntimeError: no cache API in this Numba
        if fn is not None:
            release(fn)
        _warn_no_cache(exc)
        return numba.njit(cache=False, pipeline_class=_no_alias_compiler(), **options)(_compile_in_memory(source))
    dispatcher = numba.njit(cache=False, pipeline_class=_no_alias_compiler(), **options)(fn)
    dispatcher._cache = cache  # what cache=True sets (Dispatcher.enable_caching), with checked files
    return dispatcher


@functools.cache
def _no_alias_compiler():
    """Numba's compiler with every pointer argument ``noalias`` (see the module docstring; a class built on first
    use: Numba is imported lazily)."""
    from numba.core.compiler import Compiler

    class _NoAliasCompiler(Compiler):
        def __init__(self, typingctx, targetctx, library, args, return_type, flags, locals):
            flags.noalias = True  # (what Numba's parfors set for a gufunc whose arrays it proved disjoint)
            super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)

    return _NoAliasCompiler


def _warn_no_cache(exc: Exception) -> None:
    folder = str(kernel_cache_dir())
    if folder not in _warned_dirs:
        _warned_dirs.add(folder)
        reason = getattr(exc, "strerror", None) or str(exc)
        warnings.warn(f"ift_snn: cannot use the kernel cache {folder} ({reason}); compiled kernels are not "
                      "cached across processes. Set IFT_SNN_CACHE_DIR to a writable folder.",
                      KernelCacheWarning, stacklevel=3)
