"""The documentation site (mkdocs-material, mkdocstrings over the docstrings) builds with --strict, and its home
page is the README (links made relative to docs/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def index_from_readme(text: str) -> str:
    """docs/index.md from README.md: the same page, its links to docs/ pages relative to the site."""
    return text.replace("](docs/", "](").replace("](notebooks/README.md)", "](notebooks.md)")


def test_the_site_home_page_is_the_readme():
    want = index_from_readme((ROOT / "README.md").read_text())
    assert (ROOT / "docs" / "index.md").read_text() == want, (
        "docs/index.md differs from README.md: regenerate it with "
        "python -c \"import tests.test_docs as t; t.write_index()\"")


def write_index() -> None:
    (ROOT / "docs" / "index.md").write_text(index_from_readme((ROOT / "README.md").read_text()))


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def tutorial_from_notebook(path: Path) -> str:
    """docs/tutorials/<name>.md from a jupytext notebook: its text cells as written, its code cells as Python
    blocks, under a line saying where it comes from and how to run it (the outputs come from running it)."""
    import jupytext

    name = f"notebooks/{path.name}"
    parts = [f"<!-- generated from {name} by tests/test_docs.py (write_tutorials); edit the notebook -->",
             f"*This page is the notebook `{name}` of the repository as text; "
             "its outputs and figures appear when you run it (`jupyter lab` after `pip install -e '.[notebooks]'` "
             "in the ift_snn checkout). The test suite executes it and every `assert` in it.*"]
    for cell in jupytext.read(path).cells:
        text = cell.source.strip("\n")
        if not text:
            continue
        parts.append(text if cell.cell_type == "markdown" else f"```python\n{text}\n```")
    # the notebook's title first, then the note
    if parts[2].startswith("# "):
        parts[0:3] = [parts[0], parts[2], parts[1]]
    return "\n\n".join(parts) + "\n"


def notebooks_page() -> str:
    """docs/notebooks.md from notebooks/README.md, each notebook linked to its tutorial page."""
    text = (ROOT / "notebooks" / "README.md").read_text()
    for path in NOTEBOOKS:
        text = text.replace(f"]({path.name})", f"](tutorials/{path.stem}.md)")
    return "<!-- generated from notebooks/README.md by tests/test_docs.py (write_tutorials) -->\n\n" + text


def write_tutorials() -> None:
    folder = ROOT / "docs" / "tutorials"
    folder.mkdir(exist_ok=True)
    for path in NOTEBOOKS:
        (folder / f"{path.stem}.md").write_text(tutorial_from_notebook(path))
    (ROOT / "docs" / "notebooks.md").write_text(notebooks_page())


def test_the_tutorials_are_the_notebooks():
    """Each notebook is a page of the site (docs/tutorials/), listed in the nav, and up to date."""
    pytest.importorskip("jupytext")
    assert len(NOTEBOOKS) == 7
    regenerate = "regenerate them with python -c \"import tests.test_docs as t; t.write_tutorials()\""
    nav = (ROOT / "mkdocs.yml").read_text()
    for path in NOTEBOOKS:
        page = ROOT / "docs" / "tutorials" / f"{path.stem}.md"
        assert page.is_file() and page.read_text() == tutorial_from_notebook(path), f"{page} is stale: {regenerate}"
        assert f"tutorials/{path.stem}.md" in nav, f"{page.name} is not in mkdocs.yml's nav"
    assert (ROOT / "docs" / "notebooks.md").read_text() == notebooks_page(), f"docs/notebooks.md is stale: {regenerate}"


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    html = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "ift_snn.ops.backward" in html and "Gradients of the loss given g" in html
