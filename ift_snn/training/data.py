"""Spike datasets for training and testing spiking networks: RandMan, digits, SHD.

Every loader returns a :class:`Dataset` whose ``x`` is a float32 spike array of
shape ``(N, T, C)`` (samples, time steps, input channels; batch-major) and
whose ``y`` holds int64 class labels of shape ``(N,)`` in ``[0, n_classes)``.
``ift_snn.forward``/``ift_snn.backward`` want time on axis 0, i.e. ``(T, B, C)``:
use :meth:`Dataset.time_major_batches` or :func:`time_major` for that.

The datasets
------------
:func:`randman`
    The random-manifold spike-timing task of F. Zenke and T. P. Vogels,
    "The remarkable robustness of surrogate gradient learning for instilling
    complex function in spiking neural networks", Neural Computation 33(4):
    899-925, 2021. Each class is a smooth random manifold in
    ``[0, 1]^n_channels``; a sample is a random point on its class's manifold,
    encoded as exactly one spike per channel whose *time* is the coordinate.
    Spike counts are identical for every sample, so only timing carries the
    class. Generated in-process from a seed (nothing is downloaded); the exact
    construction is in the docstring of :func:`randman`.
:func:`digits`
    scikit-learn's ``load_digits`` (1797 8x8 images of handwritten digits,
    intensities 0..16, 10 classes; shipped with scikit-learn, no download)
    as latency code: pixel value ``v > 0`` fires one spike at step
    ``round((1 - v/16) * (T - 1))`` (brighter fires earlier), ``v == 0`` never
    fires. 64 channels, one per pixel, row-major.
:func:`load_shd`
    A reader for the Spiking Heidelberg Digits HDF5 files of B. Cramer,
    Y. Stradmann, J. Schemmel and F. Zenke, "The Heidelberg Spiking Data Sets
    for the Systematic Evaluation of Spiking Neural Networks", IEEE TNNLS
    33(7): 2744-2757, 2022 (arXiv:1910.07407, 2019/2020). Spike times are
    counted into ``T`` equal time bins over ``[0, t_max)`` and the 700 cochlea
    channels into ``n_channels`` equal groups; the values are spike counts.

``h5py`` (for SHD) and ``scikit-learn`` (for digits) are optional: they are
imported only by the functions that need them; ``pip install -e '.[data]' in the ift_snn checkout``
installs both.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_CLASSES",
    "MAX_SHD_SAMPLES",
    "MAX_SHD_SPIKES",
    "MAX_SHD_BYTES",
    "RANDMAN_MODES",
    "RANDMAN_STEP_FRAC",
    "SHD_UNITS",
    "Dataset",
    "digits",
    "load_shd",
    "randman",
    "time_major",
]

#: Number of Fourier modes per channel and latent axis of a RandMan manifold.
RANDMAN_MODES = 32
#: RandMan spikes use the first ``RANDMAN_STEP_FRAC`` of the time window.
RANDMAN_STEP_FRAC = 0.9
#: Number of input units (cochlea channels) in the SHD files.
SHD_UNITS = 700
#: Most classes a :class:`Dataset` (and so a label file) may have: labels must lie in ``[0, MAX_CLASSES)``.
#: SHD has 20, SSC 35; the cap keeps a hostile label such as ``2**62`` from sizing per-class loops.
MAX_CLASSES = 10_000
#: Most samples :func:`load_shd` accepts in a file (declared length of each SHD dataset); SHD has
#: 8,156 + 2,264, SSC ~75,000 + 20,000 + 10,000. Checked before anything is read.
MAX_SHD_SAMPLES = 1_000_000
#: Most spikes :func:`load_shd` accepts in one sample (SHD samples hold a few thousand).
MAX_SHD_SPIKES = 1_000_000
#: Largest dense array of spike counts (samples x T x channels, float32) that load_shd allocates: 8 GiB.
MAX_SHD_BYTES = 8 << 30
#: Bytes of one block of samples read from an SHD dataset at a time (bounds the memory of a read).
_SHD_BLOCK_BYTES = 1 << 22

_INSTALL_HINT = "pip install -e '.[data]' in the ift_snn checkout"


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------

def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    accepted = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {accepted}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name}={value} is out of range: expected {accepted}")
    return value


def _check_float(name: str, value: object, *, low: float, high: float = math.inf,
                 low_open: bool = False, high_open: bool = True) -> float:
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    accepted = f"a finite number in {lo}{low:g}, {high:g}{hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {accepted}, got {value!r} ({type(value).__name__})")
    value = float(value)
    ok = math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range: expected {accepted}")
    return value


def _check_seed(seed: object, allow_none: bool = False) -> int | None:
    if seed is None and allow_none:
        return None
    accepted = "an int >= 0" + (" or None" if allow_none else "")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be {accepted}, got {seed!r} ({type(seed).__name__})")
    if int(seed) < 0:
        raise ValueError(f"seed={int(seed)} is out of range: expected {accepted}")
    return int(seed)


def _check_n_classes(value: object, where: str) -> int:
    """``value`` as an int in ``[1, MAX_CLASSES]``; the errors name ``where`` and ``MAX_CLASSES``."""
    minimum = 1
    accepted = f"an int in [{minimum}, {MAX_CLASSES}] (MAX_CLASSES={MAX_CLASSES})"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: n_classes must be {accepted}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum or value > MAX_CLASSES:
        raise ValueError(f"{where}: n_classes={value} is out of range: expected {accepted}")
    return value


def _as_rng(rng: object) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(_check_seed(rng))
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed >= 0 or None, got {rng!r}")


def _require(module: str, package: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs {package}: {_INSTALL_HINT}") from exc


def time_major(x: np.ndarray) -> np.ndarray:
    """(B, T, C) batch-major spikes -> contiguous (T, B, C), the layout of ``ift_snn.ops``."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x has shape {x.shape}; expected (batch, time, channels)")
    return np.ascontiguousarray(x.transpose(1, 0, 2))


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------

@dataclass
class Dataset:
    """Spikes ``x`` (float32, (N, T, C)), labels ``y`` (int64, (N,)) in ``[0, n_classes)``.

    ``n_classes`` must be an int in ``[1, MAX_CLASSES]`` (ValueError otherwise).
    """

    x: np.ndarray
    y: np.ndarray
    n_classes: int
    name: str

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y)
        if self.x.ndim != 3:
            raise ValueError(f"x has shape {self.x.shape}; expected (N, T, C) = (samples, time, channels)")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"y has shape {self.y.shape}; expected ({self.x.shape[0]},), one label per sample of x")
        if self.y.size and self.y.dtype.kind not in "iu":
            if self.y.dtype.kind != "f" or not np.all(np.isfinite(self.y)) or np.any(self.y != np.round(self.y)):
                raise ValueError(f"y has dtype {self.y.dtype} with non-integer values; expected integer labels")
        self.y = self.y.astype(np.int64)
        self.n_classes = _check_n_classes(self.n_classes, f"Dataset {self.name!r}")
        if self.y.size and (self.y.min() < 0 or self.y.max() >= self.n_classes):
            raise ValueError(f"labels span [{self.y.min()}, {self.y.max()}]; expected labels in "
                             f"[0, {self.n_classes - 1}] for n_classes={self.n_classes}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def T(self) -> int:
        """Number of time steps."""
        return int(self.x.shape[1])

    @property
    def n_channels(self) -> int:
        """Number of input channels."""
        return int(self.x.shape[2])

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, samples={len(self)}, T={self.T}, "
                f"channels={self.n_channels}, n_classes={self.n_classes})")

    def subset(self, index) -> Dataset:
        """The samples at ``index`` (anything numpy can index axis 0 with), as a new Dataset."""
        return Dataset(self.x[index], self.y[index], self.n_classes, self.name)

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Stratified random split into (train, test).

        Each class contributes ``round(test_fraction * n_k)`` of its ``n_k``
        samples to the test set, chosen at random with ``seed``; both parts are
        then shuffled. Raises ValueError when either part would be empty.
        """
        test_fraction = _check_float("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True)
        rng = np.random.default_rng(_check_seed(seed))
        train, test = [], []
        for k in range(self.n_classes):
            idx = rng.permutation(np.flatnonzero(self.y == k))
            n_test = int(round(test_fraction * idx.size))
            test.append(idx[:n_test])
            train.append(idx[n_test:])
        train_idx, test_idx = np.concatenate(train), np.concatenate(test)
        if train_idx.size == 0 or test_idx.size == 0:
            raise ValueError(f"test_fraction={test_fraction!r} splits {len(self)} samples into "
                             f"{train_idx.size} train and {test_idx.size} test; expected both non-empty")
        return self.subset(rng.permutation(train_idx)), self.subset(rng.permutation(test_idx))

    def batches(self, batch_size: int, rng: np.random.Generator | int | None = None, shuffle: bool = True,
                drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of ``(x_batch, y_batch)``: (B, T, C) float32 and (B,) int64.

        Every sample appears exactly once per epoch (the last batch is smaller
        unless ``drop_last``). ``shuffle`` draws the order from ``rng``
        (a Generator, an int seed, or None for fresh entropy).
        """
        batch_size = _check_int("batch_size", batch_size, 1)
        order = _as_rng(rng).permutation(len(self)) if shuffle else np.arange(len(self))
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield self.x[idx], self.y[idx]

    def time_major_batches(self, batch_size: int, rng: np.random.Generator | int | None = None,
                           shuffle: bool = True, drop_last: bool = False
                           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """As :meth:`batches`, but x is contiguous (T, B, C), ready for ``ift_snn.forward``."""
        for xb, yb in self.batches(batch_size, rng=rng, shuffle=shuffle, drop_last=drop_last):
            yield np.ascontiguousarray(xb.transpose(1, 0, 2)), yb


# ---------------------------------------------------------------------------
# RandMan
# ---------------------------------------------------------------------------

#: Points of the 1-D grid on which the range of each RandMan term is measured.
_RANDMAN_GRID = 4096


def _randman_terms(z: np.ndarray, amp: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """h_cj(z_j) for z (P, d), amp/phase (C, d, K) -> (P, C, d); g_c(z) is the sum over j."""
    k = np.arange(1, amp.shape[-1] + 1, dtype=np.float64)
    out = np.empty((z.shape[0], amp.shape[0], z.shape[1]))
    for j in range(z.shape[1]):
        angle = 2.0 * np.pi * z[:, j, None] * k  # (P, K)
        # sin(angle + phase) = sin(angle) cos(phase) + cos(angle) sin(phase)
        out[:, :, j] = (np.sin(angle) @ (amp[:, j] * np.cos(phase[:, j])).T
                        + np.cos(angle) @ (amp[:, j] * np.sin(phase[:, j])).T)
    return out


def randman(n_classes: int = 4, samples_per_class: int = 100, n_channels: int = 40, T: int = 100,
            dim_manifold: int = 1, smoothness: float = 2.0, seed: int = 0) -> Dataset:
    """The random-manifold spike-timing task (RandMan) of Zenke and Vogels 2021.

    F. Zenke and T. P. Vogels, "The remarkable robustness of surrogate gradient
    learning for instilling complex function in spiking neural networks",
    Neural Computation 33(4): 899-925, 2021. This is an in-process
    re-implementation with numpy only (no download); the construction follows
    the paper's idea but is not bit-identical to the authors' ``randman`` code.

    Construction, with ``d = dim_manifold``, ``K = RANDMAN_MODES`` (32) and
    ``s = smoothness``. For each class and each channel ``c``::

        g_c(z) = sum_{j=1..d} sum_{k=1..K} A_cjk k**(-s) sin(2 pi k z_j + phi_cjk)
        f_c(z) = clip((g_c(z) - min g_c) / (max g_c - min g_c), 0, 1)

    with ``A ~ U(0, 1)``, ``phi ~ U(0, 2 pi)``. ``g_c`` is a sum of one-axis
    terms, so its min and max over ``[0, 1]^d`` are the sums of the terms'
    minima and maxima, each measured on a grid of 4096 points of ``[0, 1]``
    (the clip only absorbs that grid's resolution). The manifold is a closed,
    smooth surface (integer frequencies: periodic in every ``z_j``); higher
    ``s`` makes it smoother. Each sample draws ``z ~ U[0, 1)^d``
    and every channel ``c`` fires exactly one spike, at time step::

        t_c = floor(RANDMAN_STEP_FRAC * (T - 1) * f_c(z)),  RANDMAN_STEP_FRAC = 0.9

    so all spikes fall in ``[0, floor(0.9 (T - 1))]``. Every sample has the
    same spike count in every channel (one), so rate-based classifiers are at
    chance; the class is carried by spike timing alone.

    Random streams come from ``numpy.random.SeedSequence(seed)``: one child
    per class for its manifold, one for the sample coordinates and one for the
    final shuffle, so the manifolds do not change with ``samples_per_class``.
    The result is deterministic given the arguments. Samples are shuffled;
    each class has exactly ``samples_per_class`` samples. ``n_classes`` is at
    most ``MAX_CLASSES`` (ValueError otherwise).
    """
    n_classes = _check_int("n_classes", n_classes, 1)
    n_classes = _check_n_classes(n_classes, "randman()")
    samples_per_class = _check_int("samples_per_class", samples_per_class, 1)
    n_channels = _check_int("n_channels", n_channels, 1)
    T = _check_int("T", T, 2)
    dim_manifold = _check_int("dim_manifold", dim_manifold, 1)
    smoothness = _check_float("smoothness", smoothness, low=0.0)
    seed = _check_seed(seed)

    root = np.random.SeedSequence(seed)
    manifold_seq, sample_seq, shuffle_seq = root.spawn(3)
    class_seqs = manifold_seq.spawn(n_classes)
    sample_rng = np.random.default_rng(sample_seq)
    K = RANDMAN_MODES
    decay = np.arange(1, K + 1, dtype=np.float64) ** (-smoothness)
    grid = np.linspace(0.0, 1.0, _RANDMAN_GRID)[:, None]
    last = math.floor(RANDMAN_STEP_FRAC * (T - 1))

    N = n_classes * samples_per_class
    x = np.zeros((N, T, n_channels), dtype=np.float32)
    y = np.repeat(np.arange(n_classes, dtype=np.int64), samples_per_class)
    samples = np.arange(samples_per_class)[:, None]
    channels = np.arange(n_channels)[None, :]
    for k, seq in enumerate(class_seqs):
        mrng = np.random.default_rng(seq)
        amp = mrng.uniform(0.0, 1.0, size=(n_channels, dim_manifold, K)) * decay
        phase = mrng.uniform(0.0, 2.0 * np.pi, size=(n_channels, dim_manifold, K))
        # g is a sum of one-axis terms, so its range is the sum of their ranges
        ref = _randman_terms(np.repeat(grid, dim_manifold, axis=1), amp, phase)  # (G, C, d)
        lo, hi = ref.min(axis=0).sum(axis=1), ref.max(axis=0).sum(axis=1)
        span = np.where(hi > lo, hi - lo, 1.0)
        z = sample_rng.uniform(0.0, 1.0, size=(samples_per_class, dim_manifold))
        f = np.clip((_randman_terms(z, amp, phase).sum(axis=2) - lo) / span, 0.0, 1.0)
        t = np.minimum(np.floor(RANDMAN_STEP_FRAC * (T - 1) * f).astype(np.int64), last)
        x[k * samples_per_class + samples, t, channels] = 1.0

    order = np.random.default_rng(shuffle_seq).permutation(N)
    return Dataset(x[order], y[order], n_classes, "randman")


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------

def digits(T: int = 50, seed: int | None = 0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits as latency-coded spikes.

    ``sklearn.datasets.load_digits()`` (1797 samples, 10 classes, pixel values
    ``v`` in 0..16; shipped inside scikit-learn, no download). Channel
    ``c = 8 * row + col`` is one pixel. A pixel with ``v > 0`` fires exactly
    one spike, at step::

        t = round((1 - v/16) * (T - 1))      (round half up: floor(. + 1/2))

    computed exactly in integers, so ``v = 16`` fires at 0 and ``v = 1`` at
    ``round(15/16 (T - 1))``; brighter pixels fire earlier. ``v == 0`` pixels
    never fire. Result: x (1797, T, 64).

    ``seed`` shuffles the samples with
    ``numpy.random.default_rng(seed).permutation(1797)`` (sample ``i`` of the
    result is sample ``perm[i]`` of ``load_digits``); ``seed=None`` keeps the
    ``load_digits`` order.
    """
    T = _check_int("T", T, 1)
    seed = _check_seed(seed, allow_none=True)
    datasets = _require("sklearn.datasets", "scikit-learn", "digits()")
    bunch = datasets.load_digits()
    v = np.asarray(bunch.data).astype(np.int64)  # (N, 64), values 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    if v.min() < 0 or v.max() > 16:
        raise ValueError(f"load_digits returned pixel values in [{v.min()}, {v.max()}]; expected 0..16")
    if seed is not None:
        perm = np.random.default_rng(seed).permutation(v.shape[0])
        v, y = v[perm], y[perm]
    N, C = v.shape
    # round((16 - v)(T - 1) / 16) half up == floor((2 (16 - v)(T - 1) + 16) / 32), exact in integers
    t = (2 * (16 - v) * (T - 1) + 16) // 32
    x = np.zeros((N, T, C), dtype=np.float32)
    n_idx, c_idx = np.nonzero(v > 0)
    x[n_idx, t[n_idx, c_idx], c_idx] = 1.0
    return Dataset(x, y, 10, "digits")


# ---------------------------------------------------------------------------
# Spiking Heidelberg Digits
# ---------------------------------------------------------------------------

def _shd_layout_error(path: str, key: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {key!r} {problem}; expected an HDF5 file in the SHD layout: "
                      f"'spikes/times' and 'spikes/units' (one variable-length array per sample) and "
                      f"'labels' (one integer per sample), all of the same length")


def _shd_value_error(path: str, key: str, problem: str, expected: str) -> ValueError:
    """One-line ValueError naming the file, the HDF5 key, the offending value and what was expected."""
    text = " ".join(f"{problem}; expected {expected}".split())
    return ValueError(f"{path}: {key!r} {text}")


def _shd_dataset(h5py, f, path: str, key: str):
    """The one-dimensional dataset at ``key``, reached through links inside the file only.

    Refuses (ValueError) a missing key, a non-dataset, a dataset that is not
    1-D, and anything whose data lives outside ``path``: external links,
    virtual datasets and datasets with external raw storage.
    """
    node = f
    parts = key.split("/")
    for depth, part in enumerate(parts):
        where = "/".join(parts[:depth + 1])
        if not isinstance(node, h5py.Group):
            raise _shd_layout_error(path, key, f"is missing ({'/'.join(parts[:depth])!r} is not a group)")
        link = node.get(part, getlink=True)
        if link is None:
            raise _shd_layout_error(path, key, "is missing")
        if isinstance(link, h5py.ExternalLink):
            raise _shd_value_error(path, where, f"is an external link to {link.filename!r}:{link.path!r}",
                                   "data stored in the file itself")
        try:
            node = node[part]
        except KeyError:  # a dangling soft link
            raise _shd_layout_error(path, key, "is missing (dangling link)") from None
    if not isinstance(node, h5py.Dataset) or node.shape is None or node.ndim != 1:
        raise _shd_layout_error(path, key, "is not a one-dimensional dataset")
    if node.is_virtual:
        raise _shd_value_error(path, key, "is a virtual dataset (its data lives in other files)",
                               "data stored in the file itself")
    if node.external:
        raise _shd_value_error(path, key, f"stores its data in external files {node.external!r}",
                               "data stored in the file itself")
    return node


def _check_shd_spike_dtype(h5py, path: str, key: str, node, kinds: str, what: str) -> None:
    """Check the element type of ``spikes/times``/``spikes/units`` before reading.

    Variable-length arrays (the SHD layout) or fixed-size numbers/arrays of
    a numpy kind in ``kinds``; a fixed-size element of more than
    MAX_SHD_SPIKES values is refused here, a variable-length one after its
    sample is read.
    """
    dtype = node.dtype
    base = h5py.check_vlen_dtype(dtype)
    base = dtype if base is None else base
    if not isinstance(base, np.dtype) or base.base.kind not in kinds or base.base.fields is not None:
        raise _shd_value_error(path, key, f"has element type {dtype} ({base!r})",
                               f"one (variable-length) array of {what} per sample")
    items = math.prod(base.shape)
    if items > MAX_SHD_SPIKES:
        raise _shd_value_error(path, key, f"declares {items} values per sample (element type {dtype})",
                               f"at most MAX_SHD_SPIKES={MAX_SHD_SPIKES} spikes per sample")


def _check_shd_stored(path: str, key: str, node) -> None:
    """Refuse a dataset whose declared entries were never written to the file.

    h5py/HDF5 create datasets lazily: a few-KB file can declare 3e8 labels
    that read back as the fill value. Contiguous (or compact) storage must
    hold ``length x element size`` bytes, and a chunked dataset must have
    every chunk allocated. Metadata only, nothing is read. (Skipped where the
    HDF5 library lacks the query.)
    """
    length = node.shape[0]
    if length == 0:
        return
    try:
        if node.chunks is None:
            need = length * node.id.get_type().get_size()
            stored = node.id.get_storage_size()
            if stored < need:
                raise _shd_value_error(path, key, f"declares {length} entries ({need} bytes) but stores {stored} "
                                       f"bytes (never written)", "every declared entry written to the file")
        else:
            need = math.prod(-(-n // c) for n, c in zip(node.shape, node.chunks))
            stored = node.id.get_num_chunks()
            if stored < need:
                raise _shd_value_error(path, key, f"declares {length} entries in {need} chunks but stores "
                                       f"{stored} chunks (never written)", "every declared entry written to the file")
    except (AttributeError, NotImplementedError):
        return


def _shd_block(node) -> int:
    """Samples per read so that one block of ``node`` stays under _SHD_BLOCK_BYTES. A variable-length element
    (the SHD layout) declares no size: its samples are read one at a time, each checked against MAX_SHD_SPIKES
    before the next is read (a block of them could hold thousands of samples of up to that many spikes)."""
    if (getattr(node.dtype, "metadata", None) or {}).get("vlen") is not None:
        return 1
    return max(1, min(4096, _SHD_BLOCK_BYTES // max(1, node.dtype.itemsize)))


def load_shd(path: str | os.PathLike, T: int = 250, n_channels: int = 700, t_max: float = 1.0,
             max_samples: int | None = None) -> Dataset:
    """Read a Spiking Heidelberg Digits file (Cramer et al. 2020) into spike counts.

    The file (e.g. ``shd_train.h5``/``shd_test.h5``) holds ``spikes/times``
    (one variable-length float array of spike times in seconds per sample),
    ``spikes/units`` (matching integer arrays of channel indices
    ``0..699``) and ``labels`` (one integer per sample).

    Binning: a spike at time ``t`` on unit ``u`` is counted in::

        x[i, floor(t / t_max * T), u * n_channels // 700]

    for ``0 <= t < t_max``; spikes at or after ``t_max`` are dropped (EXODUS
    trains on the first part of each sample). Values are counts, float32, and
    may exceed 1. ``max_samples`` reads only the first that many samples.
    ``n_classes`` is the largest label in the whole file plus one (20 for SHD).
    Memory is ``N * T * n_channels * 4`` bytes: the full training set at the
    defaults is about 5.7 GB, so reduce ``n_channels``/``T`` or use
    ``max_samples``.

    Limits, checked on the declared shapes and types before anything is
    read: at most ``MAX_SHD_SAMPLES`` samples per dataset, at most
    ``MAX_SHD_SPIKES`` spikes per sample, labels integers in
    ``[0, MAX_CLASSES)``. Labels are scanned in blocks (for ``n_classes``)
    and spikes are read in blocks of samples (one sample at a time where a sample's length is variable, as in
    SHD), only the first ``max_samples``, so the memory of a read beyond ``x`` is at most a few MB, or two
    samples of ``MAX_SHD_SPIKES`` spikes (16 MB), whatever the file declares. Declared entries that were never written (HDF5 creates
    datasets lazily) and data outside the file (external links, virtual
    datasets, external storage) are refused.

    Errors: FileNotFoundError if ``path`` does not exist; ValueError naming
    the path if it is not a readable HDF5 file, or if the layout is wrong
    (missing key, mismatched lengths, unit index outside ``0..699``, negative
    or non-finite times, a label outside ``[0, MAX_CLASSES)``, a size over a
    limit), naming the offending key, the value and what was expected.
    """
    T = _check_int("T", T, 1)
    n_channels = _check_int("n_channels", n_channels, 1, SHD_UNITS)
    t_max = _check_float("t_max", t_max, low=0.0, low_open=True)
    if max_samples is not None:
        max_samples = _check_int("max_samples", max_samples, 1)
    h5py = _require("h5py", "h5py", "load_shd()")

    path = _shd_path(h5py, path)

    return _open_shd(h5py, path, T, n_channels, t_max, max_samples, None)


def _shd_path(h5py, path) -> str:
    """``path`` as a string, refused unless it is an existing HDF5 file (FileNotFoundError / ValueError)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"SHD file not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory; expected an HDF5 file in the SHD layout")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError:
        is_hdf5 = False
    if not is_hdf5:
        raise ValueError(f"{path} is not an HDF5 file; expected an HDF5 file in the SHD layout "
                         f"('spikes/times', 'spikes/units', 'labels')")
    return path


def _open_shd(h5py, path: str, T: int, n_channels: int, t_max: float, max_samples: int | None, collect):
    try:
        with h5py.File(path, "r") as f:
            return _read_shd(h5py, f, path, T, n_channels, t_max, max_samples, collect)
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ValueError(f"{path} could not be read as HDF5 ({reason}); expected an HDF5 file in the SHD "
                         f"layout") from exc


def _read_shd(h5py, f, path: str, T: int, n_channels: int, t_max: float, max_samples: int | None,
              collect: list | None = None):
    """The body of :func:`load_shd` on an open file: checks everything declared, then reads in blocks. With a
    list ``collect``, every sample's (times, channels) kept before ``t_max`` is appended to it instead of being
    binned, and (labels, n_classes) is returned (:func:`load_shd_times`)."""
    keys = ("spikes/times", "spikes/units", "labels")
    nodes = {key: _shd_dataset(h5py, f, path, key) for key in keys}

    # types, before reading
    labels_node = nodes["labels"]
    if labels_node.dtype.kind not in "iu" or labels_node.dtype.shape != ():
        raise _shd_layout_error(path, "labels", f"has dtype {labels_node.dtype}, not integers")
    _check_shd_spike_dtype(h5py, path, "spikes/times", nodes["spikes/times"], "iuf", "real spike times")
    _check_shd_spike_dtype(h5py, path, "spikes/units", nodes["spikes/units"], "iuf", "integer unit indices")

    # declared sizes, before reading
    for key in ("labels", "spikes/times", "spikes/units"):
        node = nodes[key]
        if node.shape[0] > MAX_SHD_SAMPLES:
            raise _shd_value_error(path, key, f"declares {node.shape[0]} samples",
                                   f"at most MAX_SHD_SAMPLES={MAX_SHD_SAMPLES}")
        if node.chunks is not None and math.prod(node.chunks) > MAX_SHD_SAMPLES:
            raise _shd_value_error(path, key, f"declares chunks of {node.chunks} elements",
                                   f"at most MAX_SHD_SAMPLES={MAX_SHD_SAMPLES} elements per chunk")
    lengths = {key: node.shape[0] for key, node in nodes.items()}
    if len(set(lengths.values())) != 1:
        got = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
        raise _shd_layout_error(path, "spikes/times", f"has a length that does not match (lengths {got})")
    total = lengths["labels"]
    if total == 0:
        raise _shd_layout_error(path, "labels", "is empty")
    for key in ("labels", "spikes/times", "spikes/units"):
        _check_shd_stored(path, key, nodes[key])
    n = total if max_samples is None else min(max_samples, total)

    # labels: the whole file in blocks (n_classes is its largest label + 1), keeping the first n
    block = max(1, _SHD_BLOCK_BYTES // labels_node.dtype.itemsize)
    head, top = [], 0
    for start in range(0, total, block):
        chunk = np.asarray(labels_node[start:start + block])
        lo, hi = int(chunk.min()), int(chunk.max())
        if lo < 0 or hi >= MAX_CLASSES:
            i = start + int(np.argmax((chunk < 0) | (chunk >= MAX_CLASSES)))
            raise _shd_value_error(path, "labels", f"holds label {int(chunk[i - start])} at sample {i}",
                                   f"integers in [0, {MAX_CLASSES}) (MAX_CLASSES={MAX_CLASSES})")
        top = max(top, hi)
        if start < n:
            head.append(chunk[:n - start].astype(np.int64))
    labels = np.concatenate(head)
    n_classes = top + 1

    # spikes: the first n samples, in blocks
    times_node, units_node = nodes["spikes/times"], nodes["spikes/units"]
    block = min(_shd_block(times_node), _shd_block(units_node))
    need = n * T * n_channels * 4 if collect is None else 0
    if need > MAX_SHD_BYTES:  # a small compressed file can declare many empty samples: refuse before allocating
        raise ValueError(f"{path}: {n} samples x T={T} x n_channels={n_channels} float32 counts need "
                         f"{need / 2**30:.1f} GiB, more than MAX_SHD_BYTES = {MAX_SHD_BYTES / 2**30:g} GiB; expected "
                         "a smaller max_samples, T or n_channels")
    try:
        x = np.zeros((n, T, n_channels) if collect is None else (0,), dtype=np.float32)
    except MemoryError:
        raise ValueError(f"{path}: {n} samples x T={T} x n_channels={n_channels} float32 counts need "
                         f"{n * T * n_channels * 4 / 2**30:.1f} GiB, more than can be allocated; expected "
                         f"a smaller max_samples, T or n_channels") from None
    for start in range(0, n, block):
        stop = min(n, start + block)
        times, units = times_node[start:stop], units_node[start:stop]
        for j in range(stop - start):
            i = start + j
            ti, ui = np.asarray(times[j]).ravel(), np.asarray(units[j]).ravel()
            for key, arr in (("spikes/times", ti), ("spikes/units", ui)):
                if arr.size > MAX_SHD_SPIKES:
                    raise _shd_value_error(path, key, f"sample {i}: {arr.size} spikes",
                                           f"at most MAX_SHD_SPIKES={MAX_SHD_SPIKES} per sample")
            ti = ti.astype(np.float64)
            if ti.shape != ui.shape:
                raise _shd_layout_error(path, "spikes/units",
                                        f"sample {i}: {ui.size} units for {ti.size} spike times")
            if ui.size and ui.dtype.kind not in "iu":
                if ui.dtype.kind != "f" or np.any(ui != np.floor(ui)):
                    raise _shd_layout_error(path, "spikes/units", f"sample {i}: non-integer units ({ui.dtype})")
            if ui.size and (ui.min() < 0 or ui.max() >= SHD_UNITS):
                bad = ui.min() if ui.min() < 0 else ui.max()
                raise _shd_layout_error(path, "spikes/units",
                                        f"sample {i}: unit index {bad:g} outside 0..{SHD_UNITS - 1}")
            if ti.size and (not np.all(np.isfinite(ti)) or ti.min() < 0):
                bad = float(ti[~np.isfinite(ti)][0] if not np.all(np.isfinite(ti)) else ti.min())
                raise _shd_layout_error(path, "spikes/times",
                                        f"sample {i}: negative or non-finite spike time {bad!r} "
                                        f"(times must be finite and >= 0)")
            keep = ti < t_max
            c = ui[keep].astype(np.int64) * n_channels // SHD_UNITS
            if collect is not None:
                collect.append((ti[keep], c))
                continue
            b = np.minimum(np.floor(ti[keep] / t_max * T).astype(np.int64), T - 1)
            x[i] = np.bincount(b * n_channels + c, minlength=T * n_channels).reshape(T, n_channels)
    if collect is not None:
        return labels, n_classes
    return Dataset(x, labels, n_classes, f"shd:{os.path.basename(path)}")


def load_shd_times(path: str | os.PathLike, n_channels: int = 700, t_max: float = 1.0,
                   max_samples: int | None = None) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, int]:
    """An SHD-format file as spike TIMES (not bins): ([(times in s, channels) per sample], labels, n_classes).

    The same checks and limits as :func:`load_shd` (which bins the same spikes); a spike on unit ``u`` goes
    to channel ``u * n_channels // 700``; spikes at or after ``t_max`` are dropped. Memory: the spikes only.
    """
    n_channels = _check_int("n_channels", n_channels, 1, SHD_UNITS)
    t_max = _check_float("t_max", t_max, low=0.0, low_open=True)
    if max_samples is not None:
        max_samples = _check_int("max_samples", max_samples, 1)
    h5py = _require("h5py", "h5py", "load_shd_times()")
    path = _shd_path(h5py, path)
    samples: list = []
    labels, n_classes = _open_shd(h5py, path, 1, n_channels, t_max, max_samples, samples)
    return samples, labels, n_classes
