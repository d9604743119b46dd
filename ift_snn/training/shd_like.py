"""A seeded, SHD-like spoken-word analogue whose class lives in the temporal ORDER of its parts.

What it is
----------
A small "language" of ``n_phonemes`` phonemes; a word (= class) is an ordered
sequence of ``phonemes_per_word`` phonemes; a sample is one utterance of a
word by a random "speaker", written as spikes of ``n_units`` (700) cochlea-like
units in the layout of the Spiking Heidelberg Digits (SHD) HDF5 files of
Cramer et al. 2020 (``spikes/times``, ``spikes/units``, ``labels``), so that
:func:`ift_snn.training.data.load_shd` reads it.

Generative model (units ``u``, seconds ``t``):

* phoneme ``p`` = one or two *sweeps* (formant-like bands; with two, the
  first lies in the lower and the second in the upper half of the units) and
  a relative length ``l_p ~ U(0.75, 1.25)``. Sweep ``j`` is a band of width
  ``w_j ~ U(0.085, 0.17) * n_units`` (60..120 of 700 units) whose centre moves
  linearly from ``c0_j`` to ``c1_j`` (``|c1_j - c0_j| <= 0.2 n_units``) over
  the phoneme, with amplitude ``a_j ~ U(0.6, 1)``. Inside the band every unit
  fires as a Poisson process of rate ``rate * a_j * loudness_i`` (speaker
  ``i``'s loudness and unit shift ``dch_i`` below)::

      lambda_p(u, s) = rate * loudness_i * sum_j a_j 1[|u - dch_i - c_j(s)| < w_j / 2]
      c_j(s) = c0_j + s (c1_j - c0_j),   s = (t - phoneme start) / phoneme length in [0, 1)

* word ``k`` = phonemes ``(p_1, ..., p_P)`` played back to back; phoneme
  ``p`` lasts ``d_p = l_p * D / max_k L_k`` seconds, where ``L_k`` is the sum of
  ``l_p`` over word ``k`` and ``D = word_fraction * duration`` (the longest word
  lasts ``D``).
* the words are chosen so that as many classes as possible share the SAME
  multiset of phonemes in different orders: with the defaults (4 phonemes, 4
  per word) all 10 classes are 10 of the 24 permutations of one multiset, so
  every class has the same expected spike count on every unit and only the
  order tells them apart. In general the fewest multisets that hold
  ``n_classes`` distinct orders are used (their number ``m`` is
  ``params["n_multisets"]``; a classifier of per-unit counts can at best find
  the multiset: about ``m / n_classes`` accuracy).
* sample ``i`` of class ``k`` (the speaker): time stretch
  ``speed_i ~ U(1 - speed, 1 + speed)``, onset
  ``(duration - speed_i L_k') / 2 + shift_i`` with ``shift_i ~ U(-jitter, jitter)``
  (``L_k'`` the word's length in seconds), loudness
  ``loudness_i ~ U(1 - loudness, 1 + loudness)`` scaling every rate, and an
  integer unit shift ``dch_i ~ U{-channel_shift..channel_shift}``; plus
  background noise: Poisson spikes at ``noise_rate`` Hz on every unit over
  ``[0, duration)``.

The alphabet and the words (the "language") come from
``numpy.random.default_rng(alphabet_seed)``; labels and utterances from
``numpy.random.default_rng(seed)``. Same arguments, identical output (and
identical files). :func:`make_task` writes a train and a test file of one
language with different utterance seeds.

Cost and preconditions: about 1,200 spikes per sample at the defaults:
signal ``rate * amplitude * band width * sweeps * word length ~ 10 * 0.8 *
90 * 1.5 * 0.6 ~ 650`` (~530 measured for the default alphabet) plus noise
``noise_rate * n_units * duration = 700`` (spread over all units, while the
signal sits in its bands). About 8 kB per sample on disk; generation is
vectorised per sample (~0.25 ms each). Writing and reading need ``h5py``, :func:`baselines` needs ``scikit-learn``
(``pip install -e '.[data]' in the ift_snn checkout``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import (
    SHD_UNITS,
    Dataset,
    _check_float,
    _check_int,
    _check_seed,
    _require,
)

__all__ = ["ShdLike", "baselines", "generate", "make_task", "write_shd", "TRAIN_FILE", "TEST_FILE"]

#: File names written by :func:`make_task`.
TRAIN_FILE = "shd_like_train.h5"
TEST_FILE = "shd_like_test.h5"

#: Band width of a sweep, as fractions of ``n_units`` (60..120 of 700 units).
_WIDTH = (0.085, 0.17)
#: Largest move of a sweep's centre over one phoneme, as a fraction of ``n_units``.
_GLIDE = 0.2
#: Relative amplitude of a sweep.
_AMPLITUDE = (0.6, 1.0)
#: Relative length of a phoneme.
_LENGTH = (0.75, 1.25)
#: Most phonemes in an alphabet (they are named a..z).
_MAX_PHONEMES = 26
#: Most phonemes in a word (itertools.permutations of up to 8! orders).
_MAX_WORD = 8
#: Labels are stored as uint8, as in SHD.
_MAX_CLASSES = 256


@dataclass(frozen=True)
class ShdLike:
    """Generated samples: per-sample spike ``times`` (float32 seconds, sorted) and ``units`` (uint16,
    ``0..n_units-1``), ``labels`` (int64, ``(N,)``), the class ``words`` (int64, ``(n_classes,
    phonemes_per_word)``: phoneme indices in playing order), ``keys`` (the words as strings, e.g.
    ``"b-d-a-c"``), the generator ``params`` and per-sample nuisance draws in ``extra``
    (``speed``, ``shift``, ``loudness``, ``channel_shift``)."""

    times: list
    units: list
    labels: np.ndarray
    words: np.ndarray
    keys: tuple
    params: dict
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.words.shape[0])

    def __getitem__(self, key: str):
        """``data["times"]`` etc.: the fields by name, as for a dict."""
        if key not in ("times", "units", "labels", "words", "keys", "params", "extra"):
            raise KeyError(key)
        return getattr(self, key)


# ---------------------------------------------------------------------------
# the language: phonemes and words
# ---------------------------------------------------------------------------

def _phoneme_name(p: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[p]


def _alphabet(rng: np.random.Generator, n_phonemes: int, n_units: int, channel_shift: int):
    """Per phoneme: relative length and a (n_sweeps, 4) array of sweeps (c0, c1, width, amplitude)."""
    lengths = rng.uniform(*_LENGTH, size=n_phonemes)
    sweeps = []
    for _ in range(n_phonemes):
        n_sweeps = 1 + int(rng.random() < 0.5)
        rows = []
        for j in range(n_sweeps):
            width = rng.uniform(*_WIDTH) * n_units
            # centres keep the whole band inside [0, n_units) for every unit shift
            lo, hi = channel_shift + width / 2, n_units - channel_shift - width / 2
            if n_sweeps == 2:  # formants: F1 in the lower, F2 in the upper half
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if j == 0 else (mid, hi)
            c0 = rng.uniform(lo, hi)
            c1 = float(np.clip(c0 + rng.uniform(-_GLIDE, _GLIDE) * n_units, lo, hi))
            rows.append((c0, c1, width, rng.uniform(*_AMPLITUDE)))
        sweeps.append(np.array(rows))
    return lengths, sweeps


def _partitions(k: int, max_parts: int, largest: int | None = None):
    """The partitions of k into at most max_parts parts, each a non-increasing tuple."""
    largest = k if largest is None else largest
    if k == 0:
        yield ()
        return
    if max_parts == 0:
        return
    for first in range(min(k, largest), 0, -1):
        for rest in _partitions(k - first, max_parts - 1, first):
            yield (first, *rest)


def _n_orders(multiplicities: tuple) -> int:
    """Distinct orders of a multiset whose elements occur ``multiplicities`` times."""
    return math.factorial(sum(multiplicities)) // math.prod(math.factorial(m) for m in multiplicities)


def _n_multisets(multiplicities: tuple, n_phonemes: int) -> int:
    """Multisets of ``n_phonemes`` phonemes with these multiplicities."""
    same = math.prod(math.factorial(c) for c in np.unique(multiplicities, return_counts=True)[1])
    return math.perm(n_phonemes, len(multiplicities)) // same


def _words(rng: np.random.Generator, n_classes: int, n_phonemes: int, per_word: int) -> tuple[np.ndarray, int]:
    """n_classes distinct words drawn from the fewest multisets; (words (n_classes, per_word), multisets used).

    Greedy over multiplicity patterns, most orders first (e.g. all phonemes
    distinct), drawing random distinct multisets of each pattern until their
    orders hold n_classes words; never enumerates all multisets.
    """
    kinds = sorted(_partitions(per_word, n_phonemes), key=lambda m: (-_n_orders(m), m))
    chosen, caps, seen = [], [], set()
    for mult in kinds:
        available = _n_multisets(mult, n_phonemes)
        taken = 0
        while sum(caps) < n_classes and taken < available:
            phonemes = rng.choice(n_phonemes, size=len(mult), replace=False)
            multiset = tuple(sorted(int(p) for p, m in zip(phonemes, mult) for _ in range(m)))
            if multiset in seen:
                continue
            seen.add(multiset)
            chosen.append(multiset)
            caps.append(_n_orders(mult))
            taken += 1
        if sum(caps) >= n_classes:
            break
    # spread the classes as evenly as the capacities allow (water filling)
    sizes = [0] * len(chosen)
    for _ in range(n_classes):
        open_ = [g for g in range(len(chosen)) if sizes[g] < caps[g]]
        sizes[min(open_, key=lambda g: (sizes[g], g))] += 1
    words = []
    for multiset, size in zip(chosen, sizes):
        if size == 0:
            continue
        orders = sorted(set(itertools.permutations(multiset)))
        pick = rng.choice(len(orders), size=size, replace=False)
        words.extend(orders[int(i)] for i in pick)
    words = np.array(words, dtype=np.int64).reshape(n_classes, per_word)
    return words[rng.permutation(n_classes)], len(chosen)


# ---------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------

def _float32_below(limit: float) -> np.float32:
    """The largest float32 strictly below ``limit``."""
    v = np.float32(limit)
    while float(v) >= limit:
        v = np.nextafter(v, np.float32(-np.inf))
    return v


def generate(n_samples: int, *, n_classes: int = 10, n_phonemes: int = 4, phonemes_per_word: int = 4,
             seed: int = 0, alphabet_seed: int | None = None, n_units: int = SHD_UNITS, duration: float = 1.0,
             word_fraction: float = 0.6, jitter: float = 0.1, speed: float = 0.15, rate: float = 10.0,
             loudness: float = 0.25, channel_shift: int = 15, noise_rate: float = 1.0) -> ShdLike:
    """``n_samples`` utterances of ``n_classes`` words whose class lives in phoneme order.

    The generative model is in the module docstring. Labels are balanced
    (``np.arange(n_samples) % n_classes``, shuffled: class counts differ by at
    most one). The language (phonemes, words) comes from
    ``default_rng(alphabet_seed)`` (``None``: ``seed``), the labels and
    utterances from ``default_rng(seed)``; equal arguments give identical
    arrays.

    Arguments: ``n_phonemes`` in 2..26, ``phonemes_per_word`` in 1..8,
    ``n_classes`` in 2..256 and at most ``n_phonemes ** phonemes_per_word``
    (distinct words), ``n_units`` in 10..700, ``duration`` > 0 s,
    ``word_fraction`` in (0, 1] (length of the longest word / duration),
    ``jitter`` >= 0 s (onset shift), ``speed`` in [0, 1) (relative time
    stretch), ``rate`` > 0 Hz (in-band rate per unit), ``loudness`` in [0, 1)
    (relative rate scaling), ``channel_shift`` >= 0 units, ``noise_rate`` >= 0
    Hz. The word must fit: ``jitter <= duration (1 - word_fraction (1 + speed)) / 2``,
    and the bands must: ``channel_shift <= n_units // 8``. ValueError/TypeError
    name the argument otherwise.

    Returns a :class:`ShdLike`; times are float32 in ``[0, duration)``,
    sorted within each sample; units uint16 in ``[0, n_units)``. Cost:
    O(spikes) time and memory, ~1,200 spikes per sample at the defaults.
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    n_phonemes = _check_int("n_phonemes", n_phonemes, 2, _MAX_PHONEMES)
    phonemes_per_word = _check_int("phonemes_per_word", phonemes_per_word, 1, _MAX_WORD)
    n_classes = _check_int("n_classes", n_classes, 2, _MAX_CLASSES)
    if n_classes > n_phonemes ** phonemes_per_word:
        raise ValueError(f"n_classes={n_classes} is out of range: {n_phonemes} phonemes make only "
                         f"{n_phonemes ** phonemes_per_word} distinct words of {phonemes_per_word}; expected "
                         f"n_classes <= n_phonemes ** phonemes_per_word")
    seed = _check_seed(seed)
    alphabet_seed = seed if alphabet_seed is None else _check_int("alphabet_seed", alphabet_seed, 0)
    n_units = _check_int("n_units", n_units, 10, SHD_UNITS)
    duration = _check_float("duration", duration, low=0.0, low_open=True)
    word_fraction = _check_float("word_fraction", word_fraction, low=0.0, high=1.0, low_open=True, high_open=False)
    speed = _check_float("speed", speed, low=0.0, high=1.0)
    jitter = _check_float("jitter", jitter, low=0.0)
    slack = duration * (1.0 - word_fraction * (1.0 + speed)) / 2.0
    if jitter > slack + 1e-12 * duration:
        raise ValueError(f"jitter={jitter!r} is out of range: a word of word_fraction={word_fraction!r} x "
                         f"duration={duration!r} s stretched by up to 1 + speed={1 + speed!r} leaves "
                         f"{max(slack, 0.0):.4g} s on each side; expected jitter <= "
                         f"duration * (1 - word_fraction * (1 + speed)) / 2")
    rate = _check_float("rate", rate, low=0.0, low_open=True)
    loudness = _check_float("loudness", loudness, low=0.0, high=1.0)
    channel_shift = _check_int("channel_shift", channel_shift, 0, n_units // 8)
    noise_rate = _check_float("noise_rate", noise_rate, low=0.0)

    params = dict(n_samples=n_samples, n_classes=n_classes, n_phonemes=n_phonemes,
                  phonemes_per_word=phonemes_per_word, seed=seed, alphabet_seed=alphabet_seed, n_units=n_units,
                  duration=duration, word_fraction=word_fraction, jitter=jitter, speed=speed, rate=rate,
                  loudness=loudness, channel_shift=channel_shift, noise_rate=noise_rate)

    arng = np.random.default_rng(alphabet_seed)
    lengths, sweeps = _alphabet(arng, n_phonemes, n_units, channel_shift)
    words, n_multisets = _words(arng, n_classes, n_phonemes, phonemes_per_word)
    params["n_multisets"] = n_multisets
    # seconds per unit of relative length: the longest word lasts word_fraction * duration
    scale = word_fraction * duration / float(lengths[words].sum(axis=1).max())
    phoneme_s = lengths * scale
    keys = tuple("-".join(_phoneme_name(int(p)) for p in w) for w in words)

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_samples, dtype=np.int64) % n_classes)
    speeds = rng.uniform(1.0 - speed, 1.0 + speed, size=n_samples)
    shifts = rng.uniform(-jitter, jitter, size=n_samples)
    louds = rng.uniform(1.0 - loudness, 1.0 + loudness, size=n_samples)
    dchs = rng.integers(-channel_shift, channel_shift + 1, size=n_samples)
    top = _float32_below(duration)

    times, units = [], []
    for i in range(n_samples):
        word = words[labels[i]]
        d = phoneme_s[word] * speeds[i]
        start = (duration - d.sum()) / 2.0 + shifts[i] + np.concatenate([[0.0], np.cumsum(d)[:-1]])
        t_parts, u_parts = [], []
        for p, t0, dp in zip(word, start, d):
            for c0, c1, width, amp in sweeps[p]:
                n = rng.poisson(rate * louds[i] * amp * width * dp)
                s = rng.random(n)
                t_parts.append(t0 + s * dp)
                centre = c0 + s * (c1 - c0) + dchs[i]
                u_parts.append(np.floor(centre + (rng.random(n) - 0.5) * width).astype(np.int64))
        n = rng.poisson(noise_rate * n_units * duration)  # background: does not move with the speaker
        t_parts.append(rng.uniform(0.0, duration, size=n))
        u_parts.append(rng.integers(0, n_units, size=n))
        t, u = np.concatenate(t_parts), np.concatenate(u_parts)
        keep = (u >= 0) & (u < n_units) & (t >= 0.0) & (t < duration)  # bands stay inside by construction
        t, u = t[keep], u[keep]
        order = np.argsort(t, kind="stable")
        times.append(np.minimum(t[order].astype(np.float32), top))
        units.append(u[order].astype(np.uint16))

    extra = dict(speed=speeds, shift=shifts, loudness=louds, channel_shift=dchs.astype(np.int64))
    return ShdLike(times, units, labels, words, keys, params, extra)


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------

def _field(data, name: str):
    try:
        return data[name]
    except (KeyError, TypeError, IndexError):
        raise ValueError(f"data has no {name!r}; expected a ShdLike from generate() or a mapping with "
                         f"'times', 'units' and 'labels'") from None


def _optional(data, name: str):
    if isinstance(data, ShdLike):
        return getattr(data, name)
    return data.get(name) if isinstance(data, Mapping) else None


def write_shd(path: str | os.PathLike, data: ShdLike | Mapping) -> str:
    """Write ``data`` (a :class:`ShdLike`, or a mapping with ``times``, ``units``, ``labels``) as an SHD file.

    Layout, as in the Spiking Heidelberg Digits files: ``spikes/times``
    (variable-length float32, seconds), ``spikes/units`` (variable-length
    uint16), ``labels`` (uint8). Optional, ignored by
    :func:`ift_snn.training.data.load_shd`: ``extra/keys`` (class names as strings),
    ``extra/words`` (phoneme indices per class), the per-sample nuisance
    draws under ``extra/`` and the generator parameters as attributes of the
    root group (``attrs["params"]`` is their JSON, each also as its own
    attribute). Overwrites ``path``; returns it as a string.

    Preconditions (ValueError naming the field): equal numbers of samples,
    matching times/units per sample, finite times >= 0, units in 0..699,
    labels in 0..255. Cost: one pass over the spikes (~6 bytes per spike).
    """
    h5py = _require("h5py", "h5py", "write_shd()")
    times, units, labels = _field(data, "times"), _field(data, "units"), np.asarray(_field(data, "labels"))
    if labels.ndim != 1:
        raise ValueError(f"labels has shape {labels.shape}; expected (n_samples,)")
    n = labels.shape[0]
    if len(times) != n or len(units) != n:
        raise ValueError(f"times has {len(times)}, units {len(units)} and labels {n} samples; expected equal")
    if n and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= _MAX_CLASSES):
        raise ValueError(f"labels must be integers in 0..{_MAX_CLASSES - 1}, got dtype {labels.dtype} "
                         f"spanning [{labels.min()}, {labels.max()}]")
    t_obj = np.empty(n, dtype=object)
    u_obj = np.empty(n, dtype=object)
    for i in range(n):
        t = np.asarray(times[i], dtype=np.float32).ravel()
        u = np.asarray(units[i]).ravel()
        if t.shape != u.shape:
            raise ValueError(f"sample {i}: {t.size} spike times but {u.size} units; expected equal")
        if u.size and (u.dtype.kind not in "iu" or u.min() < 0 or u.max() >= SHD_UNITS):
            raise ValueError(f"sample {i}: units must be integers in 0..{SHD_UNITS - 1}, got dtype {u.dtype}"
                             + (f" spanning [{u.min()}, {u.max()}]" if u.dtype.kind in "iuf" else ""))
        if t.size and (not np.all(np.isfinite(t)) or t.min() < 0):
            raise ValueError(f"sample {i}: spike times must be finite and >= 0")
        t_obj[i], u_obj[i] = t, u.astype(np.uint16)

    path = os.fspath(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes/times", shape=(n,), dtype=h5py.vlen_dtype(np.float32))[...] = t_obj
        f.create_dataset("spikes/units", shape=(n,), dtype=h5py.vlen_dtype(np.uint16))[...] = u_obj
        f.create_dataset("labels", data=labels.astype(np.uint8))
        keys = _optional(data, "keys")
        if keys is not None:
            f.create_dataset("extra/keys", data=np.array(list(keys), dtype=object), dtype=h5py.string_dtype())
        words = _optional(data, "words")
        if words is not None:
            f.create_dataset("extra/words", data=np.asarray(words, dtype=np.int64))
        for name, values in (_optional(data, "extra") or {}).items():
            f.create_dataset(f"extra/{name}", data=np.asarray(values))
        params = _optional(data, "params")
        if params:
            f.attrs["generator"] = "ift_snn.training.shd_like"
            f.attrs["params"] = json.dumps(params, sort_keys=True)
            for name, value in params.items():
                f.attrs[name] = value
    return path


def _derived_seed(seed: int, stream: int) -> int:
    """An int seed for ``stream`` (0: train, 1: test) of ``seed``, independent of the others."""
    return int(np.random.SeedSequence((seed, stream)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def make_task(directory: str | os.PathLike, *, n_train: int = 1600, n_test: int = 400, seed: int = 0,
              **kw) -> tuple[str, str]:
    """Write ``shd_like_train.h5`` and ``shd_like_test.h5`` into ``directory``; return their paths.

    Both files speak the same language (``alphabet_seed``: from ``kw``, else
    ``seed``); their utterances come from two different seeds derived from
    ``seed`` with ``numpy.random.SeedSequence((seed, 0))`` and ``((seed, 1))``.
    ``kw`` goes to :func:`generate` (all its keywords but ``n_samples`` and
    ``seed``). The directory is created if missing; existing files are
    overwritten.

    Defaults: 1,600 train samples (160 per class; SHD has ~8,000 / 20 = ~400)
    and 400 test samples (40 per class, accuracy steps of 0.25%). Sized for a
    4-layer SNN (64-128-128-128-10) at ``T=250`` with the 700 units binned to
    64 channels on 2 CPU cores: the training set is 1,600 x 250 x 64 x 4 bytes
    = 102 MB in memory and an exodus epoch (``ift_snn.training.train``, batch 32, lr
    2e-3) took ~6 s, so 30 epochs took 3.7 min and reached ~89% test accuracy
    (86-90% over the last epochs, 99% train; 60% after 10 epochs). Logistic
    regression on per-channel counts is at chance (8.5-11.5% for seeds 0..4)
    and on 4 / 8 time bins per channel at 89-96% / 96-99% (see
    :func:`baselines`). About 12.4 MB + 3.1 MB on disk; generating and
    writing both take ~0.5 s.
    """
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    seed = _check_seed(seed)
    for name in ("n_samples", "seed"):
        if name in kw:
            raise TypeError(f"make_task() sets {name} itself; use n_train/n_test and seed")
    kw.setdefault("alphabet_seed", seed)
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"directory={directory!r} exists and is not a directory")
    train = generate(n_train, seed=_derived_seed(seed, 0), **kw)
    test = generate(n_test, seed=_derived_seed(seed, 1), **kw)
    os.makedirs(directory, exist_ok=True)
    return (write_shd(os.path.join(directory, TRAIN_FILE), train),
            write_shd(os.path.join(directory, TEST_FILE), test))


# ---------------------------------------------------------------------------
# non-spiking baselines
# ---------------------------------------------------------------------------

def _binned(x: np.ndarray, n_bins: int) -> np.ndarray:
    """(N, T, C) counts -> (N, n_bins * C): sums over n_bins near-equal time bins (edges floor(k T / n_bins))."""
    T = x.shape[1]
    edges = (np.arange(n_bins) * T) // n_bins
    return np.add.reduceat(x, edges, axis=1).reshape(x.shape[0], -1)


def baselines(train: Dataset, test: Dataset, *, time_bins: Sequence[int] = (1, 4, 8), C: float = 1.0,
              max_iter: int = 5000) -> dict:
    """Test accuracy of logistic regression on spike counts in ``n`` coarse time bins per channel.

    For each ``n`` in ``time_bins`` the features of a sample are its spike
    counts summed over ``n`` near-equal time bins (edges ``floor(k T / n)``)
    per input channel, ``n * C`` features; they are standardised
    (``StandardScaler`` fitted on ``train``) and classified by
    ``LogisticRegression(C=C, max_iter=max_iter, random_state=0)``
    (multinomial, lbfgs) fitted on ``train``. ``n = 1`` is the per-channel
    count baseline: at chance (``1 / n_classes``) when all classes share one
    phoneme multiset (the defaults of :func:`generate`); ``n >= 4`` sees the
    phoneme order.

    Returns ``{"chance": 1 / n_classes, "accuracy": {n: test accuracy},
    "train_accuracy": {n: train accuracy}, "n_train": ..., "n_test": ...}``,
    with ``n_classes`` the larger of the two data sets'.

    Preconditions: both Datasets have the same ``T`` and channels; every
    ``n`` in 1..T. Cost: one fit per entry of ``time_bins``, roughly
    O(iterations x N x n x C x n_classes); a few seconds at 1,600 samples and
    ``8 x 64`` features. Needs scikit-learn.
    """
    if not isinstance(train, Dataset) or not isinstance(test, Dataset):
        raise TypeError(f"train and test must be ift_snn.training.data.Dataset, got {type(train).__name__} and "
                        f"{type(test).__name__}")
    if train.x.shape[1:] != test.x.shape[1:]:
        raise ValueError(f"train has (T, channels) = {train.x.shape[1:]} but test {test.x.shape[1:]}; expected equal")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"train has {len(train)} and test {len(test)} samples; expected both non-empty")
    if isinstance(time_bins, (str, bytes)) or not isinstance(time_bins, Sequence) or len(time_bins) == 0:
        raise TypeError(f"time_bins must be a non-empty sequence of ints, got {time_bins!r}")
    bins = [_check_int("time_bins", n, 1, train.T) for n in time_bins]
    C = _check_float("C", C, low=0.0, low_open=True)
    max_iter = _check_int("max_iter", max_iter, 1)
    linear_model = _require("sklearn.linear_model", "scikit-learn", "baselines()")
    preprocessing = _require("sklearn.preprocessing", "scikit-learn", "baselines()")
    n_classes = max(train.n_classes, test.n_classes)
    result = {"chance": 1.0 / n_classes, "accuracy": {}, "train_accuracy": {},
              "n_train": len(train), "n_test": len(test)}
    for n in bins:
        scaler = preprocessing.StandardScaler().fit(_binned(train.x, n))
        f_train = scaler.transform(_binned(train.x, n))
        f_test = scaler.transform(_binned(test.x, n))
        clf = linear_model.LogisticRegression(C=C, max_iter=max_iter, random_state=0).fit(f_train, train.y)
        result["accuracy"][n] = float(clf.score(f_test, test.y))
        result["train_accuracy"][n] = float(clf.score(f_train, train.y))
    return result
