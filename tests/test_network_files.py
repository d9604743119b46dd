"""``Network.load`` validates a file like the constructor validates arguments: every
bad or corrupt file is a ValueError naming the file (and the key), checked before
anything is allocated."""

from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pytest

import ift_snn
from ift_snn.training.network import Network


@pytest.fixture
def saved(tmp_path):
    net = Network([6, 5, 3], ift_snn.lif(0.9), seed=1, blocks=1)
    path = tmp_path / "net.npz"
    net.save(path)
    return net, path


def _contents(path):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(str(arrays["meta"])), arrays


def _write(path, meta, arrays):
    arrays = {**arrays, "meta": np.array(json.dumps(meta) if not isinstance(meta, str) else meta)}
    np.savez(path, **arrays)
    return path


def _refused(path, *needles):
    with pytest.raises(ValueError) as info:
        Network.load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def test_round_trip_keeps_dtype_and_values(saved, tmp_path):
    net, path = saved
    back = Network.load(path)
    assert back.dtype == np.float32 and back.blocks == 1 and back.n_classes == 3
    for w, v in zip(net.parameters(), back.parameters()):
        assert v.dtype == np.float32
        np.testing.assert_array_equal(w, v)
    net64 = Network([4, 2], ift_snn.lif(0.8), dtype=np.float64)
    net64.save(tmp_path / "n64.npz")
    assert Network.load(tmp_path / "n64.npz").weights[0].dtype == np.float64


def test_sizes_that_disagree_with_the_weights(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    meta["sizes"] = [6, 4, 3]
    _refused(_write(tmp_path / "bad.npz", meta, arrays), "'W0'", "(6, 4)", "(6, 5)")


def test_int_weights_in_a_float_network(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    arrays["W1"] = arrays["W1"].astype(np.int32)
    _refused(_write(tmp_path / "bad.npz", meta, arrays), "'W1'", "int32", "float32")


def test_float64_weights_in_a_float32_network(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    arrays["W0"] = arrays["W0"].astype(np.float64)
    _refused(_write(tmp_path / "bad.npz", meta, arrays), "'W0'", "float64", "float32")


def test_float16_network_dtype(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    meta["dtype"] = "float16"
    arrays = {k: (v.astype(np.float16) if k != "meta" else v) for k, v in arrays.items()}
    _refused(_write(tmp_path / "bad.npz", meta, arrays), "'dtype'", "float16")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(saved, tmp_path, value):
    _, path = saved
    meta, arrays = _contents(path)
    arrays["W1"][2, 1] = value
    _refused(_write(tmp_path / "bad.npz", meta, arrays), "'W1'", "finite")


def test_non_finite_readout(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    arrays["R0"][0, 0] = np.nan
    _refused(_write(tmp_path / "bad.npz", meta, arrays), "'R0'", "finite")


def test_huge_declared_sizes_are_refused_before_allocating(saved, tmp_path, monkeypatch):
    _, path = saved
    meta, arrays = _contents(path)
    meta.update(sizes=[50000, 50000], models=meta["models"][:1], blocks=None, readouts=[])
    bad = _write(tmp_path / "bad.npz", meta, {"W0": arrays["W0"]})
    assert bad.stat().st_size < 10_000
    # no weight initialisation (the constructor draws random weights of the declared sizes) on load
    monkeypatch.setattr(Network, "__init__", lambda *a, **k: pytest.fail("allocated random weights"))
    start = time.perf_counter()
    _refused(bad, "'W0'", "(50000, 50000)")
    assert time.perf_counter() - start < 2


def test_array_header_declaring_a_huge_shape_is_refused_before_reading(saved, tmp_path):
    """A forged .npy header claiming (50000, 50000) with a tiny payload."""
    _, path = saved
    meta, arrays = _contents(path)
    meta.update(sizes=[50000, 50000], models=meta["models"][:1], blocks=None, readouts=[])
    bad = tmp_path / "forged.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (50000, 50000)})
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("meta.npy", _npy(np.array(json.dumps(meta))))
        z.writestr("W0.npy", header.getvalue() + b"\0" * 64)
    _refused(bad, "'W0'")


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_missing_and_extra_keys(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    _refused(_write(tmp_path / "a.npz", meta, {k: v for k, v in arrays.items() if k != "W1"}), "'W1'", "missing")
    _refused(_write(tmp_path / "b.npz", meta, {k: v for k, v in arrays.items() if k != "R0"}), "'R0'", "missing")
    _refused(_write(tmp_path / "c.npz", meta, {**arrays, "W7": arrays["W0"]}), "'W7'")
    np.savez(tmp_path / "d.npz", W0=arrays["W0"])
    _refused(tmp_path / "d.npz", "'meta'")


@pytest.mark.parametrize("field,value,needle", [
    ("sizes", [6], "'sizes'"),
    ("sizes", [6, 0, 3], "'sizes'"),
    ("sizes", "6,5,3", "'sizes'"),
    ("sizes", [6, 5.5, 3], "'sizes'"),
    ("sizes", [6, True, 3], "'sizes'"),
    ("blocks", 0, "'blocks'"),
    ("blocks", "1", "'blocks'"),
    ("n_classes", -1, "'n_classes'"),
    ("dtype", "int32", "'dtype'"),
    ("dtype", "object", "'dtype'"),
    ("init_gain", "big", "'init_gain'"),
    ("readouts", [1], "'readouts'"),
    ("readouts", "R0", "'readouts'"),
    ("models", "lif", "'models'"),
    ("models", [], "'models'"),
    ("seed", "zero", "'seed'"),
])
def test_bad_metadata_fields(saved, tmp_path, field, value, needle):
    _, path = saved
    meta, arrays = _contents(path)
    meta[field] = value
    _refused(_write(tmp_path / "bad.npz", meta, arrays), needle)


def test_missing_and_unknown_metadata_fields(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    _refused(_write(tmp_path / "a.npz", {k: v for k, v in meta.items() if k != "sizes"}, arrays), "'sizes'", "missing")
    _refused(_write(tmp_path / "b.npz", {**meta, "evil": 1}, arrays), "'evil'")


def test_bad_model_definition_names_the_file_and_index(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    meta["models"][1] = {"name": "lif"}
    _refused(_write(tmp_path / "a.npz", meta, arrays), "'models'[1]")
    meta["models"][1] = "lif"
    _refused(_write(tmp_path / "b.npz", meta, arrays), "'models'[1]")
    meta["models"][1] = {**meta["models"][0], "params": [["alpha", "x"]]}
    _refused(_write(tmp_path / "c.npz", meta, arrays), "'models'[1]")


@pytest.mark.parametrize("meta", ["{not json", "[1, 2]", "null", ""])
def test_metadata_that_is_not_a_json_object(saved, tmp_path, meta):
    _, path = saved
    _, arrays = _contents(path)
    _refused(_write(tmp_path / "bad.npz", meta, arrays), "'meta'")


def test_metadata_that_is_not_a_string(saved, tmp_path):
    _, path = saved
    _, arrays = _contents(path)
    np.savez(tmp_path / "bad.npz", **{**arrays, "meta": np.arange(3)})
    _refused(tmp_path / "bad.npz", "'meta'")


def test_truncated_file(saved, tmp_path):
    _, path = saved
    for n in (0, 100, path.stat().st_size // 2, path.stat().st_size - 10):
        bad = tmp_path / f"trunc{n}.npz"
        bad.write_bytes(path.read_bytes()[:n])
        _refused(bad)


def test_random_bytes_and_a_plain_npy(tmp_path):
    bad = tmp_path / "random.npz"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    _refused(bad)
    npy = tmp_path / "plain.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros(3))
    _refused(npy, "npz")


def test_corrupted_array_bytes(saved, tmp_path):
    _, path = saved
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("W1.npy")
    local = info.header_offset
    name_len = int.from_bytes(raw[local + 26:local + 28], "little")
    extra_len = int.from_bytes(raw[local + 28:local + 30], "little")
    data = local + 30 + name_len + extra_len
    raw[data + info.file_size - 4] ^= 0xFF  # inside the values of W1 (stored, so the zip CRC catches it)
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    _refused(bad)


def test_pickled_arrays_are_refused(saved, tmp_path):
    _, path = saved
    meta, arrays = _contents(path)
    arrays["W0"] = np.array([object()] * 30, dtype=object).reshape(6, 5)
    np.savez(tmp_path / "bad.npz", meta=np.array(json.dumps(meta)), **{k: v for k, v in arrays.items() if k != "meta"})
    _refused(tmp_path / "bad.npz", "'W0'")


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        Network.load(tmp_path / "nope.npz")


def test_save_refuses_non_finite_weights(tmp_path):
    net = Network([3, 2], ift_snn.lif(0.9))
    net.weights[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="W0.*finite"):
        net.save(tmp_path / "n.npz")
    assert not (tmp_path / "n.npz").exists()
