"""Compiled CPU kernels are kept on disk (module file + Numba's cache) and reused by later processes."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ift_snn
from ift_snn.backends import cpu, reference
from ift_snn.codegen import cpu as codegen_cpu
from ift_snn.codegen.cpu import PythonSource, clear_disk_cache, compile_numba, kernel_cache_dir, python_source
from ift_snn.codegen.ir import CodegenError, argument_values, build_kernel

pytestmark = [
    pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning"),
    pytest.mark.skipif(not cpu.available(), reason="Numba is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "kernels"
    monkeypatch.setenv("IFT_SNN_CACHE_DIR", str(folder))
    monkeypatch.delenv("IFT_SNN_DUMP_DIR", raising=False)
    return folder


def _source(model=None, quantity="forward", dtype="f64"):
    return python_source(build_kernel(model or ift_snn.if_neuron(), quantity, dtype))


def _kernel_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IFT_SNN_CACHE_DIR", str(tmp_path / "mine"))
    assert kernel_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("IFT_SNN_CACHE_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert kernel_cache_dir() == tmp_path / "xdg" / "ift_snn" / "kernels"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert kernel_cache_dir() == Path.home() / ".cache" / "ift_snn" / "kernels"


def test_the_module_file_is_written_once_and_reused(cache_dir):
    py = _source()
    fn = compile_numba(py)
    (path,) = _kernel_files(cache_dir)
    assert path.parent.name == py.name and path.name.startswith(py.kernel.fingerprint + "-")
    assert path.read_text() == py.code
    assert inspect.getsource(fn.py_func).startswith(f"def {py.name}(")
    assert inspect.getsourcefile(fn.py_func) == str(path)
    old = 1_000_000_000
    os.utime(path, ns=(old, old))  # a rewrite would move the mtime that keys Numba's index
    fn2 = compile_numba(py)
    assert _kernel_files(cache_dir) == [path] and path.stat().st_mtime_ns == old
    assert inspect.getsource(fn2.py_func) == inspect.getsource(fn.py_func)
    # other Numba options (or other source text) never share a file
    compile_numba(py, fast_math=True)
    assert len(_kernel_files(cache_dir)) == 2
    assert not list(cache_dir.rglob(".tmp-*"))


def test_a_damaged_file_is_replaced(cache_dir):
    py = _source()
    compile_numba(py)
    (path,) = _kernel_files(cache_dir)
    path.write_text(py.code[:40])
    compile_numba(py)
    assert path.read_text() == py.code


def test_dump_dir_still_receives_the_source(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IFT_SNN_DUMP_DIR", str(tmp_path / "dump"))
    py = _source()
    compile_numba(py)
    assert (tmp_path / "dump" / f"{py.name}.py").read_text() == py.code


@pytest.mark.parametrize("name", ["../ift_snn_lif_forward_f32_0123abcd", "ift_snn_lif_forward_f32_0123abcd/../x",
                                  "ift_snn_Lif_forward_f32_0123abcd", "ift_snn_lif_other_f32_0123abcd",
                                  "ift_snn_lif_forward_f32_0123abcd\n", "os", ""])
def test_a_bad_kernel_name_is_refused(cache_dir, name):
    py = _source()
    with pytest.raises(CodegenError, match="refusing"):
        compile_numba(PythonSource(name, py.code, py.kernel))
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def _run_forward(fn, kernel, a):
    """Call a compiled forward kernel the way ift_snn.backends.compiled binds it for the "cpu" target."""
    T, M = a.shape
    outs = {o.name: np.empty_like(a) for o in kernel.outputs}
    args = [a] + [np.zeros(M, a.dtype) for _ in kernel.vectors]
    args += [outs[o.name] for o in kernel.outputs] + [np.empty(M, a.dtype) for _ in kernel.finals]
    args += [a.dtype.type(v) for v in argument_values(ift_snn.if_neuron())] + [T, M, 0, codegen_cpu.CHUNK]
    cpu.launch(fn, args, M)
    return outs


def test_an_unwritable_cache_dir_falls_back_with_one_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IFT_SNN_CACHE_DIR", str(blocker / "kernels"))  # cannot be created, even as root
    monkeypatch.setattr(codegen_cpu, "_warned_dirs", set())
    py = _source()
    with pytest.warns(RuntimeWarning, match="cannot use the kernel cache") as record:
        fn = compile_numba(py)
        compile_numba(py)
    assert len([w for w in record if "kernel cache" in str(w.message)]) == 1
    assert inspect.getsource(fn.py_func).startswith(f"def {py.name}(")
    a = np.random.default_rng(0).normal(0.4, 0.5, (30, 5))
    outs = _run_forward(fn, py.kernel, a)
    u, s, _ = reference.simulate(ift_snn.if_neuron(), a, None)
    np.testing.assert_allclose(outs["u"], u, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(outs["s"], s)


def test_concurrent_writers_of_one_file_all_succeed(cache_dir):
    """Writers racing on one kernel file (threads here; processes use the same temp file + os.replace)."""
    from concurrent.futures import ThreadPoolExecutor

    py = _source()
    cache_dir.mkdir(parents=True)
    path = cache_dir / "race.py"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: codegen_cpu._write_once(path, py.code), range(32)))
    assert path.read_text() == py.code and [p.name for p in cache_dir.iterdir()] == ["race.py"]


def test_clear_disk_cache_removes_only_kernels(cache_dir):
    compile_numba(_source())
    other = cache_dir / "keep_me.txt"
    other.write_text("not ours")
    assert clear_disk_cache() == 1
    assert _kernel_files(cache_dir) == [] and other.exists()
    assert clear_disk_cache() == 0


_SCRIPT = """
import json, numpy as np, ift_snn
from ift_snn.backends import cpu
a = np.random.default_rng(0).normal(0.4, 0.5, (20, 4)).astype(np.float32)
trace = ift_snn.forward(ift_snn.lif(0.9), a)
print(json.dumps({"build_seconds": cpu.CACHE_STATS["build_seconds"], "backend": trace.backend,
                  "u": trace.u.astype(float).tolist()}))
"""


def test_a_new_process_reuses_the_compiled_kernel(cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT", "IFT_SNN_DUMP_DIR")}
    env["IFT_SNN_CACHE_DIR"] = str(cache_dir)
    cmd = [sys.executable, "-c", _SCRIPT]

    def run():
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    cold = run()
    assert list(cache_dir.rglob("*.nbi")) and list(cache_dir.rglob("*.nbc"))
    (path,) = _kernel_files(cache_dir)
    mtime = path.stat().st_mtime_ns
    warm = run()
    first, second = cold["build_seconds"], warm["build_seconds"]
    print(f"\nlif forward f32 build_seconds: first process {first:.3f} s, second process {second:.3f} s")
    assert cold["backend"] == warm["backend"] == "cpu" and cold["u"] == warm["u"]
    assert path.stat().st_mtime_ns == mtime
    assert second < 0.5 * first, f"warm {second:.3f} s is not well below cold {first:.3f} s"
