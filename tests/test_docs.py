"""The docs: a README that fits on a page and links only to what exists, and a site (docs/, mkdocs.yml) that
builds with --strict, so that a broken link or anchor, or a page left out of the navigation, fails CI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12_000


def build(config_root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=config_root, capture_output=True, text=True, timeout=300,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})


def test_the_readme_is_a_landing_page_whose_links_all_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < README_LIMIT, f"README.md is {len(readme)} characters: move detail into docs/"
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", readme) if not t.startswith(("http://", "https://", "#"))]
    assert targets, "the README links into the docs"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert missing == []
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md") if p.name != "index.md"} <= set(targets), \
        "every docs page is reachable from the README"


def test_the_site_builds_strict_and_a_broken_link_or_anchor_or_an_unlisted_page_fails_it(tmp_path):
    result = build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "tracks" / "index.html").exists()
    for name, breakage in (("link", lambda d: (d / "reliability.md").write_text(
                               (d / "reliability.md").read_text() + "\nSee [gone](no-such-page.md).\n")),
                           ("anchor", lambda d: (d / "reliability.md").write_text(
                               (d / "reliability.md").read_text() + "\nSee [x](tracks.md#no-such-section).\n")),
                           ("unlisted page", lambda d: (d / "orphan.md").write_text("# Orphan\n"))):
        copy = tmp_path / name.replace(" ", "_")
        shutil.copytree(ROOT / "docs", copy / "docs")
        shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
        breakage(copy / "docs")
        assert build(copy, copy / "site").returncode != 0, f"a broken {name} passed the strict build"
