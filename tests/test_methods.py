"""The gradient methods as objects (ift_snn.methods): every function takes a name or the object, and the two
give the same numbers; no code compares method names (issue 27)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import ift_snn
from ift_snn.methods import BPTT, EXODUS, SLAYER, get_method


def test_names_and_objects_give_the_same_gradients():
    m = ift_snn.lif(0.9)
    a = np.random.default_rng(0).normal(0.3, 1, (40, 4))
    g = np.random.default_rng(1).normal(size=a.shape)
    trace = ift_snn.forward(m, a)
    for obj in (EXODUS, SLAYER, BPTT):
        by_name, by_object = ift_snn.backward(m, trace, g, method=obj.name), ift_snn.backward(m, trace, g, method=obj)
        assert np.array_equal(by_name.a, by_object.a) and by_name.params == by_object.params
        assert by_object.method == obj.name
    assert not np.allclose(ift_snn.backward(m, trace, g, method=SLAYER).a, ift_snn.backward(m, trace, g).a)


def test_a_method_says_what_runs():
    assert (EXODUS.scan, SLAYER.scan, BPTT.scan) == ("backward", "slayer", "backward")
    assert SLAYER.detach_reset and not EXODUS.detach_reset and BPTT.reference
    assert (EXODUS.step, SLAYER.step) == ("step", "step_slayer")
    assert get_method("slayer") is SLAYER and get_method(SLAYER) is SLAYER
    with pytest.raises(ValueError, match="unknown method 'adjoint'; expected one of exodus, slayer, bptt"):
        get_method("adjoint")
    with pytest.raises(ValueError, match="unknown method"):
        ift_snn.backward(ift_snn.lif(0.9), ift_snn.forward(ift_snn.lif(0.9), np.ones((3, 2))), np.ones((3, 2)),
                         method="adjoint")


def test_the_layer_and_the_proof_take_method_objects():
    torch = pytest.importorskip("torch")
    from ift_snn.integrations.torch import LIF
    from ift_snn.symbolic.recurrence import prove

    x = (2 * torch.rand(2, 20, 3, dtype=torch.float64)).requires_grad_()
    g = torch.randn(2, 20, 3, dtype=torch.float64)

    def grad(method):
        x.grad = None
        (LIF(0.9, method=method)(x) * g).sum().backward()
        return x.grad.clone()

    by_object, by_name, exact = grad(SLAYER), grad("slayer"), grad("exodus")
    assert torch.equal(by_object, by_name) and not torch.allclose(by_object, exact)
    assert prove(ift_snn.lif(0.9), 3, method=SLAYER).ok
    with pytest.raises(ValueError, match="'bptt' is the oracle"):
        prove(ift_snn.lif(0.9), 3, method=BPTT)


def test_no_code_compares_method_names():
    package = Path(ift_snn.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""method\s*[!=]=\s*["'](exodus|slayer|bptt)["']""", line):
                found.append(f"{path.relative_to(package)}:{k}")
    assert found == []
