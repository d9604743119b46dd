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
imported only by the functions that need them; ``pip install 'ift-snn[data]'``
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

_INSTALL_HINT = "pip install 'ift-snn[data]'"


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
    """Spikes ``x`` (float32, (N, T, C)), labels ``y`` (int64, (N,)) in ``[0, n_classes)``."""

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
        self.n_classes = _check_int("n_classes", self.n_classes, 1)
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
    each class has exactly ``samples_per_class`` samples.
    """
    n_classes = _check_int("n_classes", n_classes, 1)
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

    Errors: FileNotFoundError if ``path`` does not exist; ValueError naming
    the path if it is not a readable HDF5 file, or if the layout is wrong
    (missing key, mismatched lengths, unit index outside ``0..699``, negative
    or non-finite times), naming the offending key.
    """
    T = _check_int("T", T, 1)
    n_channels = _check_int("n_channels", n_channels, 1, SHD_UNITS)
    t_max = _check_float("t_max", t_max, low=0.0, low_open=True)
    if max_samples is not None:
        max_samples = _check_int("max_samples", max_samples, 1)
    h5py = _require("h5py", "h5py", "load_shd()")

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

    try:
        with h5py.File(path, "r") as f:
            arrays = {}
            for key in ("spikes/times", "spikes/units", "labels"):
                if key not in f:
                    raise _shd_layout_error(path, key, "is missing")
                node = f[key]
                if not isinstance(node, h5py.Dataset) or node.ndim != 1:
                    raise _shd_layout_error(path, key, "is not a one-dimensional dataset")
                arrays[key] = node
            lengths = {key: node.shape[0] for key, node in arrays.items()}
            if len(set(lengths.values())) != 1:
                got = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
                raise _shd_layout_error(path, "spikes/times", f"has a length that does not match (lengths {got})")
            all_labels = arrays["labels"][()]
            n = lengths["labels"] if max_samples is None else min(max_samples, lengths["labels"])
            times = arrays["spikes/times"][:n]
            units = arrays["spikes/units"][:n]
    except OSError as exc:
        raise ValueError(f"{path} could not be read as HDF5 ({exc}); expected an HDF5 file in the SHD layout") from exc

    all_labels = np.asarray(all_labels)
    if all_labels.size == 0:
        raise _shd_layout_error(path, "labels", "is empty")
    if all_labels.dtype.kind not in "iu":
        raise _shd_layout_error(path, "labels", f"has dtype {all_labels.dtype}, not integers")
    if all_labels.min() < 0:
        raise _shd_layout_error(path, "labels", f"holds a negative label {int(all_labels.min())}")
    labels = all_labels[:n].astype(np.int64)
    n_classes = int(all_labels.max()) + 1

    x = np.zeros((n, T, n_channels), dtype=np.float32)
    for i in range(n):
        ti = np.asarray(times[i], dtype=np.float64).ravel()
        ui = np.asarray(units[i]).ravel()
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
            raise _shd_layout_error(path, "spikes/times", f"sample {i}: negative or non-finite spike times")
        keep = ti < t_max
        b = np.minimum(np.floor(ti[keep] / t_max * T).astype(np.int64), T - 1)
        c = ui[keep].astype(np.int64) * n_channels // SHD_UNITS
        x[i] = np.bincount(b * n_channels + c, minlength=T * n_channels).reshape(T, n_channels)
    return Dataset(x, labels, n_classes, f"shd:{os.path.basename(path)}")
