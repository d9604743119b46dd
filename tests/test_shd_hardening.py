"""Hostile SHD files and class counts: load_shd and Dataset refuse them with a clear ValueError, fast and small.

Regressions of an audit: H3 (a label of 2**62 made n_classes 4.6e18 and Dataset.split loop until out of
memory), M6 (a 3 KB file declaring 3e8 labels made load_shd read them all, even with max_samples=2) and
n_classes=10**30 accepted by Dataset/randman. Plus a property test over small random hostile files.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ift_snn.training import data, shd_like
from ift_snn.training.data import MAX_CLASSES, MAX_SHD_SAMPLES, Dataset

h5py = pytest.importorskip("h5py")

TIMES = [[0.0, 0.0041, 0.5], [0.25, 0.702], []]
UNITS = [[0, 699, 350], [5, 699], []]


def _write_shd(path, times, units, labels, *, label_dtype=np.uint8):
    """A small SHD file in the layout of the real ones (as tests/test_data.py writes them)."""
    with h5py.File(path, "w") as f:
        d = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(np.float32))
        for i, t in enumerate(times):
            d[i] = np.asarray(t, dtype=np.float32)
        d = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
        for i, u in enumerate(units):
            d[i] = np.asarray(u, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=label_dtype))
    return path


def _err(path, *parts) -> str:
    """Regex: the message names the file, then each part (escaped) in order."""
    return re.escape(str(path)) + "".join(".*" + re.escape(p) for p in parts)


def _bounded(fn, seconds: float, megabytes: float):
    """Run fn() under tracemalloc; assert it took < seconds and peaked < megabytes. Returns (result, exc)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    result = exc = None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - returned to the caller, who asserts its type
        exc = e
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s (limit {seconds} s)"
    assert peak < megabytes * 2**20, f"peak traced memory {peak / 2**20:.1f} MB (limit {megabytes} MB)"
    return result, exc


# ---------------------------------------------------------------------------
# H3: a label of 2**62 (or a negative one) is refused, naming MAX_CLASSES
# ---------------------------------------------------------------------------

def test_shd_huge_or_negative_label_is_refused(tmp_path):
    huge = _write_shd(tmp_path / "huge_label.h5", TIMES, UNITS, [3, 2**62, 0], label_dtype=np.int64)
    assert os.path.getsize(huge) < 16_000
    with pytest.raises(ValueError, match=_err(huge, "'labels'", str(2**62), f"[0, {MAX_CLASSES})", "MAX_CLASSES")):
        data.load_shd(huge, T=4, n_channels=7)
    # also when only the first sample is asked for: n_classes comes from every label in the file
    with pytest.raises(ValueError, match=_err(huge, "'labels'", str(2**62), "MAX_CLASSES")):
        data.load_shd(huge, T=4, n_channels=7, max_samples=1)

    top = _write_shd(tmp_path / "top_label.h5", TIMES, UNITS, [3, 2**64 - 1, 0], label_dtype=np.uint64)
    with pytest.raises(ValueError, match=_err(top, "'labels'", str(2**64 - 1), "MAX_CLASSES")):
        data.load_shd(top, T=4, n_channels=7)

    at_cap = _write_shd(tmp_path / "cap_label.h5", TIMES, UNITS, [3, MAX_CLASSES, 0], label_dtype=np.int32)
    with pytest.raises(ValueError, match=_err(at_cap, "'labels'", str(MAX_CLASSES), "MAX_CLASSES")):
        data.load_shd(at_cap, T=4, n_channels=7)

    negative = _write_shd(tmp_path / "neg_label.h5", TIMES, UNITS, [3, -5, 0], label_dtype=np.int16)
    with pytest.raises(ValueError, match=_err(negative, "'labels'", "-5", f"[0, {MAX_CLASSES})")):
        data.load_shd(negative, T=4, n_channels=7)

    # the largest allowed label still loads, and split's per-class loop stays quick
    ok = _write_shd(tmp_path / "ok_label.h5", TIMES, UNITS, [3, MAX_CLASSES - 1, 3], label_dtype=np.int64)
    ds = data.load_shd(ok, T=4, n_channels=7)
    assert ds.n_classes == MAX_CLASSES
    t0 = time.perf_counter()
    train, test = ds.split(0.5)
    assert len(train) + len(test) == 3 and train.n_classes == test.n_classes == MAX_CLASSES
    assert time.perf_counter() - t0 < 1.0


# ---------------------------------------------------------------------------
# M6: declared-but-unwritten datasets: nothing large is read
# ---------------------------------------------------------------------------

def _write_declared(path, n_declared: int, n_written: int = 2):
    """labels declared with n_declared entries and never written (h5py creates it lazily: a few KB on
    disk), spikes/* declared alike (chunked, so only their first chunk exists) with n_written samples."""
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", shape=(n_declared,), dtype="uint16")
        t = f.create_dataset("spikes/times", shape=(n_declared,), dtype=h5py.vlen_dtype(np.float32), chunks=(64,))
        u = f.create_dataset("spikes/units", shape=(n_declared,), dtype=h5py.vlen_dtype(np.uint16), chunks=(64,))
        for i in range(n_written):
            t[i] = np.asarray(TIMES[i], dtype=np.float32)
            u[i] = np.asarray(UNITS[i], dtype=np.uint16)
    return path


def test_shd_declared_huge_length_read_is_bounded(tmp_path):
    path = _write_declared(tmp_path / "declared_3e8.h5", 300_000_000)
    assert os.path.getsize(path) < 64_000  # a few KB on disk, 600 MB of labels declared
    _, exc = _bounded(lambda: data.load_shd(path, T=5, n_channels=10, max_samples=2), seconds=1.0, megabytes=50)
    assert isinstance(exc, ValueError), exc
    assert re.search(_err(path, "'labels'", "300000000", f"MAX_SHD_SAMPLES={MAX_SHD_SAMPLES}"), str(exc)), exc
    assert "\n" not in str(exc)

    # just under the cap, but never written: refused from the metadata, nothing read
    near = _write_declared(tmp_path / "declared_near_cap.h5", MAX_SHD_SAMPLES)
    _, exc = _bounded(lambda: data.load_shd(near, T=5, n_channels=10, max_samples=2), seconds=1.0, megabytes=50)
    assert isinstance(exc, ValueError), exc
    assert re.search(_err(near, "'labels'", str(MAX_SHD_SAMPLES), "never written"), str(exc)), exc

    # a real (written, compressed: 20 KB on disk) file of 200,000 samples and max_samples=2: 2 samples come back
    n = 200_000
    many = tmp_path / "many.h5"
    spikes = np.empty(n, dtype=object)
    spikes[:] = [np.zeros(0, np.float32)] * n
    spikes[0], spikes[1] = np.asarray(TIMES[0], np.float32), np.asarray(TIMES[1], np.float32)
    units = np.empty(n, dtype=object)
    units[:] = [np.zeros(0, np.uint16)] * n
    units[0], units[1] = np.asarray(UNITS[0], np.uint16), np.asarray(UNITS[1], np.uint16)
    with h5py.File(many, "w") as f:
        kw = dict(shape=(n,), chunks=(65536,), compression="gzip")
        f.create_dataset("spikes/times", dtype=h5py.vlen_dtype(np.float32), **kw)[...] = spikes
        f.create_dataset("spikes/units", dtype=h5py.vlen_dtype(np.uint16), **kw)[...] = units
        f.create_dataset("labels", data=np.arange(n, dtype=np.int32) % 20, chunks=(65536,), compression="gzip")
    assert os.path.getsize(many) < 64_000
    ds, exc = _bounded(lambda: data.load_shd(many, max_samples=2), seconds=1.0, megabytes=50)
    assert exc is None, exc
    assert ds.x.shape == (2, 250, 700) and ds.n_classes == 20  # n_classes from all labels, scanned in blocks
    assert ds.x[0].sum() == 3 and ds.x[1].sum() == 2

    # declared lengths that disagree are refused before anything is read
    odd = _write_declared(tmp_path / "declared_mismatch.h5", 5_000)
    with h5py.File(odd, "r+") as f:
        del f["labels"]
        f.create_dataset("labels", data=np.zeros(3, dtype=np.uint8))
    _, exc = _bounded(lambda: data.load_shd(odd, max_samples=2), seconds=1.0, megabytes=50)
    assert isinstance(exc, ValueError), exc
    assert re.search(_err(odd, "does not match", "'spikes/times': 5000", "'labels': 3", "same length"), str(exc)), exc

    # a fixed-size element that declares 2e6 spikes per sample
    wide = tmp_path / "wide.h5"
    with h5py.File(wide, "w") as f:
        f.create_dataset("spikes/times", shape=(3,), dtype=np.dtype(("f4", (2_000_000,))), chunks=(1,))
        f.create_dataset("spikes/units", shape=(3,), dtype=np.dtype(("u2", (2_000_000,))), chunks=(1,))
        f.create_dataset("labels", data=np.zeros(3, dtype=np.uint8))
    _, exc = _bounded(lambda: data.load_shd(wide, T=5, n_channels=10), seconds=1.0, megabytes=50)
    assert isinstance(exc, ValueError) and re.search(_err(wide, "'spikes/times'", "2000000", "MAX_SHD_SPIKES"),
                                                     str(exc)), exc


# ---------------------------------------------------------------------------
# n_classes = 10**30 in a Dataset's (or a generator's) arguments
# ---------------------------------------------------------------------------

def test_n_classes_above_cap_is_refused():
    x, y = np.zeros((4, 3, 2), dtype=np.float32), np.array([0, 1, 2, 1])
    match = r"Dataset 'toy'.*n_classes=10{30}.*\[1, " + f"{MAX_CLASSES}" + r"\].*MAX_CLASSES"
    with pytest.raises(ValueError, match=match):
        Dataset(x, y, 10**30, "toy")
    with pytest.raises(ValueError, match=f"n_classes={MAX_CLASSES + 1} .*MAX_CLASSES"):
        Dataset(x, y, MAX_CLASSES + 1, "toy")
    assert Dataset(x, y, MAX_CLASSES, "toy").n_classes == MAX_CLASSES
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"randman\(\).*n_classes=10{30}.*MAX_CLASSES"):
        data.randman(n_classes=10**30)
    with pytest.raises(ValueError, match=r"n_classes=10{30} is out of range"):
        shd_like.generate(4, n_classes=10**30)
    assert time.perf_counter() - t0 < 1.0


# ---------------------------------------------------------------------------
# property: random hostile files give a Dataset or a ValueError, within 2 s
# ---------------------------------------------------------------------------

_LABEL_DTYPES = ["uint8", "uint8", "int16", "int64", "int64", "uint64", "uint64", "float32"]
_HOSTILE_LABELS = [MAX_CLASSES - 1, MAX_CLASSES, 2**31, 2**62, 2**64 - 1, -1, -(2**62)]
_HOSTILE_TIMES = [1.0, 1e30, -0.0, -1e-9, -1e30, math.nan, math.inf, -math.inf]
_HOSTILE_UNITS = [700, 2**16 - 1]
_KEYS = ("spikes/times", "spikes/units", "labels")
#: declared but never written lengths (h5py creates such datasets lazily: a few KB on disk)
_DECLARED = [5_000, MAX_SHD_SAMPLES + 1, 300_000_000, 2_000_000_000]
#: values per sample of a fixed-size spike element (a huge declared shape that is not a length)
_WIDE = 2_000_000


def _maybe(draw, fine, hostile, one_in: int = 4):
    """A fine value, or (one time in one_in) a hostile one."""
    return draw(st.sampled_from(hostile)) if draw(st.integers(1, one_in)) == 1 else draw(fine)


@st.composite
def _hostile_files(draw):
    n = draw(st.integers(1, 4))
    labels = [_maybe(draw, st.integers(0, 19), _HOSTILE_LABELS, 5) for _ in range(n)]
    samples = []
    for _ in range(n):
        k = draw(st.integers(0, 5))
        t = [_maybe(draw, st.floats(0.0, 0.999), _HOSTILE_TIMES, 10) for _ in range(k)]
        u = [_maybe(draw, st.integers(0, 699), _HOSTILE_UNITS, 10) for _ in range(k)]
        ragged = _maybe(draw, st.just(0), [1, -1], 10)  # a ragged sample: one unit more or less
        u = u + [0] if ragged > 0 else u[:len(u) + ragged]
        samples.append((t, u))
    lengths = {key: n + _maybe(draw, st.just(0), [-1, 1], 10) for key in _KEYS}
    big_keys = draw(st.sampled_from([()] * 4 + [("labels",), ("spikes/times",), ("spikes/units",), _KEYS, _KEYS]))
    big = draw(st.sampled_from(_DECLARED + ([_WIDE] if "labels" not in big_keys else [])))
    return dict(labels=labels, label_dtype=draw(st.sampled_from(_LABEL_DTYPES)), samples=samples,
                lengths=lengths, big_keys=big_keys, big=big, max_samples=draw(st.sampled_from([None, 1, 2, 10**9])))


def _write_hostile(path, spec):
    big_keys, big = spec["big_keys"], spec["big"]
    with h5py.File(path, "w") as f:
        for key, vdtype, column in (("spikes/times", np.float32, 0), ("spikes/units", np.uint16, 1)):
            if key in big_keys and big == _WIDE:  # fixed-size elements of _WIDE values, never written
                f.create_dataset(key, shape=(spec["lengths"][key],), dtype=np.dtype((vdtype, (_WIDE,))),
                                 chunks=(1,) if spec["lengths"][key] else None)
                continue
            size = big if key in big_keys else max(0, spec["lengths"][key])
            d = f.create_dataset(key, shape=(size,), dtype=h5py.vlen_dtype(vdtype),
                                 chunks=(min(64, size),) if size else None)
            for i in range(min(size, spec["lengths"][key], len(spec["samples"]))):
                values = np.asarray(spec["samples"][i][column], dtype=np.float64)
                if vdtype is np.uint16:
                    values = np.mod(values, 2**16)
                d[i] = values.astype(vdtype)
        if "labels" in big_keys:  # declared, never written
            f.create_dataset("labels", shape=(big,), dtype=spec["label_dtype"])
        else:
            wanted = (spec["labels"] * 2)[:max(0, spec["lengths"]["labels"])]
            dtype = np.dtype(spec["label_dtype"])
            if dtype.kind in "iu":  # the value as that integer type stores it (wrapping, as C would)
                info = np.iinfo(dtype)
                wanted = [(v - info.min) % (info.max - info.min + 1) + info.min for v in wanted]
            f.create_dataset("labels", data=np.asarray(wanted, dtype=dtype))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_hostile_files())
def test_load_shd_hostile_files_give_dataset_or_value_error(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hostile.h5")
        _write_hostile(path, spec)
        t0 = time.perf_counter()
        try:
            ds = data.load_shd(path, T=8, n_channels=7, max_samples=spec["max_samples"])
        except ValueError as exc:
            message = str(exc)
            assert path in message and "\n" not in message, message
        else:
            assert isinstance(ds, Dataset)
            assert 1 <= ds.n_classes <= MAX_CLASSES and len(ds) >= 1
            assert ds.y.min() >= 0 and ds.y.max() < ds.n_classes
            assert np.all(np.isfinite(ds.x)) and ds.x.min() >= 0
        assert time.perf_counter() - t0 < 2.0


def test_shd_dense_counts_beyond_the_byte_cap_are_refused_before_allocating(tmp_path, monkeypatch):
    """A small compressed file can declare many (empty) samples; their dense counts are refused by size."""
    import h5py

    from ift_snn.training import data

    path = tmp_path / "many.h5"
    n = 2000
    with h5py.File(path, "w") as f:
        vlen_f, vlen_u = h5py.vlen_dtype(np.float32), h5py.vlen_dtype(np.uint16)
        times = f.create_dataset("spikes/times", (n,), dtype=vlen_f)
        units = f.create_dataset("spikes/units", (n,), dtype=vlen_u)
        for i in range(n):
            times[i] = np.zeros(0, np.float32)
            units[i] = np.zeros(0, np.uint16)
        f.create_dataset("labels", data=np.zeros(n, np.uint16))
    monkeypatch.setattr(data, "MAX_SHD_BYTES", 1 << 20)
    with pytest.raises(ValueError, match="GiB, more than MAX_SHD_BYTES"):
        data.load_shd(path, T=250, n_channels=700)


def test_variable_length_spikes_are_read_one_sample_at_a_time(tmp_path):
    """A variable-length sample declares no size: a block of 4096 of them could hold 4096 x MAX_SHD_SPIKES values
    before any was checked, so they are read one by one (each checked before the next); fixed sizes keep blocks."""
    import h5py

    from ift_snn.training.data import _shd_block

    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes/times", (3,), dtype=h5py.vlen_dtype(np.float32))
        f.create_dataset("labels", data=np.zeros(3, np.int64))
        assert _shd_block(f["spikes/times"]) == 1
        assert _shd_block(f["labels"]) == 4096
