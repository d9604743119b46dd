"""The README's Python blocks run exactly as written (the tour a new user copies first)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(k, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "import torch" in BLOCKS[k]:
        pytest.importorskip("torch")
    exec(compile(BLOCKS[k], f"README.md python block {k}", "exec"), {"__name__": f"readme_block_{k}"})
