"""The README's and the documentation pages' Python blocks run exactly as written (the tour a new user copies
first, and the manual's examples)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The pages with Python blocks (docs/index.md is the README, kept equal by tests/test_docs.py).
PAGES = [README] + sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "index.md")
BLOCKS = [(page.relative_to(ROOT).as_posix(), block) for page in PAGES
          for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]


def test_the_readme_has_python_blocks():
    assert sum(1 for page, _ in BLOCKS if page == "README.md") >= 2
    assert len(BLOCKS) >= 4


@pytest.mark.filterwarnings("ignore::ift_snn.StabilityWarning")
@pytest.mark.parametrize("k", range(len(BLOCKS)), ids=[f"{page}-{i}" for i, (page, _) in enumerate(BLOCKS)])
def test_readme_python_block_runs_as_written(k, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page, block = BLOCKS[k]
    if "import torch" in block:
        pytest.importorskip("torch")
    exec(compile(block, f"{page} python block {k}", "exec"), {"__name__": f"readme_block_{k}"})
