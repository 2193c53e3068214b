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


COMMAND = re.compile(r"(?<![\w/-])(?:\.venv/bin/)?yolo11-triton(?:[ \t]+[^`|;&#\n]*)?(?=$|[`|;&#\n])", re.M)


class Parsed(Exception):
    """Raised right after a command's flags parsed: the command is valid and nothing ran."""


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) for every ``yolo11-triton`` command in a fenced block or a code span of the README and
    the docs: backslash continuations joined, ``[optional ...]`` parts and comments dropped."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text().replace("\\\n", " ")
        chunks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)
        for chunk in chunks:
            for match in COMMAND.finditer(chunk):
                line = re.sub(r"\[[^\]]*\]", "", match.group(0)).strip()
                if line.split()[-1:] != ["..."]:
                    found.append((page.name, line))
    return found


def parse_only(line: str) -> int | str:
    """The command's own argument parsing of ``line`` (no work done): "parsed", or argparse's exit code."""
    import argparse
    import shlex
    from unittest import mock

    from python_models import cli

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        try:
            code = cli.main(shlex.split(line)[1:])
        except Parsed:
            return "parsed"
        except SystemExit as stop:
            return stop.code
    return code


def names_a_command(words: list[str]) -> bool:
    """A mention (``yolo11-triton detect``, ``yolo11-triton check server``): an existing (sub)command, no arguments."""
    from python_models import cli

    if len(words) == 1:
        return words[0] in cli.COMMANDS or words[0] in cli.GROUPS
    return len(words) == 2 and words[0] in cli.GROUPS and words[1] in cli.GROUPS[words[0]][1]


def test_every_documented_command_is_a_command_whose_flags_parse(capsys):
    commands = documented_commands()
    assert len(commands) > 15 and any("detect" in line for _, line in commands)
    bad = {}
    for page, line in commands:
        words = line.split()[1:]
        if words in ([], ["--help"], ["COMMAND", "--help"]) or names_a_command(words):
            if words and words[0] not in ("--help", "COMMAND") and not names_a_command(words):
                bad[f"{page}: {line}"] = "no such command"
            continue
        outcome = parse_only(line)
        if outcome != "parsed":
            bad[f"{page}: {line}"] = outcome
    capsys.readouterr()
    assert bad == {}
    assert parse_only("yolo11-triton detect photos/ --model yolo11_trt --out x.jsonl --grcp-url h:1") == 2, \
        "a misspelt flag fails the check"
    assert parse_only("yolo11-triton bench gpus") == 2 and not names_a_command(["bench", "gpus"])
