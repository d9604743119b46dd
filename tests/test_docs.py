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
