"""`ift-snn derive`, the golden files in derivations/, and the fingerprint's stability."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ift_snn
from ift_snn.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "derivations"


def _same_folder(fresh_dir, name: str) -> None:
    files = sorted(p.name for p in fresh_dir.iterdir())
    assert files == sorted(p.name for p in (GOLDEN / name).iterdir()), name
    for file in files:
        assert (fresh_dir / file).read_text() == (GOLDEN / name / file).read_text(), (
            f"derivations/{name}/{file} is out of date: regenerate with "
            "`ift-snn derive --all --out derivations` and review the diff"
        )


@pytest.mark.parametrize("name", sorted(ift_snn.BUILTIN_MODELS))
def test_golden_derivations_are_up_to_date(name, tmp_path):
    """Every change to the mathematics or its printing shows up as a diff of derivations/ (one model per test, the
    job ``derive --all`` runs for it, so that the test workers share the models)."""
    from ift_snn.cli import _derive_builtin

    assert sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) == sorted(ift_snn.BUILTIN_MODELS)
    proved, _ = _derive_builtin(name, 6, str(tmp_path / name), False)
    assert proved
    _same_folder(tmp_path / name, name)


def test_derive_all_writes_each_models_folder(tmp_path, capsys, monkeypatch):
    """``derive --all`` (its process pool, its report) on two of the built-ins: the goldens' files."""
    import ift_snn.cli as cli

    monkeypatch.setattr(cli, "BUILTIN_MODELS", {k: ift_snn.BUILTIN_MODELS[k] for k in ("if", "lif")})
    assert main(["derive", "--all", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "if                 proved" in printed and "lif                proved" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["if", "lif"]
    for name in ("if", "lif"):
        _same_folder(tmp_path / name, name)


def test_golden_proofs_all_pass():
    for name in ift_snn.BUILTIN_MODELS:
        data = json.loads((GOLDEN / name / "recurrence.json").read_text())
        assert data["proofs"] and all(p["ok"] for p in data["proofs"]), name


def test_fingerprint_is_stable_across_processes():
    code = ("import ift_snn; from ift_snn.symbolic.report import derive; "
            "print(derive(ift_snn.get_model('cuba_lif'), T=2).fingerprint)")
    prints = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        prints.add(out.stdout.strip())
    assert len(prints) == 1
    kept = json.loads((GOLDEN / "cuba_lif" / "recurrence.json").read_text())["fingerprint"]
    assert prints == {kept}


def test_derive_default_is_lif_and_verifies(capsys):
    assert main(["derive"]) == 0
    out = capsys.readouterr().out
    assert "NeuronModel(lif" in out
    assert "scans == IFT adjoint" in out and "passed" in out
    assert "G[3,0] = sigma_3*(alpha - sigma_0*theta)*(alpha - sigma_1*theta)*(alpha - sigma_2*theta)" in out


def test_derive_user_kernels(capsys, tmp_path):
    argv = ["derive", "--eps", "n*alpha**n", "--nu", "theta*beta**n", "--surrogate", "fast_sigmoid",
            "--param", "alpha=0.7", "--out", str(tmp_path), "--T", "4"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "beta=0.9" in out.err  # the default value is announced
    assert "alpha=0.7" in out.out and "passed" in out.out
    data = json.loads((tmp_path / "recurrence.json").read_text())
    assert data["kernels"][0]["den"] == ["1", "-2*alpha", "alpha**2"]
    assert (tmp_path / "derivation.md").read_text().startswith("# Derivation")


@pytest.mark.parametrize("flag,marker", [("--markdown", "## 2. Jacobian structure"), ("--latex", r"\begin{document}")])
def test_derive_formats(flag, marker, capsys):
    assert main(["derive", "if", flag, "--T", "3"]) == 0
    assert marker in capsys.readouterr().out


@pytest.mark.parametrize("eps", [
    "__import__('os').system('echo pwned')",
    "n.__class__",
    "alpha**n; import os",
    "[n for n in range(3)]",
])
def test_derive_refuses_hostile_expressions(eps, capsys):
    assert main(["derive", "--eps", eps, "--nu", "theta*beta**n"]) == 2
    captured = capsys.readouterr()
    assert "error" in captured.err and "pwned" not in captured.out


def test_derive_reports_kernels_without_recurrence(capsys):
    assert main(["derive", "--eps", "1/(n+1)", "--nu", "theta*beta**n"]) == 2
    assert "no finite linear recurrence" in capsys.readouterr().err
    assert main(["derive", "--eps", "1/(n+1)", "--nu", "theta*beta**n", "--truncate", "5", "--T", "3"]) == 0


def test_derive_unknown_param_is_an_error(capsys):
    assert main(["derive", "--eps", "alpha**n", "--nu", "theta*alpha**n", "--param", "gamma=2"]) == 2
    assert "gamma" in capsys.readouterr().err
