"""ift_snn.training.shd_like: the SHD-like spoken-word analogue (class in phoneme order), its files and baselines."""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pytest

from ift_snn.training import data, shd_like

h5py = pytest.importorskip("h5py")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def small():
    return shd_like.generate(60, seed=3)


def _binned(d, T: int, n_channels: int, t_max: float) -> np.ndarray:
    """What load_shd should make of the generated spikes: counts in (N, T, n_channels)."""
    x = np.zeros((len(d), T, n_channels), dtype=np.float32)
    for i, (t, u) in enumerate(zip(d.times, d.units)):
        t = np.asarray(t, dtype=np.float64)
        keep = t < t_max
        b = np.minimum(np.floor(t[keep] / t_max * T).astype(np.int64), T - 1)
        np.add.at(x[i], (b, u[keep].astype(np.int64) * n_channels // data.SHD_UNITS), 1.0)
    return x


# ---------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------

def test_shapes_dtypes_and_ranges(small):
    assert len(small) == 60 and small.n_classes == 10
    assert small.labels.dtype == np.int64 and small.labels.shape == (60,)
    assert len(small.times) == len(small.units) == 60
    for t, u in zip(small.times, small.units):
        assert t.dtype == np.float32 and u.dtype == np.uint16 and t.shape == u.shape and t.size > 500
        assert t.min() >= 0.0 and float(t.max()) < 1.0
        assert np.all(np.diff(t) >= 0), "spike times are sorted within a sample"
        assert u.max() < 700
    for name in ("speed", "shift", "loudness", "channel_shift"):
        assert small.extra[name].shape == (60,)
    assert np.all(np.abs(small.extra["channel_shift"]) <= 15)
    assert small["times"] is small.times and small["labels"] is small.labels
    with pytest.raises(KeyError):
        small["nope"]


def test_classes_balanced():
    d = shd_like.generate(95, n_classes=10, seed=0)
    counts = np.bincount(d.labels, minlength=10)
    assert counts.sum() == 95 and counts.max() - counts.min() <= 1
    assert not np.all(np.diff(d.labels) >= 0), "labels are shuffled"


def test_default_words_are_orders_of_one_multiset(small):
    words = small.words
    assert words.shape == (10, 4)
    assert len({tuple(w) for w in words}) == 10, "classes are distinct words"
    assert len({tuple(sorted(w)) for w in words}) == 1, "every class uses the same phonemes"
    assert small.params["n_multisets"] == 1
    assert small.keys[0] == "-".join("abcd"[p] for p in words[0])


def test_fewest_multisets_when_one_is_not_enough():
    d = shd_like.generate(10, n_phonemes=4, phonemes_per_word=3, seed=0)  # 3! = 6 orders per multiset < 10
    assert len({tuple(w) for w in d.words}) == 10
    assert d.params["n_multisets"] == len({tuple(sorted(w)) for w in d.words}) == 2
    one = shd_like.generate(5, n_phonemes=3, phonemes_per_word=1, n_classes=3, seed=0)
    assert sorted(one.words[:, 0].tolist()) == [0, 1, 2]


def test_deterministic_and_seed_dependent(small):
    again = shd_like.generate(60, seed=3)
    np.testing.assert_array_equal(again.labels, small.labels)
    np.testing.assert_array_equal(again.words, small.words)
    for a, b in zip(again.times + again.units, small.times + small.units):
        np.testing.assert_array_equal(a, b)
    other = shd_like.generate(60, seed=4)
    assert not np.array_equal(other.labels, small.labels) or not np.array_equal(other.times[0], small.times[0])
    assert not np.array_equal(other.words, small.words), "the language follows the seed unless alphabet_seed is set"
    same_language = shd_like.generate(60, seed=4, alphabet_seed=3)
    np.testing.assert_array_equal(same_language.words, small.words)
    assert not np.array_equal(same_language.times[0], small.times[0])


def test_other_duration_and_units():
    d = shd_like.generate(20, seed=1, duration=0.3, jitter=0.03, n_units=100, channel_shift=5,
                          noise_rate=0.0)
    for t, u in zip(d.times, d.units):
        assert float(t.max()) < 0.3 and t.min() >= 0.0 and u.max() < 100


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------

def test_round_trip_through_load_shd(small, tmp_path):
    path = shd_like.write_shd(tmp_path / "s.h5", small)
    full = data.load_shd(path, T=250, n_channels=700)
    np.testing.assert_array_equal(full.y, small.labels)
    assert full.n_classes == 10
    np.testing.assert_array_equal(full.x.sum(axis=(1, 2)), [t.size for t in small.times])
    np.testing.assert_array_equal(full.x, _binned(small, 250, 700, 1.0))
    coarse = data.load_shd(path, T=20, n_channels=64)
    np.testing.assert_array_equal(coarse.x, _binned(small, 20, 64, 1.0))
    with h5py.File(path, "r") as f:
        assert [k.decode() for k in f["extra/keys"][()]] == list(small.keys)
        np.testing.assert_array_equal(f["extra/words"][()], small.words)
        assert json.loads(f.attrs["params"]) == small.params
        assert f.attrs["generator"] == "ift_snn.training.shd_like" and f.attrs["n_classes"] == 10


def test_round_trip_other_duration(tmp_path):
    d = shd_like.generate(12, seed=2, duration=0.5, jitter=0.05)
    ds = data.load_shd(shd_like.write_shd(tmp_path / "half.h5", d), T=25, n_channels=70, t_max=0.5)
    np.testing.assert_array_equal(ds.x, _binned(d, 25, 70, 0.5))
    np.testing.assert_array_equal(ds.x.sum(axis=(1, 2)), [t.size for t in d.times])


def test_write_shd_plain_mapping(tmp_path):
    d = {"times": [[0.1, 0.5], []], "units": [np.array([3, 699]), np.array([], dtype=np.int64)], "labels": [1, 0]}
    ds = data.load_shd(shd_like.write_shd(tmp_path / "m.h5", d), T=10, n_channels=700)
    assert ds.x[0, 1, 3] == 1 and ds.x[0, 5, 699] == 1 and ds.x.sum() == 2
    np.testing.assert_array_equal(ds.y, [1, 0])


@pytest.mark.parametrize("bad, match", [
    (dict(units=[[700]]), r"sample 0: units must be integers in 0\.\.699"),
    (dict(units=[[1, 2]]), "sample 0: 1 spike times but 2 units"),
    (dict(times=[[-0.1]]), "sample 0: spike times must be finite"),
    (dict(labels=[0, 1]), "times has 1, units 1 and labels 2 samples"),
    (dict(labels=[256]), r"labels must be integers in 0\.\.255"),
])
def test_write_shd_bad_data(tmp_path, bad, match):
    d = {"times": [[0.1]], "units": [[3]], "labels": [0], **bad}
    with pytest.raises(ValueError, match=match):
        shd_like.write_shd(tmp_path / "bad.h5", d)
    with pytest.raises(ValueError, match="data has no 'labels'"):
        shd_like.write_shd(tmp_path / "bad.h5", {"times": [], "units": []})


def test_make_task_files_identical_per_seed(tmp_path):
    a = shd_like.make_task(tmp_path / "a", n_train=30, n_test=20, seed=5)
    b = shd_like.make_task(tmp_path / "b", n_train=30, n_test=20, seed=5)
    assert [p.rsplit("/", 1)[1] for p in a] == [shd_like.TRAIN_FILE, shd_like.TEST_FILE]
    for pa, pb in zip(a, b):
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            assert fa.read() == fb.read(), "same seed, byte-identical file"
    with h5py.File(a[0], "r") as tr, h5py.File(a[1], "r") as te:
        np.testing.assert_array_equal(tr["extra/keys"][()], te["extra/keys"][()])  # one language
        assert json.loads(tr.attrs["params"])["seed"] != json.loads(te.attrs["params"])["seed"]
        assert tr["labels"].shape == (30,) and te["labels"].shape == (20,)
    c = shd_like.make_task(tmp_path / "c", n_train=30, n_test=20, seed=6)
    with open(a[0], "rb") as fa, open(c[0], "rb") as fc:
        assert fa.read() != fc.read()


# ---------------------------------------------------------------------------
# the class lives in the order: baselines
# ---------------------------------------------------------------------------

def test_counts_are_at_chance_and_time_bins_are_not(tmp_path):
    # make_task seeds 0..5 at these sizes give counts 0.08-0.115 and 8 bins 0.925-0.975 (chance 0.1)
    train_path, test_path = shd_like.make_task(tmp_path, n_train=500, n_test=200, seed=0)
    train = data.load_shd(train_path, T=40, n_channels=32)
    test = data.load_shd(test_path, T=40, n_channels=32)
    result = shd_like.baselines(train, test, time_bins=(1, 8))
    assert result["chance"] == pytest.approx(0.1) and result["n_train"] == 500 and result["n_test"] == 200
    counts, binned = result["accuracy"][1], result["accuracy"][8]
    assert counts < result["chance"] + 0.15, f"per-channel counts: {counts:.3f} (chance 0.1)"
    assert binned > 0.8, f"8 time bins: {binned:.3f}"
    assert binned - counts > 0.5
    assert set(result["train_accuracy"]) == {1, 8}


def test_baselines_bad_arguments(small, tmp_path):
    ds = data.load_shd(shd_like.write_shd(tmp_path / "s.h5", small), T=10, n_channels=7)
    with pytest.raises(ValueError, match=r"time_bins=11 is out of range: expected an int in \[1, 10\]"):
        shd_like.baselines(ds, ds, time_bins=(1, 11))
    with pytest.raises(TypeError, match="time_bins must be a non-empty sequence"):
        shd_like.baselines(ds, ds, time_bins=())
    with pytest.raises(TypeError, match="train and test must be ift_snn.training.data.Dataset"):
        shd_like.baselines(ds.x, ds)
    other = data.load_shd(tmp_path / "s.h5", T=10, n_channels=8)
    with pytest.raises(ValueError, match=r"train has \(T, channels\) = \(10, 7\) but test \(10, 8\)"):
        shd_like.baselines(ds, other)
    with pytest.raises(ValueError, match="C=0.0 is out of range"):
        shd_like.baselines(ds, ds, C=0.0)


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=0), "n_samples=0 is out of range"),
    (dict(n_classes=1), r"n_classes=1 is out of range: expected an int in \[2, 256\]"),
    (dict(n_classes=30, n_phonemes=3, phonemes_per_word=3), r"n_classes=30 .* only 27 distinct words"),
    (dict(n_phonemes=1), "n_phonemes=1"),
    (dict(n_phonemes=27), "n_phonemes=27"),
    (dict(phonemes_per_word=0), "phonemes_per_word=0"),
    (dict(seed=-1), "seed=-1"),
    (dict(alphabet_seed=-2), "alphabet_seed=-2"),
    (dict(n_units=701), r"n_units=701 is out of range: expected an int in \[10, 700\]"),
    (dict(duration=0.0), r"duration=0\.0"),
    (dict(word_fraction=1.5), r"word_fraction=1\.5"),
    (dict(speed=1.0), r"speed=1\.0"),
    (dict(jitter=-0.1), r"jitter=-0\.1"),
    (dict(jitter=0.3), r"jitter=0\.3 is out of range: a word of word_fraction"),
    (dict(rate=0.0), r"rate=0\.0"),
    (dict(rate=math.inf), r"rate=inf"),
    (dict(loudness=-0.5), r"loudness=-0\.5"),
    (dict(channel_shift=88), r"channel_shift=88 is out of range: expected an int in \[0, 87\]"),
    (dict(noise_rate=math.nan), r"noise_rate=nan"),
])
def test_generate_bad_arguments(kwargs, match):
    kwargs = {"n_samples": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        shd_like.generate(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=2.5), "n_samples must be an int"),
    (dict(n_samples=4, seed="0"), "seed must be an int"),
    (dict(n_samples=4, rate="fast"), "rate must be a finite number"),
    (dict(n_samples=4, n_classes=True), "n_classes must be an int"),
])
def test_generate_wrong_types(kwargs, match):
    with pytest.raises(TypeError, match=match):
        shd_like.generate(**kwargs)


def test_make_task_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_train=0"):
        shd_like.make_task(tmp_path, n_train=0)
    with pytest.raises(TypeError, match="make_task\\(\\) sets n_samples itself"):
        shd_like.make_task(tmp_path, n_train=5, n_test=5, **{"n_samples": 3})
    with pytest.raises(ValueError, match=r"rate=-1\.0"):
        shd_like.make_task(tmp_path, n_train=5, n_test=5, rate=-1.0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        shd_like.make_task(tmp_path / "file", n_train=5, n_test=5)


def test_missing_optional_dependency_says_how_to_install(monkeypatch, small, tmp_path):
    ds = data.load_shd(shd_like.write_shd(tmp_path / "s.h5", small), T=8, n_channels=7)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=re.escape("write_shd() needs h5py: pip install -e '.[data]' in the ift_snn checkout")):
        shd_like.write_shd(tmp_path / "t.h5", small)
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    with pytest.raises(ImportError, match=re.escape("baselines() needs scikit-learn")):
        shd_like.baselines(ds, ds)
