"""The teaching notebooks run top to bottom and their asserted claims hold.

The notebooks are jupytext percent-format ``.py`` files in ``notebooks/``.
Each one is read with ``jupytext.read`` and executed by ``nbclient`` in a
fresh ``python3`` kernel of the current interpreter. Its working directory is
a temporary folder, matplotlib uses the Agg backend, and figures are written
as PNG to ``IFT_SNN_FIGURE_DIR`` (the same temporary folder). A failing
``assert`` cell, or any exception, raises ``CellExecutionError`` and fails the
test. The executed notebook is written next to the figures as ``.ipynb`` so
a failure can be inspected.

Marked ``slow``: the seven notebooks take about a minute together on two cores.
They still run in CI.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="notebook tests need jupytext: pip install -e '.[test]' in the ift_snn checkout")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need nbclient: pip install -e '.[test]' in the ift_snn checkout")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel", reason="notebook tests need ipykernel: pip install -e '.[test]' in the ift_snn checkout")
pytest.importorskip("matplotlib")

pytestmark = pytest.mark.slow

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = (
    "01_ift_from_scratch.py",
    "02_srm_as_equations.py",
    "03_exodus_vs_slayer.py",
    "04_code_generation.py",
    "05_training.py",
    "06_your_own_neuron.py",
    "07_continuous_time.py",
)
KERNEL = "python3"
#: Seconds any one cell may take before nbclient gives up.
CELL_TIMEOUT = 300


def _runs_this_interpreter(argv0: str) -> bool:
    """True when a kernel spec's argv[0] starts the interpreter running pytest.

    jupyter_client replaces a bare ``python``/``python3``/``python3.X`` with
    ``sys.executable``; an absolute path must be this interpreter.
    """
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if argv0 in bare:
        return True
    return os.path.realpath(argv0) == os.path.realpath(sys.executable)


@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory) -> dict[str, str]:
    """Environment variables under which ``kernel_name="python3"`` runs this interpreter.

    Normally none are needed: the venv's ipykernel provides ``python3``. If the
    spec is missing, or it points at another Python (a user-level spec, say),
    a spec for this interpreter is installed into a temporary prefix and put
    first on JUPYTER_PATH. Nothing is written outside the temporary folder,
    and no network is used.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        if spec.argv and _runs_this_interpreter(spec.argv[0]):
            return {}
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter_prefix")
    install(prefix=str(prefix), kernel_name=KERNEL)
    data_dir = prefix / "share" / "jupyter"
    existing = os.environ.get("JUPYTER_PATH")
    return {"JUPYTER_PATH": str(data_dir) + (os.pathsep + existing if existing else "")}


def test_all_notebooks_are_present():
    found = sorted(p.name for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    assert found == sorted(EXPECTED), f"notebooks/ holds {found}; expected {sorted(EXPECTED)}"
    assert (NOTEBOOK_DIR / "README.md").is_file()


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_executes_and_its_claims_hold(name, tmp_path, monkeypatch, kernel_env):
    path = NOTEBOOK_DIR / name
    nb = jupytext.read(path)
    kinds = {cell.cell_type for cell in nb.cells}
    assert kinds == {"markdown", "code"}, f"{name}: expected markdown and code cells, got {kinds}"
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert re.search(r"^\s*assert ", code, re.M), f"{name}: no assert cell states a claim"

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("IFT_SNN_FIGURE_DIR", str(tmp_path))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets the debugger's frozen-modules note
    for key, value in kernel_env.items():
        monkeypatch.setenv(key, value)

    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / (path.stem + ".ipynb"))
    print(f"{name}: executed in {time.perf_counter() - start:.1f} s; outputs in {tmp_path}")

    # Every figure the notebook saves exists as a PNG (save() itself asserts the axes are labelled).
    for figure in re.findall(r"save\(fig, \"([^\"]+)\"\)", code):
        png = tmp_path / f"{figure}.png"
        assert png.is_file() and png.stat().st_size > 1000, f"{name}: figure {png.name} was not written"
