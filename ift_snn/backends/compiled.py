"""One launcher for every generated target: arguments bound in one place, kernels memoised.

A kernel is one scan of a model (``forward``, ``backward`` = exodus, ``slayer``)
printed from its loop tree (:mod:`ift_snn.codegen.tree`) for a target:

``"cpu"``    Numba (:func:`~ift_snn.codegen.cpu.python_source`), compiled with a disk
             cache, run on threads over ranges of whole chunks of neurons (the
             kernels release the GIL);
``"numpy"``  vectorised NumPy (:func:`~ift_snn.codegen.cpu.numpy_source`), defined by
             ``exec``, called once over all neurons: no compiler, the fallback;
``"cupy"``   CUDA C (:func:`~ift_snn.codegen.cuda.cuda_source`) as a ``cupy.RawKernel``,
             one thread per neuron, 256 a block, on CuPy's current stream.

Every target takes the same arguments (:func:`_bind`): the per-step inputs by
name, the per-neuron vectors by name (zeros when not given), freshly
allocated outputs (T, M) and finals (M,), the parameter values of
:func:`~ift_snn.codegen.ir.argument_values` in the array dtype, then T, M and
the truncation K (0 = none); the CPU targets add the chunk width and the
neuron range. Kernels are memoised per (model structure, quantity, dtype) for
the IR and, per target, per (structure fingerprint, device) for the compiled
function, in bounded LRU maps: parameter values are arguments, so a trained
alpha never compiles again. A compiled kernel the map evicts releases its
module and :mod:`linecache` entry, so many structures in one process keep at
most the map's size of them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..methods import get_method

from ..codegen.cpu import (
    CHUNK,
    compile_numba,
    compile_numpy,
    numba_available,
    numpy_map_source,
    numpy_source,
    python_source,
    release,
    vectorizer_options,
)
from ..codegen.ir import (
    GUARD,
    PER_NEURON,
    ScanKernel,
    argument_values,
    build_kernel,
    check_per_neuron,
    structure_header,
)
from ..codegen.tree import (
    FINAL,
    INPUT,
    OUTPUT,
    VECTOR,
    WORK,
    lower,
)
from ..neurons.models import NeuronModel, param_symbol
from ..symbolic.recurrence import STATE_OUT, derive_recurrence
from ..symbolic.step import STATE_COTANGENT
from ..symbolic.recurrence import initial_state as _initial_state
from ..symbolic.system import STATE_IN
from .cache import LRU, MAX_KERNELS

__all__ = ["TARGETS", "forward", "backward", "get_kernel", "available", "threads", "set_threads", "launch", "clear",
           "require_cupy", "is_cupy_array", "CACHE_STATS", "CHUNK", "THREADS"]

TARGETS = ("cpu", "numpy", "cupy")
#: CUDA threads per block.
THREADS = 256
_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_lock = threading.Lock()
#: The IR per (structure, quantity, dtype), shared by the targets; compiled kernels, one bounded map per target.
_ir = LRU(MAX_KERNELS * len(TARGETS))


def _release(_key, found) -> None:
    """An evicted compiled kernel lets go of its module and linecache entry (:func:`~ift_snn.codegen.cpu.release`)."""
    release(found.fn)


_compiled = {target: LRU(on_evict=_release) for target in TARGETS}
#: The derived scans per structure: the forward and the backward kernels of a structure share one derivation.
_recurrences = LRU()
#: Counters of the kernel cache (every target): builds (codegen + compile) and hits, with the seconds spent building.
CACHE_STATS = {"builds": 0, "hits": 0, "build_seconds": 0.0}


@dataclass(frozen=True, eq=False)
class _Launchable:
    """A compiled kernel and the names of what it reads and writes, in argument order.

    A vector or final is a name (an (M,) array) or a tuple of names (one (rows, M) array whose row r
    is the r-th name, :func:`ift_snn.codegen.tree.lower`); ``work`` the slots of each ring buffer,
    allocated (slots, M) per call.
    """

    kernel: ScanKernel
    fn: object
    inputs: tuple[str, ...]
    vectors: tuple[str | tuple[str, ...], ...]
    outputs: tuple[str, ...]
    finals: tuple[str | tuple[str, ...], ...]
    work: tuple[int, ...] = ()

    @classmethod
    def of(cls, kernel: ScanKernel, fn=None) -> _Launchable:
        tree = lower(kernel)

        def names(kind):
            return tuple(tuple(r.name for r in a.rows) if a.rows else a.symbol.name for a in tree.of_kind(kind))

        return cls(kernel, fn, names(INPUT), names(VECTOR), names(OUTPUT), names(FINAL),
                   tuple(a.length for a in tree.of_kind(WORK)))


def available() -> bool:
    """Whether the "cpu" target (Numba) can run here."""
    return numba_available()


def require_cupy():
    """Import CuPy or say how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("GPU arrays need CuPy: pip install -e '.[gpu]' in the ift_snn checkout (CuPy for CUDA 12)") from exc
    return cupy


def is_cupy_array(x) -> bool:
    return type(x).__module__.startswith("cupy")


def _dtype_name(dtype) -> str:
    try:
        return _DTYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"kernels run in float32 or float64, not {np.dtype(dtype)}") from None


#: Most distinct kernels one process compiles with Numba. LLVM never frees the machine code of a compiled
#: function (numba issues 5976, 7831): about 0.7 MB a kernel, 2-3 MB a model structure, however the LRU evicts.
#: Beyond this many, a new structure's kernels on the "cpu" target run as the generated NumPy code (the same loop
#: tree; slower, its memory released on eviction), with one warning.
MAX_NUMBA_KERNELS = 256
_numba_built: set[str] = set()
_numba_warned = False


def _numpy_instead(kernel, header: str):
    """The NumPy-printed function of ``kernel`` callable as the "cpu" launcher calls a Numba kernel."""
    fn = compile_numpy(numpy_source(kernel, header=header))

    def run(*args):
        with np.errstate(all="ignore"):  # non-finite values are checked by the caller, as for every target
            return fn(*args)

    run.py_func = fn  # what release() reads: the generated function's pinned source, dropped on eviction
    return run


def _build(layout: _Launchable, model: NeuronModel, target: str, dtype: np.dtype):
    """The compiled function of ``layout.kernel`` for ``target``."""
    global _numba_warned
    kernel = layout.kernel
    header = structure_header(model)
    if kernel.direction == "map":  # a pointwise map runs as vectorised NumPy on the CPU targets
        return compile_numpy(numpy_map_source(kernel, header=header))
    if target == "cpu":
        if kernel.fingerprint not in _numba_built and len(_numba_built) >= MAX_NUMBA_KERNELS:
            if not _numba_warned:
                _numba_warned = True
                warnings.warn(f"ift_snn: this process has compiled {len(_numba_built)} kernels with Numba, whose "
                              "machine code is never freed; kernels of further model structures run as the "
                              "generated NumPy code (slower, memory bounded). Raise "
                              "ift_snn.backends.compiled.MAX_NUMBA_KERNELS to compile more.", RuntimeWarning,
                              stacklevel=5)
            return _numpy_instead(kernel, header)
        fn = compile_numba(python_source(kernel, header=header))
        with vectorizer_options():  # (codegen/cpu.py: LLVM may vectorise the step loop however many arrays it has)
            _warm_up(layout, fn, dtype)  # Numba compiles on the first call: do it here
        _numba_built.add(kernel.fingerprint)
        return fn
    if target == "numpy":
        return compile_numpy(numpy_source(kernel, header=header))
    from ..codegen.cuda import cuda_source

    source = cuda_source(kernel, header=header)
    return require_cupy().RawKernel(source.code, source.name, options=source.options)


def _get(model: NeuronModel, quantity: str, dtype, target: str, per_neuron: tuple[str, ...] = (),
         sums: tuple[str, ...] = (), recurrent: bool = False) -> _Launchable:
    """The memoised kernel of one scan of ``model`` for ``target``; built once per structure, dtype, set of
    per-neuron parameters, (``backward_a`` / ``slayer_a``) set of parameter sums kept, and ``recurrent``
    (the scan of a recurrent layer's neurons, coupled per group)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    dtype = np.dtype(dtype)
    key = (model.structure, quantity, _dtype_name(dtype), tuple(per_neuron), tuple(sorted(sums)), bool(recurrent))
    device = require_cupy().cuda.Device().id if target == "cupy" else None
    with _lock:
        hit = _ir.get(key)
        if hit is not None:
            found = _compiled[target].get((hit.fingerprint, device))
            if found is not None:
                CACHE_STATS["hits"] += 1
                return found
        start = time.perf_counter()
        kernel = hit
        if kernel is None:
            recurrence = _recurrences.get(model.structure)
            if recurrence is None:
                recurrence = _recurrences[model.structure] = derive_recurrence(model)
            kernel = build_kernel(model, quantity, key[2], recurrence, per_neuron=per_neuron, sums=key[4],
                                  recurrent=recurrent)
        _ir[key] = kernel
        ckey = (kernel.fingerprint, device)
        found = _compiled[target].get(ckey)
        if found is None:
            layout = _Launchable.of(kernel)  # the loop tree's arguments, lowered once
            found = dataclasses.replace(layout, fn=_build(layout, model, target, dtype))
            _compiled[target][ckey] = found
        CACHE_STATS["builds"] += 1
        CACHE_STATS["build_seconds"] += time.perf_counter() - start
        return found


def get_kernel(model: NeuronModel, quantity: str, dtype, target: str = "cpu",
               per_neuron: tuple[str, ...] = ()) -> tuple[ScanKernel, object]:
    """(IR, compiled function) for one scan of ``model`` on ``target``; built once per structure and dtype.

    The "cpu" function is compiled with its array arguments ``noalias`` (codegen/cpu.py): call it with arrays
    that share no memory with one another (as :func:`_run` does, and checks)."""
    found = _get(model, quantity, dtype, target, check_per_neuron(model, per_neuron))
    return found.kernel, found.fn


def clear() -> None:
    """Forget every memoised kernel (the disk cache of Numba stays) and the output workspace; for benchmarks of the
    first build."""
    with _lock:
        _ir.clear()
        _recurrences.clear()
        for cache in _compiled.values():
            cache.clear()
    workspace.clear()


class Workspace:
    """Output buffers of the CPU kernels, reused once nobody else holds them (a pool keyed by shape and dtype).

    Why: on these machines a fresh large array costs its page faults every call (NumPy asks for transparent
    huge pages on large arrays, and the kernel zeroes, and at times compacts, memory for each fault), and
    some calls paid 2-3x their usual time for it. An array handed out earlier is reused only when the pool's
    list holds the last reference to it (``sys.getrefcount``): a trace, a view or a tensor sharing its
    memory keeps it out of the pool, so no result is ever overwritten. At most ``max_bytes`` are kept
    (default 2 GiB); :meth:`clear` (and :func:`clear`) lets them go.
    """

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self._arrays: dict[tuple, list[np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def empty(self, shape: tuple, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        key = (tuple(int(n) for n in shape), dtype.str)
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            for i in range(len(arrays)):
                if sys.getrefcount(arrays[i]) == 2:  # the list's reference and this call's argument: free
                    return arrays[i]
            arr = np.empty(key[0], dtype)
            if self._bytes + arr.nbytes <= self.max_bytes:
                arrays.append(arr)
                self._bytes += arr.nbytes
            return arr

    def clear(self) -> None:
        with self._lock:
            self._arrays.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool (in use or free)."""
        return self._bytes


#: The CPU kernels' outputs come from here (:class:`Workspace`).
workspace = Workspace()


def _read_only(x: np.ndarray) -> np.ndarray:
    """A read-only view of x. Numba compiles one machine function per argument type, and whether an
    array is writeable is part of its type: the kernels' inputs are always passed read-only, so one
    compile serves arrays of every origin (a user's read-only input, a broadcast initial state)."""
    view = x.view()
    view.flags.writeable = False
    return view


def _warm_up(k: _Launchable, fn, dtype: np.dtype) -> None:
    """Call a Numba kernel once on arrays of one neuron and one step of the real types, so that the compile
    is counted here (and happens once: the argument types are those of :func:`_run`)."""
    one = lambda: np.full((1, 1), 0.5, dtype)  # noqa: E731
    # (values near 0.5 and distinct, like the parameters: a per-neuron threshold of 0 would divide by zero,
    # and so would 1/(alpha - beta), a parallel form's coefficient, at alpha = beta)
    distinct = lambda i: 0.5 + 0.0173 * i  # noqa: E731
    per = lambda entry, i: np.full((len(entry), 1) if isinstance(entry, tuple) else 1, distinct(i), dtype)  # noqa: E731
    args = [_read_only(one()) for _ in k.inputs] + [_read_only(per(v, i)) for i, v in enumerate(k.vectors)]
    args += [one() for _ in k.outputs] + [per(f, 0) for f in k.finals]
    args += [dtype.type(distinct(i)) for i, _ in enumerate(k.kernel.params)]
    args += [_read_only(np.zeros((1, 1), dtype))] if k.kernel.coupled else []
    args += [np.zeros((n, 1), dtype) for n in k.work]
    fn(*args, 1, 1, 0, CHUNK, 0, 1)


_threads_set: int | None = None


def set_threads(n: int | None) -> int | None:
    """Run the "cpu" kernels on ``n`` threads from now on (None: back to :func:`threads`' default), as
    ``torch.set_num_threads`` does for PyTorch's. Returns the previous setting (to restore it)."""
    global _threads_set
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads={n!r}: expected a positive int or None")
    previous, _threads_set = _threads_set, n
    return previous


def threads() -> int:
    """Threads the "cpu" kernels run on: what :func:`set_threads` set, else $IFT_SNN_NUM_THREADS, else Numba's
    NUMBA_NUM_THREADS (the cores)."""
    if _threads_set is not None:
        return _threads_set
    env = os.environ.get("IFT_SNN_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"IFT_SNN_NUM_THREADS={env!r}: expected a positive integer") from None
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def launch(fn, args: list, M: int) -> None:
    """Run a Numba kernel over neurons 0..M-1, split into ranges of whole chunks, one per thread.

    The kernels release the GIL (``nogil=True``), so the ranges run in parallel; neurons are
    independent, so the split changes nothing in the result.
    """
    launch_all(fn, [(args, M)])


#: Work items per thread a call is cut into: the threads take the next item when they finish one (a thread
#: whose core is slowed, by another process or by the host under a virtual machine, does fewer items instead of
#: holding the others up at the end: docs/benchmarks.md, "the slow rounds").
ITEMS_PER_THREAD = 8


def launch_all(fn, calls: list, chunk: int = CHUNK) -> None:
    """Run a Numba kernel once per (args, M) in ``calls`` (each over its neurons 0..M-1), the whole
    work split into items of whole chunks of neurons (a recurrent layer's kernel: chunk = the group of N
    coupled neurons), about :data:`ITEMS_PER_THREAD` per thread, each a run of consecutive chunks of one
    call; the threads take the items in turn (:func:`_share`)."""
    n_chunks = sum(-(-M // chunk) for _, M in calls)
    per_item = max(1, -(-n_chunks // (threads() * ITEMS_PER_THREAD)))
    step = per_item * chunk
    items = [(c, lo, min(M, lo + step)) for c, (_, M) in enumerate(calls) for lo in range(0, M, step)]
    _share(lambda item: fn(*calls[item[0]][0], item[1], item[2]), items)


def _share(run, items: list) -> None:
    """``run(item)`` for every item, on up to :func:`threads` threads (the caller's one of them), each taking
    the next item when it is done with one: dynamic scheduling, so that the work follows the cores' speeds.
    The first exception is raised after every thread has stopped."""
    n = min(threads(), len(items))
    if n <= 1:
        for item in items:
            run(item)
        return
    order = iter(items)
    lock = threading.Lock()

    def worker(_=None) -> None:
        while True:
            with lock:
                item = next(order, None)
            if item is None:
                return
            run(item)

    futures = [_thread_pool(n).submit(worker) for _ in range(n - 1)]
    try:
        worker()
    finally:
        for f in futures:
            f.exception()  # (wait for each)
    for f in futures:
        f.result()


def _in_threads(run, parts: list) -> None:
    """``run(part)`` for every part, one thread each (the caller's thread when there is one part)."""
    if len(parts) == 1:
        run(parts[0])
        return
    futures = [_thread_pool(len(parts)).submit(run, part) for part in parts]
    for f in futures:
        f.result()


#: Neurons a chunk of a recurrent layer's kernel holds at most (whole groups of N): the groups of one chunk read
#: each row of the coupling matrix once per step together.
RECURRENT_CHUNK = 2048

#: Flat elements per call of a pointwise map: blocks that stay in cache between its NumPy ufuncs
#: (at 500 x 65,536 float32 on 2 cores: 34 ms with 16k, 20 ms with 256k, 21 ms with 1M).
MAP_BLOCK = 1 << 18


def _map(model: NeuronModel, dtype, inputs: Mapping, finite: list | None = None) -> dict:
    """Run the pointwise map of ``model`` (``surrogate``: sigma from u) over C-contiguous ``inputs`` of
    one shape (any layout: the map is elementwise), in blocks of flat elements split over the threads
    (NumPy's ufuncs release the GIL). Outputs have the inputs' shape. ``finite``: a list that gets False
    appended for each block whose outputs are not all finite (their sum, taken while the block is in cache;
    a sum that overflows only sends the caller to its full check)."""
    k = _get(model, "surrogate", dtype, "cpu")
    # (a constant surrogate, straight-through custom(1), reads nothing: the shape is the membrane's)
    shape = inputs[k.inputs[0] if k.inputs else "u"].shape
    outs = {name: workspace.empty(shape, dtype) for name in k.outputs}  # reused buffers (Workspace)
    flat_outs = [o.reshape(-1) for o in outs.values()]
    args = [inputs[name].reshape(-1) for name in k.inputs] + flat_outs
    args += [dtype.type(v) for v in argument_values(model)]
    n_el = math.prod(shape)

    def block(e: int) -> None:
        end = min(n_el, e + MAP_BLOCK)
        with np.errstate(all="ignore"):  # non-finite values are checked by the caller
            k.fn(*args, e, end)
            if finite is not None and not all(math.isfinite(o[e:end].sum()) for o in flat_outs):
                finite.append(False)

    _share(block, list(range(0, n_el, MAP_BLOCK)))
    return outs


def _thread_pool(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ift_snn")
            _pool_size = n
        return _pool


def _run(model: NeuronModel, quantity: str, target: str, dtype, T: int, M: int, inputs: Mapping,
         vectors: Mapping, truncation: int, blocks: tuple[int, int] | None = None,
         per_neuron: Mapping | None = None, sums: tuple[str, ...] = (), coupling=None) -> tuple[dict, dict]:
    """Bind the arguments of one kernel and run it: ({output: (T, M)}, {final: (M,)}).

    ``inputs`` maps per-step input names to (T, M) C-contiguous arrays of ``dtype``; ``vectors``
    maps vector names to (M,) arrays or None (zeros). Outputs and finals are allocated here.
    ``blocks`` = (B, N): batch-major layout, the per-step arrays are (B, T, N) with M = B N; each
    block b is a C-contiguous (T, N) array, run as its own call over N neurons (its vectors and
    finals are the slices [b N, (b + 1) N)), so no array is transposed.
    ``per_neuron`` maps parameter names to (M,) arrays of values, one per neuron (the kernel's vectors
    ``pv_<name>``); the other parameters are the model's scalars.
    ``coupling`` = (matrix (N, N) C-contiguous in ``dtype``, N): the recurrent layer's kernel, its neurons
    coupled in groups of N contiguous ones (the vector ``cp_init`` is read from ``vectors``); the CPU targets
    run each group as one chunk, CUDA as one block of N threads.
    """
    per_neuron = dict(per_neuron or {})
    names = check_per_neuron(model, per_neuron)
    if per_neuron:
        vectors = {**vectors, **{PER_NEURON + k: v for k, v in per_neuron.items()}}
    k = _get(model, quantity, dtype, target, names, sums, recurrent=coupling is not None)
    xp = require_cupy() if target == "cupy" else np
    matrix, group = ([coupling[0]], coupling[1]) if coupling is not None else ([], CHUNK)
    chunk = group
    if matrix and blocks is None and target == "cpu":
        # several samples' groups per chunk share each read of the matrix, while every thread keeps 2 chunks
        chunk = group * max(1, min(RECURRENT_CHUNK // group, M // group // (2 * threads())))
    if matrix and target == "cpu":
        matrix = [_read_only(matrix[0])]  # read-only, as every input (one Numba compile, _warm_up)
    step_shape = (T, M) if blocks is None else (blocks[0], T, blocks[1])
    per_step = []
    for name in k.inputs:
        x = inputs.get(name)
        if x is None:
            raise ValueError(f"kernel {k.kernel.name} reads the per-step input {name!r}, which was not given")
        per_step.append(x)
    def vector(name):
        v = vectors.get(name)
        return xp.zeros(M, dtype) if v is None else v

    # a grouped vector is one (rows, M) array; a grouped final one (rows, M) array whose rows are the finals
    vecs = [xp.stack([vector(n) for n in entry]) if isinstance(entry, tuple) else vector(entry) for entry in k.vectors]
    empty = workspace.empty if xp is np else xp.empty  # CPU: reused buffers (Workspace)
    outs = {name: empty(step_shape, dtype) for name in k.outputs}
    fin_arrays = [xp.empty((len(entry), M) if isinstance(entry, tuple) else M, dtype) for entry in k.finals]
    fins = {}
    for entry, arr in zip(k.finals, fin_arrays):
        fins.update(zip(entry, arr) if isinstance(entry, tuple) else [(entry, arr)])
    params = [dtype.type(v) for v in argument_values(model, names)]
    if blocks is None:
        work = [xp.empty((n, M), dtype) for n in k.work]
        calls = [(per_step + vecs + list(outs.values()) + fin_arrays + params + matrix + work, M)]
    else:
        B, N = blocks
        cols = lambda x, b: x[..., b * N:(b + 1) * N]  # noqa: E731
        # (rows, M) arrays are split into contiguous (rows, N) blocks, finals written back after the calls
        vecs = [xp.ascontiguousarray(v.reshape(-1, B, N).transpose(1, 0, 2)) if v.ndim == 2 else v for v in vecs]
        parts = [xp.empty((B, f.shape[0], N), dtype) if f.ndim == 2 else f for f in fin_arrays]
        work = [xp.empty((B, n, N), dtype) for n in k.work]
        calls = [([x[b] for x in per_step] + [v[b] if v.ndim == 3 else cols(v, b) for v in vecs]
                  + [o[b] for o in outs.values()] + [f[b] if f.ndim == 3 else cols(f, b) for f in parts]
                  + params + matrix + [w[b] for w in work], N) for b in range(B)]
    if target == "cpu":
        # (the finals and work arrays were allocated above: only the reused output buffers can overlap anything)
        _check_disjoint(list(outs.values()), per_step + vecs + matrix)
        n_read = len(per_step) + len(vecs)  # what the kernel only reads goes in read-only, as in _warm_up
        launch_all(k.fn, [([_read_only(x) for x in args[:n_read]] + args[n_read:] + [T, n, truncation, chunk], n)
                          for args, n in calls], chunk)
    elif target == "numpy":
        with np.errstate(all="ignore"):  # like the compiled targets: non-finite values are checked by the caller
            for args, n in calls:
                k.fn(*args, T, n, truncation, group, 0, n)
    elif matrix:  # one block of N threads per group, its coupled-back values in shared memory
        for args, n in calls:
            sizes = [np.int32(T), np.int32(n), np.int32(truncation)]
            k.fn((n // group,), (group,), tuple(args + sizes), shared_mem=group * dtype.itemsize)
    else:
        for args, n in calls:
            sizes = [np.int32(T), np.int32(n), np.int32(truncation)]
            k.fn(((n + THREADS - 1) // THREADS,), (THREADS,), tuple(args + sizes))
    if blocks is not None:
        for f, part in zip(fin_arrays, parts):
            if f.ndim == 2:
                f[...] = part.transpose(1, 0, 2).reshape(f.shape)
    return outs, fins


def _check_disjoint(written: list, read: list) -> None:
    """The Numba kernels are compiled with every array argument ``noalias`` (codegen/cpu.py): an array a kernel
    writes must share no memory with another argument. The output buffers come from the workspace, so an overlap
    is a bug of ours: raised before the kernel runs (bounds only, about a microsecond a pair)."""
    for i, w in enumerate(written):
        for other in written[i + 1:] + read:
            if np.may_share_memory(w, other):
                raise RuntimeError(f"ift_snn internal error: a kernel's output buffer {w.shape} overlaps another "
                                   f"argument {getattr(other, 'shape', None)}; please report this")


def recurrence(model: NeuronModel):
    """The derived scans of ``model``'s structure (memoised; the kernels are built from them)."""
    with _lock:
        rec = _recurrences.get(model.structure)
        if rec is None:
            rec = _recurrences[model.structure] = derive_recurrence(model)
    return rec


def initial_state(model: NeuronModel, u0, M: int, dtype, xp=np, per_neuron: Mapping | None = None):
    """x0 (n_state, M): the forward state an initial membrane ``u0`` (M,) or None (zeros) stands for,
    from the derived map ``Recurrence.initial`` (for a membrane model (u0, 0, ...); for an SRM the
    eps filter state after the input u0 at time -1), at the model's values or the (M,) ``per_neuron`` ones."""
    rec = recurrence(model)
    u0 = xp.zeros(M, dtype) if u0 is None else u0
    values = model.values
    if per_neuron:
        values = {**values, **{param_symbol(k): v for k, v in per_neuron.items()}}
    return _initial_state(rec, values, u0, xp)


def _surrogate_reads(model: NeuronModel) -> set[str]:
    """Names of the model's parameters that its surrogate reads (theta, for every built-in one)."""
    expr = model.surrogate.template if model.surrogate_arguments else model.surrogate.expr
    return {s.name for s in sp.sympify(expr).free_symbols} & set(model.parameter_names)


def _vectors(model: NeuronModel, vectors: Mapping | None, u0, M: int, dtype, xp, per_neuron=None) -> dict:
    """The kernel vectors: u_init, and x0_<state> from ``vectors`` or else from u0."""
    out = dict(vectors or {})
    if u0 is not None:
        out["u_init"] = u0
    names = [STATE_IN + st.name for st in recurrence(model).forward.state]
    if not any(n in out for n in names):
        x0 = initial_state(model, u0, M, dtype, xp, per_neuron)
        out.update(zip(names, x0))
    return out


def _sizes(x):
    """(T, M, blocks) of a (T, M) time-major array (blocks None) or a (B, T, N) batch-major one
    (M = B N, blocks (B, N))."""
    if x.ndim == 3:
        return x.shape[1], x.shape[0] * x.shape[2], (x.shape[0], x.shape[2])
    return x.shape[0], x.shape[1], None


def forward(model: NeuronModel, a, u0=None, target: str = "cpu", *, vectors: Mapping | None = None,
            with_state: bool = False, per_neuron: Mapping | None = None, coupling=None, with_check: bool = False):
    """(u, s, sigma, mask) of the generated forward scan for (T, M) C-contiguous ``a``, or (B, T, N)
    batch-major (M = B N neurons, numbered b N + n; outputs in the same layout).

    ``u0``: the initial membrane (M,) or None (zeros); ``vectors``: further per-neuron vectors by
    name, among them the initial state x0_<state> (which then replaces u0). ``mask`` (1[not
    clipped], bool) is None for models without a clip. Arrays of ``target``'s kind (NumPy, or CuPy
    for "cupy"), in a's dtype. ``with_state=True`` appends the final state (n_state, M). ``per_neuron``:
    {parameter: (M,) values}, one value per neuron (see :func:`_run`). ``coupling`` = (V^T, N): a recurrent
    layer, a[n] = c[n] + V s[n-1] with ``a`` holding c and ``vectors["cp_init"]`` s[-1] (:func:`_run`).
    ``with_check=True`` appends ``finite``: True when a, u and sigma were all finite (the kernels' guard,
    :data:`~ift_snn.codegen.ir.GUARD`, and the map's block sums; no further pass over the arrays).
    """
    T, M, blocks = _sizes(a)
    dtype = np.dtype(a.dtype)
    xp = require_cupy() if target == "cupy" else np
    vecs = _vectors(model, vectors, u0, M, dtype, xp, per_neuron)
    bad: list = []  # (the map's blocks with a non-finite output)
    if target == "cpu" and not (per_neuron and set(per_neuron) & _surrogate_reads(model)):
        # the scan writes what the recurrence computes; the pointwise rest (sigma) runs vectorised after it
        outs, fins = _run(model, "forward_core", target, dtype, T, M, {"a": a}, vecs, 0, blocks, per_neuron,
                          coupling=coupling)
        outs.update(_map(model, dtype, outs, bad))
    else:  # (a surrogate that reads a per-neuron parameter, e.g. theta, is computed in the scan)
        outs, fins = _run(model, "forward", target, dtype, T, M, {"a": a}, vecs, 0, blocks, per_neuron,
                          coupling=coupling)
    mask = outs["m"].astype(bool) if "m" in outs else None
    result = (outs["u"], outs["s"], outs["sigma"], mask)
    if with_state:
        names = [STATE_OUT + st.name for st in recurrence(model).forward.state]
        result += (xp.stack([fins[n] for n in names]) if names else xp.zeros((0, M), dtype),)
    if with_check:
        result += (not bad and guard_finite(fins),)
    return result


def guard_finite(fins: Mapping) -> bool:
    """True when a scan's guard (:data:`~ift_snn.codegen.ir.GUARD` in its finals ``fins``) says that every
    value it watched was finite; False without a guard (a scan that watches nothing: the caller checks in full)."""
    guard = fins.get(GUARD)
    if guard is None:
        return False
    return guard.size == 0 or bool(guard.max() == 0)  # (NaN compares unequal; max of a NaN vector is NaN)


def backward(model: NeuronModel, method: str, g, u, s, sigma, mask, truncation: int | None, a=None, u0=None,
             target: str = "cpu", *, vectors: Mapping | None = None, per_neuron: Mapping | None = None,
             sums: tuple[str, ...] | None = None, coupling=None):
    """(dL/da, finals) by the generated exodus (``method="exodus"``) or slayer reverse scan.

    finals maps the kernel's per-neuron results by name: ``grad_u_init``, the parameter sums
    ``acc_<name>`` and the diagnostics ``dg_max_factor``, ``dg_longest_run``, ``dg_max_growth``.
    ``sums``: None for the scan with every parameter sum, else the names whose sums the scan keeps (the one
    derived without the others: ``backward_a`` / ``slayer_a``, which reads fewer inputs).
    Inputs are (T, M) C-contiguous arrays of one dtype; ``mask`` is the forward's (bool) or None.
    ``coupling`` = (V, N): a recurrent layer, g[n] + V^T dL/da[n+1] (``vectors["cp_init"]``: dL/da[T]).
    """
    quantity = get_method(method).scan + ("" if sums is None else "_a")
    T, M, blocks = _sizes(g)
    dtype = np.dtype(g.dtype)
    named = {"g": g, "sigma": sigma, "s": s, "u": u, "a": a}
    if mask is not None:
        named["m"] = mask.astype(dtype)
    xp = require_cupy() if target == "cupy" else np
    outs, fins = _run(model, quantity, target, dtype, T, M, named,
                      _vectors(model, vectors, u0, M, dtype, xp, per_neuron), truncation or 0, blocks, per_neuron,
                      sums or (), coupling=coupling)
    return outs["grad_a"], fins


def step_backward(model: NeuronModel, method: str, a, g, x0, lam, target: str = "cpu", *,
                  per_neuron: Mapping | None = None):
    """(dL/da, finals) of one step by the generated vector-Jacobian product (:mod:`ift_snn.symbolic.step`):
    ``method="exodus"`` exact, ``"slayer"`` with the reset detached. ``a``, ``g`` = dL/ds: (1, M) or
    batch-major (B, 1, N); ``x0`` the state the step started from and ``lam`` = dL/dx1, the gradient of the
    state after it, both (n_state, M). The second value maps ``gx_<state>`` (dL/dx0) and ``acc_<p>`` (dL/dp
    per neuron) to (M,) arrays."""
    quantity = get_method(method).step
    T, M, blocks = _sizes(g)
    dtype = np.dtype(g.dtype)
    names = [st.name for st in recurrence(model).forward.state]
    vectors = {STATE_IN + n: x0[k] for k, n in enumerate(names)}
    vectors.update({STATE_COTANGENT + n: lam[k] for k, n in enumerate(names)})
    outs, _ = _run(model, quantity, target, dtype, T, M, {"a": a, "g": g}, vectors, 0, blocks, per_neuron)
    return outs.pop("grad_a"), {k: v.reshape(M) for k, v in outs.items()}

