"""The kernel cache under failure and attack: a full or read-only disk, planted or damaged Numba cache files,
many structures in one process (bounded memory), and an unwritable or booby-trapped dump folder."""

from __future__ import annotations

import errno
import gc
import linecache
import os
import pickle
import sys
import types
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest

import ift_snn
from ift_snn.backends import compiled, cpu, reference
from ift_snn.codegen import cpu as codegen_cpu
from ift_snn.codegen.cpu import KEY_FILE, KernelCacheWarning
from ift_snn.codegen.ir import build_kernel

pytestmark = pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
needs_numba = pytest.mark.skipif(not cpu.available(), reason="Numba is not installed")
posix_only = pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX file modes and owners")

A = np.random.default_rng(0).normal(0.4, 0.5, (30, 5))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh kernel cache, nothing compiled in memory, no warning given yet."""
    folder = tmp_path / "kernels"
    monkeypatch.setenv("IFT_SNN_CACHE_DIR", str(folder))
    monkeypatch.delenv("IFT_SNN_DUMP_DIR", raising=False)
    monkeypatch.setattr(codegen_cpu, "_warned_dirs", set())
    monkeypatch.setattr(codegen_cpu, "_warned_dumps", set())
    compiled.clear()
    yield folder
    compiled.clear()


def _forward(model, backend="cpu"):
    """ift_snn.forward as a new process runs it: nothing compiled in memory (the disk cache stays)."""
    compiled.clear()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trace = ift_snn.forward(model, A, backend=backend)
    u, s, _ = reference.simulate(model, A, None)
    np.testing.assert_allclose(trace.u, u, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(trace.s, s)
    return [str(w.message) for w in record if issubclass(w.category, KernelCacheWarning)]


def _dispatcher(model):
    """The Numba dispatcher the last forward of ``model`` ran (its cache statistics)."""
    return compiled.get_kernel(model, "forward_core", np.float64)[1]


def _only(folder: Path, pattern: str) -> Path:
    (path,) = folder.rglob(pattern)
    return path


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name]


# ------------------------------------------------------------ M2: no room, no permission
@needs_numba
@pytest.mark.parametrize("suffix, code", [(".py", errno.ENOSPC), (".nbi", errno.ENOSPC), (".nbc", errno.ENOSPC),
                                          (".nbc", errno.EACCES), (KEY_FILE, errno.EROFS)])
def test_a_failed_cache_write_falls_back_with_one_warning(cache_dir, monkeypatch, suffix, code):
    """Room for some files and not others (or no permission): the call succeeds, with one warning."""
    real_replace, real_link = os.replace, os.link

    def failing(real):
        def move(src, dst, *args, **kwargs):
            if os.fspath(dst).endswith(suffix):
                raise OSError(code, os.strerror(code), os.fspath(dst))
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "replace", failing(real_replace))
    monkeypatch.setattr(os, "link", failing(real_link))
    model = ift_snn.if_neuron()
    (message,) = _forward(model)
    assert "cannot use the kernel cache" in message and os.strerror(code) in message
    assert _forward(model) == []  # one warning per folder, and the next build works too
    _no_temporaries(cache_dir)
    assert not list(cache_dir.rglob("*" + suffix))


# ------------------------------------------------------------ M3: the cache folder is not trusted
class _Plant:
    """A pickle that creates a folder when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@needs_numba
@pytest.mark.parametrize("kind", ["nbi", "nbc"])
def test_a_planted_pickle_in_the_cache_never_runs(cache_dir, tmp_path, kind):
    import numba

    model = ift_snn.if_neuron()
    assert _forward(model) == []
    marker = tmp_path / "the_planted_pickle_ran"
    path = _only(cache_dir, f"*.{kind}")
    planted = pickle.dumps(_Plant(marker))
    # as an index it follows a valid version stamp (what Numba checks first), as data it is all there is
    path.write_bytes(pickle.dumps(numba.__version__, protocol=-1) + planted if kind == "nbi" else planted)
    (message,) = _forward(model)
    assert not marker.exists()
    assert "recompiled" in message and path.name in message
    assert _forward(model) == [] and _dispatcher(model).stats.cache_hits  # rewritten, then loaded from disk
    assert not marker.exists()


@needs_numba
@pytest.mark.parametrize("damage", ["truncated-nbc", "empty-nbi", "garbage-nbc", "empty-nbc", "truncated-nbi"])
def test_a_damaged_cache_entry_is_recompiled_once(cache_dir, damage):
    model = ift_snn.if_neuron()
    assert _forward(model) == []
    how, kind = damage.split("-")
    path = _only(cache_dir, f"*.{kind}")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(len(data))}[how])
    (message,) = _forward(model)
    assert "recompiled" in message
    assert _forward(model) == []
    assert _dispatcher(model).stats.cache_hits  # the next process loads the rewritten entry
    _no_temporaries(cache_dir)


@needs_numba
def test_a_cache_file_of_another_kernel_is_refused(cache_dir):
    """A valid file copied over another kernel's (its tag covers its name) is refused, not loaded as that one."""
    one, other = ift_snn.if_neuron(), ift_snn.lif(0.9)
    assert _forward(one) == [] and _forward(other) == []
    paths = sorted(cache_dir.rglob("*.nbc"))
    target = next(p for p in paths if "_if_" in p.name)
    target.write_bytes(next(p for p in paths if "_lif_" in p.name).read_bytes())
    (message,) = _forward(one)
    assert "recompiled" in message
    assert _forward(one) == []


@needs_numba
def test_an_entry_numba_cannot_load_is_deleted_and_recompiled(cache_dir, monkeypatch):
    from numba.core import compiler

    model = ift_snn.if_neuron()
    assert _forward(model) == []

    def broken(*args, **kwargs):
        raise RuntimeError("cannot rebuild this library")

    with monkeypatch.context() as patch:
        patch.setattr(compiler.CompileResult, "_rebuild", classmethod(broken))
        (message,) = _forward(model)
    assert "recompiled" in message and "cannot rebuild this library" in message
    assert _forward(model) == [] and _dispatcher(model).stats.cache_hits


@needs_numba
@posix_only
def test_cache_files_follow_the_umask_and_the_key_is_private(cache_dir):
    old = os.umask(0o027)
    try:
        assert _forward(ift_snn.if_neuron()) == []
    finally:
        os.umask(old)
    key = cache_dir / KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_size == 32
    for pattern in ("*.py", "*.nbi", "*.nbc"):
        assert _only(cache_dir, pattern).stat().st_mode & 0o777 == 0o640


def test_racing_processes_agree_on_one_key(tmp_path):
    """Writers racing to create the key (threads here; processes use the same os.link) all read the first."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        keys = list(pool.map(lambda _: codegen_cpu._cache_key(tmp_path), range(64)))
    assert len(set(keys)) == 1 and (tmp_path / KEY_FILE).read_bytes() == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]


@needs_numba
@posix_only
def test_a_key_others_can_read_is_refused(cache_dir):
    model = ift_snn.if_neuron()
    assert _forward(model) == []
    (cache_dir / KEY_FILE).chmod(0o644)
    (message,) = _forward(model)
    assert "cannot use the kernel cache" in message


@needs_numba
def test_a_key_symlink_is_refused(cache_dir, tmp_path):
    cache_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"k" * 32)
    os.symlink(elsewhere, cache_dir / KEY_FILE)
    (message,) = _forward(ift_snn.if_neuron())
    assert "cannot use the kernel cache" in message
    assert elsewhere.read_bytes() == b"k" * 32


# ------------------------------------------------------------ M7: bounded memory over many structures
def _structures(n: int):
    """n models of distinct structures (a literal inside a kernel is part of the structure)."""
    return [ift_snn.srm("alpha**n", f"theta*{0.5 + k / 1000}**n", params={"alpha": 0.9}) for k in range(n)]


def test_evicted_numpy_kernels_release_their_source_and_functions(cache_dir, monkeypatch):
    size = 4
    monkeypatch.setattr(compiled._compiled["numpy"], "maxsize", size)
    names = []
    for model in _structures(6 * size):
        ift_snn.forward(model, A, backend="numpy")
        names.append(compiled.get_kernel(model, "forward", np.float64, "numpy")[1].__code__.co_filename)
    assert len(set(names)) == 6 * size
    assert sum(name in linecache.cache for name in names) <= size
    gc.collect()
    live = [f for f in gc.get_objects() if type(f) is types.FunctionType and f.__code__.co_filename in names]
    assert len(live) <= size


@needs_numba
def test_evicted_numba_kernels_release_their_modules(cache_dir, monkeypatch):
    size = 1
    monkeypatch.setattr(compiled._compiled["cpu"], "maxsize", size)
    refs = []
    for model in _structures(3):
        ift_snn.forward(model, A, backend="cpu")  # compiled for real: Numba reads the file for its messages too
        refs.append(weakref.ref(_dispatcher(model)))

    def ours():
        modules = [m for m in sys.modules.values() if str(getattr(m, "__file__", "")).startswith(str(cache_dir))]
        files = {os.path.basename(name) for name in linecache.cache if name.endswith(".py") and
                 any(os.path.basename(name) == p.name for p in cache_dir.rglob("*.py"))}
        return modules, files

    modules, files = ours()
    assert len(modules) == size and len(files) == size
    gc.collect()
    assert sum(ref() is not None for ref in refs) == size
    compiled.clear()
    assert ours() == ([], set())


def test_the_lru_hands_every_dropped_entry_to_on_evict():
    from ift_snn.backends.cache import LRU

    dropped = []
    lru = LRU(2, on_evict=lambda key, value: dropped.append((key, value)))
    lru["a"], lru["b"] = 1, 2
    lru.get("a")
    lru["c"] = 3  # evicts b, the least recently used
    lru["a"] = 1  # the same value again: nothing dropped
    lru["a"] = 10  # replaced: the old value is dropped
    assert dropped == [("b", 2), ("a", 1)]
    lru.clear()
    assert dropped[2:] == [("c", 3), ("a", 10)] and len(lru) == 0


@needs_numba
def test_a_kernel_compiled_twice_keeps_its_source_until_both_are_released(cache_dir):
    source = codegen_cpu.python_source(build_kernel(ift_snn.if_neuron(), "forward", "f64"))
    first, second = codegen_cpu.compile_numba(source), codegen_cpu.compile_numba(source)
    filename = first.py_func.__code__.co_filename
    codegen_cpu.release(first)
    assert filename in linecache.cache and first.py_func.__module__ in sys.modules
    codegen_cpu.release(second)
    assert filename not in linecache.cache and first.py_func.__module__ not in sys.modules


# ------------------------------------------------------------ the dump folder
def test_an_unwritable_dump_dir_warns_once_and_never_fails(cache_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IFT_SNN_DUMP_DIR", str(blocker / "dump"))  # cannot be created, even as root
    first = _forward(ift_snn.if_neuron(), backend="numpy")
    assert len(first) == 1 and "IFT_SNN_DUMP_DIR" in first[0]
    assert _forward(ift_snn.lif(0.9), backend="numpy") == []


def test_the_dump_never_writes_through_a_symlink(cache_dir, tmp_path, monkeypatch):
    model = ift_snn.if_neuron()
    name = compiled.get_kernel(model, "forward", np.float64, "numpy")[0].name + ".numpy.py"
    dump = tmp_path / "dump"
    dump.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, dump / name)
    monkeypatch.setenv("IFT_SNN_DUMP_DIR", str(dump))
    assert _forward(model, backend="numpy") == []
    assert victim.read_text() == "keep me"
    assert not (dump / name).is_symlink() and "def ift_snn_if_forward_" in (dump / name).read_text()
    _no_temporaries(dump)
