"""ift_snn.training.data: RandMan, latency-coded digits, the SHD reader and the Dataset helpers."""

from __future__ import annotations

import math
import re
import sys

import numpy as np
import pytest

from ift_snn.training import data
from ift_snn.training.data import Dataset

h5py = pytest.importorskip("h5py")
pytest.importorskip("sklearn")


# ---------------------------------------------------------------------------
# RandMan
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rm():
    return data.randman()


def _spike_times(ds: Dataset) -> np.ndarray:
    """(N, C) time step of the single spike of each channel."""
    return ds.x.argmax(axis=1)


def test_randman_shape_dtype_and_labels(rm):
    assert rm.x.shape == (400, 100, 40) and rm.x.dtype == np.float32
    assert rm.y.shape == (400,) and rm.y.dtype == np.int64
    assert rm.n_classes == 4 and rm.name == "randman" and len(rm) == 400
    assert set(np.unique(rm.x)) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.bincount(rm.y, minlength=4), [100] * 4)
    assert not np.all(np.diff(rm.y) >= 0), "samples should be shuffled, not class-blocked"


def test_randman_one_spike_per_channel_in_window(rm):
    np.testing.assert_array_equal(rm.x.sum(axis=1), 1.0)
    t = _spike_times(rm)
    assert t.min() == 0 and t.max() <= math.floor(data.RANDMAN_STEP_FRAC * 99)
    # the timing is spread over the window, not collapsed onto a few steps
    assert len(np.unique(t)) > 50


def test_randman_deterministic_and_seed_dependent(rm):
    again = data.randman(seed=0)
    np.testing.assert_array_equal(again.x, rm.x)
    np.testing.assert_array_equal(again.y, rm.y)
    other = data.randman(seed=1)
    assert not np.array_equal(other.x, rm.x)


def test_randman_other_arguments():
    ds = data.randman(n_classes=3, samples_per_class=7, n_channels=5, T=20, dim_manifold=2, smoothness=1.0, seed=3)
    assert ds.x.shape == (21, 20, 5) and ds.n_classes == 3
    np.testing.assert_array_equal(ds.x.sum(axis=1), 1.0)
    assert _spike_times(ds).max() <= math.floor(0.9 * 19)


def test_randman_class_is_in_timing_not_rate(rm):
    train, test = rm.split(0.3, seed=0)
    t_train, t_test = _spike_times(train).astype(float), _spike_times(test).astype(float)
    means = np.stack([t_train[train.y == k].mean(axis=0) for k in range(rm.n_classes)])
    pred = ((t_test[:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    accuracy = float((pred == test.y).mean())
    assert accuracy > 0.45, f"nearest-class-mean on spike times: {accuracy:.2f} (chance 0.25)"
    # 1-nearest-neighbour on spike times separates the manifolds almost perfectly
    nn = train.y[((t_test[:, None, :] - t_train[None]) ** 2).sum(axis=-1).argmin(axis=1)]
    assert (nn == test.y).mean() > 0.9
    # every sample has the same spike count in every channel: rate carries nothing
    counts = rm.x.sum(axis=1)
    assert np.all(counts == counts[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_classes=0), "n_classes=0"),
    (dict(samples_per_class=0), "samples_per_class=0"),
    (dict(n_channels=-1), "n_channels=-1"),
    (dict(T=1), r"T=1 is out of range: expected an int >= 2"),
    (dict(dim_manifold=0), "dim_manifold=0"),
    (dict(smoothness=-1.0), r"smoothness=-1\.0"),
    (dict(smoothness=math.nan), r"smoothness=nan"),
    (dict(seed=-1), "seed=-1"),
])
def test_randman_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.randman(**kwargs)


def test_randman_wrong_types():
    with pytest.raises(TypeError, match="n_classes must be an int"):
        data.randman(n_classes=2.5)


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    return load_digits()


def test_digits_shape_and_latency(sk_digits):
    ds = data.digits(T=50, seed=None)
    assert ds.x.shape == (1797, 50, 64) and ds.x.dtype == np.float32
    assert ds.n_classes == 10 and ds.name == "digits"
    np.testing.assert_array_equal(ds.y, sk_digits.target)
    v = sk_digits.data
    # silent pixels never fire; every lit pixel fires exactly once
    np.testing.assert_array_equal(ds.x.sum(axis=1), (v > 0).astype(np.float32))
    # a few pixels by hand, including a tie (v = 8 -> 24.5, rounded up), v = 16 and v = 1
    checked = set()
    for n, c in [(0, 2), (0, 3), (5, 20), (100, 36)] + [tuple(np.argwhere(v == val)[0]) for val in (1, 8, 16)]:
        val = v[n, c]
        assert val > 0
        want = math.floor((1 - val / 16) * 49 + 0.5)
        assert ds.x[n, :, c].argmax() == want and ds.x[n, want, c] == 1.0
        checked.add(int(val))
    assert {1, 8, 16} <= checked
    assert ds.x[np.argwhere(v == 16)[0][0], 0, np.argwhere(v == 16)[0][1]] == 1.0
    n0, c0 = np.argwhere(v == 0)[0]
    assert not ds.x[n0, :, c0].any()


def test_digits_seed_permutes(sk_digits):
    ds = data.digits(T=10, seed=0)
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(ds.y, sk_digits.target[perm])
    np.testing.assert_array_equal(ds.x, data.digits(T=10, seed=None).x[perm])


def test_digits_bad_T():
    with pytest.raises(ValueError, match="T=0 is out of range"):
        data.digits(T=0)


# ---------------------------------------------------------------------------
# SHD reader
# ---------------------------------------------------------------------------

def _write_shd(path, times, units, labels, *, skip=(), unit_dtype=np.uint16):
    with h5py.File(path, "w") as f:
        if "spikes/times" not in skip:
            d = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(np.float32))
            for i, t in enumerate(times):
                d[i] = np.asarray(t, dtype=np.float32)
        if "spikes/units" not in skip:
            d = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(unit_dtype))
            for i, u in enumerate(units):
                d[i] = np.asarray(u, dtype=unit_dtype)
        if "labels" not in skip:
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8))
    return path


TIMES = [[0.0, 0.0041, 0.5, 0.9999, 1.0, 1.3], [0.25, 0.25, 0.702], []]
UNITS = [[0, 699, 350, 10, 20, 30], [5, 5, 699], []]
LABELS = [3, 19, 0]


@pytest.fixture
def shd_file(tmp_path):
    return _write_shd(tmp_path / "shd_small.h5", TIMES, UNITS, LABELS)


def test_load_shd_full_resolution(shd_file):
    ds = data.load_shd(shd_file, T=250, n_channels=700, t_max=1.0)
    assert ds.x.shape == (3, 250, 700) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.y, LABELS)
    assert ds.n_classes == 20
    x0 = ds.x[0]
    assert x0[0, 0] == 1  # t = 0
    assert x0[1, 699] == 1  # 0.0041 s * 250 = 1.025 -> bin 1
    assert x0[125, 350] == 1  # 0.5 s -> bin 125
    assert x0[249, 10] == 1  # just below t_max -> last bin
    assert x0.sum() == 4  # 1.0 s and 1.3 s are at or after t_max: dropped
    assert ds.x[1, 62, 5] == 2  # two spikes in one bin are counted
    assert ds.x[1, 175, 699] == 1  # 0.702 s * 250 = 175.5
    assert ds.x[1].sum() == 3 and ds.x[2].sum() == 0


def test_load_shd_binning_and_cut(shd_file):
    ds = data.load_shd(shd_file, T=10, n_channels=7, t_max=0.6)
    assert ds.x.shape == (3, 10, 7)
    # unit * 7 // 700: 0 -> 0, 699 -> 6, 350 -> 3; time floor(t / 0.6 * 10)
    assert ds.x[0, 0, 0] == 1 and ds.x[0, 0, 6] == 1  # t = 0 and t = 0.0041 share bin 0
    assert ds.x[0, 8, 3] == 1  # 0.5 / 0.6 * 10 = 8.33
    assert ds.x[0].sum() == 3  # 0.9999 s and later are beyond t_max = 0.6
    assert ds.x[1, 4, 0] == 2 and ds.x[1].sum() == 2  # 0.25 s -> bin 4, unit 5 -> channel 0; 0.702 s dropped
    one = data.load_shd(shd_file, T=1, n_channels=1, t_max=10.0)
    np.testing.assert_array_equal(one.x[:, 0, 0], [6, 3, 0])


def test_load_shd_max_samples(shd_file):
    ds = data.load_shd(shd_file, T=5, n_channels=10, max_samples=2)
    assert len(ds) == 2 and ds.n_classes == 20  # n_classes from all labels in the file
    np.testing.assert_array_equal(ds.y, LABELS[:2])


def _err_re(path) -> str:
    return re.escape(str(path))


def test_load_shd_missing_file(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match=_err_re(missing)):
        data.load_shd(missing)


def test_load_shd_not_hdf5(tmp_path):
    bogus = tmp_path / "text.h5"
    bogus.write_text("this is not an HDF5 file\n")
    with pytest.raises(ValueError, match=_err_re(bogus) + ".*HDF5 file in the SHD layout"):
        data.load_shd(bogus)


def test_load_shd_truncated_hdf5(shd_file, tmp_path):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(shd_file.read_bytes()[:600])
    with pytest.raises(ValueError, match=_err_re(cut) + ".*SHD layout"):
        data.load_shd(cut)


def test_load_shd_missing_units(tmp_path):
    path = _write_shd(tmp_path / "no_units.h5", TIMES, UNITS, LABELS, skip=("spikes/units",))
    with pytest.raises(ValueError, match=_err_re(path) + ": 'spikes/units' is missing"):
        data.load_shd(path)


def test_load_shd_missing_labels(tmp_path):
    path = _write_shd(tmp_path / "no_labels.h5", TIMES, UNITS, LABELS, skip=("labels",))
    with pytest.raises(ValueError, match=_err_re(path) + ": 'labels' is missing"):
        data.load_shd(path)


def test_load_shd_mismatched_lengths(tmp_path):
    path = _write_shd(tmp_path / "short_labels.h5", TIMES, UNITS, LABELS[:2])
    match = _err_re(path) + ": 'spikes/times' has a length that does not match.*'labels': 2"
    with pytest.raises(ValueError, match=match):
        data.load_shd(path)


def test_load_shd_mismatched_sample(tmp_path):
    path = _write_shd(tmp_path / "ragged.h5", TIMES, [UNITS[0][:-1]] + UNITS[1:], LABELS)
    with pytest.raises(ValueError, match=_err_re(path) + ": 'spikes/units' sample 0: 5 units for 6 spike times"):
        data.load_shd(path)


def test_load_shd_unit_out_of_range(tmp_path):
    path = _write_shd(tmp_path / "bad_unit.h5", TIMES, [UNITS[0], [5, 5, 700], []], LABELS)
    match = _err_re(path) + ": 'spikes/units' sample 1: unit index 700 outside 0\\.\\.699"
    with pytest.raises(ValueError, match=match):
        data.load_shd(path)


@pytest.mark.parametrize("kwargs, match", [
    (dict(T=0), "T=0"),
    (dict(n_channels=701), r"n_channels=701 is out of range: expected an int in \[1, 700\]"),
    (dict(t_max=0.0), r"t_max=0\.0"),
    (dict(max_samples=0), "max_samples=0"),
])
def test_load_shd_bad_arguments(shd_file, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_shd(shd_file, **kwargs)


# ---------------------------------------------------------------------------
# Dataset helpers
# ---------------------------------------------------------------------------

def _toy(n=23, T=4, C=3, n_classes=3) -> Dataset:
    x = np.zeros((n, T, C), dtype=np.float32)
    x[:, 0, 0] = np.arange(n)  # sample id, to track samples through batches
    return Dataset(x, np.arange(n) % n_classes, n_classes, "toy")


def test_split_is_stratified_disjoint_and_seeded():
    ds = _toy(n=30)
    train, test = ds.split(0.2, seed=1)
    ids_train, ids_test = train.x[:, 0, 0].astype(int), test.x[:, 0, 0].astype(int)
    assert len(train) == 24 and len(test) == 6
    assert sorted(np.concatenate([ids_train, ids_test]).tolist()) == list(range(30))
    np.testing.assert_array_equal(np.bincount(test.y, minlength=3), [2, 2, 2])
    np.testing.assert_array_equal(ds.y[ids_test], test.y)
    again, _ = ds.split(0.2, seed=1)
    np.testing.assert_array_equal(again.x, train.x)
    other, _ = ds.split(0.2, seed=2)
    assert not np.array_equal(other.x, train.x)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, math.nan, 0.001])
def test_split_bad_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        _toy().split(fraction, seed=0)


def test_batches_cover_every_sample_once():
    ds = _toy(n=23)
    rng = np.random.default_rng(0)
    for _ in range(2):  # two epochs from the same generator: different orders
        seen, sizes = [], []
        for xb, yb in ds.batches(5, rng=rng):
            assert xb.shape[1:] == (4, 3) and xb.dtype == np.float32 and yb.dtype == np.int64
            ids = xb[:, 0, 0].astype(int)
            np.testing.assert_array_equal(yb, ds.y[ids])
            seen.extend(ids.tolist())
            sizes.append(len(yb))
        assert sizes == [5, 5, 5, 5, 3]
        assert sorted(seen) == list(range(23))
    ordered = [xb[:, 0, 0].astype(int).tolist() for xb, _ in ds.batches(10, shuffle=False)]
    assert ordered == [list(range(10)), list(range(10, 20)), list(range(20, 23))]
    assert [len(yb) for _, yb in ds.batches(5, rng=0, drop_last=True)] == [5, 5, 5, 5]
    a = [yb.tolist() for _, yb in ds.batches(4, rng=7)]
    b = [yb.tolist() for _, yb in ds.batches(4, rng=7)]
    assert a == b


def test_time_major_batches():
    ds = _toy(n=11, T=6, C=2)
    seen = []
    for xb, yb in ds.time_major_batches(4, rng=0):
        assert xb.shape == (6, len(yb), 2) and xb.flags.c_contiguous
        seen.extend(xb[0, :, 0].astype(int).tolist())
    assert sorted(seen) == list(range(11))
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(data.time_major(x), x.transpose(1, 0, 2))


def test_batches_bad_arguments():
    ds = _toy()
    with pytest.raises(ValueError, match="batch_size=0 is out of range"):
        next(ds.batches(0))
    with pytest.raises(TypeError, match="rng must be"):
        next(ds.batches(2, rng="seed"))


def test_time_major_batches_feed_forward():
    import ift_snn

    xb, _ = next(data.randman(samples_per_class=3, n_channels=6, T=12).time_major_batches(4, rng=0))
    trace = ift_snn.forward(ift_snn.lif(0.9, 1.0), xb, backend="numpy")
    assert trace.s.shape == (12, 4, 6)


def test_missing_optional_dependency_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=re.escape("pip install -e '.[data]' in the ift_snn checkout")):
        data.load_shd(tmp_path / "any.h5")
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=re.escape("pip install -e '.[data]' in the ift_snn checkout")):
        data.digits()


def test_dataset_validates_fields():
    with pytest.raises(ValueError, match=r"expected \(N, T, C\)"):
        Dataset(np.zeros((2, 3)), np.zeros(2, dtype=int), 2, "bad")
    with pytest.raises(ValueError, match="one label per sample"):
        Dataset(np.zeros((2, 3, 1)), np.zeros(3, dtype=int), 2, "bad")
    with pytest.raises(ValueError, match=r"labels span \[0, 5\]"):
        Dataset(np.zeros((2, 3, 1)), np.array([0, 5]), 2, "bad")
