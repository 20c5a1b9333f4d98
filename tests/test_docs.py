"""The manual builds with MkDocs in strict mode (every page in the nav, every link resolves), and
the README stays a short front page that links into it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_build_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "review" / "index.html").is_file()


def test_the_readme_is_short_states_two_set_up_commands_and_links_every_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    assert re.findall(r"^bash \.ci/bootstrap (\w+)", text, re.M) == ["nightly", "test"]
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", text))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages - {"index.md"} <= linked and linked <= pages
    assert (ROOT / ".ci" / "run").read_text().count("bash .ci/bootstrap test") == 1


@pytest.mark.slow
def test_every_example_in_the_manual_prints_what_the_page_says():
    """Every `$ command` of docs/*.md runs from a fresh shell (a scratch home, only the venv on
    the PATH) and prints what the page shows, bar batch ids, times and process ids: the pages are
    re-run with `tools/doc_examples.py`, never hand-edited outputs."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "doc_examples.py")], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    skipped = [line for line in result.stdout.splitlines() if ": skipped (" in line]
    # servers (review, datasette, a Dask scheduler and its nodes), machine reports, a timing-dependent
    # kill, benchmark figures: each said why
    assert len(skipped) <= 11, skipped
